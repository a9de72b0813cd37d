/**
 * reef scale benchmark (issue 10, item 7): the discrete-event simulation of bench/scale/sim.ts
 * (lookup hops against log N; block availability over simulated days of churn, with repair), and
 * any real-network runs bench/scale/real.ts supplies. Prints the machine, the command, the churn
 * model and its source, and tables with the analytic figure beside each measured one; writes
 * JSON and an SVG chart (same base name) as the phase benchmark does. It reports; it never
 * passes or fails on a number.
 *
 *   npm run bench:scale                (= npm run build && node dist/bench/scale/run.js)
 *   node dist/bench/scale/run.js [--quick] [--json FILE] [--seed N] [--hops N:L,...] [--avail N:B:k:days,...] [--no-real]
 *   node dist/bench/scale/run.js --replot FILE.json     (redraws FILE.svg from an earlier run's JSON)
 *
 * Default: hops at N = 1,000, 10,000 and 100,000 (3,000, 3,000 and 2,000 lookups), availability at
 * N = 10,000 with B = 20,000 blocks over 7 days at k = 3 and k = 5.
 * --quick: hops at N = 1,000 and 10,000 (1,000 lookups each) and one simulated day of availability
 * at N = 2,000 (B = 2,000) for k = 3 and k = 5: a smoke check, well under a minute.
 * --hops / --avail replace the default lists (N:lookups; N:blocks:k:days; 'none' for neither). --walk N: walks end at the N
 * closest (default 20, the paper's; src/dht/router.ts uses 10).
 *
 * Real runs: if bench/scale/real.ts exists (dist/bench/scale/real.js once built), it is imported
 * and its `realRuns({ quick, log })` (or default export) is awaited for a list of ScaleRun with
 * kind 'real'; they are printed and written beside the simulated ones. A failure there is
 * reported and the simulation results are still written. --no-real skips them.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import { commandLine, machine, printMachine, table, writeResults } from '../phases/report.js'
import { runSim, type AvailabilityResult, type HopsResult, type SimReport } from './sim.js'

/** One row of the scale table: a simulated or a real network of n nodes. */
export interface ScaleRun {
  kind: 'real' | 'sim'
  n: number
  hopsP50: number
  hopsP95: number
  /** Fraction of gets (or lookups) that found the block (its true closest holders). */
  getSuccess: number
  /** Anything else the run measured (latencies, throughput, connections, CPU, RSS, repair...). */
  [extra: string]: unknown
}

/** Published anchors quoted beside the simulated hops. */
export const ANCHORS = {
  ipfs: 'IPFS public DHT, about 15,000 servers: 50% of walks finish in 4 hops, 90% in 6 (Trautwein et al., "Design and Evaluation of IPFS", SIGCOMM 2022)',
  cfs: 'CFS (Chord): about 7 of 4,096 servers contacted per lookup (Dabek et al., "Wide-area cooperative storage with CFS", SOSP 2001)',
  kademlia: 'Kademlia: a lookup contacts at most ceil(log2 N) nodes in the paper\'s bound (Maymounkov and Mazieres, IPTPS 2002)'
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const args = process.argv.slice(2)
const flag = (name: string): boolean => args.includes(name)
const opt = (name: string): string | undefined => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined }

function parseList (s: string, parts: number): number[][] {
  if (s === 'none') return []
  return s.split(',').map(x => {
    const v = x.split(':').map(Number)
    if (v.length !== parts || v.some(n => !Number.isFinite(n) || n <= 0)) throw new Error(`bad list entry "${x}" (want ${parts} numbers separated by ':')`)
    return v
  })
}

const started = Date.now()
const log = (s: string): void => { process.stderr.write(`bench:scale [${((Date.now() - started) / 1000).toFixed(0)} s]: ${s}\n`) }
const out = (s: string): void => { process.stdout.write(s + '\n') }
const pct = (x: number, d = 3): string => Number.isFinite(x) ? `${(x * 100).toFixed(d)}%` : '-'
const num = (x: number, d = 2): string => Number.isFinite(x) ? x.toFixed(d) : '-'
const sci = (x: number): string => !Number.isFinite(x) ? '-' : x === 0 ? '0' : x < 1e-3 ? x.toExponential(1) : x.toPrecision(2)
const bytes = (b: number): string => b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(1)} MiB` : `${(b / 2 ** 10).toFixed(0)} KiB`

async function realRuns (quick: boolean): Promise<{ runs: ScaleRun[], error?: string }> {
  const file = new URL('./real.js', import.meta.url)
  if (!fs.existsSync(file)) return { runs: [] }
  try {
    const spec: string = file.href
    const mod = await import(spec)
    const fn = mod.realRuns ?? mod.default
    if (typeof fn !== 'function') return { runs: [], error: 'bench/scale/real.ts exports neither realRuns nor a default function' }
    const runs = await fn({ quick, log }) as ScaleRun[]
    return { runs: runs.map(r => ({ ...r, kind: 'real' as const })) }
  } catch (err) {
    return { runs: [], error: (err as Error).stack ?? String(err) }
  }
}

function hopsRun (h: HopsResult): ScaleRun {
  return { ...h, kind: 'sim' }
}

// ---------------------------------------------------------------------------------------------
// The chart: two hand-written SVG panels, hops against log2 N, and readability over days.

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1']

function chartSvg (title: string, subtitle: string, hops: ScaleRun[], estimate: (n: number) => number, avail: AvailabilityResult[]): string {
  const W = 1100
  const H = 500
  const parts: string[] = []
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`)
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`)
  parts.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">${esc(title)}</text>`)
  parts.push(`<text x="${W / 2}" y="44" text-anchor="middle" fill="#555">${esc(subtitle)}</text>`)

  // Panel 1: hops p50 / p95 against log2 N, the estimate log2(N)/log2(40), and IPFS's anchor.
  {
    const L = 70
    const R = 520
    const T = 80
    const Bt = H - 90
    const xs = [...hops.map(h => Math.log2(h.n)), Math.log2(15000)]
    const x0 = Math.floor(Math.min(...xs, 9)) - 0.5
    const x1 = Math.ceil(Math.max(...xs, 17)) + 0.5
    const yMax = 7
    const X = (v: number): number => L + (R - L) * (v - x0) / (x1 - x0)
    const Y = (v: number): number => Bt - (Bt - T) * v / yMax
    parts.push(`<text x="${(L + R) / 2}" y="${T - 14}" text-anchor="middle" font-weight="bold">lookup hops against log2 N</text>`)
    for (let v = 0; v <= yMax; v++) {
      parts.push(`<line x1="${L}" x2="${R}" y1="${Y(v).toFixed(1)}" y2="${Y(v).toFixed(1)}" stroke="#ddd"/>`)
      parts.push(`<text x="${L - 6}" y="${Y(v).toFixed(1)}" text-anchor="end" dominant-baseline="middle" fill="#555">${v}</text>`)
    }
    for (let v = Math.ceil(x0); v <= x1; v++) {
      parts.push(`<line x1="${X(v).toFixed(1)}" x2="${X(v).toFixed(1)}" y1="${Bt}" y2="${Bt + 4}" stroke="#333"/>`)
      parts.push(`<text x="${X(v).toFixed(1)}" y="${Bt + 18}" text-anchor="middle" fill="#555">${v}</text>`)
    }
    parts.push(`<line x1="${L}" x2="${R}" y1="${Bt}" y2="${Bt}" stroke="#333"/>`)
    parts.push(`<text x="${(L + R) / 2}" y="${Bt + 36}" text-anchor="middle" fill="#555">log2 N (N = 1,000: 10; 10,000: 13.3; 100,000: 16.6)</text>`)
    parts.push(`<text transform="translate(22 ${(T + Bt) / 2}) rotate(-90)" text-anchor="middle" fill="#555">hops</text>`)
    // The estimate, as a line.
    const pts: string[] = []
    for (let v = x0; v <= x1 + 1e-9; v += 0.25) pts.push(`${X(v).toFixed(1)},${Y(estimate(2 ** v)).toFixed(1)}`)
    parts.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="#999" stroke-dasharray="5 4"/>`)
    const series: Array<{ name: string, color: string, get: (h: ScaleRun) => number }> = [
      { name: 'p50', color: COLORS[0], get: h => h.hopsP50 },
      { name: 'p95', color: COLORS[1], get: h => h.hopsP95 }
    ]
    for (const [j, s] of series.entries()) {
      for (const kind of ['sim', 'real'] as const) {
        const rs = hops.filter(h => h.kind === kind).sort((a, b) => a.n - b.n)
        if (rs.length === 0) continue
        const p = rs.map(h => `${X(Math.log2(h.n)).toFixed(1)},${Y(s.get(h)).toFixed(1)}`)
        parts.push(`<polyline points="${p.join(' ')}" fill="none" stroke="${s.color}" stroke-width="2"${kind === 'real' ? ' stroke-dasharray="2 3"' : ''}/>`)
        for (const h of rs) {
          const cx = X(Math.log2(h.n))
          const cy = Y(s.get(h))
          parts.push(kind === 'sim'
            ? `<circle cx="${cx.toFixed(1)}" cy="${cy.toFixed(1)}" r="4" fill="${s.color}"><title>${esc(`${kind} N=${h.n} ${s.name} ${s.get(h)}`)}</title></circle>`
            : `<rect x="${(cx - 4).toFixed(1)}" y="${(cy - 4).toFixed(1)}" width="8" height="8" fill="${s.color}"><title>${esc(`${kind} N=${h.n} ${s.name} ${s.get(h)}`)}</title></rect>`)
          parts.push(`<text x="${(cx + 6).toFixed(1)}" y="${(j === 0 ? cy + 14 : cy - 6).toFixed(1)}" font-size="10" fill="${s.color}">${s.get(h)}</text>`)
        }
      }
    }
    // IPFS at ~15,000 servers: p50 4, p90 6.
    for (const [v, name] of [[4, 'IPFS p50'], [6, 'IPFS p90']] as const) {
      const cx = X(Math.log2(15000))
      parts.push(`<path d="M ${(cx - 5).toFixed(1)} ${(Y(v) - 5).toFixed(1)} l 10 10 m -10 0 l 10 -10" stroke="#e15759" stroke-width="2"/>`)
      parts.push(`<text x="${(cx + 8).toFixed(1)}" y="${(Y(v) + 4).toFixed(1)}" font-size="10" fill="#e15759">${name} (15k)</text>`)
    }
    const legend: Array<[string, string, string]> = [['sim hops p50', COLORS[0], ''], ['sim hops p95', COLORS[1], ''], ['log2(N)/log2(40)', '#999', '5 4']]
    if (hops.some(h => h.kind === 'real')) legend.push(['real (dotted)', '#333', '2 3'])
    legend.forEach(([name, color, dash], i) => {
      const x = L + i * 120
      parts.push(`<line x1="${x}" x2="${x + 18}" y1="${H - 24}" y2="${H - 24}" stroke="${color}" stroke-width="2"${dash !== '' ? ` stroke-dasharray="${dash}"` : ''}/>`)
      parts.push(`<text x="${x + 22}" y="${H - 20}">${esc(name)}</text>`)
    })
  }

  // Panel 2: fraction of blocks readable over simulated days, one line per run.
  {
    const L = 620
    const R = W - 30
    const T = 80
    const Bt = H - 90
    const days = Math.max(1, ...avail.map(a => a.days))
    const minR = Math.min(1, ...avail.flatMap(a => a.samples.map(s => s.readable)), ...avail.map(a => 1 - a.analytic.unreadableWithRepair))
    // A linear axis from a round floor below the lowest point to 100%.
    const steps = [0.9999, 0.999, 0.995, 0.99, 0.98, 0.95, 0.9, 0.8, 0.5, 0]
    const lo = steps.find(s => s <= minR - (1 - minR) * 0.1) ?? 0
    const X = (d: number): number => L + (R - L) * d / days
    const Y = (v: number): number => Bt - (Bt - T) * (v - lo) / (1 - lo)
    parts.push(`<text x="${(L + R) / 2}" y="${T - 14}" text-anchor="middle" font-weight="bold">blocks readable (some up node holds them), with repair</text>`)
    for (let i = 0; i <= 5; i++) {
      const v = lo + (1 - lo) * i / 5
      parts.push(`<line x1="${L}" x2="${R}" y1="${Y(v).toFixed(1)}" y2="${Y(v).toFixed(1)}" stroke="#ddd"/>`)
      parts.push(`<text x="${L - 6}" y="${Y(v).toFixed(1)}" text-anchor="end" dominant-baseline="middle" fill="#555">${(v * 100).toFixed(lo >= 0.999 ? 3 : 2)}%</text>`)
    }
    for (let d = 0; d <= days; d++) {
      parts.push(`<text x="${X(d).toFixed(1)}" y="${Bt + 18}" text-anchor="middle" fill="#555">${d}</text>`)
    }
    parts.push(`<line x1="${L}" x2="${R}" y1="${Bt}" y2="${Bt}" stroke="#333"/>`)
    parts.push(`<text x="${(L + R) / 2}" y="${Bt + 36}" text-anchor="middle" fill="#555">simulated days</text>`)
    avail.forEach((a, i) => {
      const color = COLORS[i % COLORS.length]
      const p = a.samples.map(s => `${X(s.day).toFixed(1)},${Y(Math.max(lo, s.readable)).toFixed(1)}`)
      parts.push(`<polyline points="${p.join(' ')}" fill="none" stroke="${color}" stroke-width="1.5"/>`)
      const bound = 1 - a.analytic.unreadableWithRepair
      if (bound >= lo) parts.push(`<line x1="${L}" x2="${R}" y1="${Y(bound).toFixed(1)}" y2="${Y(bound).toFixed(1)}" stroke="${color}" stroke-dasharray="6 4"/>`)
      const x = L + (i % 3) * 150
      const y = H - 30 + Math.floor(i / 3) * 16
      parts.push(`<line x1="${x}" x2="${x + 18}" y1="${y - 4}" y2="${y - 4}" stroke="${color}" stroke-width="2"/>`)
      parts.push(`<text x="${x + 22}" y="${y}">${esc(`N=${a.n.toLocaleString('en')}, k=${a.k}`)}</text>`)
    })
    parts.push(`<text x="${R}" y="${H - 30}" text-anchor="end" fill="#555">dashed: bound 1 - p^k</text>`)
  }
  parts.push('</svg>')
  return parts.join('\n') + '\n'
}

// ---------------------------------------------------------------------------------------------

async function main (): Promise<void> {
  if (flag('--help')) {
    out('usage: node dist/bench/scale/run.js [--quick] [--json FILE] [--seed N] [--hops N:lookups,...] [--avail N:blocks:k:days,...] [--no-real] | --replot FILE.json')
    return
  }
  const replot = opt('--replot')
  if (replot !== undefined) {
    // Redraws the chart of an earlier run from its JSON (e.g. after real runs were added to it).
    const j = JSON.parse(fs.readFileSync(replot, 'utf8')) as { runs: ScaleRun[], availability: AvailabilityResult[], machine: { cores: number, kernel: string, node: string }, seed: number, quick: boolean }
    const svg = chartSvg('reef scale: simulated Kademlia lookups and block availability', `${j.machine.cores} cores, ${j.machine.kernel}, node ${j.machine.node}; seed ${j.seed}${j.quick ? '; --quick' : ''}`,
      j.runs, n => Math.log2(n) / Math.log2(40), j.availability)
    const svgPath = replot.replace(/\.json$/i, '') + '.svg'
    fs.writeFileSync(svgPath, svg)
    out(`wrote ${svgPath}`)
    return
  }
  const quick = flag('--quick')
  const seed = Number(opt('--seed') ?? '1')
  const jsonPath = path.resolve(opt('--json') ?? path.join(ROOT, 'bench', 'out', quick ? 'scale-quick.json' : 'scale.json'))
  const hopsList = opt('--hops') !== undefined
    ? parseList(opt('--hops') as string, 2).map(([n, lookups]) => ({ n, lookups }))
    : quick ? [{ n: 1000, lookups: 1000 }, { n: 10000, lookups: 1000 }] : [{ n: 1000, lookups: 3000 }, { n: 10000, lookups: 3000 }, { n: 100000, lookups: 2000 }]
  const availList = opt('--avail') !== undefined
    ? parseList(opt('--avail') as string, 4).map(([n, blocks, k, days]) => ({ n, blocks, k, days }))
    : quick ? [{ n: 2000, blocks: 2000, k: 3, days: 1 }, { n: 2000, blocks: 2000, k: 5, days: 1 }] : [{ n: 10000, blocks: 20000, k: 3, days: 7 }, { n: 10000, blocks: 20000, k: 5, days: 7 }]

  // A 100,000-node availability run fills every node's table (~25 KB each in RoutingTable's maps):
  // near node's default 4 GiB heap limit the collector thrashes, so such a run restarts itself
  // with a 5.5 GiB limit (RSS stays under ~6 GiB).
  if (availList.some(a => a.n >= 50_000) && v8.getHeapStatistics().heap_size_limit < 5 * 2 ** 30 && process.env.REEF_SCALE_CHILD === undefined) {
    const r = spawnSync(process.execPath, ['--max-old-space-size=5632', ...process.execArgv, process.argv[1], ...args], { stdio: 'inherit', env: { ...process.env, REEF_SCALE_CHILD: '1' } })
    process.exitCode = r.status ?? 1
    return
  }
  const m = machine(process.cwd())
  const command = commandLine()
  printMachine(m, command, out)

  const walk = opt('--walk') !== undefined ? Number(opt('--walk')) : undefined
  if (walk !== undefined && !(Number.isInteger(walk) && walk >= 1)) throw new Error(`bad --walk ${String(opt('--walk'))}`)
  const sim: SimReport = await runSim({ seed, hops: hopsList, availability: availList, walkSize: walk, log })
  const real = flag('--no-real') ? { runs: [] } : await realRuns(quick)
  if (real.error !== undefined) log(`real runs (bench/scale/real.ts) failed: ${real.error}`)

  out(`\nchurn model: ${sim.churn}`)
  out(`source: ${sim.churnSource}`)

  out(`\nLookup hops against log N (simulated, every node up; lookups of random keys from random nodes; alpha 3, buckets of 20, walks to the ${sim.hops[0]?.walkSize ?? 20} closest; RTT log-normal median 50 ms)`)
  out(table(['N', 'lookups', 'hops p50', 'p95', 'max', 'mean', 'log2(N)/log2(40)', 'ceil(log2 N)', 'queries', 'true 3 found', 'true walk exact', 'latency p50', 'p95'],
    sim.hops.map(h => [h.n.toLocaleString('en'), String(h.lookups), String(h.hopsP50), String(h.hopsP95), String(h.hopsMax), num(h.hopsMean), num(h.estimate), String(h.paperBound),
      num(h.queriesMean, 1), pct(h.getSuccess, 1), pct(h.exactWalk, 1), `${h.latencyP50Ms.toFixed(0)} ms`, `${h.latencyP95Ms.toFixed(0)} ms`])))
  out('hops: requests on the path to the closest node found, a contact from the caller\'s own table counting 1 (Walk.hops)')
  out(`anchors: ${ANCHORS.ipfs}; ${ANCHORS.cfs}`)

  if (sim.availability.length > 0) {
    out('\nAvailability under churn, with repair (readable: some up node holds the block; lost: no node, up or down, holds it)')
    out(table(['N', 'B', 'k', 'days', 'readable mean', 'min', 'bound 1-p^k', 'no repair 1-(1-a)^k', 'lost', 'expected lost', 'holders (up)', 'up nodes'],
      sim.availability.map(a => [a.n.toLocaleString('en'), a.blocks.toLocaleString('en'), String(a.k), String(a.days), pct(a.readableMean, 4), pct(a.readableMin, 3),
        pct(1 - a.analytic.unreadableWithRepair, 4), pct(1 - a.analytic.unreadableNoRepair, 2), String(a.lost), sci(a.analytic.expectedLost),
        `${num(a.holdersMean, 1)} (${num(a.upHoldersMean, 1)})`, pct(a.upFractionMean, 1)])))
    const a0 = sim.availability[0]
    out(`a = ${a0.analytic.availability.toFixed(3)} (mean node availability); p = ${a0.analytic.downWithinInterval.toFixed(3)} (an up node goes down within one ${a0.repairIntervalS / 3600} h repair interval); ` +
      'bound 1-p^k: the k up holders a repair leaves all go down before any repairs again; expected lost: B x intervals x (1 - e^(-dT))^k')
    out('\nRepair traffic (every up node, hourly and staggered, checks the blocks it holds against their k closest by a Regions lookup: planRepair)')
    out(table(['N', 'k', 'passes', 'lookups/node/h', 'blocks/node/h', 'bytes/node/h', 'blocks/up node/h', 'pushed', 'pushed bytes', 'failed pushes', 'FIND_NODE/node/h', 'put lookups (hits)', 'run', 'RSS'],
      sim.availability.map(a => [a.n.toLocaleString('en'), String(a.k), String(a.repair.passes), num(a.repair.lookupsPerNodeHour), num(a.repair.blocksPerNodeHour, 3), bytes(a.repair.bytesPerNodeHour),
        num(a.repair.blocksPerUpNodeHour, 3), String(a.repair.pushedBlocks), bytes(a.repair.pushedBytes), String(a.repair.failedPushes), num(a.asksPerNodeHour, 1),
        `${a.put.lookups} (${a.put.hits})`, `${a.runSeconds.toFixed(0)} s`, `${a.rssMiB.toFixed(0)} MiB`])))
    out('bytes assume 256 KiB blocks; bandwidth is not modelled (a push takes one RTT)')
  }

  const runs: ScaleRun[] = [...sim.hops.map(hopsRun), ...real.runs]
  if (real.runs.length > 0) {
    out('\nReal-network runs (bench/scale/real.ts)')
    out(table(['N', 'hops p50', 'p95', 'get success'], real.runs.map(r => [String(r.n), String(r.hopsP50), String(r.hopsP95), pct(r.getSuccess, 1)])))
  }
  const elapsed = (Date.now() - started) / 1000
  const maxRssMiB = process.resourceUsage().maxRSS / 1024
  out(`\nelapsed ${elapsed.toFixed(0)} s; max RSS ${maxRssMiB.toFixed(0)} MiB`)

  const json = {
    benchmark: 'reef scale',
    date: new Date().toISOString(),
    command,
    machine: m,
    quick,
    seed,
    churn: sim.churn,
    churnSource: sim.churnSource,
    hopsFormula: 'estimate = log2(N) / log2(2 * bucketSize) (each hop gains about log2(bucketSize) + 1 bits; the caller\'s own table is hop 1); paper bound = ceil(log2 N)',
    anchors: ANCHORS,
    runs,
    availability: sim.availability,
    realError: real.error,
    elapsedSeconds: elapsed,
    maxRssMiB
  }
  const svg = chartSvg('reef scale: simulated Kademlia lookups and block availability', `${m.cores} cores, ${m.kernel}, node ${m.node}; seed ${seed}${quick ? '; --quick' : ''}`,
    runs, n => Math.log2(n) / Math.log2(40), sim.availability)
  const svgPath = writeResults(jsonPath, json, svg)
  out(`wrote ${jsonPath} and ${svgPath}`)
}

main().catch(err => {
  process.stderr.write(`bench:scale failed: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
