/**
 * A file's content as layers (src/fs/pages.ts keeps the live one): dirty 64 KiB pages over a
 * content below them, cut at `baseLimit` and masked by `zeros`, up to `size`.
 *
 * A fold that builds blocks outside the fs lock (src/fs/fold.ts) first freezes each dirty
 * file: its pages, zeros, limit and size become a `Frozen` layer that nothing changes any more,
 * and the live inode starts afresh on top of it (no pages, its limit at the frozen size), as if
 * the fold were already done. Reads fall through the live pages to the frozen layer and on to
 * the stored base; a write copies a page up from below. Once the frozen layer is stored the
 * inode takes its tree as the base (same bytes) and the layer goes; if the fold fails the layer
 * is folded back into the live one (`thaw`), so that nothing written is lost and the next fold
 * stores it.
 *
 * A page written in part over content below is not loaded from below first: it is `partial`,
 * holding only the ranges written (or zeroed) in it, and the rest of it reads through like a
 * page the layer lacks. A random 4 KiB write into a stored file then costs no read of the
 * store (it cost ~1 ms: the chunk under the page, read and verified); the bytes below are read
 * when the page is read, or by the fold that stores it.
 */
import type { CID } from 'multiformats/cid'
import { FileReader } from '../object/file.js'
import type { BlockGetter } from '../store/types.js'
import { allocPage, freePage, type Inode, PAGE, pagesBytes } from './inode.js'
import { ZeroRanges } from './zeros.js'

/** What a layer reads through to. */
export interface ContentReader {
  read: (offset: number, length: number) => Promise<Uint8Array>
  /** The same bytes as the pieces they lie in (shared: never modify them). */
  readParts?: (offset: number, length: number) => Promise<Uint8Array[]>
}

/** Page-relative [lo, hi) ranges a partial page holds: sorted, disjoint, not adjacent. */
export type Held = Array<[number, number]>

/** Adds [lo, hi) to `held` (merging what it touches); true when it then covers the whole page. */
export function hold (held: Held, lo: number, hi: number): boolean {
  if (lo < hi) {
    let i = 0
    while (i < held.length && held[i][1] < lo) i++
    let j = i
    while (j < held.length && held[j][0] <= hi) {
      lo = Math.min(lo, held[j][0])
      hi = Math.max(hi, held[j][1])
      j++
    }
    held.splice(i, j - i, [lo, hi])
  }
  return held.length === 1 && held[0][0] === 0 && held[0][1] >= PAGE
}

/** One layer of a file's content. */
export interface Layer {
  readonly pages?: ReadonlyMap<number, Uint8Array>
  /** Pages of `pages` that hold only these ranges; the rest of each reads through. */
  readonly partial?: ReadonlyMap<number, ReadonlyArray<readonly [number, number]>>
  readonly size: number
  /** Below this the content below shows through (except where `zeros` masks it). */
  readonly baseLimit: number
  readonly zeros?: ZeroRanges
}

/** Whether `pages` has a page holding any byte of [from, to). */
function hasPageIn (pages: ReadonlyMap<number, Uint8Array> | undefined, from: number, to: number): boolean {
  if (pages === undefined || pages.size === 0) return false
  const first = Math.floor(from / PAGE)
  const last = Math.ceil(to / PAGE) - 1
  if (last - first >= pages.size) {
    for (const p of pages.keys()) if (p >= first && p <= last) return true
    return false
  }
  for (let p = first; p <= last; p++) if (pages.has(p)) return true
  return false
}

function zeroIn (zeros: ZeroRanges | undefined, from: number, to: number): boolean {
  if (zeros === undefined) return false
  const z = zeros.at(from)
  return z.zero || z.end < to
}

/** Nothing of the layer's own (pages, zeros, its limit) in [from, to): what lies below shows. */
function onlyBelow (layer: Layer, from: number, to: number): boolean {
  return to <= layer.baseLimit && !hasPageIn(layer.pages, from, to) && !zeroIn(layer.zeros, from, to)
}

/**
 * `readLayer` as pieces (shared: never modify them): where nothing of the layer's own lies in
 * the range, the pieces below come as they are, without being joined into one buffer.
 */
export async function readLayerParts (layer: Layer, below: ContentReader | undefined, offset: number, length: number): Promise<Uint8Array[]> {
  const end = Math.min(layer.size, offset + length)
  if (offset >= end) return []
  if (below?.readParts !== undefined && onlyBelow(layer, offset, end)) return await below.readParts(offset, end - offset)
  return [await compose(layer, below, offset, end)]
}

/**
 * Reads `layer` over `below`: its whole pages first, then `below` up to baseLimit (with what
 * partial pages hold laid over it), zeros past both.
 */
export async function readLayer (layer: Layer, below: ContentReader | undefined, offset: number, length: number): Promise<Uint8Array> {
  const end = Math.min(layer.size, offset + length)
  if (offset >= end) return new Uint8Array(0)
  if (below !== undefined && onlyBelow(layer, offset, end)) return await below.read(offset, end - offset)
  return await compose(layer, below, offset, end)
}

/** [offset, end) of `layer` over `below`, put together in a new buffer (readLayer's general case). */
async function compose (layer: Layer, below: ContentReader | undefined, offset: number, end: number): Promise<Uint8Array> {
  const { pages, partial } = layer
  const out = new Uint8Array(end - offset)
  const whole = (p: number): boolean => pages?.has(p) === true && partial?.has(p) !== true
  let pos = offset
  while (pos < end) {
    const p = Math.floor(pos / PAGE)
    if (whole(p)) {
      const page = pages?.get(p) as Uint8Array
      const to = Math.min(end, (p + 1) * PAGE)
      out.set(page.subarray(pos - p * PAGE, to - p * PAGE), pos - offset)
      pos = to
      continue
    }
    // Extend over consecutive pages the layer lacks or holds in part, and read them from below
    // in one go.
    let to = Math.min(end, (p + 1) * PAGE)
    while (to < end && !whole(Math.floor(to / PAGE))) to = Math.min(end, to + PAGE)
    const baseEnd = Math.min(to, layer.baseLimit)
    if (pos < baseEnd) {
      if (below !== undefined) out.set(await below.read(pos, baseEnd - pos), pos - offset)
      layer.zeros?.mask(out.subarray(pos - offset, baseEnd - offset), pos)
    }
    if (partial !== undefined && partial.size > 0) {
      for (let q = p; q * PAGE < to; q++) {
        const held = partial.get(q)
        const page = pages?.get(q)
        if (held === undefined || page === undefined) continue
        const ps = q * PAGE
        for (const [lo, hi] of held) {
          const a = Math.max(ps + lo, pos)
          const b = Math.min(ps + hi, to)
          if (a < b) out.set(page.subarray(a - ps, b - ps), a - offset)
        }
      }
    }
    pos = to
  }
  return out
}

/** A dirty file's content as a fold's snapshot took it: read-only from then on. */
export class Frozen implements Layer, ContentReader {
  /** The tree the fold stored this content as, once it has. */
  cid?: CID
  private reader?: FileReader

  constructor (
    /** The stored tree below (the last fold's), if any. */
    readonly base: CID | undefined,
    readonly baseLimit: number,
    readonly size: number,
    readonly pages: ReadonlyMap<number, Uint8Array> | undefined,
    readonly zeros: ZeroRanges | undefined,
    /** What changed relative to `base`: where the fold re-chunks. */
    readonly ranges: Array<[number, number]>,
    private readonly store: BlockGetter,
    readonly partial?: ReadonlyMap<number, Held>
  ) {}

  /** The reader of `base` (one per layer: its cached nodes go with it). */
  baseReader (): FileReader | undefined {
    if (this.base === undefined) return undefined
    this.reader ??= new FileReader(this.base, this.store)
    return this.reader
  }

  async read (offset: number, length: number): Promise<Uint8Array> {
    return await readLayer(this, this.baseReader(), offset, length)
  }

  async readParts (offset: number, length: number): Promise<Uint8Array[]> {
    return await readLayerParts(this, this.baseReader(), offset, length)
  }

  /** Bytes its pages hold. */
  get bytes (): number { return pagesBytes(this.pages) }

  /** Gives its pages back (once nothing reads them: the inode has moved on to `cid`, or thawed). */
  free (): void {
    if (this.pages !== undefined) for (const page of this.pages.values()) freePage(page)
  }
}

/** What a file's live layer reads through to: its frozen layer while a fold stores it, else its stored tree. */
export function contentBelow (n: Inode, store: BlockGetter): ContentReader | undefined {
  return n.frozen ?? n.baseReader(store)
}

/**
 * Freezes `n`'s content for a fold (the caller holds the fs lock): its live layer becomes a
 * Frozen one, and `n` starts afresh on top of it.
 */
export function freeze (n: Inode, store: BlockGetter): Frozen {
  if (n.frozen !== undefined) throw new Error(`inode ${n.ino} is frozen already`)
  const f = new Frozen(n.base, n.baseLimit, n.size, n.pages, n.zeros, n.dirtyRanges(), store, n.partial)
  n.frozen = f
  n.restart()
  return f
}

/**
 * The fold stored `f` as `cid`: `n` takes it as its base (the same bytes), and the layer's
 * pages go. Returns the bytes given back.
 */
export function settleFrozen (n: Inode, f: Frozen, cid: CID): number {
  if (n.frozen !== f) return 0
  n.base = cid
  n.frozen = undefined
  const bytes = f.bytes
  f.free()
  return bytes
}

/**
 * The fold failed: `f` goes back into `n`'s live layer, so that the content reads the same
 * and the next fold stores all of it. Returns the change in bytes held by pages (negative:
 * frozen pages the live layer covers or cut off are given back).
 *
 * The live layer L lies over the frozen one F, which lies over the stored base B. Merged:
 * - pages: L's, plus each page of F that L lacks (or holds only in part: L's ranges go onto
 *   it) and that starts below L's limit, with what L zeroed or cut off zeroed in it; a page F
 *   held in part stays partial (its gaps read B, as they did through F);
 * - limit: the lower of the two (past either, B no longer shows through);
 * - zeros: both sets (each masks B where it shows through);
 * - changed ranges: both; base: B.
 */
export function thaw (n: Inode, f: Frozen): number {
  if (n.frozen !== f) return 0
  n.frozen = undefined
  let delta = 0
  const live = n.pages
  const pages = new Map<number, Uint8Array>(live ?? [])
  const partial = new Map<number, Held>(n.partial ?? [])
  if (f.pages !== undefined) {
    for (let [p, page] of f.pages) {
      const start = p * PAGE
      const over = pages.get(p)
      const overHeld = partial.get(p)
      // L's whole page wins; past L's limit F no longer shows through.
      if ((over !== undefined && overHeld === undefined) || start >= n.baseLimit) {
        freePage(page)
        delta -= page.length
        continue
      }
      n.zeros?.mask(page, start)
      const fHeld = f.partial?.get(p)
      const held: Held | undefined = fHeld?.map(([lo, hi]) => [lo, hi])
      if (over !== undefined && overHeld !== undefined && page.length < PAGE) {
        // A small first page under a page L holds in part: grown to a whole one.
        const big = allocPage(true)
        big.set(page)
        delta += PAGE - page.length
        page = big
      }
      if (start + page.length > n.baseLimit) {
        page.fill(0, n.baseLimit - start)
        if (held !== undefined) hold(held, n.baseLimit - start, PAGE)
      }
      if (over !== undefined && overHeld !== undefined) {
        // L holds part of this page over F's: those bytes go onto F's page, which replaces L's.
        for (const [lo, hi] of overHeld) {
          page.set(over.subarray(lo, hi), lo)
          if (held !== undefined) hold(held, lo, hi)
        }
        freePage(over)
        delta -= over.length
      }
      pages.set(p, page)
      if (held === undefined || hold(held, 0, 0)) partial.delete(p)
      else partial.set(p, held)
    }
  }
  const limit = Math.min(f.baseLimit, n.baseLimit)
  let zeros: ZeroRanges | undefined
  for (const z of [f.zeros, n.zeros]) {
    if (z === undefined) continue
    zeros ??= new ZeroRanges()
    for (const [lo, hi] of z.ranges()) zeros.add(lo, Math.min(hi, limit))
  }
  n.base = f.base
  n.baseLimit = limit
  n.zeros = zeros
  n.pages = pages.size > 0 ? pages : undefined
  n.partial = partial.size > 0 ? partial : undefined
  for (const [lo, hi] of f.ranges) n.markDirty(lo, hi)
  // A new file (no base) is content-dirty by itself; one whose frozen layer was empty of
  // changes but had a base stays as marked.
  return delta
}
