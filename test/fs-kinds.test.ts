// Every entry kind with hard links, through folds and reopen; the fold's read-back refusing a
// block its encoder got wrong; directories written before the read-back still read.
import t from 'tap'
import type { ReefFS } from '../src/fs/fs.js'
import { ROOT_INO, S_IFBLK, S_IFCHR, S_IFIFO, S_IFSOCK } from '../src/fs/inode.js'
import { decodeEntry, DirReader, encodeFault, type Kind } from '../src/object/dir.js'
import { encodeBlock } from '../src/object/codec.js'
import { makeDev } from '../src/object/devnum.js'
import { code, type CoreFs, openCoreFs } from './helpers/fs-core.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const cred = { uid: 1000, gid: 1000 }

const setup = async (t: Tap.Test): Promise<CoreFs> => await openCoreFs(t, 'reef-kinds-')

/** One of each kind in /d, each also hard-linked as /d/<name>.l (directories cannot be). */
async function populate (rfs: ReefFS): Promise<void> {
  const d = await rfs.mkdir(ROOT_INO, enc('d'), 0o755, cred)
  const f = await rfs.create(d.ino, enc('file'), 0o640, cred)
  await rfs.write(f.ino, 0, enc('hello'))
  await rfs.symlink(d.ino, enc('sym'), enc('target1'), cred)
  await rfs.mknod(d.ino, enc('fifo'), S_IFIFO | 0o600, 0, cred)
  await rfs.mknod(d.ino, enc('sock'), S_IFSOCK | 0o755, 0, cred)
  await rfs.mknod(d.ino, enc('chr'), S_IFCHR | 0o620, makeDev(1, 3), cred)
  await rfs.mknod(d.ino, enc('blk'), S_IFBLK | 0o660, makeDev(259, 70000), cred)
  for (const name of ['file', 'sym', 'fifo', 'sock', 'chr', 'blk']) {
    const n = await rfs.resolve(`/d/${name}`)
    await rfs.link(n.ino, d.ino, enc(`${name}.l`))
  }
}

interface Seen { kind: Kind, mode: number, nlink: number, uid: number, rdev: number, target?: string, same: boolean }
async function describeTree (rfs: ReefFS): Promise<Record<string, Seen>> {
  const out: Record<string, Seen> = {}
  for (const name of ['file', 'sym', 'fifo', 'sock', 'chr', 'blk']) {
    const n = await rfs.resolve(`/d/${name}`)
    const l = await rfs.resolve(`/d/${name}.l`)
    const a = n.attr()
    out[name] = {
      kind: n.kind, mode: a.mode, nlink: a.nlink, uid: a.uid, rdev: a.rdev, same: n.ino === l.ino,
      ...(n.kind === 'symlink' ? { target: Buffer.from(rfs.readlink(n)).toString() } : {})
    }
  }
  return out
}

const expected: Record<string, Seen> = {
  file: { kind: 'file', mode: 0o100640, nlink: 2, uid: 1000, rdev: 0, same: true },
  sym: { kind: 'symlink', mode: 0o120777, nlink: 2, uid: 1000, rdev: 0, target: 'target1', same: true },
  fifo: { kind: 'fifo', mode: S_IFIFO | 0o600, nlink: 2, uid: 1000, rdev: 0, same: true },
  sock: { kind: 'socket', mode: S_IFSOCK | 0o755, nlink: 2, uid: 1000, rdev: 0, same: true },
  chr: { kind: 'chr', mode: S_IFCHR | 0o620, nlink: 2, uid: 1000, rdev: makeDev(1, 3), same: true },
  blk: { kind: 'blk', mode: S_IFBLK | 0o660, nlink: 2, uid: 1000, rdev: makeDev(259, 70000), same: true }
}

t.test('every kind, hard-linked, reads back the same live, after a fold, in a fresh open and after a crash', async t => {
  const s = await setup(t)
  await populate(s.fs)
  t.same(await describeTree(s.fs), expected, 'live')
  const v = await s.fs.fold()
  t.ok(v, 'folded')
  t.same(await describeTree(s.fs), expected, 'after the fold')
  // A read-only view of the committed version decodes every block from the store.
  const view = await s.node.openVersion(v as NonNullable<typeof v>)
  t.same(await describeTree(view), expected, 'the version, read from its blocks')
  const names = (await new DirReader((await view.resolve('/d')).dirBase as never, s.node.store).list()).map(e => Buffer.from(e.name).toString())
  t.same(names.sort(), ['blk', 'blk.l', 'chr', 'chr.l', 'fifo', 'fifo.l', 'file', 'file.l', 'sock', 'sock.l', 'sym', 'sym.l'], 'the directory lists')
  await s.fs.unlink((await s.fs.resolve('/d')).ino, enc('sym.l'))
  await s.fs.rename((await s.fs.resolve('/d')).ino, enc('fifo.l'), ROOT_INO, enc('fifo.moved'))
  await s.reopen()
  const sym = await s.fs.resolve('/d/sym')
  t.equal(sym.attr().nlink, 1, 'unlinking one name of a symlink is replayed after a crash')
  t.equal(Buffer.from(s.fs.readlink(sym)).toString(), 'target1')
  t.equal((await s.fs.resolve('/fifo.moved')).ino, (await s.fs.resolve('/d/fifo')).ino, 'a renamed FIFO link is the same inode')
  await s.fs.fold()
  await s.reopen()
  t.equal((await s.fs.resolve('/fifo.moved')).attr().mode, S_IFIFO | 0o600, 'and after a fold and reopen')
})

t.test('mknod refuses what Linux refuses and makes a regular file of S_IFREG', async t => {
  const s = await setup(t)
  t.equal(await code(s.fs.mknod(ROOT_INO, enc('d'), 0o040755, 0, cred)), 'EPERM', 'a directory')
  t.equal(await code(s.fs.mknod(ROOT_INO, enc('l'), 0o120777, 0, cred)), 'EINVAL', 'a symlink')
  t.equal(await code(s.fs.mknod(ROOT_INO, enc('x'), 0o170644, 0, cred)), 'EINVAL', 'no such file type')
  const f = await s.fs.mknod(ROOT_INO, enc('reg'), 0o100644, makeDev(8, 1), cred)
  t.equal(f.kind, 'file', 'S_IFREG is a file')
  t.equal(f.attr().rdev, 0, 'its device number is ignored')
  const p = await s.fs.mknod(ROOT_INO, enc('p'), S_IFIFO | 0o644, makeDev(8, 1), cred)
  t.equal(p.attr().rdev, 0, 'a FIFO keeps no device number')
  t.equal(await code(s.fs.mknod(ROOT_INO, enc('p'), S_IFIFO | 0o644, 0, cred)), 'EEXIST', 'an existing name')
  t.equal(await code(s.fs.read(p, 0, 10)), 'EINVAL', 'reef serves no data for a FIFO (the kernel does)')
})

t.test('a directory written with a hard-linked symlink before the fix reads', async t => {
  // The shape the old fold wrote: a link-table reference of kind symlink (2) without a target,
  // which the old decoder refused ("symlink without target").
  const old = { n: enc('hl'), k: 2, m: 0, u: 0, g: 0, s: 0, mt: 0, at: 0, ct: 0, i: 7, hl: true }
  const e = decodeEntry(old)
  t.equal(e.kind, 'symlink')
  t.equal(e.linked, true)
  t.equal(e.ino, 7)
  t.throws(() => decodeEntry({ ...old, hl: undefined }), { code: 'BAD_ENCODING' }, 'a symlink that is no reference still needs its target')
  t.ok(encodeBlock({ t: 'd', h: 0, e: [old] }).cid, 'encodes as a leaf')
})

t.test('a fold whose directory block does not read back fails: head, log and tree stay', async t => {
  const s = await setup(t)
  await populate(s.fs)
  const v1 = await s.fs.fold()
  const d = await s.fs.resolve('/d')
  const before = { dirBase: d.dirBase?.toString(), pending: 0 }
  const f = await s.fs.create(d.ino, enc('bad'), 0o644, cred)
  await s.fs.write(f.ino, 0, enc('kept'))
  await s.fs.symlink(ROOT_INO, enc('badlink'), enc('somewhere'), cred)
  before.pending = s.fs.pending
  for (const [name, why] of [['bad', /entry "bad" .* reads back with another mode/], ['badlink', /does not read back: malformed directory entry: symlink without target/]] as const) {
    encodeFault.name = name
    try {
      await t.rejects(s.fs.fold(), { code: 'BAD_ENCODING', message: why }, `an encoder fault on ${name} is refused`)
    } finally {
      encodeFault.name = undefined
    }
    const head = await s.node.currentVersion()
    t.equal(head?.vguid.toString(), v1?.vguid.toString(), 'the head did not move')
    t.equal(s.fs.pending, before.pending, 'every record is still pending')
    t.equal((await s.fs.resolve('/d')).dirBase?.toString(), before.dirBase, 'the directory keeps its committed tree')
  }
  // The fault gone, the same state folds, and a fresh open (from the log, as after a crash) too.
  await s.reopen()
  t.equal(Buffer.from(await s.fs.read(await s.fs.resolve('/d/bad'), 0, 10)).toString(), 'kept', 'the write was replayed from the log')
  const v2 = await s.fs.fold()
  t.equal(v2?.root.seq, (v1?.root.seq ?? 0n) + 1n, 'the next fold commits the next version')
  const view = await s.node.openVersion(v2 as NonNullable<typeof v2>)
  t.equal(Buffer.from(view.readlink(await view.resolve('/badlink'))).toString(), 'somewhere', 'and it reads back')
  t.same(await describeTree(view), expected)
})
