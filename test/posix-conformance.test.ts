// reef's own POSIX conformance suite: the cases of test/helpers/posix/run.py (every file type:
// create and stat, chmod and chown as root, owner and stranger, utimensat with UTIME_NOW and
// UTIME_OMIT, which operations change mtime and ctime, link/unlink/rename/rmdir and their errnos,
// sticky and unwritable directories, name lengths, O_EXCL/O_TRUNC/O_APPEND, FIFOs and sockets
// that work, bad input) run on local disk and on a reef mount, and every outcome must be the
// same, except the named exceptions below. The tree the cases leave on the mount must then read
// back identical after a fold, a clean remount and a remount after kill -9; and input the kernel
// lets through but reef must refuse leaves nothing in the log.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { describe, isMounted, reef, run, skipReason, startMount, tempDir, type Mount } from './helpers/mount.js'
import { POSIX_RUNNER as RUNNER, PYTHON } from './helpers/posix.js'

/**
 * Differences reef cannot remove. Each must still differ: one that starts to match is reported,
 * so this list never outlives its reason.
 */
const KNOWN: Array<{ id: RegExp, step: string | RegExp, reason: string }> = [
  {
    id: /^fallocate\/modes$/,
    step: /^(COLLAPSE|INSERT)_RANGE /,
    reason: 'fallocate COLLAPSE_RANGE and INSERT_RANGE: Linux\'s FUSE module refuses them itself (EOPNOTSUPP), no FUSE file system receives them'
  }
]

interface Row { id: string, out: unknown }
type Check = { key: string, id: string, step: string, value: string }

async function cases (dir: string, ...only: string[]): Promise<Row[]> {
  const r = await run(PYTHON, [RUNNER, dir, ...only], { timeoutMs: 120_000 })
  if (r.code !== 0) throw new Error(`run.py ${dir}: ${describe(r)}`)
  return r.stdout.trim().split('\n').map(l => JSON.parse(l) as Row)
}

/** One check per step of each case (a case that is not a map of steps is one check). */
function checks (rows: Row[]): Check[] {
  return rows.flatMap(({ id, out }) => out !== null && typeof out === 'object' && !Array.isArray(out)
    ? Object.entries(out).map(([step, v]) => ({ key: `${id} | ${step}`, id, step, value: JSON.stringify(v) }))
    : [{ key: id, id, step: '', value: JSON.stringify(out) }])
}

async function tree (dir: string): Promise<Array<Record<string, unknown>>> {
  const r = await run(PYTHON, [RUNNER, '--tree', dir], { timeoutMs: 120_000 })
  if (r.code !== 0) throw new Error(`run.py --tree ${dir}: ${describe(r)}`)
  return JSON.parse(r.stdout)
}

/** The rows of `b` that differ from `a` (by path), for a readable failure. */
function treeDiff (a: Array<Record<string, unknown>>, b: Array<Record<string, unknown>>): string[] {
  const by = new Map(b.map(r => [r.path, JSON.stringify(r)]))
  const out: string[] = []
  for (const r of a) {
    const other = by.get(r.path)
    if (other !== JSON.stringify(r)) out.push(`${String(r.path)}: ${JSON.stringify(r)} -> ${other ?? 'missing'}`)
    by.delete(r.path)
  }
  for (const p of by.keys()) out.push(`${String(p)}: new`)
  return out
}

const mountOptions = (mnt: string): string[] =>
  fs.readFileSync('/proc/mounts', 'utf8').split('\n').map(l => l.split(' ')).find(f => f[1] === mnt)?.[3]?.split(',') ?? []

const skip = skipReason()
if (skip !== false) {
  t.plan(0, skip)
} else {
  const base = tempDir(t, 'reef-conformance-')
  const dataDir = path.join(base, 'data')
  const mnt = path.join(base, 'mnt')
  const local = path.join(base, 'local')
  fs.mkdirSync(local)
  let m: Mount = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
  const onMount = path.join(mnt, 'cases')
  fs.mkdirSync(onMount)

  t.test('every case gives the same outcome on local disk and on the mount', async t => {
    const [a, b] = await Promise.all([cases(local), cases(onMount)])
    t.same(b.map(r => r.id), a.map(r => r.id), 'the same cases ran on both')
    const la = checks(a)
    const lb = new Map(checks(b).map(c => [c.key, c]))
    const nodev = mountOptions(mnt).includes('nodev')
    t.comment(`the mount's options: ${mountOptions(mnt).join(',')}`)
    const differ: string[] = []
    const known = KNOWN.map(() => 0)
    let equal = 0
    for (const c of la) {
      const got = lb.get(c.key)?.value ?? 'missing'
      if (c.id === 'dev/open') {
        // Opening a device node follows the mount's dev/nodev option, not local disk.
        const want = nodev ? '"EACCES"' : c.value
        t.equal(got, want, `${c.key}: ${nodev ? 'EACCES on a nodev mount' : 'as on local disk'}`)
        continue
      }
      if (got === c.value) {
        equal++
        continue
      }
      const k = KNOWN.findIndex(e => e.id.test(c.id) && (e.step === '*' || (typeof e.step === 'string' ? e.step === c.step : e.step.test(c.step))))
      if (k >= 0) {
        known[k]++
        continue
      }
      differ.push(`${c.key.padEnd(70)} local ${c.value.padEnd(24)} reef ${got}`)
    }
    t.comment(`${a.length} cases, ${la.length} checks: ${equal} equal, ${known.reduce((x, y) => x + y, 0)} known exceptions, ${differ.length} other differences`)
    KNOWN.forEach((e, i) => {
      if (known[i] === 0) t.fail(`${e.id.source} | ${String(e.step)} now matches local disk: remove the known exception (${e.reason})`)
      else t.comment(`known (${known[i]} checks): ${e.reason}`)
    })
    if (differ.length > 0) t.comment(['differences (case | step, local disk, reef mount):', ...differ].join('\n'))
    t.equal(differ.length, 0, 'no difference between the mount and local disk but the known ones')
    t.ok(equal > 500, `${equal} checks compared equal`)
  })

  t.test('refused input gets ext4\'s errno and leaves nothing in the log or the version', async t => {
    const prepare = (d: string): void => {
      fs.mkdirSync(path.join(d, 'd'), { recursive: true })
      fs.writeFileSync(path.join(d, 'f'), 'data')
      fs.writeFileSync(path.join(d, 'd', 'x'), 'x')
    }
    const dirs = [path.join(local, 'refused'), path.join(mnt, 'refused')]
    for (const d of dirs) prepare(d)
    const status = async (): Promise<{ pendingRecords: number, vguid: string }> => {
      const s = await reef(dataDir, 'status', '--json')
      t.equal(s.code, 0, describe(s))
      return JSON.parse(s.stdout)
    }
    const before = await status()
    const [a, b] = await Promise.all(dirs.map(async d => {
      const r = await run(PYTHON, [RUNNER, '--refused', d])
      if (r.code !== 0) throw new Error(describe(r))
      return JSON.parse(r.stdout) as Record<string, string>
    }))
    for (const [step, errno] of Object.entries(a)) {
      t.not(errno, 'OK', `${step}: refused on local disk`)
      t.equal(b[step], errno, `${step}: ${errno} on the mount too`)
    }
    const after = await status()
    t.equal(after.pendingRecords, before.pendingRecords, `no record reached the log (${after.pendingRecords} pending)`)
    t.equal(after.vguid, before.vguid, 'the version is unchanged')
    t.same(fs.readdirSync(dirs[1]).sort(), ['d', 'f'], 'and nothing was created')
  })

  t.test('the tree the cases left reads back identical after a fold, a remount and a kill -9', async t => {
    const before = await tree(onMount)
    const kinds = new Set(before.map(r => r.type))
    t.same([...kinds].sort(), ['blk', 'chr', 'dir', 'fifo', 'reg', 'socket', 'symlink'], 'every kind is in the tree')
    t.ok(before.some(r => r['same as'] !== undefined && r['same as'] !== r.path && r.type === 'socket'), 'with hard links (here to a socket)')
    const s = await reef(dataDir, 'sync', '--json')
    t.equal(s.code, 0, describe(s))
    t.same(treeDiff(before, await tree(onMount)), [], 'after a fold')
    const st = await m.stop()
    t.equal(st.code, 0, `clean exit: ${m.stderr()}`)
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    t.same(treeDiff(before, await tree(onMount)), [], 'after a clean remount')
    // More of the same, left unfolded (only in the log), then a crash.
    const again = path.join(mnt, 'again')
    fs.mkdirSync(again)
    const more = await cases(again, 'reg/link', 'symlink/link', 'fifo/link', 'socket/link', 'chr/link', 'blk/link', 'setgid-dir')
    t.ok(more.length >= 7, `${more.length} more cases ran, unfolded`)
    const full = await tree(mnt)
    const pending = JSON.parse((await reef(dataDir, 'status', '--json')).stdout).pendingRecords as number
    t.ok(pending > 0, `${pending} records are only in the log`)
    const fd = fs.openSync(again, 'r')
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    await m.kill9()
    t.ok(isMounted(mnt), 'a stale mount is left behind')
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    t.same(treeDiff(full, await tree(mnt)), [], 'after kill -9 and a remount')
    t.same(m.unexpected(), [], 'the daemon logged no unexpected error')
  })
}
