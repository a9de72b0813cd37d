// The mount's attribute caches (getattr answered on the FUSE thread, and the kernel's own where
// the binding allows it, mount/native) must be exact:
// a seeded random sequence of namespace and attribute changes runs on a local directory and on
// a reef mount side by side. After every step both give the same outcome (or the same errno),
// and lstat of every path of the small namespace agrees (kind, size, permissions, link count,
// owner, explicitly set mtimes), as does fstat of the files held open. Hard links, renames of
// directories, writes through a descriptor and failed lookups are all in the mix; the newer seeds
// add FIFOs, sockets and device nodes (made by mknod, then linked, renamed, chmodded, chowned
// and given times like the rest), and fallocate in modes 0, KEEP_SIZE, PUNCH_HOLE and
// ZERO_RANGE (the content must match too).
import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { describe, errnoOf, reef, skipReason, startMount, tempDir, waitFor } from './helpers/mount.js'
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, type SpecialKind, syscalls } from './helpers/posix.js'

const STEPS = 600
const PREFIXES = ['', 'd0/', 'd1/', 'd0/d2/', 'd1/d2/']
const NAMES = ['f0', 'f1', 'f2', 'd0', 'd1', 'd2']
const PATHS = PREFIXES.flatMap(p => NAMES.map(n => p + n))

/** xorshift32: the same steps for the same seed. */
function rng (seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    return x / 2 ** 32
  }
}

interface Seen { kind: string, size?: number, perm: number, nlink?: number, uid: number, gid: number, rdev?: number }

const SPECIAL: SpecialKind[] = ['fifo', 'socket', 'chr', 'blk']
/** Seeds from before the special kinds: they keep their own op list, so their sequences stay. */
const CLASSIC = new Set([32, 113, 222])
const CLASSIC_OPS = 13
const FALLOC_MODES: Array<[string, number]> = [
  ['0', 0], ['KEEP_SIZE', FALLOC_FL_KEEP_SIZE], ['PUNCH_HOLE|KEEP_SIZE', FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE], ['ZERO_RANGE', FALLOC_FL_ZERO_RANGE]
]
const sha = (p: string): string => { try { return crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex') } catch (err) { return (err as NodeJS.ErrnoException).code ?? 'ERR' } }

const kindOf = (s: fs.Stats): string => s.isFile() ? 'file' : s.isDirectory() ? 'dir' : s.isSymbolicLink() ? 'symlink'
  : s.isFIFO() ? 'fifo' : s.isSocket() ? 'socket' : s.isCharacterDevice() ? 'chr' : s.isBlockDevice() ? 'blk' : 'other'

/** lstat calls made by look(), half of them on the mount (every path is looked at on both). */
let looks = 0

function look (p: string): Seen | string {
  looks++
  try {
    const s = fs.lstatSync(p)
    const kind = kindOf(s)
    // Directory sizes and link counts are the file system's own business (ext4: 4096, 2 + subdirs).
    return { kind, size: kind === 'dir' ? undefined : s.size, perm: kind === 'symlink' ? 0 : s.mode & 0o7777, nlink: kind === 'dir' ? undefined : s.nlink, uid: s.uid, gid: s.gid, rdev: s.rdev }
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err)
  }
}

const skip = skipReason()
if (skip !== false) {
  t.plan(0, skip)
} else {
  // CI runs fixed seeds (each found a bug once); REEF_TEST_SEED=N repeats one, =random explores.
  const seedEnv = process.env.REEF_TEST_SEED
  const seeds = seedEnv === undefined ? [32, 113, 222, 7, 4242] : [seedEnv === 'random' ? crypto.randomInt(1, 2 ** 31) : Number(seedEnv)]
  const base = tempDir(t, 'reef-attrcache-')
  const local = path.join(base, 'local')
  fs.mkdirSync(local)
  // REEF_TEST_MOUNT_ARGS: extra mount options, e.g. "--attr-timeout 0 --no-attr-cache" to compare.
  const extraArgs = (process.env.REEF_TEST_MOUNT_ARGS ?? '').split(/\s+/).filter(a => a !== '')
  const m = await startMount(t, { dataDir: path.join(base, 'data'), mnt: path.join(base, 'mnt'), foldInterval: 3600, extraArgs })
  const sys = syscalls(t, base)

  for (const seed of seeds) t.test(`seed ${seed}: ${STEPS} random steps give the same outcomes and attributes on local disk and on the mount`, async t => {
    t.comment(`REEF_TEST_SEED=${seed} repeats this run`)
    const roots = [path.join(local, String(seed)), path.join(m.mnt, String(seed))]
    for (const r of roots) fs.mkdirSync(r)
    const rand = rng(seed)
    const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]
    const fds: Array<[number, number]> = []
    let mismatches = 0
    let steps = 0
    const mtimes = new Map<string, number>()
    for (let step = 0; step < STEPS && mismatches < 5; step++) {
      const a = pick(PATHS)
      const b = pick(PATHS)
      const n = Math.floor(rand() * 5000)
      const when = 946684800 + Math.floor(rand() * 1e8)
      const mode = pick([0o600, 0o644, 0o755, 0o700, 0o640])
      const bytes = crypto.createHash('sha256').update(`${seed}:${step}`).digest()
      const data = Buffer.concat(Array.from({ length: Math.ceil(n / 32) + 1 }, () => bytes)).subarray(0, n)
      const special = SPECIAL[n % SPECIAL.length]
      const [fallocName, fallocMode] = FALLOC_MODES[n % FALLOC_MODES.length]
      const fallocAt = (step * 997) % 20_000
      // Opening a FIFO must not block (no reader: ENXIO), nor writing into one (a full pipe:
      // EAGAIN); a device node is not opened at all, since that follows the mount's nodev
      // (test/posix-conformance.test.ts checks it) and not local disk.
      const openable = (p: string): void => {
        let s: fs.Stats | undefined
        try { s = fs.lstatSync(p) } catch {}
        if (s?.isCharacterDevice() === true || s?.isBlockDevice() === true) throw Object.assign(new Error('device'), { code: 'DEVICE' })
      }
      const NB = fs.constants.O_NONBLOCK
      const ops: Array<[string, (r: string) => unknown]> = [
        [`append ${n} bytes to ${a}`, r => { openable(path.join(r, a)); fs.appendFileSync(path.join(r, a), data, { flag: fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | NB }) }],
        [`truncate ${a} to ${n}`, r => { openable(path.join(r, a)); fs.truncateSync(path.join(r, a), n) }],
        [`mkdir ${a}`, r => fs.mkdirSync(path.join(r, a), 0o755)],
        [`rmdir ${a}`, r => fs.rmdirSync(path.join(r, a))],
        [`unlink ${a}`, r => fs.unlinkSync(path.join(r, a))],
        [`rename ${a} -> ${b}`, r => fs.renameSync(path.join(r, a), path.join(r, b))],
        [`link ${a} -> ${b}`, r => fs.linkSync(path.join(r, a), path.join(r, b))],
        [`symlink ${a}`, r => fs.symlinkSync('target', path.join(r, a))],
        [`chmod ${a} ${mode.toString(8)}`, r => fs.chmodSync(path.join(r, a), mode)],
        [`chown ${a} ${n}`, r => fs.lchownSync(path.join(r, a), n, n)],
        [`utimes ${a} ${when}`, r => fs.utimesSync(path.join(r, a), when, when)],
        [`open ${a} and keep it`, r => { openable(path.join(r, a)); fds.push([fs.openSync(path.join(r, a), fs.constants.O_RDWR | NB), r === roots[0] ? 0 : 1]) }],
        [`write ${n} bytes through an open descriptor`, r => {
          const mine = fds.filter(([, side]) => side === (r === roots[0] ? 0 : 1))
          if (mine.length === 0) throw Object.assign(new Error('none open'), { code: 'NONE' })
          fs.writeSync(mine[Math.floor(step % mine.length)][0], data, 0, data.length, step % 3000)
        }],
        [`mknod ${special} ${a}`, r => { sys.mknod(path.join(r, a), special, special === 'chr' || special === 'blk' ? n : 0) }],
        [`fallocate ${fallocName} ${a} at ${fallocAt} for ${n + 1}`, r => { openable(path.join(r, a)); sys.fallocate(path.join(r, a), fallocMode, fallocAt, n + 1) }]
      ]
      // Weighted so the newer seeds hold a few special files at any time.
      ops.push(ops[CLASSIC_OPS], ops[CLASSIC_OPS], ops[CLASSIC_OPS + 1])
      const [what, op] = pick(CLASSIC.has(seed) ? ops.slice(0, CLASSIC_OPS) : ops)
      // Removing a directory that holds an unlinked, still open file fails on the mount (see the
      // test below); so the descriptors are closed before any rmdir or rename, and since the
      // kernel tells the daemon of a close only afterwards, an ENOTEMPTY right after is retried.
      let justClosed = false
      if ((what.startsWith('rmdir') || what.startsWith('rename')) && fds.length > 0) {
        for (const [fd] of fds) fs.closeSync(fd)
        fds.length = 0
        justClosed = true
      }
      const results = roots.map(r => errnoOf(() => op(r)))
      for (let retry = 0; justClosed && results[0] === 'OK' && results[1] === 'ENOTEMPTY' && retry < 200; retry++) {
        await new Promise(resolve => setTimeout(resolve, 10))
        results[1] = errnoOf(() => op(roots[1]))
      }
      if (process.env.REEF_TEST_TRACE === '1') t.comment(`step ${step}: ${what}: ${results.join(' / ')}`)
      steps++
      if (results[0] !== results[1]) {
        mismatches++
        t.fail(`step ${step}: ${what}: local ${results[0]}, reef ${results[1]}`)
        continue
      }
      if (what.startsWith('fallocate') && results[0] === 'OK') {
        const sums = roots.map(r => sha(path.join(r, a)))
        if (sums[0] !== sums[1]) {
          mismatches++
          t.fail(`step ${step}: ${what}: the content differs from local disk afterwards`)
        }
      }
      if (what.startsWith('utimes') && results[0] === 'OK') mtimes.set(a, when)
      if (/^(rename|unlink|rmdir|truncate|append|write|fallocate)/.test(what)) mtimes.clear()
      for (const q of PATHS) {
        const seen = roots.map(r => look(path.join(r, q)))
        if (JSON.stringify(seen[0]) !== JSON.stringify(seen[1])) {
          mismatches++
          t.fail(`after step ${step} (${what}): ${q}: local ${JSON.stringify(seen[0])}, reef ${JSON.stringify(seen[1])}`)
        }
      }
      for (const [q, sec] of mtimes) {
        const got = roots.map(r => errnoOf(() => { if (fs.lstatSync(path.join(r, q)).mtimeMs !== sec * 1000) throw Object.assign(new Error('mtime'), { code: 'MTIME' }) }))
        if (got[0] === 'OK' && got[1] !== 'OK') {
          mismatches++
          t.fail(`after step ${step} (${what}): mtime of ${q} is not the one set`)
        }
      }
      const localFds = fds.filter(([, s]) => s === 0)
      const reefFds = fds.filter(([, s]) => s === 1)
      for (let i = 0; i < Math.min(localFds.length, reefFds.length); i++) {
        const [x, y] = [fs.fstatSync(localFds[i][0]), fs.fstatSync(reefFds[i][0])]
        if (x.size !== y.size || x.nlink !== y.nlink || (x.mode & 0o7777) !== (y.mode & 0o7777)) {
          mismatches++
          t.fail(`after step ${step} (${what}): open file ${i}: local size ${x.size} nlink ${x.nlink}, reef size ${y.size} nlink ${y.nlink}`)
        }
      }
    }
    for (const [fd] of fds) fs.closeSync(fd)
    t.equal(mismatches, 0, `${steps} steps, ${PATHS.length} paths compared after each`)
  })

  t.test('hard links: a change through one name shows through the other at once (the kernel caches attributes too)', async t => {
    const a = path.join(m.mnt, 'hl-a')
    const b = path.join(m.mnt, 'hl-b')
    fs.writeFileSync(a, 'one')
    // Looked up and stat'ed repeatedly: the kernel now holds a's attributes (nlink 1).
    for (let i = 0; i < 3; i++) t.equal(fs.statSync(a).nlink, 1, `a alone, stat ${i}`)
    fs.linkSync(a, b)
    t.equal(fs.statSync(a).nlink, 2, 'nlink of the first name right after link')
    t.equal(fs.statSync(b).nlink, 2, 'nlink of the second name')
    fs.appendFileSync(b, ' two')
    t.equal(fs.statSync(a).size, 7, 'size through the first name after a write through the second')
    t.equal(fs.readFileSync(a, 'utf8'), 'one two', 'content through the first name')
    fs.chmodSync(b, 0o600)
    t.equal(fs.statSync(a).mode & 0o777, 0o600, 'mode through the first name after chmod through the second')
    fs.utimesSync(b, 1000, 2000)
    t.equal(fs.statSync(a).mtimeMs, 2_000_000, 'mtime through the first name after utimes through the second')
    fs.unlinkSync(b)
    t.equal(fs.statSync(a).nlink, 1, 'nlink back to 1 after the second name is removed')
    fs.appendFileSync(a, '!')
    t.equal(fs.statSync(a).size, 8, 'and a alone again')
    const dir = path.join(m.mnt, 'hl-d')
    fs.mkdirSync(dir)
    const before = fs.statSync(dir)
    fs.mkdirSync(path.join(dir, 'sub'))
    const after = fs.statSync(dir)
    t.equal(after.nlink, before.nlink + 1, 'a directory\'s link count follows a mkdir in it at once')
    t.ok(after.mtimeMs >= before.mtimeMs, 'and its mtime')
  })

  t.test('a file unlinked while open: gone from its directory at once, still readable and writable through the descriptor', async t => {
    const dir = path.join(m.mnt, 'ul')
    fs.mkdirSync(dir)
    const a = path.join(dir, 'a')
    const b = path.join(m.mnt, 'ul-b')
    fs.writeFileSync(a, 'hello')
    fs.linkSync(a, b)
    const fd = fs.openSync(a, 'r+')
    fs.unlinkSync(a)
    t.same(fs.readdirSync(dir), [], 'no trace of the open file in its directory (libfuse\'s .fuse_hidden name is not shown)')
    t.equal(fs.fstatSync(fd).nlink, 1, 'the open file has one link left')
    t.equal(fs.statSync(b).nlink, 1, 'and so has its other name')
    fs.writeSync(fd, 'J', 0)
    t.equal(fs.readFileSync(b, 'utf8'), 'Jello', 'a write through the descriptor shows through the other name')
    fs.unlinkSync(b)
    t.equal(fs.fstatSync(fd).nlink, 0, 'no link left')
    // Inode-addressed, an open file needs no name (libfuse2's path API kept its directory until
    // the close): the directory goes at once, as on local disk.
    t.equal(errnoOf(() => fs.rmdirSync(dir)), 'OK', 'its directory can be removed while it is open')
    t.notOk(fs.existsSync(dir), 'and is gone')
    const buf = Buffer.alloc(5)
    fs.readSync(fd, buf, 0, 5, 0)
    t.equal(buf.toString(), 'Jello', 'the data is still there through the descriptor')
    t.equal(fs.fstatSync(fd).size, 5, 'and fstat works')
    fs.writeSync(fd, '!', 5)
    t.equal(fs.fstatSync(fd).size, 6, 'and it still takes writes')
    fs.closeSync(fd)
    // The same through a rename over an open file, and a rename between two names of one file.
    const x = path.join(m.mnt, 'ul-x')
    const y = path.join(m.mnt, 'ul-y')
    fs.writeFileSync(x, 'x')
    fs.writeFileSync(y, 'y')
    const fy = fs.openSync(y, 'r')
    fs.renameSync(x, y)
    t.equal(fs.readFileSync(y, 'utf8'), 'x', 'renamed over an open file')
    t.equal(fs.readFileSync(fy, 'utf8'), 'y', 'the replaced file is still readable through its descriptor')
    t.same(fs.readdirSync(m.mnt).filter(n => n.startsWith('.fuse_hidden')), [], 'no .fuse_hidden name shows')
    fs.closeSync(fy)
    const z = path.join(m.mnt, 'ul-z')
    fs.linkSync(y, z)
    const fz = fs.openSync(z, 'r')
    fs.renameSync(y, z)
    t.ok(fs.existsSync(y) && fs.existsSync(z), 'rename between two names of one file does nothing (POSIX), even with the target open')
    t.equal(fs.statSync(z).nlink, 2, 'both names still count')
    fs.closeSync(fz)
  })

  t.test('the kernel\'s cache answered most stats, and the daemon logged no unexpected error', async t => {
    const st = await reef(m.dataDir, 'status', '--json')
    t.equal(st.code, 0, describe(st))
    // Inode-addressed, the kernel's attribute cache is exact for every file; the daemon counts
    // the GETATTRs it still had to answer.
    const ac = JSON.parse(st.stdout).attrCache as { enabled: boolean, getattrs: number, lookups: number }
    t.ok(ac.enabled, 'the kernel may cache attributes by default')
    const onMount = looks / 2
    t.ok(ac.getattrs < onMount / 2, `${ac.getattrs} GETATTRs reached the daemon for ${onMount} lstat calls on the mount (and ${ac.lookups} LOOKUPs)`)
    t.same(m.unexpected(), [], 'no unexpected errors')
  })
}
