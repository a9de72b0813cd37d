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

/** A frame on disk: `start` is the offset of its header in its segment. */
export interface Frame { bytes: Uint8Array, digest: Uint8Array, segment: number, raw: boolean, start: number }

/** A frame to append: its bytes are the concatenation of `parts`. */
export interface NewFrame { parts: Uint8Array[], digest: Uint8Array, raw?: boolean }

export interface ReplayResult { frames: Frame[], discardedBytes: number }

export class SegmentLog {
  private fd = -1
  private segment = 0
  private size = 0
  /**
   * Segments rotated away without an fdatasync (a fold's cut), still open: `sync` syncs them
   * before the current one, so that no record it acknowledges can follow one a crash may lose.
   * A fold that commits drops them unsynced (its version holds their records).
   */
  private unsynced: Array<{ segment: number, fd: number }> = []

  constructor (readonly dir: string) {}

  private file (n: number): string { return path.join(this.dir, `${String(n).padStart(12, '0')}.log`) }

  segments (): number[] {
    if (!fs.existsSync(this.dir)) return []
    return fs.readdirSync(this.dir).map(f => NAME.exec(f)).filter(m => m !== null).map(m => Number(m[1])).sort((a, b) => a - b)
  }

  /** Reads every segment, truncating a torn tail, then opens the newest for appending. */
  open (): ReplayResult {
    const created = fs.mkdirSync(this.dir, { recursive: true })
    // A new log directory must survive a crash like its first segment: fsync every directory
    // that gained an entry (the parent of each one created).
    if (created !== undefined) {
      const top = path.resolve(created)
      let d = path.resolve(this.dir)
      for (let guard = 0; guard < 256; guard++) {
        syncDir(path.dirname(d))
        if (d === top || d === path.dirname(d)) break
        d = path.dirname(d)
      }
    }
    const frames: Frame[] = []
    let discardedBytes = 0
    const segs = this.segments()
    for (const seg of segs) {
      const file = this.file(seg)
      const fd = fs.openSync(file, 'r')
      let end = 0
      let size = 0
      try {
        size = fs.fstatSync(fd).size
        for (const f of scan(fd, size)) {
          if (!sameBytes(sha256(f.bytes), f.digest)) break
          frames.push({ bytes: f.bytes, digest: f.digest, segment: seg, raw: f.raw, start: f.start })
          end = f.end
        }
      } finally {
        fs.closeSync(fd)
      }
      if (end < size) {
        discardedBytes += size - end
        fs.truncateSync(file, end)
      }
    }
    this.segment = segs.length > 0 ? segs[segs.length - 1] : 1
    this.fd = fs.openSync(this.file(this.segment), 'a')
    this.size = fs.fstatSync(this.fd).size
    // The first segment is a new directory entry: without this a crash could lose the file
    // (and every record fsync'd into it) even though fdatasync returned.
    if (segs.length === 0) syncDir(this.dir)
    return { frames, discardedBytes }
  }

  /**
   * Every frame now on disk, oldest segment first, read through a bounded buffer (a segment
   * may hold hundreds of MiB of write data). Checksums are not verified here: the caller
   * verifies the frames it uses. Open already cut torn tails away, so a frame cut short now
   * means the log changed under this process: LOG_CORRUPT.
   */
  * frames (before = Infinity): Generator<Frame> {
    for (const seg of this.segments()) {
      if (seg >= before) break
      const fd = fs.openSync(this.file(seg), 'r')
      try {
        const size = fs.fstatSync(fd).size
        let end = 0
        for (const f of scan(fd, size)) {
          yield { bytes: f.bytes, digest: f.digest, segment: seg, raw: f.raw, start: f.start }
          end = f.end
        }
        if (end < size) throw new ReefError('LOG_CORRUPT', `log segment ${seg} has ${size - end} bytes that are no whole frame at offset ${end}`)
      } finally {
        fs.closeSync(fd)
      }
    }
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
    for (const u of this.unsynced) {
      fs.fdatasyncSync(u.fd)
      fs.closeSync(u.fd)
    }
    this.unsynced = []
    if (this.fd >= 0) fs.fdatasyncSync(this.fd)
  }

  /**
   * Starts a new segment; earlier ones stay until dropBefore. `sync` false: the old one is not
   * fdatasync'd now (a fold's cut, under the fs lock), but by the next `sync`, before the new one.
   * The new segment's directory entry is made durable either way.
   */
  rotate (sync = true): number {
    if (sync) {
      this.sync()
      fs.closeSync(this.fd)
    } else {
      this.unsynced.push({ segment: this.segment, fd: this.fd })
    }
    this.segment++
    this.fd = fs.openSync(this.file(this.segment), 'a')
    this.size = 0
    syncDir(this.dir)
    return this.segment
  }

  dropBefore (segment: number): void {
    this.unsynced = this.unsynced.filter(u => {
      if (u.segment >= segment) return true
      fs.closeSync(u.fd)
      return false
    })
    for (const s of this.segments()) if (s < segment) fs.rmSync(this.file(s), { force: true })
  }

  /** Bytes from `start` of `segment` to the end of the log. */
  bytesFrom (segment: number, start: number): number {
    let n = 0
    for (const s of this.segments()) {
      if (s >= segment) n += fs.statSync(this.file(s)).size - (s === segment ? start : 0)
    }
    return n
  }

  /**
   * Open found a break in the log at `start` of `segment` (a segment after one a crash cut
   * short): everything from there on goes, and appending resumes there.
   */
  cutAt (segment: number, start: number): void {
    for (const u of this.unsynced) fs.closeSync(u.fd)
    this.unsynced = []
    if (this.fd >= 0) fs.closeSync(this.fd)
    for (const s of this.segments()) if (s > segment) fs.rmSync(this.file(s), { force: true })
    fs.truncateSync(this.file(segment), start)
    this.segment = segment
    this.fd = fs.openSync(this.file(segment), 'a')
    this.size = start
    syncDir(this.dir)
  }

  close (): void {
    for (const u of this.unsynced) fs.closeSync(u.fd)
    this.unsynced = []
    if (this.fd >= 0) {
      fs.closeSync(this.fd)
      this.fd = -1
    }
  }
}

/** fsync of a directory: makes the entries created or removed in it durable. */
function syncDir (dir: string): void {
  const dfd = fs.openSync(dir, 'r')
  try { fs.fsyncSync(dfd) } finally { fs.closeSync(dfd) }
}

interface Scanned { bytes: Uint8Array, digest: Uint8Array, raw: boolean, start: number, end: number }

/** Read-ahead for small frames (records are a few hundred bytes); a larger frame gets a buffer of its own. */
const READ_AHEAD = 64 * 1024

/**
 * The frames of one segment file whose header is plausible and whose bytes are all there, in
 * order, each with the file offset just past it; stops at the first that is not. A frame's
 * bytes own their memory (a small frame is copied out of the read-ahead, a large one is read
 * into a buffer of its own), so a caller may keep any of them without pinning the others.
 */
function * scan (fd: number, size: number): Generator<Scanned> {
  let buf = Buffer.alloc(0)
  let bufAt = 0 // file offset of buf[0]
  let off = 0
  // Makes buf hold [off, off + need) if the file has it; false at the end of the file.
  const fill = (need: number): boolean => {
    if (off + need > size) return false
    if (off + need <= bufAt + buf.length) return true
    const keep = buf.subarray(off - bufAt)
    const next = Buffer.allocUnsafeSlow(Math.min(Math.max(READ_AHEAD, need), size - off))
    keep.copy(next)
    let have = keep.length
    for (let guard = 0; have < next.length && guard < 1_000_000; guard++) {
      const n = fs.readSync(fd, next, have, next.length - have, off + have)
      if (n === 0) break
      have += n
    }
    buf = next.subarray(0, have)
    bufAt = off
    return have >= need
  }
  while (fill(HEADER)) {
    const word = buf.readUInt32BE(off - bufAt)
    const raw = word >= RAW
    const len = raw ? word - RAW : word
    if (len > MAX_BLOCK_SIZE || !fill(HEADER + len)) return
    const h = off - bufAt
    const alone = h === 0 && buf.length === HEADER + len
    const digest = new Uint8Array(buf.subarray(h + 4, h + HEADER))
    const body = buf.subarray(h + HEADER, h + HEADER + len)
    const start = off
    off += HEADER + len
    yield { bytes: alone ? body : new Uint8Array(body), digest, raw, start, end: off }
  }
}
