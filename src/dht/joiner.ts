/**
 * Joining is never over: while this node has no member besides itself (at start, or after
 * losing every connection), it dials its bootstrap peers and the peers it remembers, backing
 * off from MIN_DELAY_MS doubling to MAX_DELAY_MS between rounds. A start never waits for a
 * peer that is down; a peer that comes back, or a network that comes back, is found again.
 */
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Libp2p } from 'libp2p'
import type { KadDHT } from '@libp2p/kad-dht'
import type { Members } from './members.js'
import type { PeerBook } from './peerbook.js'

export const MIN_DELAY_MS = 500
export const MAX_DELAY_MS = 30_000
/** How often a joined node checks that it still is (a leave also wakes the loop at once). */
const CHECK_MS = 10_000
const DIAL_TIMEOUT_MS = 5000
/** Bound of one whole round (many remembered peers, each with several addresses, may be stale). */
const ROUND_MS = 20_000
/** Dials in flight at once in one round. */
const DIAL_CONCURRENCY = 8

export interface JoinStatus { joined: boolean, rounds: number, joins: number, known: number, nextDelayMs: number }

export class Joiner {
  private stopped = false
  private readonly abort = new AbortController()
  private wakeUp?: () => void
  private loop?: Promise<void>
  private delay = MIN_DELAY_MS
  private rounds = 0
  private joins = 0

  constructor (
    private readonly libp2p: Libp2p<{ dht: KadDHT }>,
    private readonly members: Members,
    private readonly book: PeerBook,
    private readonly bootstrap: Multiaddr[],
    private readonly opts: { log?: (line: string) => void, onJoined?: () => void, afterDial?: () => Promise<void> }
  ) {
    members.onLeave(() => { if (members.size === 1) this.wake() })
  }

  /** Candidates: the bootstrap list, then remembered peers, most recently seen first. */
  private candidates (): Multiaddr[] {
    const out = [...this.bootstrap]
    const self = this.libp2p.peerId.toString()
    for (const p of this.book.list()) {
      if (p.id === self) continue
      for (const a of p.addrs) {
        try {
          out.push(multiaddr(a.includes('/p2p/') ? a : `${a}/p2p/${p.id}`))
        } catch {}
      }
    }
    return out
  }

  /**
   * One round: dials the candidates (bounded concurrency, each dial and the round under a
   * deadline); true if any answered. Once connected, fills kad-dht's routing table.
   */
  async attempt (dialTimeoutMs = DIAL_TIMEOUT_MS, roundMs = ROUND_MS): Promise<boolean> {
    this.rounds++
    const list = this.candidates()
    const round = AbortSignal.any([AbortSignal.timeout(roundMs), this.abort.signal])
    let next = 0
    let ok = false
    let failed = 0
    let firstErr = ''
    const worker = async (): Promise<void> => {
      while (next < list.length && !ok && !round.aborted) {
        const ma = list[next++]
        try {
          await this.libp2p.dial(ma, { signal: AbortSignal.any([AbortSignal.timeout(dialTimeoutMs), round]) })
          ok = true
        } catch (err) {
          if (failed++ === 0) firstErr = `${ma.toString()}: ${(err as Error).message}`
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(DIAL_CONCURRENCY, list.length) }, worker))
    // One line per round, and only on the first and on those at the backoff cap: a node
    // offline for a day logs a line every MAX_DELAY_MS, not one per address per round.
    if (!ok && list.length > 0 && (this.rounds === 1 || this.delay >= MAX_DELAY_MS)) {
      this.opts.log?.(`not joined: ${failed} of ${list.length} addresses failed (${firstErr}); retrying in the background`)
    }
    if (ok && !this.stopped) {
      // The block routing's join (a self lookup) goes on in the background; kad-dht's table is
      // filled before a start returns, so that a follower mount finds its head at once.
      void this.opts.afterDial?.().catch(() => {})
      await this.fillRoutingTable()
    }
    return ok
  }

  private async fillRoutingTable (): Promise<void> {
    // kad-dht adds a dialled peer to its routing table only after identify, asynchronously: a
    // lookup before that runs "with no peers" and finds nothing (a follower mount then found
    // no head for the AGUID it was asked to mount). Wait (bounded) for the first entry.
    const table = (this.libp2p.services.dht as unknown as { routingTable?: { size: number } }).routingTable
    for (let i = 0; i < 100 && table !== undefined && table.size === 0 && !this.stopped; i++) await this.sleep(50)
    try {
      for await (const _ of this.libp2p.services.dht.getClosestPeers(this.libp2p.peerId.toMultihash().bytes, { signal: AbortSignal.any([AbortSignal.timeout(10_000), this.abort.signal]) })) { /* fills the routing table */ }
    } catch (err) {
      this.opts.log?.(`self lookup: ${(err as Error).message}`)
    }
  }

  /** Starts the background loop. */
  start (): void {
    this.loop ??= this.run()
  }

  private async run (): Promise<void> {
    while (!this.stopped) {
      if (this.members.size > 1) {
        this.delay = MIN_DELAY_MS
        await this.sleep(CHECK_MS)
        continue
      }
      if (this.bootstrap.length === 0 && this.book.size === 0) {
        // Nobody to ask: a first node waits to be found by others.
        await this.sleep(CHECK_MS)
        continue
      }
      // A dial can succeed and the peer still not be a member (it speaks no reef, or dropped
      // the connection at once): only membership ends the backoff, or this loop would spin.
      if (await this.attempt() && this.members.size > 1) {
        this.joins++
        this.delay = MIN_DELAY_MS
        this.opts.log?.(`joined the network (${this.members.size - 1} peers)`)
        this.opts.onJoined?.()
        continue
      }
      await this.sleep(this.delay)
      this.delay = Math.min(MAX_DELAY_MS, this.delay * 2)
    }
  }

  private wake (): void { this.wakeUp?.() }

  /** Waits `ms`, or less if woken or stopped. */
  private async sleep (ms: number): Promise<void> {
    if (this.stopped) return
    await new Promise<void>(resolve => {
      const timer = setTimeout(done, ms)
      timer.unref()
      function done (): void { clearTimeout(timer); resolve() }
      this.wakeUp = done
    })
    this.wakeUp = undefined
  }

  status (): JoinStatus {
    return { joined: this.members.size > 1, rounds: this.rounds, joins: this.joins, known: this.book.size, nextDelayMs: this.delay }
  }

  async stop (): Promise<void> {
    this.stopped = true
    this.abort.abort()
    this.wake()
    await this.loop
  }
}
