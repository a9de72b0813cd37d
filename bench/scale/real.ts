/**
 * Real-network runs for `npm run bench:scale` (issue 10, item 7 "Real nodes"): N real reef DHT
 * nodes (DhtNode: libp2p with noise, yamux, identify, kad-dht for heads, reef's block protocol,
 * its Kademlia router, region-batched placement, replicator and connection trimmer) in one
 * process on libp2p's in-memory transport (@libp2p/memory), each with its own LMDB store
 * (noSync) in a temp directory. The transport is the only difference from TCP.
 *
 * Each run is a child process of its own (this file with --child), so that its RSS and CPU are
 * the network's alone (bench:scale's simulation, run before in the same process, leaves GiBs of
 * heap behind), its heap limit fits N, a run that overruns its time is killed, and its temp
 * directory is removed by the parent whatever happened. Per run, in this order:
 *   start    node 0, then the others with bounded concurrency (START_WIDTH), each joining
 *            through a random node already up; then every node looks itself up once more
 *            (router.refresh(true), 4 at a time) to settle. Start cost per node: wall and CPU.
 *   idle     after a quiet pause (the trimmer closes idle connections after 5 s), process CPU
 *            over IDLE_S seconds divided by N (% of one core per node), process RSS / N, and
 *            open connections per node (sampled each second). Stores are empty here.
 *   lookups  random keys from random nodes: hops of router.walk (Walk.hops, the simulator's
 *            definition: requests on the path to the closest node found, the caller's own table
 *            counting 1), peers asked, latency, and whether the walk found the true k closest.
 *   put      a file (fileFromBytes) through one node P and waitReplicated: MB/s (10^6 bytes)
 *            until every block is acknowledged on its k closest; lookups it cost (P's
 *            placement.stats.lookups delta) against its blocks; blocks not on their true k.
 *            Then a repair set of small random blocks through another node Q, also replicated.
 *   gets     (node, block) pairs of the file's blocks, each from a node that does not hold the
 *            block, through node.store.get (cached region or lookup, then the holders, within the
 *            fetch deadline): success fraction and latency.
 *   repair   30% of the nodes stopped at once: Q always, P never (the file has a live copy, so
 *            none of it may be lost; the repair set's publisher is gone, so a repair-set block
 *            is lost when every other holder fell). Blocks lost against the analytic figure:
 *            expected = sum over blocks of P(all its holders but Q among the other victims) =
 *            C(V-1, h)/C(N-2, h) for h holders, and the brief's bound B * C(0.3N, k)/C(N, k)
 *            (k replicas, publisher gone). Then the time until every block with a live holder is
 *            on its k closest live nodes (bounded wait), and the bytes repair moved (copies
 *            gained by live nodes since the kill, times block size; plus the pushes counted by
 *            the replicators). Then gets again from the survivors (dead contacts still in tables).
 *
 * What fits one process (measured on this 2-core, 24 GiB machine; see the runs' startMsPerNode
 * and rssMiBPerNode): N = 16 and 64 at 64 connections, and 64 at 12. At 256 (at 64 or at 12
 * connections) the one thread saturated: starts took 2-3 s of CPU per node, a settle did not end
 * in 8 minutes, a put's pushes timed out. 256 runs over host processes instead (shards.ts).
 * 1,000 is not run by default: the largest run's figures are extrapolated (start minutes and
 * RSS) and reported as `at1000`; REEF_SCALE_REAL=1000 runs it anyway.
 *
 *   realRuns({ quick, log })       what bench/scale/run.ts awaits
 *   node dist/bench/scale/real.js [--quick] [--runs 16,64,256,64:12] [--json FILE] [--tcp]
 *   REEF_SCALE_REAL=16,64:12       replaces the list under bench:scale (N or N:maxConnections;
 *                                  'off' runs none)
 *   REEF_SCALE_SHARDS=256:12       replaces the runs over host processes (bench/scale/shards.ts; 'off' runs none)
 *   REEF_SCALE_REAL_TCP=1          adds a small run of separate `reef node` processes over TCP
 *                                  on 127.0.0.1 (bench/scale/real-proc.ts)
 *   REEF_SCALE_REAL_IDLE_ONLY=1    ends each run after its idle measurement (start cost, idle CPU, RSS)
 *   REEF_SCALE_REAL_IDLE_PROFILE=P writes a CPU profile of a second idle window, P-N<n>-c<max>.cpuprofile
 *   REEF_SCALE_REAL_PUT_PROFILE=P  writes a CPU profile of the put phase, P-N<n>-c<max>-put.cpuprofile
 *   REEF_SCALE_REAL_NODE_ARGS=...  extra node flags for each run's child process
 */
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Session } from 'node:inspector/promises'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { type Block, blockKey, cidFor, makeBlock, RAW } from '../../src/block/index.js'
import { DhtNode } from '../../src/dht/index.js'
import { kadId } from '../../src/dht/placement.js'
import { closestK } from '../../src/dht/regions.js'
import { generateKeyPair } from '../../src/crypto/sign.js'
import { decodeHead, encodeHead, HeadBook, signHead } from '../../src/naming/index.js'
import { FileReader, fileFromBytes } from '../../src/object/file.js'
import { LmdbBlockStore, LmdbHeadStore, LmdbStore } from '../../src/store/lmdb.js'
import { table } from '../phases/report.js'
import type { ScaleRun } from './run.js'

const THIS = fileURLToPath(import.meta.url)
const K = 3
const KiB = 1024
const MiB = 1024 * 1024

/** One in-process run. */
export interface RealSpec {
  n: number
  maxConnections: number
  /** Bytes of the file put through one node. */
  fileBytes: number
  /** Small random blocks put through another node, whose publisher is among the stopped. */
  repairBlocks: number
  repairBlockBytes: number
  lookups: number
  gets: number
  /** Nodes started at once (each joins through a random node already up). */
  startWidth: number
  idleS: number
  repairIntervalMs: number
  fetchDeadlineMs: number
  restoreTimeoutMs: number
  /** The child is killed after this long (its temp dir is removed all the same). */
  runTimeoutMs: number
}

export function specFor (n: number, maxConnections: number, quick: boolean): RealSpec {
  return {
    n,
    maxConnections,
    fileBytes: quick ? 1 * MiB : 8 * MiB,
    repairBlocks: quick ? 128 : 256,
    repairBlockBytes: 4 * KiB,
    lookups: quick ? 60 : n >= 256 ? 100 : 200,
    gets: quick ? 60 : n >= 256 ? 100 : 200,
    startWidth: 4,
    idleS: 10,
    // Repair passes every 30 s (the default is 10 min): the time to restore k after the kill is
    // bounded by this period for the nodes that learn of a death only from a failed request.
    repairIntervalMs: 30_000,
    fetchDeadlineMs: 15_000,
    restoreTimeoutMs: quick ? 180_000 : 420_000,
    runTimeoutMs: (quick ? 10 : 15) * 60_000 + n * 6_000
  }
}

/**
 * The default list: N = 16 only with --quick; 16 and 64 at 64 connections and 64 at 12. 256
 * nodes do not fit one process (its one thread saturates): they run over host processes
 * (bench/scale/shards.ts, `defaultShardRuns`).
 */
export function defaultRuns (quick: boolean): Array<[number, number]> {
  return quick ? [[16, 64]] : [[16, 64], [64, 64], [64, 12]]
}

/** Runs over host processes (N:maxConnections, one host per core): 256 at 12, not with --quick. */
export function defaultShardRuns (quick: boolean): Array<[number, number]> {
  return quick ? [] : [[256, 12]]
}

function parseRuns (s: string): Array<[number, number]> {
  return s.split(',').filter(x => x !== '').map(x => {
    const [n, c] = x.split(':').map(Number)
    const max = c ?? 64
    if (!Number.isInteger(n) || n < 4 || !Number.isInteger(max) || max < 4) throw new Error(`bad real run "${x}" (want N or N:maxConnections, N >= 4)`)
    return [n, max]
  })
}

// ---------------------------------------------------------------------------------------------
// Helpers

export const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

export function quantile (xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]
}
export const mean = (xs: number[]): number => xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length
export const round = (x: number, d = 2): number => Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : x

/** `n` items spread evenly over `list` (all of them for n >= its length). */
export function spread<T> (list: T[], n: number): T[] {
  if (n >= list.length) return list
  return Array.from({ length: n }, (_, i) => list[Math.floor(i * list.length / n)])
}

/** Runs `fn` over `items`, `width` at a time. */
export async function pool<T> (items: T[], width: number, fn: (x: T, i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, async () => {
    while (next < items.length) {
      const i = next++
      await fn(items[i], i)
    }
  }))
}

/** Rejects after `ms` (the work itself goes on; every wait of the run is bounded this way). */
/** One try of a get or a head fetch, as both bench/scale runners count it. */
export interface Try { ok: boolean, ms: number, error?: string }
export interface Tally { ok: number, tried: number, ms: number[], errors: string[] }

/** Runs `one` over `items` (4 at once) and tallies successes, latencies and errors. */
export async function tally<T> (items: T[], one: (x: T) => Promise<Try>): Promise<Tally> {
  const out: Tally = { ok: 0, tried: items.length, ms: [], errors: [] }
  await pool(items, 4, async x => {
    const r = await one(x).catch((err: Error): Try => ({ ok: false, ms: NaN, error: err.message }))
    if (Number.isFinite(r.ms)) out.ms.push(r.ms)
    if (r.ok) out.ok++
    else if (r.error !== undefined) out.errors.push(r.error)
  })
  return out
}

/**
 * Up to `count` distinct random (reader, block) pairs where the reader does not hold the block
 * (`holds`), drawn from at most 4 * count tries.
 */
export function readPairs<M extends { i: number }> (among: M[], blocks: number, count: number, holds: (m: M, j: number) => boolean): Array<[M, number]> {
  const pairs: Array<[M, number]> = []
  const seen = new Set<string>()
  for (let g = 0; g < count * 4 && pairs.length < count; g++) {
    const j = crypto.randomInt(blocks)
    const m = among[crypto.randomInt(among.length)]
    const id = `${m.i}:${j}`
    if (seen.has(id) || holds(m, j)) continue
    seen.add(id)
    pairs.push([m, j])
  }
  return pairs
}

/** A CPU profile of this process from now until `stop(file)`, which writes it as a .cpuprofile. */
export async function cpuProfile (): Promise<{ stop: (file: string) => Promise<string> }> {
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.start')
  return {
    stop: async (file) => {
      const { profile } = await session.post('Profiler.stop')
      session.disconnect()
      fs.writeFileSync(file, JSON.stringify(profile))
      return file
    }
  }
}

export async function bounded<T> (what: string, ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no end after ${ms} ms`)), ms) })])
  } finally {
    if (timer !== undefined) clearTimeout(timer)
  }
}

/** C(n, r) as a float (ratios of these are what matter). */
function choose (n: number, r: number): number {
  if (r < 0 || r > n) return 0
  let x = 1
  for (let i = 0; i < r; i++) x = x * (n - i) / (i + 1)
  return x
}

const cpuMs = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000 }
const gc = (): void => { (globalThis as { gc?: () => void }).gc?.() }

function shuffle<T> (xs: T[]): T[] {
  const a = [...xs]
  for (let i = a.length - 1; i > 0; i--) {
    const j = crypto.randomInt(i + 1)
    ;[a[i], a[j]] = [a[j], a[i]]
  }
  return a
}

// ---------------------------------------------------------------------------------------------
// The network (the pattern of test/helpers/memnet.ts; bench code does not import from test/)

export interface Member {
  i: number
  node: DhtNode
  db: LmdbStore
  /** The node's head book (where a head it publishes is kept, so that it republishes it). */
  book: HeadBook
  alive: boolean
  stop: () => Promise<void>
}

/** What a node is started with (a RealSpec has it; so do bench/scale/shards.ts's hosts). */
export type MemberOptions = Pick<RealSpec, 'maxConnections' | 'repairIntervalMs' | 'fetchDeadlineMs'> & { transport?: 'memory' | 'tcp' }

export async function startMember (base: string, i: number, bootstrap: string[], spec: MemberOptions, log?: (line: string) => void): Promise<Member> {
  const dir = path.join(base, `n${i}`)
  fs.mkdirSync(dir, { recursive: true })
  const db = new LmdbStore({ path: dir, noSync: true })
  const headStore = new LmdbHeadStore(db)
  const book = new HeadBook(headStore)
  let node: DhtNode
  try {
    node = await DhtNode.start(crypto.randomBytes(32), new LmdbBlockStore(db), book, headStore, {
      listen: [spec.transport === 'tcp' ? '/ip4/127.0.0.1/tcp/0' : `/memory/reef-scale-${process.pid}-${i}`],
      bootstrap,
      transport: spec.transport ?? 'memory',
      k: K,
      maxConnections: spec.maxConnections,
      repairIntervalMs: spec.repairIntervalMs,
      fetchDeadlineMs: spec.fetchDeadlineMs,
      log
    })
  } catch (err) {
    await db.close().catch(() => {})
    throw err
  }
  let stopped: Promise<void> | undefined
  const m: Member = {
    i,
    node,
    db,
    book,
    alive: true,
    // A stop is a crash as the others see it: libp2p goes first (listener and connections gone,
    // so the node neither answers nor serves from then on), then the node's own parts wind down.
    // The store is closed only once the node has stopped: a write after close throws
    // asynchronously inside lmdb, and a slow stop under load is not worth a crashed run.
    stop: async () => {
      m.alive = false
      stopped ??= (async () => {
        await bounded(`stop libp2p of node ${i}`, 15_000, Promise.resolve(node.libp2p.stop())).catch(() => {})
        const done = await bounded(`stop node ${i}`, 60_000, node.stop()).then(() => true, () => false)
        if (done) await db.close().catch(() => {})
      })()
      await stopped
    }
  }
  return m
}

/**
 * Work the whole network did, summed over its nodes: what a phase cost beyond the node that ran
 * it (a put's pushes make receivers meet a new peer, which may drop their cached regions and
 * start their repair passes).
 */
function networkWork (members: Member[]): Record<string, number> {
  const w: Record<string, number> = { routerLookups: 0, routerQueries: 0, routerAdded: 0, routerRemoved: 0, regionLookups: 0, regionsDropped: 0, repairPasses: 0, repaired: 0, trimmed: 0 }
  for (const m of members) {
    if (!m.alive) continue
    const r = m.node.router.status()
    const p = m.node.placement.stats
    const q = m.node.replicator.status()
    w.routerLookups += r.lookups
    w.routerQueries += r.queries
    w.routerAdded += r.added
    w.routerRemoved += r.removed
    w.regionLookups += p.lookups
    w.regionsDropped += p.dropped
    w.repairPasses += q.repairPasses
    w.repaired += q.repaired
    w.trimmed += m.node.connections.stats.trimmed
  }
  return w
}

function workSince (before: Record<string, number>, members: Member[]): Record<string, number> {
  const now = networkWork(members)
  return Object.fromEntries(Object.entries(now).map(([k, v]) => [k, v - (before[k] ?? 0)]))
}

/** What one run measured: a ScaleRun row (kind 'real'). */
async function runOne (spec: RealSpec, base: string, log: (s: string) => void, save: (partial: ScaleRun) => void = () => {}): Promise<ScaleRun> {
  /** Nodes in the run: spec.n, less any that did not start in time (left out, and counted). */
  let N = spec.n
  // What is measured so far, saved after each phase: a run stopped for time still reports it.
  const partial: ScaleRun = { kind: 'real', n: N, transport: 'memory', maxConnections: spec.maxConnections, k: K, hopsP50: NaN, hopsP95: NaN, getSuccess: NaN, incomplete: true }
  const progress = (x: Record<string, unknown>): void => { Object.assign(partial, x, { loadAvg: os.loadavg().map(v => round(v, 2)), runSeconds: round((Date.now() - t00) / 1000, 1) }); save(partial) }
  const t00 = Date.now()
  const nodeLog = { lines: 0, last: [] as string[] }
  const onNodeLog = (line: string): void => {
    nodeLog.lines++
    nodeLog.last.push(line)
    if (nodeLog.last.length > 5) nodeLog.last.shift()
    if (process.env.REEF_SCALE_REAL_VERBOSE === '1') log(`node: ${line}`)
  }
  const members: Member[] = []
  // Event-loop delay: how late timers and I/O callbacks run (the one thread carries all N nodes;
  // when it is saturated, every node's requests and deadlines slip together).
  const loop = monitorEventLoopDelay({ resolution: 20 })
  loop.enable()
  const loopMs = (h: { percentile: (p: number) => number, max: number }): { p50: number, p99: number, max: number } =>
    ({ p50: round(h.percentile(50) / 1e6, 1), p99: round(h.percentile(99) / 1e6, 1), max: round(h.max / 1e6, 1) })
  const cpu00 = cpuMs()
  try {
    // ---- start ----------------------------------------------------------------------------
    const cpuStart = cpuMs()
    const startMs: number[] = []
    let s0 = Date.now()
    members.push(await startMember(base, 0, [], spec, onNodeLog))
    startMs.push(Date.now() - s0)
    const up: Member[] = [members[0]]
    let lastNote = Date.now()
    let startFailures = 0
    await pool(Array.from({ length: N - 1 }, (_x, j) => j + 1), spec.startWidth, async i => {
      const via = up[crypto.randomInt(up.length)]
      const t = Date.now()
      const starting = startMember(base, i, via.node.addrs(), spec, onNodeLog)
      let m: Member
      try {
        m = await bounded(`start node ${i}`, 120_000, starting)
      } catch (err) {
        // A start that overruns (the one thread saturated) leaves the node out of the run, and
        // stops it if it comes up later; a few such are reported, many end the run.
        startFailures++
        log(`node ${i} left out: ${(err as Error).message}`)
        void starting.then(async late => { await late.stop() }, () => {})
        if (startFailures > Math.max(2, spec.n * 0.05)) throw new Error(`${startFailures} nodes did not start within 120 s`)
        return
      }
      startMs.push(Date.now() - t)
      members[i] = m
      up.push(m)
      if (Date.now() - lastNote > 15_000) {
        lastNote = Date.now()
        const rss = process.memoryUsage().rss
        log(`${up.length} of ${N} nodes up (${((Date.now() - t00) / 1000).toFixed(0)} s; RSS ${(rss / MiB).toFixed(0)} MiB)`)
        progress({ startedNodes: up.length, startSecondsSoFar: round((Date.now() - t00) / 1000, 1), rssMiBPerNode: round(rss / MiB / up.length, 1), startWallP50Ms: quantile(startMs, 0.5), startWallP95Ms: quantile(startMs, 0.95) })
      }
    })
    const started = members.filter(m => m !== undefined)
    members.length = 0
    members.push(...started)
    N = members.length
    partial.n = N
    const startSeconds = (Date.now() - t00) / 1000
    const startCpuMs = cpuMs() - cpuStart
    progress({ startFailures, startSeconds: round(startSeconds, 1), startMsPerNode: round(startSeconds * 1000 / N, 0), startCpuMsPerNode: round(startCpuMs / N, 0), startWallP50Ms: quantile(startMs, 0.5), startWallP95Ms: quantile(startMs, 0.95), rssMiBPerNode: round(process.memoryUsage().rss / MiB / N, 1) })
    log(`${N} nodes up in ${startSeconds.toFixed(1)} s (${(startCpuMs / N).toFixed(0)} ms CPU per node); settling`)

    s0 = Date.now()
    const cpuSettle = cpuMs()
    await bounded('settle', 60_000 + N * 2_000, pool(members, 4, async m => { await m.node.router.refresh(true) }))
    const settleSeconds = (Date.now() - s0) / 1000
    const settleCpuMs = cpuMs() - cpuSettle
    const tables = members.map(m => m.node.router.table.size)
    progress({ settleSeconds: round(settleSeconds, 1), tableMin: Math.min(...tables), tableMax: Math.max(...tables) })
    log(`settled in ${settleSeconds.toFixed(1)} s; routing tables ${Math.min(...tables)}..${Math.max(...tables)} of ${N - 1} peers`)

    // ---- idle -----------------------------------------------------------------------------
    await sleep(6_000)
    gc()
    const loopBeforeIdle = loopMs(loop)
    loop.reset()
    const openSamples: number[][] = []
    const c0 = cpuMs()
    const i0 = Date.now()
    for (let s = 0; s < spec.idleS; s++) {
      await sleep(1000)
      openSamples.push(members.map(m => m.node.libp2p.getConnections().length))
    }
    const idleCpuPctPerNode = (cpuMs() - c0) / (Date.now() - i0) * 100 / N
    const loopIdle = loopMs(loop)
    loop.reset()
    gc()
    const mem = process.memoryUsage()
    const idleOpen = openSamples.flat()
    progress({ idleCpuPctPerNode: round(idleCpuPctPerNode, 3), rssMiBPerNode: round(mem.rss / MiB / N, 1), heapMiBPerNode: round(mem.heapUsed / MiB / N, 1), connIdleMean: round(mean(idleOpen), 1), connIdleMax: Math.max(...idleOpen), loopDelayIdleMs: loopIdle })
    const profilePrefix = process.env.REEF_SCALE_REAL_IDLE_PROFILE
    if (profilePrefix !== undefined && profilePrefix !== '') {
      // Where idle CPU goes: a CPU profile of a second idle window (not the measured one, which
      // the profiler would inflate), written as PREFIX-N<n>-c<max>.cpuprofile.
      const file = `${profilePrefix}-N${N}-c${spec.maxConnections}.cpuprofile`
      const profiling = await cpuProfile()
      await sleep(spec.idleS * 1000)
      await profiling.stop(file)
      log(`idle CPU profile written to ${file}`)
    }
    log(`idle: ${idleCpuPctPerNode.toFixed(3)}% of a core per node (event-loop delay p99 ${loopIdle.p99} ms), RSS ${(mem.rss / MiB / N).toFixed(1)} MiB per node, ${mean(idleOpen).toFixed(1)} connections per node (max ${Math.max(...idleOpen)})`)

    if (process.env.REEF_SCALE_REAL_IDLE_ONLY === '1') return { ...partial, incomplete: undefined, idleOnly: true }

    // ---- lookups --------------------------------------------------------------------------
    const everyone = members.map(m => m.node.router.self)
    const hops: number[] = []
    const lookupMs: number[] = []
    const asked: number[] = []
    let trueK = 0
    let lookupFailed = 0
    await pool(Array.from({ length: spec.lookups }, () => crypto.randomBytes(32)), 4, async key => {
      const m = members[crypto.randomInt(N)]
      const target = kadId(key)
      const t = Date.now()
      try {
        const w = await m.node.router.walk(target, AbortSignal.timeout(30_000))
        lookupMs.push(Date.now() - t)
        hops.push(w.hops)
        asked.push(w.queries)
        const truth = closestK(target, everyone, K).map(p => p.key).join()
        const got = closestK(target, [m.node.router.self, ...w.peers], K).map(p => p.key).join()
        if (truth === got) trueK++
      } catch {
        lookupFailed++
      }
    })
    progress({ hopsP50: quantile(hops, 0.5), hopsP95: quantile(hops, 0.95), lookupTrueK: trueK / spec.lookups, lookupLatencyP50Ms: quantile(lookupMs, 0.5), lookupLatencyP95Ms: quantile(lookupMs, 0.95) })
    log(`lookups: hops p50 ${quantile(hops, 0.5)} p95 ${quantile(hops, 0.95)}; true ${K} closest found by ${trueK} of ${spec.lookups}`)

    // ---- put ------------------------------------------------------------------------------
    const P = members[crypto.randomInt(N)]
    const bytes = crypto.randomBytes(spec.fileBytes)
    const fileBlocks: Block[] = []
    const lk0 = { ...P.node.placement.stats }
    const cpuPut = cpuMs()
    s0 = Date.now()
    const work0 = networkWork(members)
    const putProfile = process.env.REEF_SCALE_REAL_PUT_PROFILE
    const putProfiling = putProfile !== undefined && putProfile !== '' ? await cpuProfile() : undefined
    const root = await fileFromBytes(bytes, async bs => { fileBlocks.push(...bs); await P.node.store.putMany(bs) })
    const rep = await P.node.replicator.waitReplicated(fileBlocks.map(b => blockKey(b.cid)), 120_000)
    if (putProfiling !== undefined) {
      const file = `${String(putProfile)}-N${N}-c${spec.maxConnections}-put.cpuprofile`
      await putProfiling.stop(file)
      log(`put CPU profile written to ${file}`)
    }
    const putSeconds = (Date.now() - s0) / 1000
    const putCpuMs = cpuMs() - cpuPut
    const putLookups = P.node.placement.stats.lookups - lk0.lookups
    const putHits = P.node.placement.stats.hits - lk0.hits
    const trueHolders = (key: Uint8Array, among: Member[]): Member[] => closestK(kadId(key), among.map(m => ({ m, kad: m.node.router.self.kad })), K).map(x => x.m)
    let misplaced = 0
    for (const b of fileBlocks) for (const m of trueHolders(blockKey(b.cid), members)) if (!m.node.store.local.hasSync(b.cid)) misplaced++
    const putMBps = spec.fileBytes / 1e6 / putSeconds
    const putWork = workSince(work0, members)
    log(`put: network-wide work during it: ${JSON.stringify(putWork)}`)
    progress({ putWork, putBytes: spec.fileBytes, putBlocks: fileBlocks.length, putSeconds: round(putSeconds, 3), putMBps: round(putMBps), putCpuSeconds: round(putCpuMs / 1000), putLookups, putShort: rep.blocksShort })
    log(`put: ${(spec.fileBytes / MiB).toFixed(0)} MiB (${fileBlocks.length} blocks) replicated in ${putSeconds.toFixed(2)} s (${putMBps.toFixed(1)} MB/s; ${(putCpuMs / 1000).toFixed(1)} s of CPU), ${putLookups} lookups, ${rep.blocksShort} short, ${misplaced} replicas off their true k`)

    let Q = members[crypto.randomInt(N)]
    while (Q === P) Q = members[crypto.randomInt(N)]
    const repairSet = Array.from({ length: spec.repairBlocks }, () => makeBlock(crypto.randomBytes(spec.repairBlockBytes), RAW))
    const lq0 = Q.node.placement.stats.lookups
    s0 = Date.now()
    await Q.node.store.putMany(repairSet)
    const repQ = await Q.node.replicator.waitReplicated(repairSet.map(b => blockKey(b.cid)), 120_000)
    const repairSetSeconds = (Date.now() - s0) / 1000
    const repairSetLookups = Q.node.placement.stats.lookups - lq0
    log(`repair set: ${repairSet.length} blocks of ${spec.repairBlockBytes / KiB} KiB replicated in ${repairSetSeconds.toFixed(2)} s with ${repairSetLookups} lookups, ${repQ.blocksShort} short`)

    // ---- gets -----------------------------------------------------------------------------
    const readers = members.filter(m => m !== P)
    const gets = async (among: Member[], count: number, blocks: Block[]): Promise<Tally> =>
      await tally(readPairs(among, blocks.length, count, (m, j) => m.node.store.local.hasSync(blocks[j].cid)), async ([m, j]) => {
        const t = Date.now()
        try {
          const d = await bounded('get', spec.fetchDeadlineMs + 5_000, m.node.store.get(blocks[j].cid))
          const same = Buffer.compare(Buffer.from(d), Buffer.from(blocks[j].bytes)) === 0
          return { ok: same, ms: Date.now() - t, error: same ? undefined : `node ${m.i}: bytes differ` }
        } catch (err) {
          return { ok: false, ms: Date.now() - t, error: `node ${m.i}: ${(err as Error).message}` }
        }
      })
    const g1 = await gets(readers, spec.gets, fileBlocks)
    progress({ getSuccess: g1.tried === 0 ? NaN : g1.ok / g1.tried, gets: g1.tried, getLatencyP50Ms: quantile(g1.ms, 0.5), getLatencyP95Ms: quantile(g1.ms, 0.95), getFailures: g1.errors.slice(0, 5) })
    log(`gets: ${g1.ok} of ${g1.tried} from nodes without the block; latency p50 ${quantile(g1.ms, 0.5)} ms p95 ${quantile(g1.ms, 0.95)} ms${g1.errors.length > 0 ? `; e.g. ${g1.errors.slice(0, 3).join('; ')}` : ''}`)
    // One whole-file read through a node that holds none of it (the tree walk included).
    let fileRead: { ok: boolean, seconds: number, error?: string } | undefined
    {
      const r = readers.find(m => fileBlocks.every(b => !m.node.store.local.hasSync(b.cid))) ?? readers[0]
      const t = Date.now()
      try {
        const got = await bounded('file read', 120_000, new FileReader(root.cid as NonNullable<typeof root.cid>, r.node.store).read(0, bytes.length))
        fileRead = { ok: Buffer.compare(Buffer.from(got), bytes) === 0, seconds: (Date.now() - t) / 1000 }
      } catch (err) {
        fileRead = { ok: false, seconds: (Date.now() - t) / 1000, error: (err as Error).message }
      }
      log(`whole-file read through node ${r.i}: ${fileRead.ok ? 'ok' : 'FAILED ' + (fileRead.error ?? '')} in ${fileRead.seconds.toFixed(2)} s`)
    }

    // ---- heads (kad-dht records, issue 10 item 6) -------------------------------------------
    // P publishes a signed head (seq 1, then seq 2) of a file system of its own; up to 16 other
    // nodes spread over the network fetch it with fetchHead (kad-dht's GET_VALUE walk, under the
    // same connection bound). A fetch counts when it returns the newest seq. Again after the kill.
    const headKeys = generateKeyPair()
    const h1 = signHead(headKeys, 'scale', cidFor(crypto.randomBytes(32)), 1n)
    const aguidOfHead = h1.aguid
    const headReaders = spread(readers, Math.min(16, readers.length))
    const fetchHeads = async (from: Member[], seq: bigint): Promise<Tally> =>
      await tally(from, async m => {
        const t = Date.now()
        const got = await m.node.fetchHead(aguidOfHead, 20_000).catch(() => undefined)
        return { ok: got !== undefined && decodeHead(got).seq === seq, ms: Date.now() - t }
      })
    await P.book.accept(encodeHead(h1), aguidOfHead).catch(() => {})
    let t1 = Date.now()
    const acks1 = await P.node.publishHead(aguidOfHead, encodeHead(h1), 30_000)
    const publishMs = Date.now() - t1
    const hf1 = await fetchHeads(headReaders, 1n)
    const h2 = signHead(headKeys, 'scale', cidFor(crypto.randomBytes(32)), 2n)
    await P.book.accept(encodeHead(h2), aguidOfHead).catch(() => {})
    t1 = Date.now()
    const acks2 = await P.node.publishHead(aguidOfHead, encodeHead(h2), 30_000)
    const publish2Ms = Date.now() - t1
    const hf2 = await fetchHeads(headReaders, 2n)
    const headsReport: Record<string, unknown> = {
      publishAcks: acks1, publishMs, fetchOk: hf1.ok, fetchTried: hf1.tried, fetchP50Ms: quantile(hf1.ms, 0.5), fetchP95Ms: quantile(hf1.ms, 0.95),
      updateAcks: acks2, updateMs: publish2Ms, updateOk: hf2.ok, updateP50Ms: quantile(hf2.ms, 0.5)
    }
    progress({ heads: headsReport })
    log(`heads: published to ${acks1} peers in ${publishMs} ms; ${hf1.ok} of ${hf1.tried} nodes fetched seq 1 (p50 ${quantile(hf1.ms, 0.5)} ms, p95 ${quantile(hf1.ms, 0.95)} ms); seq 2 to ${acks2} peers, ${hf2.ok} of ${hf2.tried} fetched it`)

    // ---- 30% stopped at once; repair ------------------------------------------------------
    const V = Math.round(0.3 * N)
    const victims = [Q, ...shuffle(members.filter(m => m !== P && m !== Q)).slice(0, V - 1)]
    const all = [...fileBlocks, ...repairSet]
    const size = new Map(all.map(b => [b.cid.toString(), b.bytes.length]))
    const heldBefore = new Map(all.map(b => [b.cid.toString(), members.filter(m => m.node.store.local.hasSync(b.cid))]))
    const victimSet = new Set(victims)
    // Expected losses for the holder sets as they are: Q falls for sure, the other V-1 victims
    // are drawn from the N-2 nodes that are neither P nor Q.
    let expectedLost = 0
    for (const b of all) {
      const hs = (heldBefore.get(b.cid.toString()) ?? []).filter(m => m !== Q)
      if (hs.includes(P)) continue
      expectedLost += choose(V - 1, hs.length) / choose(N - 2, hs.length)
    }
    const boundLostPerBlock = choose(V, K) / choose(N, K)
    const stats0 = new Map(members.map(m => [m.i, { repaired: m.node.replicator.status().repaired, stored: m.node.service.stats.stored }]))
    const kill0 = Date.now()
    await Promise.all(victims.map(async m => await m.stop()))
    const killSeconds = (Date.now() - kill0) / 1000
    const live = members.filter(m => m.alive)
    const lost = all.filter(b => !(heldBefore.get(b.cid.toString()) ?? []).some(m => !victimSet.has(m)))
    const lostFile = lost.filter(b => fileBlocks.includes(b)).length
    const lostSet = new Set(lost)
    const survivors = all.filter(b => !lostSet.has(b))
    const want = new Map(survivors.map(b => [b.cid.toString(), trueHolders(blockKey(b.cid), live)]))
    const shortNow = (): number => {
      let short = 0
      for (const b of survivors) for (const m of want.get(b.cid.toString()) ?? []) if (!m.node.store.local.hasSync(b.cid)) short++
      return short
    }
    const shortAtKill = shortNow()
    progress({ repair: { stopped: V, blocks: all.length, lost: lost.length, expectedLost: round(expectedLost, 3), boundLost: round(spec.repairBlocks * boundLostPerBlock, 3), shortAtKill, restored: false } })
    log(`stopped ${V} of ${N} nodes in ${killSeconds.toFixed(1)} s (Q, the repair set's publisher, among them); ${lost.length} blocks lost (expected ${expectedLost.toFixed(2)}; bound ${(spec.repairBlocks * boundLostPerBlock).toFixed(2)} of the repair set); ${shortAtKill} replicas short of k; waiting for repair`)
    let restoreSeconds: number | null = null
    let short = shortAtKill
    const r0 = Date.now()
    while (Date.now() - r0 < spec.restoreTimeoutMs) {
      short = shortNow()
      if (short === 0) { restoreSeconds = (Date.now() - kill0) / 1000; break }
      await sleep(1000)
    }
    let gained = 0
    let bytesMoved = 0
    for (const b of survivors) {
      const before = new Set(heldBefore.get(b.cid.toString()))
      for (const m of live) {
        if (!before.has(m) && m.node.store.local.hasSync(b.cid)) { gained++; bytesMoved += size.get(b.cid.toString()) ?? 0 }
      }
    }
    const pushes = live.reduce((a, m) => a + m.node.replicator.status().repaired - (stats0.get(m.i)?.repaired ?? 0), 0)
    const storedByPut = live.reduce((a, m) => a + m.node.service.stats.stored - (stats0.get(m.i)?.stored ?? 0), 0)
    log(restoreSeconds !== null
      ? `k restored on the true k closest live nodes ${restoreSeconds.toFixed(1)} s after the kill; ${gained} copies (${(bytesMoved / MiB).toFixed(2)} MiB) moved; ${pushes} repair pushes`
      : `k NOT restored within ${spec.restoreTimeoutMs / 1000} s: ${short} replicas still short; ${gained} copies moved`)

    const survivorFile = fileBlocks.filter(b => !lostSet.has(b))
    const g2 = await gets(live.filter(m => m !== P), Math.round(spec.gets / 2), survivorFile)
    log(`gets after the kill: ${g2.ok} of ${g2.tried}; latency p50 ${quantile(g2.ms, 0.5)} ms p95 ${quantile(g2.ms, 0.95)} ms${g2.errors.length > 0 ? `; e.g. ${g2.errors.slice(0, 3).join('; ')}` : ''}`)

    // Heads after the kill: P republishes on the leaves it notices (rate-limited) and every 10
    // minutes; the record's other holders (kad-dht's 20 closest) keep it meanwhile.
    const hf3 = await fetchHeads(spread(live.filter(m => m !== P), Math.min(16, live.length - 1)), 2n)
    headsReport.afterKillOk = hf3.ok
    headsReport.afterKillTried = hf3.tried
    headsReport.afterKillP50Ms = quantile(hf3.ms, 0.5)
    progress({ heads: headsReport })
    log(`heads after the kill: ${hf3.ok} of ${hf3.tried} survivors fetched seq 2 (p50 ${quantile(hf3.ms, 0.5)} ms)`)

    // ---- connections and routing totals --------------------------------------------------
    const peaks = members.map(m => m.node.connections.stats.peak)
    const openEnd = live.map(m => m.node.libp2p.getConnections().length)
    const rs = members.map(m => m.node.router.status())
    const totalRSS = process.memoryUsage().rss
    return {
      kind: 'real',
      n: N,
      transport: 'memory',
      maxConnections: spec.maxConnections,
      k: K,
      hopsP50: quantile(hops, 0.5),
      hopsP95: quantile(hops, 0.95),
      hopsMax: Math.max(...hops),
      hopsMean: round(mean(hops)),
      getSuccess: g1.tried === 0 ? NaN : g1.ok / g1.tried,
      gets: g1.tried,
      getFailures: g1.errors.slice(0, 5),
      getLatencyP50Ms: quantile(g1.ms, 0.5),
      getLatencyP95Ms: quantile(g1.ms, 0.95),
      getLatencyMaxMs: Math.max(...g1.ms),
      fileRead,
      heads: headsReport,
      lookups: spec.lookups,
      lookupsFailed: lookupFailed,
      lookupTrueK: trueK / spec.lookups,
      lookupLatencyP50Ms: quantile(lookupMs, 0.5),
      lookupLatencyP95Ms: quantile(lookupMs, 0.95),
      peersAskedPerLookup: round(mean(asked), 1),
      putBytes: spec.fileBytes,
      putBlocks: fileBlocks.length,
      putSeconds: round(putSeconds, 3),
      putMBps: round(putMBps),
      putCpuSeconds: round(putCpuMs / 1000),
      putLookups,
      putRegionHits: putHits,
      putShort: rep.blocksShort,
      putWork,
      misplacedReplicas: misplaced,
      repairSetLookups,
      startSeconds: round(startSeconds, 1),
      startMsPerNode: round(startSeconds * 1000 / N, 0),
      startCpuMsPerNode: round(startCpuMs / N, 0),
      startWallP50Ms: quantile(startMs, 0.5),
      startWallP95Ms: quantile(startMs, 0.95),
      startWidth: spec.startWidth,
      startFailures,
      settleSeconds: round(settleSeconds, 1),
      settleCpuMsPerNode: round(settleCpuMs / N, 0),
      tableMin: Math.min(...tables),
      tableMean: round(mean(tables), 1),
      tableMax: Math.max(...tables),
      idleSeconds: spec.idleS,
      idleCpuPctPerNode: round(idleCpuPctPerNode, 3),
      rssMiBPerNode: round(mem.rss / MiB / N, 1),
      heapMiBPerNode: round(mem.heapUsed / MiB / N, 1),
      rssMiB: round(mem.rss / MiB, 0),
      connIdleMean: round(mean(idleOpen), 1),
      connIdleMax: Math.max(...idleOpen),
      connPeakMax: Math.max(...peaks),
      connPeakMean: round(mean(peaks), 1),
      connEndMean: round(mean(openEnd), 1),
      connEndMax: Math.max(...openEnd),
      connTrimmed: members.reduce((a, m) => a + m.node.connections.stats.trimmed, 0),
      routerQueries: rs.reduce((a, s) => a + s.queries, 0),
      routerFailedQueries: rs.reduce((a, s) => a + s.failedQueries, 0),
      repair: {
        stopped: V,
        blocks: all.length,
        repairSetBlocks: repairSet.length,
        lost: lost.length,
        lostFileBlocks: lostFile,
        expectedLost: round(expectedLost, 3),
        boundLost: round(spec.repairBlocks * boundLostPerBlock, 3),
        boundLostPerBlock: round(boundLostPerBlock, 5),
        shortAtKill,
        restored: restoreSeconds !== null,
        restoreSeconds: restoreSeconds === null ? null : round(restoreSeconds, 1),
        shortAtEnd: short,
        copiesMoved: gained,
        bytesMoved,
        pushes,
        storedByPut,
        repairIntervalMs: spec.repairIntervalMs
      },
      getSuccessAfterKill: g2.tried === 0 ? NaN : g2.ok / g2.tried,
      getsAfterKill: g2.tried,
      getFailuresAfterKill: g2.errors.slice(0, 5),
      getLatencyAfterKillP50Ms: quantile(g2.ms, 0.5),
      getLatencyAfterKillP95Ms: quantile(g2.ms, 0.95),
      loadAvg: os.loadavg().map(x => round(x, 2)),
      loopDelayStartMs: loopBeforeIdle,
      loopDelayIdleMs: loopIdle,
      loopDelayAfterIdleMs: loopMs(loop),
      busyFraction: round((cpuMs() - cpu00) / (Date.now() - t00), 2),
      nodeLogLines: nodeLog.lines,
      nodeLogLast: nodeLog.last,
      maxRssMiB: round(Math.max(totalRSS, process.resourceUsage().maxRSS * 1024) / MiB, 0),
      runSeconds: round((Date.now() - t00) / 1000, 1)
    }
  } finally {
    const t = Date.now()
    loop.disable()
    await pool(members.filter(m => m !== undefined), 16, async m => { await m.stop() })
    log(`stopped every node in ${((Date.now() - t) / 1000).toFixed(1)} s`)
  }
}

// ---------------------------------------------------------------------------------------------
// The parent: one child process per run

/** Heap limit of a run's child: about 40 MiB a node over a 2 GiB floor, at most 16 GiB. */
const heapMiBFor = (n: number): number => Math.min(16384, Math.max(4096, 2048 + n * 40))

async function runChild (spec: RealSpec, log: (s: string) => void): Promise<ScaleRun> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-scale-real-'))
  const out = path.join(base, 'result.json')
  try {
    // REEF_SCALE_REAL_NODE_ARGS: extra node flags for the run's child (e.g. --cpu-prof --cpu-prof-dir=DIR).
    const extra = (process.env.REEF_SCALE_REAL_NODE_ARGS ?? '').split(' ').filter(a => a !== '')
    const child = spawn(process.execPath, [`--max-old-space-size=${heapMiBFor(spec.n)}`, '--expose-gc', ...extra, THIS, '--child', JSON.stringify(spec), '--base', base, '--out', out], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: process.env
    })
    let tail = ''
    const lines: string[] = []
    const stderr = child.stderr as NodeJS.ReadableStream
    stderr.setEncoding('utf8')
    stderr.on('data', (s: string) => {
      tail += s
      let nl: number
      while ((nl = tail.indexOf('\n')) >= 0) {
        const line = tail.slice(0, nl)
        tail = tail.slice(nl + 1)
        lines.push(line)
        if (lines.length > 40) lines.shift()
        log(line)
      }
    })
    let killed = false
    const onExit = (): void => { child.kill('SIGKILL'); fs.rmSync(base, { recursive: true, force: true }) }
    process.on('exit', onExit)
    const timer = setTimeout(() => {
      killed = true
      log(`real N=${spec.n}: no end after ${spec.runTimeoutMs / 1000} s; stopping it`)
      child.kill('SIGTERM')
      setTimeout(() => child.kill('SIGKILL'), 30_000).unref()
    }, spec.runTimeoutMs)
    const code = await new Promise<number | null>(resolve => child.on('exit', (c, sig) => resolve(c ?? (sig !== null ? -1 : null))))
    clearTimeout(timer)
    process.removeListener('exit', onExit)
    if ((code !== 0 || !fs.existsSync(out)) && fs.existsSync(out + '.partial')) {
      // What the run measured before it failed or ran out of time.
      const r = JSON.parse(fs.readFileSync(out + '.partial', 'utf8')) as ScaleRun
      r.error = `${killed ? `stopped after ${spec.runTimeoutMs / 1000} s` : `exited ${String(code)}`}: ${lines.slice(-4).join(' | ').slice(0, 1500)}`
      return r
    }
    if (code !== 0 || !fs.existsSync(out)) {
      throw new Error(`real run N=${spec.n} (max ${spec.maxConnections} connections) ${killed ? 'timed out' : `exited ${String(code)}`}: ${lines.slice(-8).join(' | ')}`)
    }
    return JSON.parse(fs.readFileSync(out, 'utf8')) as ScaleRun
  } finally {
    fs.rmSync(base, { recursive: true, force: true })
  }
}

/**
 * Whether 1,000 nodes fit, from the largest run: its start cost per node (wall, at the same
 * concurrency; a larger network's joins walk one or two hops more) and its RSS per node.
 */
function at1000 (r: ScaleRun): Record<string, unknown> {
  const n = 1000
  const startMin = Number(r.startMsPerNode) * n / 60_000 * Math.log2(n) / Math.log2(r.n)
  const settleMin = Number(r.settleSeconds) / r.n * n / 60 * Math.log2(n) / Math.log2(r.n)
  const rssGiB = Number(r.rssMiBPerNode) * n / 1024
  const heapGiB = Number(r.heapMiBPerNode) * n / 1024
  const cpuCores = Number(r.idleCpuPctPerNode) * n / 100
  return {
    from: `N=${r.n}`,
    startMinutes: round(startMin, 1),
    settleMinutes: round(settleMin, 1),
    rssGiB: round(rssGiB, 1),
    heapGiB: round(heapGiB, 1),
    idleCores: round(cpuCores, 2),
    note: 'extrapolated: start and settle scale with N x log N (each join walks about log N hops), RSS and idle CPU with N'
  }
}

export async function realRuns (opts: { quick: boolean, log: (s: string) => void, onRun?: (runs: ScaleRun[]) => void }): Promise<ScaleRun[]> {
  const { quick, log } = opts
  const env = process.env.REEF_SCALE_REAL
  const list = env === 'off' || env === '0' ? [] : env !== undefined && env !== '' ? parseRuns(env) : defaultRuns(quick)
  const runs: ScaleRun[] = []
  for (const [n, max] of list) {
    const spec = specFor(n, max, quick)
    log(`real: ${n} in-process nodes (memory transport), at most ${max} connections each, k=${K}`)
    try {
      runs.push(await runChild(spec, s => log(`real N=${n}${max !== 64 ? `@${max}` : ''}: ${s}`)))
    } catch (err) {
      log(`real: ${(err as Error).message}`)
      runs.push({ kind: 'real', n, hopsP50: NaN, hopsP95: NaN, getSuccess: NaN, maxConnections: max, transport: 'memory', error: (err as Error).message.slice(0, 2000) })
    }
    opts.onRun?.(runs)
  }
  const ok = runs.filter(r => r.error === undefined && r.transport === 'memory')
  const largest = ok.sort((a, b) => b.n - a.n)[0]
  if (!quick && largest !== undefined && !list.some(([n]) => n >= 1000)) {
    const x = at1000(largest)
    largest.at1000 = x
    log(`real: 1,000 nodes not run; from N=${largest.n}: start about ${String(x.startMinutes)} min + settle ${String(x.settleMinutes)} min, RSS about ${String(x.rssGiB)} GiB, idle ${String(x.idleCores)} cores`)
  }
  // REEF_SCALE_SHARDS=256:12,... replaces the runs over host processes ('off': none).
  const shardEnv = process.env.REEF_SCALE_SHARDS
  // An explicit in-process list (REEF_SCALE_REAL, --runs) runs only what it names.
  const explicit = env !== undefined && env !== ''
  const shardList = shardEnv === 'off' || shardEnv === '0' ? [] : shardEnv !== undefined && shardEnv !== '' ? parseRuns(shardEnv) : explicit ? [] : defaultShardRuns(quick)
  for (const [n, max] of shardList) {
    log(`real: ${n} nodes over host processes of 64 (TCP on 127.0.0.1), at most ${max} connections each, k=${K}`)
    try {
      const { defaultPerHost, shardRun } = await import('./shards.js')
      runs.push(await shardRun({ n, perHost: defaultPerHost(n), maxConnections: max, fileBytes: 8 * MiB, lookups: 100, gets: 100, repairIntervalMs: 30_000, fetchDeadlineMs: 15_000, restoreTimeoutMs: 420_000, idleSeconds: 10 }, s => log(`shards N=${n}@${max}: ${s}`)))
    } catch (err) {
      log(`real: ${n} over host processes failed: ${(err as Error).message}`)
      runs.push({ kind: 'real', n, hopsP50: NaN, hopsP95: NaN, getSuccess: NaN, maxConnections: max, transport: 'tcp', error: (err as Error).message.slice(0, 2000) })
    }
    opts.onRun?.(runs)
  }
  if (process.env.REEF_SCALE_REAL_TCP === '1') {
    try {
      const proc = await import('./real-proc.js')
      runs.push(await proc.tcpRun({ quick, log: s => log(`real TCP: ${s}`) }))
    } catch (err) {
      log(`real TCP run failed: ${(err as Error).message}`)
    }
  }
  for (const line of summary(runs)) log(line)
  return runs
}

export default realRuns

/** Head fetches that returned the newest seq, before and after the kill: 'ok/tried, ok/tried'. */
function headsCell (h: unknown): string {
  if (typeof h !== 'object' || h === null) return '-'
  const x = h as Record<string, unknown>
  const part = (ok: unknown, tried: unknown): string => typeof ok === 'number' && typeof tried === 'number' ? `${ok}/${tried}` : '-'
  return `${part(x.updateOk, x.fetchTried)}, ${part(x.afterKillOk, x.afterKillTried)}`
}

/** The full table of real runs, as lines. */
export function summary (runs: ScaleRun[]): string[] {
  const f = (x: unknown, d = 1): string => typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '-'
  const p = (x: unknown): string => typeof x === 'number' && Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : '-'
  const rows = runs.map(r => {
    const rep = (r.repair ?? {}) as Record<string, unknown>
    return [
      `${r.n}${r.transport === 'tcp' ? ' tcp' : ''}${typeof r.hosts === 'number' ? ` (${r.hosts} procs)` : ''}`, String(r.maxConnections ?? '-'), `${String(r.hopsP50)}/${String(r.hopsP95)}`, p(r.getSuccess),
      `${f(r.getLatencyP50Ms, 0)}/${f(r.getLatencyP95Ms, 0)}`, f(r.putMBps, 1), `${String(r.putLookups ?? '-')}/${String(r.putBlocks ?? '-')}`,
      `${f(r.connIdleMean)}/${String(r.connIdleMax ?? '-')}/${String(r.connPeakMax ?? '-')}`, f(r.idleCpuPctPerNode, 3), f(r.rssMiBPerNode, 1),
      `${String(rep.lost ?? '-')} (${f(rep.expectedLost, 2)}; ${f(rep.boundLost, 2)})`, rep.restored === true ? f(rep.restoreSeconds, 0) : rep.restored === false ? `>${f(Number(rep.restoreSeconds ?? NaN), 0)}` : '-',
      typeof rep.bytesMoved === 'number' ? `${(rep.bytesMoved / MiB).toFixed(2)}` : '-', p(r.getSuccessAfterKill),
      headsCell(r.heads), `${f(r.startSeconds, 0)}+${f(r.settleSeconds, 0)}`, f(r.runSeconds, 0)
    ]
  })
  return ['real-network runs (k=3; lost: measured (expected for the holder sets; bound B*C(0.3N,k)/C(N,k)))',
    ...table(['N', 'max conn', 'hops p50/p95', 'get ok', 'get ms p50/p95', 'put MB/s', 'lookups/blocks', 'conn idle mean/max/peak', 'idle CPU %/node', 'RSS MiB/node', 'lost (exp; bound)', 'restore s', 'repair MiB', 'get ok after kill', 'heads ok / after kill', 'start+settle s', 'run s'], rows).split('\n')]
}

// ---------------------------------------------------------------------------------------------
// Entry points: --child (one run, in this process) and the command line (runs each in a child)

async function childMain (args: string[]): Promise<void> {
  const at = (name: string): string => { const i = args.indexOf(name); if (i < 0 || i + 1 >= args.length) throw new Error(`missing ${name}`); return args[i + 1] }
  const spec = JSON.parse(at('--child')) as RealSpec
  const base = at('--base')
  const out = at('--out')
  const t0 = Date.now()
  const log = (s: string): void => { process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(0)} s] ${s}\n`) }
  let rejections = 0
  let uncaught = 0
  process.on('unhandledRejection', err => { if (++rejections <= 5) log(`unhandled rejection: ${(err as Error)?.message ?? String(err)}`) })
  // A library's asynchronous throw (a stopping node's late callback) is counted, not fatal.
  process.on('uncaughtException', err => { if (++uncaught <= 5) log(`uncaught exception: ${err.stack ?? err.message}`) })
  const bail = (why: string, clean: boolean) => (): void => {
    log(why)
    if (clean) fs.rmSync(base, { recursive: true, force: true })
    process.exit(143)
  }
  // Stopped for time by the parent, which then reads the partial result and removes the directory.
  process.on('SIGTERM', bail('SIGTERM', false))
  // The parent is gone (killed): nobody will remove the directory or read the result.
  process.on('disconnect', bail('parent gone', true))
  const dir = path.join(base, 'nodes')
  fs.mkdirSync(dir, { recursive: true })
  const r = await runOne(spec, dir, log, p => { try { fs.writeFileSync(out + '.partial', JSON.stringify(p)) } catch {} })
  r.unhandledRejections = rejections
  r.uncaughtExceptions = uncaught
  fs.writeFileSync(out, JSON.stringify(r, null, 1))
  // libp2p leaves timers and sockets behind now and then: the result is written, so exit.
  process.exit(0)
}

async function cliMain (args: string[]): Promise<void> {
  const quick = args.includes('--quick')
  const i = args.indexOf('--runs')
  if (i >= 0) process.env.REEF_SCALE_REAL = args[i + 1]
  if (args.includes('--tcp')) process.env.REEF_SCALE_REAL_TCP = '1'
  const j = args.indexOf('--json')
  const started = Date.now()
  const log = (s: string): void => { process.stderr.write(`real [${((Date.now() - started) / 1000).toFixed(0)} s]: ${s}\n`) }
  process.on('SIGINT', () => process.exit(130))
  process.on('SIGTERM', () => process.exit(143))
  // Written after every run, so that a long list that is stopped keeps what it measured.
  const write = (runs: ScaleRun[]): void => {
    if (j < 0) return
    const file = path.resolve(args[j + 1])
    fs.mkdirSync(path.dirname(file), { recursive: true })
    fs.writeFileSync(file, JSON.stringify({ benchmark: 'reef scale (real runs)', date: new Date().toISOString(), command: ['node', ...process.argv.slice(1)].join(' '), quick, cores: os.cpus().length, runs, elapsedSeconds: (Date.now() - started) / 1000 }, null, 1))
  }
  const runs = await realRuns({ quick, log, onRun: write })
  for (const line of summary(runs)) process.stdout.write(line + '\n')
  write(runs)
  if (j >= 0) process.stdout.write(`wrote ${path.resolve(args[j + 1])}\n`)
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === THIS) {
  const args = process.argv.slice(2)
  const main = args.includes('--child') ? childMain(args) : cliMain(args)
  main.catch(err => {
    process.stderr.write(`real: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  })
}
