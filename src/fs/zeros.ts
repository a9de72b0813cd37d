/**
 * Byte ranges of a file's base tree that read as zeros until the next fold: what a punched hole
 * or a zeroed range left where no dirty page covers it. Dirty pages still win over these; a fold
 * turns them into hole links (or chunks of zeros, where a range is too short for a hole) and
 * the set empties. Keeping ranges rather than zero-filled pages means punching a hole in a large
 * file costs nothing until the fold, and the fold never reads the punched part of the base.
 */
export class ZeroRanges {
  /** Sorted, disjoint, non-adjacent [lo, hi) pairs. */
  private readonly r: Array<[number, number]> = []

  get empty (): boolean { return this.r.length === 0 }

  /** The ranges, in order. */
  ranges (): ReadonlyArray<readonly [number, number]> { return this.r }

  /** Index of the first range that ends after `pos`. */
  private after (pos: number): number {
    let lo = 0
    let hi = this.r.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (this.r[mid][1] <= pos) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  add (lo: number, hi: number): void {
    if (lo >= hi) return
    let i = this.after(lo)
    // A range that ends exactly at `lo` merges too.
    if (i > 0 && this.r[i - 1][1] === lo) i--
    let j = i
    while (j < this.r.length && this.r[j][0] <= hi) {
      lo = Math.min(lo, this.r[j][0])
      hi = Math.max(hi, this.r[j][1])
      j++
    }
    this.r.splice(i, j - i, [lo, hi])
  }

  /** Drops everything at or past `limit` (a truncate cut the base there). */
  clip (limit: number): void {
    const i = this.after(limit)
    if (i < this.r.length && this.r[i][0] < limit) {
      this.r[i][1] = limit
      this.r.length = i + 1
    } else {
      this.r.length = i
    }
  }

  /** Whether `pos` reads as zeros, and up to where that answer holds. */
  at (pos: number): { zero: boolean, end: number } {
    const i = this.after(pos)
    if (i === this.r.length) return { zero: false, end: Infinity }
    const [lo, hi] = this.r[i]
    return lo <= pos ? { zero: true, end: hi } : { zero: false, end: lo }
  }

  /** Zeros the bytes of `buf` (holding file bytes from `bufStart`) that lie in a range. */
  mask (buf: Uint8Array, bufStart: number): void {
    const end = bufStart + buf.length
    for (let i = this.after(bufStart); i < this.r.length && this.r[i][0] < end; i++) {
      buf.fill(0, Math.max(this.r[i][0], bufStart) - bufStart, Math.min(this.r[i][1], end) - bufStart)
    }
  }
}
