/**
 * reef phase benchmark: Pond's five phases (mkdir, copy, stat, read, compile; see phases.ts) on
 * a real C source tree (source.ts), on local disk, on a reef mount of a fresh embedded node, and
 * on a reef mount whose node is one of a 3-node loopback cluster (targets.ts). Prints the
 * machine, the command, a table of median seconds per phase and the ratio to local disk; writes
 * JSON and an SVG chart. It reports; it never passes or fails on a time.
 *
 *   npm run bench                         (= npm run build && node dist/bench/phases/run.js)
 *   node dist/bench/phases/run.js [--quick] [--json FILE] [--runs N] [--targets local,reef,reef-cluster,reef-view]
 * reef-view: writer A's mount of a shared file system with a second writer mounted beside it.
 *
 * Environment: REEF_BENCH_RUNS (3), REEF_BENCH_TARGETS, REEF_BENCH_DIR (work dir, /var/tmp),
 * REEF_BENCH_SOURCE=synthetic, REEF_BENCH_SYNTH_FILES (400), REEF_BENCH_REPL_TIMEOUT (s, 300),
 * REEF_BENCH_CACHE (bench/.cache), REEF_BENCH_DAEMON_NODE_ARGS (node flags for the daemons, e.g.
 * "--cpu-prof --cpu-prof-dir=/tmp/prof").
 * --quick: one run, local disk and the embedded mount only: a smoke check.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { PHASES, type Phase, type PhaseTimes, runPhases, sourceDigests, writeLists } from './phases.js'
import { cleanupAll, ROOT, runMain } from './proc.js'
import { barChartSvg, commandLine, machine, median, printMachine, ratio, secs, table, writeResults } from './report.js'
import { getSource } from './source.js'
import { makeTarget, type Settled, type TargetName } from './targets.js'

const args = process.argv.slice(2)
const flag = (name: string): boolean => args.includes(name)
const opt = (name: string): string | undefined => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined }
if (flag('--help')) {
  process.stdout.write('usage: node dist/bench/phases/run.js [--quick] [--json FILE] [--runs N] [--targets local,reef,reef-cluster,reef-view]\n')
  process.exit(0)
}

const quick = flag('--quick')
const runs = Number(opt('--runs') ?? (quick ? '1' : process.env.REEF_BENCH_RUNS ?? '3'))
const targetNames = (opt('--targets') ?? process.env.REEF_BENCH_TARGETS ?? (quick ? 'local,reef' : 'local,reef,reef-cluster')).split(',') as TargetName[]
const baseDir = process.env.REEF_BENCH_DIR ?? '/var/tmp'
const cacheDir = process.env.REEF_BENCH_CACHE ?? path.join(ROOT, 'bench', '.cache')
const jsonPath = path.resolve(opt('--json') ?? path.join(ROOT, 'bench', 'out', 'phases.json'))
const replTimeoutMs = Number(process.env.REEF_BENCH_REPL_TIMEOUT ?? '300') * 1000
if (!(Number.isInteger(runs) && runs >= 1)) throw new Error(`bad run count ${String(runs)}`)
for (const t of targetNames) if (!['local', 'reef', 'reef-cluster', 'reef-view'].includes(t)) throw new Error(`unknown target ${t}`)
if (!targetNames.includes('local')) targetNames.unshift('local') // ratios need the baseline

const started = Date.now()
const log = (s: string): void => { process.stderr.write(`bench [${((Date.now() - started) / 1000).toFixed(0)} s]: ${s}\n`) }
const out = (s: string): void => { process.stdout.write(s + '\n') }

interface RunResult { phases?: PhaseTimes, settle?: Settled, error?: string }
interface Summary extends Partial<Record<Phase, number>> { phases1to4?: number, total?: number, settle?: number }

const sum = (t: PhaseTimes, ps: readonly Phase[]): number => ps.reduce((a, p) => a + t[p], 0)
const P14: readonly Phase[] = ['mkdir', 'copy', 'stat', 'read']

function summarize (rs: RunResult[]): Summary {
  const ok = rs.filter(r => r.phases !== undefined) as Array<Required<Pick<RunResult, 'phases'>> & RunResult>
  if (ok.length === 0) return {}
  const s: Summary = {}
  for (const p of PHASES) s[p] = median(ok.map(r => r.phases[p]))
  s.phases1to4 = median(ok.map(r => sum(r.phases, P14)))
  s.total = median(ok.map(r => sum(r.phases, PHASES)))
  s.settle = median(ok.flatMap(r => r.settle !== undefined ? [r.settle.seconds] : []))
  return s
}

async function main (): Promise<void> {
  const m = machine(baseDir)
  const command = commandLine()
  printMachine(m, command, out)
  const src = await getSource(cacheDir, log)
  out(`source: ${src.description}: ${src.files.length} files, ${src.dirs.length} directories, ${(src.bytes / 1e6).toFixed(1)} MB`)
  out(`runs: ${runs}; targets: ${targetNames.join(', ')}; phases 1-4 and 5 timed, medians shown`)
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-bench-'))
  const lists = writeLists(src, work)
  const digests = sourceDigests(src)
  const results = new Map<TargetName, RunResult[]>(targetNames.map(t => [t, []]))
  try {
    for (let i = 1; i <= runs; i++) {
      // Targets take turns within a run, so slow drift of the machine touches them all alike.
      for (const name of targetNames) {
        const target = makeTarget(name, baseDir)
        const r: RunResult = {}
        try {
          await target.start()
          log(`run ${i}/${runs} ${name}: ${target.label} ready`)
          const parts: string[] = []
          r.phases = await runPhases(src, target.dir, lists, digests, path.join(work, `build-${name}-${i}.log`), (p, s) => { parts.push(`${p} ${secs(s)}`) })
          r.settle = await target.settle(replTimeoutMs)
          log(`run ${i}/${runs} ${name}: ${parts.join(', ')}; settle ${secs(r.settle.seconds)}${r.settle.notReplicated !== undefined ? ` (notReplicated ${r.settle.notReplicated})` : ''}`)
        } catch (err) {
          r.error = (err as Error).message
          r.phases = undefined
          log(`run ${i}/${runs} ${name} FAILED: ${r.error}`)
          if ('daemonLog' in target) log(`daemon log tail:\n${(target as { daemonLog: () => string }).daemonLog().slice(-2000)}`)
        } finally {
          await target.stop()
          log(`run ${i}/${runs} ${name}: stopped`)
        }
        results.get(name)?.push(r)
      }
    }
  } finally {
    await cleanupAll()
    fs.rmSync(work, { recursive: true, force: true })
  }

  const summaries = new Map([...results].map(([n, rs]) => [n, summarize(rs)]))
  const base = summaries.get('local') ?? {}
  const keys = [...PHASES, 'phases1to4', 'total'] as const
  const ratios: Record<string, Record<string, number>> = {}
  for (const [n, s] of summaries) {
    if (n === 'local') continue
    ratios[n] = Object.fromEntries(keys.map(k => [k, (s[k] ?? NaN) / (base[k] ?? NaN)]))
  }

  const labels: Record<string, string> = { mkdir: '1 mkdir', copy: '2 copy', stat: '3 stat', read: '4 read', compile: '5 compile', phases1to4: 'phases 1-4', total: 'phases 1-5', settle: 'settle' }
  const header = ['phase (median s)', ...targetNames.flatMap(n => n === 'local' ? [n] : [n, 'vs local'])]
  const rows = [...keys, 'settle' as const].map(k => [labels[k], ...targetNames.flatMap(n => {
    const v = summaries.get(n)?.[k]
    return n === 'local' ? [secs(v)] : [secs(v), k === 'settle' ? '' : ratio(ratios[n]?.[k])]
  })])
  out('')
  out(table(header, rows))
  out('settle: local `sync -f`; reef `reef sync` (fold into a version); reef-cluster: fold, then until `reef sync --json` reports notReplicated 0')
  const cluster = results.get('reef-cluster')
  if (cluster !== undefined) out(`reef-cluster notReplicated after settling, per run: ${cluster.map(r => r.settle?.notReplicated ?? 'n/a').join(', ')}`)
  for (const [n, rs] of results) for (const [i, r] of rs.entries()) if (r.error !== undefined) out(`${n} run ${i + 1} failed: ${r.error}`)

  const json = {
    benchmark: 'reef phases',
    date: new Date().toISOString(),
    command,
    machine: m,
    source: { description: src.description, kind: src.kind, files: src.files.length, dirs: src.dirs.length, bytes: src.bytes, build: src.build, configure: src.configure },
    runs,
    phases: PHASES,
    targets: Object.fromEntries([...results].map(([n, rs]) => [n, { median: summaries.get(n), runs: rs }])),
    ratios
  }
  const svg = barChartSvg('reef phase benchmark: median seconds per phase', `${src.description.split(' (')[0]}; ${m.cores} cores, ${m.kernel}, node ${m.node}; ${runs} run(s)`,
    [...PHASES.map(p => labels[p]), 'settle'],
    targetNames.map(n => ({ name: n, values: [...PHASES.map(p => summaries.get(n)?.[p]), summaries.get(n)?.settle] })), 'seconds')
  const svgPath = writeResults(jsonPath, json, svg)
  out(`\nwrote ${jsonPath} and ${svgPath}`)
}

runMain(main, log)
