/**
 * A reef DHT node: libp2p (TCP, noise, yamux) with kad-dht for heads and the reef block
 * protocol for blocks, placement on the k closest nodes, background replication and repair.
 * The peer id derives from the data directory's ed25519 identity, so it is stable and not
 * chosen. Settings that matter on a small loopback network (each found the hard way):
 *   ping stream limits 16/16   kad-dht pings new contacts while the connection monitor pings
 *                              too; libp2p's default 2 inbound/1 outbound aborts connections
 *   allow 127.0.0.1            libp2p rate-limits inbound connections per host (5/s)
 *   loopback peer mapper       kad-dht's default drops private addresses, loopback included
 *   clientMode false           a node without a public address would turn itself into a client
 */
import '../polyfills.js'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
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
import { Members } from './members.js'
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
/** Deadline of the first join round, which start-up waits for (the background rounds take longer). */
const FIRST_ROUND_MS = 3000

/** Peer addresses on the loopback network only: reef tests and defaults never leave it. */
const mapper: PeerInfoMapper = (peer) => ({
  ...peer,
  multiaddrs: peer.multiaddrs.filter(ma => {
    const s = ma.toString()
    return s.startsWith('/ip4/') || s.startsWith('/ip6/')
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
    readonly peerBook: PeerBook
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
    const libp2p = await createLibp2p({
      privateKey: await generateKeyPairFromSeed('Ed25519', seed),
      datastore,
      addresses: { listen: opts.listen },
      connectionManager: { allow: ['/ip4/127.0.0.1/ipcidr/32', '/ip6/::1/ipcidr/128'] },
      transports: [tcp()],
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
          validators: { reef: validateHeadRecord, ...VIEW_VALIDATORS },
          selectors: { reef: selectHeadRecord, ...VIEW_SELECTORS }
        })
      }
    })
    const members = new Members(libp2p.peerId)
    const service = new BlockService(libp2p, local, { serveCorrupt: corruptionFlag(process.env.REEF_TEST_SERVE_CORRUPT) })
    const k = opts.k ?? DEFAULT_K
    const replicator = new Replicator(local, members, service, { k, repairIntervalMs: opts.repairIntervalMs, log })
    const store = new DhtBlockStore(local, members, service, replicator, { log, fetchDeadlineMs: opts.fetchDeadlineMs })
    const peerBook = new PeerBook(opts.peersFile, log)
    const node = new DhtNode(libp2p, members, service, replicator, store, datastore, heads, headStore, opts, peerBook)
    node.recordListeners = recordListeners
    service.peerList = async () => await node.peerList()
    await service.start()
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
      node.requestRepublish('join')
      void node.exchangePeers(m.id)
    })
    // A leaving peer took its copies of the heads with it: the records go back to the nodes
    // now closest to each AGUID (in a network larger than kad-dht's 20 closest, a node that
    // held none).
    members.onLeave(() => node.requestRepublish('leave'))
    node.exchangeTimer = setInterval(() => {
      const others = members.others()
      if (others.length > 0) void node.exchangePeers(others[Math.floor(Math.random() * others.length)].id)
    }, 10_000)
    node.exchangeTimer.unref()
    joiner.start()
    return node
  }

  private exchangeTimer?: NodeJS.Timeout

  /** Dialable addresses of every member (from identify), as multiaddr/p2p/id strings. */
  async peerList (): Promise<string[]> {
    const out: string[] = []
    for (const m of this.members.others()) {
      try {
        const p = await this.libp2p.peerStore.get(m.id)
        for (const a of p.addresses) out.push(`${a.multiaddr.toString()}/p2p/${m.key}`)
      } catch {}
    }
    return out
  }

  /**
   * Peer exchange: asks a member whom it knows and dials the ones we do not. kad-dht's own
   * lookups fill routing tables only eventually; placement needs every node to know every
   * other now, or two nodes disagree on a block's k closest.
   */
  async exchangePeers (from: PeerId): Promise<void> {
    let list: string[]
    try {
      list = await this.service.peersOf(from)
    } catch {
      return
    }
    await Promise.all(list.slice(0, 256).map(async (addr) => {
      const id = addr.slice(addr.lastIndexOf('/p2p/') + 5)
      if (id === this.peerId || this.members.get(id) !== undefined) return
      try {
        await this.libp2p.dial(multiaddr(addr), { signal: AbortSignal.timeout(5000) })
      } catch {}
    }))
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
    if (this.exchangeTimer !== undefined) clearInterval(this.exchangeTimer)
    await this.replicator.stop()
    await this.service.stop().catch(() => {})
    await this.libp2p.stop()
    this.peerBook.flush()
  }
}
