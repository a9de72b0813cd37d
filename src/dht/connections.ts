/**
 * Bounded connections. libp2p's connection manager refuses inbound connections at
 * `maxConnections` and prunes above it. On its own, every lookup and transfer leaves its
 * connection open until the node sits at the ceiling and refuses everyone, and then others'
 * lookups fail on it ("Cannot write to a stream that is closed"; at 12 connections, 64 nodes
 * could not fill their routing tables in 3 minutes). So this trimmer keeps a node's neighbours
 * (the connected peers XOR-closest to itself, a quarter of the bound) and closes any other
 * connection that has had no open stream for IDLE_MS; above the budget it closes idle ones at
 * once, oldest first. Lookup and transfer connections are short-lived, and a node keeps room
 * for the requests of others.
 */
import type { Connection, Libp2p } from '@libp2p/interface'
import { compareDistance, kadId, type KadId } from './placement.js'

/**
 * Default of `--max-connections`: the neighbours kept open (16) plus the short-lived
 * connections of lookups (3 in flight each), of a put's pushes (k per key region) and of
 * others' requests to this node, with room to spare; far below libp2p's 300 and below a
 * default 1024 open-file limit many times over.
 */
export const DEFAULT_MAX_CONNECTIONS = 64
const TRIM_EVERY_MS = 500
/**
 * A connection without streams this long is closed (unless it is a neighbour's). Long enough
 * that the requests of one put or one read reuse a connection (each new one costs a noise
 * handshake, the largest CPU cost of a lookup), short enough that a node sits near its
 * neighbours' count when idle.
 */
const IDLE_MS = 5000

/**
 * Whether a connection carries work. libp2p's connection monitor keeps a ping stream open on
 * every connection for its whole life, so that one does not count.
 */
function busy (c: Connection): boolean {
  return c.streams.some(s => s.protocol !== PING_PROTOCOL)
}
const PING_PROTOCOL = '/ipfs/ping/1.0.0'

/**
 * The yamux GoAway code the trimmer closes with ('trim'). yamux defines 0 (normal termination),
 * 1 (protocol error) and 2 (internal error); a peer that receives this one knows that a live node
 * closed an idle connection, not that it left (a stop sends 0, a crash sends nothing), and does
 * not ping it back to find out (DhtNode.checkLeft). Pinging back on every trim kept a network
 * of 256 nodes at 12 connections opening connections while idle: 0.58 checks per node per minute,
 * a third of its dials.
 */
export const TRIM_GOAWAY = 0x7472696d

/** The GoAway code the peer closed a connection with, if it sent one (yamux keeps it). */
function remoteGoAway (c: Connection): number | undefined {
  // Neither field is in the public types: libp2p's Connection keeps its muxer, and yamux's muxer
  // the code it received. test/dht-trim checks that both still say what this reads.
  return (c as unknown as { muxer?: { remoteGoAway?: number } }).muxer?.remoteGoAway
}

/** libp2p's own limit, where it refuses inbound connections: a margin above the bound for bursts. */
export function hardCeiling (max: number): number { return max + Math.max(8, max) }

export function headroom (max: number): number { return Math.max(1, Math.min(16, Math.floor(max / 4))) }

export interface ConnectionStats { open: number, max: number, trimmed: number, peak: number }

export class ConnectionTrimmer {
  private timer?: NodeJS.Timeout
  private due?: NodeJS.Timeout
  private readonly selfKad: KadId
  private readonly kads = new Map<string, KadId>()
  /** When each connection (by id) was first seen with no stream open. */
  private readonly idleSince = new Map<string, number>()
  /** Peers whose connection this node closed, and when (a close we made is not churn). */
  readonly trimmedAt = new Map<string, number>()
  /** Peers that closed their connection to this node as a trim (TRIM_GOAWAY), and when. */
  private readonly trimmedByPeerAt = new Map<string, number>()
  readonly stats: ConnectionStats
  private readonly onOpen = (): void => this.soon()
  private readonly onClose = (e: CustomEvent<Connection>): void => {
    // Only the latest close counts: a peer that trimmed and then crashed is checked.
    const key = e.detail.remotePeer.toString()
    if (remoteGoAway(e.detail) !== TRIM_GOAWAY) { this.trimmedByPeerAt.delete(key); return }
    if (this.trimmedByPeerAt.size > 4096) this.trimmedByPeerAt.clear()
    this.trimmedByPeerAt.set(key, Date.now())
  }

  constructor (private readonly libp2p: Libp2p, readonly max: number) {
    this.selfKad = kadId(libp2p.peerId.toMultihash().bytes)
    this.stats = { open: 0, max, trimmed: 0, peak: 0 }
  }

  start (): void {
    this.timer = setInterval(() => { void this.trim() }, TRIM_EVERY_MS)
    this.timer.unref()
    this.libp2p.addEventListener('connection:open', this.onOpen)
    this.libp2p.addEventListener('connection:close', this.onClose)
  }

  stop (): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    if (this.due !== undefined) clearTimeout(this.due)
    this.libp2p.removeEventListener('connection:open', this.onOpen)
    this.libp2p.removeEventListener('connection:close', this.onClose)
  }

  /** Whether this node itself closed its connection to a peer within the last `ms`. */
  closedByUs (peerKey: string, ms = 30_000): boolean {
    const t = this.trimmedAt.get(peerKey)
    return t !== undefined && Date.now() - t < ms
  }

  /** Whether the peer itself trimmed its connection to this node within the last `ms`. */
  closedByPeer (peerKey: string, ms = 30_000): boolean {
    const t = this.trimmedByPeerAt.get(peerKey)
    return t !== undefined && Date.now() - t < ms
  }

  /** Closes an idle connection as a trim: the peer is told so (TRIM_GOAWAY). */
  async close (c: Connection): Promise<void> {
    // Only the peer's last connection going makes its departure ours: closing a duplicate must
    // not mute the leave check when the peer's other connection drops later.
    if (!this.libp2p.getConnections(c.remotePeer).some(o => o !== c && o.status === 'open')) this.trimmedAt.set(c.remotePeer.toString(), Date.now())
    this.stats.trimmed++
    // Connection.close hands its options to the muxer, and yamux sends `reason` in its GoAway.
    const options = { signal: AbortSignal.timeout(1000), reason: TRIM_GOAWAY }
    await c.close(options).catch(() => { c.abort(new Error('trimmed')) })
  }

  /** Connections a node may hold before it closes idle ones at once. */
  get budget (): number { return this.max - headroom(this.max) }
  /** Connections kept open while idle: the closest connected peers, a quarter of the bound. */
  get neighbours (): number { return Math.max(2, Math.floor(this.max / 4)) }

  private soon (): void {
    const n = this.libp2p.getConnections().length
    if (n > this.stats.peak) this.stats.peak = n
    if (this.due !== undefined || n <= this.budget) return
    this.due = setTimeout(() => { this.due = undefined; void this.trim() }, 100)
    this.due.unref()
  }

  private kadOf (c: Connection): KadId {
    const key = c.remotePeer.toString()
    let k = this.kads.get(key)
    if (k === undefined) {
      if (this.kads.size > 4096) this.kads.clear()
      this.kads.set(key, k = kadId(c.remotePeer.toMultihash().bytes))
    }
    return k
  }

  async trim (): Promise<void> {
    const conns = this.libp2p.getConnections().filter(c => c.status === 'open')
    const now = Date.now()
    this.stats.open = conns.length
    if (conns.length > this.stats.peak) this.stats.peak = conns.length
    for (const [p, t] of this.trimmedAt) if (now - t > 60_000) this.trimmedAt.delete(p)
    const live = new Set(conns.map(c => c.id))
    for (const id of this.idleSince.keys()) if (!live.has(id)) this.idleSince.delete(id)
    for (const c of conns) {
      if (busy(c)) this.idleSince.delete(c.id)
      else if (!this.idleSince.has(c.id)) this.idleSince.set(c.id, now)
    }
    if (conns.length <= this.neighbours) return
    // Neighbours are peers, not connections: one connection is kept for each of the closest
    // peers, and a second one to a neighbour (two dials crossing) may go. Both ends must keep the
    // same one, or each closes the other's and the pair ends up apart: the one dialed by the
    // peer with the lower id, then the older.
    const selfKey = this.libp2p.peerId.toString()
    const rank = (c: Connection): number => ((c.direction === 'outbound') === (selfKey < c.remotePeer.toString()) ? 0 : 1)
    const byCloseness = [...conns].sort((a, b) =>
      compareDistance(this.selfKad, this.kadOf(a), this.kadOf(b)) || rank(a) - rank(b) || a.timeline.open - b.timeline.open)
    const neighbours = new Set<string>()
    const kept = new Set<string>()
    for (const c of byCloseness) {
      const p = c.remotePeer.toString()
      if (kept.has(p)) continue
      if (kept.size >= this.neighbours) break
      kept.add(p)
      neighbours.add(c.id)
    }
    const idle = conns
      .filter(c => !neighbours.has(c.id) && !busy(c))
      .sort((a, b) => a.timeline.open - b.timeline.open)
    const over = Math.max(0, conns.length - this.budget)
    const close = idle.filter((c, i) => i < over || now - (this.idleSince.get(c.id) ?? now) >= IDLE_MS)
    if (close.length === 0) return
    await Promise.all(close.map(async c => { await this.close(c) }))
    this.stats.open = this.libp2p.getConnections().length
  }
}
