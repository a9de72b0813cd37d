/**
 * A reef DHT node: libp2p (TCP, noise, yamux) with kad-dht for heads and for routing, and the
 * reef block protocol for blocks: placement on the k closest nodes found by Kademlia lookups
 * batched by key region (regions.ts), background replication and repair, a bounded number of
 * connections (connections.ts). No node knows every other; none dials everyone.
 * The peer id derives from the data directory's ed25519 identity, so it is stable and not
 * chosen. Settings that matter on a small loopback network (each found the hard way):
 *   ping stream limits 16/16   kad-dht pings new contacts while the connection monitor pings
 *                              too; libp2p's default 2 inbound/1 outbound aborts connections
 *   inbound threshold 1000/s   libp2p rate-limits inbound connections per host (5/s); an
 *                              allow list would exempt loopback from maxConnections too
 *   loopback peer mapper       kad-dht's default drops private addresses, loopback included
 *   clientMode false           a node without a public address would turn itself into a client
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
import type { HeadBook } from '../naming/index.js'
import type { LmdbBlockStore, LmdbHeadStore } from '../store/lmdb.js'
import { BlockService, corruptionFlag } from './blocks.js'
import { HeadGuardDatastore, headKey, selectHeadRecord, validateHeadRecord } from './heads.js'
import { ViewBook } from '../view/book.js'
import { recordKeyFor, VIEW_SELECTORS, VIEW_VALIDATORS, viewRecordGuard } from '../view/dht.js'
import { Joiner } from './joiner.js'
import { ConnectionTrimmer, DEFAULT_MAX_CONNECTIONS } from './connections.js'
import { type Member, Members } from './members.js'
import { Regions } from './regions.js'
import { KAD_BUCKET, KadEngine, memberOf } from './routing.js'
import { PeerBook } from './peerbook.js'
import { Replicator } from './replicator.js'
import { DhtBlockStore } from './store.js'
import { BLOCK_PROTOCOL } from './wire.js'

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
/** Heads put at once by a republish pass (each put is a DHT query with its own deadline). */
const REPUBLISH_CONCURRENCY = 4
/** Requests in flight per lookup. */
const LOOKUP_ALPHA = 3
/** Deadline of the first join round, which start-up waits for (the background rounds take longer). */
const FIRST_ROUND_MS = 3000

/** Peer addresses on the loopback network only: reef tests and defaults never leave it. */
const mapper: PeerInfoMapper = (peer) => ({
  ...peer,
  multiaddrs: peer.multiaddrs.filter(ma => {
    const s = ma.toString()
    return s.startsWith('/ip4/') || s.startsWith('/ip6/') || s.startsWith('/memory/')
  })
})

export class DhtNode {
  private republishTimer?: NodeJS.Timeout
  /** Republish passes, by the reasons that asked for them (one pass can serve several). */
  readonly republishStat = { passes: 0, join: 0, leave: 0, timer: 0, heads: 0 }
  private republishDue?: NodeJS.Timeout
  private republishReasons = new Set<RepublishReason>()
  private republishRun?: Promise<void>
  private stopped = false
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
    readonly placement: Regions<Member>,
    readonly engine: KadEngine,
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
    const datastore = new HeadGuardDatastore(heads, viewRecordGuard(new ViewBook(headStore)))
    const maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS
    if (!(Number.isInteger(maxConnections) && maxConnections >= 4)) throw ReefError.badInput(`--max-connections ${maxConnections}: needs an integer of at least 4`)
    const libp2p = await createLibp2p({
      privateKey: await generateKeyPairFromSeed('Ed25519', seed),
      datastore,
      addresses: { listen: opts.listen },
      connectionManager: { maxConnections, inboundConnectionThreshold: 1000, maxIncomingPendingConnections: 64 },
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
          // One path of 3 requests in flight (classic Kademlia). kad-dht's default is 20 disjoint
          // paths of 3: up to 60 dials per lookup, which a bounded node cannot hold (at 12
          // connections a 30-node self lookup took 5 s, most of it refused connections).
          alpha: LOOKUP_ALPHA,
          disjointPaths: 1,
          validators: { reef: validateHeadRecord, ...VIEW_VALIDATORS },
          selectors: { reef: selectHeadRecord, ...VIEW_SELECTORS }
        })
      }
    })
    // kad-dht tags the 20 peers closest to this one KEEP_ALIVE, and libp2p re-dials such peers
    // whenever they disconnect: with a bound below 20 that fought the trimmer forever.
    ;(libp2p.services.dht as unknown as { routingTable?: { closestPeerTagger?: { stop: () => void } } }).routingTable?.closestPeerTagger?.stop()
    const members = new Members(libp2p.peerId)
    const service = new BlockService(libp2p, local, { serveCorrupt: corruptionFlag(process.env.REEF_TEST_SERVE_CORRUPT) })
    const k = opts.k ?? DEFAULT_K
    const engine = new KadEngine(libp2p, members.self)
    const placement = new Regions(engine, k, { ttlMs: opts.regionTtlMs })
    const replicator = new Replicator(local, members, placement, service, { k, repairIntervalMs: opts.repairIntervalMs, log })
    const store = new DhtBlockStore(local, members, placement, service, replicator, { log, fetchDeadlineMs: opts.fetchDeadlineMs })
    const peerBook = new PeerBook(opts.peersFile, log)
    const connections = new ConnectionTrimmer(libp2p, maxConnections)
    const node = new DhtNode(libp2p, members, service, replicator, store, datastore, heads, headStore, opts, peerBook, placement, engine, connections)
    await service.start()
    connections.start()
    // Churn, as far as this node can see it: a node new to the routing table may belong to a
    // cached region; a peer kad-dht evicted (it failed its pings) takes its regions with it.
    const table = (libp2p.services.dht as unknown as { routingTable?: EventTarget }).routingTable
    table?.addEventListener('peer:add', (e) => { placement.peerSeen(memberOf((e as CustomEvent<PeerId>).detail)) })
    table?.addEventListener('peer:remove', (e) => { placement.peerGone((e as CustomEvent<PeerId>).detail.toString()) })
    // Membership before any dial, or peers identified early are missed.
    await libp2p.register(BLOCK_PROTOCOL, {
      onConnect: (peer) => members.add(peer),
      onDisconnect: (peer) => members.remove(peer)
    })
    replicator.start()
    members.onJoin((m) => { void node.remember(m.id) })
    members.onLeave((m) => { void node.remember(m.id) })
    const joiner = node.joiner = new Joiner(libp2p, members, peerBook, bootstrap, {
      log,
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
    members.onJoin((m) => {
      // With bounded connections, peers connect and disconnect all the time (transfers, lookups):
      // only a peer that is new to this node is news for its heads.
      if (!node.seen.has(m.key)) {
        node.seen.add(m.key)
        node.requestRepublish('join')
      }
    })
    // A peer that dropped a connection this node did not close may have left: if it cannot be
    // reached again, it took its copies of the heads and blocks with it, so the records go back
    // to the nodes now closest to each AGUID and the blocks it held are repaired.
    members.onLeave((m) => { void node.checkLeft(m) })
    joiner.start()
    return node
  }

  /**
   * Whether a peer is among the routing table's KAD_BUCKET closest to this node: the replicas of
   * the blocks this node holds sit in that neighbourhood, so its departure is this node's to repair.
   */
  private isNeighbour (peerKey: string): boolean {
    const table = (this.libp2p.services.dht as unknown as { routingTable?: { closestPeers: (kad: Uint8Array, o: { count: number }) => PeerId[] } }).routingTable
    return table?.closestPeers(this.members.self.kad, { count: KAD_BUCKET }).some(p => p.toString() === peerKey) ?? false
  }

  /** Peers this node has been connected to (a reconnection is not a join). */
  readonly seen = new Set<string>()
  private readonly checking = new Set<string>()
  readonly leaveStat = { checks: 0, left: 0 }

  /**
   * A peer's last connection closed and this node did not close it: one ping (bounded) says
   * whether it is still there. Only peers placement relies on (members of a cached region) are
   * checked, one check per peer at a time, so closing transfer connections costs nothing.
   */
  async checkLeft (m: { id: PeerId, key: string }): Promise<void> {
    if (this.stopped || this.checking.has(m.key) || this.connections.closedByUs(m.key)) return
    if (!this.placement.holdsPeer(m.key) && !this.isNeighbour(m.key)) return
    this.checking.add(m.key)
    this.leaveStat.checks++
    try {
      await this.libp2p.services.ping.ping(m.id, { signal: AbortSignal.timeout(3000) })
    } catch {
      if (this.stopped) return
      this.leaveStat.left++
      this.seen.delete(m.key)
      this.placement.peerGone(m.key)
      this.replicator.requestRepair(2000)
      this.requestRepublish('leave')
      // The routing table forgets it too, so lookups stop asking a dead node first.
      await (this.libp2p.services.dht as unknown as { routingTable?: { remove: (p: PeerId) => Promise<void> } }).routingTable?.remove(m.id).catch(() => {})
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
    let value: Uint8Array | undefined
    try {
      for await (const e of this.libp2p.services.dht.get(headKey(aguid), { signal: AbortSignal.timeout(timeoutMs) })) {
        if (e.name === 'VALUE') value = e.value
      }
    } catch (err) {
      this.opts.log?.(`fetch head ${aguid.toString()}: ${(err as Error).message}`)
    }
    if (value !== undefined) {
      await this.heads.accept(value, aguid).catch(() => {})
    }
    return value
  }

  /** Re-puts every head this node holds (kad-dht records expire after 48 h; peers come and go). */
  async republish (): Promise<void> {
    const aguids = [...this.headStore.aguids()]
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < aguids.length && !this.stopped) {
        const aguid = CID.parse(aguids[next++])
        const e = await this.headStore.getHead(aguid)
        // The head store also holds view records and writer heads (src/view), each under its own key.
        const key = isAguid(aguid) ? headKey(aguid) : recordKeyFor(aguid)
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
    this.republishDue = setTimeout(() => {
      this.republishDue = undefined
      const reasons = this.republishReasons
      this.republishReasons = new Set()
      this.republishStat.passes++
      for (const r of reasons) this.republishStat[r]++
      this.republishRun = this.republish()
        .catch(err => this.opts.log?.(`republish: ${(err as Error).message}`))
        .finally(() => {
          this.republishRun = undefined
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
      routing: {
        table: this.engine.tableSize,
        lookups: this.engine.stats,
        regions: this.placement.stats,
        connections: { ...this.connections.stats, open: this.libp2p.getConnections().length },
        leaves: this.leaveStat
      },
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
    await this.replicator.stop()
    await this.service.stop().catch(() => {})
    await this.libp2p.stop()
    this.peerBook.flush()
  }
}
