/**
 * The block service on libp2p streams: serves put/get/has from the local store and offers the
 * matching client calls. Every block received, by either side, is verified against its digest
 * before it is stored or returned; a malformed or oversized frame ends the stream, never the
 * node. Each request has a deadline, so no caller waits forever on a silent peer.
 */
import fs from 'node:fs'
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { cidFromKey, sameBytes } from '../block/index.js'
import { sha256 } from '../crypto/hash.js'
import { isReefError, ReefError } from '../errors.js'
import type { LmdbBlockStore } from '../store/lmdb.js'
import {
  BLOCK_GET_PROTOCOL, BLOCK_PROTOCOL, decodeRequest, decodeResponse, encodeRequest, encodeResponse, MAX_FRAME, MAX_GET_REQUEST, MAX_HAS,
  type Request, type Response
} from './wire.js'

export interface BlockServiceOptions {
  /** Per-request deadline in ms (default 5000). */
  timeoutMs?: number
  /**
   * Fault injection for tests: while it returns true, serve every block with one byte flipped,
   * as a broken or malicious replica would. Set only through REEF_TEST_SERVE_CORRUPT
   * (see `corruptionFlag`).
   */
  serveCorrupt?: () => boolean
}

/**
 * The test hook behind REEF_TEST_SERVE_CORRUPT: unset or empty serves honestly, `1` corrupts
 * always, any other value is a file path and corrupts while that file exists (so a test can
 * pick its corrupt replica after it has seen where blocks were placed).
 */
export function corruptionFlag (value: string | undefined): (() => boolean) | undefined {
  if (value === undefined || value === '') return undefined
  if (value === '1') return () => true
  return () => fs.existsSync(value)
}

export interface ServiceStats { served: number, stored: number, refused: number, busy: number }

/** Requests served at once (each may buffer a frame of up to MAX_FRAME bytes). */
export const MAX_INFLIGHT = 8
/** Gets served at once on BLOCK_GET_PROTOCOL, apart from MAX_INFLIGHT (each answer is one block). */
export const MAX_GET_INFLIGHT = 8
/** Requests waiting (paused) for a slot; beyond this a new request is refused at once. */
const MAX_WAITING = 512
const MAX_GET_WAITING = 128
const MAX_INBOUND_PER_CONNECTION = 64

/**
 * Serving slots. A request holds one while it is read and answered; the rest wait, paused (so
 * each buffers at most the muxer's initial window), up to `maxWaiting`, each bounded by its
 * signal.
 */
class Slots {
  private inflight = 0
  private readonly waiting: Array<() => void> = []

  constructor (private readonly max: number, private readonly maxWaiting: number) {}

  async acquire (signal: AbortSignal): Promise<boolean> {
    if (this.inflight < this.max) {
      this.inflight++
      return true
    }
    if (this.waiting.length >= this.maxWaiting) return false
    return await new Promise<boolean>(resolve => {
      const grant = (): void => { signal.removeEventListener('abort', onAbort); resolve(true) }
      const onAbort = (): void => {
        const i = this.waiting.indexOf(grant)
        if (i >= 0) this.waiting.splice(i, 1)
        resolve(false)
      }
      this.waiting.push(grant)
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }

  release (): void {
    const next = this.waiting.shift()
    if (next !== undefined) next() // the slot passes on
    else this.inflight--
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')

export class BlockService {
  readonly stats: ServiceStats = { served: 0, stored: 0, refused: 0, busy: 0 }
  /**
   * Puts, has checks and peer lists. Each request can carry a frame of up to MAX_FRAME bytes, so
   * without a global cap a peer opening hundreds of streams makes the node buffer hundreds of
   * frames at once.
   */
  private readonly slots = new Slots(MAX_INFLIGHT, MAX_WAITING)
  /** Gets alone (BLOCK_GET_PROTOCOL): replication and repair never hold these. */
  private readonly getSlots = new Slots(MAX_GET_INFLIGHT, MAX_GET_WAITING)
  private readonly timeoutMs: number

  /** Answers a 'near' request (Kademlia's FIND_NODE) from a peer: see Router.near. */
  near: (from: PeerId, target: Uint8Array) => Promise<string[]> = async () => []

  constructor (private readonly libp2p: Libp2p, private readonly local: LmdbBlockStore, private readonly opts: BlockServiceOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 5000
  }

  async start (): Promise<void> {
    const limits = { maxInboundStreams: MAX_INBOUND_PER_CONNECTION, maxOutboundStreams: 256 }
    await this.libp2p.handle(BLOCK_PROTOCOL, (stream: Stream, conn: Connection) => { void this.serve(stream, conn.remotePeer, this.slots, MAX_FRAME) }, limits)
    await this.libp2p.handle(BLOCK_GET_PROTOCOL, (stream: Stream, conn: Connection) => { void this.serve(stream, conn.remotePeer, this.getSlots, MAX_GET_REQUEST) }, limits)
  }

  async stop (): Promise<void> {
    await this.libp2p.unhandle(BLOCK_PROTOCOL)
    await this.libp2p.unhandle(BLOCK_GET_PROTOCOL)
  }

  private async serve (stream: Stream, from: PeerId, slots: Slots, maxRequest: number): Promise<void> {
    const signal = AbortSignal.timeout(this.timeoutMs)
    // Paused, the stream buffers at most the muxer's initial window (yamux: 256 KiB) and the
    // peer's further writes wait, until a slot frees up. A stream can be closed already (its
    // connection trimmed or lost while the protocol was negotiated): nothing to serve then.
    try {
      stream.pause()
    } catch {
      this.stats.refused++
      return
    }
    if (!(await slots.acquire(signal))) {
      this.stats.refused++
      this.stats.busy++
      stream.abort(new Error('busy'))
      return
    }
    try {
      const lp = lpStream(stream, { maxDataLength: maxRequest, maxBufferSize: Math.max(maxRequest + 16, 64 * 1024) })
      stream.resume()
      const raw = await lp.read({ signal })
      let res: Response
      try {
        // The message's chunks as read: a put's blocks are read out of them without joining them.
        const req = decodeRequest(raw)
        if (slots === this.getSlots && req.op !== 'get' && req.op !== 'near') throw new ReefError('BAD_ENCODING', `only gets and near requests are served on ${BLOCK_GET_PROTOCOL}`)
        res = await this.answer(req, from)
      } catch (err) {
        this.stats.refused++
        res = { ok: false, e: isReefError(err) ? err.code : 'IO' }
      }
      await lp.write(encodeResponse(res), { signal })
      await stream.close({ signal })
    } catch (err) {
      this.stats.refused++
      stream.abort(err as Error)
    } finally {
      slots.release()
    }
  }

  private async answer (req: Request, from: PeerId): Promise<Response> {
    switch (req.op) {
      case 'get': {
        let d: Uint8Array
        try {
          d = await this.local.get(cidFromKey(req.k))
        } catch (err) {
          if (isReefError(err, 'NOT_FOUND') || isReefError(err, 'BLOCK_CORRUPT')) return { ok: false, e: err.code }
          throw err
        }
        this.stats.served++
        if (this.opts.serveCorrupt?.() === true && d.length > 0) {
          d = d.slice()
          d[0] ^= 0xff
        }
        return { ok: true, d }
      }
      case 'has':
        return { ok: true, have: req.ks.map(k => this.local.hasSync(cidFromKey(k))) }
      case 'near':
        return { ok: true, ps: (await this.near(from, req.t)).slice(0, MAX_HAS) }
      case 'put': {
        const have: boolean[] = []
        const good = []
        for (const [k, d] of req.bs) {
          const ok = sameBytes(sha256(d), k)
          have.push(ok)
          if (ok) good.push({ cid: cidFromKey(k), bytes: d })
          else this.stats.refused++
        }
        await this.local.putMany(good)
        this.stats.stored += good.length
        return { ok: true, have }
      }
    }
  }

  // ---- client side -------------------------------------------------------------------------

  async request (peer: PeerId, req: Request, timeoutMs = this.timeoutMs): Promise<Response> {
    const signal = AbortSignal.timeout(timeoutMs)
    // negotiateFully false: the protocol name goes out with the request instead of a round
    // trip before it (one protocol only, so nothing to negotiate).
    const protocol = req.op === 'get' || req.op === 'near' ? BLOCK_GET_PROTOCOL : BLOCK_PROTOCOL
    const stream = await this.libp2p.dialProtocol(peer, protocol, { signal, negotiateFully: false })
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_FRAME, maxBufferSize: MAX_FRAME + 16 })
      await lp.write(encodeRequest(req), { signal })
      const res = decodeResponse((await lp.read({ signal })).subarray())
      await stream.close({ signal }).catch(() => {})
      return res
    } catch (err) {
      stream.abort(err as Error)
      throw err
    }
  }

  /**
   * A verified block from one peer; undefined if the peer lacks it; throws on a corrupt answer.
   * The request ends at `timeoutMs` (at most the service's request deadline).
   */
  async getFrom (peer: PeerId, key: Uint8Array, timeoutMs = this.timeoutMs): Promise<Uint8Array | undefined> {
    const res = await this.request(peer, { op: 'get', k: key }, Math.min(timeoutMs, this.timeoutMs))
    if (!res.ok || res.d === undefined) return undefined
    if (!sameBytes(sha256(res.d), key)) {
      throw ReefError.blockCorrupt(cidFromKey(key).toString(), `the answer of peer ${peer.toString()}`)
    }
    return res.d
  }

  /** Stores a batch on a peer; returns which blocks it acknowledged. */
  async putTo (peer: PeerId, blocks: Array<[Uint8Array, Uint8Array]>): Promise<boolean[]> {
    const res = await this.request(peer, { op: 'put', bs: blocks })
    if (!res.ok || res.have === undefined || res.have.length !== blocks.length) return blocks.map(() => false)
    return res.have
  }

  /** Kademlia's FIND_NODE: the contacts `peer` knows closest to a kad id. Throws if it does not answer. */
  async nearOf (peer: PeerId, target: Uint8Array): Promise<string[]> {
    const res = await this.request(peer, { op: 'near', t: target })
    if (!res.ok) throw new ReefError('IO', `near: ${peer.toString()} answered ${res.e}`)
    return res.ps ?? []
  }

  async hasOn (peer: PeerId, keys: Uint8Array[]): Promise<boolean[]> {
    const res = await this.request(peer, { op: 'has', ks: keys })
    if (!res.ok || res.have === undefined || res.have.length !== keys.length) return keys.map(() => false)
    return res.have
  }
}

export { hex }
