// An inode keeps what it was loaded with: the inode table holds every inode the kernel does
// (after `find`, every file), so an inode keeps its CIDs as bytes and its rarely used fields
// apart (src/fs/inode.ts). These check that nothing is lost or mixed up on the way.
import t from 'tap'
import { cidFor, DAG_CBOR } from '../src/block/index.js'
import { Inode } from '../src/fs/inode.js'
import { MemoryBlockStore } from '../src/store/memory.js'
import { type Entry, type Kind } from '../src/object/dir.js'
import { fileFromBytes } from '../src/object/file.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const T = 1_765_000_000_123_456_789n

function entry (kind: Kind, extra: Partial<Entry> = {}): Entry {
  return { name: enc(kind), kind, mode: 0o640, uid: 1000, gid: 100, size: 5, mtime: T, atime: T + 7n, ctime: T + 9n, ino: 2 ** 40 + 3, ...extra }
}

t.test('every kind round-trips through fromEntry and toEntry', async t => {
  const cid = cidFor(enc('content'))
  const tree = cidFor(enc('tree'), DAG_CBOR)
  const last = new Uint8Array(40).fill(7)
  const cases: Entry[] = [
    entry('file', { cid, last, xattrs: { 'user.a': enc('1') } }),
    entry('file', { cid, nlink: 3 }),
    entry('dir', { cid: tree, nlink: 4, size: 2 }),
    entry('symlink', { target: enc('../x'), size: 4 }),
    entry('chr', { rdev: 0x103, size: 0 }),
    entry('fifo', { size: 0 })
  ]
  for (const e of cases) {
    const n = Inode.fromEntry(e.ino as number, e)
    t.same(n.toEntry(e.name), e, `${e.kind}: the same entry back`)
  }
})

t.test('base belongs to files and dirBase to directories', async t => {
  const file = Inode.fromEntry(5, entry('file', { cid: cidFor(enc('a')) }))
  const dir = Inode.fromEntry(6, entry('dir', { cid: cidFor(enc('b'), DAG_CBOR), nlink: 2 }))
  t.ok(file.base?.equals(cidFor(enc('a'))), 'the file has its base')
  t.equal(file.dirBase, undefined, 'and no directory tree')
  t.ok(dir.dirBase?.equals(cidFor(enc('b'), DAG_CBOR)), 'the directory has its tree')
  t.equal(dir.base, undefined, 'and no file base')
  t.ok(dir.hasDirBase, 'hasDirBase says so')
  file.base = cidFor(enc('c'))
  t.ok(file.base?.equals(cidFor(enc('c'))), 'a new base reads back')
  t.notOk(file.contentDirty, 'a file with a base and no changes is clean')
  file.base = undefined
  t.ok(file.contentDirty, 'a file without a base is content-dirty')
  const empty = new Inode(7, 'dir', 0o755, 0, 0, T)
  t.notOk(empty.hasDirBase, 'a new directory has no stored tree')
})

t.test('write state set and cleared reads back its defaults', async t => {
  const n = new Inode(8, 'file', 0o644, 0, 0, T)
  t.equal(n.dirtyLo, Infinity)
  t.equal(n.dirtyHi, 0)
  t.equal(n.pages, undefined)
  t.equal(n.inTable, false)
  t.equal(n.rdev, 0)
  t.equal(n.subdirs, 0)
  t.equal(n.xattrs.size, 0)
  n.markDirty(10, 20)
  n.markDirty(40, 50)
  n.pages = new Map([[0, new Uint8Array(4)]])
  n.inTable = true
  n.setXattr('user.x', enc('y'))
  t.same(n.dirtyRanges(), [[10, 20], [40, 50]], 'changed ranges kept')
  t.equal(n.inTable, true)
  n.restart()
  t.equal(n.dirtyLo, Infinity, 'restart clears the dirty span')
  t.equal(n.dirtyHi, 0)
  t.same(n.dirtyRanges(), [], 'and the ranges')
  t.equal(n.pages, undefined, 'and the pages')
  t.equal(n.inTable, true, 'but not what is not write state')
  t.same([...n.xattrs], [['user.x', enc('y')]])
})

t.test('a file\'s reader follows its base', async t => {
  const store = new MemoryBlockStore()
  const put = async (blocks: Array<{ cid: unknown, bytes: Uint8Array }>): Promise<void> => { for (const b of blocks) await store.put(b as never) }
  const a = await fileFromBytes(enc('first content'), put)
  const b = await fileFromBytes(enc('second'), put)
  const n = Inode.fromEntry(9, entry('file', { cid: a.cid, size: 13 }))
  const r1 = n.baseReader(store)
  t.same(await r1?.read(0, 13), enc('first content'))
  t.equal(n.baseReader(store), r1, 'the reader is kept while the base stays')
  t.ok(n.readerHeld)
  n.base = b.cid
  const r2 = n.baseReader(store)
  t.not(r2, r1, 'a new base gets a new reader')
  t.same(await r2?.read(0, 6), enc('second'))
  n.dropReader()
  t.notOk(n.readerHeld, 'dropped')
  t.same(await n.baseReader(store)?.read(0, 6), enc('second'), 'and made again on the next read')
})
