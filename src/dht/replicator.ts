/**
 * Keeps every block on its k closest nodes. New blocks (puts, folds) are queued, placed by
 * Kademlia lookups batched by key region (`Regions`: a put of B blocks costs about
 * min(B, N/k) lookups) and pushed to their closest peers in batches; `waitReplicated` tells a
 * caller when all of its blocks have k acknowledged replicas. Repair decides from this node's
 * own knowledge: it walks the local store in bounded batches (a pass every `repairIntervalMs`,
 * and soon after the routing table changes around this node's keys, at most one pass per
 * MIN_REPAIR_GAP_MS), asks each block's current k closest nodes whether they hold it and sends
 * it to those that do not. Work per tick is bounded, so repair never starves foreground reads,
 * and a join or a leave costs one pass per nearby node, not a network-wide storm.
 */
import { cidFromKey } from '../block/index.js'
import type { LmdbBlockStore } from '../store/lmdb.js'
import { hex, type BlockService } from './blocks.js'
import type { Member } from './members.js'
import { LOOKUPS_IN_FLIGHT, type Regions } from './regions.js'
import { planRepair } from './repair-plan.js'
import { MAX_HAS, PUT_BATCH_BYTES } from './wire.js'

export interface ReplicatorOptions {
  k: number
  /** Full repair pass period (default 10 min). */
  repairIntervalMs?: number
  /** Keys checked per repair tick (default 512). */
  repairBatch?: number
  /** Pause between repair ticks (default 50 ms). */
  repairTickMs?: number
  log?: (line: string) => void
}

export interface ReplicationStatus {
  k: number
  pending: number
  /** Blocks stored here not yet seen on k replicas (see `waitTracked`). */
  unconfirmed: number
  repairing: boolean
  repairPasses: number
  repaired: number
  pushed: number
  /** Read-cache copies a repair pass left out (summed over passes). */
  cacheCopiesSkipped: number
}

/** What `waitReplicated` found: of `blocks`, `blocksShort` lack replicas, `missingReplicas` in all. */
export interface Replication { k: number, blocks: number, blocksShort: number, missingReplicas: number }

/** Unconfirmed blocks remembered for `reef sync` (about 12 MB of hex keys at most). */
const TRACK_CAP = 100_000

/** Repair passes start at least this far apart, however often churn asks for one. */
const MIN_REPAIR_GAP_MS = 5000

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

async function readLocal (local: LmdbBlockStore, key: Uint8Array): Promise<Uint8Array | undefined> {
  try {
    return await local.get(cidFromKey(key))
  } catch {
    return undefined
  }
}

/**
 * One verified local read per block per replication round, shared by the pushes to its k-1
 * peers (each read hashes the block; doing it once per peer doubled the sender's sha256 work
 * at k=3). Entries leave after their last use; at most SHARED_CAP bytes wait for slower peers.
 */
const SHARED_CAP = 64 * 1024 * 1024

/** Put batches in flight to one peer at once (each up to PUT_BATCH_BYTES). */
const PUSH_WINDOW = 4

class SharedReads {
  private readonly held = new Map<string, { d: Uint8Array, left: number }>()
  private bytes = 0

  constructor (private readonly local: LmdbBlockStore, private readonly uses: Map<string, number>, private readonly fresh: FreshBlocks) {}

  async get (h: string, key: Uint8Array): Promise<Uint8Array | undefined> {
    const f = this.fresh.get(h)
    if (f !== undefined) return f
    const e = this.held.get(h)
    if (e !== undefined) {
      if (--e.left <= 0) {
        this.held.delete(h)
        this.bytes -= e.d.length
      }
      return e.d
    }
    const d = await readLocal(this.local, key)
    const left = (this.uses.get(h) ?? 1) - 1
    if (d !== undefined && left > 0 && this.bytes + d.length <= SHARED_CAP) {
      this.held.set(h, { d, left })
      this.bytes += d.length
    }
    return d
  }
}

/**
 * The bytes of blocks this node has just stored, kept until they are replicated (at most
 * FRESH_CAP bytes, oldest dropped first), so that the first push of a new block needs no read
 * back from the store: the bytes were hashed into their key moments ago, and a verified read
 * would hash them again (at k=3 that was a quarter of a publisher's sha256 work). Blocks own
 * their bytes (chunks are copies), so nothing can change them while they wait here.
 */
const FRESH_CAP = 64 * 1024 * 1024

class FreshBlocks {
  private readonly map = new Map<string, Uint8Array>()
  private bytes = 0

  add (h: string, d: Uint8Array): void {
    if (this.map.has(h) || d.length > FRESH_CAP) return
    for (const [old, od] of this.map) {
      if (this.bytes + d.length <= FRESH_CAP) break
      this.map.delete(old)
      this.bytes -= od.length
    }
    this.map.set(h, d)
    this.bytes += d.length
  }

  get (h: string): Uint8Array | undefined { return this.map.get(h) }

  drop (h: string): void {
    const d = this.map.get(h)
    if (d === undefined) return
    this.map.delete(h)
    this.bytes -= d.length
  }
}

export class Replicator {
  private readonly queue = new Map<string, Uint8Array>()
  private readonly fresh = new FreshBlocks()
  /** Peers that acknowledged each queued key. */
  private readonly acks = new Map<string, Set<string>>()
  /**
   * Where each queued or tracked key belongs (its k closest, self maybe among them), from the
   * last lookup; forgotten when the routing table changes (`replan`) and looked up again.
   */
  private readonly placed = new Map<string, Member[]>()
  private lastRepairEnd = 0
  private draining?: Promise<void>
  private repairTimer?: NodeJS.Timeout
  private repairRequested = false
  private repairRun?: Promise<void>
  private stopped = false
  readonly stat = { repairPasses: 0, repaired: 0, pushed: 0, cacheCopiesSkipped: 0 }
  /**
   * Blocks this node stored (puts, folds) not yet seen on k replicas, as hex keys in insertion
   * order, for `reef sync` to report on. A key leaves once it has k acknowledged replicas; at
   * most TRACK_CAP are kept (a network smaller than k never confirms any), the oldest dropped
   * and counted in `untracked`.
   */
  private readonly tracked = new Set<string>()
  private untracked = 0
  /** Waiters woken when keys leave the queue (`waitReplicated`, `waitIdle`). */
  private readonly waiters = new Set<() => void>()

  constructor (
    private readonly local: LmdbBlockStore,
    private readonly placement: Regions<Member>,
    private readonly service: BlockService,
    private readonly opts: ReplicatorOptions
  ) {}

  /** The routing table changed: placements are looked up again (from cached regions mostly). */
  replan (): void {
    this.placed.clear()
  }

  get k (): number { return this.opts.k }

  start (): void {
    const period = this.opts.repairIntervalMs ?? 10 * 60_000
    this.repairTimer = setInterval(() => this.requestRepair(0), period)
    this.repairTimer.unref()
  }

  async stop (): Promise<void> {
    this.stopped = true
    if (this.repairTimer !== undefined) clearInterval(this.repairTimer)
    this.wake()
    await this.draining?.catch(() => {})
    await this.repairRun?.catch(() => {})
  }

  /**
   * Queues keys for replication. `bytes[i]`, when given, are the block's bytes, just stored and
   * hashed by the caller: the push sends them without reading the block back.
   */
  enqueue (keys: Iterable<Uint8Array>, bytes?: Uint8Array[]): void {
    let i = 0
    for (const k of keys) {
      const h = hex(k)
      const d = bytes?.[i++]
      if (!this.queue.has(h)) {
        this.placed.delete(h)
        if (d !== undefined) this.fresh.add(h, d)
        this.queue.set(h, k)
        if (!this.acks.has(h)) this.acks.set(h, new Set())
      }
    }
    this.kick()
  }

  private kick (): void {
    if (this.draining !== undefined || this.stopped) return
    this.draining = this.drain().finally(() => { this.draining = undefined })
  }

  /** Acknowledged holders among the key's k closest nodes (self counts); unplaced keys hold none. */
  private held (h: string): { held: number, all: boolean } {
    const acked = this.acks.get(h)
    const at = this.placed.get(h)
    if (at === undefined) return { held: 0, all: false }
    let held = 0
    let all = true
    for (const m of at) {
      if (m.self || acked?.has(m.key) === true) held++
      else all = false
    }
    return { held, all }
  }

  /**
   * Looks up where the keys not placed yet belong (one lookup per key region, LOOKUPS_IN_FLIGHT
   * at once); `onPlaced` hears of each key as soon as its place is known (at once if it was).
   */
  private async place (entries: Array<[string, Uint8Array]>, onPlaced?: (h: string, key: Uint8Array) => void): Promise<void> {
    const need: Array<[string, Uint8Array]> = []
    for (const [h, key] of entries) {
      if (this.placed.has(h)) onPlaced?.(h, key)
      else need.push([h, key])
    }
    if (need.length === 0) return
    await this.placement.closestMany(need.map(([, k]) => k), undefined, LOOKUPS_IN_FLIGHT, (i, at) => {
      this.placed.set(need[i][0], at)
      onPlaced?.(need[i][0], need[i][1])
    })
  }

  private forgetAcks (): void {
    // Bounded memory: acknowledgements of long-finished keys go first (Map keeps insertion order).
    for (const h of this.acks.keys()) {
      if (this.acks.size <= 200_000) break
      if (!this.queue.has(h)) {
        this.acks.delete(h)
        if (!this.tracked.has(h)) this.placed.delete(h)
      }
    }
    for (const h of this.placed.keys()) {
      if (this.placed.size <= 200_000) break
      if (!this.queue.has(h)) this.placed.delete(h)
    }
  }

  private async drain (): Promise<void> {
    let idle = 0
    for (let round = 0; this.queue.size > 0 && !this.stopped && round < 1_000_000; round++) {
      const batch = [...this.queue.entries()].slice(0, 4096)
      // Each key's pushes start as soon as its place is known: the keys of a cached region at
      // once, those of a region being looked up when that lookup answers, while the others walk.
      // (Placing the whole batch first left the link idle for the lookups: in a 16-node put,
      // 2-3 of them before the first byte was sent.)
      const uses = new Map<string, number>()
      const shared = new SharedReads(this.local, uses, this.fresh)
      const pushes: Array<Promise<void>> = []
      let ready: Array<[string, Uint8Array]> = []
      const dispatch = (): void => {
        const perPeer = new Map<string, { m: Member, keys: Array<[string, Uint8Array]> }>()
        for (const [h, key] of ready) {
          const acked = this.acks.get(h) as Set<string>
          for (const m of this.placed.get(h) ?? []) {
            if (m.self || acked.has(m.key)) continue
            let e = perPeer.get(m.key)
            if (e === undefined) perPeer.set(m.key, e = { m, keys: [] })
            e.keys.push([h, key])
            uses.set(h, (uses.get(h) ?? 0) + 1)
          }
        }
        ready = []
        for (const { m, keys } of perPeer.values()) pushes.push(this.pushTo(m, keys, shared))
      }
      // Keys placed in one go (a cached region, a lookup's answer) go out together.
      const placed = (h: string, key: Uint8Array): void => {
        if (ready.length === 0) queueMicrotask(dispatch)
        ready.push([h, key])
      }
      try {
        await this.place(batch, placed)
      } catch (err) {
        this.opts.log?.(`placement: ${(err as Error).message}`)
      }
      if (ready.length > 0) dispatch()
      await Promise.all(pushes)
      let progressed = false
      for (const [h] of batch) {
        // Done when every one of its closest nodes holds it (fewer than k in a small network).
        if (this.held(h).all) {
          this.queue.delete(h)
          this.fresh.drop(h)
          progressed = true
        }
      }
      this.forgetAcks()
      if (progressed) this.wake()
      // Nothing finished (a peer failed): retry later, backing off to one round per 2 s.
      if (progressed) idle = 0
      else await sleep(Math.min(2000, 100 * ++idle))
    }
  }

  private wake (): void {
    for (const w of [...this.waiters]) w()
  }

  /**
   * Until keys leave the queue or `ms` pass, whichever is first. Polling every 50 ms, a put's
   * caller waited up to that long after its last blocks were acknowledged (the 16-node put's
   * target is 0.6 s for all of it).
   */
  private async progress (ms: number): Promise<void> {
    await new Promise<void>(resolve => {
      const done = (): void => {
        clearTimeout(timer)
        this.waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(done, Math.max(1, ms))
      this.waiters.add(done)
    })
  }

  private async pushTo (m: Member, keys: Array<[string, Uint8Array]>, shared?: SharedReads): Promise<void> {
    let batch: Array<[Uint8Array, Uint8Array]> = []
    let names: string[] = []
    let bytes = 0
    // Up to PUSH_WINDOW batches in flight to one peer: a peer acknowledges a batch only once it
    // is durable (an fsync), and one batch at a time left the link idle for most of each fsync.
    const inflight = new Set<Promise<void>>()
    const send = async (b: Array<[Uint8Array, Uint8Array]>, n: string[]): Promise<void> => {
      try {
        const have = await this.service.putTo(m.id, b)
        have.forEach((ok, i) => { if (ok) { this.acks.get(n[i])?.add(m.key); this.stat.pushed++ } })
      } catch (err) {
        this.placement.suspect(m.key)
        this.opts.log?.(`replicate to ${m.key}: ${(err as Error).message}`)
      }
    }
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return
      const p: Promise<void> = send(batch, names).finally(() => inflight.delete(p))
      inflight.add(p)
      batch = []
      names = []
      bytes = 0
      if (inflight.size >= PUSH_WINDOW) await Promise.race(inflight)
    }
    for (const [h, key] of keys) {
      const d = shared !== undefined ? await shared.get(h, key) : await readLocal(this.local, key)
      if (d === undefined) continue
      if (bytes + d.length > PUT_BATCH_BYTES || batch.length >= MAX_HAS) await flush()
      batch.push([key, d])
      names.push(h)
      bytes += d.length
    }
    await flush()
    await Promise.all(inflight)
  }

  /**
   * Resolves once every key is held by all of its k closest members, or at the deadline; says
   * how many replicas are missing (also when the network has fewer than k nodes).
   */
  async waitReplicated (keys: Uint8Array[], timeoutMs: number): Promise<Replication> {
    // A NaN or infinite deadline would make this wait unbounded.
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new RangeError(`waitReplicated: timeout ${timeoutMs} ms is not a positive finite number`)
    this.enqueue(keys)
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const pending = keys.some(k => this.queue.has(hex(k)))
      if (!pending || Date.now() >= deadline) {
        let missingReplicas = 0
        let blocksShort = 0
        await this.place(keys.map(k => [hex(k), k]))
        for (const k of keys) {
          const miss = this.shortBy(hex(k))
          if (miss > 0) { missingReplicas += miss; blocksShort++ }
        }
        return { k: this.opts.k, blocks: keys.length, missingReplicas, blocksShort }
      }
      await this.progress(Math.min(1000, deadline - Date.now()))
    }
  }

  /** Replicas a key lacks: k minus its acknowledged holders among its k closest nodes. */
  private shortBy (h: string): number {
    return Math.max(0, this.opts.k - this.held(h).held)
  }

  /** Waits (bounded) until nothing is queued; returns what is still pending. */
  async waitIdle (timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs
    while (this.queue.size > 0 && Date.now() < deadline) await this.progress(Math.min(1000, deadline - Date.now()))
    return this.queue.size
  }

  /** Remembers blocks this node stored until they are seen on k replicas (see `waitTracked`). */
  track (keys: Iterable<Uint8Array>): void {
    for (const k of keys) this.tracked.add(hex(k))
    if (this.tracked.size <= TRACK_CAP) return
    // Over the cap: drop what is confirmed by now, then the oldest (amortised: down to 90%).
    for (const h of this.tracked) if (this.shortBy(h) === 0) this.tracked.delete(h)
    for (const h of this.tracked) {
      if (this.tracked.size <= TRACK_CAP * 0.9) break
      this.tracked.delete(h)
      this.untracked++
    }
  }

  /**
   * `waitReplicated` over every block this node stored that has not yet been seen on k
   * replicas (what `reef sync` reports): those that now have k leave the set, the others stay
   * and are counted. `untracked` counts blocks dropped from the set unconfirmed (over its cap).
   */
  async waitTracked (timeoutMs: number): Promise<Replication & { untracked: number }> {
    const keys = [...this.tracked].map(h => Buffer.from(h, 'hex') as Uint8Array)
    const res = await this.waitReplicated(keys, timeoutMs)
    for (const k of keys) {
      const h = hex(k)
      if (this.shortBy(h) === 0) this.tracked.delete(h)
    }
    return { ...res, untracked: this.untracked }
  }

  requestRepair (delayMs: number): void {
    if (this.stopped) return
    this.repairRequested = true
    delayMs = Math.max(delayMs, this.lastRepairEnd + MIN_REPAIR_GAP_MS - Date.now())
    setTimeout(() => {
      if (this.repairRun === undefined && this.repairRequested) {
        this.repairRequested = false
        this.repairRun = this.repairPass().catch(err => this.opts.log?.(`repair: ${(err as Error).message}`)).finally(() => {
          this.repairRun = undefined
          this.lastRepairEnd = Date.now()
          if (this.repairRequested) this.requestRepair(0)
        })
      }
    }, delayMs).unref()
  }

  /** One pass over every local block, `repairBatch` keys per tick. */
  private async repairPass (): Promise<void> {
    const batchSize = this.opts.repairBatch ?? 512
    let after: Uint8Array | undefined
    for (let tick = 0; !this.stopped && tick < 10_000_000; tick++) {
      const keys = this.local.keyBatch(after, batchSize)
      if (keys.length === 0) break
      after = keys[keys.length - 1]
      // Queued blocks are being pushed already: checking and pushing them here too sent a put's
      // blocks twice when a repair pass overlapped it (300-560 of 900 blocks of a 64 MiB put).
      // Read-cache copies are not this node's to keep (Kademlia's caching along the lookup path
      // is not republished either): the block's k closest nodes and its writer repair it. When
      // every reader checked its copies' replicas, a 64-node network with every node reading
      // spent its time on those checks and late reads took 50-146 s instead of 2-4 s.
      const check = keys.filter(key => {
        if (this.queue.has(hex(key))) return false
        if (!this.local.isCacheCopy(key)) return true
        this.stat.cacheCopiesSkipped++
        return false
      })
      if (check.length === 0) continue
      let placements: Member[][]
      try {
        placements = await this.placement.closestMany(check)
      } catch (err) {
        this.opts.log?.(`repair placement: ${(err as Error).message}`)
        continue
      }
      // The decision the scale simulator (bench/scale) runs too: who else should hold what.
      const plan = planRepair(check, placements)
      await Promise.all(plan.map(async ({ peer: m, keys: ks }) => {
        try {
          const have = await this.service.hasOn(m.id, ks)
          const lacking = ks.filter((_k, i) => !have[i])
          if (lacking.length === 0) return
          await this.pushTo(m, lacking.map(k => [hex(k), k]))
          this.stat.repaired += lacking.length
        } catch (err) {
          // A replica that does not answer may be gone: its regions are looked up again next pass.
          this.placement.suspect(m.key)
          this.opts.log?.(`repair check on ${m.key}: ${(err as Error).message}`)
        }
      }))
      await sleep(this.opts.repairTickMs ?? 50)
    }
    this.stat.repairPasses++
  }

  status (): ReplicationStatus {
    return {
      k: this.opts.k,
      pending: this.queue.size,
      unconfirmed: this.tracked.size,
      repairing: this.repairRun !== undefined,
      repairPasses: this.stat.repairPasses,
      repaired: this.stat.repaired,
      pushed: this.stat.pushed,
      cacheCopiesSkipped: this.stat.cacheCopiesSkipped
    }
  }
}
