/**
 * One writer's log: turns operations into signed-off records, appends them durably, and on
 * open replays what is on disk (torn tail discarded). The fs core applies the same records
 * live and on replay, so a crash loses nothing that a sync acknowledged.
 */
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { cidFromKey, DAG_CBOR, SHA256_CODE } from '../block/index.js'
import { sha256Parts } from '../crypto/hash.js'
import { decodeRecord, encodeRecordParts, type LogRecord, type Op } from './record.js'
import { SegmentLog } from './segment.js'

export interface Appended { cid: CID, record: LogRecord }

export class WriterLog {
  private readonly seg: SegmentLog
  private readonly writerHex: string
  private n = 0
  private prev?: CID
  private vv: Record<string, number> = {}
  /** Records on disk, oldest first, as found at open. */
  replayed: Appended[] = []
  discardedBytes = 0

  constructor (dir: string, readonly writer: Uint8Array) {
    this.seg = new SegmentLog(dir)
    this.writerHex = Buffer.from(writer).toString('hex')
  }

  open (): this {
    const { frames, discardedBytes } = this.seg.open()
    this.discardedBytes = discardedBytes
    this.replayed = frames.map(f => ({ cid: cidFromKey(f.digest, DAG_CBOR), record: decodeRecord(f.bytes) }))
    const last = this.replayed[this.replayed.length - 1]
    if (last !== undefined) this.resumeAfter(last.cid, last.record.n, last.record.vv)
    return this
  }

  /** Continues numbering after a record (used when the log on disk was already folded away). */
  resumeAfter (prev: CID | undefined, n: number, vv: Record<string, number>): void {
    if (n < this.n) return
    this.n = n
    this.prev = prev
    this.vv = { ...vv }
  }

  get counter (): number { return this.n }
  get last (): CID | undefined { return this.prev }
  get versionVector (): Record<string, number> { return { ...this.vv } }
  get segmentBytes (): number { return this.seg.bytes }

  /** Appends a record (written, not yet fsync'd). */
  append (op: Op, time = Date.now()): Appended {
    const n = this.n + 1
    const vv = { ...this.vv, [this.writerHex]: n }
    const record: LogRecord = { writer: this.writer, n, vv, time, op }
    if (this.prev !== undefined) record.prev = this.prev
    const parts = encodeRecordParts(record)
    const cid = CID.createV1(DAG_CBOR, Digest.create(SHA256_CODE, sha256Parts(parts)))
    this.seg.append(parts, cid.multihash.digest)
    this.n = n
    this.vv = vv
    this.prev = cid
    return { cid, record }
  }

  sync (): void { this.seg.sync() }

  /** After a fold made everything so far part of a durable version: start afresh. */
  checkpoint (): void {
    const seg = this.seg.rotate()
    this.seg.dropBefore(seg)
    this.replayed = []
  }

  close (): void { this.seg.close() }
}
