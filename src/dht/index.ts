/**
 * A reef DHT node: libp2p (TCP, noise, yamux) with kad-dht for heads, and for blocks the reef
 * block protocol with reef's own Kademlia routing (router.ts): placement on the k closest nodes
 * found by lookups batched by key region (regions.ts), background replication and repair, a
 * bounded number of connections (connections.ts). No node knows every other; none dials
 * everyone. The peer id derives from the data directory's ed25519 identity, so it is stable and
 * not chosen. Settings that matter on a small loopback network (each found the hard way):
 *   ping stream limits 16/16   kad-dht pings new contacts while the connection monitor pings
 *                              too; libp2p's default 2 inbound/1 outbound aborts connections
 *   inbound threshold 1000/s   libp2p rate-limits inbound connections per host (5/s); an
 *                              allow list would exempt loopback from maxConnections too
 *   loopback peer mapper       kad-dht's default drops private addresses, loopback included
 *   clientMode false           a node without a public address would turn itself into a client
 *   alpha 3, one path          kad-dht's default of many disjoint paths dials far more peers
 *                              per query than a bounded node holds
 *   connection pings 60 s      libp2p's connection monitor opens a ping stream on every
 *                              connection every 10 s from both ends (multistream-select and a
 *                              peer-store write each): most of a node's CPU at rest
 */
import '../polyfills.js'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { memory } from '@libp2p/memory'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify, type Identify } from '@libp2p/identify'
import { ping, type Ping } from '@libp2p/ping'
import { kadDHT, type KadDHT, type PeerInfoMapper } from '@libp2p/kad-dht'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import type { PeerId } from '@libp2p/interface'
import { isAguid } from '../block/index.js'
import { ReefError } from '../errors.js'
import { decodeHead, verifyHead, type HeadBook } from '../naming/index.js'
import type { LmdbBlockStore, LmdbHeadStore } from '../store/lmdb.js'
import { BlockService, corruptionFlag } from './blocks.js'
import { HeadGuardDatastore, headKey, selectHeadRecord, validateHeadRecord } from './heads.js'
import { ViewBook } from '../view/book.js'
import { recordKeyFor, VIEW_SELECTORS, VIEW_VALIDATORS, viewRecordGuard } from '../view/dht.js'
import { Joiner } from './joiner.js'
import { ConnectionTrimmer, DEFAULT_MAX_CONNECTIONS, hardCeiling } from './connections.js'
import { type Member, Members } from './members.js'
import { Regions } from './regions.js'
import { memberOf, Router } from './router.js'
import { kadId, wasNear, type KadId } from './placement.js'
import { PeerBook } from './peerbook.js'
import { Replicator } from './replicator.js'
import { DhtBlockStore } from './store.js'
import { BLOCK_PROTOCOL } from './wire.js'
import { quietLogger } from './logger.js'

export const DHT_PROTOCOL = '/reef/kad/1.0.0'
/** Replicas per block. 3 survives any two simultaneous failures (the publisher and a replica). */
export const DEFAULT_K = 3

type Services = { identify: Identify, ping: Ping, dht: KadDHT }

export interface DhtOptions {
  listen: string[]
  bootstrap: string[]
  k?: number
  repairIntervalMs?: number
  republishIntervalMs?: number
  /** Overall deadline of one block fetch from the network (default 15 s; `--fetch-deadline`). */
  fetchDeadlineMs?: number
  /** Where the peers this node has met are remembered (peers.json in the data directory). */
  peersFile?: string
  /** Connections held at most (`--max-connections`, default DEFAULT_MAX_CONNECTIONS). */
  maxConnections?: number
  /** 'memory' runs on @libp2p/memory (many nodes in one process, for tests and bench/scale). */
  transport?: 'tcp' | 'memory'
  /** How long a key region's lookup answer is trusted (default 5 min). */
  regionTtlMs?: number
  log?: (line: string) => void
}

/** Why heads are republished: a peer joined, a peer left, or the periodic timer. */
export type RepublishReason = 'join' | 'leave' | 'timer'

/**
 * Membership changes come in bursts (a node joining meets every member at once; a crash of
 * two nodes is two leaves): republishing waits this long and serves the whole burst once.
 */
const REPUBLISH_DEBOUNCE_MS = 1000
/** Neighbours whose departure this node checks for at once (see checkLeft). */
const NEIGHBOURS = 20
const LEAVE_CHECK_GAP_MS = 30_000
/** Republish passes start at least this far apart, however often churn asks for one. */
const REPUBLISH_GAP_MS = 5000
/** Heads put at once by a republish pass (each put is a DHT query with its own deadline). */
const REPUBLISH_CONCURRENCY = 4
/** Deadline of the first join round, which start-up waits for (the background rounds take longer). */
const FIRST_ROUND_MS = 3000

/** Addresses worth passing on: IP (loopback included) and in-memory ones (tests, bench/scale). */
const dialable = (ma: { toString: () => string }): boolean => {
  const s = ma.toString()
  return s.startsWith('/ip4/') || s.startsWith('/ip6/') || s.startsWith('/memory/')
}
const mapper: PeerInfoMapper = (peer) => ({ ...peer, multiaddrs: peer.multiaddrs.filter(dialable) })

/** How often libp2p's connection monitor pings each connection (its default is 10 s). */
const CONNECTION_PING_MS = 60_000

/** Nodes a kad-dht record is put on (kad-dht's K): the neighbourhood of a record's key. */
const RECORD_HOLDERS = 20

/** Requests in flight per kad-dht query (heads). */
const KAD_ALPHA = 3

/** The seq of an encoded head (-1 if it does not decode: never newer than a valid one). */
function seqOfHead (bytes: Uint8Array): bigint {
  try { return decodeHead(bytes).seq } catch { return -1n }
}

export class DhtNode {
  private republishTimer?: NodeJS.Timeout
  /** Republish passes, by the reasons that asked for them (one pass can serve several). */
  readonly republishStat = { passes: 0, join: 0, leave: 0, timer: 0, heads: 0 }
  private republishDue?: NodeJS.Timeout
  private republishReasons = new Set<RepublishReason>()
  private republishRun?: Promise<void>
  private lastRepublishEnd = 0
  private stopped = false
  /**
   * Told of every view record and writer head a peer stored here (after it was checked and
   * taken into the book): view mounts merge at once instead of at their next network poll.
   */
  recordListeners = new Set<(id: CID) => void>()
  private constructor (
    readonly libp2p: Libp2p<Services>,
    readonly members: Members,
    readonly service: BlockService,
    readonly replicator: Replicator,
    readonly store: DhtBlockStore,
    readonly datastore: HeadGuardDatastore,
    private readonly heads: HeadBook,
    private readonly headStore: LmdbHeadStore,
    private readonly opts: DhtOptions,
    readonly peerBook: PeerBook,
    readonly router: Router,
    readonly placement: Regions<Member>,
    readonly connections: ConnectionTrimmer
  ) {}

  private joiner?: Joiner

  static async start (seed: Uint8Array, local: LmdbBlockStore, heads: HeadBook, headStore: LmdbHeadStore, opts: DhtOptions): Promise<DhtNode> {
    const log = opts.log ?? (() => {})
    const bootstrap = opts.bootstrap.map(addr => {
      try {
        return multiaddr(addr)
      } catch (err) {
        throw ReefError.badInput(`bad --bootstrap multiaddr ${addr}: ${(err as Error).message}`)
      }
    })
    const recordListeners = new Set<(id: CID) => void>()
    const datastore = new HeadGuardDatastore(heads, viewRecordGuard(new ViewBook(headStore), id => { for (const l of recordListeners) l(id) }))
    const maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS
    if (!(Number.isInteger(maxConnections) && maxConnections >= 4 && maxConnections <= 100_000)) {
      throw ReefError.badInput(`--max-connections ${String(opts.maxConnections)}: needs an integer from 4 to 100000`)
    }
    const libp2p = await createLibp2p({
      privateKey: await generateKeyPairFromSeed('Ed25519', seed),
      ...quietLogger(),
      datastore,
      addresses: { listen: opts.listen },
      // libp2p refuses inbound connections at its ceiling, and a refused lookup request misses
      // a node: the ceiling sits above the bound, and the trimmer (connections.ts) brings the
      // node back under the bound within moments (idle connections first, then by age).
      connectionManager: { maxConnections: hardCeiling(maxConnections), inboundConnectionThreshold: 1000, maxIncomingPendingConnections: 64 },
      // A connection that died without a close (no FIN, no RST: a machine gone, a network cut)
      // is noticed by the monitor within this interval plus its ping timeout, or sooner by the
      // first request over it (every request has a deadline); a process that exits or crashes
      // closes its sockets, and is noticed at once.
      connectionMonitor: { pingInterval: CONNECTION_PING_MS },
      transports: [opts.transport === 'memory' ? memory() : tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: {
        identify: identify(),
        ping: ping({ maxInboundStreams: 16, maxOutboundStreams: 16 }),
        dht: kadDHT({
          protocol: DHT_PROTOCOL,
          clientMode: false,
          peerInfoMapper: mapper,
          initialQuerySelfInterval: 0,
          allowQueryWithZeroPeers: true,
          alpha: KAD_ALPHA,
          disjointPaths: 1,
          validators: { reef: validateHeadRecord, ...VIEW_VALIDATORS },
          selectors: { reef: selectHeadRecord, ...VIEW_SELECTORS }
        })
      }
    })
    // kad-dht tags the 20 peers closest to this one KEEP_ALIVE, and libp2p re-dials such peers
    // whenever they disconnect: with a bound below 20 that fights the trimmer forever.
    ;(libp2p.services.dht as unknown as { routingTable?: { closestPeerTagger?: { stop: () => void } } }).routingTable?.closestPeerTagger?.stop()
    const members = new Members(libp2p.peerId)
    const service = new BlockService(libp2p, local, { serveCorrupt: corruptionFlag(process.env.REEF_TEST_SERVE_CORRUPT) })
    const k = opts.k ?? DEFAULT_K
    const router = new Router(libp2p, service, memberOf(libp2p.peerId, true), { log, addrFilter: dialable })
    const placement = new Regions(router, k, { ttlMs: opts.regionTtlMs })
    router.onWalked((target, res) => { placement.learn(target, res) })
    const replicator = new Replicator(local, placement, service, { k, repairIntervalMs: opts.repairIntervalMs, log })
    const store = new DhtBlockStore(local, placement, service, replicator, { log, fetchDeadlineMs: opts.fetchDeadlineMs })
    const peerBook = new PeerBook(opts.peersFile, log)
    const connections = new ConnectionTrimmer(libp2p, maxConnections)
    const node = new DhtNode(libp2p, members, service, replicator, store, datastore, heads, headStore, opts, peerBook, router, placement, connections)
    node.recordListeners = recordListeners
    service.near = async (from, target) => await router.near(from, target)
    await service.start()
    connections.start()
    router.start()
    // Churn as this node sees it. A node new to the routing table may belong to a cached key
    // region (that region is looked up again); a node that failed takes its regions with it.
    // Either way placements are recomputed, and repair and head republication follow, each
    // debounced and rate-limited, so a join or a leave costs nearby nodes one pass each.
    router.onChange((e) => {
      const dropped = placement.stats.dropped
      if (e.kind === 'added') placement.peerSeen(e.m)
      else {
        node.noteDeparted(e.m.kad)
        placement.peerGone(e.m.key)
      }
      replicator.replan()
      // A node that left may have held replicas of what this node holds, whether or not a
      // cached region named it (a node that only received blocks has looked nothing up): a
      // repair pass follows every leave (passes are rate-limited). A node that came matters
      // where it falls in a cached region (the churn listener), or always in a network of k
      // nodes or fewer, where no region is cached (none holds k nodes).
      if (placement.stats.dropped === dropped && (e.kind === 'removed' || router.table.size <= k)) {
        replicator.requestRepair(2000)
        node.requestRepublish(e.kind === 'added' ? 'join' : 'leave')
      }
    })
    // A region dropped because a peer left asks for a 'leave' pass (re-puts only the records
    // the departed were near), not a 'join' one (re-puts everything).
    placement.onChurn((cause) => {
      replicator.requestRepair(2000)
      node.requestRepublish(cause)
    })
    // Membership before any dial, or peers identified early are missed.
    await libp2p.register(BLOCK_PROTOCOL, {
      onConnect: (peer) => { members.add(peer); router.seen(peer) },
      onDisconnect: (peer) => members.remove(peer)
    })
    replicator.start()
    members.onJoin((m) => { void node.remember(m.id) })
    members.onLeave((m) => { void node.remember(m.id); void node.checkLeft(m) })
    const joiner = node.joiner = new Joiner(libp2p, members, peerBook, bootstrap, {
      log,
      // The paper's join: looking itself up, the node meets its neighbours and they meet it.
      afterDial: async () => { await router.refresh(true) },
      // Blocks stored and heads folded while alone go out now, without waiting for the timers.
      onJoined: () => {
        node.requestRepublish('join')
        replicator.requestRepair(0)
      }
    })
    // One quick round in the foreground, so that a follower mount whose peers are up finds its
    // head at once; a peer that is down costs a refused connection, not a wait.
    await joiner.attempt(FIRST_ROUND_MS, FIRST_ROUND_MS)
    node.republishTimer = setInterval(() => node.requestRepublish('timer', 0), opts.republishIntervalMs ?? 10 * 60_000)
    node.republishTimer.unref()
    joiner.start()
    return node
  }

  private readonly checking = new Set<string>()
  /** When each peer was last checked (a peer is checked at most once per LEAVE_CHECK_GAP_MS). */
  private readonly checkedAt = new Map<string, number>()
  /** checks: pings after a close; left: peers they found gone; trims: closes the peer said were trims. */
  readonly leaveStat = { checks: 0, left: 0, trims: 0 }

  /**
   * A peer's last connection closed, and this node did not close it. If the peer is one of this
   * node's neighbours (the routing table's NEIGHBOURS closest to it: the nodes that hold replicas
   * of the same keys), one ping (bounded) says whether it is still there. If not, it leaves the
   * table, its key regions are looked up again, and the repair and republication it calls for
   * follow. Other peers' departures are found when a request to them fails. Connections close
   * all the time under a connection bound (the other side trims its idle ones), so a peer is
   * checked at most once per LEAVE_CHECK_GAP_MS: pinging back on every close made two nodes
   * reconnect each other forever. A peer that closed the connection as a trim (it says so in its
   * yamux GoAway, see TRIM_GOAWAY) is alive and is not checked.
   */
  async checkLeft (m: { id: PeerId, key: string }): Promise<void> {
    // The connection's close event (where the trimmer reads the peer's GoAway) may come after the
    // peer's disconnect event that called this.
    await new Promise(resolve => setImmediate(resolve))
    if (this.stopped || this.checking.has(m.key) || this.connections.closedByUs(m.key) || !this.router.table.has(m.key)) return
    if (this.connections.closedByPeer(m.key, 5000)) { this.leaveStat.trims++; return }
    const now = Date.now()
    if (now - (this.checkedAt.get(m.key) ?? 0) < LEAVE_CHECK_GAP_MS) return
    if (!this.router.table.closest(this.router.self.kad, NEIGHBOURS).some(n => n.key === m.key)) return
    if (this.checkedAt.size > 4096) this.checkedAt.clear()
    this.checkedAt.set(m.key, now)
    this.checking.add(m.key)
    this.leaveStat.checks++
    try {
      await this.libp2p.services.ping.ping(m.id, { signal: AbortSignal.timeout(3000) })
    } catch {
      if (this.stopped) return
      this.leaveStat.left++
      this.router.failed(m.key, true)
      this.requestRepublish('leave')
    } finally {
      this.checking.delete(m.key)
    }
  }

  /** Remembers a peer and the addresses it listens on (from identify), for rejoining later. */
  private async remember (id: PeerId): Promise<void> {
    try {
      const p = await this.libp2p.peerStore.get(id)
      const addrs = mapper({ id, multiaddrs: p.addresses.map(a => a.multiaddr) }).multiaddrs.map(ma => ma.toString())
      this.peerBook.note(id.toString(), addrs)
    } catch {}
  }

  addrs (): string[] { return this.libp2p.getMultiaddrs().map(a => a.toString()) }
  get peerId (): string { return this.libp2p.peerId.toString() }

  /** Stores a head on the DHT; returns how many peers acknowledged it. */
  async publishHead (aguid: CID, bytes: Uint8Array, timeoutMs = 15_000): Promise<number> {
    return await this.publishRecord(headKey(aguid), bytes, `head ${aguid.toString()}`, timeoutMs)
  }

  /** Stores any reef record (a head, a view record, a writer head) under its DHT key; returns the acks. */
  async publishRecord (key: Uint8Array, bytes: Uint8Array, what: string, timeoutMs = 15_000): Promise<number> {
    let acks = 0
    try {
      for await (const e of this.libp2p.services.dht.put(key, bytes, { signal: AbortSignal.timeout(timeoutMs) })) {
        if (e.name === 'PEER_RESPONSE' && e.messageName === 'PUT_VALUE') acks++
      }
    } catch (err) {
      this.opts.log?.(`publish ${what}: ${(err as Error).message}`)
    }
    return acks
  }

  /** The best record the network has under a key (validated and selected by kad-dht), if any. */
  async fetchRecord (key: Uint8Array, what: string, timeoutMs = 10_000): Promise<Uint8Array | undefined> {
    let value: Uint8Array | undefined
    try {
      for await (const e of this.libp2p.services.dht.get(key, { signal: AbortSignal.timeout(timeoutMs) })) {
        if (e.name === 'VALUE') value = e.value
      }
    } catch (err) {
      this.opts.log?.(`fetch ${what}: ${(err as Error).message}`)
    }
    return value
  }

  /** The best head the network has for an AGUID, accepted into the local head book if newer. */
  async fetchHead (aguid: CID, timeoutMs = 10_000): Promise<Uint8Array | undefined> {
    const key = headKey(aguid)
    let value: Uint8Array | undefined
    // kad-dht yields its one VALUE only after the whole walk and after it has sent the newest
    // record to every peer that answered an older one: a deadline that falls in between (a head
    // just updated, peers reached over new connections) returned nothing at all, though valid
    // answers had come. So every answer is checked as it comes (signature, key) and the newest
    // is kept: the walk's own result when it ends, else the newest head any peer gave.
    let newest: { seq: bigint, bytes: Uint8Array } | undefined
    try {
      for await (const e of this.libp2p.services.dht.get(key, { signal: AbortSignal.timeout(timeoutMs) })) {
        if (e.name === 'VALUE') value = e.value
        else if (e.name === 'PEER_RESPONSE' && e.record?.value !== undefined && e.record.value.length > 0) {
          const bytes = e.record.value
          try {
            // One decode: verifyHead checks the signature and the key and returns the head.
            const seq = verifyHead(bytes, aguid).seq
            if (newest === undefined || seq > newest.seq) newest = { seq, bytes }
          } catch {}
        }
      }
    } catch (err) {
      this.opts.log?.(`fetch head ${aguid.toString()}: ${(err as Error).message}`)
    }
    if (newest !== undefined && (value === undefined || seqOfHead(value) < newest.seq)) value = newest.bytes
    if (value !== undefined) {
      await this.heads.accept(value, aguid).catch(() => {})
    }
    return value
  }

  /**
   * Peers that left since the last republish pass began. A pass asked for by departures alone
   * re-puts only the records one of them was near (see nearAny); any other reason re-puts all.
   */
  private departed: KadId[] | undefined = []

  noteDeparted (kad: KadId): void {
    // Past a bound, the next pass re-puts every record (undefined: no filter).
    if (this.departed === undefined) return
    if (this.departed.length < 4096) this.departed.push(kad)
    else this.departed = undefined
  }

  /**
   * Whether one of `gone` was among the RECORD_HOLDERS nodes this node knows closest to `key`:
   * only then may a holder of the record have left. Without this, after 30% of 384 nodes left,
   * every holder of a head (its 20 closest and every node that fetched it) re-put it every
   * REPUBLISH_GAP_MS for as long as departures were being discovered.
   */
  private nearAny (key: Uint8Array, gone: KadId[]): boolean {
    const target = kadId(key)
    return wasNear(target, this.router.table.closest(target, RECORD_HOLDERS), RECORD_HOLDERS, gone)
  }

  /**
   * Re-puts every head this node holds (kad-dht records expire after 48 h; peers come and go),
   * or, with `onlyNear`, those whose key one of those departed peers was near.
   */
  async republish (onlyNear?: KadId[]): Promise<void> {
    const aguids = [...this.headStore.aguids()]
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < aguids.length && !this.stopped) {
        const aguid = CID.parse(aguids[next++])
        // The head store also holds view records and writer heads (src/view), each under its own key.
        const key = isAguid(aguid) ? headKey(aguid) : recordKeyFor(aguid)
        if (key !== undefined && onlyNear !== undefined && !this.nearAny(key, onlyNear)) continue
        const e = await this.headStore.getHead(aguid)
        if (e !== undefined && key !== undefined) await this.publishRecord(key, e.bytes, aguid.toString())
        this.republishStat.heads++
      }
    }
    await Promise.all(Array.from({ length: Math.min(REPUBLISH_CONCURRENCY, aguids.length) }, worker))
  }

  /**
   * Republishes every head soon (debounced: requests within `delayMs` of each other make one
   * pass). At most one pass runs; a request during it makes one more pass after it, so the
   * work is bounded by one pass per burst of membership changes, never one per event.
   */
  requestRepublish (reason: RepublishReason, delayMs = REPUBLISH_DEBOUNCE_MS): void {
    if (this.stopped) return
    this.republishReasons.add(reason)
    if (this.republishDue !== undefined || this.republishRun !== undefined) return
    // Churn asks often on a large network: passes start at least REPUBLISH_GAP_MS apart.
    delayMs = Math.max(delayMs, this.lastRepublishEnd + REPUBLISH_GAP_MS - Date.now())
    this.republishDue = setTimeout(() => {
      this.republishDue = undefined
      const reasons = this.republishReasons
      this.republishReasons = new Set()
      this.republishStat.passes++
      for (const r of reasons) this.republishStat[r]++
      const gone = this.departed
      this.departed = []
      this.republishRun = this.republish(reasons.size === 1 && reasons.has('leave') ? gone : undefined)
        .catch(err => this.opts.log?.(`republish: ${(err as Error).message}`))
        .finally(() => {
          this.republishRun = undefined
          this.lastRepublishEnd = Date.now()
          const again = [...this.republishReasons]
          this.republishReasons = new Set()
          for (const r of again) this.requestRepublish(r)
        })
    }, delayMs)
    this.republishDue.unref()
  }

  status (): Record<string, unknown> {
    return {
      peerId: this.peerId,
      addrs: this.addrs(),
      members: this.members.size,
      routing: { ...this.router.status(), regions: this.placement.stats, leaves: this.leaveStat },
      connections: { ...this.connections.stats, open: this.libp2p.getConnections().length },
      replication: this.replicator.status(),
      fetch: this.store.stats,
      served: this.service.stats,
      headsRefused: this.datastore.refused,
      republish: { ...this.republishStat, running: this.republishRun !== undefined },
      join: this.joiner?.status()
    }
  }

  async stop (): Promise<void> {
    this.stopped = true
    await this.joiner?.stop()
    if (this.republishDue !== undefined) clearTimeout(this.republishDue)
    if (this.republishTimer !== undefined) clearInterval(this.republishTimer)
    this.connections.stop()
    await this.router.stop()
    await this.replicator.stop()
    await this.service.stop().catch(() => {})
    await this.libp2p.stop()
    this.peerBook.flush()
  }
}
