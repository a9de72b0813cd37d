// Write-behind through a real mount: writes are acknowledged once the binding has queued them,
// and every later operation, from this or another process, sees them; a write that fails late
// is reported by the next fsync, write or close of that handle (as a kernel page cache would);
// O_SYNC writes are applied before they return; a clean unmount keeps every acknowledged write.
// Also the mount options behind the speed: one request per 128 KiB write (big_writes,
// max_write), and page cache kept across opens (keep_cache) exactly where it stays exact.
import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { describe, errnoOf, reef, run, skipReason, startMount, tempDir, type Mount } from './helpers/mount.js'

interface WriteBehindStats { enabled: boolean, pending: number, deferred: number, synchronous: number, fullWaits: number, lateErrors: number }

async function stats (m: Mount): Promise<WriteBehindStats> {
  const st = await reef(m.dataDir, 'status', '--json')
  if (st.code !== 0) throw new Error(`status: ${describe(st)}`)
  return JSON.parse(st.stdout).writeBehind as WriteBehindStats
}

const skip = skipReason()
if (skip !== false) {
  t.plan(0, skip)
} else {
  // The daemon inherits this: writes to names ending in "fault.bin" fail with ENOSPC.
  process.env.REEF_TEST_WRITE_FAULT = 'fault.bin'
  t.teardown(() => { delete process.env.REEF_TEST_WRITE_FAULT })
  const base = tempDir(t, 'reef-wb-')
  const dataDir = path.join(base, 'data')
  const mnt = path.join(base, 'mnt')
  let m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
  const p = (...s: string[]): string => path.join(mnt, ...s)

  t.test('acknowledged writes are seen at once by fstat, by another descriptor and by another process', async t => {
    const before = await stats(m)
    t.ok(before.enabled, 'write-behind is on by default')
    const data = crypto.randomBytes(48 * 1024 * 1024)
    const fd = fs.openSync(p('stream.bin'), 'w')
    for (let off = 0; off < data.length; off += 128 * 1024) fs.writeSync(fd, data, off, 128 * 1024, off)
    t.equal(fs.fstatSync(fd).size, data.length, 'fstat right after the last write')
    const other = fs.openSync(p('stream.bin'), 'r')
    const probe = Buffer.alloc(4096)
    for (const at of [0, 17 * 128 * 1024 + 5, data.length - 4096]) {
      fs.readSync(other, probe, 0, 4096, at)
      t.ok(probe.equals(data.subarray(at, at + 4096)), `read at ${at} through another descriptor, before close`)
    }
    fs.closeSync(other)
    const sum = await run('sha256sum', [p('stream.bin')])
    t.equal(sum.stdout.split(' ')[0], crypto.createHash('sha256').update(data).digest('hex'), 'another process reads every byte, before close')
    fs.closeSync(fd)
    const after = await stats(m)
    // big_writes,max_write=131072: each 128 KiB write(2) reaches the daemon as one request (with
    // the kernel's default of 4 KiB it would be 12,288 requests).
    const requests = after.deferred - before.deferred
    t.ok(requests >= 384 && requests <= 400, `one request per 128 KiB write, acknowledged from the queue (${requests} for 384 writes)`)
    t.equal(after.synchronous, before.synchronous, 'none went the synchronous way')
    t.equal(after.pending, 0, 'nothing left in flight after close')
    // Small writes interleaved with reads and renames, the way editors and compilers work.
    for (let i = 0; i < 50; i++) {
      const f = p(`small-${i}.tmp`)
      const body = crypto.randomBytes(100 + i * 37)
      const w = fs.openSync(f, 'w')
      fs.writeSync(w, body)
      fs.writeSync(w, body)
      fs.closeSync(w)
      fs.renameSync(f, p(`small-${i}.txt`))
      if (!fs.readFileSync(p(`small-${i}.txt`)).equals(Buffer.concat([body, body]))) { t.fail(`small file ${i} differs`); break }
    }
    t.pass('50 write-close-rename-read rounds')
  })

  t.test('a write that fails late is reported by fsync, by the next write and by close; the daemon keeps serving', async t => {
    const fd = fs.openSync(p('fault.bin'), 'w')
    t.equal(fs.writeSync(fd, Buffer.alloc(4096, 1)), 4096, 'the write itself is acknowledged')
    t.equal(errnoOf(() => fs.fsyncSync(fd)), 'ENOSPC', 'fsync reports the late failure')
    t.equal(errnoOf(() => fs.fsyncSync(fd)), 'OK', 'reported once')
    fs.writeSync(fd, Buffer.alloc(4096, 2))
    t.equal(errnoOf(() => fs.closeSync(fd)), 'ENOSPC', 'close reports the failure of the write before it')
    const fd2 = fs.openSync(p('fault.bin'), 'w')
    fs.writeSync(fd2, Buffer.alloc(10, 3))
    // The next write waits for nothing, so it may or may not see the failure of the one before;
    // what is certain is that the failure is not lost: it comes back by close at the latest.
    const second = errnoOf(() => fs.writeSync(fd2, Buffer.alloc(10, 4)))
    const closed = errnoOf(() => fs.closeSync(fd2))
    t.ok(second === 'ENOSPC' || closed === 'ENOSPC', `reported by the next write (${second}) or by close (${closed})`)
    t.ok((await stats(m)).lateErrors >= 3, 'counted as late errors')
    const ok = p('after-fault.txt')
    fs.writeFileSync(ok, 'still here')
    t.equal(fs.readFileSync(ok, 'utf8'), 'still here', 'the daemon still serves')
    t.same(m.unexpected(), [], 'no unexpected error logged')
  })

  t.test('the page cache outlives an open only where the data cannot change under it', async t => {
    // Observed with fincore(1), which opens the file: an open without keep_cache drops the pages.
    const resident = async (f: string): Promise<number> => {
      const r = await run('fincore', ['-b', '-n', '-o', 'RES', f])
      if (r.code !== 0) throw new Error(`fincore: ${describe(r)}`)
      return Number(r.stdout.trim())
    }
    const size = 1024 * 1024
    fs.writeFileSync(p('cache-single.bin'), crypto.randomBytes(size))
    fs.writeFileSync(p('cache-linked.bin'), crypto.randomBytes(size))
    fs.linkSync(p('cache-linked.bin'), p('cache-linked-2.bin'))
    const seq = JSON.parse((await reef(dataDir, 'sync', '--json')).stdout).seq as string
    const cases: Array<[string, string, boolean]> = [
      ['a file of an old version (.reef/versions)', p('.reef', 'versions', seq, 'cache-single.bin'), true],
      ['a live file with one link', p('cache-single.bin'), true],
      // Inode-addressed (libfuse3's low-level API): every name of a file is one kernel inode, so a
      // write through either name updates the same pages, and hard-linked files keep them too.
      ['a live hard-linked file (both names are one kernel inode)', p('cache-linked.bin'), true]
    ]
    for (const [what, f, kept] of cases) {
      fs.readFileSync(f)
      const n = await resident(f)
      if (kept) t.equal(n, size, `${what}: every page still cached at the next open (keep_cache)`)
      else t.equal(n, 0, `${what}: the next open drops its pages`)
    }
  })

  t.test('O_SYNC writes are applied before they return', async t => {
    const before = await stats(m)
    const fd = fs.openSync(p('sync.bin'), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_SYNC, 0o644)
    for (let i = 0; i < 8; i++) fs.writeSync(fd, Buffer.alloc(4096, i))
    fs.closeSync(fd)
    const after = await stats(m)
    t.equal(after.synchronous - before.synchronous, 8, 'all 8 went the synchronous way')
    t.equal(after.deferred, before.deferred, 'none was queued')
    const fault = fs.openSync(p('sync-fault.bin'), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_SYNC, 0o644)
    t.equal(errnoOf(() => fs.writeSync(fault, Buffer.alloc(10))), 'ENOSPC', 'an O_SYNC write fails at once')
    fs.closeSync(fault)
  })

  t.test('a clean unmount keeps every acknowledged write, and so does kill -9 after fsync', async t => {
    const a = crypto.randomBytes(3 * 1024 * 1024 + 77)
    const fd = fs.openSync(p('kept.bin'), 'w')
    fs.writeSync(fd, a)
    fs.closeSync(fd)
    const stopped = await m.stop()
    t.equal(stopped.code, 0, 'unmounted cleanly')
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    t.ok(fs.readFileSync(p('kept.bin')).equals(a), 'written, closed, unmounted: all there')
    const b = crypto.randomBytes(2 * 1024 * 1024 + 5)
    const fd2 = fs.openSync(p('synced.bin'), 'w')
    fs.writeSync(fd2, b)
    fs.fsyncSync(fd2)
    await m.kill9()
    try { fs.closeSync(fd2) } catch {}
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    t.ok(fs.readFileSync(p('synced.bin')).equals(b), 'fsync, kill -9, remount: all there')
  })
}
