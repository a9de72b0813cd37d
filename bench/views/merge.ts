/**
 * reef view benchmark, merge part (issue 12 item 8): the time to merge W writers' logs of R
 * records each into one tree, the way every node holding those heads computes it. Each writer,
 * starting from one base version, makes files in a directory of its own (create + write + a
 * setattr now and then) and also edits a few files all writers share, so the merge both replays
 * disjoint work and makes conflict copies. Reports a table and JSON; judges nothing.
 *
 *   node dist/bench/views/merge.js [--writers 3] [--records 10000] [--runs 3] [--json FILE]
 *
 * Writers work through the fs core on one in-memory block store (their logs in a temporary
 * directory); what is timed is `merge()` alone: reading nothing from a network, replaying every
 * record in merge order onto the base and folding the merged version.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { sha256 } from '../../src/crypto/hash.js'
import { ReefFS, type VersionInfo } from '../../src/fs/fs.js'
import { ROOT_INO } from '../../src/fs/inode.js'
import { WriterLog } from '../../src/log/index.js'
import { merge, recordsSince, type WriterInput } from '../../src/merge/index.js'
import { MemoryBlockStore } from '../../src/store/memory.js'

const args = process.argv.slice(2)
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(name)
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt
}
const W = Number(opt('--writers', '3'))
const R = Number(opt('--records', '10000'))
const RUNS = Number(opt('--runs', '3'))
const jsonOut = opt('--json', '')
for (const [name, v] of [['--writers', W], ['--records', R], ['--runs', RUNS]] as const) {
  if (!(Number.isInteger(v) && v > 0 && v <= 1_000_000)) throw new Error(`bad ${name} ${String(v)}`)
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const cred = { uid: 0, gid: 0 }
const SHARED = 8
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

interface Run { seconds: number, records: number, conflicts: number, changed: number, rss: number }

async function once (run: number): Promise<Run> {
  const store = new MemoryBlockStore()
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-bench-merge-'))
  const logs: WriterLog[] = []
  let clock = 1_765_000_000_000_000_000n
  const now = (): bigint => (clock += 1_000_000n)
  try {
    const open = async (label: string, at: VersionInfo | undefined): Promise<{ key: Uint8Array, fs: ReefFS }> => {
      const key = sha256(enc(`reef bench merge ${run} ${label}`))
      const dir = fs.mkdtempSync(path.join(tmp, 'w-'))
      const log = new WriterLog(dir, key).open()
      logs.push(log)
      return { key, fs: await ReefFS.open({ store, log, version: at, author: key, now }) }
    }
    const setup = await open('setup', undefined)
    for (let i = 0; i < SHARED; i++) {
      const f = await setup.fs.create(ROOT_INO, enc(`shared-${i}.txt`), 0o644, cred)
      await setup.fs.write(f.ino, 0, enc(`base ${i}\n`))
    }
    const base = await setup.fs.fold('base', true) as VersionInfo
    const inputs: WriterInput[] = []
    for (let w = 0; w < W; w++) {
      const { key, fs: wfs } = await open(`w${w}`, base)
      const home = await wfs.mkdir(ROOT_INO, enc(`writer-${w}`), 0o755, cred)
      let made = 1
      // About 2 records per file (create, write) and a setattr every 8th: R records in all.
      for (let i = 0; made < R; i++) {
        if (i % 64 === 0 && made + 2 <= R) {
          // An edit of a shared file: concurrent with the other writers' edits of it.
          const n = await wfs.resolve(`/shared-${(i / 64) % SHARED}.txt`)
          await wfs.write(n.ino, 0, enc(`writer ${w} edit ${i}\n`))
          made++
        }
        const f = await wfs.create(home.ino, enc(`f-${i}`), 0o644, cred)
        await wfs.write(f.ino, 0, enc(`writer ${w} file ${i}\n`))
        made += 2
        if (i % 8 === 7 && made < R) {
          await wfs.setattr(f.ino, { mode: 0o600 })
          made++
        }
      }
      const v = await wfs.fold(undefined, true) as VersionInfo
      inputs.push({ key, head: v.vguid, records: await recordsSince(store, v.root.log, key, base.root.vv?.[hex(key)] ?? 0) })
    }
    const records = inputs.reduce((a, i) => a + i.records.length, 0)
    const t0 = process.hrtime.bigint()
    const out = await merge({ store, base, writers: inputs })
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    return { seconds, records, conflicts: out.conflicts.length, changed: out.changed.length, rss: process.memoryUsage().rss / 2 ** 20 }
  } finally {
    for (const l of logs) l.close()
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}

const runs: Run[] = []
for (let r = 0; r < RUNS; r++) {
  runs.push(await once(r))
  const x = runs[runs.length - 1]
  process.stderr.write(`merge run ${r + 1}/${RUNS}: ${x.records} records in ${x.seconds.toFixed(2)} s\n`)
}
const secs = runs.map(r => r.seconds).sort((a, b) => a - b)
const median = secs[Math.floor(secs.length / 2)]
const r0 = runs[0]
console.log(`merge of ${W} writers x ~${R} records (${r0.records} records replayed; ${r0.conflicts} conflict copies, ${r0.changed} inodes changed), ${RUNS} runs, node ${process.version}, ${os.cpus().length} cores`)
console.log('run   seconds   records/s   RSS MiB')
runs.forEach((r, i) => console.log(`${String(i + 1).padEnd(5)} ${r.seconds.toFixed(3).padStart(7)}   ${Math.round(r.records / r.seconds).toString().padStart(9)}   ${r.rss.toFixed(0).padStart(7)}`))
console.log(`median ${median.toFixed(3)} s (${Math.round(r0.records / median)} records/s)`)
if (jsonOut !== '') {
  fs.writeFileSync(jsonOut, JSON.stringify({ writers: W, recordsPerWriter: R, runs, medianSeconds: median, node: process.version, date: new Date().toISOString() }, null, 2) + '\n')
}
