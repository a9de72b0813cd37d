// Reads through a real mount of content stored in blocks (after a fold and a remount, so that
// nothing comes from dirty pages or the kernel's cache): each READ is answered with the pieces
// it lies in (chunk views and zeros for holes, one fuse_reply_iov), and the daemon sets the
// kernel's read-ahead for the mount (root only: sysfs).
import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { describe, reef, skipReason, startMount, tempDir } from './helpers/mount.js'

const skip = skipReason()
if (skip !== false) {
  t.plan(0, skip)
  process.exit(0)
}

const root = process.getuid?.() === 0

/** The kernel's read-ahead for the mount at `mnt`, from sysfs (by its device number). */
function readAheadKb (mnt: string): number {
  const dev = fs.statSync(mnt).dev
  const major = ((dev >> 8) & 0xfff) | Math.floor(dev / 2 ** 32) & ~0xfff
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00)
  return Number(fs.readFileSync(`/sys/class/bdi/${major}:${minor}/read_ahead_kb`, 'utf8').trim())
}

t.test('stored content reads back exactly: whole, at odd offsets and sizes, across holes and chunk edges', async t => {
  const base = tempDir(t)
  const dataDir = path.join(base, 'data')
  const mnt = path.join(base, 'mnt')
  let m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
  // 6 MiB of random bytes, a 3 MiB hole, 1 MiB more: ~100 chunks and hole links.
  const head = crypto.randomBytes(6 * 2 ** 20)
  const tail = crypto.randomBytes(2 ** 20)
  const file = path.join(mnt, 'f')
  const fd = fs.openSync(file, 'w')
  fs.writeSync(fd, head, 0, head.length, 0)
  fs.writeSync(fd, tail, 0, tail.length, 9 * 2 ** 20)
  fs.closeSync(fd)
  const expect = Buffer.alloc(10 * 2 ** 20)
  head.copy(expect)
  tail.copy(expect, 9 * 2 ** 20)
  await m.stop()
  m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
  t.ok(fs.readFileSync(file).equals(expect), 'the whole file reads back (sequential reads, prefetched)')
  await m.stop()
  m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
  const r = fs.openSync(file, 'r')
  let x = 12345
  const rnd = (n: number): number => { x = (x * 1103515245 + 12345) % 2 ** 31; return x % n }
  let bad = 0
  for (let i = 0; i < 200; i++) {
    const off = rnd(expect.length)
    const len = 1 + rnd(300_000)
    const buf = Buffer.alloc(len)
    const n = fs.readSync(r, buf, 0, len, off)
    const want = expect.subarray(off, off + len)
    if (n !== want.length || !buf.subarray(0, n).equals(want)) bad++
  }
  fs.closeSync(r)
  t.equal(bad, 0, '200 reads at random offsets and sizes (in a chunk, across chunks, in and across the hole) read right')
  t.same(m.unexpected(), [], 'no unexpected errors')
  await m.stop()
})

t.test('the daemon sets the kernel\'s read-ahead for its mount (root), and --read-ahead 0 leaves it', async t => {
  const base = tempDir(t)
  const dataDir = path.join(base, 'data')
  const mnt = path.join(base, 'mnt')
  let m = await startMount(t, { dataDir, mnt })
  const st = await reef(dataDir, 'status', '--json')
  t.equal(st.code, 0, describe(st))
  const status = JSON.parse(st.stdout) as { readAheadKiB?: number }
  if (root) {
    t.equal(status.readAheadKiB, 1024, 'status says 1024 KiB')
    t.equal(readAheadKb(mnt), 1024, 'and sysfs agrees')
  } else {
    t.equal(status.readAheadKiB, undefined, 'not root: left as it was')
    t.match(m.stderr(), /read-ahead stays the kernel's/, 'said once in the log')
  }
  await m.stop()
  m = await startMount(t, { dataDir, mnt, extraArgs: ['--read-ahead', '0'] })
  const st0 = await reef(dataDir, 'status', '--json')
  t.equal((JSON.parse(st0.stdout) as { readAheadKiB?: number }).readAheadKiB, undefined, '--read-ahead 0: not set')
  if (root) t.equal(readAheadKb(mnt), 128, 'the kernel\'s default for FUSE stays')
  await m.stop()
  const bad = await reef(dataDir, 'mount', mnt, '--read-ahead', 'lots')
  t.not(bad.code, 0, 'a bad --read-ahead is refused')
  t.match(bad.stderr, /bad --read-ahead/, describe(bad))
})
