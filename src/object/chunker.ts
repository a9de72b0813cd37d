/**
 * Content-defined chunking (FastCDC with normalized chunking, Xia et al., USENIX ATC'16).
 * Cut points depend only on nearby bytes, so an insert or delete shifts at most the chunks
 * around it and every later chunk keeps its BGUID. The gear table is derived from a fixed
 * seed: changing it (or the sizes) changes every file's chunks.
 */
import { createHash } from 'node:crypto'

export const MIN_CHUNK = 16 * 1024
export const AVG_CHUNK = 64 * 1024
export const MAX_CHUNK = 256 * 1024

// 32-bit gear hash: bit k depends on the last k+1 bytes, so the masks use the high bits.
// Normalization level 2: harder mask (18 bits) before the average size, easier (14) after.
const MASK_S = 0xFFFFC000 | 0
const MASK_L = 0xFFFC0000 | 0

const GEAR: Int32Array = (() => {
  const t = new Int32Array(256)
  for (let i = 0; i < 256; i++) {
    const d = createHash('sha256').update(`reef/gear/v1/${i}`).digest()
    t[i] = d.readInt32BE(0)
  }
  return t
})()

/**
 * Length of the next chunk of `buf` starting at `start` (at most MAX_CHUNK). When the data ends
 * before a cut point is found and `final` is false, returns -1: the caller needs more bytes.
 */
export function nextCut (buf: Uint8Array, start: number, end: number, final: boolean): number {
  const avail = end - start
  if (avail <= MIN_CHUNK) return final ? avail : -1
  const limit = Math.min(avail, MAX_CHUNK)
  const normal = Math.min(limit, AVG_CHUNK)
  let h = 0
  let i = MIN_CHUNK
  for (; i < normal; i++) {
    h = ((h << 1) + GEAR[buf[start + i]]) | 0
    if ((h & MASK_S) === 0) return i + 1
  }
  for (; i < limit; i++) {
    h = ((h << 1) + GEAR[buf[start + i]]) | 0
    if ((h & MASK_L) === 0) return i + 1
  }
  if (limit === MAX_CHUNK) return MAX_CHUNK
  return final ? avail : -1
}

/** Splits a whole in-memory buffer into chunk lengths. */
export function chunkLengths (buf: Uint8Array): number[] {
  const out: number[] = []
  let off = 0
  while (off < buf.length) {
    const n = nextCut(buf, off, buf.length, true)
    out.push(n)
    off += n
  }
  return out
}

/**
 * Streaming chunker: push arbitrary pieces, receive whole chunks (copies, safe to keep).
 * Holds at most MAX_CHUNK + one pushed piece in memory.
 */
export class Chunker {
  private buf = new Uint8Array(0)
  private len = 0;

  * push (piece: Uint8Array): Generator<Uint8Array> {
    if (this.len + piece.length > this.buf.length) {
      const grown = new Uint8Array(Math.max(this.len + piece.length, MAX_CHUNK * 2))
      grown.set(this.buf.subarray(0, this.len))
      this.buf = grown
    }
    this.buf.set(piece, this.len)
    this.len += piece.length
    yield * this.drain(false)
  }

  * end (): Generator<Uint8Array> {
    yield * this.drain(true)
  }

  private * drain (final: boolean): Generator<Uint8Array> {
    let off = 0
    // Until the end, cut only with a whole MAX_CHUNK window buffered: then nextCut always
    // finds its cut, where calling it on every small push would rescan the same bytes each time
    // (quadratic: 64-byte pushes took minutes for a few MiB).
    while (off < this.len && (final || this.len - off >= MAX_CHUNK)) {
      const n = nextCut(this.buf, off, this.len, final)
      if (n < 0) break
      yield this.buf.slice(off, off + n)
      off += n
    }
    this.buf.copyWithin(0, off, this.len)
    this.len -= off
  }
}
