// Kademlia's routing table and iterative lookup (src/dht/kademlia.ts) and placement batched by key
// region (src/dht/regions.ts), on a model network in memory: every answer is checked against the
// true k closest, computed from the whole node list that no node has.
import t from 'tap'
import crypto from 'node:crypto'
import { byDistance, keyInBucket, lookup, RoutingTable, sharedBits, type Contact } from '../src/dht/kademlia.js'
import { kadId, wasNear } from '../src/dht/placement.js'
import { Regions, type Peer, type RoutingEngine } from '../src/dht/regions.js'

interface Node extends Peer { table: RoutingTable<Node>, alive: boolean }

/** `n` nodes whose tables were filled the way joins fill them: by looking up their own ids. */
async function model (n: number): Promise<Node[]> {
  const nodes: Node[] = []
  for (let i = 0; i < n; i++) {
    const key = `n${i}`
    const node = { key, kad: kadId(Buffer.from(key)), self: false, alive: true } as Node
    node.table = new RoutingTable<Node>(node)
    nodes.push(node)
  }
  for (const [i, node] of nodes.entries()) {
    if (i === 0) continue
    // Joins through a random earlier node, then looks itself up: the nodes it asks learn of it.
    node.table.add(nodes[Math.floor(Math.random() * i)])
    await lookup(node.kad, node.table.closest(node.kad, 20), async (c) => ask(node, c, node.kad), node.key)
  }
  return nodes
}

async function ask (from: Node, to: Node, target: Uint8Array): Promise<Node[]> {
  if (!to.alive) {
    from.table.remove(to.key)
    throw new Error('dead')
  }
  to.table.add(from)
  from.table.add(to)
  return to.table.closest(target, 20)
}

function engineOf (node: Node, hops: number[]): RoutingEngine<Node> {
  return {
    self: { ...node, self: true },
    full: 20,
    lookup: async (key) => {
      const w = await lookup(kadId(key), node.table.closest(kadId(key), 20), async (c) => await ask(node, c, kadId(key)), node.key)
      hops.push(w.hops)
      return { peers: w.peers, complete: w.failed.length === 0 }
    }
  }
}

t.test('regions: lookups for different regions run at once, each key still on its true k closest', async t => {
  const nodes = await model(500)
  const from = nodes[11]
  const keys = Array.from({ length: 2000 }, () => new Uint8Array(crypto.randomBytes(32)))
  const truth = keys.map(key => byDistance(kadId(key), nodes).slice(0, 3).map(n => n.key).join())
  const run = async (concurrency: number): Promise<{ lookups: number, most: number, right: number }> => {
    let inflight = 0
    let most = 0
    const plain = engineOf(from, [])
    const engine: RoutingEngine<Node> = {
      ...plain,
      // A lookup takes a few turns of the event loop, as a network's would.
      lookup: async (key, signal) => {
        most = Math.max(most, ++inflight)
        try {
          for (let i = 0; i < 3; i++) await new Promise(resolve => setImmediate(resolve))
          return await plain.lookup(key, signal)
        } finally {
          inflight--
        }
      },
      // As the router estimates it: the region its own 20 closest contacts span.
      regionBits: () => {
        const near = from.table.closest(from.kad, 20)
        return near.length < 20 ? 0 : sharedBits(from.kad, near[near.length - 1].kad) + 1
      }
    }
    const regions = new Regions(engine, 3)
    const got = await regions.closestMany(keys, undefined, concurrency)
    return { lookups: regions.stats.lookups, most, right: got.filter((g, i) => g.map(p => p.key).join() === truth[i]).length }
  }
  const one = await run(1)
  const three = await run(3)
  t.equal(one.most, 1, 'one at a time')
  t.equal(three.most, 3, 'three at once')
  t.equal(one.right, keys.length, 'every key placed on its true 3 closest, one at a time')
  t.equal(three.right, keys.length, 'and three at once')
  t.ok(three.lookups <= one.lookups * 1.5, `${three.lookups} lookups three at once, ${one.lookups} one at a time`)
})

t.test('routing table: buckets by shared prefix, old contacts kept, replace on failure', async t => {
  const self: Contact = { key: 'self', kad: kadId(Buffer.from('self')) }
  const table = new RoutingTable<Contact>(self, 2)
  const inBucket = (bits: number, i: number): Contact => ({ key: `b${bits}-${i}`, kad: keyInBucket(self.kad, bits, n => crypto.randomBytes(n)) })
  for (const bits of [0, 1, 7, 8, 13]) t.equal(sharedBits(self.kad, inBucket(bits, 0).kad), bits, `keyInBucket(${bits}) shares exactly ${bits} bits`)
  const [a, b, c] = [inBucket(0, 0), inBucket(0, 1), inBucket(0, 2)]
  t.equal(table.add(a), 'added')
  t.equal(table.add(b), 'added')
  t.equal(table.add(c), 'full', 'a full bucket keeps its old contacts')
  t.equal(table.oldest(c.kad)?.key, a.key)
  t.equal(table.add(a), 'updated', 'seen again: moves to the tail')
  t.equal(table.oldest(c.kad)?.key, b.key)
  t.ok(table.replace(b.key, c), 'a failed contact gives its place')
  t.same(table.all().map(x => x.key).sort(), [a.key, c.key].sort())
  t.equal(table.add({ ...self }), 'self')
  t.equal(table.size, 2)
  t.same(table.stale(0, 2), [0, 1], "buckets due for refresh")
  t.same(table.stale(60_000, 2), [], "none while young")
})

t.test('lookups on a 1,000-node model network find the true closest in O(log N) hops', async t => {
  const nodes = await model(1000)
  const sizes = nodes.map(n => n.table.size).sort((a, b) => a - b)
  t.ok(sizes[sizes.length - 1] < 400, `no node knows every other (table sizes ${sizes[0]}..${sizes[sizes.length - 1]} of 999)`)
  const hops: number[] = []
  let exact = 0
  for (let i = 0; i < 100; i++) {
    const from = nodes[Math.floor(Math.random() * nodes.length)]
    const target = crypto.randomBytes(32)
    const w = await lookup(target, from.table.closest(target, 20), async c => await ask(from, c, target), from.key)
    const truth = byDistance(target, nodes.filter(n => n !== from)).slice(0, 20).map(n => n.key)
    if (w.peers.map(p => p.key).join() === truth.join()) exact++
    t.ok(w.queries <= 200, 'bounded')
    hops.push(w.hops)
  }
  hops.sort((a, b) => a - b)
  t.equal(exact, 100, 'every lookup returned the true 20 closest')
  t.ok(hops[49] <= Math.ceil(Math.log2(1000)), `hops p50 ${hops[49]} p95 ${hops[94]} <= log2 N`)
})

t.test('a dead contact fails, leaves the table, and the walk still finds the live closest', async t => {
  const nodes = await model(300)
  const target = crypto.randomBytes(32)
  const truth = byDistance(target, nodes)
  for (const n of truth.slice(0, 5)) n.alive = false
  const from = truth[truth.length - 1]
  const w = await lookup(target, from.table.closest(target, 20), async c => await ask(from, c, target), from.key)
  t.same(w.peers.slice(0, 15).map(p => p.key), truth.slice(5, 20).map(p => p.key), 'the live closest, in order')
  t.ok(w.failed.every(f => !f.alive), 'only dead contacts failed')
  for (const f of w.failed) t.notOk(from.table.has(f.key), `${f.key} left the table`)
})

t.test('regions: one lookup serves every key of an enumerated subtree, each answer the true k closest', async t => {
  const nodes = await model(500)
  const from = nodes[7]
  const hops: number[] = []
  const regions = new Regions(engineOf(from, hops), 3)
  const keys = Array.from({ length: 2000 }, () => new Uint8Array(crypto.randomBytes(32)))
  const got = await regions.closestMany(keys)
  let right = 0
  for (const [i, key] of keys.entries()) {
    const truth = byDistance(kadId(key), nodes).slice(0, 3).map(n => n.key)
    if (got[i].map(p => p.key).join() === truth.join()) right++
  }
  t.equal(right, keys.length, 'every key placed on its true 3 closest')
  t.ok(regions.stats.lookups < keys.length / 4, `${regions.stats.lookups} lookups for ${keys.length} keys (N/k = ${Math.round(500 / 3)})`)
  t.equal(regions.stats.lookups + regions.stats.hits, keys.length)

  // A new node inside a cached region makes that region stale: its keys are looked up again.
  const before = regions.stats.lookups
  const region = got[0]
  const near = nodes.find(n => !region.some(p => p.key === n.key) && sharedBits(n.kad, kadId(keys[0])) >= 1)
  if (near !== undefined) regions.peerSeen(near)
  regions.suspect(region[0].key)
  t.equal(regions.cached(keys[0]), undefined, 'a region holding a suspect peer is dropped')
  await regions.closest(keys[0])
  t.equal(regions.stats.lookups, before + 1, 'and looked up again')
})

t.test('regions: a peer the table met while a walk ran is in the region the walk caches', async t => {
  // Five nodes; the walk's answer is from before the fifth joined, which the table has since met
  // (its peerSeen came before the region existed, so nothing dropped the region).
  const mk = (key: string): Peer => ({ key, kad: kadId(Buffer.from(key)), self: false })
  const self = { ...mk('self'), self: true }
  const others = ['a', 'b', 'c'].map(mk)
  const late = mk('late')
  const table: Peer[] = [...others]
  let lookups = 0
  const engine: RoutingEngine<Peer> = {
    self,
    full: 20,
    known: () => table,
    lookup: async () => {
      lookups++
      const answer = { peers: [...others], complete: true }
      table.push(late) // joins while the walk is out
      return answer
    }
  }
  const regions = new Regions(engine, 3)
  const keys = Array.from({ length: 200 }, () => new Uint8Array(crypto.randomBytes(32)))
  const got = await regions.closestMany(keys)
  let right = 0
  for (const [i, key] of keys.entries()) {
    const truth = byDistance(kadId(key), [self, ...others, late]).slice(0, 3).map(p => p.key)
    if (got[i].map(p => p.key).join() === truth.join()) right++
  }
  t.equal(right, keys.length, 'every key on its true 3 closest of all five, the late joiner included')
  t.ok(got.some(g => g.some(p => p.key === 'late')), 'the late joiner holds some keys')
  const again = await regions.closest(keys[0])
  t.equal(lookups, 1, 'one lookup: the cached region answers, with the late joiner')
  t.same(again.map(p => p.key), byDistance(kadId(keys[0]), [self, ...others, late]).slice(0, 3).map(p => p.key))
})

t.test('a departure is near a record only if the departed would be among its n closest', async t => {
  // 200 ids; a record's 20 closest; a node that knows all of them (the holders' own view).
  const ids = Array.from({ length: 200 }, () => kadId(crypto.randomBytes(32)))
  const target = kadId(crypto.randomBytes(32))
  const ranked = byDistance(target, ids.map(kad => ({ kad })))
  const holders = ranked.slice(0, 20)
  const outside = ranked.slice(20)
  // One of the 20 closest left: the survivors' 20 closest known are the other 19 and the 21st.
  const known = ranked.filter(c => c !== holders[5]).slice(0, 20)
  t.ok(wasNear(target, known, 20, [holders[5].kad]), 'a holder that left is near')
  t.ok(wasNear(target, known, 20, [outside[40].kad, holders[5].kad]), 'one near departure among far ones is enough')
  const far = outside.slice(5, 60).map(c => c.kad)
  t.notOk(wasNear(target, holders, 20, far), '55 departures farther than the 20th closest are not near')
  t.notOk(wasNear(target, holders, 20, []), 'no departure, nothing near')
  t.ok(wasNear(target, holders.slice(0, 12), 20, [outside[100].kad]), 'a node that knows fewer than 20 near the key cannot rule one out')
})
