// fallocate(2) through a real mount, side by side with the same calls on local disk (a temp dir
// on this machine's ext4): every mode's errno, size, times and bytes; then the same bytes after
// a fold, after a clean remount, and after a kill -9 of the daemon (replaying the log).
// The calls come from a python3 child (ctypes for fallocate(2) with flags, os.posix_fallocate)
// and from util-linux fallocate(1).
import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { describe, isMounted, reef, run, skipReason, startMount, tempDir, type Mount } from './helpers/mount.js'

const KEEP = 0x01
const PUNCH = 0x02 | KEEP
const COLLAPSE = 0x08
const ZERO = 0x10
const INSERT = 0x20
const KiB = 1024
const MiB = 1024 * KiB

/**
 * Runs calls on files under a root and reports, per call: errno name (or OK), the size after it,
 * whether it set mtime (it is put back to 1 s before each call) and whether ctime equals mtime.
 * A call is ['fallocate', mode, offset, length], ['posix', offset, length] (posix_fallocate(3)),
 * or ['write', offset, length, seed] (shake256 bytes, through the same descriptor).
 */
const DRIVER = String.raw`
import ctypes, errno, hashlib, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
FLAGS = {'rw': os.O_RDWR, 'ro': os.O_RDONLY, 'append': os.O_WRONLY | os.O_APPEND, 'dir': os.O_RDONLY | os.O_DIRECTORY}
root, out = sys.argv[1], []
for case in json.load(sys.stdin):
    fd = os.open(os.path.join(root, case['file']), FLAGS[case.get('open', 'rw')])
    res = []
    for c in case['calls']:
        os.utime(fd, ns=(10**9, 10**9))
        e = 0
        try:
            if c[0] == 'write':
                os.pwrite(fd, hashlib.shake_256(c[3].encode()).digest(c[2]), c[1])
            elif c[0] == 'posix':
                os.posix_fallocate(fd, c[1], c[2])
            elif libc.fallocate(fd, c[1], c[2], c[3]) != 0:
                e = ctypes.get_errno()
        except OSError as x:
            e = x.errno
        st = os.fstat(fd)
        res.append({'call': c, 'errno': errno.errorcode.get(e, str(e)) if e else 'OK', 'size': st.st_size,
                    'mtimeSet': st.st_mtime_ns != 10**9, 'ctimeIsMtime': st.st_ctime_ns == st.st_mtime_ns})
    if case.get('fsync'):
        os.fsync(fd)
    os.close(fd)
    out.append({'file': case['file'], 'calls': res})
print(json.dumps(out))
`

type Call = ['fallocate', number, number, number] | ['posix', number, number] | ['write', number, number, string]
interface Case { file: string, open?: 'rw' | 'ro' | 'append' | 'dir', fsync?: boolean, calls: Call[] }

/** Reproducible content of `n` bytes (AES-CTR of zeros under a key from `seed`). */
function bytes (n: number, seed: string): Buffer {
  const key = crypto.createHash('sha256').update(seed).digest().subarray(0, 16)
  return crypto.createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(n))
}

const fa = (mode: number, offset: number, length: number): Call => ['fallocate', mode, offset, length]

async function drive (root: string, cases: Case[]): Promise<unknown> {
  const r = await run('python3', ['-c', DRIVER, root], { input: JSON.stringify(cases) })
  if (r.code !== 0) throw new Error(`python3 driver on ${root}: ${describe(r)}`)
  return JSON.parse(r.stdout)
}

/** size and sha256 of every regular file under root (names sorted; not .reef). */
function contents (root: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const n of fs.readdirSync(root).sort()) {
    if (n === '.reef') continue
    const s = fs.lstatSync(path.join(root, n))
    if (s.isFile()) out[n] = `${s.size} ${crypto.createHash('sha256').update(fs.readFileSync(path.join(root, n))).digest('hex')}`
  }
  return out
}

/** mtime and ctime (ns) of every regular file: what a remount must keep. */
function times (root: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const n of fs.readdirSync(root).sort()) {
    if (n === '.reef') continue
    const s = fs.lstatSync(path.join(root, n), { bigint: true })
    if (s.isFile()) out[n] = `${s.mtimeNs} ${s.ctimeNs}`
  }
  return out
}

const skip = skipReason()
if (skip !== false) {
  t.plan(0, skip)
} else {
  const base = tempDir(t, 'reef-fallocate-')
  const local = path.join(base, 'local')
  fs.mkdirSync(local)
  const dataDir = path.join(base, 'data')
  const mnt = path.join(base, 'mnt')
  let m: Mount = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
  const roots = (): string[] => [local, mnt]
  /** Runs the same setup on both roots. */
  const both = (fn: (root: string) => void): void => { for (const r of roots()) fn(r) }
  /** Runs the cases on local disk and on the mount; the mount must answer exactly as ext4. */
  const same = async (tt: Tap.Test, cases: Case[], what: string): Promise<void> => {
    const want = await drive(local, cases)
    const got = await drive(mnt, cases)
    tt.same(got, want, `${what}: every call's errno, size and times as on ext4`)
    const c = contents(mnt)
    const lc = contents(local)
    for (const k of cases.map(x => x.file)) if (k in lc) tt.equal(c[k], lc[k], `${what}: ${k} has the same size and bytes`)
  }

  t.test('mode 0 and KEEP_SIZE: sizes as on ext4, content untouched, the new range reads as zeros', async tt => {
    both(r => {
      fs.writeFileSync(path.join(r, 'plain'), bytes(100_000, 'plain'))
      fs.writeFileSync(path.join(r, 'keep'), bytes(100_000, 'keep'))
      fs.writeFileSync(path.join(r, 'posix'), '')
      fs.writeFileSync(path.join(r, 'empty'), '')
    })
    await same(tt, [
      { file: 'plain', calls: [fa(0, 0, 50_000), fa(0, 90_000, 200_000), fa(0, 10 * MiB, 4096)] },
      { file: 'keep', calls: [fa(KEEP, 50_000, MiB), fa(KEEP, 5 * MiB, MiB), fa(KEEP, 0, 10)] },
      { file: 'posix', calls: [['posix', 0, 3 * MiB], ['posix', 100, 10]] },
      { file: 'empty', calls: [fa(KEEP, 0, 64 * MiB), fa(0, 0, 64 * MiB)] }
    ], 'mode 0 / KEEP_SIZE')
    const plain = fs.readFileSync(path.join(mnt, 'plain'))
    tt.equal(plain.length, 10 * MiB + 4096)
    tt.ok(plain.subarray(0, 100_000).equals(bytes(100_000, 'plain')), 'the old bytes are there')
    tt.ok(plain.subarray(100_000).every(b => b === 0), 'the preallocated range reads as zeros')
  })

  t.test('PUNCH_HOLE and ZERO_RANGE: zeros where asked, sizes as on ext4', async tt => {
    both(r => {
      fs.writeFileSync(path.join(r, 'punch'), bytes(MiB, 'punch'))
      fs.writeFileSync(path.join(r, 'zero'), bytes(500_000, 'zero'))
    })
    await same(tt, [
      { file: 'punch', calls: [fa(PUNCH, 4096, 8192), fa(PUNCH, 300_000, 400_000), fa(PUNCH, 7, 1), fa(PUNCH, 900_000, MiB), fa(PUNCH, 2 * MiB, 4096)] },
      { file: 'zero', calls: [fa(ZERO, 1000, 3000), fa(ZERO, 400_000, 300_000), fa(ZERO | KEEP, 650_000, MiB), fa(ZERO | KEEP, 2 * MiB, 10)] }
    ], 'PUNCH_HOLE / ZERO_RANGE')
    const p = fs.readFileSync(path.join(mnt, 'punch'))
    tt.equal(p.length, MiB, 'PUNCH_HOLE keeps the size')
    tt.ok(p.subarray(300_000, 700_000).every(b => b === 0), 'the punched range reads as zeros')
    tt.ok(p.subarray(700_000, 900_000).equals(bytes(MiB, 'punch').subarray(700_000, 900_000)), 'between holes the bytes are intact')
  })

  t.test('queued writes and fallocate on one descriptor apply in order (write-behind)', async tt => {
    both(r => { fs.writeFileSync(path.join(r, 'order'), '') })
    await same(tt, [{
      file: 'order',
      calls: [['write', 0, 3 * MiB, 'a'], fa(PUNCH, MiB, MiB), ['write', MiB + 100, 1000, 'b'], fa(ZERO, 2 * MiB + 5, 5000), fa(0, 0, 4 * MiB), ['write', 4 * MiB - 10, 20, 'c']]
    }], 'interleaved')
  })

  t.test('a hard-linked file: fallocate through one name shows through the other', async tt => {
    both(r => {
      fs.writeFileSync(path.join(r, 'hl'), bytes(200_000, 'hl'))
      fs.linkSync(path.join(r, 'hl'), path.join(r, 'hl2'))
      fs.statSync(path.join(r, 'hl2'))
    })
    await same(tt, [{ file: 'hl', calls: [fa(0, 0, 3 * MiB), fa(PUNCH, 0, 100_000), fa(ZERO, 3 * MiB, 10)] }], 'hard link')
    tt.equal(fs.statSync(path.join(mnt, 'hl2')).size, fs.statSync(path.join(local, 'hl2')).size, 'the other name has the new size')
    tt.ok(fs.readFileSync(path.join(mnt, 'hl2')).equals(fs.readFileSync(path.join(local, 'hl2'))), 'and the same bytes')
  })

  t.test('errno cases answer as on ext4', async tt => {
    both(r => {
      fs.writeFileSync(path.join(r, 'err'), bytes(1000, 'err'))
      fs.mkdirSync(path.join(r, 'adir'))
      fs.writeFileSync(path.join(r, 'ro'), 'read only')
      fs.writeFileSync(path.join(r, 'app'), 'append')
    })
    for (const r of roots()) {
      const mk = await run('mkfifo', [path.join(r, 'fifo')])
      tt.equal(mk.code, 0, `mkfifo in ${r}: ${describe(mk)}`)
    }
    await same(tt, [
      {
        file: 'err',
        calls: [fa(0, -1, 10), fa(0, 0, 0), fa(0, 0, -1), fa(0x02, 0, 10), fa(PUNCH | ZERO, 0, 10), fa(0x100, 0, 10), fa(0x40, 0, 10),
          fa(COLLAPSE | KEEP, 0, 4096), fa(0, 2 ** 44, 1), fa(KEEP, 2 ** 62, 1), fa(0, 2 ** 62, 2 ** 62)]
      },
      { file: 'ro', open: 'ro', calls: [fa(0, 0, 10), fa(PUNCH, 0, 4)] },
      { file: 'app', open: 'append', calls: [fa(0, 0, 100), fa(PUNCH, 0, 2)] },
      { file: 'fifo', calls: [fa(0, 0, 10), fa(PUNCH, 0, 10)] }
    ], 'errno cases')
    // python names errno 95 ENOTSUP (on Linux EOPNOTSUPP is the same number). A directory's size
    // differs between ext4 and reef, so it is checked here rather than side by side.
    const r = await drive(mnt, [
      { file: 'err', calls: [fa(0, -1, 10), fa(0x02, 0, 10), fa(0, 2 ** 44, 1), fa(KEEP, 2 ** 62, 1)] },
      { file: 'ro', open: 'ro', calls: [fa(0, 0, 1)] },
      { file: 'adir', open: 'dir', calls: [fa(0, 0, 1)] },
      { file: 'fifo', calls: [fa(0, 0, 1)] }
    ]) as Array<{ calls: Array<{ errno: string }> }>
    tt.same(r.flatMap(c => c.calls.map(x => x.errno)), ['EINVAL', 'ENOTSUP', 'EFBIG', 'EFBIG', 'EBADF', 'EBADF', 'ESPIPE'], 'the errnos themselves, not only their agreement')
  })

  t.test('COLLAPSE_RANGE and INSERT_RANGE: EOPNOTSUPP (the kernel\'s FUSE module does not carry them); the file is unchanged', async tt => {
    both(r => { fs.writeFileSync(path.join(r, 'ci'), bytes(64 * KiB, 'ci')) })
    const cases: Case[] = [{ file: 'ci', calls: [fa(COLLAPSE, 4096, 8192), fa(INSERT, 4096, 4096)] }]
    const onDisk = await drive(local, cases) as Array<{ calls: Array<{ errno: string, size: number }> }>
    tt.same(onDisk[0].calls.map(c => [c.errno, c.size]), [['OK', 56 * KiB], ['OK', 60 * KiB]], 'ext4 collapses and inserts')
    const onReef = await drive(mnt, cases) as Array<{ calls: Array<{ errno: string, size: number, mtimeSet: boolean }> }>
    tt.same(onReef[0].calls.map(c => [c.errno, c.size, c.mtimeSet]), [['ENOTSUP', 64 * KiB, false], ['ENOTSUP', 64 * KiB, false]], 'reef refuses both')
    tt.ok(fs.readFileSync(path.join(mnt, 'ci')).equals(bytes(64 * KiB, 'ci')), 'content unchanged')
    // Keep the trees comparable from here on.
    fs.writeFileSync(path.join(local, 'ci'), bytes(64 * KiB, 'ci'))
    fs.utimesSync(path.join(local, 'ci'), 1, 1)
  })

  t.test('util-linux fallocate(1) in every mode it has', async tt => {
    both(r => { fs.writeFileSync(path.join(r, 'cli'), bytes(300_000, 'cli')) })
    const steps = [['-l', '5M'], ['-n', '-o', '1M', '-l', '10M'], ['-p', '-o', '4096', '-l', '100000'], ['-z', '-o', '0', '-l', '8192'],
      ['-z', '-n', '-o', '5000000', '-l', '1M'], ['-x', '-l', '6M'], ['-d']]
    for (const s of steps) {
      const [a, b] = [await run('fallocate', [...s, path.join(local, 'cli')]), await run('fallocate', [...s, path.join(mnt, 'cli')])]
      tt.equal(a.code, 0, `ext4: fallocate ${s.join(' ')}: ${describe(a)}`)
      tt.equal(b.code, 0, `reef: fallocate ${s.join(' ')}: ${describe(b)}`)
      tt.equal(fs.statSync(path.join(mnt, 'cli')).size, fs.statSync(path.join(local, 'cli')).size, `size after fallocate ${s.join(' ')}`)
    }
    tt.equal(contents(mnt).cli, contents(local).cli, 'same bytes')
    for (const s of [['-c', '-o', '0', '-l', '4096'], ['-i', '-o', '0', '-l', '4096']]) {
      const b = await run('fallocate', [...s, path.join(mnt, 'cli')])
      tt.not(b.code, 0, `fallocate ${s.join(' ')} fails on reef`)
      tt.match(b.stderr, /Operation not supported/)
    }
  })

  let folded: Record<string, string> = {}
  t.test('after a fold and after a clean remount: the same bytes as on ext4, the same times as before', async tt => {
    const want = contents(local)
    tt.same(contents(mnt), want, 'before the fold')
    tt.ok(Object.keys(want).length >= 12, 'every file of the earlier tests is compared')
    const s = await reef(dataDir, 'sync', '--json')
    tt.equal(s.code, 0, describe(s))
    tt.same(contents(mnt), want, 'after the fold')
    const before = times(mnt)
    const st = await m.stop()
    tt.equal(st.code, 0, `clean exit: ${m.stderr()}`)
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    tt.same(contents(mnt), want, 'after a clean remount')
    tt.same(times(mnt), before, 'mtime and ctime survive the remount')
    folded = want
  })

  t.test('kill -9 after fsync: the log replays every fallocate to the same bytes', async tt => {
    both(r => {
      fs.writeFileSync(path.join(r, 'crash1'), bytes(2 * MiB, 'crash1'))
      fs.writeFileSync(path.join(r, 'crash2'), '')
    })
    const s = await reef(dataDir, 'sync')
    tt.equal(s.code, 0, describe(s))
    const cases: Case[] = [
      { file: 'crash1', fsync: true, calls: [fa(PUNCH, 100_000, MiB), fa(ZERO, 1_900_000, 300_000), fa(0, 0, 3 * MiB), fa(KEEP, 0, 5 * MiB)] },
      { file: 'crash2', fsync: true, calls: [fa(0, 0, MiB), ['write', 500_000, 1000, 'x'], fa(PUNCH, 500_100, 10)] },
      { file: 'punch', fsync: true, calls: [fa(PUNCH, 0, 4096)] }
    ]
    await same(tt, cases, 'before the crash')
    const want = contents(local)
    const before = times(mnt)
    const st = await reef(dataDir, 'status', '--json')
    tt.equal(st.code, 0, describe(st))
    tt.ok(JSON.parse(st.stdout).pendingRecords > 0, 'the calls are only in the log')
    await m.kill9()
    tt.ok(isMounted(mnt), 'a stale mount is left behind')
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    tt.same(contents(mnt), want, 'after kill -9 and remount: the same bytes as on ext4')
    tt.same(times(mnt), before, 'and the same times')
    tt.not(want.punch, folded.punch, 'the replayed punch changed a folded file')
    const f = await reef(dataDir, 'sync')
    tt.equal(f.code, 0, describe(f))
    tt.same(contents(mnt), want, 'after folding the replayed log')
    tt.same(m.unexpected(), [], 'the daemon logged nothing unexpected')
  })
}
