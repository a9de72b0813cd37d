// Kademlia placement over partial views, on 64 real reef DHT nodes in one process over
// libp2p's in-memory transport (@libp2p/memory: one process and no sockets, so 64 full libp2p
// stacks fit this machine; the transport is the only difference from TCP). Each node may hold
// 12 connections at most, so no node can see most of the others; they join as a chain (node i
// through node i-1). Once routing tables settle, nodes agree on a key's k closest through their
// own lookups, and those are the true k closest of all 64 ids; a multi-block file put through
// one node is read back, every block of it, by every other node, and no node holds more than
// its bound of connections for long. Lookups per put are counted: a put of B blocks costs
// about as many lookups as key regions, not B. Then 30% of the nodes are stopped at once:
// nothing that had a surviving replica is lost, and repair (periodic and churn-driven, no
// command) brings every block back to its true k closest live nodes.
import tap from 'tap'
import crypto from 'node:crypto'
import { type Block, blockKey, cidFromKey } from '../src/block/index.js'
import { kadId } from '../src/dht/placement.js'
import { closestK } from '../src/dht/regions.js'
import { FileReader, fileFromBytes } from '../src/object/file.js'
import { waitFor } from './helpers/cluster.js'
import { startMemNet } from './helpers/memnet.js'

// 64 nodes at 12 connections each take about 10 minutes of one core here (each lookup request
// mostly needs a new connection: noise, identify, kad-dht's contact ping), too long for the
// suite: it runs 32 (still 12 of 31 peers at most) unless REEF_TEST_SCALE_N says otherwise.
// Partial views (tables holding a fraction of the nodes) are tested at 1,000 model nodes by
// test/kademlia, on the same routing code.
const N = Number(process.env.REEF_TEST_SCALE_N ?? 32)
const K = 3
const MAX = 12
const KiB = 1024

/** Runs `fn` over `items`, `width` at a time (64 lookups at once overload one shared core). */
async function pool<T> (items: T[], width: number, fn: (x: T, i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) {
      const i = next++
      await fn(items[i], i)
    }
  }))
}

tap.test(`${N} nodes, at most ${MAX} connections each, chain bootstrap: agreement, reads everywhere, 30% killed`, { timeout: 1_200_000 }, async t => {
  const { nodes } = await startMemNet(t, N, { k: K, maxConnections: MAX, topology: 'chain', repairIntervalMs: 20_000, fetchDeadlineMs: 30_000 })
  // Settling: each node looks itself up once more, as its periodic refresh would (the early
  // nodes of the chain joined when there was little to find). Nobody learns everyone.
  let next = 0
  const t0 = Date.now()
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (next < nodes.length) {
      const m = nodes[next++]
      await m.node.router.refresh(true)
    }
  }))
  const sizes = nodes.map(m => m.node.router.table.size)
  t.pass(`settled in ${Date.now() - t0} ms; routing table sizes ${Math.min(...sizes)}..${Math.max(...sizes)} (of ${N - 1} peers)`)

  const everyone = nodes.map(m => m.node.router.self)
  t.test('partial views agree on the k closest, and they are the true k closest', async t => {
    for (let j = 0; j < 2; j++) {
      const key = crypto.randomBytes(32)
      const truth = closestK(kadId(key), everyone, K).map(m => m.key)
      const answers: string[][] = []
      await pool(nodes, 8, async (m, i) => {
        const res = await m.node.router.lookup(key)
        answers[i] = closestK(kadId(key), [m.node.router.self, ...res.peers], K).map(p => p.key)
      })
      const wrong = answers.map((a, i) => [i, a] as const).filter(([, a]) => a.join() !== truth.join())
      t.same(wrong.map(([i]) => i), [], `key ${j}: all ${N} nodes found the same true ${K} closest`)
    }
  })

  t.test('a multi-block file put through one node is read by every other node', async t => {
    const P = nodes[Math.floor(N / 2)].node
    const bytes = crypto.randomBytes(600 * KiB)
    const blocks: Block[] = []
    const before = P.placement.stats.lookups
    const root = await fileFromBytes(bytes, async bs => { blocks.push(...bs); await P.store.putMany(bs) })
    const res = await P.replicator.waitReplicated(blocks.map(b => blockKey(b.cid)), 60_000)
    const lookups = P.placement.stats.lookups - before
    t.equal(res.blocksShort, 0, `all ${blocks.length} blocks on ${K} replicas`)
    t.ok(blocks.length >= 8, `the file is ${blocks.length} blocks`)
    t.ok(lookups < blocks.length, `the put took ${lookups} lookups for ${blocks.length} blocks (region batching)`)
    // Each block sits on its true k closest nodes (and its publisher).
    const misplaced: string[] = []
    for (const b of blocks) {
      const key = blockKey(b.cid)
      for (const { m } of closestK(kadId(key), nodes.map(m => ({ m, kad: m.node.router.self.kad })), K)) {
        if (!m.node.store.local.hasSync(b.cid)) misplaced.push(`${b.cid.toString().slice(-8)} not on node ${m.i}`)
      }
    }
    t.same(misplaced, [], 'every block on its true k closest nodes')

    const failures: string[] = []
    let next = 0
    const readers = nodes.filter(m => m.node !== P)
    // A few readers at a time: the machine is shared; every read still goes through lookups.
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next < readers.length) {
        const m = readers[next++]
        try {
          const got = await new FileReader(root.cid as NonNullable<typeof root.cid>, m.node.store).read(0, bytes.length)
          if (Buffer.compare(Buffer.from(got), bytes) !== 0) failures.push(`node ${m.i}: bytes differ`)
        } catch (err) {
          failures.push(`node ${m.i}: ${(err as Error).message}`)
        }
      }
    }))
    t.same(failures, [], `all ${readers.length} other nodes read the whole file`)
    const fetch = readers.reduce((a, m) => ({ remote: a.remote + m.node.store.stats.remote, lookups: a.lookups + m.node.placement.stats.lookups, failed: a.failed + m.node.store.stats.failedPeers }), { remote: 0, lookups: 0, failed: 0 })
    t.pass(`reads: ${fetch.remote} blocks fetched, ${fetch.lookups} lookups, ${fetch.failed} failed requests`)
  })

  t.test('30% of the nodes stopped at once: nothing with a surviving replica is lost, repair restores k', async t => {
    // A file nobody has read (readers cache what they fetch, so the first file is everywhere by
    // now), put through another node; the nodes stopped are its replicas first, then others.
    const W = nodes[3]
    const blocks: Block[] = []
    await fileFromBytes(crypto.randomBytes(500 * KiB), async bs => { blocks.push(...bs); await W.node.store.putMany(bs) })
    const keys = blocks.map(b => blockKey(b.cid))
    const placed = await W.node.replicator.waitReplicated(keys, 120_000)
    t.equal(placed.blocksShort, 0, `all ${keys.length} blocks of the second file on ${K} replicas`)
    const ids = nodes.map(m => ({ m, kad: m.node.router.self.kad }))
    const replicas = new Set(keys.flatMap(key => closestK(kadId(key), ids, K).map(({ m }) => m)).filter(m => m !== W))
    const others = nodes.filter(m => m !== W && !replicas.has(m)).sort(() => Math.random() - 0.5)
    const victims = [...replicas, ...others].slice(0, Math.round(N * 0.3))
    const held = (key: Uint8Array): number => victims.filter(m => m.node.store.local.hasSync(cidFromKey(key))).length
    const hit = keys.filter(key => held(key) > 0).length
    const repairedBefore = nodes.filter(m => !victims.includes(m)).reduce((a, m) => a + m.node.replicator.status().repaired, 0)
    const t0 = Date.now()
    await Promise.all(victims.map(async m => await m.stop()))
    const live = nodes.filter(m => m.alive())
    const liveIds = live.map(m => ({ m, kad: m.node.router.self.kad }))
    let short: string[] = []
    await waitFor('every block back on its true k closest live nodes', () => {
      short = []
      for (const key of keys) {
        for (const { m } of closestK(kadId(key), liveIds, K)) {
          if (!m.node.store.local.hasSync(cidFromKey(key))) short.push(`${Buffer.from(key).toString('hex').slice(0, 8)} not on node ${m.i}`)
        }
      }
      return short.length === 0
    }, 300_000, 1000).catch(err => { throw new Error(`${(err as Error).message}: ${short.length} missing, e.g. ${short.slice(0, 5).join('; ')}`) })
    const lost = keys.filter(key => !live.some(m => m.node.store.local.hasSync(cidFromKey(key))))
    t.equal(lost.length, 0, 'no block lost (its writer survives, so each had a live replica)')
    t.ok(hit > 0, `${hit} of ${keys.length} blocks had a replica among the ${victims.length} stopped nodes`)
    const repaired = live.reduce((a, m) => a + m.node.replicator.status().repaired, 0) - repairedBefore
    t.ok(repaired > 0, `${victims.length} of ${N} nodes stopped; k=${K} restored for all ${keys.length} blocks in ${Date.now() - t0} ms; ${repaired} copies re-sent by repair`)
  })

  t.test('connections stay bounded', async t => {
    let open: number[] = []
    const live = nodes.filter(m => m.alive())
    await waitFor(`every node at or below ${MAX} connections`, () => (open = live.map(m => m.node.libp2p.getConnections().length)).every(n => n <= MAX), 30_000, 250)
      .catch(err => { throw new Error(`${(err as Error).message}: ${open.join(',')}`) })
    const peaks = live.map(m => m.node.connections.stats.peak)
    const lk = live.map(m => m.node.router.status())
    const contacted = lk.reduce((a, s) => a + s.queries, 0) / Math.max(1, lk.reduce((a, s) => a + s.lookups, 0))
    const hops = lk.map(s => s.hopsP50).sort((a, b) => a - b)
    t.pass(`open connections ${Math.min(...open)}..${Math.max(...open)}, peak ${Math.max(...peaks)}; ${contacted.toFixed(1)} peers asked per lookup; per-node hops p50 ${hops[0]}..${hops[hops.length - 1]}`)
  })
})
