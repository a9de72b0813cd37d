/**
 * reef micro benchmark: single-operation rates on a reef mount next to local disk.
 *
 *   node dist/bench/micro/run.js [--json FILE] [--runs N] [--targets local,reef]
 *
 *   stat            stat(2) per second over 1,000 existing files (repeated: the kernel may cache what it can cache exactly)
 *   create          open(O_CREAT) + 4 KiB write + close per second
 *   seq write       256 MiB of random bytes in 128 KiB writes + fsync, MB/s; cold = first write after
 *                   a fresh (re)mount and drop_caches, warm = a second file right after
 *   seq read        the same in 128 KiB reads; warm = right after writing, cold = after
 *                   unmount/remount (local: nothing to remount) and drop_caches
 *   find            `find . -type f | wc -l` over 100,000 files in 1,000 directories, cold and warm,
 *                   and the mount daemon's RSS right after (reef only)
 *   random write    4 KiB writes at random aligned offsets of a 1 GiB file, fsync every 256 writes
 *
 * Environment: REEF_MICRO_RUNS (1; medians over runs), REEF_MICRO_STATS (20000),
 * REEF_MICRO_CREATES (2000), REEF_MICRO_SEQ_MIB (256), REEF_MICRO_BLOCK_KIB (128),
 * REEF_MICRO_FIND_FILES (100000), REEF_MICRO_RAND_MIB (1024), REEF_MICRO_RAND_WRITES (8192),
 * REEF_BENCH_DIR (/var/tmp), REEF_BENCH_DAEMON_NODE_ARGS.
 * Reports; never passes or fails on a number.
 */
import fs from 'node:fs'
import path from 'node:path'
import { cleanupAll, ROOT, runMain } from '../phases/proc.js'
import { commandLine, machine, median, printMachine, table, writeResults, barChartSvg } from '../phases/report.js'
import { makeTarget, type TargetName } from '../phases/targets.js'
import { createRate, findSeconds, payload, populate, randomWrites, seqRead, seqWrite, statRate } from './ops.js'

const args = process.argv.slice(2)
const opt = (name: string): string | undefined => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined }
const num = (env: string, dflt: number): number => {
  const v = Number(process.env[env] ?? dflt)
  if (!(Number.isFinite(v) && v > 0)) throw new Error(`bad ${env}=${process.env[env] ?? ''}`)
  return v
}
const runs = Number(opt('--runs') ?? num('REEF_MICRO_RUNS', 1))
const targetNames = (opt('--targets') ?? 'local,reef').split(',') as TargetName[]
const baseDir = process.env.REEF_BENCH_DIR ?? '/var/tmp'
const jsonPath = path.resolve(opt('--json') ?? path.join(ROOT, 'bench', 'out', 'micro.json'))
const STATS = num('REEF_MICRO_STATS', 20_000)
const CREATES = num('REEF_MICRO_CREATES', 2_000)
const SEQ = num('REEF_MICRO_SEQ_MIB', 256) * 2 ** 20
const BLOCK = num('REEF_MICRO_BLOCK_KIB', 128) * 1024
const FIND = num('REEF_MICRO_FIND_FILES', 100_000)
const RAND_FILE = num('REEF_MICRO_RAND_MIB', 1024) * 2 ** 20
const RAND_WRITES = num('REEF_MICRO_RAND_WRITES', 8192)
const RAND_SYNC = 256

const started = Date.now()
const log = (s: string): void => { process.stderr.write(`micro [${((Date.now() - started) / 1000).toFixed(0)} s]: ${s}\n`) }
const out = (s: string): void => { process.stdout.write(s + '\n') }

interface Metric { key: string, label: string, unit: string, higherIsBetter: boolean }
const METRICS: Metric[] = [
  { key: 'stat', label: 'stat', unit: 'ops/s', higherIsBetter: true },
  { key: 'create', label: 'create + 4 KiB write + close', unit: 'files/s', higherIsBetter: true },
  { key: 'writeCold', label: `seq write ${SEQ / 2 ** 20} MiB + fsync, cold`, unit: 'MB/s', higherIsBetter: true },
  { key: 'writeWarm', label: `seq write ${SEQ / 2 ** 20} MiB + fsync, warm`, unit: 'MB/s', higherIsBetter: true },
  { key: 'readWarm', label: `seq read ${SEQ / 2 ** 20} MiB, warm`, unit: 'MB/s', higherIsBetter: true },
  { key: 'readCold', label: `seq read ${SEQ / 2 ** 20} MiB, cold`, unit: 'MB/s', higherIsBetter: true },
  { key: 'findCold', label: `find over ${FIND} files, cold`, unit: 's', higherIsBetter: false },
  { key: 'findWarm', label: `find over ${FIND} files, warm`, unit: 's', higherIsBetter: false },
  { key: 'rssFind', label: `daemon RSS after find over ${FIND} files`, unit: 'MiB', higherIsBetter: false },
  { key: 'randWrite', label: `random 4 KiB writes, ${RAND_FILE / 2 ** 20} MiB file, fsync every ${RAND_SYNC}`, unit: 'writes/s', higherIsBetter: true }
]
type Values = Record<string, number>

async function once (name: TargetName): Promise<Values> {
  const t = makeTarget(name, baseDir)
  const v: Values = {}
  const step = (k: string, x: number): void => { v[k] = x; log(`${name}: ${k} ${x.toFixed(k.startsWith('find') ? 3 : 0)}`) }
  try {
    await t.start()
    const d = (sub: string): string => path.join(t.dir, sub)
    step('stat', statRate(populate(d('stat'), 1000, 1000), STATS))
    step('create', createRate(d('create'), CREATES))
    const findFiles = FIND
    populate(d('find'), findFiles, 100)
    const cold = await t.coldRestart()
    if (!cold.dropped) log('could not drop caches (not root?): "cold" is only a remount')
    step('findCold', await findSeconds(d('find'), findFiles))
    step('findWarm', await findSeconds(d('find'), findFiles))
    const rss = await t.daemonRssMiB?.()
    if (rss !== undefined) step('rssFind', rss)
    const a = payload(SEQ)
    await t.coldRestart()
    step('writeCold', seqWrite(d('seq-a'), a, BLOCK))
    const b = payload(SEQ)
    step('writeWarm', seqWrite(d('seq-b'), b, BLOCK))
    step('readWarm', seqRead(d('seq-b'), BLOCK, SEQ))
    await t.coldRestart()
    step('readCold', seqRead(d('seq-a'), BLOCK, SEQ))
    // The file is written whole first (untimed): a disk image or a database file exists already.
    seqWrite(d('rand'), payload(RAND_FILE), BLOCK)
    step('randWrite', randomWrites(d('rand'), RAND_FILE, RAND_WRITES, RAND_SYNC))
  } finally {
    await t.stop()
  }
  return v
}

async function main (): Promise<void> {
  const m = machine(baseDir)
  const command = commandLine()
  printMachine(m, command, out)
  out(`runs: ${runs}; targets: ${targetNames.join(', ')}; block size ${BLOCK / 1024} KiB`)
  const all = new Map<TargetName, Values[]>(targetNames.map(n => [n, []]))
  try {
    for (let i = 0; i < runs; i++) for (const n of targetNames) all.get(n)?.push(await once(n))
  } finally {
    await cleanupAll()
  }
  const med = new Map([...all].map(([n, vs]) => [n, Object.fromEntries(METRICS.map(mt => [mt.key, median(vs.map(v => v[mt.key]))]))]))
  const local = med.get('local')
  // "slower" = how many times longer the same work takes than on local disk.
  const slower = (n: TargetName, mt: Metric): number => {
    const x = med.get(n)?.[mt.key] ?? NaN
    const l = local?.[mt.key] ?? NaN
    return mt.higherIsBetter ? l / x : x / l
  }
  const fmt = (x: number): string => !Number.isFinite(x) ? '-' : x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(1) : x.toFixed(3)
  const others = targetNames.filter(n => n !== 'local')
  const header = ['metric', 'unit', ...targetNames, ...others.map(n => `${n} slower by`)]
  const rows = METRICS.map(mt => [mt.label, mt.unit, ...targetNames.map(n => fmt(med.get(n)?.[mt.key] ?? NaN)), ...others.map(n => `${fmt(slower(n, mt))}x`)])
  out('')
  out(table(header, rows))
  const json = {
    benchmark: 'reef micro',
    date: new Date().toISOString(),
    command,
    machine: m,
    runs,
    sizes: { stats: STATS, creates: CREATES, seqBytes: SEQ, blockBytes: BLOCK, findFiles: FIND, randFileBytes: RAND_FILE, randWrites: RAND_WRITES, randSyncEvery: RAND_SYNC },
    metrics: METRICS,
    targets: Object.fromEntries([...all].map(([n, vs]) => [n, { median: med.get(n), runs: vs }])),
    slowdown: Object.fromEntries(others.map(n => [n, Object.fromEntries(METRICS.map(mt => [mt.key, slower(n, mt)]))]))
  }
  const svg = barChartSvg('reef micro benchmark: times slower than local disk', `${m.cores} cores, ${m.kernel}, node ${m.node}; ${runs} run(s); 1 = as fast as local disk`,
    METRICS.map(mt => mt.key), others.map(n => ({ name: n, values: METRICS.map(mt => slower(n, mt)) })), 'x slower than local disk')
  const svgPath = writeResults(jsonPath, json, svg)
  out(`\nwrote ${jsonPath} and ${svgPath}`)
}

runMain(main, log)
