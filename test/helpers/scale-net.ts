/**
 * The network of test/dht-scale, run as a child process of its own: N real reef DHT nodes on
 * libp2p's in-memory transport, each held to MAX connections, joined as a chain. Run under tap,
 * the same work costs about twice the CPU (a CPU profile of it: tap's async-hook domain and its
 * promise destroy hooks took about 35% of all samples, and the garbage they left 16%), and on a
 * loaded CI machine the file outran tap's 600 s. Here nothing watches the promises.
 *
 * It does what the test asserts on and prints one JSON object (ScaleReport) on stdout at the
 * end; progress goes to stderr. Every wait is bounded. Arguments come from the environment:
 * SCALE_N, SCALE_MAX, SCALE_K, SCALE_READERS (the readers sampled; 'all' for every node).
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import { Session } from 'node:inspector/promises'
import { type Block, blockKey, cidFromKey } from '../../src/block/index.js'
import { kadId } from '../../src/dht/placement.js'
import { closestK } from '../../src/dht/regions.js'
import { FileReader, fileFromBytes } from '../../src/object/file.js'
import { pool, spread } from '../../bench/scale/real.js'
import { waitFor } from './cluster.js'
import { startMemNet, type MemNode } from './memnet.js'

const N = Number(process.env.SCALE_N ?? 32)
const MAX = Number(process.env.SCALE_MAX ?? 12)
const K = Number(process.env.SCALE_K ?? 3)
const READERS = process.env.SCALE_READERS ?? 'all'
const KiB = 1024

export interface ScaleReport {
  n: number
  max: number
  k: number
  startMs: number
  settleMs: number
  tableMin: number
  tableMax: number
  /** Per key: the nodes whose own lookup did not yield the true k closest. */
  disagree: number[][]
  agreementLookups: number
  put: { blocks: number, short: number, lookups: number, misplaced: string[] }
  reads: { readers: number, failures: string[], remote: number, lookups: number, failedRequests: number, ms: number }
  churn: { blocks: number, short: number, stopped: number, hit: number, lost: number, missing: string[], restoreMs: number, repaired: number, cacheCopiesSkipped: number }
  connections: { open: number[], peak: number, perLookup: number, hopsP50: number[] }
  cpuS: number
}

const log = (s: string): void => { process.stderr.write(`[scale-net ${new Date().toISOString().slice(11, 23)}] ${s}\n`) }
async function main (): Promise<void> {
  const teardowns: Array<() => void | Promise<void>> = []
  const t = { teardown: (fn: () => void | Promise<void>) => { teardowns.push(fn) } }
  const cpu0 = process.cpuUsage()
  try {
    let t0 = Date.now()
    // Repair passes every 30 s (the default is 10 min). A leave a holder notices (its connection
    // drops and a ping fails, or a request fails twice) starts a pass within 2 s; but a holder
    // whose replica nodes all stopped while it held no connection to them (the trimmer closed
    // it) learns of it only from its next periodic pass, as in Kademlia's republish.
    const { nodes } = await startMemNet(t, N, { k: K, maxConnections: MAX, topology: 'chain', repairIntervalMs: Number(process.env.SCALE_REPAIR_MS ?? 30_000), fetchDeadlineMs: 30_000 })
    const startMs = Date.now() - t0
    log(`${N} nodes up in ${startMs} ms`)

    // Settling: each node looks itself up once more, as its periodic refresh would (the early
    // nodes of the chain joined when there was little to find).
    t0 = Date.now()
    await pool(nodes, 4, async m => { await m.node.router.refresh(true) })
    const settleMs = Date.now() - t0
    const sizes = nodes.map(m => m.node.router.table.size)
    log(`settled in ${settleMs} ms`)

    // Agreement: every node's own lookup of a random key ends on the true k closest.
    const everyone = nodes.map(m => m.node.router.self)
    const disagree: number[][] = []
    let agreementLookups = 0
    for (let j = 0; j < 2; j++) {
      const key = crypto.randomBytes(32)
      const truth = closestK(kadId(key), everyone, K).map(m => m.key).join()
      const wrong: number[] = []
      await pool(nodes, 8, async m => {
        agreementLookups++
        const res = await m.node.router.lookup(key)
        if (closestK(kadId(key), [m.node.router.self, ...res.peers], K).map(p => p.key).join() !== truth) wrong.push(m.i)
      })
      disagree.push(wrong.sort((a, b) => a - b))
    }
    log(`agreement: ${JSON.stringify(disagree)}`)

    // A put through one node: placement on the true k closest, lookups per put.
    const P = nodes[Math.floor(N / 2)]
    const bytes = crypto.randomBytes(600 * KiB)
    const blocks: Block[] = []
    const before = P.node.placement.stats.lookups
    const root = await fileFromBytes(bytes, async bs => { blocks.push(...bs); await P.node.store.putMany(bs) })
    const placed = await P.node.replicator.waitReplicated(blocks.map(b => blockKey(b.cid)), 60_000)
    const lookups = P.node.placement.stats.lookups - before
    const ids = nodes.map(m => ({ m, kad: m.node.router.self.kad }))
    const misplaced: string[] = []
    for (const b of blocks) {
      for (const { m } of closestK(kadId(blockKey(b.cid)), ids, K)) {
        if (!m.node.store.local.hasSync(b.cid)) misplaced.push(`${b.cid.toString().slice(-8)} not on node ${m.i}`)
      }
    }
    log(`put: ${blocks.length} blocks, ${lookups} lookups`)

    // Reads from nodes that never saw the blocks' holders: a sample spread over the chain.
    const others = nodes.filter(m => m !== P)
    const readers = spread(others, READERS === 'all' ? others.length : Number(READERS))
    const failures: string[] = []
    // SCALE_PROFILE=FILE: a CPU profile of the reads (where a read's time goes).
    const profile = process.env.SCALE_PROFILE
    const session = profile !== undefined ? new Session() : undefined
    if (session !== undefined) {
      session.connect()
      await session.post('Profiler.enable')
      await session.post('Profiler.start')
    }
    t0 = Date.now()
    await pool(readers, 2, async m => {
      const r0 = Date.now()
      const l0 = m.node.placement.stats.lookups
      try {
        const got = await new FileReader(root.cid as NonNullable<typeof root.cid>, m.node.store).read(0, bytes.length)
        if (Buffer.compare(Buffer.from(got), bytes) !== 0) failures.push(`node ${m.i}: bytes differ`)
      } catch (err) {
        failures.push(`node ${m.i}: ${(err as Error).message}`)
      }
      log(`node ${m.i} read the file in ${Date.now() - r0} ms, ${m.node.placement.stats.lookups - l0} lookups, ${m.node.store.stats.failedPeers} failed requests`)
    })
    if (session !== undefined && profile !== undefined) {
      const { profile: p } = await session.post('Profiler.stop')
      fs.writeFileSync(profile, JSON.stringify(p))
      session.disconnect()
    }
    const readMs = Date.now() - t0
    const fetch = readers.reduce((a, m) => ({ remote: a.remote + m.node.store.stats.remote, lookups: a.lookups + m.node.placement.stats.lookups, failed: a.failed + m.node.store.stats.failedPeers }), { remote: 0, lookups: 0, failed: 0 })
    log(`reads: ${readers.length} readers in ${readMs} ms`)

    // 30% stopped at once, the replicas of a file nobody has read first.
    const W = nodes[3]
    const second: Block[] = []
    await fileFromBytes(crypto.randomBytes(500 * KiB), async bs => { second.push(...bs); await W.node.store.putMany(bs) })
    const keys = second.map(b => blockKey(b.cid))
    const placed2 = await W.node.replicator.waitReplicated(keys, 120_000)
    const replicas = new Set(keys.flatMap(key => closestK(kadId(key), ids, K).map(({ m }) => m)).filter(m => m !== W))
    const rest = nodes.filter(m => m !== W && !replicas.has(m)).sort(() => Math.random() - 0.5)
    const victims: MemNode[] = [...replicas, ...rest].slice(0, Math.round(N * 0.3))
    const hit = keys.filter(key => victims.some(m => m.node.store.local.hasSync(cidFromKey(key)))).length
    const repairedBefore = nodes.filter(m => !victims.includes(m)).reduce((a, m) => a + m.node.replicator.status().repaired, 0)
    t0 = Date.now()
    await Promise.all(victims.map(async m => await m.stop()))
    const live = nodes.filter(m => m.alive())
    const liveIds = live.map(m => ({ m, kad: m.node.router.self.kad }))
    let missing: string[] = []
    let lastLog = Date.now()
    // A wait that runs out is not an error here: the report says what is still missing, and the
    // test judges it.
    await waitFor('every block back on its true k closest live nodes', () => {
      missing = []
      for (const key of keys) {
        for (const { m } of closestK(kadId(key), liveIds, K)) {
          if (!m.node.store.local.hasSync(cidFromKey(key))) missing.push(`${Buffer.from(key).toString('hex').slice(0, 8)} not on node ${m.i}`)
        }
      }
      if (Date.now() - lastLog > 10_000) { lastLog = Date.now(); log(`restore: ${missing.length} copies missing after ${Date.now() - t0} ms`) }
      return missing.length === 0
    }, 240_000, 1000).catch(() => {})
    const restoreMs = Date.now() - t0
    const lost = keys.filter(key => !live.some(m => m.node.store.local.hasSync(cidFromKey(key)))).length
    const repaired = live.reduce((a, m) => a + m.node.replicator.status().repaired, 0) - repairedBefore
    // Read-cache copies the live nodes' repair passes left out (the readers' copies of the file).
    const cacheCopiesSkipped = live.reduce((a, m) => a + m.node.replicator.status().cacheCopiesSkipped, 0)
    log(`churn: ${victims.length} stopped, ${missing.length} copies missing after ${restoreMs} ms`)

    // Connections: every live node back at or below its bound.
    let open: number[] = []
    await waitFor(`every node at or below ${MAX} connections`, () => (open = live.map(m => m.node.libp2p.getConnections().length)).every(n => n <= MAX), 30_000, 250).catch(() => {})
    const lk = live.map(m => m.node.router.status())
    const report: ScaleReport = {
      n: N,
      max: MAX,
      k: K,
      startMs,
      settleMs,
      tableMin: Math.min(...sizes),
      tableMax: Math.max(...sizes),
      disagree,
      agreementLookups,
      put: { blocks: blocks.length, short: placed.blocksShort, lookups, misplaced },
      reads: { readers: readers.length, failures, remote: fetch.remote, lookups: fetch.lookups, failedRequests: fetch.failed, ms: readMs },
      churn: { blocks: keys.length, short: placed2.blocksShort, stopped: victims.length, hit, lost, missing, restoreMs, repaired, cacheCopiesSkipped },
      connections: {
        open,
        peak: Math.max(...live.map(m => m.node.connections.stats.peak)),
        perLookup: lk.reduce((a, s) => a + s.queries, 0) / Math.max(1, lk.reduce((a, s) => a + s.lookups, 0)),
        hopsP50: lk.map(s => s.hopsP50).sort((a, b) => a - b)
      },
      cpuS: 0
    }
    const c = process.cpuUsage(cpu0)
    report.cpuS = Math.round((c.user + c.system) / 1e5) / 10
    process.stdout.write(JSON.stringify(report) + '\n')
  } finally {
    // Node teardowns were registered after the directory's removal: run them newest first.
    for (const fn of teardowns.reverse()) await Promise.resolve(fn()).catch(err => log(`teardown: ${(err as Error).message}`))
  }
}

main().then(() => process.exit(0), err => {
  log(`failed: ${(err as Error).stack ?? String(err)}`)
  process.exit(1)
})
