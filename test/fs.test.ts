// The fs core without a mount: operations, folds into versions, log replay after a crash,
// hard links through the link table, copy-on-write sharing between versions.
import t from 'tap'
import crypto from 'node:crypto'
import { ReefNode } from '../src/node.js'
import { ReefFS } from '../src/fs/fs.js'
import { WriterLog } from '../src/log/index.js'
import { ROOT_INO } from '../src/fs/inode.js'
import { cidFor, cidFromKey, type CID, DAG_CBOR } from '../src/block/index.js'
import { objectKind } from '../src/object/version.js'
import { decodeRecord, encodeRecord, type LogRecord } from '../src/log/record.js'
import { reef, show } from './helpers/cli.js'
import { code, type CoreFs, openCoreFs } from './helpers/fs-core.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const cred = { uid: 1000, gid: 1000 }

const setup = async (t: Tap.Test): Promise<CoreFs> => await openCoreFs(t)

const text = async (rfs: ReefFS, p: string): Promise<string> => {
  const n = await rfs.resolve(p)
  return Buffer.from(await rfs.read(n, 0, n.size)).toString()
}

t.test('create, write, read, fold, reopen: same tree, new version', async t => {
  const s = await setup(t)
  const f = await s.fs.create(ROOT_INO, enc('a.txt'), 0o644, cred)
  await s.fs.write(f.ino, 0, enc('hello world'))
  await s.fs.write(f.ino, 6, enc('reef!'))
  t.equal(await text(s.fs, '/a.txt'), 'hello reef!')
  const d = await s.fs.mkdir(ROOT_INO, enc('dir'), 0o755, cred)
  await s.fs.symlink(d.ino, enc('ln'), enc('../a.txt'), cred)
  const v = await s.fs.fold('first')
  t.ok(v, 'fold made a version')
  t.equal(v?.root.seq, 1n)
  t.equal(v?.root.message, 'first')
  t.equal(await s.fs.fold(), undefined, 'nothing to fold twice')
  const r = await s.reopen()
  t.equal(await text(r, '/a.txt'), 'hello reef!')
  const ln = await r.resolve('/dir/ln')
  t.equal(Buffer.from(r.readlink(ln)).toString(), '../a.txt')
  const a = (await r.resolve('/a.txt')).attr()
  t.equal(a.uid, 1000)
  t.equal(a.mode & 0o7777, 0o644)
  t.equal(a.ino, f.ino, 'inode numbers are stable across reopen')
  t.equal((await r.resolve('/dir')).attr().nlink, 2)
  t.equal(r.root.attr().nlink, 3, 'root nlink counts its subdirectory')
})

t.test('the log is replayed after a crash: nothing synced is lost', async t => {
  const s = await setup(t)
  await s.fs.fold('base', true)
  const f = await s.fs.create(ROOT_INO, enc('x'), 0o600, cred)
  const data = crypto.randomBytes(300_000)
  await s.fs.write(f.ino, 0, data)
  await s.fs.truncate(f.ino, 200_000)
  await s.fs.mkdir(ROOT_INO, enc('d'), 0o700, cred)
  await s.fs.rename(ROOT_INO, enc('x'), (await s.fs.resolve('/d')).ino, enc('y'))
  await s.fs.setattr(f.ino, { mtime: 123_456_789_123n, atime: 5n })
  s.fs.sync()
  const r = await s.reopen()
  t.ok(r.dirty, 'replayed records are pending')
  const y = await r.resolve('/d/y')
  t.equal(y.size, 200_000)
  t.same(Buffer.from(await r.read(y, 0, 300_000)), data.subarray(0, 200_000))
  t.equal(y.attr().mtime, 123_456_789_123n)
  t.equal(y.attr().atime, 5n)
  t.equal(await code(r.resolve('/x')), 'ENOENT')
  const v = await r.fold()
  t.equal(v?.root.seq, 2n, 'the replayed records fold into the next version')
  const r2 = await s.reopen()
  t.notOk(r2.dirty, 'after the fold the log is empty')
  t.same(Buffer.from(await r2.read(await r2.resolve('/d/y'), 0, 300_000)), data.subarray(0, 200_000))
})

t.test('replayed records go once applied, unless kept for a later open of the same log', async t => {
  const s = await setup(t)
  const version = s.fs.version
  await s.fs.create(ROOT_INO, enc('a'), 0o600, cred)
  await s.fs.mkdir(ROOT_INO, enc('d'), 0o700, cred)
  s.fs.sync()
  const r = await s.reopen()
  t.equal(r.log?.replayed.length, 0, 'applied, so let go')
  t.equal(r.pending, 2, 'still pending: the next fold stores them')
  t.equal((await r.resolve('/d')).kind, 'dir')
  // A view's writer opens its log again at a merged version: that open replays them once more.
  const log = new WriterLog(s.node.logDir(), s.node.keys.publicKey).open()
  t.teardown(() => log.close())
  const kept = await ReefFS.open({ store: s.node.store, log, version, keepReplayed: true })
  t.equal(log.replayed.length, 2, 'kept when asked')
  t.equal(kept.pending, 2)
  const again = await ReefFS.open({ store: s.node.store, log, version })
  t.equal(again.pending, 2, 'and a later open of the same log replays them')
  t.equal((await again.resolve('/a')).kind, 'file')
  t.equal(log.replayed.length, 0, 'then they go')
})

t.test('errnos of the core', async t => {
  const s = await setup(t)
  const d = await s.fs.mkdir(ROOT_INO, enc('d'), 0o755, cred)
  const f = await s.fs.create(d.ino, enc('f'), 0o644, cred)
  t.equal(await code(s.fs.create(d.ino, enc('f'), 0o644, cred)), 'EEXIST')
  t.equal(await code(s.fs.mkdir(ROOT_INO, enc('d'), 0o755, cred)), 'EEXIST')
  t.equal(await code(s.fs.rmdir(ROOT_INO, enc('d'))), 'ENOTEMPTY')
  t.equal(await code(s.fs.unlink(ROOT_INO, enc('d'))), 'EISDIR')
  t.equal(await code(s.fs.rmdir(d.ino, enc('f'))), 'ENOTDIR')
  t.equal(await code(s.fs.create(f.ino, enc('g'), 0o644, cred)), 'ENOTDIR')
  t.equal(await code(s.fs.create(ROOT_INO, new Uint8Array(256).fill(0x61), 0o644, cred)), 'ENAMETOOLONG')
  t.equal(await code(s.fs.unlink(ROOT_INO, enc('nope'))), 'ENOENT')
  t.equal(await code(s.fs.truncate(f.ino, 2 ** 50)), 'EFBIG')
  t.equal(await code(s.fs.write(f.ino, 2 ** 50, enc('x'))), 'EFBIG')
  t.equal(await code(s.fs.write(d.ino, 0, enc('x'))), 'EISDIR')
  t.equal(await code(s.fs.rename(ROOT_INO, enc('d'), d.ino, enc('inside'))), 'EINVAL')
  const e = await s.fs.mkdir(ROOT_INO, enc('e'), 0o755, cred)
  await s.fs.create(e.ino, enc('g'), 0o644, cred)
  t.equal(await code(s.fs.rename(d.ino, enc('f'), ROOT_INO, enc('e'))), 'EISDIR')
  t.equal(await code(s.fs.rename(ROOT_INO, enc('d'), ROOT_INO, enc('e'))), 'ENOTEMPTY')
  t.equal(await code(s.fs.setxattr(f.ino, 'trusted.x', enc('v'))), 'ENOTSUP')
  t.equal(await code(s.fs.removexattr(f.ino, 'user.none')), 'ENODATA')
  t.equal(await code(s.fs.link(d.ino, ROOT_INO, enc('dl'))), 'EPERM')
  t.equal(s.fs.pending, 4, 'only the 4 successful operations are in the log')
})

t.test('rename over an existing file and of directories', async t => {
  const s = await setup(t)
  const a = await s.fs.create(ROOT_INO, enc('a'), 0o644, cred)
  await s.fs.write(a.ino, 0, enc('new'))
  const b = await s.fs.create(ROOT_INO, enc('b'), 0o644, cred)
  await s.fs.write(b.ino, 0, enc('old'))
  await s.fs.rename(ROOT_INO, enc('a'), ROOT_INO, enc('b'))
  t.equal(await text(s.fs, '/b'), 'new')
  t.equal(await code(s.fs.resolve('/a')), 'ENOENT')
  const d1 = await s.fs.mkdir(ROOT_INO, enc('d1'), 0o755, cred)
  await s.fs.mkdir(ROOT_INO, enc('d2'), 0o755, cred)
  await s.fs.create(d1.ino, enc('inner'), 0o644, cred)
  await s.fs.rename(ROOT_INO, enc('d1'), ROOT_INO, enc('d2'))
  t.ok(await s.fs.resolve('/d2/inner'))
  t.equal(s.fs.root.attr().nlink, 3)
  await s.fs.fold()
  const r = await s.reopen()
  t.equal(await text(r, '/b'), 'new')
  t.ok(await r.resolve('/d2/inner'))
  t.equal(r.root.attr().nlink, 3)
})

t.test('hard links share one inode across folds and reopen', async t => {
  const s = await setup(t)
  const d = await s.fs.mkdir(ROOT_INO, enc('d'), 0o755, cred)
  const f = await s.fs.create(ROOT_INO, enc('f'), 0o644, cred)
  await s.fs.write(f.ino, 0, enc('one'))
  await s.fs.link(f.ino, d.ino, enc('g'))
  t.equal(f.attr().nlink, 2)
  await s.fs.fold()
  await s.fs.write(f.ino, 0, enc('two'))
  await s.fs.fold()
  let r = await s.reopen()
  const g = await r.resolve('/d/g')
  const f2 = await r.resolve('/f')
  t.equal(g, f2, 'both names resolve to one inode')
  t.equal(g.attr().nlink, 2)
  t.equal(await text(r, '/d/g'), 'two')
  await r.unlink(ROOT_INO, enc('f'))
  t.equal(g.attr().nlink, 1)
  await r.fold()
  r = await s.reopen()
  t.equal(await text(r, '/d/g'), 'two')
  t.equal((await r.resolve('/d/g')).attr().nlink, 1)
})

t.test('sparse files, truncate grow and shrink, unlinked open files', async t => {
  const s = await setup(t)
  const f = await s.fs.create(ROOT_INO, enc('sparse'), 0o644, cred)
  await s.fs.write(f.ino, 10_000_000, enc('end'))
  t.equal(f.size, 10_000_003)
  const hole = await s.fs.read(f, 5_000_000, 100)
  t.ok(hole.every(b => b === 0), 'holes read as zeros')
  await s.fs.fold()
  await s.fs.truncate(f.ino, 5)
  await s.fs.truncate(f.ino, 10_000_003)
  t.ok((await s.fs.read(f, 9_999_990, 13)).every(b => b === 0), 'shrink then grow exposes zeros, not old data')
  await s.fs.fold()
  const r = await s.reopen()
  const f2 = await r.resolve('/sparse')
  t.ok((await r.read(f2, 9_999_990, 13)).every(b => b === 0))
  const u = await r.create(ROOT_INO, enc('tmp'), 0o644, cred)
  r.open(u)
  await r.write(u.ino, 0, enc('still here'))
  await r.unlink(ROOT_INO, enc('tmp'))
  t.equal(Buffer.from(await r.read(u, 0, 100)).toString(), 'still here', 'an unlinked open file stays readable')
  await r.fold()
  r.release(u)
  t.equal(await code(r.resolve('/tmp')), 'ENOENT')
})

t.test('versions are immutable and share unchanged blocks', async t => {
  const s = await setup(t)
  const f = await s.fs.create(ROOT_INO, enc('big'), 0o644, cred)
  const data = crypto.randomBytes(4 * 1024 * 1024)
  await s.fs.write(f.ino, 0, data)
  const v1 = await s.fs.fold()
  const keysBefore = new Set<string>()
  for await (const k of s.node.store.keys()) keysBefore.add(Buffer.from(k).toString('hex'))
  await s.fs.write(f.ino, 2_000_000, enc('patch'))
  const v2 = await s.fs.fold()
  let added = 0
  for await (const k of s.node.store.keys()) if (!keysBefore.has(Buffer.from(k).toString('hex'))) added++
  t.ok(added <= 8, `a 5-byte patch of a 4 MiB file adds only a few blocks (${added})`)
  const old = await s.node.openVersion(v1!)
  const oldF = await old.resolve('/big')
  t.same(Buffer.from(await old.read(oldF, 0, data.length)), data, 'the old version still reads the old bytes')
  t.equal(await code(old.write(oldF.ino, 0, enc('x'))), 'EROFS')
  const now = await s.node.openVersion(v2!)
  t.equal(Buffer.from(await now.read(await now.resolve('/big'), 2_000_000, 5)).toString(), 'patch')
  const hist = await s.node.history()
  t.same(hist.map(h => h.seq), [2n, 1n])
})

t.test('scattered writes into a big file fold around each write, not across the span between them', async t => {
  const s = await setup(t)
  const f = await s.fs.create(ROOT_INO, enc('image'), 0o644, cred)
  const data = crypto.randomBytes(32 * 1024 * 1024)
  await s.fs.write(f.ino, 0, data)
  await s.fs.fold()
  const keysBefore = new Set<string>()
  for await (const k of s.node.store.keys()) keysBefore.add(Buffer.from(k).toString('hex'))
  // 16 writes of 4 KiB, one per 2 MiB, from the start of the file to its end (a disk image).
  const expect = Buffer.from(data)
  for (let i = 0; i < 16; i++) {
    const at = i * 2 * 1024 * 1024 + 4096 * (i % 7)
    const w = crypto.randomBytes(4096)
    w.copy(expect, at)
    await s.fs.write(f.ino, at, w)
  }
  await s.fs.fold()
  let added = 0
  for await (const k of s.node.store.keys()) if (!keysBefore.has(Buffer.from(k).toString('hex'))) added++
  // Each write re-chunks about the chunk around it (64 KiB on average): ~16-48 chunks plus the
  // tree's nodes and the log's frames, where re-chunking the 30 MiB span would add ~500.
  t.ok(added < 120, `16 scattered 4 KiB writes into 32 MiB added ${added} blocks`)
  const r = await s.reopen()
  const n = await r.resolve('/image')
  t.ok(Buffer.from(await r.read(n, 0, n.size)).equals(expect), 'the file reads back with every write in place')
})

t.test('closing a file drops its reader even while the inode stays held (the kernel holds what it looked up)', async t => {
  const s = await setup(t)
  const f = await s.fs.create(ROOT_INO, enc('f'), 0o644, cred)
  await s.fs.write(f.ino, 0, crypto.randomBytes(300_000))
  await s.fs.fold()
  const n = await s.fs.resolve('/f')
  s.fs.open(n) // the kernel's reference, as the mount's inode table takes it
  s.fs.open(n) // a descriptor
  await s.fs.read(n, 0, 300_000)
  t.ok(n.readerHeld, 'a read made a reader')
  s.fs.release(n) // the descriptor closes
  t.notOk(n.readerHeld, 'its cached nodes and chunks went with the last descriptor, not at FORGET')
  t.equal((await s.fs.read(n, 1000, 10)).length, 10, 'a later read makes a new one')
  s.fs.release(n)
})

t.test('xattrs survive folds', async t => {
  const s = await setup(t)
  const f = await s.fs.create(ROOT_INO, enc('x'), 0o644, cred)
  await s.fs.setxattr(f.ino, 'user.color', enc('blue'))
  t.equal(await code(s.fs.setxattr(f.ino, 'user.color', enc('red'), 1)), 'EEXIST')
  t.equal(await code(s.fs.setxattr(f.ino, 'user.size', enc('1'), 2)), 'ENODATA')
  await s.fs.fold()
  const r = await s.reopen()
  const x = await r.resolve('/x')
  t.equal(Buffer.from(r.getxattr(x, 'user.color')).toString(), 'blue')
  t.same(r.listxattr(x), ['user.color'])
})

t.test('sparse terabyte files fold in time proportional to what was written', async t => {
  const s = await setup(t)
  const f = await s.fs.create(ROOT_INO, enc('huge'), 0o644, cred)
  await s.fs.truncate(f.ino, 2 ** 40)
  await s.fs.write(f.ino, 2 ** 40 - 3, enc('end'))
  await s.fs.write(f.ino, 123_456_789, enc('middle'))
  const keysBefore = new Set<string>()
  for await (const k of s.node.store.keys()) keysBefore.add(Buffer.from(k).toString('hex'))
  await s.fs.fold()
  let added = 0
  for await (const k of s.node.store.keys()) if (!keysBefore.has(Buffer.from(k).toString('hex'))) added++
  t.ok(added < 20, `a 1 TiB sparse file with two writes is a handful of blocks (${added})`)
  const r = await s.reopen()
  const h = await r.resolve('/huge')
  t.equal(h.size, 2 ** 40)
  t.equal(Buffer.from(await r.read(h, 2 ** 40 - 3, 10)).toString(), 'end')
  t.equal(Buffer.from(await r.read(h, 123_456_789, 6)).toString(), 'middle')
  t.ok((await r.read(h, 2 ** 39, 4096)).every(b => b === 0), 'the hole reads as zeros')
  // Editing one end again keeps the hole: the fold stays small.
  await r.write(h.ino, 0, enc('start'))
  await r.fold()
  const r2 = await s.reopen()
  const h2 = await r2.resolve('/huge')
  t.equal(Buffer.from(await r2.read(h2, 0, 5)).toString(), 'start')
  t.equal(Buffer.from(await r2.read(h2, 123_456_789, 6)).toString(), 'middle')
  t.equal(Buffer.from(await r2.read(h2, 2 ** 40 - 3, 3)).toString(), 'end')
})

/**
 * Walks the log chain back from `from` through the store (every get verified), checking each
 * record block decodes and re-encodes to its BGUID. Bounded by `max` records.
 */
async function walkLog (store: ReefNode['store'], from: CID, max: number): Promise<LogRecord[]> {
  const out: LogRecord[] = []
  let at: CID | undefined = from
  while (at !== undefined) {
    if (out.length >= max) throw new Error(`the log chain is longer than ${max} records`)
    const bytes = await store.get(at)
    const r = decodeRecord(bytes)
    if (!encodeRecord(r).cid.equals(at)) throw new Error(`record ${at.toString()} does not re-encode to its BGUID`)
    out.push(r)
    at = r.prev
  }
  return out
}

t.test('a fold stores every log record and data frame as blocks: the version\'s log link resolves and chains back to the first record', async t => {
  const s = await setup(t)
  const big = crypto.randomBytes(300_000) // one write record, its data in a frame: bigger than any chunk
  const f = await s.fs.create(ROOT_INO, enc('f'), 0o644, cred)
  await s.fs.write(f.ino, 0, big)
  await s.fs.write(f.ino, 7, enc('inline'))
  const d = await s.fs.mkdir(ROOT_INO, enc('d'), 0o755, cred)
  await s.fs.rename(ROOT_INO, enc('f'), d.ino, enc('g'))
  await s.fs.setattr(f.ino, { mode: 0o600 })
  const v1 = await s.fs.fold('one')
  const log1 = v1?.root.log
  t.ok(log1 !== undefined && await s.node.store.has(log1), 'the version\'s log record is in the store')
  const chain1 = await walkLog(s.node.store, log1!, 1000)
  t.same(chain1.map(r => r.n), [6, 5, 4, 3, 2, 1], 'walking prev reaches every folded record, newest first')
  t.equal(chain1.at(-1)?.prev, undefined, 'the first record has no prev')
  const w = chain1.find(r => r.op.op === 'write' && r.op.dataCid !== undefined)?.op
  t.ok(w?.op === 'write' && w.dataCid !== undefined, 'the large write names its data')
  if (w?.op === 'write' && w.dataCid !== undefined) {
    t.same(Buffer.from(await s.node.store.get(w.dataCid)), big, 'its data frame is a block in the store')
  }

  // More writes, a crash and a replay: the chain continues through the next fold.
  const h = await s.fs.create(ROOT_INO, enc('h'), 0o644, cred)
  const second = crypto.randomBytes(40_000)
  await s.fs.write(h.ino, 0, second, crypto.createHash('sha256').update(second).digest())
  s.fs.sync()
  const r = await s.reopen()
  const v2 = await r.fold('two')
  const chain2 = await walkLog(s.node.store, v2!.root.log!, 1000)
  t.same(chain2.map(x => x.n), [8, 7, 6, 5, 4, 3, 2, 1], 'the second version\'s chain reaches the records of both folds')
  t.ok(chain2[2] !== undefined && encodeRecord(chain2[2]).cid.equals(log1!), 'through the first version\'s last record')

  // The CLI serves a log record like any block.
  await s.node.close()
  const got = await reef(s.dir, ['block', 'get', v2!.root.log!.toString()])
  t.equal(got.code, 0, `reef block get <log record>: ${show(got)}`)
  t.ok(cidFor(got.stdout, DAG_CBOR).equals(v2!.root.log!), 'prints exactly the record block')
  t.equal(decodeRecord(got.stdout).n, 8)
  const data = await reef(s.dir, ['block', 'get', (w as { dataCid: CID }).dataCid.toString()])
  t.same(data.stdout, big, `reef block get <data frame>: ${show(data)}`)
})

t.test('folding many small files stores a data frame equal to a file\'s chunk once', async t => {
  const s = await setup(t)
  const datas: Buffer[] = []
  for (let i = 0; i < 5; i++) {
    const f = await s.fs.create(ROOT_INO, enc(`f${i}`), 0o644, cred)
    // Below the minimum chunk size, so one chunk; its digest given (as write-behind does), so
    // one data frame too.
    const data = crypto.randomBytes(10_000 + i)
    datas.push(data)
    await s.fs.write(f.ino, 0, data, crypto.createHash('sha256').update(data).digest())
  }
  const keysBefore = new Set<string>()
  for await (const k of s.node.store.keys()) keysBefore.add(Buffer.from(k).toString('hex'))
  const v = await s.fs.fold()
  const chain = await walkLog(s.node.store, v!.root.log!, 100)
  t.equal(chain.length, 10, 'five creates and five writes')
  const kinds: Record<string, number> = {}
  for await (const k of s.node.store.keys()) {
    if (keysBefore.has(Buffer.from(k).toString('hex'))) continue
    const cid = cidFromKey(k, DAG_CBOR)
    const kind = objectKind(cid, await s.node.store.get(cid))
    kinds[kind] = (kinds[kind] ?? 0) + 1
  }
  for (const data of datas) t.ok(await s.node.store.has(cidFor(data)), 'each file\'s data is one raw block')
  t.equal(kinds.log, 10, 'the fold stored the ten records')
  t.equal(kinds.raw, 5, `five raw blocks, not ten: each data frame is its file's chunk (${JSON.stringify(kinds)})`)
})

t.test('a small new file holds a small dirty page that grows with its writes', async t => {
  const c = await setup(t)
  const cred = { uid: 0, gid: 0 }
  const n = await c.fs.create(ROOT_INO, enc('small'), 0o644, cred)
  const before = c.fs.dirtyBytes
  await c.fs.write(n.ino, 0, new Uint8Array(100).fill(1))
  t.equal(c.fs.dirtyBytes - before, 4096, 'a 100-byte file holds 4 KiB, not a 64 KiB page')
  await c.fs.write(n.ino, 20_000, new Uint8Array(10).fill(2))
  t.equal(c.fs.dirtyBytes - before, 32_768, 'a write at 20,000 grows it to 32 KiB')
  await c.fs.truncate(n.ino, 50)
  await c.fs.truncate(n.ino, 30_000)
  const want = new Uint8Array(30_000)
  want.fill(1, 0, 50)
  t.same(Buffer.from(await c.fs.read(n, 0, 40_000)), Buffer.from(want), 'truncated, grown: the tail reads as zeros')
  await c.fs.write(n.ino, 70_000, new Uint8Array(5).fill(3))
  const whole = new Uint8Array(70_005)
  whole.set(want)
  whole.fill(3, 70_000)
  t.same(Buffer.from(await c.fs.read(n, 0, 80_000)), Buffer.from(whole), 'a second page beside the small first one')
  await c.fs.fold()
  t.equal(c.fs.dirtyBytes, 0, 'a fold gives every byte back')
  const again = await c.reopen()
  t.same(Buffer.from(await again.read(await again.resolve('/small'), 0, 80_000)), Buffer.from(whole), 'and it reads back after a reopen')
})
