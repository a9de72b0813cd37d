// fallocate in the fs core, without a mount: every mode against a byte model, the holes it leaves
// in the folded chunk tree, its errno cases, its times, and log replay after a crash.
import t from 'tap'
import crypto from 'node:crypto'
import type { ReefFS } from '../src/fs/fs.js'
import { type Inode, ROOT_INO, S_IFCHR, S_IFIFO } from '../src/fs/inode.js'
import { FileReader, type Leaf, MAX_FILE_SIZE } from '../src/object/file.js'
import { code, type CoreFs, openCoreFs } from './helpers/fs-core.js'
import { FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE } from '../src/fs/fallocate.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const cred = { uid: 1000, gid: 1000 }
const KEEP = FALLOC_FL_KEEP_SIZE
const PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
const ZERO = FALLOC_FL_ZERO_RANGE
const KiB = 1024
const MiB = 1024 * KiB

const setup = async (t: Tap.Test): Promise<CoreFs> => await openCoreFs(t, 'reef-fallocate-')

async function content (rfs: ReefFS, p: string): Promise<Buffer> {
  const n = await rfs.resolve(p)
  return Buffer.from(await rfs.read(n, 0, n.size))
}

/** Reproducible bytes that do not repeat (AES-CTR of zeros), so chunk boundaries are the same every run. */
function bytes (n: number, seed: string): Buffer {
  const key = crypto.createHash('sha256').update(seed).digest().subarray(0, 16)
  return crypto.createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n))
}

/** The folded chunk tree of a file: its leaves, holes without a cid. */
async function leaves (rfs: ReefFS, n: Inode): Promise<Leaf[]> {
  if (n.base === undefined) throw new Error('the file has no folded tree')
  return await new FileReader(n.base, rfs.store).leaves()
}
const holeBytes = (ls: Leaf[], lo: number, hi: number): number =>
  ls.filter(l => l.cid === undefined).reduce((a, l) => a + Math.max(0, Math.min(hi, l.offset + l.size) - Math.max(lo, l.offset)), 0)
const dataBytes = (ls: Leaf[]): number => ls.filter(l => l.cid !== undefined).reduce((a, l) => a + l.size, 0)

/** A seeded generator of integers in [0, n) (mulberry32): the same run every time. */
function random (seed: number): (n: number) => number {
  let a = seed >>> 0
  return (n: number): number => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), a | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return (((x ^ (x >>> 14)) >>> 0) / 2 ** 32 * n) | 0
  }
}

/** What Linux does to a file's bytes, as a model: zero the range (within the size), then resize. */
function model (buf: Buffer, mode: number, offset: number, length: number): Buffer {
  const end = offset + length
  let out = Buffer.from(buf)
  if ((mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) !== 0) out.fill(0, Math.min(offset, out.length), Math.min(end, out.length))
  if ((mode & FALLOC_FL_KEEP_SIZE) === 0 && end > out.length) out = Buffer.concat([out, Buffer.alloc(end - out.length)])
  return out
}

t.test('every mode against a byte model: on dirty pages, on the folded base, after a fold and after a crash', async t => {
  const s = await setup(t)
  const next = random(0x5eed)
  const modes = [0, KEEP, PUNCH, ZERO, ZERO | KEEP]
  const f = await s.fs.create(ROOT_INO, enc('m'), 0o644, cred)
  let want = Buffer.alloc(0)
  for (let step = 0; step < 300; step++) {
    const what = next(10)
    if (what < 4) {
      const off = next(3 * MiB)
      const data = crypto.randomBytes(1 + next(200 * KiB))
      await s.fs.write(f.ino, off, data)
      if (off + data.length > want.length) want = Buffer.concat([want, Buffer.alloc(off + data.length - want.length)])
      data.copy(want, off)
    } else if (what === 4) {
      const size = next(3 * MiB)
      await s.fs.truncate(f.ino, size)
      want = size <= want.length ? Buffer.from(want.subarray(0, size)) : Buffer.concat([want, Buffer.alloc(size - want.length)])
    } else if (what === 5 && step % 3 === 0) {
      await s.fs.fold()
    } else {
      const mode = modes[next(modes.length)]
      const off = next(3 * MiB)
      const len = 1 + next(next(2) === 0 ? 8 * KiB : MiB)
      await s.fs.fallocate(f.ino, mode, off, len)
      want = model(want, mode, off, len)
    }
    if (step % 25 === 24) {
      const got = await content(s.fs, '/m')
      t.equal(got.length, want.length, `size after step ${step}`)
      if (!got.equals(want)) t.fail(`content differs after step ${step}`)
    }
  }
  t.ok(want.length > 0, 'the run left content to compare')
  t.ok((await content(s.fs, '/m')).equals(want), 'live content matches the model')
  const crashed = await s.reopen()
  t.ok((await content(crashed, '/m')).equals(want), 'the log replays to the same content')
  await crashed.fold()
  const folded = await s.reopen()
  t.ok((await content(folded, '/m')).equals(want), 'the folded version holds the same content')
})

t.test('a punched range of a folded file is a hole in the next folded chunk tree; the rest keeps its chunks', async t => {
  const s = await setup(t)
  const data = bytes(4 * MiB, 'punch')
  const f = await s.fs.create(ROOT_INO, enc('p'), 0o644, cred)
  await s.fs.write(f.ino, 0, data)
  await s.fs.fold()
  const before = await leaves(s.fs, f)
  t.equal(holeBytes(before, 0, 4 * MiB), 0, 'written data has no holes')
  await s.fs.fallocate(f.ino, PUNCH, 1 * MiB, 2 * MiB)
  await s.fs.fold()
  const after = await leaves(s.fs, f)
  t.equal(holeBytes(after, 1 * MiB, 3 * MiB), 2 * MiB, 'the punched 2 MiB are hole links')
  t.equal(dataBytes(after), 2 * MiB, 'only the 2 MiB left are stored as chunks')
  const same = (a: Leaf, b: Leaf): boolean => a.offset === b.offset && a.size === b.size && a.cid?.equals(b.cid) === true
  const head = before.filter(l => l.offset + l.size <= MiB).slice(0, -1)
  t.ok(head.length > 5 && head.every(l => after.some(m => same(l, m))), 'the chunks before the hole\'s first edge are kept')
  const tail = before.filter(l => l.offset >= 3 * MiB)
  const reused = after.filter(m => m.offset >= 3 * MiB && tail.some(l => same(l, m))).length
  t.ok(reused >= tail.length / 2, `chunking after the hole rejoins the old chunks (${reused} of ${tail.length} kept)`)
  const r = await s.reopen()
  const got = await content(r, '/p')
  t.equal(got.length, 4 * MiB, 'PUNCH_HOLE keeps the size')
  t.ok(got.subarray(0, MiB).equals(data.subarray(0, MiB)) && got.subarray(3 * MiB).equals(data.subarray(3 * MiB)), 'the rest is intact')
  t.ok(got.subarray(MiB, 3 * MiB).every(b => b === 0), 'the hole reads as zeros')
})

t.test('preallocation stores nothing: mode 0 and ZERO_RANGE past the end are holes, KEEP_SIZE past the end changes no size', async t => {
  const s = await setup(t)
  const f = await s.fs.create(ROOT_INO, enc('pre'), 0o644, cred)
  await s.fs.fallocate(f.ino, 0, 0, 64 * MiB)
  t.equal(f.size, 64 * MiB, 'mode 0 sets the size')
  await s.fs.fallocate(f.ino, KEEP, 0, 128 * MiB)
  t.equal(f.size, 64 * MiB, 'KEEP_SIZE leaves it')
  await s.fs.fallocate(f.ino, ZERO, 60 * MiB, 8 * MiB)
  t.equal(f.size, 68 * MiB, 'ZERO_RANGE grows it')
  await s.fs.write(f.ino, 10 * MiB, enc('mark'))
  await s.fs.fold()
  const ls = await leaves(s.fs, f)
  t.ok(dataBytes(ls) <= 256 * KiB, `only the chunk around the write is data (${dataBytes(ls)} bytes)`)
  t.ok(holeBytes(ls, 0, 68 * MiB) >= 68 * MiB - 256 * KiB, 'everything else is hole links')
  // Punching all of a folded file's data leaves a tree of holes only.
  await s.fs.fallocate(f.ino, PUNCH, 0, 68 * MiB)
  await s.fs.fold()
  t.equal(dataBytes(await leaves(s.fs, f)), 0, 'punching everything leaves no data chunk')
  t.ok((await content(s.fs, '/pre')).every(b => b === 0))
  // A sparse 8 TiB file: its dirty pages go, whatever the range spans.
  const big = await s.fs.create(ROOT_INO, enc('big'), 0o644, cred)
  await s.fs.fallocate(big.ino, 0, 0, 2 ** 43)
  await s.fs.write(big.ino, 2 ** 42, enc('needle'))
  await s.fs.fallocate(big.ino, PUNCH, 0, 2 ** 43)
  t.equal(big.pages?.size ?? 0, 0, 'no dirty page is left')
  t.ok((await s.fs.read(big, 2 ** 42, 6)).every(b => b === 0), 'the punched write reads as zeros')
  await s.fs.fold()
  t.equal(dataBytes(await leaves(s.fs, big)), 0, 'and the fold stores no chunk for it')
})

t.test('errno cases as Linux gives them; nothing is logged for a refused call', async t => {
  const s = await setup(t)
  const f = await s.fs.create(ROOT_INO, enc('f'), 0o644, cred)
  await s.fs.write(f.ino, 0, enc('0123456789'))
  const d = await s.fs.mkdir(ROOT_INO, enc('d'), 0o755, cred)
  const fifo = await s.fs.mknod(ROOT_INO, enc('fifo'), S_IFIFO | 0o644, 0, cred)
  const chr = await s.fs.mknod(ROOT_INO, enc('chr'), S_IFCHR | 0o644, 0x0103, cred)
  const ln = await s.fs.symlink(ROOT_INO, enc('ln'), enc('f'), cred)
  const pending = s.fs.pending
  t.equal(await code(s.fs.fallocate(f.ino, 0, -1, 10)), 'EINVAL', 'negative offset')
  t.equal(await code(s.fs.fallocate(f.ino, 0, 0, 0)), 'EINVAL', 'zero length')
  t.equal(await code(s.fs.fallocate(f.ino, 0, 0, -5)), 'EINVAL', 'negative length')
  t.equal(await code(s.fs.fallocate(f.ino, 0, 0.5, 5)), 'EINVAL', 'not an integer')
  t.equal(await code(s.fs.fallocate(f.ino, FALLOC_FL_PUNCH_HOLE, 0, 5)), 'ENOTSUP', 'PUNCH_HOLE without KEEP_SIZE')
  t.equal(await code(s.fs.fallocate(f.ino, PUNCH | ZERO, 0, 5)), 'ENOTSUP', 'PUNCH_HOLE with ZERO_RANGE')
  t.equal(await code(s.fs.fallocate(f.ino, FALLOC_FL_COLLAPSE_RANGE, 0, 4096)), 'ENOTSUP', 'COLLAPSE_RANGE (FUSE never carries it)')
  t.equal(await code(s.fs.fallocate(f.ino, FALLOC_FL_INSERT_RANGE, 0, 4096)), 'ENOTSUP', 'INSERT_RANGE (FUSE never carries it)')
  t.equal(await code(s.fs.fallocate(f.ino, 0x100, 0, 5)), 'ENOTSUP', 'an unknown mode bit')
  t.equal(await code(s.fs.fallocate(d.ino, 0, 0, 5)), 'EISDIR')
  t.equal(await code(s.fs.fallocate(fifo.ino, 0, 0, 5)), 'ESPIPE', 'a FIFO, as Linux')
  t.equal(await code(s.fs.fallocate(chr.ino, 0, 0, 5)), 'ENODEV', 'a device node')
  t.equal(await code(s.fs.fallocate(ln.ino, 0, 0, 5)), 'ENODEV', 'a symlink')
  t.equal(await code(s.fs.fallocate(f.ino, 0, MAX_FILE_SIZE - 4, 5)), 'EFBIG', 'past the maximum file size')
  t.equal(await code(s.fs.fallocate(f.ino, KEEP, MAX_FILE_SIZE, 1)), 'EFBIG', 'KEEP_SIZE past it too')
  t.equal(await code(s.fs.fallocate(f.ino, KEEP, 2 ** 62, 1)), 'EFBIG', 'far past it, beyond exact doubles')
  t.equal(await code(s.fs.fallocate(f.ino, 0, MAX_FILE_SIZE - 5, 5)), undefined, 'up to the maximum is fine')
  t.equal(f.size, MAX_FILE_SIZE)
  t.equal(s.fs.pending, pending + 1, 'only the call that succeeded was logged')
  t.equal(Buffer.from(await s.fs.read(f, 0, 10)).toString(), '0123456789')
})

t.test('every mode sets mtime and ctime (as ext4 and tmpfs do), and replay gives the same times', async t => {
  const s = await setup(t)
  const f = await s.fs.create(ROOT_INO, enc('t'), 0o644, cred)
  await s.fs.write(f.ino, 0, crypto.randomBytes(100 * KiB))
  for (const [mode, off, len] of [[0, 0, 10], [0, 0, 200 * KiB], [KEEP, 0, MiB], [PUNCH, 10, 100], [ZERO, 0, 5], [ZERO | KEEP, 0, 5]]) {
    await s.fs.setattr(f.ino, { mtime: 1n })
    await s.fs.fallocate(f.ino, mode, off, len)
    const a = f.attr()
    t.not(a.mtime, 1n, `mode 0x${mode.toString(16)} at ${off}+${len} sets mtime`)
    t.equal(a.ctime, a.mtime, '...and ctime to the same time')
  }
  const last = f.attr()
  const r = await s.reopen()
  const again = (await r.resolve('/t')).attr()
  t.equal(again.mtime, last.mtime, 'replayed mtime')
  t.equal(again.ctime, last.ctime, 'replayed ctime')
  t.equal(again.size, 200 * KiB, 'replayed size')
})
