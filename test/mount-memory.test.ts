// The daemon keeps what the kernel holds: when the kernel gives inodes back (FORGET, here forced
// with `echo 2 > /proc/sys/vm/drop_caches`), the daemon's inode table shrinks, and everything
// reads again afterwards, including files that were open or written and not yet folded.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { describe, reef, run, skipReason, startMount, tempDir } from './helpers/mount.js'

interface CacheStats { inodesHeld: number, inodesLoaded: number, inodesUnloaded: number, forgets: number }

const skip = skipReason() || (process.getuid?.() !== 0 ? 'dropping the kernel\'s caches needs root' : false)
if (skip !== false) {
  t.plan(0, skip)
} else {
  const base = tempDir(t, 'reef-memory-')
  const dataDir = path.join(base, 'data')
  const m = await startMount(t, { dataDir, mnt: path.join(base, 'mnt'), foldInterval: 3600 })
  const p = (...s: string[]): string => path.join(m.mnt, ...s)
  const stats = async (): Promise<CacheStats> => {
    const r = await reef(dataDir, 'status', '--json')
    if (r.code !== 0) throw new Error(describe(r))
    return JSON.parse(r.stdout).attrCache as CacheStats
  }
  const DIRS = 20
  const FILES = 60

  t.test('after drop_caches the inode table shrinks, and the tree reads back whole', async t => {
    for (let d = 0; d < DIRS; d++) {
      fs.mkdirSync(p(`d${d}`, 'sub'), { recursive: true })
      for (let f = 0; f < FILES; f++) fs.writeFileSync(p(`d${d}`, `f${f}`), `${d}/${f}`)
    }
    t.equal((await reef(dataDir, 'sync')).code, 0, 'folded: every directory is clean')
    // Held across the drop: an open file, and a file written after the fold (dirty).
    const fd = fs.openSync(p('d3', 'f7'), 'r')
    fs.writeFileSync(p('d4', 'late'), 'written after the fold')
    const found = await run('find', [m.mnt, '-path', p('.reef'), '-prune', '-o', '-type', 'f', '-print'])
    t.equal(found.stdout.trim().split('\n').length, DIRS * FILES + 1, 'find sees every file')
    const before = await stats()
    t.ok(before.inodesLoaded > DIRS * FILES, `${before.inodesLoaded} inodes loaded after find (${before.inodesHeld} held by the kernel)`)
    fs.writeFileSync('/proc/sys/vm/drop_caches', '2')
    // FORGETs arrive as the kernel evicts: poll, bounded.
    let after = before
    for (const deadline = Date.now() + 30_000; Date.now() < deadline;) {
      after = await stats()
      if (after.inodesLoaded < before.inodesLoaded / 4) break
      await new Promise(resolve => setTimeout(resolve, 200))
    }
    t.ok(after.inodesLoaded < before.inodesLoaded / 4, `${before.inodesLoaded} -> ${after.inodesLoaded} inodes loaded (${after.forgets - before.forgets} FORGETs, ${after.inodesUnloaded} unloaded)`)
    t.ok(after.inodesHeld < before.inodesHeld, `the kernel holds ${after.inodesHeld} (was ${before.inodesHeld})`)
    const buf = Buffer.alloc(16)
    t.equal(buf.toString('utf8', 0, fs.readSync(fd, buf, 0, 16, 0)), '3/7', 'the open file still reads')
    fs.closeSync(fd)
    t.equal(fs.readFileSync(p('d4', 'late'), 'utf8'), 'written after the fold', 'the unfolded file kept its data')
    const again = await run('find', [m.mnt, '-path', p('.reef'), '-prune', '-o', '-type', 'f', '-print'])
    t.equal(again.stdout.trim().split('\n').length, DIRS * FILES + 1, 'find sees every file again')
    let bad = 0
    for (let d = 0; d < DIRS; d++) for (let f = 0; f < FILES; f += 7) if (fs.readFileSync(p(`d${d}`, `f${f}`), 'utf8') !== `${d}/${f}`) bad++
    t.equal(bad, 0, 'every sampled file reads its content')
    fs.renameSync(p('d5', 'f1'), p('d6', 'moved'))
    t.equal((await reef(dataDir, 'sync')).code, 0, 'a change after the reload folds')
    t.equal(fs.readFileSync(p('d6', 'moved'), 'utf8'), '5/1', 'and reads')
    t.same(m.unexpected(), [], 'no unexpected error logged')
  })
}
