/**
 * File content in memory for a ReefFS (src/fs/fs.ts): a file reads as its base tree (as of the
 * last fold) overlaid with the dirty 64 KiB pages written since, masked by the ranges punched
 * or zeroed since (`Inode.zeros`). Writes, truncations and fallocate land here (called by
 * `apply`), and this keeps the count of bytes held in dirty pages and the set of files whose
 * content the next fold must store.
 */
import { ReefError } from '../errors.js'
import type { BlockGetter } from '../store/types.js'
import { allocPage, freePage, type Inode, PAGE, pagesBytes, smallPage } from './inode.js'
import { planFallocate } from './fallocate.js'
import { contentBelow, hold, readLayer, readLayerParts } from './layer.js'
import { ZeroRanges } from './zeros.js'

const posix = ReefError.posix

export class Pages {
  /** Bytes held in dirty pages: the composition root folds early when this grows. */
  dirtyBytes = 0
  /** Files whose content changed since the last fold. */
  readonly dirtyFiles = new Set<number>()
  /**
   * The memory of a write's bytes that its caller handed over (ReefFS.writeAt's `give`), while
   * that write is applied: a whole page of it becomes a dirty page as it is, not a copy. Set
   * and cleared around one write under the fs lock; the log has written the bytes by then.
   */
  given?: ArrayBufferLike

  constructor (private readonly store: BlockGetter) {}

  /**
   * Dirty page `p` of `n` for a write of its bytes [lo, hi), at least `hi` bytes long (a small
   * first page grows to that). A page written in part over content below is not read from
   * below: it holds just what is written (`Inode.partial`, src/fs/layer.ts).
   */
  private page (n: Inode, p: number, lo: number, hi: number): Uint8Array {
    if (n.pages === undefined) n.pages = new Map()
    let page = n.pages.get(p)
    if (page !== undefined) {
      this.held(n, p, lo, hi)
      return this.grown(n, p, page, hi)
    }
    // Nothing to copy from a stored base: the first page may start small.
    if (p === 0 && n.baseLimit === 0 && hi < PAGE) {
      page = smallPage(hi)
      n.pages.set(p, page)
      this.dirtyBytes += page.length
      return page
    }
    // A partial page's bytes outside what it holds are never read (readLayer, thaw and the
    // fold go by its ranges), so it is not zeroed: a fresh slab page is then touched only
    // where written.
    const whole = lo === 0 && hi >= PAGE
    const partial = !whole && p * PAGE < n.baseLimit
    page = allocPage(!whole && !partial)
    n.pages.set(p, page)
    this.dirtyBytes += PAGE
    if (partial) (n.partial ??= new Map()).set(p, [[lo, hi]])
    return page
  }

  /** `bytes` (a whole page of a given write) becomes page `p` of `n`, in place of any it had. */
  private adopt (n: Inode, p: number, bytes: Uint8Array): void {
    this.dropPage(n, p)
    if (n.pages === undefined) n.pages = new Map()
    n.pages.set(p, bytes)
    this.dirtyBytes += PAGE
  }

  /** Page `p` of `n` goes (with what it held in part), its memory back to the pool. */
  private dropPage (n: Inode, p: number): void {
    const page = n.pages?.get(p)
    if (page === undefined) return
    freePage(page)
    n.pages?.delete(p)
    this.dirtyBytes -= page.length
    this.dropPartial(n, p)
  }

  /** Page `p` of `n` now holds [lo, hi) too: a partial page that holds all of itself is whole. */
  private held (n: Inode, p: number, lo: number, hi: number): void {
    const held = n.partial?.get(p)
    if (held === undefined || !hold(held, lo, hi)) return
    this.dropPartial(n, p)
  }

  private dropPartial (n: Inode, p: number): void {
    const partial = n.partial
    if (partial === undefined) return
    partial.delete(p)
    if (partial.size === 0) n.partial = undefined
  }

  /** `page` (page `p` of `n`), or a longer copy of it if it is shorter than `upTo`. */
  private grown (n: Inode, p: number, page: Uint8Array, upTo: number): Uint8Array {
    if (page.length >= upTo) return page
    const bigger = smallPage(upTo)
    bigger.set(page)
    bigger.fill(0, page.length)
    n.pages?.set(p, bigger)
    this.dirtyBytes += bigger.length - page.length
    freePage(page)
    return bigger
  }

  async applyWrite (n: Inode, offset: number, data: Uint8Array): Promise<void> {
    const end = offset + data.length
    for (let p = Math.floor(offset / PAGE); p * PAGE < end; p++) {
      const ps = p * PAGE
      const from = Math.max(offset, ps)
      const to = Math.min(end, ps + PAGE)
      if (from === ps && to === ps + PAGE && this.given !== undefined && data.buffer === this.given) {
        this.adopt(n, p, data.subarray(from - offset, to - offset))
        continue
      }
      const page = this.page(n, p, from - ps, to - ps)
      page.set(data.subarray(from - offset, to - offset), from - ps)
    }
    if (end > n.size) n.size = end
    n.markDirty(offset, end)
    this.dirtyFiles.add(n.ino)
  }

  applyTruncate (n: Inode, size: number): void {
    if (size < n.size) {
      if (n.pages !== undefined) {
        for (const p of [...n.pages.keys()]) if (p * PAGE >= size) this.dropPage(n, p)
        const lastP = Math.floor(size / PAGE)
        const last = n.pages.get(lastP)
        if (last !== undefined) {
          last.fill(0, size % PAGE)
          this.held(n, lastP, size % PAGE, PAGE)
        }
      }
      if (size < n.baseLimit) {
        n.baseLimit = size
        n.zeros?.clip(size)
      }
      n.markDirty(size, size)
    }
    n.markDirty(Math.min(size, n.size), Math.max(size, n.size))
    n.size = size
    this.dirtyFiles.add(n.ino)
  }

  /**
   * Zeros what the call zeros and sets the size; never writes data. Dirty pages wholly inside
   * the zeroed range go (a fold then sees a hole there), pages it cuts through are zero-filled,
   * and the base below them is masked by `zeros` until the fold.
   */
  applyFallocate (n: Inode, mode: number, offset: number, length: number): void {
    const { zeroFrom, zeroTo, newSize } = planFallocate(mode, offset, length, n.size)
    if (zeroFrom < zeroTo) {
      if (n.pages !== undefined) {
        // The range may span far more pages than are dirty (a punch across a sparse terabyte).
        const first = Math.floor(zeroFrom / PAGE)
        const end = Math.ceil(zeroTo / PAGE)
        const touched = end - first <= n.pages.size
          ? Array.from({ length: end - first }, (_, i) => first + i)
          : [...n.pages.keys()].filter(p => p >= first && p < end)
        for (const p of touched) {
          const page = n.pages.get(p)
          if (page === undefined) continue
          const ps = p * PAGE
          // Bytes of a page past the size are zeros already: such a page may go as a whole.
          if (ps >= zeroFrom && Math.min(ps + PAGE, n.size) <= zeroTo) {
            this.dropPage(n, p)
          } else {
            const lo = Math.max(zeroFrom, ps) - ps
            const hi = Math.min(zeroTo, ps + PAGE) - ps
            page.fill(0, lo, hi)
            this.held(n, p, lo, hi)
          }
        }
      }
      if (zeroFrom < n.baseLimit) {
        n.zeros ??= new ZeroRanges()
        n.zeros.add(zeroFrom, Math.min(zeroTo, n.baseLimit))
      }
      n.markDirty(zeroFrom, zeroTo)
      this.dirtyFiles.add(n.ino)
    }
    if (newSize !== n.size) this.applyTruncate(n, newSize)
  }

  /** Reads file content: dirty pages first, then what lies below (a frozen layer, the base tree), zeros past both. */
  async read (n: Inode, offset: number, length: number): Promise<Uint8Array> {
    if (n.kind === 'dir') throw posix('EISDIR', 'read of a directory')
    if (n.kind !== 'file') throw posix('EINVAL', 'read of a non-file')
    return await readLayer(n, contentBelow(n, this.store), offset, length)
  }

  /** `read` as pieces, not joined (shared with caches: never modify them). */
  async readParts (n: Inode, offset: number, length: number): Promise<Uint8Array[]> {
    if (n.kind === 'dir') throw posix('EISDIR', 'read of a directory')
    if (n.kind !== 'file') throw posix('EINVAL', 'read of a non-file')
    return await readLayerParts(n, contentBelow(n, this.store), offset, length)
  }

  /**
   * `n` is gone (unlinked and closed): its pages are given back, and nothing of it is stored.
   * A frozen layer stays with the fold that is storing it (which gives its pages back).
   */
  forget (n: Inode): void {
    this.dirtyFiles.delete(n.ino)
    if (n.pages !== undefined) {
      this.dirtyBytes -= pagesBytes(n.pages)
      for (const page of n.pages.values()) freePage(page)
      n.pages = undefined
    }
    n.partial = undefined
  }
}
