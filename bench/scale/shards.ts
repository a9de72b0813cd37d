/**
 * Real runs too large for one process (issue 10, item 7: N = 256 and up): N reef DHT nodes
 * (DhtNode, the same stack as bench/scale/real.ts) spread over H host processes of at most
 * --per-host nodes each, all over TCP on 127.0.0.1 (libp2p's memory transport does not cross
 * processes). One thread carries every node of a process; at 256 nodes in one process the
 * thread saturated (starts of 3 s of CPU per node, a settle that did not end in 8 minutes, a put
 * whose pushes timed out), so a run uses every core, one host process per core by default.
 *
 * The coordinator (this file, no flag) hosts no node: it drives the hosts through IPC requests
 * (this file with --host) and judges what they answer against what it knows of every node (its
 * peer id, so its Kademlia id):
 *   start    node 0, then every host starts its share (START_WIDTH at once), each node joining
 *            through node 0 or a random node already up in its host; then every node looks
 *            itself up once more (settle)
 *   idle     CPU of every host process over IDLE_S s (process.cpuUsage), divided by N; RSS summed
 *            over the hosts, divided by N; open connections per node
 *   lookups  random keys from random nodes (router.walk): hops, and whether the walk found the
 *            true k closest of all N ids
 *   put      a file through one node P: MB/s until every block has k acknowledged replicas, and
 *            replicas off their true k closest (every host says which blocks its nodes hold)
 *   gets     (node, block) pairs, each from a node that does not hold the block, spread over
 *            all hosts; one whole-file read through a node holding none of it
 *   heads    a head P signs (seq 1, then 2) fetched by 16 nodes spread over the hosts
 *   kill     30% of the nodes (never P) stopped at once; the time until every block is on its k
 *            closest live nodes again (bounded); gets and heads again from survivors
 *
 *   node dist/bench/scale/shards.js [--n 256] [--per-host N/cores] [--max-connections 12] [--json FILE]
 *     [--idle-s S] (idle window, default IDLE_S) [--idle-only] (end after the idle measurement)
 *   REEF_SCALE_IDLE_PROFILE=FILE writes a CPU profile of host 0 over a second idle window
 *   REEF_SCALE_START_PROFILE=FILE writes CPU profiles of host 0 over the start and the settle
 *   REEF_SCALE_REPAIR_PROFILE=FILE writes a CPU profile of host 0 over the first minute after the kill
 *
 * Every wait is bounded, every host is killed and every directory removed at the end. Prints a
 * table (bench/scale/real.ts's) and, with --json, writes the run.
 */
import { fork, type ChildProcess } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { peerIdFromString } from '@libp2p/peer-id'
import { blockKey, cidFor, type Block } from '../../src/block/index.js'
import { generateKeyPair } from '../../src/crypto/sign.js'
import type { DhtNode } from '../../src/dht/index.js'
import { kadId, type KadId } from '../../src/dht/placement.js'
import { closestK } from '../../src/dht/regions.js'
import { decodeHead, encodeHead, signHead } from '../../src/naming/index.js'
import { FileReader, fileFromBytes } from '../../src/object/file.js'
import { CID } from 'multiformats/cid'
import { bounded, cpuProfile, mean, pool, quantile, readPairs, round, sleep, spread, startMember, summary, tally, type Member, type Tally, type Try } from './real.js'
import type { ScaleRun } from './run.js'

const THIS = fileURLToPath(import.meta.url)
const K = 3
const MiB = 1024 * 1024
const START_WIDTH = 2
export const IDLE_S = 10

/** Counter records (one per host) summed key by key. */
function sumCounts (records: Array<Record<string, number>>): Record<string, number> {
  const sum: Record<string, number> = {}
  for (const r of records) for (const [k, v] of Object.entries(r)) sum[k] = (sum[k] ?? 0) + v
  return sum
}

// ---------------------------------------------------------------------------------------------
// The host: up to --per-host nodes in this process, answering the coordinator's requests

interface StartArgs { ids: number[], bootstrap: string[], maxConnections: number, repairIntervalMs: number, fetchDeadlineMs: number }

async function hostMain (base: string): Promise<void> {
  const nodes = new Map<number, Member>()
  const addrs: string[] = []
  const headKeys = generateKeyPair()
  const log = (s: string): void => { process.stderr.write(`[host ${process.pid}] ${s}\n`) }
  process.on('unhandledRejection', () => {})
  process.on('uncaughtException', err => { log(`uncaught: ${err.message}`) })
  process.on('disconnect', () => { fs.rmSync(base, { recursive: true, force: true }); process.exit(0) })

  const startOne = async (i: number, a: StartArgs): Promise<Member> => {
    const known = [...a.bootstrap, ...addrs]
    const via = known[crypto.randomInt(known.length === 0 ? 1 : known.length)]
    const m = await startMember(base, i, via === undefined ? [] : [via], { ...a, transport: 'tcp' })
    countDials(m.node)
    return m
  }
  /**
   * Connections opened, by direction, and outbound ones by the protocol of their first stream
   * (identify aside): what makes an idle network dial.
   */
  const dials: Record<string, number> = {}
  const countDials = (node: DhtNode): void => {
    node.libp2p.addEventListener('connection:open', (e) => {
      const c = e.detail
      dials[c.direction] = (dials[c.direction] ?? 0) + 1
      if (c.direction !== 'outbound') return
      const orig = c.newStream.bind(c)
      let first = true
      c.newStream = async (protocols, options) => {
        const p = Array.isArray(protocols) ? protocols[0] : protocols
        if (first && !p.includes('/id/')) {
          first = false
          dials[p] = (dials[p] ?? 0) + 1
        }
        return await orig(protocols, options)
      }
    })
  }
  const get = (i: number): Member => {
    const n = nodes.get(i)
    if (n === undefined || !n.alive) throw new Error(`node ${i} is not here or not alive`)
    return n
  }
  const live = (): Member[] => [...nodes.values()].filter(n => n.alive)
  const cpu = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000 }
  let profiling: Awaited<ReturnType<typeof cpuProfile>> | undefined

  const ops: Record<string, (a: any) => Promise<unknown>> = {
    start: async (a: StartArgs) => {
      const up: Array<{ i: number, peerId: string, addr: string }> = []
      const failed: string[] = []
      await pool(a.ids, START_WIDTH, async i => {
        try {
          const n = await bounded(`start node ${i}`, 180_000, startOne(i, a))
          nodes.set(i, n)
          const addr = n.node.addrs().find(x => x.includes('/tcp/')) ?? n.node.addrs()[0]
          addrs.push(addr)
          up.push({ i, peerId: n.node.peerId, addr })
        } catch (err) {
          failed.push(`node ${i}: ${(err as Error).message}`)
        }
      })
      return { up, failed }
    },
    refresh: async () => { await pool(live(), 4, async n => { await n.node.router.refresh(true).catch(() => {}) }) },
    sample: async () => {
      const m = process.memoryUsage()
      const leaveChecks = live().reduce((a, n) => a + n.node.leaveStat.checks, 0)
      return { cpuMs: cpu(), rss: m.rss, heapUsed: m.heapUsed, conns: live().map(n => n.node.libp2p.getConnections().length), dials: { ...dials, leaveChecks } }
    },
    // Work counters summed over this host's live nodes (what a phase cost, by cause).
    work: async () => {
      const w: Record<string, number> = { ...dials }
      const add = (k: string, v: number): void => { w[k] = (w[k] ?? 0) + v }
      for (const n of live()) {
        const r = n.node.republishStat
        add('republishPasses', r.passes); add('republishLeave', r.leave); add('republishJoin', r.join); add('headsRepublished', r.heads)
        add('repairPasses', n.node.replicator.status().repairPasses)
        add('leaveChecks', n.node.leaveStat.checks)
        add('routerQueries', n.node.router.status().queries)
        add('routerFailed', n.node.router.status().failedQueries)
      }
      return w
    },
    // A CPU profile of this host (REEF_SCALE_*_PROFILE: where CPU goes).
    profileStart: async () => { profiling = await cpuProfile() },
    profileStop: async (a: { file: string }) => {
      const p = profiling
      profiling = undefined
      if (p === undefined) throw new Error('no profile running')
      return await p.stop(a.file)
    },
    walk: async (a: { i: number, key: string }) => {
      const w = await get(a.i).node.router.walk(kadId(Buffer.from(a.key, 'hex')), AbortSignal.timeout(30_000))
      return { hops: w.hops, queries: w.queries, peers: w.peers.map(p => p.key) }
    },
    put: async (a: { i: number, bytes: number }) => {
      const n = get(a.i)
      const bytes = crypto.randomBytes(a.bytes)
      const blocks: Block[] = []
      const l0 = n.node.placement.stats.lookups
      const c0 = cpu()
      const t0 = Date.now()
      const root = await fileFromBytes(bytes, async bs => { blocks.push(...bs); await n.node.store.putMany(bs) })
      const rep = await n.node.replicator.waitReplicated(blocks.map(b => blockKey(b.cid)), 180_000)
      return {
        seconds: (Date.now() - t0) / 1000,
        cpuMs: cpu() - c0,
        lookups: n.node.placement.stats.lookups - l0,
        short: rep.blocksShort,
        root: String(root.cid),
        size: bytes.length,
        sha: crypto.createHash('sha256').update(bytes).digest('hex'),
        cids: blocks.map(b => b.cid.toString())
      }
    },
    holders: async (a: { cids: string[] }) => {
      const cids = a.cids.map(c => CID.parse(c))
      return Object.fromEntries(live().map(n => [n.i, cids.map(c => n.node.store.local.hasSync(c))]))
    },
    get: async (a: { i: number, cid: string, timeoutMs: number }) => {
      const t = Date.now()
      try {
        await bounded('get', a.timeoutMs, get(a.i).node.store.get(CID.parse(a.cid)))
        return { ok: true, ms: Date.now() - t }
      } catch (err) {
        return { ok: false, ms: Date.now() - t, error: (err as Error).message.slice(0, 300) }
      }
    },
    read: async (a: { i: number, root: string, size: number, sha: string }) => {
      const t = Date.now()
      try {
        const got = await bounded('file read', 120_000, new FileReader(CID.parse(a.root), get(a.i).node.store).read(0, a.size))
        return { ok: crypto.createHash('sha256').update(got).digest('hex') === a.sha, seconds: (Date.now() - t) / 1000 }
      } catch (err) {
        return { ok: false, seconds: (Date.now() - t) / 1000, error: (err as Error).message.slice(0, 300) }
      }
    },
    publishHead: async (a: { i: number, seq: number }) => {
      const n = get(a.i)
      const h = signHead(headKeys, 'scale', cidFor(crypto.randomBytes(32)), BigInt(a.seq))
      await n.book.accept(encodeHead(h), h.aguid).catch(() => {})
      const t = Date.now()
      const acks = await n.node.publishHead(h.aguid, encodeHead(h), 30_000)
      return { acks, ms: Date.now() - t, aguid: h.aguid.toString() }
    },
    fetchHead: async (a: { i: number, aguid: string }) => {
      const t = Date.now()
      const got = await get(a.i).node.fetchHead(CID.parse(a.aguid), 20_000).catch(() => undefined)
      return { seq: got === undefined ? null : Number(decodeHead(got).seq), ms: Date.now() - t }
    },
    stop: async (a: { ids: number[] }) => {
      await Promise.all(a.ids.map(async i => { const n = nodes.get(i); if (n?.alive === true) await n.stop() }))
    },
    stats: async () => live().map(n => ({
      i: n.i,
      peak: n.node.connections.stats.peak,
      trimmed: n.node.connections.stats.trimmed,
      table: n.node.router.table.size,
      queries: n.node.router.status().queries,
      failedQueries: n.node.router.status().failedQueries,
      repaired: n.node.replicator.status().repaired
    })),
    exit: async () => {
      await pool(live(), 16, async n => { await n.stop() })
      fs.rmSync(base, { recursive: true, force: true })
      setImmediate(() => process.exit(0))
    }
  }
  process.on('message', (msg: { id: number, op: string, args: unknown }) => {
    const op = ops[msg.op]
    const p = op === undefined ? Promise.reject(new Error(`unknown op ${msg.op}`)) : op(msg.args)
    p.then(result => process.send?.({ id: msg.id, ok: true, result }), err => process.send?.({ id: msg.id, ok: false, error: (err as Error).message }))
  })
  process.send?.({ id: 0, ok: true, result: 'ready' })
}

// ---------------------------------------------------------------------------------------------
// The coordinator

class Host {
  private next = 1
  private readonly waiting = new Map<number, { resolve: (v: any) => void, reject: (e: Error) => void }>()
  readonly ready: Promise<void>
  /** Node indices this host runs. */
  ids: number[] = []

  constructor (readonly h: number, readonly proc: ChildProcess) {
    let onReady: () => void = () => {}
    this.ready = new Promise(resolve => { onReady = resolve })
    proc.on('message', (m: { id: number, ok: boolean, result?: unknown, error?: string }) => {
      if (m.id === 0) { onReady(); return }
      const w = this.waiting.get(m.id)
      if (w === undefined) return
      this.waiting.delete(m.id)
      if (m.ok) w.resolve(m.result)
      else w.reject(new Error(`host ${h}: ${String(m.error)}`))
    })
    proc.on('exit', (code, sig) => {
      for (const w of this.waiting.values()) w.reject(new Error(`host ${h} exited (${String(code)}, ${String(sig)})`))
      this.waiting.clear()
    })
  }

  async call<T = any> (op: string, args: unknown = {}, ms = 600_000): Promise<T> {
    const id = this.next++
    if (!this.proc.connected) throw new Error(`host ${this.h} is gone (${op})`)
    const p = new Promise<T>((resolve, reject) => { this.waiting.set(id, { resolve, reject }) })
    this.proc.send({ id, op, args }, err => { if (err !== null) this.waiting.get(id)?.reject(err) })
    return await bounded(`host ${this.h} ${op}`, ms, p)
  }
}

interface Node { i: number, host: Host, peerId: string, key: string, kad: KadId, alive: boolean }

/**
 * Nodes per host process by default: one host per core. 256 nodes as 4 hosts of 64 on this
 * 2-core machine settled in 404 s and their lookups stalled; as 2 hosts of 128, in 76-98 s.
 */
export function defaultPerHost (n: number): number {
  return Math.max(16, Math.ceil(n / os.availableParallelism()))
}

export interface ShardSpec { idleSeconds: number, idleOnly?: boolean, n: number, perHost: number, maxConnections: number, fileBytes: number, lookups: number, gets: number, repairIntervalMs: number, fetchDeadlineMs: number, restoreTimeoutMs: number }

export async function shardRun (spec: ShardSpec, log: (s: string) => void): Promise<ScaleRun> {
  const H = Math.ceil(spec.n / spec.perHost)
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-scale-shards-'))
  const hosts: Host[] = []
  const t00 = Date.now()
  const onExit = (): void => { for (const h of hosts) h.proc.kill('SIGKILL'); fs.rmSync(base, { recursive: true, force: true }) }
  process.on('exit', onExit)
  try {
    for (let h = 0; h < H; h++) {
      const dir = path.join(base, `h${h}`)
      fs.mkdirSync(dir)
      const proc = fork(THIS, ['--host', dir], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], execArgv: [`--max-old-space-size=${2048 + spec.perHost * 40}`] })
      proc.stderr?.on('data', (d: Buffer) => { if (process.env.REEF_SCALE_VERBOSE === '1') process.stderr.write(d) })
      hosts.push(new Host(h, proc))
    }
    await bounded('hosts ready', 60_000, Promise.all(hosts.map(async h => await h.ready)))
    for (let i = 0; i < spec.n; i++) hosts[i % H].ids.push(i)
    const nodes: Node[] = []
    const add = (host: Host, up: Array<{ i: number, peerId: string }>): void => {
      for (const u of up) nodes.push({ i: u.i, host, peerId: u.peerId, key: u.peerId, kad: kadId(peerIdFromString(u.peerId).toMultihash().bytes), alive: true })
    }
    const opts = { maxConnections: spec.maxConnections, repairIntervalMs: spec.repairIntervalMs, fetchDeadlineMs: spec.fetchDeadlineMs }

    // ---- start ----------------------------------------------------------------------------
    // REEF_SCALE_START_PROFILE=FILE: CPU profiles of host 0 over the start (FILE-start.cpuprofile)
    // and the settle (FILE-settle.cpuprofile).
    const phaseProfile = process.env.REEF_SCALE_START_PROFILE
    const profilePhase = async (phase: string | undefined, prior: string | undefined): Promise<void> => {
      if (phaseProfile === undefined || phaseProfile === '') return
      if (prior !== undefined) log(`${prior} CPU profile of host 0 written to ${String(await hosts[0].call('profileStop', { file: path.resolve(`${phaseProfile}-${prior}.cpuprofile`) }))}`)
      if (phase !== undefined) await hosts[0].call('profileStart')
    }
    await profilePhase('start', undefined)
    const first = await hosts[0].call<{ up: Array<{ i: number, peerId: string, addr: string }>, failed: string[] }>('start', { ids: [0], bootstrap: [], ...opts })
    if (first.up.length !== 1) throw new Error(`node 0 did not start: ${first.failed.join('; ')}`)
    add(hosts[0], first.up)
    const addr0 = first.up[0].addr
    const starts = await Promise.all(hosts.map(async h => {
      const r = await h.call<{ up: Array<{ i: number, peerId: string, addr: string }>, failed: string[] }>('start', { ids: h.ids.filter(i => i !== 0), bootstrap: [addr0], ...opts }, 3_600_000)
      add(h, r.up)
      return r.failed
    }))
    const startFailures = starts.flat()
    const N = nodes.length
    const startSeconds = (Date.now() - t00) / 1000
    const afterStart = await Promise.all(hosts.map(async h => await h.call('sample')))
    const cpuAfterStart = afterStart.map(a => a.cpuMs as number)
    // How busy each host process was over each phase (% of one core): where a run saturates.
    const phaseCpu: Record<string, number[]> = {}
    let busyAt = { t: Date.now(), cpu: cpuAfterStart }
    const busy = async (phase: string): Promise<string> => {
      const cpu = await Promise.all(hosts.map(async h => (await h.call('sample')).cpuMs as number))
      const t = Date.now()
      phaseCpu[phase] = cpu.map((c, j) => round((c - busyAt.cpu[j]) / (t - busyAt.t) * 100, 0))
      busyAt = { t, cpu }
      return `hosts ${phaseCpu[phase].join('%, ')}% busy`
    }
    const startDials = sumCounts(afterStart.map(a => a.dials))
    for (const k of Object.keys(startDials)) startDials[k] = round(startDials[k] / N, 1)
    log(`connections opened per node during the start: ${JSON.stringify(startDials)}`)
    log(`${N} nodes up in ${startSeconds.toFixed(0)} s over ${H} hosts (${(cpuAfterStart.reduce((a, b) => a + b, 0) / N).toFixed(0)} ms CPU per node)${startFailures.length > 0 ? `; ${startFailures.length} left out: ${startFailures.slice(0, 2).join('; ')}` : ''}`)
    await profilePhase('settle', 'start')
    let s0 = Date.now()
    await Promise.all(hosts.map(async h => await h.call('refresh', {}, 1_200_000)))
    await profilePhase(undefined, 'settle')
    const settleSeconds = (Date.now() - s0) / 1000
    log(`settled in ${settleSeconds.toFixed(0)} s (${await busy('settle')})`)

    // ---- idle -----------------------------------------------------------------------------
    await sleep(6_000)
    const a0 = await Promise.all(hosts.map(async h => await h.call('sample')))
    const i0 = Date.now()
    const connSamples: number[] = []
    for (let s = 0; s < spec.idleSeconds; s++) {
      await sleep(1000)
      if (s % 3 === 2) for (const h of hosts) connSamples.push(...(await h.call('sample')).conns as number[])
    }
    const a1 = await Promise.all(hosts.map(async h => await h.call('sample')))
    const idleMs = Date.now() - i0
    const idleCpuPctPerNode = a1.reduce((a, x, j) => a + x.cpuMs - a0[j].cpuMs, 0) / idleMs * 100 / N
    const rssMiBPerNode = a1.reduce((a, x) => a + x.rss, 0) / MiB / N
    const heapMiBPerNode = a1.reduce((a, x) => a + x.heapUsed, 0) / MiB / N
    log(`idle: ${idleCpuPctPerNode.toFixed(3)}% of a core per node, RSS ${rssMiBPerNode.toFixed(1)} MiB per node, ${mean(connSamples).toFixed(1)} connections per node (max ${Math.max(...connSamples)})`)
    // Connections opened while idle, per node per minute, by what opened them.
    const idleDials = sumCounts(a1.map(a => a.dials))
    const idleDials0 = sumCounts(a0.map(a => a.dials))
    for (const k of Object.keys(idleDials)) idleDials[k] = round((idleDials[k] - (idleDials0[k] ?? 0)) / N / (idleMs / 60_000), 2)
    log(`idle dials per node per minute: ${JSON.stringify(idleDials)} (${await busy('idle')})`)
    const profileFile = process.env.REEF_SCALE_IDLE_PROFILE
    if (profileFile !== undefined && profileFile !== '') {
      // A second idle window (the measured one would be inflated by the profiler), host 0 only.
      await hosts[0].call('profileStart')
      await sleep(spec.idleSeconds * 1000)
      log(`idle CPU profile of host 0 written to ${String(await hosts[0].call('profileStop', { file: path.resolve(profileFile) }))}`)
    }
    if (spec.idleOnly) {
      return { kind: 'real', transport: 'tcp', hosts: H, n: N, maxConnections: spec.maxConnections, startSeconds: round(startSeconds, 0), settleSeconds: round(settleSeconds, 0), idleSeconds: spec.idleSeconds, idleCpuPctPerNode: round(idleCpuPctPerNode, 3), rssMiBPerNode: round(rssMiBPerNode, 1), connIdleMean: round(mean(connSamples), 1), idleDials, idleOnly: true } as unknown as ScaleRun
    }

    // ---- lookups --------------------------------------------------------------------------
    const hops: number[] = []
    const lookupMs: number[] = []
    let trueK = 0
    let lookupFailed = 0
    let lastNote = Date.now()
    const walkErrors: string[] = []
    await pool(Array.from({ length: spec.lookups }, () => crypto.randomBytes(32)), 4, async key => {
      const m = nodes[crypto.randomInt(N)]
      const t = Date.now()
      if (t - lastNote > 15_000) {
        lastNote = t
        log(`lookups: ${hops.length} done, ${lookupFailed} failed (e.g. ${walkErrors.slice(-1).join('')}), p50 ${quantile(lookupMs, 0.5)} ms so far`)
      }
      try {
        const w = await m.host.call<{ hops: number, peers: string[] }>('walk', { i: m.i, key: key.toString('hex') }, 60_000)
        lookupMs.push(Date.now() - t)
        hops.push(w.hops)
        const target = kadId(key)
        const byKey = new Map(nodes.map(x => [x.key, x]))
        const truth = closestK(target, nodes, K).map(x => x.key).join()
        const got = closestK(target, [m, ...w.peers.map(p => byKey.get(p)).filter((x): x is Node => x !== undefined)], K).map(x => x.key).join()
        if (truth === got) trueK++
      } catch (err) {
        lookupFailed++
        if (walkErrors.length < 20) walkErrors.push((err as Error).message.slice(0, 200))
      }
    })
    log(`lookups: hops p50 ${quantile(hops, 0.5)} p95 ${quantile(hops, 0.95)}; true ${K} closest found by ${trueK} of ${spec.lookups} (${await busy('lookups')})`)

    // ---- put ------------------------------------------------------------------------------
    const holdersOf = async (cids: string[]): Promise<Map<number, boolean[]>> => {
      const out = new Map<number, boolean[]>()
      for (const h of hosts) {
        if (!h.ids.some(i => nodes.find(x => x.i === i)?.alive === true)) continue
        const r = await h.call<Record<string, boolean[]>>('holders', { cids })
        for (const [i, v] of Object.entries(r)) out.set(Number(i), v)
      }
      return out
    }
    const P = nodes.filter(x => x.host === hosts[0])[crypto.randomInt(nodes.filter(x => x.host === hosts[0]).length)]
    const put = await P.host.call<{ seconds: number, cpuMs: number, lookups: number, short: number, root: string, size: number, sha: string, cids: string[] }>('put', { i: P.i, bytes: spec.fileBytes })
    const putMBps = spec.fileBytes / 1e6 / put.seconds
    const trueHolders = (cid: string, among: Node[]): Node[] => closestK(kadId(blockKey(CID.parse(cid))), among, K)
    let held = await holdersOf(put.cids)
    let misplaced = 0
    put.cids.forEach((c, j) => { for (const m of trueHolders(c, nodes)) if (held.get(m.i)?.[j] !== true) misplaced++ })
    log(`put: ${(spec.fileBytes / MiB).toFixed(0)} MiB (${put.cids.length} blocks) replicated in ${put.seconds.toFixed(2)} s (${putMBps.toFixed(1)} MB/s; P's CPU ${(put.cpuMs / 1000).toFixed(1)} s), ${put.lookups} lookups, ${put.short} short, ${misplaced} replicas off their true k (${await busy('put')})`)

    // ---- gets -----------------------------------------------------------------------------
    const gets = async (among: Node[], count: number): Promise<Tally> =>
      await tally(readPairs(among, put.cids.length, count, (m, j) => held.get(m.i)?.[j] === true), async ([m, j]) => {
        const r = await m.host.call<Try>('get', { i: m.i, cid: put.cids[j], timeoutMs: spec.fetchDeadlineMs + 5_000 }, spec.fetchDeadlineMs + 30_000)
        return { ...r, error: r.ok ? undefined : `node ${m.i}: ${String(r.error)}` }
      })
    const readers = nodes.filter(x => x !== P)
    const g1 = await gets(readers, spec.gets)
    log(`gets: ${g1.ok} of ${g1.tried} from nodes without the block; latency p50 ${quantile(g1.ms, 0.5)} ms p95 ${quantile(g1.ms, 0.95)} ms${g1.errors.length > 0 ? `; e.g. ${g1.errors.slice(0, 2).join('; ')}` : ''} (${await busy('gets')})`)
    const emptyReader = readers.find(m => !(held.get(m.i) ?? []).some(Boolean)) ?? readers[0]
    const fileRead = await emptyReader.host.call<{ ok: boolean, seconds: number, error?: string }>('read', { i: emptyReader.i, root: put.root, size: put.size, sha: put.sha }, 180_000)
    log(`whole-file read through node ${emptyReader.i}: ${fileRead.ok ? 'ok' : `FAILED ${fileRead.error ?? ''}`} in ${fileRead.seconds.toFixed(2)} s (${await busy('read')})`)

    // ---- heads ----------------------------------------------------------------------------
    const fetchHeads = async (from: Node[], aguid: string, seq: number): Promise<Tally> =>
      await tally(from, async m => {
        const r = await m.host.call<{ seq: number | null, ms: number }>('fetchHead', { i: m.i, aguid }, 60_000)
        return { ok: r.seq === seq, ms: r.ms }
      })
    const headReaders = spread(readers, Math.min(16, readers.length))
    const p1 = await P.host.call<{ acks: number, ms: number, aguid: string }>('publishHead', { i: P.i, seq: 1 })
    const hf1 = await fetchHeads(headReaders, p1.aguid, 1)
    const p2 = await P.host.call<{ acks: number, ms: number, aguid: string }>('publishHead', { i: P.i, seq: 2 })
    const hf2 = await fetchHeads(headReaders, p2.aguid, 2)
    const heads: Record<string, unknown> = { publishAcks: p1.acks, publishMs: p1.ms, fetchOk: hf1.ok, fetchTried: hf1.tried, fetchP50Ms: quantile(hf1.ms, 0.5), updateAcks: p2.acks, updateOk: hf2.ok, updateP50Ms: quantile(hf2.ms, 0.5) }
    log(`heads: published to ${p1.acks} peers, seq 2 to ${p2.acks}; ${hf1.ok} of ${hf1.tried} fetched seq 1 (p50 ${quantile(hf1.ms, 0.5)} ms); ${hf2.ok} of ${hf2.tried} fetched seq 2 (${await busy('heads')})`)

    // ---- 30% stopped at once; repair ------------------------------------------------------
    const V = Math.round(0.3 * N)
    const victims = readers.map(x => ({ x, r: Math.random() })).sort((a, b) => a.r - b.r).slice(0, V).map(({ x }) => x)
    const heldBefore = held
    const k0 = Date.now()
    await Promise.all(hosts.map(async h => await h.call('stop', { ids: victims.filter(v => v.host === h).map(v => v.i) })))
    for (const v of victims) v.alive = false
    const live = nodes.filter(x => x.alive)
    const lost = put.cids.filter((_c, j) => !live.some(m => heldBefore.get(m.i)?.[j] === true)).length
    const want = put.cids.map(c => trueHolders(c, live))
    const shortNow = async (): Promise<number> => {
      held = await holdersOf(put.cids)
      let short = 0
      want.forEach((ms, j) => { for (const m of ms) if (held.get(m.i)?.[j] !== true) short++ })
      return short
    }
    // REEF_SCALE_REPAIR_PROFILE=FILE: a CPU profile of host 0 over the first minute after the kill.
    const repairProfile = process.env.REEF_SCALE_REPAIR_PROFILE
    const repairProfiled = repairProfile !== undefined && repairProfile !== ''
      ? hosts[0].call('profileStart').then(async () => { await sleep(60_000); return await hosts[0].call('profileStop', { file: path.resolve(repairProfile) }) })
      : undefined
    const workAt = async (): Promise<Record<string, number>> => sumCounts(await Promise.all(hosts.map(async h => await h.call<Record<string, number>>('work'))))
    const work0 = await workAt()
    const shortAtKill = await shortNow()
    log(`stopped ${V} of ${N} nodes; ${lost} blocks lost (P holds all: expected 0); ${shortAtKill} replicas short of k; waiting for repair`)
    let restoreSeconds: number | null = null
    let short = shortAtKill
    while (Date.now() - k0 < spec.restoreTimeoutMs) {
      short = await shortNow()
      if (short === 0) { restoreSeconds = (Date.now() - k0) / 1000; break }
      await sleep(2000)
    }
    const work1 = await workAt()
    const repairWork: Record<string, number> = {}
    for (const [k, v] of Object.entries(work1)) repairWork[k] = round((v - (work0[k] ?? 0)) / live.length, 2)
    log(`work per surviving node until then: ${JSON.stringify(repairWork)}`)
    if (repairProfiled !== undefined) log(`repair CPU profile of host 0 written to ${String(await repairProfiled)}`)
    log(`${restoreSeconds !== null ? `k restored on the true k closest live nodes ${restoreSeconds.toFixed(1)} s after the kill` : `k NOT restored within ${spec.restoreTimeoutMs / 1000} s: ${short} replicas short`} (${await busy('repair')})`)
    const g2 = await gets(live.filter(x => x !== P), Math.round(spec.gets / 2))
    log(`gets after the kill: ${g2.ok} of ${g2.tried}; latency p50 ${quantile(g2.ms, 0.5)} ms p95 ${quantile(g2.ms, 0.95)} ms${g2.errors.length > 0 ? `; e.g. ${g2.errors.slice(0, 2).join('; ')}` : ''} (${await busy('getsAfterKill')})`)
    const hf3 = await fetchHeads(spread(live.filter(x => x !== P), Math.min(16, live.length - 1)), p2.aguid, 2)
    heads.afterKillOk = hf3.ok
    heads.afterKillTried = hf3.tried
    log(`heads after the kill: ${hf3.ok} of ${hf3.tried} survivors fetched seq 2 (${await busy('headsAfterKill')})`)
    const st = (await Promise.all(hosts.map(async h => await h.call<Array<{ peak: number, trimmed: number, table: number }>>('stats')))).flat()
    const end = await Promise.all(hosts.map(async h => (await h.call('sample')).conns as number[]))
    return {
      kind: 'real',
      n: N,
      transport: 'tcp',
      hosts: H,
      perHost: spec.perHost,
      maxConnections: spec.maxConnections,
      k: K,
      hopsP50: quantile(hops, 0.5),
      hopsP95: quantile(hops, 0.95),
      hopsMax: Math.max(...hops),
      lookups: spec.lookups,
      lookupsFailed: lookupFailed,
      lookupErrors: walkErrors.slice(0, 5),
      lookupTrueK: trueK / spec.lookups,
      lookupLatencyP50Ms: quantile(lookupMs, 0.5),
      getSuccess: g1.tried === 0 ? NaN : g1.ok / g1.tried,
      gets: g1.tried,
      getFailures: g1.errors.slice(0, 5),
      getLatencyP50Ms: quantile(g1.ms, 0.5),
      getLatencyP95Ms: quantile(g1.ms, 0.95),
      fileRead,
      heads,
      putBytes: spec.fileBytes,
      putBlocks: put.cids.length,
      putSeconds: round(put.seconds, 3),
      putMBps: round(putMBps),
      putLookups: put.lookups,
      putShort: put.short,
      misplacedReplicas: misplaced,
      startSeconds: round(startSeconds, 1),
      startCpuMsPerNode: round(cpuAfterStart.reduce((a, b) => a + b, 0) / N, 0),
      startFailures: startFailures.length,
      settleSeconds: round(settleSeconds, 1),
      tableMin: Math.min(...st.map(s => s.table)),
      tableMax: Math.max(...st.map(s => s.table)),
      idleSeconds: spec.idleSeconds,
      idleDials,
      phaseCpu,
      repairWork,
      idleCpuPctPerNode: round(idleCpuPctPerNode, 3),
      rssMiBPerNode: round(rssMiBPerNode, 1),
      heapMiBPerNode: round(heapMiBPerNode, 1),
      connIdleMean: round(mean(connSamples), 1),
      connIdleMax: Math.max(...connSamples),
      connPeakMax: Math.max(...st.map(s => s.peak)),
      connEndMax: Math.max(...end.flat()),
      repair: { stopped: V, blocks: put.cids.length, lost, expectedLost: 0, shortAtKill, restored: restoreSeconds !== null, restoreSeconds: restoreSeconds === null ? null : round(restoreSeconds, 1), shortAtEnd: short, repairIntervalMs: spec.repairIntervalMs },
      getSuccessAfterKill: g2.tried === 0 ? NaN : g2.ok / g2.tried,
      getsAfterKill: g2.tried,
      getFailuresAfterKill: g2.errors.slice(0, 5),
      loadAvg: os.loadavg().map(x => round(x, 2)),
      runSeconds: round((Date.now() - t00) / 1000, 1)
    }
  } finally {
    await Promise.all(hosts.map(async h => await h.call('exit', {}, 120_000).catch(() => {})))
    for (const h of hosts) h.proc.kill('SIGKILL')
    process.removeListener('exit', onExit)
    fs.rmSync(base, { recursive: true, force: true })
  }
}

async function cliMain (args: string[]): Promise<void> {
  const opt = (name: string, d: string): string => { const i = args.indexOf(name); return i >= 0 && i + 1 < args.length ? args[i + 1] : d }
  const spec: ShardSpec = {
    n: Number(opt('--n', '256')),
    perHost: Number(opt('--per-host', String(defaultPerHost(Number(opt('--n', '256')))))),
    maxConnections: Number(opt('--max-connections', '12')),
    fileBytes: Number(opt('--file-mib', '8')) * MiB,
    lookups: Number(opt('--lookups', '100')),
    gets: Number(opt('--gets', '100')),
    // As in bench/scale/real.ts: repair every 30 s (default 10 min), so that restore time is
    // bounded by this period for nodes that learn of a death only from a failed request.
    repairIntervalMs: 30_000,
    fetchDeadlineMs: 15_000,
    restoreTimeoutMs: 420_000,
    idleSeconds: Number(opt('--idle-s', String(IDLE_S)))
  }
  for (const [k, v] of Object.entries(spec)) if (!(Number.isFinite(v) && v > 0)) throw new Error(`bad ${k}: ${String(v)}`)
  spec.idleOnly = args.includes('--idle-only')
  const t0 = Date.now()
  const log = (s: string): void => { process.stderr.write(`shards [${((Date.now() - t0) / 1000).toFixed(0)} s]: ${s}\n`) }
  process.on('SIGINT', () => process.exit(130))
  process.on('SIGTERM', () => process.exit(143))
  const r = await shardRun(spec, log)
  for (const line of summary([r])) process.stdout.write(line + '\n')
  const j = args.indexOf('--json')
  if (j >= 0) {
    const file = path.resolve(args[j + 1])
    fs.mkdirSync(path.dirname(file), { recursive: true })
    fs.writeFileSync(file, JSON.stringify({ benchmark: 'reef scale (real runs over host processes)', date: new Date().toISOString(), command: ['node', ...process.argv.slice(1)].join(' '), cores: os.cpus().length, runs: [r] }, null, 1))
    process.stdout.write(`wrote ${file}\n`)
  }
  process.exit(0)
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === THIS) {
  const args = process.argv.slice(2)
  const i = args.indexOf('--host')
  const main = i >= 0 ? hostMain(args[i + 1]) : cliMain(args)
  main.catch(err => {
    process.stderr.write(`shards: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  })
}
