/**
 * How long a fold holds the fs lock, and how much writes made during it get done: N rounds of
 * `--mib` MiB written sequentially through the fs core (128 KiB writes, no fsync), each folded
 * while `--writes` random 4 KiB writes into the same file run beside the fold. Reports, per
 * round, the snapshot (the lock held), the whole fold, and the writes/s and how many of them
 * finished before the fold did. Prints a table and JSON; judges nothing.
 *   node dist/bench/fold-lock.js [--mib 256] [--rounds 3] [--writes 4096] [--json FILE]
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ReefNode } from '../src/node.js'
import { ROOT_INO } from '../src/fs/inode.js'

const args = process.argv.slice(2)
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(name)
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt
}
const size = Number(opt('--mib', '256')) * 2 ** 20
const rounds = Number(opt('--rounds', '3'))
const writes = Number(opt('--writes', '4096'))
const jsonOut = opt('--json', '')

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-fold-lock-'))
ReefNode.init(dir)
const node = await ReefNode.open(dir)
const rfs = await node.openFs()
const out: Array<{ snapshotMs: number, foldMs: number, writesPerS: number, writesBeforeFoldEnd: number }> = []
try {
  const f = await rfs.create(ROOT_INO, new TextEncoder().encode('big'), 0o644, { uid: 0, gid: 0 })
  const block = crypto.randomBytes(4096)
  let x = 0x2545f491
  const next = (): number => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) % (size / 4096) }
  for (let round = 0; round < rounds; round++) {
    for (let off = 0; off < size; off += 131072) await rfs.write(f.ino, off, crypto.randomBytes(131072))
    const t0 = performance.now()
    let snapshotMs = -1
    rfs.foldHooks = { afterSnapshot: async () => { snapshotMs = performance.now() - t0 } }
    let foldEnd = 0
    const folding = rfs.fold(`round ${round}`).then(() => { foldEnd = performance.now() })
    let before = 0
    const w0 = performance.now()
    for (let i = 0; i < writes; i++) {
      await rfs.write(f.ino, next() * 4096, block)
      if (foldEnd === 0) before++
    }
    const writeMs = performance.now() - w0
    await folding
    rfs.foldHooks = undefined
    out.push({ snapshotMs: Math.round(snapshotMs), foldMs: Math.round(foldEnd - t0), writesPerS: Math.round(writes / writeMs * 1000), writesBeforeFoldEnd: before })
    await rfs.fold(`round ${round} writes`)
  }
} finally {
  rfs.log?.close()
  await node.close()
  fs.rmSync(dir, { recursive: true, force: true })
}
console.log(`fold of ${size / 2 ** 20} MiB written since the last one, ${writes} random 4 KiB writes beside it`)
console.log('round  snapshot (lock held) ms  fold ms  writes/s  writes done before the fold')
for (const [i, r] of out.entries()) console.log(`${String(i).padStart(5)}  ${String(r.snapshotMs).padStart(23)}  ${String(r.foldMs).padStart(7)}  ${String(r.writesPerS).padStart(8)}  ${String(r.writesBeforeFoldEnd).padStart(27)}`)
if (jsonOut !== '') fs.writeFileSync(jsonOut, JSON.stringify({ mib: size / 2 ** 20, writes, rounds: out }, null, 2) + '\n')
