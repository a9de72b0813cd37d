/**
 * reef's scale simulator: a discrete-event simulation of a Kademlia network that drives reef's
 * own routing and placement code, not a model of it:
 *   - src/dht/kademlia.ts: RoutingTable (each node's k-buckets) and lookup (the iterative walk,
 *     alpha requests in flight; Walk.hops), keyInBucket (bucket refresh on join);
 *   - src/dht/regions.ts: Regions, placement batched by key region over a RoutingEngine;
 *   - src/dht/repair-plan.ts: planRepair, the repair decision the Replicator makes.
 * What the simulator supplies is the network those run on: node ids, request latency, dead
 * nodes that time out, churn, block stores, and a virtual clock.
 *
 * Discrete-event core: a virtual clock (ms) and an event queue (a binary heap ordered by time,
 * then by insertion). No real timers, no sleeps. A request `ask(c)` from lookup returns a
 * Promise; the event that settles it is queued at now + RTT (answer) or now + timeout (the
 * callee is down). After each event the driver waits for setImmediate, by which time every
 * promise continuation the event set off has run (continuations queue new events, never run
 * later), so events are processed in time order and a run is a pure function of its seed.
 *
 * Latency: each request/response (one hop) takes an RTT drawn from a log-normal distribution,
 * median 50 ms, sigma 0.6 (p95 134 ms, p99 200 ms). Log-normal because wide-area RTTs are
 * skewed to the right with a floor and a long tail; the median sits between intra-continental
 * (20-40 ms) and intercontinental (80-150 ms) paths. An assumption, not a measurement. A request
 * to a node that is down fails after TIMEOUT (1 s simulated). Bandwidth is not modelled: a
 * block push takes one RTT.
 *
 * Routing tables are built at start, not by simulating N joins (100,000 joins of log N lookups
 * each would cost more than the experiments). A table after many joins and refreshes holds, in
 * bucket i, up to 20 nodes among those sharing exactly i leading bits with it; so for each node
 * and each i the nodes of that subtree are a contiguous range of the id-sorted array (the node's
 * first i bits, then bit i flipped), and the bucket takes up to 20 members of the range at
 * random. That is the table the paper's join and refresh converge to, minus any preference for
 * old contacts. Later joins (replacement nodes) do join the paper's way: look themselves up,
 * then look up a key in each bucket (keyInBucket).
 *
 * Table upkeep follows src/dht/router.ts: a node that answers or asks is added to the table if
 * its bucket has room (full buckets keep their old contacts); a node that fails a request
 * leaves the table, and regions holding it are dropped (Regions.suspect). A node coming back up
 * looks itself up. Not modelled: the router's periodic refresh of stale buckets (one lookup per
 * stale bucket every minute: at 10^5 nodes it would dominate the run); tables here are kept up
 * by lookups and rejoins only, so they are staler than the real ones, which errs against reef.
 */
import { BUCKET_SIZE, ALPHA, keyInBucket, lookup, RoutingTable, sharedBits, type AddResult, type Contact, type Walk } from '../../src/dht/kademlia.js'
import { compareDistance, kadId, type KadId } from '../../src/dht/placement.js'
import { Regions, type Peer, type RoutingEngine } from '../../src/dht/regions.js'
import { planRepair, type RepairTarget } from '../../src/dht/repair-plan.js'
import { availability as churnAvailability, downWithin, HOUR, DAY, initialState, ipfsChurn, sampleWeibull, describeChurn, type ChurnModel } from './churn.js'

// ---------------------------------------------------------------------------------------------
// Randomness: a seeded generator (sfc32, seeded through splitmix32), so runs repeat exactly.

export function prng (seed: number): () => number {
  let s = seed >>> 0
  const split = (): number => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return (z ^ (z >>> 16)) >>> 0
  }
  let a = split()
  let b = split()
  let c = split()
  let d = split()
  return () => {
    const t = (((a + b) >>> 0) + d) >>> 0
    d = (d + 1) >>> 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) >>> 0
    c = ((c << 21) | (c >>> 11)) >>> 0
    c = (c + t) >>> 0
    return t / 4294967296
  }
}

function randomBytes (rand: () => number, n: number): Uint8Array {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = Math.floor(rand() * 256)
  return out
}

function normal (rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())
}

// ---------------------------------------------------------------------------------------------
// The event queue.

interface Ev { t: number, seq: number, fn: () => void }

export class EventQueue {
  private readonly heap: Ev[] = []
  private seq = 0
  get size (): number { return this.heap.length }
  peek (): number { return this.heap.length > 0 ? this.heap[0].t : Infinity }

  push (t: number, fn: () => void): void {
    const h = this.heap
    const e = { t, seq: this.seq++, fn }
    let i = h.length
    h.push(e)
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!less(e, h[p])) break
      h[i] = h[p]
      i = p
    }
    h[i] = e
  }

  pop (): Ev | undefined {
    const h = this.heap
    if (h.length === 0) return undefined
    const top = h[0]
    const last = h.pop() as Ev
    if (h.length > 0) {
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        if (l >= h.length) break
        const r = l + 1
        const c = r < h.length && less(h[r], h[l]) ? r : l
        if (!less(h[c], last)) break
        h[i] = h[c]
        i = c
      }
      h[i] = last
    }
    return top
  }
}

function less (a: Ev, b: Ev): boolean { return a.t < b.t || (a.t === b.t && a.seq < b.seq) }

/**
 * Lets every promise continuation an event set off run before the next event: Node runs the
 * nextTick queue only once V8's microtask queue is empty, including the microtasks queued while
 * it drained, so awaiting a nextTick waits out any chain of continuations (0.25 us; setImmediate,
 * which also works, costs 2.7 us and half the run's time went to it). Nothing in the simulated
 * code uses nextTick itself.
 */
const tick = process.env.REEF_SIM_TICK === 'immediate'
  ? async (): Promise<void> => await new Promise<void>(resolve => setImmediate(resolve))
  : async (): Promise<void> => await new Promise<void>(resolve => process.nextTick(resolve))

// ---------------------------------------------------------------------------------------------
// Routing tables.

/**
 * reef's RoutingTable, with an index of its contacts by bucket so that `closest` (each request a
 * node answers asks it for its 20 closest to a target) need not sort the whole table: RoutingTable
 * sorts all ~20 log2(N/20) contacts per call, which was 45% of the simulator's time. The answer
 * is the same list (test/scale-sim checks it against RoutingTable.closest): with s the bits the
 * target shares with this node, bucket s's contacts share more than s bits with the target and
 * are the closest; then come the contacts of every deeper bucket (they share exactly s bits);
 * then bucket s-1, s-2, ... 0, each farther than the one before. Each group is sorted by
 * distance, and groups are taken until n contacts are found. Every table operation (add,
 * replace, remove, buckets, LRU order) stays RoutingTable's own.
 */
export class SimTable<C extends Contact> extends RoutingTable<C> {
  private readonly byBucket: C[][] = []

  override add (c: C): AddResult {
    const r = super.add(c)
    if (r === 'added') {
      const i = this.bucketOf(c.kad)
      let b = this.byBucket[i]
      if (b === undefined) this.byBucket[i] = b = []
      b.push(c)
    }
    return r
  }

  override remove (key: string): boolean {
    const c = this.get(key)
    if (c === undefined || !super.remove(key)) return false
    const b = this.byBucket[this.bucketOf(c.kad)]
    b.splice(b.indexOf(c), 1)
    return true
  }

  override closest (target: KadId, n: number): C[] {
    const s = sharedBits(this.self.kad, target)
    const out: C[] = []
    const take = (group: C[]): void => {
      if (group.length === 0) return
      group.sort((a, b) => compareDistance(target, a.kad, b.kad))
      for (const c of group) {
        if (out.length >= n) return
        out.push(c)
      }
    }
    take([...(this.byBucket[s] ?? [])])
    if (out.length >= n) return out
    const deeper: C[] = []
    for (let j = s + 1; j < this.byBucket.length; j++) { const b = this.byBucket[j]; if (b !== undefined) deeper.push(...b) }
    take(deeper)
    for (let j = Math.min(s, this.byBucket.length) - 1; j >= 0 && out.length < n; j--) take([...(this.byBucket[j] ?? [])])
    return out
  }
}

// ---------------------------------------------------------------------------------------------
// The network.

/**
 * A simulated node. Its routing table is filled on first use (see Network.setMembers): at
 * 100,000 nodes a table of ~260 contacts costs ~25 KB in RoutingTable's maps, and a run touches
 * only the nodes its lookups reach.
 */
export class SimNode implements Peer {
  readonly self = false
  up = true
  /** Left for good (its store is gone). */
  gone = false
  stable = false
  regions?: Regions<SimNode>
  engine?: RoutingEngine<SimNode>
  /** Block indexes held. */
  readonly blocks = new Set<number>()
  repairing = false
  private _table?: SimTable<SimNode>

  constructor (private readonly net: Network, readonly idx: number, readonly key: string, readonly kad: KadId,
    /** The id's first 48 bits as an exact integer (for sorting and prefix ranges). */
    readonly id48: number) {}

  get table (): SimTable<SimNode> {
    if (this._table === undefined) {
      this._table = new SimTable<SimNode>(this, this.net.bucketSize, this.net.clock)
      this.net.fill(this)
    }
    return this._table
  }

  /** Whether the table exists yet. */
  get hasTable (): boolean { return this._table !== undefined }

  /** A node that joins later starts with an empty table (it joins the paper's way). */
  emptyTable (): void { this._table = new SimTable<SimNode>(this, this.net.bucketSize, this.net.clock) }
}

export interface NetOptions {
  seed: number
  bucketSize?: number
  alpha?: number
  rttMedianMs?: number
  rttSigma?: number
  timeoutMs?: number
  /** Placement replication factor (Regions' k). */
  k?: number
  /**
   * How many closest contacts a walk collects before it ends (lookup's k, and Regions' `full`):
   * the paper's 20 by default; src/dht/router.ts walks to 10 (its WALK_SIZE). Answers to a
   * request are always bucketSize contacts, as the router's near() gives.
   */
  walkSize?: number
}

export interface NetStats {
  asks: number
  failedAsks: number
  walks: number
}

function id48Of (kad: KadId): number {
  return ((((kad[0] * 256 + kad[1]) * 256 + kad[2]) * 256 + kad[3]) * 256 + kad[4]) * 256 + kad[5]
}

/** First index in sorted `a` whose value is >= v. */
function lowerBound (a: Float64Array, len: number, v: number): number {
  let lo = 0
  let hi = len
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (a[mid] < v) lo = mid + 1
    else hi = mid
  }
  return lo
}

export class Network {
  readonly rand: () => number
  readonly q = new EventQueue()
  now = 0
  readonly nodes: SimNode[] = []
  readonly stats: NetStats = { asks: 0, failedAsks: 0, walks: 0 }
  readonly bucketSize: number
  readonly alpha: number
  readonly timeoutMs: number
  readonly k: number
  readonly walkSize: number
  private readonly mu: number
  private readonly sigma: number
  /** Events processed. */
  events = 0

  constructor (readonly opts: NetOptions) {
    this.rand = prng(opts.seed)
    this.bucketSize = opts.bucketSize ?? BUCKET_SIZE
    this.alpha = opts.alpha ?? ALPHA
    this.timeoutMs = opts.timeoutMs ?? 1000
    this.k = opts.k ?? 3
    this.walkSize = opts.walkSize ?? this.bucketSize
    this.mu = Math.log(opts.rttMedianMs ?? 50)
    this.sigma = opts.rttSigma ?? 0.6
  }

  readonly clock = (): number => this.now

  rtt (): number { return Math.min(this.timeoutMs, Math.exp(this.mu + this.sigma * normal(this.rand))) }

  at (t: number, fn: () => void): void { this.q.push(Math.max(t, this.now), fn) }

  addNode (up: boolean): SimNode {
    const kad = randomBytes(this.rand, 32)
    const node = new SimNode(this, this.nodes.length, `n${this.nodes.length}`, kad, id48Of(kad))
    node.up = up
    this.nodes.push(node)
    return node
  }

  private members?: { sorted: SimNode[], ids: Float64Array, has: Set<SimNode> }
  private readonly pick = new Set<number>()

  /**
   * The nodes routing tables are built from (the nodes up at the start). A node's table is
   * filled when first used: bucket i of node x takes up to bucketSize random members of the id
   * range sharing exactly i leading bits with x. Each table draws from its own generator (seeded
   * by the run's seed and the node's index), so a table is the same whenever it is first used.
   */
  setMembers (members: SimNode[]): void {
    const sorted = [...members].sort((a, b) => a.id48 - b.id48)
    this.members = { sorted, ids: Float64Array.from(sorted, m => m.id48), has: new Set(members) }
  }

  fill (x: SimNode): void {
    if (this.members === undefined) return
    const { sorted, ids, has } = this.members
    const n = ids.length
    const pick = this.pick
    const rand = prng((this.opts.seed * 7919 + x.idx * 104729) >>> 0)
    for (let i = 0; i < 48; i++) {
      const width = 2 ** (47 - i)
      // The subtree sharing at least i bits with x: if it holds nobody but x, deeper buckets are empty.
      const own = Math.floor(x.id48 / (width * 2)) * width * 2
      const others = lowerBound(ids, n, own + width * 2) - lowerBound(ids, n, own) - (has.has(x) ? 1 : 0)
      if (others <= 0) break
      const f = Math.floor(x.id48 / width)
      const v = f % 2 === 0 ? f + 1 : f - 1
      const lo = lowerBound(ids, n, v * width)
      const hi = lowerBound(ids, n, (v + 1) * width)
      const count = hi - lo
      if (count === 0) continue
      if (count <= this.bucketSize) {
        for (let j = lo; j < hi; j++) x.table.add(sorted[j])
      } else {
        pick.clear()
        while (pick.size < this.bucketSize) pick.add(lo + Math.floor(rand() * count))
        for (const j of pick) x.table.add(sorted[j])
      }
    }
  }

  /** A contact was heard from: into the table if its bucket has room (src/dht/router.ts seen()). */
  seen (x: SimNode, c: SimNode): void {
    if (x.table.add(c) === 'added') x.regions?.peerSeen(c)
  }

  /** A contact failed a request: it leaves the table, and regions holding it are dropped. */
  failed (x: SimNode, c: SimNode): void {
    x.table.remove(c.key)
    x.regions?.suspect(c.key)
  }

  /** One FIND_NODE: `to` answers with its closest contacts after one RTT, or fails after the timeout. */
  // Not async, and called without an async wrapper: a request is one promise (the simulator makes
  // millions, and each wrapper doubled the promises per request).
  ask (from: SimNode, to: SimNode, target: KadId): Promise<SimNode[]> {
    this.stats.asks++
    return new Promise<SimNode[]>((resolve, reject) => {
      if (!to.up) {
        this.stats.failedAsks++
        this.at(this.now + this.timeoutMs, () => reject(new Error('timeout')))
        return
      }
      // The callee hears the request and answers from its table as it is now: its bucketSize
      // closest, less the requester (as src/dht/router.ts near() does).
      this.seen(to, from)
      const answer = to.table.closest(target, this.bucketSize).filter(c => c.key !== from.key)
      this.at(this.now + this.rtt(), () => {
        this.seen(from, to)
        resolve(answer)
      })
    })
  }

  /** The iterative walk from x toward a kad id, reef's lookup; failed contacts leave x's table. */
  async walk (x: SimNode, target: KadId): Promise<Walk<SimNode>> {
    this.stats.walks++
    const w = await lookup(target, x.table.closest(target, this.bucketSize), c => this.ask(x, c, target), x.key, { alpha: this.alpha, k: this.walkSize })
    for (const f of w.failed) this.failed(x, f)
    return w
  }

  /** x's RoutingEngine and Regions (created on first use). */
  regionsOf (x: SimNode): Regions<SimNode> {
    if (x.regions === undefined) {
      const self = { key: x.key, kad: x.kad, self: true } as unknown as SimNode
      x.engine = {
        self,
        full: this.walkSize,
        lookup: async (key) => {
          const w = await this.walk(x, kadId(key))
          return { peers: w.peers, complete: w.complete && w.failed.length === 0 }
        }
      }
      x.regions = new Regions<SimNode>(x.engine, this.k, { now: this.clock })
    }
    return x.regions
  }

  /** Runs events until `p` settles (throws if the queue runs dry first). */
  async settle<T> (p: Promise<T>): Promise<T> {
    let done = false
    p.then(() => { done = true }, () => { done = true })
    await tick()
    while (!done) {
      const e = this.q.pop()
      if (e === undefined) throw new Error('simulation: event queue empty before the awaited work finished')
      this.now = e.t
      this.events++
      e.fn()
      await tick()
    }
    return await p
  }

  /** Runs every event up to time `t` (ms), then sets the clock to t. */
  async runUntil (t: number, onEvent?: () => void): Promise<void> {
    while (this.q.peek() <= t) {
      const e = this.q.pop() as Ev
      this.now = e.t
      this.events++
      e.fn()
      await tick()
      onEvent?.()
    }
    this.now = t
  }

  /** Sorted view of the given nodes, for the true closest to a key. */
  index (members: SimNode[]): { sorted: SimNode[], ids: Float64Array } {
    const sorted = [...members].sort((a, b) => a.id48 - b.id48)
    return { sorted, ids: Float64Array.from(sorted, m => m.id48) }
  }
}

/** The true `k` closest of an indexed set to `target`, `exclude` left out (no node has this list). */
export function trueClosest (ix: { sorted: SimNode[], ids: Float64Array }, target: KadId, k: number, exclude?: string): SimNode[] {
  const t48 = id48Of(target)
  const n = ix.ids.length
  let lo = 0
  let hi = n
  // The deepest subtree around the target holding more than k nodes: every node inside it is
  // closer to the target than every node outside, so the k closest are inside.
  for (let bits = 48; bits >= 0; bits--) {
    const width = 2 ** (48 - bits)
    const base = Math.floor(t48 / width) * width
    lo = lowerBound(ix.ids, n, base)
    hi = lowerBound(ix.ids, n, base + width)
    if (hi - lo > k) break
  }
  const cand = ix.sorted.slice(lo, hi).filter(m => m.key !== exclude)
  cand.sort((a, b) => compareDistance(target, a.kad, b.kad))
  return cand.slice(0, k)
}

function quantile (sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]
}

const mean = (xs: number[]): number => xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length

// ---------------------------------------------------------------------------------------------
// Experiment 1: lookup hops against log N, every node up.

export interface HopsOptions { n: number, lookups: number, seed: number, bucketSize?: number, alpha?: number, walkSize?: number }

export interface HopsResult {
  kind: 'sim'
  experiment: 'hops'
  n: number
  lookups: number
  bucketSize: number
  alpha: number
  walkSize: number
  hopsP50: number
  hopsP95: number
  hopsMax: number
  hopsMean: number
  queriesMean: number
  queriesP95: number
  /** Fraction of lookups that returned the true 3 closest (a get of a k=3 block finds a holder in its first answers). */
  getSuccess: number
  /** Fraction of lookups whose walkSize results were exactly the true walkSize closest, in order. */
  exactWalk: number
  latencyP50Ms: number
  latencyP95Ms: number
  /** Mean routing-table size (of the tables the run used). */
  tableMean: number
  tablesBuilt: number
  /** Analytic anchors: the paper's bound, and the estimate for 20-entry buckets (see hopsEstimate). */
  log2N: number
  paperBound: number
  estimate: number
  buildSeconds: number
  runSeconds: number
}

/**
 * Expected hops for a walk with `bucket`-entry buckets: a node sharing b bits with the target
 * keeps, in bucket b, `bucket` random nodes of the subtree sharing b+1 bits with the target; the
 * best of them shares about b + 1 + log2(bucket) bits. So each hop gains about log2(2 * bucket)
 * bits, starting from the caller's own table (Walk.hops counts a contact from it as hop 1), and
 * the closest node, which shares about log2 N bits with the target, is found after
 * log2(N) / log2(2 * bucket) hops. With bucket 20: log2(N) / 5.32 (N = 10^3: 1.9, 10^4: 2.5,
 * 10^5: 3.1). The paper's bound (one bit a hop) is ceil(log2 N); with b-bit digits the usual
 * figure is log_{2^b} N.
 */
export function hopsEstimate (n: number, bucket = BUCKET_SIZE): number {
  return Math.log2(n) / Math.log2(2 * bucket)
}

export async function runHops (o: HopsOptions): Promise<HopsResult> {
  const t0 = performance.now()
  const net = new Network({ seed: o.seed, bucketSize: o.bucketSize, alpha: o.alpha, walkSize: o.walkSize })
  for (let i = 0; i < o.n; i++) net.addNode(true)
  net.setMembers(net.nodes)
  const ix = net.index(net.nodes)
  const t1 = performance.now()
  const hops: number[] = []
  const queries: number[] = []
  const lat: number[] = []
  let top3 = 0
  let exact = 0
  for (let i = 0; i < o.lookups; i++) {
    const from = net.nodes[Math.floor(net.rand() * net.nodes.length)]
    const target = randomBytes(net.rand, 32)
    const start = net.now
    const w = await net.settle(net.walk(from, target))
    lat.push(net.now - start)
    hops.push(w.hops)
    queries.push(w.queries)
    const truth = trueClosest(ix, target, net.walkSize, from.key)
    const got = w.peers.map(p => p.key)
    if (truth.slice(0, 3).every(t => got.includes(t.key))) top3++
    if (got.join() === truth.map(t => t.key).join()) exact++
  }
  hops.sort((a, b) => a - b)
  queries.sort((a, b) => a - b)
  lat.sort((a, b) => a - b)
  return {
    kind: 'sim',
    experiment: 'hops',
    n: o.n,
    lookups: o.lookups,
    bucketSize: net.bucketSize,
    alpha: net.alpha,
    walkSize: net.walkSize,
    hopsP50: quantile(hops, 0.5),
    hopsP95: quantile(hops, 0.95),
    hopsMax: hops[hops.length - 1],
    hopsMean: mean(hops),
    queriesMean: mean(queries),
    queriesP95: quantile(queries, 0.95),
    getSuccess: top3 / o.lookups,
    exactWalk: exact / o.lookups,
    latencyP50Ms: quantile(lat, 0.5),
    latencyP95Ms: quantile(lat, 0.95),
    tableMean: mean(net.nodes.filter(x => x.hasTable).map(x => x.table.size)),
    tablesBuilt: net.nodes.filter(x => x.hasTable).length,
    log2N: Math.log2(o.n),
    paperBound: Math.ceil(Math.log2(o.n)),
    estimate: hopsEstimate(o.n, net.bucketSize),
    buildSeconds: (t1 - t0) / 1000,
    runSeconds: (performance.now() - t1) / 1000
  }
}

// ---------------------------------------------------------------------------------------------
// Experiment 2: block availability under churn, with repair.

export interface AvailabilityOptions {
  n: number
  blocks: number
  k: number
  days: number
  seed: number
  churn?: ChurnModel
  /** Each up node's repair pass period (staggered), seconds. */
  repairIntervalS?: number
  /** Readability sampled for the chart every this many seconds. */
  sampleEveryS?: number
  blockBytes?: number
  walkSize?: number
  /** Called now and then with progress (simulated days done). */
  progress?: (line: string) => void
}

export interface AvailabilityResult {
  kind: 'sim'
  experiment: 'availability'
  n: number
  blocks: number
  k: number
  days: number
  churn: string
  repairIntervalS: number
  /** Readable = some up node holds the block. Exact time-weighted mean, and the minimum ever. */
  readableMean: number
  readableMin: number
  /** Minimum over the run of the fraction readable, as sampled every sampleEveryS (the chart's points). */
  samples: Array<{ day: number, readable: number, lost: number }>
  /** Blocks no node (up or down) holds any more. */
  lost: number
  /** Initial placement: lookups and region hits for B keys from one writer. */
  put: { lookups: number, hits: number, seconds: number }
  /** Repair traffic. */
  repair: {
    passes: number
    lookups: number
    pushedBlocks: number
    pushedBytes: number
    checks: number
    failedPushes: number
    blocksPerNodeHour: number
    bytesPerNodeHour: number
    blocksPerUpNodeHour: number
    lookupsPerNodeHour: number
  }
  /** Requests (FIND_NODE) per node per hour, all causes (repair, rejoin, joins). */
  asksPerNodeHour: number
  holdersMean: number
  upHoldersMean: number
  churnEvents: { downs: number, ups: number, departures: number }
  upFractionMean: number
  analytic: {
    availability: number
    /** (1 - a)^k: a block on k fixed nodes, failures independent, no repair. */
    unreadableNoRepair: number
    /** P(an up node goes down within one repair interval). */
    downWithinInterval: number
    /** p^k: all k up holders go down before any of them repairs. */
    unreadableWithRepair: number
    /** Expected blocks lost: B * intervals * (1 - exp(-d T))^k. */
    expectedLost: number
  }
  runSeconds: number
  events: number
  rssMiB: number
}

export async function runAvailability (o: AvailabilityOptions): Promise<AvailabilityResult> {
  const wall0 = performance.now()
  const churn = o.churn ?? ipfsChurn()
  const T = (o.repairIntervalS ?? HOUR) * 1000
  const end = o.days * DAY * 1000
  const sampleEvery = (o.sampleEveryS ?? 600) * 1000
  const blockBytes = o.blockBytes ?? 256 * 1024
  const net = new Network({ seed: o.seed, k: o.k, walkSize: o.walkSize })
  const rand = net.rand
  const B = o.blocks

  // Nodes and their churn state at time 0 (a stationary start: see churn.initialState).
  const nextChange: number[] = []
  /** End of the measured run (set once the initial placement is done). */
  let stop = Infinity
  for (let i = 0; i < o.n; i++) {
    const x = net.addNode(true)
    x.stable = rand() < churn.stableFraction
    if (x.stable) {
      nextChange.push(Infinity)
    } else {
      const s = initialState(churn, rand)
      x.up = s.up
      nextChange.push(s.next * 1000)
    }
  }
  net.setMembers(net.nodes.filter(x => x.up))

  // Blocks: keys, holders (any state) and up holders; readable = up holders > 0.
  const keys: Uint8Array[] = []
  const blockOf = new Map<Uint8Array, number>()
  for (let b = 0; b < B; b++) {
    const key = randomBytes(rand, 32)
    keys.push(key)
    blockOf.set(key, b)
  }
  const holders = new Int32Array(B)
  const upHolders = new Int32Array(B)
  let readable = 0
  let lost = 0
  let readableMin = B
  let integral = 0
  let lastT = 0
  let measuring = false
  const account = (): void => {
    if (measuring) integral += readable * (net.now - lastT)
    lastT = net.now
  }
  const setUpHolders = (b: number, delta: number): void => {
    account()
    const before = upHolders[b]
    upHolders[b] += delta
    if (before === 0 && upHolders[b] > 0) readable++
    else if (before > 0 && upHolders[b] === 0) {
      readable--
      if (measuring && readable < readableMin) readableMin = readable
    }
  }
  const store = (x: SimNode, b: number): boolean => {
    if (x.gone || x.blocks.has(b)) return false
    x.blocks.add(b)
    holders[b]++
    if (x.up) setUpHolders(b, 1)
    return true
  }

  const stats = { passes: 0, repairLookups: 0, pushed: 0, checks: 0, failedPushes: 0, downs: 0, ups: 0, departures: 0 }

  // Pushes: one check (which of these keys do you lack?) and the push of those, each one RTT.
  const pushTo = async (from: SimNode, t: RepairTarget<SimNode>): Promise<boolean> => {
    stats.checks++
    const target = t.peer
    if (!target.up) {
      await new Promise<void>(resolve => net.at(net.now + net.timeoutMs, resolve))
      stats.failedPushes++
      net.failed(from, target)
      return false
    }
    const lacking = t.keys.map(k => blockOf.get(k) as number).filter(b => !target.blocks.has(b))
    await new Promise<void>(resolve => net.at(net.now + net.rtt(), resolve))
    if (lacking.length === 0) return true
    await new Promise<void>(resolve => net.at(net.now + net.rtt(), resolve))
    for (const b of lacking) if (store(target, b)) stats.pushed++
    return true
  }

  /** One repair pass of x over every block it holds: the shared decision, then pushes. */
  const repairPass = async (x: SimNode): Promise<void> => {
    if (!x.up || x.repairing || x.blocks.size === 0) return
    x.repairing = true
    stats.passes++
    try {
      const regions = net.regionsOf(x)
      let ks = [...x.blocks].map(b => keys[b])
      for (let round = 0; round < 2 && ks.length > 0 && x.up; round++) {
        const before = regions.stats.lookups
        const placements = await regions.closestMany(ks)
        stats.repairLookups += regions.stats.lookups - before
        if (!x.up) return
        const targets = planRepair(ks, placements)
        const ok = await Promise.all(targets.map(async t => await pushTo(x, t)))
        // Keys whose target was down: their regions were dropped; one more round looks them up again.
        const retry = new Set<Uint8Array>()
        targets.forEach((t, i) => { if (!ok[i]) for (const k of t.keys) retry.add(k) })
        ks = [...retry]
      }
    } finally {
      x.repairing = false
    }
  }

  // Churn: up/down toggles, permanent departures (with a fresh node in the place of each).
  const goDown = (x: SimNode): void => {
    if (!x.up) return
    x.up = false
    stats.downs++
    for (const b of x.blocks) setUpHolders(b, -1)
  }
  const comeUp = (x: SimNode): void => {
    if (x.up || x.gone) return
    x.up = true
    stats.ups++
    for (const b of x.blocks) setUpHolders(b, 1)
    // The node looks itself up (its neighbours relearn it), then repairs soon, as the Replicator does on join.
    void net.walk(x, x.kad).then(async () => await repairPass(x)).catch(() => {})
  }
  const scheduleToggle = (x: SimNode, at: number): void => {
    if (at === Infinity) return
    net.at(at, () => {
      if (x.gone) return
      if (x.up) {
        goDown(x)
        scheduleToggle(x, net.now + sampleWeibull(churn.downtime, rand) * 1000)
      } else {
        comeUp(x)
        scheduleToggle(x, net.now + sampleWeibull(churn.session, rand) * 1000)
      }
    })
  }
  const departRate = churn.departPerDay / (DAY * 1000)
  const scheduleDeparture = (x: SimNode): void => {
    if (departRate <= 0) return
    const at = net.now - Math.log(1 - rand()) / departRate
    if (at > stop) return
    net.at(at, () => depart(x))
  }
  const scheduleRepairs = (x: SimNode, phase: number): void => {
    const tickAt = (t: number): void => {
      if (t > stop) return
      net.at(t, () => {
        if (x.gone) return
        void repairPass(x)
        tickAt(t + T)
      })
    }
    tickAt(phase)
  }
  const join = (x: SimNode): void => {
    // The paper's join: through one known node, look itself up, then refresh every bucket.
    const ups = net.nodes.filter(n => n.up && n !== x)
    if (ups.length === 0) return
    x.table.add(ups[Math.floor(rand() * ups.length)])
    void (async () => {
      await net.walk(x, x.kad)
      const depth = x.table.depth
      for (let i = 0; i < depth && x.up; i++) await net.walk(x, keyInBucket(x.kad, i, n => randomBytes(rand, n)))
    })().catch(() => {})
  }
  const depart = (x: SimNode): void => {
    if (x.gone) return
    stats.departures++
    goDown(x)
    x.gone = true
    for (const b of x.blocks) {
      account()
      holders[b]--
      if (holders[b] === 0) lost++
    }
    x.blocks.clear()
    x.regions = undefined
    x.engine = undefined
    // A fresh node takes its place (N stays put): new id, empty store, a new session.
    const fresh = net.addNode(true)
    fresh.emptyTable()
    fresh.stable = rand() < churn.stableFraction
    join(fresh)
    if (!fresh.stable) scheduleToggle(fresh, net.now + sampleWeibull(churn.session, rand) * 1000)
    scheduleDeparture(fresh)
    scheduleRepairs(fresh, net.now + rand() * T)
  }

  // Initial placement: one random up writer puts B blocks on their k closest, found by Regions.
  // The writer keeps no copy of its own (unless it is among a key's k closest).
  const ups0 = net.nodes.filter(x => x.up)
  const writer = ups0[Math.floor(rand() * ups0.length)]
  const putStart = net.now
  const wr = net.regionsOf(writer)
  const placements = await net.settle(wr.closestMany(keys))
  for (const [i, p] of placements.entries()) if (p.some(m => m.self)) store(writer, i)
  await net.settle(Promise.all(planRepair(keys, placements).map(async t => await pushTo(writer, t))))
  const put = { lookups: wr.stats.lookups, hits: wr.stats.hits, seconds: (net.now - putStart) / 1000 }

  // Time restarts at 0 for the measured run (the put took simulated seconds; churn starts now).
  const t0 = net.now
  stop = t0 + end
  for (const [i, x] of net.nodes.entries()) {
    if (!x.stable && Number.isFinite(nextChange[i])) scheduleToggle(x, t0 + nextChange[i])
    scheduleDeparture(x)
    scheduleRepairs(x, t0 + rand() * T)
  }
  const samples: AvailabilityResult['samples'] = []
  let upSum = 0
  let upSamples = 0
  const sample = (): void => {
    samples.push({ day: (net.now - t0) / (DAY * 1000), readable: readable / B, lost })
    upSum += net.nodes.filter(x => x.up).length / o.n
    upSamples++
  }
  measuring = true
  lastT = net.now
  readableMin = readable
  const asks0 = net.stats.asks
  const progressEvery = (o.n >= 50_000 ? DAY / 8 : DAY) * 1000
  let nextProgress = t0 + progressEvery
  for (let t = t0; t < stop; t += sampleEvery) {
    await net.runUntil(t)
    sample()
    if (net.now >= nextProgress) {
      o.progress?.(`day ${((net.now - t0) / (DAY * 1000)).toFixed(o.n >= 50_000 ? 2 : 0)}: readable ${(readable / B * 100).toFixed(3)}%, lost ${lost}, ` +
        `events ${net.events}, rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB, ${((performance.now() - wall0) / 1000).toFixed(0)} s`)
      nextProgress += progressEvery
    }
  }
  await net.runUntil(stop)
  account()
  sample()

  const hours = end / (HOUR * 1000)
  const a = churnAvailability(churn)
  const p = downWithin(churn, T / 1000)
  const intervals = end / T
  const dT = churn.departPerDay * (T / (DAY * 1000))
  const holderCounts = Array.from(holders)
  return {
    kind: 'sim',
    experiment: 'availability',
    n: o.n,
    blocks: B,
    k: o.k,
    days: o.days,
    churn: describeChurn(churn),
    repairIntervalS: T / 1000,
    readableMean: Math.min(1, integral / (end * B)),
    readableMin: readableMin / B,
    samples,
    lost,
    put,
    repair: {
      passes: stats.passes,
      lookups: stats.repairLookups,
      pushedBlocks: stats.pushed,
      pushedBytes: stats.pushed * blockBytes,
      checks: stats.checks,
      failedPushes: stats.failedPushes,
      blocksPerNodeHour: stats.pushed / (o.n * hours),
      bytesPerNodeHour: stats.pushed * blockBytes / (o.n * hours),
      blocksPerUpNodeHour: stats.pushed / (o.n * hours * (upSum / upSamples)),
      lookupsPerNodeHour: stats.repairLookups / (o.n * hours)
    },
    asksPerNodeHour: (net.stats.asks - asks0) / (o.n * hours),
    holdersMean: mean(holderCounts),
    upHoldersMean: mean(Array.from(upHolders)),
    churnEvents: { downs: stats.downs, ups: stats.ups, departures: stats.departures },
    upFractionMean: upSum / upSamples,
    analytic: {
      availability: a,
      unreadableNoRepair: Math.pow(1 - a, o.k),
      downWithinInterval: p,
      unreadableWithRepair: Math.pow(p, o.k),
      expectedLost: B * intervals * Math.pow(1 - Math.exp(-dT), o.k)
    },
    runSeconds: (performance.now() - wall0) / 1000,
    events: net.events,
    rssMiB: process.memoryUsage().rss / 2 ** 20
  }
}

// ---------------------------------------------------------------------------------------------

export interface SimConfig {
  seed: number
  hops: Array<{ n: number, lookups: number }>
  availability: Array<{ n: number, blocks: number, k: number, days: number }>
  churn?: ChurnModel
  repairIntervalS?: number
  walkSize?: number
  log?: (line: string) => void
}

export interface SimReport {
  hops: HopsResult[]
  availability: AvailabilityResult[]
  churn: string
  churnSource: string
}

/** Runs the configured experiments, one after another (each from its own seed). */
export async function runSim (c: SimConfig): Promise<SimReport> {
  const churn = c.churn ?? ipfsChurn()
  const hops: HopsResult[] = []
  for (const [i, h] of c.hops.entries()) {
    c.log?.(`hops: N = ${h.n}, ${h.lookups} lookups`)
    const r = await runHops({ n: h.n, lookups: h.lookups, seed: c.seed + i, walkSize: c.walkSize })
    c.log?.(`hops: N = ${h.n}: p50 ${r.hopsP50}, p95 ${r.hopsP95}, getSuccess ${r.getSuccess}, build ${r.buildSeconds.toFixed(1)} s, run ${r.runSeconds.toFixed(1)} s`)
    hops.push(r)
  }
  const availability: AvailabilityResult[] = []
  for (const [i, a] of c.availability.entries()) {
    c.log?.(`availability: N = ${a.n}, B = ${a.blocks}, k = ${a.k}, ${a.days} days`)
    const r = await runAvailability({ ...a, seed: c.seed + 100 + i, churn, repairIntervalS: c.repairIntervalS, walkSize: c.walkSize, progress: c.log })
    c.log?.(`availability: N = ${a.n}, k = ${a.k}: readable mean ${(r.readableMean * 100).toFixed(4)}%, min ${(r.readableMin * 100).toFixed(3)}%, lost ${r.lost}; ` +
      `repair ${r.repair.blocksPerNodeHour.toFixed(3)} blocks/node/h, ${r.repair.lookupsPerNodeHour.toFixed(2)} lookups/node/h, ${r.asksPerNodeHour.toFixed(1)} FIND_NODE/node/h; ` +
      `holders ${r.holdersMean.toFixed(1)} (${r.upHoldersMean.toFixed(1)} up); ${r.runSeconds.toFixed(0)} s, RSS ${r.rssMiB.toFixed(0)} MiB`)
    availability.push(r)
  }
  return { hops, availability, churn: describeChurn(churn), churnSource: churn.source }
}
