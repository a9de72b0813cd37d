/**
 * One writer's log: turns operations into signed-off records, appends them durably, and on
 * open replays what is on disk (torn tail discarded). The fs core applies the same records
 * live and on replay, so a crash loses nothing that a sync acknowledged.
 */
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { type Block, cidFromKey, DAG_CBOR, RAW, sameBytes, SHA256_CODE } from '../block/index.js'
import { sha256, sha256Parts } from '../crypto/hash.js'
import { ReefError } from '../errors.js'
import { decodeRecord, encodeRecordParts, type LogRecord, type Op } from './record.js'
import { type NewFrame, SegmentLog } from './segment.js'
import type { BlockStore } from '../store/types.js'

/** Writes at least this large keep their data in a raw frame of its own. */
export const DATA_FRAME_MIN = 16 * 1024
/** Log blocks stored per commit while folding a large log. */
export const LOG_BATCH_BYTES = 8 * 1024 * 1024

export interface Appended { cid: CID, record: LogRecord }

/** A record found at open, and the segment it is in. */
export interface Replayed extends Appended { segment: number }

export class WriterLog {
  private readonly seg: SegmentLog
  private readonly writerHex: string
  private n = 0
  private prev?: CID
  private vv: Record<string, number> = {}
  /** Records on disk, oldest first, as found at open (ReefFS.open lets them go once applied unless told to keep them). */
  replayed: Replayed[] = []
  discardedBytes = 0

  constructor (dir: string, readonly writer: Uint8Array) {
    this.seg = new SegmentLog(dir)
    this.writerHex = Buffer.from(writer).toString('hex')
  }

  open (): this {
    const { frames, discardedBytes } = this.seg.open()
    this.discardedBytes = discardedBytes
    // A write record may name its data, which then sits in a raw frame just before it.
    const data = new Map<string, Uint8Array>()
    this.replayed = []
    // The first frame of the record being read (its data frame, if it has one).
    let first: (typeof frames)[number] | undefined
    for (const f of frames) {
      first ??= f
      if (f.raw) {
        data.set(Buffer.from(f.digest).toString('hex'), f.bytes)
        continue
      }
      const record = decodeRecord(f.bytes)
      // A segment's first record follows the previous segment's last. If it does not, a crash
      // cut that segment short (a fold's cut leaves it unsynced until the next fsync, which
      // syncs it before anything later): nothing from here on was acknowledged, and replaying
      // it past the gap would apply changes to a state they were not made on.
      const before = this.replayed[this.replayed.length - 1]
      if (before !== undefined && first.segment !== before.segment && (record.prev === undefined || !record.prev.equals(before.cid))) {
        this.discardedBytes += this.seg.bytesFrom(first.segment, first.start)
        this.seg.cutAt(first.segment, first.start)
        break
      }
      if (record.op.op === 'write' && record.op.dataCid !== undefined) {
        const bytes = data.get(Buffer.from(record.op.dataCid.multihash.digest).toString('hex'))
        if (bytes === undefined) throw new ReefError('LOG_CORRUPT', `log record ${record.n} names data ${record.op.dataCid.toString()} that is not in the log`)
        record.op.data = bytes
      }
      this.replayed.push({ cid: cidFromKey(f.digest, DAG_CBOR), record, segment: f.segment })
      first = undefined
    }
    const last = this.replayed[this.replayed.length - 1]
    if (last !== undefined) this.resumeAfter(last.cid, last.record.n, last.record.vv)
    return this
  }

  /** Continues numbering after a record (used when the log on disk was already folded away). */
  resumeAfter (prev: CID | undefined, n: number, vv: Record<string, number>): void {
    if (n < this.n) return
    // A merged version (issue 12) names no record of this writer's (ReefFS finds it among the
    // merge's parents); in one process the chain goes on from the last record appended.
    this.prev = prev ?? (n === this.n ? this.prev : undefined)
    this.n = n
    this.vv = { ...vv }
  }

  /** Joins a version vector into this writer's (it has seen what a merged version holds). */
  observe (vv: Record<string, number>): void {
    for (const [w, n] of Object.entries(vv)) if ((this.vv[w] ?? 0) < n) this.vv[w] = n
  }

  get counter (): number { return this.n }
  get last (): CID | undefined { return this.prev }
  get versionVector (): Record<string, number> { return { ...this.vv } }
  get segmentBytes (): number { return this.seg.bytes }

  /**
   * Appends a record (written, not yet fsync'd). A write of DATA_FRAME_MIN bytes or more, or
   * one whose data digest the caller already has (the FUSE thread hashes write-behind data),
   * puts its data in a raw frame of its own and names it: the record itself stays small, and
   * the data is hashed once, possibly off this thread.
   */
  append (op: Op, time = Date.now(), dataDigest?: Uint8Array): Appended {
    const n = this.n + 1
    const vv = { ...this.vv, [this.writerHex]: n }
    const frames: NewFrame[] = []
    if (op.op === 'write' && op.dataCid === undefined && (dataDigest !== undefined || op.data.length >= DATA_FRAME_MIN)) {
      const digest = dataDigest ?? sha256(op.data)
      frames.push({ parts: [op.data], digest, raw: true })
      op = { ...op, dataCid: CID.createV1(RAW, Digest.create(SHA256_CODE, digest)) }
    }
    const record: LogRecord = { writer: this.writer, n, vv, time, op }
    if (this.prev !== undefined) record.prev = this.prev
    const parts = encodeRecordParts(record)
    const cid = CID.createV1(DAG_CBOR, Digest.create(SHA256_CODE, sha256Parts(parts)))
    frames.push({ parts, digest: cid.multihash.digest })
    this.seg.appendFrames(frames)
    this.n = n
    this.vv = vv
    this.prev = cid
    return { cid, record }
  }

  sync (): void { this.seg.sync() }

  /**
   * Every record and data frame on disk (all appended since the last checkpoint) as the block
   * it is, so that a version's `log` link and the `prev` chain behind it resolve wherever the
   * version's blocks do. A frame is its block byte for byte (its checksum is the BGUID digest),
   * so nothing is re-encoded. Frames `store` already has are skipped without hashing (a data
   * frame equal to a file chunk is that chunk; records of a fold that crashed before its
   * checkpoint); the others are verified, and a mismatch is LOG_CORRUPT. Full batches of about
   * `batchBytes` go to `store.putMany` as they fill (memory stays bounded however much was
   * written); the remainder is returned for the caller to store with its own last batch.
   * `before`: only the segments before that cut.
   */
  async blocks (store: Pick<BlockStore, 'has' | 'putMany'>, batchBytes = LOG_BATCH_BYTES, before = Infinity): Promise<Block[]> {
    let batch: Block[] = []
    let bytes = 0
    for (const f of this.seg.frames(before)) {
      const cid = cidFromKey(f.digest, f.raw ? RAW : DAG_CBOR)
      if (await store.has(cid)) continue
      if (!sameBytes(sha256(f.bytes), f.digest)) throw new ReefError('LOG_CORRUPT', `log frame ${cid.toString()} in segment ${f.segment} does not match its checksum`)
      batch.push({ cid, bytes: f.bytes })
      bytes += f.bytes.length
      if (bytes >= batchBytes) {
        await store.putMany(batch)
        batch = []
        bytes = 0
      }
    }
    return batch
  }

  /**
   * Where a fold's snapshot ends: what is appended from now on goes to a new segment, and
   * `blocks(…, cut)` and `checkpoint(cut)` take only what came before. The segments before the
   * cut are not fdatasync'd here: if the fold commits, its version holds their records and they
   * are dropped; if not, the next `sync` syncs them before anything newer.
   */
  cut (): number { return this.seg.rotate(false) }

  /**
   * After a fold made everything so far (or everything before `cut`) part of a durable
   * version: what it holds goes.
   */
  checkpoint (cut?: number): void {
    this.seg.dropBefore(cut ?? this.seg.rotate())
    this.replayed = []
  }

  close (): void { this.seg.close() }
}
