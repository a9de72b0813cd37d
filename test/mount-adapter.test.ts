// The mount's operations called directly, without a kernel: inode numbers in, answers or errnos
// out (mount/adapter). What the kernel would do around them (its lookup counts, the order of
// requests) is played by the test.
import t from 'tap'
import os from 'node:os'
import { constants as fsc } from 'node:fs'
import { buildAdapter, type MountAdapter } from '../mount/adapter/index.js'
import { REEF_INO, VERSIONS_INO } from '../mount/adapter/tree.js'
import type { Ctx, Entry, LowLevelOps } from '../mount/fuse3.js'
import { RENAME_EXCHANGE, RENAME_NOREPLACE } from '../src/fs/fs.js'
import { ROOT_INO } from '../src/fs/inode.js'
import { openCoreFs } from './helpers/fs-core.js'
import { openVersion, writers } from './helpers/writers.js'
import { merge } from '../src/merge/index.js'

/** A read's answer (the bytes, or the pieces they lie in) as one Buffer. */
const joined = (r: Uint8Array | Uint8Array[]): Buffer => Buffer.concat(Array.isArray(r) ? r : [r])

const E = os.constants.errno
const ctx: Ctx = { uid: 0, gid: 0, pid: 1 }
const b = (s: string): Buffer => Buffer.from(s)

/** The errno an op fails with (0 if it succeeds). */
async function errno (p: unknown): Promise<number> {
  try {
    await p
    return 0
  } catch (err) {
    return (err as { errno?: number }).errno ?? -1
  }
}

async function setup (t: Tap.Test, opts: { writeBehind?: boolean, writeFault?: string } = {}): Promise<MountAdapter & { ops: Required<LowLevelOps>, lines: string[] }> {
  const core = await openCoreFs(t, 'reef-adapter-')
  const lines: string[] = []
  const m = buildAdapter({
    fs: core.fs,
    versions: { list: async () => [], open: async () => { throw new Error('no versions') }, current: async () => undefined },
    log: (l) => { lines.push(l) },
    attrTimeout: 1,
    entryTimeout: 1,
    writeBehind: opts.writeBehind ?? true,
    maxFileSize: 2 ** 44,
    faults: { write: opts.writeFault }
  })
  return { ...m, ops: m.ops as Required<LowLevelOps>, lines }
}

t.test('create, write, read back, getattr: answers carry reef\'s inode numbers and exact sizes', async t => {
  const { ops, settled } = await setup(t)
  const c = await ops.create(ROOT_INO, b('a.txt'), 0o644, fsc.O_WRONLY, ctx)
  t.ok(c.attr.ino > ROOT_INO, 'a new inode number')
  t.equal(await ops.write(c.attr.ino, c.fh, 0, b('hello world'), ctx), 11, 'write acknowledged')
  const got = joined(await ops.read(c.attr.ino, c.fh, 6, 100, ctx))
  t.equal(got.toString(), 'world', 'read waits for the queued write')
  await settled()
  t.equal((await ops.getattr(c.attr.ino, ctx)).attr.size, 11, 'getattr: size')
  const e = await ops.lookup(ROOT_INO, b('a.txt'), ctx)
  t.equal(e.attr.ino, c.attr.ino, 'lookup finds the same inode')
  const none = await ops.lookup(ROOT_INO, b('none'), ctx)
  t.same([none.attr.ino, none.entryTimeout], [0, 1], 'a missing name: a negative entry the kernel may keep (inode 0)')
  t.equal(await errno(ops.lookup(REEF_INO, b('nope'), ctx)), E.ENOENT, 'in the control tree, where names appear under the kernel: ENOENT')
  t.equal(await errno(ops.getattr(987654, ctx)), E.ESTALE, 'an inode number reef does not know: ESTALE (the kernel looks up again)')
})

t.test('an inode the kernel still references outlives its last name until FORGET', async t => {
  const { ops, adapter } = await setup(t)
  const c = await ops.create(ROOT_INO, b('f'), 0o644, fsc.O_RDWR, ctx)
  await ops.write(c.attr.ino, c.fh, 0, b('data'), ctx)
  await ops.release(c.attr.ino, c.fh)
  await ops.unlink(ROOT_INO, b('f'), ctx)
  t.equal((await ops.lookup(ROOT_INO, b('f'), ctx)).attr.ino, 0, 'the name is gone')
  // A process that looked the name up before the unlink opens it now.
  const o = await ops.open(c.attr.ino, fsc.O_RDONLY, ctx)
  t.equal(joined(await ops.read(c.attr.ino, o.fh, 0, 10, ctx)).toString(), 'data', 'still readable by inode')
  t.equal((await ops.getattr(c.attr.ino, ctx)).attr.nlink, 0, 'with no link left')
  await ops.release(c.attr.ino, o.fh)
  ops.forget([[c.attr.ino, 1]])
  t.equal(adapter.fs.inodes.has(c.attr.ino), false, 'after FORGET the fs core lets it go')
  t.equal(await errno(ops.getattr(c.attr.ino, ctx)), E.ESTALE, 'and its number is stale')
})

t.test('renameat2: NOREPLACE refuses an existing name, EXCHANGE swaps two, directories too', async t => {
  const { ops } = await setup(t)
  const x = await ops.create(ROOT_INO, b('x'), 0o644, 1, ctx)
  const y = await ops.create(ROOT_INO, b('y'), 0o644, 1, ctx)
  const d = await ops.mkdir(ROOT_INO, b('d'), 0o755, ctx)
  t.equal(await errno(ops.rename(ROOT_INO, b('x'), ROOT_INO, b('y'), RENAME_NOREPLACE, ctx)), E.EEXIST, 'NOREPLACE onto y: EEXIST')
  t.equal(await errno(ops.rename(ROOT_INO, b('x'), ROOT_INO, b('z'), RENAME_NOREPLACE, ctx)), 0, 'NOREPLACE onto a free name')
  t.equal(await errno(ops.rename(ROOT_INO, b('z'), ROOT_INO, b('nope'), RENAME_EXCHANGE, ctx)), E.ENOENT, 'EXCHANGE with a missing name: ENOENT')
  t.equal(await errno(ops.rename(ROOT_INO, b('z'), d.attr.ino, b('inner'), RENAME_EXCHANGE, ctx)), E.ENOENT, 'EXCHANGE across directories needs both names')
  await ops.create(d.attr.ino, b('inner'), 0o644, 1, ctx)
  t.equal(await errno(ops.rename(ROOT_INO, b('z'), d.attr.ino, b('inner'), RENAME_EXCHANGE, ctx)), 0, 'EXCHANGE across directories')
  t.equal((await ops.lookup(d.attr.ino, b('inner'), ctx)).attr.ino, x.attr.ino, 'x now lives at d/inner')
  t.equal((await ops.lookup(ROOT_INO, b('y'), ctx)).attr.ino, y.attr.ino, 'y untouched')
  const sub = await ops.mkdir(d.attr.ino, b('sub'), 0o755, ctx)
  t.equal(await errno(ops.rename(ROOT_INO, b('d'), sub.attr.ino, b('s2'), RENAME_NOREPLACE, ctx)), E.EINVAL, 'a directory into its own subtree: EINVAL')
  await ops.mkdir(sub.attr.ino, b('deep'), 0o755, ctx)
  t.equal(await errno(ops.rename(ROOT_INO, b('d'), sub.attr.ino, b('deep'), RENAME_EXCHANGE, ctx)), E.EINVAL, 'EXCHANGE of a directory with one inside it: EINVAL')
  t.equal(await errno(ops.rename(ROOT_INO, b('y'), ROOT_INO, b('w'), 4, ctx)), E.EINVAL, 'RENAME_WHITEOUT: EINVAL')
})

t.test('write-behind: a late failure is reported once, by the next flush; the daemon logs it once', async t => {
  const { ops, settled, writeBehind } = await setup(t, { writeFault: 'bad.bin' })
  const c = await ops.create(ROOT_INO, b('bad.bin'), 0o644, 1, ctx)
  t.equal(await ops.write(c.attr.ino, c.fh, 0, b('x'.repeat(4096)), ctx), 4096, 'acknowledged')
  await settled()
  t.equal(writeBehind().lateErrors, 1, 'counted')
  t.equal(await errno(ops.flush(c.attr.ino, c.fh, ctx)), E.ENOSPC, 'close reports ENOSPC')
  t.equal(await errno(ops.flush(c.attr.ino, c.fh, ctx)), 0, 'once')
  const s = await ops.create(ROOT_INO, b('sync.bad.bin'), 0o644, fsc.O_WRONLY | fsc.O_SYNC, ctx)
  t.equal(await errno(ops.write(s.attr.ino, s.fh, 0, b('y'), ctx)), E.ENOSPC, 'an O_SYNC write fails at once')
  t.equal(writeBehind().synchronous, 1, 'it went the synchronous way')
})

t.test('the control tree: /.reef and /.reef/versions are read-only directories', async t => {
  const { ops } = await setup(t)
  const r = await ops.lookup(ROOT_INO, b('.reef'), ctx)
  t.equal(r.attr.ino, REEF_INO, '/.reef')
  const v: Entry = await ops.lookup(REEF_INO, b('versions'), ctx)
  t.equal(v.attr.ino, VERSIONS_INO, '/.reef/versions')
  t.equal(v.attrTimeout, 0, 'never cached: it grows with each fold')
  t.equal(await errno(ops.mkdir(VERSIONS_INO, b('x'), 0o755, ctx)), E.EROFS, 'mkdir inside: EROFS')
  t.equal(await errno(ops.create(ROOT_INO, b('.reef'), 0o644, 1, ctx)), E.EEXIST, 'the name is reserved')
  const names = (await ops.readdirplus(ROOT_INO, (await ops.opendir(ROOT_INO, 0, ctx)).fh, ctx, 0)).map(e => Buffer.from(e.name).toString())
  t.same(names, ['.', '..', '.reef'], 'the root lists it')
})

t.test('open with O_TRUNC empties the file (the kernel sends it with the open: atomic_o_trunc)', async t => {
  const { ops, settled } = await setup(t)
  const c = await ops.create(ROOT_INO, b('t'), 0o644, fsc.O_WRONLY, ctx)
  await ops.write(c.attr.ino, c.fh, 0, b('a long first content'), ctx)
  await ops.release(c.attr.ino, c.fh)
  const o = await ops.open(c.attr.ino, fsc.O_WRONLY | fsc.O_TRUNC, ctx)
  await ops.write(c.attr.ino, o.fh, 0, b('short'), ctx)
  await settled()
  t.equal((await ops.getattr(c.attr.ino, ctx)).attr.size, 5, 'size of the new content only')
  const r = await ops.open(c.attr.ino, fsc.O_RDONLY | fsc.O_TRUNC, ctx)
  t.equal(joined(await ops.read(c.attr.ino, r.fh, 0, 100, ctx)).toString(), '', 'O_RDONLY|O_TRUNC truncates too, as Linux does')
})

t.test('O_APPEND: a write goes to reef\'s end of file, not to the kernel\'s stale size (a merge changed the file under it)', async t => {
  for (const [how, flags] of [['write-behind', fsc.O_WRONLY | fsc.O_APPEND], ['O_DSYNC', fsc.O_WRONLY | fsc.O_APPEND | fsc.O_DSYNC]] as const) {
    const { ops, settled, adapter } = await setup(t)
    const fs = adapter.fs
    const dropped: number[] = []
    adapter.tree.kernel = { invalInode: async (ino: number) => { dropped.push(ino) }, invalEntry: async () => {} }
    const c = await ops.create(ROOT_INO, b('log'), 0o644, fsc.O_WRONLY, ctx)
    await ops.release(c.attr.ino, c.fh)
    const o = await ops.open(c.attr.ino, flags, ctx)
    t.equal(await ops.write(c.attr.ino, o.fh, 0, b('one\n'), ctx), 4, `${how}: first line`)
    await settled()
    // Another writer's line arrives (as a view's merge brings it): the kernel still caches 4.
    await fs.write(c.attr.ino, 4, b('other\n'))
    t.equal(await ops.write(c.attr.ino, o.fh, 4, b('two\n'), ctx), 4, `${how}: second line, sent at the kernel's size`)
    await settled()
    const r = await ops.open(c.attr.ino, fsc.O_RDONLY, ctx)
    t.equal(joined(await ops.read(c.attr.ino, r.fh, 0, 100, ctx)).toString(), 'one\nother\ntwo\n', `${how}: appended after the other line, which survives`)
    t.same(dropped, [c.attr.ino], `${how}: the kernel's size and pages of that file are dropped`)
    t.equal(adapter.counters.staleAppends, 1, `${how}: counted once`)
    // With writeback cache the kernel owns append: its WRITEs are page flushes at their offsets.
    adapter.kernelWriteback = true
    const w = await ops.open(c.attr.ino, fsc.O_WRONLY | fsc.O_APPEND, ctx)
    await ops.write(c.attr.ino, w.fh, 0, b('ONE\n'), ctx)
    await settled()
    t.equal(joined(await ops.read(c.attr.ino, r.fh, 0, 100, ctx)).toString(), 'ONE\nother\ntwo\n', `${how}: writeback cache: the offset stands`)
  }
})

t.test('.reef/versions of a merged version: inodes whose numbers meet mod 2^31 get distinct kernel numbers', async t => {
  // Two writers' first files (record 1 of each: one counter) and the root (inode 1) all meet at 1.
  const ws = await writers(t, async () => {})
  const [wa, wb] = [await ws.writer('a'), await ws.writer('b')]
  const fa = await wa.fs.create(ROOT_INO, b('from-a'), 0o644, ctx)
  const fb = await wb.fs.create(ROOT_INO, b('from-b'), 0o644, ctx)
  await wa.fs.write(fa.ino, 0, b('aaa'))
  await wb.fs.write(fb.ino, 0, b('bbbbbb'))
  t.equal(fa.ino % 2 ** 31, 1)
  t.equal(fb.ino % 2 ** 31, 1)
  const out = await merge({ store: ws.store, writers: [await ws.input(wa), await ws.input(wb)] })
  const old = await openVersion(ws.store, out.version)
  const core = await openCoreFs(t, 'reef-adapter-')
  const m = buildAdapter({
    fs: core.fs,
    versions: { list: async () => [7n], open: async () => old, current: async () => undefined },
    log: () => {},
    attrTimeout: 1,
    entryTimeout: 1,
    writeBehind: true,
    maxFileSize: 2 ** 44
  })
  const ops = m.ops as Required<LowLevelOps>
  const root = await ops.lookup(VERSIONS_INO, b('7'), ctx)
  const ea = await ops.lookup(root.attr.ino, b('from-a'), ctx)
  const eb = await ops.lookup(root.attr.ino, b('from-b'), ctx)
  t.equal(new Set([root.attr.ino, ea.attr.ino, eb.attr.ino]).size, 3, 'three kernel numbers')
  t.same([ea.attr.size, eb.attr.size], [3, 6])
  t.equal((await ops.getattr(eb.attr.ino, ctx)).attr.size, 6, 'each number leads to its own inode')
  t.equal((await ops.getattr(root.attr.ino, ctx)).attr.mode & 0o170000, 0o040000, 'and the root stays the root')
  t.equal((await ops.lookup(root.attr.ino, b('from-b'), ctx)).attr.ino, eb.attr.ino, 'the same number while the kernel holds it')
})
