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
 */
import type { CID } from 'multiformats/cid'
import { FileReader } from '../object/file.js'
import type { BlockGetter } from '../store/types.js'
import { freePage, type Inode, PAGE, pagesBytes } from './inode.js'
import { ZeroRanges } from './zeros.js'

/** What a layer reads through to. */
export interface ContentReader {
  read: (offset: number, length: number) => Promise<Uint8Array>
}

/** One layer of a file's content. */
export interface Layer {
  readonly pages?: ReadonlyMap<number, Uint8Array>
  readonly size: number
  /** Below this the content below shows through (except where `zeros` masks it). */
  readonly baseLimit: number
  readonly zeros?: ZeroRanges
}

/** Reads `layer` over `below`: its pages first, then `below` up to baseLimit, zeros past both. */
export async function readLayer (layer: Layer, below: ContentReader | undefined, offset: number, length: number): Promise<Uint8Array> {
  const end = Math.min(layer.size, offset + length)
  if (offset >= end) return new Uint8Array(0)
  const out = new Uint8Array(end - offset)
  let pos = offset
  while (pos < end) {
    const p = Math.floor(pos / PAGE)
    const page = layer.pages?.get(p)
    if (page !== undefined) {
      const to = Math.min(end, (p + 1) * PAGE)
      out.set(page.subarray(pos - p * PAGE, to - p * PAGE), pos - offset)
      pos = to
      continue
    }
    // Extend over consecutive pages the layer lacks and read them from below in one go.
    let to = Math.min(end, (p + 1) * PAGE)
    while (to < end && layer.pages?.has(Math.floor(to / PAGE)) !== true) to = Math.min(end, to + PAGE)
    const baseEnd = Math.min(to, layer.baseLimit)
    if (pos < baseEnd) {
      if (below !== undefined) out.set(await below.read(pos, baseEnd - pos), pos - offset)
      layer.zeros?.mask(out.subarray(pos - offset, baseEnd - offset), pos)
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
    private readonly store: BlockGetter
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
  const f = new Frozen(n.base, n.baseLimit, n.size, n.pages, n.zeros, n.dirtyRanges(), store)
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
 * - pages: L's, plus each page of F that L lacks and that starts below L's limit, with what L
 *   zeroed or cut off zeroed in it;
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
  if (f.pages !== undefined) {
    for (const [p, page] of f.pages) {
      const start = p * PAGE
      if (pages.has(p) || start >= n.baseLimit) {
        freePage(page)
        delta -= page.length
        continue
      }
      n.zeros?.mask(page, start)
      if (start + page.length > n.baseLimit) page.fill(0, n.baseLimit - start)
      pages.set(p, page)
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
  for (const [lo, hi] of f.ranges) n.markDirty(lo, hi)
  // A new file (no base) is content-dirty by itself; one whose frozen layer was empty of
  // changes but had a base stays as marked.
  return delta
}
