/**
 * The on-disk writer log: numbered segment files of frames
 *   [u32 BE length][32-byte sha256 of the bytes][bytes]
 * The checksum is the block's BGUID digest: a record (dag-cbor) or, with the length's top bit
 * set, a raw data block that a later write record names (so a write's data can be hashed
 * before the JS thread sees it, see mount/native). Appends are plain write(2)s; `sync` is
 * fdatasync, after which every appended frame survives a crash. Replay stops at the first
 * frame that is short or fails its checksum (a torn tail) and truncates it away.
 */
import fs from 'node:fs'
import path from 'node:path'
import { MAX_BLOCK_SIZE, sameBytes } from '../block/index.js'
import { sha256 } from '../crypto/hash.js'
import { ReefError } from '../errors.js'

const HEADER = 4 + 32
/** Top bit of a frame's length: the frame is a raw data block, not a record. */
const RAW = 0x80000000
const NAME = /^(\d{12})\.log$/

export interface Frame { bytes: Uint8Array, digest: Uint8Array, segment: number, raw: boolean }

/** A frame to append: its bytes are the concatenation of `parts`. */
export interface NewFrame { parts: Uint8Array[], digest: Uint8Array, raw?: boolean }

export interface ReplayResult { frames: Frame[], discardedBytes: number }

export class SegmentLog {
  private fd = -1
  private segment = 0
  private size = 0

  constructor (readonly dir: string) {}

  private file (n: number): string { return path.join(this.dir, `${String(n).padStart(12, '0')}.log`) }

  segments (): number[] {
    if (!fs.existsSync(this.dir)) return []
    return fs.readdirSync(this.dir).map(f => NAME.exec(f)).filter(m => m !== null).map(m => Number(m[1])).sort((a, b) => a - b)
  }

  /** Reads every segment, truncating a torn tail, then opens the newest for appending. */
  open (): ReplayResult {
    fs.mkdirSync(this.dir, { recursive: true })
    const frames: Frame[] = []
    let discardedBytes = 0
    const segs = this.segments()
    for (const seg of segs) {
      const file = this.file(seg)
      const buf = fs.readFileSync(file)
      let off = 0
      while (off + HEADER <= buf.length) {
        const word = buf.readUInt32BE(off)
        const raw = word >= RAW
        const len = raw ? word - RAW : word
        if (len > MAX_BLOCK_SIZE || off + HEADER + len > buf.length) break
        const digest = buf.subarray(off + 4, off + HEADER)
        const bytes = buf.subarray(off + HEADER, off + HEADER + len)
        if (!sameBytes(sha256(bytes), digest)) break
        frames.push({ bytes: new Uint8Array(bytes), digest: new Uint8Array(digest), segment: seg, raw })
        off += HEADER + len
      }
      if (off < buf.length) {
        discardedBytes += buf.length - off
        fs.truncateSync(file, off)
      }
    }
    this.segment = segs.length > 0 ? segs[segs.length - 1] : 1
    this.fd = fs.openSync(this.file(this.segment), 'a')
    this.size = fs.fstatSync(this.fd).size
    return { frames, discardedBytes }
  }

  get current (): number { return this.segment }
  get bytes (): number { return this.size }

  /**
   * Appends frames in one writev: they stay contiguous and in order. A frame's bytes are the
   * concatenation of its `parts`, written without joining them.
   */
  appendFrames (frames: NewFrame[]): void {
    if (this.fd < 0) throw new ReefError('IO', 'log is not open')
    const iov: Uint8Array[] = []
    let total = 0
    for (const f of frames) {
      let len = 0
      for (const p of f.parts) len += p.length
      if (len > MAX_BLOCK_SIZE) throw new ReefError('BLOCK_TOO_LARGE', `log frame of ${len} bytes`)
      const header = Buffer.allocUnsafe(HEADER)
      header.writeUInt32BE(f.raw === true ? RAW + len : len, 0)
      header.set(f.digest, 4)
      iov.push(header, ...f.parts)
      total += HEADER + len
    }
    const n = fs.writevSync(this.fd, iov)
    if (n !== total) throw new ReefError('IO', `short log write (${n} of ${total})`)
    this.size += n
  }

  sync (): void {
    if (this.fd >= 0) fs.fdatasyncSync(this.fd)
  }

  /** Starts a new segment; earlier ones stay until dropBefore. */
  rotate (): number {
    this.sync()
    fs.closeSync(this.fd)
    this.segment++
    this.fd = fs.openSync(this.file(this.segment), 'a')
    this.size = 0
    const dfd = fs.openSync(this.dir, 'r')
    try { fs.fsyncSync(dfd) } finally { fs.closeSync(dfd) }
    return this.segment
  }

  dropBefore (segment: number): void {
    for (const s of this.segments()) if (s < segment) fs.rmSync(this.file(s), { force: true })
  }

  close (): void {
    if (this.fd >= 0) {
      fs.closeSync(this.fd)
      this.fd = -1
    }
  }
}
