/**
 * Files as trees of content-defined chunks (Pond's data blocks under indirect blocks).
 *   chunk:  raw block, MIN_CHUNK..MAX_CHUNK bytes
 *   node:   dag-cbor { t: 'f', s: size, h: height, l: [[cid, bytes], ...] }
 *           height 0 links chunks, height n links nodes of height n-1. At height 0 a link
 *           [null, bytes] is a hole: that many zero bytes, stored as nothing.
 * The root node's CID is the file's GUID. Reads walk the tree by byte offsets, so any range
 * is read without fetching the rest of the file.
 */
import type { CID } from 'multiformats/cid'
import type { Block } from '../block/index.js'
import { makeBlock, RAW } from '../block/index.js'
import { ReefError } from '../errors.js'
import type { BlockGetter, BlockPutter } from '../store/types.js'
import { AVG_CHUNK, Chunker, nextCut, MAX_CHUNK } from './chunker.js'
import { decodeCbor, encodeBlock, field } from './codec.js'
import { group } from './tree.js'

/** Largest file size reef accepts: 2^44 bytes (16 TiB), beyond any real use, well within doubles. */
export const MAX_FILE_SIZE = 2 ** 44

/** A link to a chunk or node; a height-0 link without a cid is a hole of `size` zero bytes. */
export interface Link { cid?: CID, size: number }

export interface FileNode {
  size: number
  height: number
  links: Link[]
}

export function encodeFileNode (n: FileNode): Block {
  return encodeBlock({ t: 'f', s: n.size, h: n.height, l: n.links.map(l => [l.cid ?? null, l.size]) })
}

export function decodeFileNode (bytes: Uint8Array): FileNode {
  const what = 'file node'
  const o = decodeCbor(bytes, what)
  if (o.t !== 'f') throw ReefError.badEncoding(`${what}: wrong type tag`)
  const size = field(o, 's', what).int()
  const height = field(o, 'h', what).int()
  const links: Link[] = []
  let total = 0
  for (const raw of field(o, 'l', what).array()) {
    if (!Array.isArray(raw) || raw.length !== 2) throw ReefError.badEncoding(`${what}: bad link`)
    const pair = { c: raw[0], n: raw[1] }
    const n = field(pair, 'n', what).int()
    if (pair.c === null && height === 0) {
      links.push({ size: n })
    } else {
      links.push({ cid: field(pair, 'c', what).cid(), size: n })
    }
    total += n
  }
  if (total !== size || height > 16) throw ReefError.badEncoding(`${what}: sizes do not add up`)
  return { size, height, links }
}

const HOLE_DIGEST = new Uint8Array(32).fill(0xff)

/** Builds the tree over a list of chunk links; returns the root link. Emits every node block. */
export function buildTree (chunks: Link[], emit: (b: Block) => void): Link {
  let level = chunks
  let height = 0
  for (;;) {
    if (level.length <= 1 && height > 0) return level[0]
    const groups = level.length === 0 ? [[]] : group(level, l => l.cid?.multihash.digest ?? HOLE_DIGEST)
    const next: Link[] = []
    for (const g of groups) {
      const size = g.reduce((a, l) => a + l.size, 0)
      const b = encodeFileNode({ size, height, links: g })
      emit(b)
      next.push({ cid: b.cid, size })
    }
    level = next
    height++
    if (groups.length === 1) return next[0]
  }
}

/**
 * Streams bytes into chunks and a file tree. `flush` batches block writes: the caller decides
 * durability (one lmdb commit per batch rather than per chunk).
 */
export class FileBuilder {
  private readonly chunker = new Chunker()
  private readonly links: Link[] = []
  private pending: Block[] = []
  private pendingBytes = 0
  size = 0

  constructor (private readonly put: (blocks: Block[]) => Promise<void>) {}

  async write (piece: Uint8Array): Promise<void> {
    if (this.size + piece.length > MAX_FILE_SIZE) throw ReefError.posix('EFBIG', 'file exceeds the maximum file size')
    this.size += piece.length
    for (const chunk of this.chunker.push(piece)) this.add(chunk)
    if (this.pendingBytes >= 8 * MAX_CHUNK) await this.flush()
  }

  async finish (): Promise<Link> {
    for (const chunk of this.chunker.end()) this.add(chunk)
    const root = buildTree(this.links, b => this.queue(b))
    await this.flush()
    return root
  }

  private add (chunk: Uint8Array): void {
    const b = makeBlock(chunk, RAW)
    this.links.push({ cid: b.cid, size: chunk.length })
    this.queue(b)
  }

  private queue (b: Block): void {
    this.pending.push(b)
    this.pendingBytes += b.bytes.length
  }

  private async flush (): Promise<void> {
    if (this.pending.length === 0) return
    const batch = this.pending
    this.pending = []
    this.pendingBytes = 0
    await this.put(batch)
  }
}

export async function fileFromBytes (bytes: Uint8Array, put: (blocks: Block[]) => Promise<void>): Promise<Link> {
  const fb = new FileBuilder(put)
  await fb.write(bytes)
  return await fb.finish()
}

function linkCid (l: Link): CID {
  if (l.cid === undefined) throw ReefError.badEncoding('file node: hole link above height 0')
  return l.cid
}

/** Bytes of a file a sequential FileReader prefetches ahead of its reads. */
const PREFETCH = 8 * 1024 * 1024

/** A leaf chunk (or hole) and where it starts in the file. */
export interface Leaf { cid?: CID, size: number, offset: number }

/**
 * Random-access reader over a file tree; caches decoded nodes, so repeated reads of one file
 * cost one block read per chunk touched.
 */
export class FileReader {
  private readonly nodes = new Map<string, FileNode>()
  /**
   * The last few chunks read, already verified: a sequential reader asks for 128 KiB at a time
   * and chunks average 64 KiB, so most chunks would otherwise be fetched and hashed twice.
   */
  private readonly recent = new Map<string, Uint8Array>()

  private async chunk (cid: CID, size: number): Promise<Uint8Array> {
    const key = cid.toString()
    const hit = this.recent.get(key)
    if (hit !== undefined) return hit
    const bytes = await this.store.get(cid)
    if (bytes.length !== size) throw ReefError.badEncoding(`chunk ${key}: size differs from its link`)
    if (this.recent.size >= 8) this.recent.delete(this.recent.keys().next().value as string)
    this.recent.set(key, bytes)
    return bytes
  }

  /** Where the last read ended, and how far ahead of it chunks were prefetched. */
  private lastEnd = -1
  private prefetchedTo = 0

  constructor (readonly root: CID, private readonly store: BlockGetter) {}

  /**
   * A sequential reader (this read starts where the last ended) gets the chunks of the next
   * PREFETCH bytes brought in off this thread, half a window at a time: the local store's
   * pages then fault in on lmdb's worker thread, not during the synchronous gets of later reads.
   */
  private ahead (offset: number, end: number, size: number): void {
    const sequential = offset === this.lastEnd
    this.lastEnd = end
    if (!sequential || this.store.prefetch === undefined || this.prefetchedTo >= Math.min(size, end + PREFETCH / 2)) return
    const from = Math.max(end, this.prefetchedTo)
    const to = Math.min(size, end + PREFETCH)
    this.prefetchedTo = to
    this.chunksIn(from, to).then(cids => this.store.prefetch?.(cids), () => {})
  }

  /** The chunks holding any byte of [from, to) (holes have none). */
  private async chunksIn (from: number, to: number): Promise<CID[]> {
    const out: CID[] = []
    await this.eachLeaf(from, to, l => { if (l.cid !== undefined) out.push(l.cid) })
    return out
  }

  /** Calls `fn` with each leaf link holding any byte of [from, to), in order, and where it starts. */
  private async eachLeaf (from: number, to: number, fn: (l: Link, pos: number) => void | Promise<void>): Promise<void> {
    const visit = async (n: FileNode, base: number): Promise<void> => {
      let pos = base
      for (const l of n.links) {
        const lEnd = pos + l.size
        if (lEnd > from && pos < to) {
          if (n.height > 0) await visit(await this.node(linkCid(l)), pos)
          else await fn(l, pos)
        }
        if (lEnd >= to) break
        pos = lEnd
      }
    }
    await visit(await this.node(this.root), 0)
  }

  async node (cid: CID): Promise<FileNode> {
    const key = cid.toString()
    let n = this.nodes.get(key)
    if (n === undefined) {
      n = decodeFileNode(await this.store.get(cid))
      if (this.nodes.size > 4096) this.nodes.clear()
      this.nodes.set(key, n)
    }
    return n
  }

  async size (): Promise<number> { return (await this.node(this.root)).size }

  /** All leaf chunks in order (metadata only: no chunk data is read). */
  async leaves (): Promise<Leaf[]> {
    const out: Leaf[] = []
    let offset = 0
    const walk = async (cid: CID): Promise<void> => {
      const n = await this.node(cid)
      for (const l of n.links) {
        if (n.height === 0) {
          out.push({ cid: l.cid, size: l.size, offset })
          offset += l.size
        } else {
          await walk(linkCid(l))
        }
      }
    }
    await walk(this.root)
    return out
  }

  /**
   * Reads up to `length` bytes at `offset` (short at end of file). The bytes may be shared with
   * this reader's cache (a read within one chunk is a view of it): never modify them.
   */
  async read (offset: number, length: number): Promise<Uint8Array> {
    const parts = await this.readParts(offset, length)
    return parts.length === 1 ? parts[0] : Buffer.concat(parts)
  }

  /**
   * The same bytes as `read`, as the pieces they lie in: views of the chunks (shared with this
   * reader's cache: never modify them) and zeros for holes. A reply to the kernel takes them as
   * they are (one copy, into the kernel), where `read` would first join them.
   */
  async readParts (offset: number, length: number): Promise<Uint8Array[]> {
    const root = await this.node(this.root)
    const end = Math.min(root.size, offset + length)
    if (offset >= end) return []
    this.ahead(offset, end, root.size)
    const parts: Uint8Array[] = []
    await this.eachLeaf(offset, end, async (l, pos) => {
      const from = Math.max(offset, pos)
      const to = Math.min(end, pos + l.size)
      if (l.cid !== undefined) parts.push((await this.chunk(l.cid, l.size)).subarray(from - pos, to - pos))
      else parts.push(new Uint8Array(to - from))
    })
    return parts
  }

  async * stream (): AsyncGenerator<Uint8Array> {
    for (const leaf of await this.leaves()) {
      if (leaf.cid === undefined) {
        for (let left = leaf.size; left > 0; left -= MAX_CHUNK) yield new Uint8Array(Math.min(left, MAX_CHUNK))
        continue
      }
      const bytes = await this.store.get(leaf.cid)
      if (bytes.length !== leaf.size) throw ReefError.badEncoding(`chunk ${leaf.cid.toString()}: size differs from its link`)
      yield bytes
    }
  }
}

/** Where a file made of these leaves ends (its size). */
export function leavesEnd (leaves: Leaf[]): number {
  const last = leaves[leaves.length - 1]
  return last === undefined ? 0 : last.offset + last.size
}

/** Sorted, disjoint [start, end) ranges covering the given ones (empty ranges kept as points). */
export function mergeRanges (ranges: Array<[number, number]>): Array<[number, number]> {
  const sorted = ranges.filter(([a, b]) => b >= a).sort((x, y) => x[0] - y[0] || x[1] - y[1])
  const out: Array<[number, number]> = []
  for (const [a, b] of sorted) {
    const last = out[out.length - 1]
    if (last !== undefined && a <= last[1]) last[1] = Math.max(last[1], b)
    else out.push([a, b])
  }
  return out
}

/**
 * What the new content holds from `pos`: data, or a hole (zeros never written), up to `end`.
 * Holes of at least HOLE_MIN bytes are stored as hole links instead of chunks of zeros, so a
 * sparse file costs blocks only for what was written.
 */
export type Extent = { hole: boolean, end: number }
export const HOLE_MIN = MAX_CHUNK

/**
 * Copy-on-write rewrite of a file after in-place edits. For each dirty range, chunks wholly
 * before it are kept; chunking restarts at the chunk holding its first byte and stops as soon as
 * a new cut point past its last byte lands on an old chunk boundary, after which old chunks are
 * reused up to the next dirty range. Content-defined cut points depend only on the bytes since
 * the last cut, so the result is the root that putting the new content afresh would give, and
 * only the changed chunks and the tree path to the root are new blocks. Scattered edits (random
 * writes into a big file) cost chunks around each edit, not everything between the first and
 * the last.
 *
 * `read(offset, length)` returns the new content; `dirty` are [start, end) ranges in file
 * offsets (sorted or not, overlapping or not); `extent(pos)` (optional) tells where holes are,
 * so they are skipped rather than read.
 */
export async function rewriteFile (opts: {
  old: Leaf[]
  newSize: number
  dirty: Array<[number, number]>
  read: (offset: number, length: number) => Promise<Uint8Array>
  put: (blocks: Block[]) => Promise<void>
  extent?: (pos: number) => Extent
}): Promise<Link> {
  const { old, newSize } = opts
  const extent = opts.extent ?? ((): Extent => ({ hole: false, end: newSize }))
  const oldSize = leavesEnd(old)
  const ranges = [...opts.dirty]
  // The old last chunk ended at EOF, not at a content cut: when the file grows, it must be
  // chunked again (keeping it left an EOF-cut, possibly undersized, chunk mid-file and a root
  // that differed from putting the same content afresh). When the size changed, everything from
  // the old last chunk (growth) or the new end (shrink) on is dirty.
  if (oldSize !== newSize) {
    const from = newSize > oldSize ? (oldSize > 0 ? oldSize - 1 : 0) : newSize
    ranges.push([from, Math.max(oldSize, newSize)])
  }
  const merged = mergeRanges(ranges.map(([a, b]) => [Math.min(a, newSize), Math.min(Math.max(a, b), Math.max(newSize, oldSize))]))
  const links: Link[] = []
  const blocks: Block[] = []

  /**
   * Where the data run starting at `p` ends: at the next hole worth skipping, or the end. It
   * scans at most HORIZON bytes ahead: `real` says whether `end` is where the data really ends
   * (a hole or the end of the file), which decides whether the chunk there must be cut. A scan
   * to the end of the file from every edit made a fold of scattered edits quadratic.
   */
  const HORIZON = 8 * MAX_CHUNK
  const dataEnd = (p: number): { end: number, real: boolean } => {
    let q = p
    for (let guard = 0; q < newSize && q < p + HORIZON && guard < 1_000_000; guard++) {
      const e = extent(q)
      if (e.hole && e.end - q >= HOLE_MIN) return { end: q, real: true }
      q = Math.max(e.end, q + 1)
    }
    return q >= newSize ? { end: newSize, real: true } : { end: q, real: false }
  }
  /** The first old chunk from index `from` on that starts at or after `x` (binary search). */
  const firstFrom = (from: number, x: number): number => {
    let lo = from
    let hi = old.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (old[mid].offset < x) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  const WINDOW = 4 * MAX_CHUNK
  let i = 0
  let pos = 0
  for (let r = 0; r < merged.length && pos < newSize; r++) {
    const [dStart, dEnd] = merged[r]
    // Old chunks wholly before this range (and at or after where the last one rejoined) stay.
    while (i < old.length && old[i].offset + old[i].size <= dStart && old[i].offset + old[i].size <= newSize) {
      if (old[i].offset >= pos) links.push(old[i])
      i++
    }
    if (i < old.length && old[i].offset >= pos) pos = old[i].offset
    else if (i >= old.length) pos = Math.max(pos, links.length === 0 ? 0 : Math.min(oldSize, newSize))
    // Chunking can rejoin the old sequence at an old boundary at or after the range's end.
    const rejoinFrom = firstFrom(i, dEnd)
    let buf = new Uint8Array(0)
    let bufStart = pos
    let runEnd = -1
    let runReal = false
    let rejoined = false
    let window = AVG_CHUNK
    while (pos < newSize) {
      const at = firstFrom(rejoinFrom, pos)
      if (at < old.length && old[at].offset === pos) {
        i = at
        rejoined = true
        break
      }
      const e = extent(pos)
      if (e.hole && e.end - pos >= HOLE_MIN) {
        const end = Math.min(e.end, newSize)
        // Holes join old boundaries like chunks do: stop at the first one past the dirty range.
        const next = firstFrom(rejoinFrom, pos + 1)
        const stop = next < old.length && old[next].offset < end ? old[next].offset : end
        links.push({ size: stop - pos })
        pos = stop
        buf = new Uint8Array(0)
        bufStart = pos
        runEnd = -1
        continue
      }
      if (runEnd <= pos) ({ end: runEnd, real: runReal } = dataEnd(pos))
      // Bytes are read as the cut needs them: one average chunk first (a rewrite around a small
      // edit usually rejoins the old cuts right after it), doubling up to WINDOW for long runs.
      let n = -1
      for (let guard = 0; guard < 1_000_000; guard++) {
        const have = bufStart + buf.length
        n = nextCut(buf, pos - bufStart, buf.length, runReal && have >= runEnd)
        if (n > 0) break
        for (let g = 0; !runReal && runEnd <= have && g < 1_000_000; g++) ({ end: runEnd, real: runReal } = dataEnd(runEnd))
        const want = Math.min(window, runEnd - have)
        if (want <= 0) throw new ReefError('IO', `rewrite found no data at ${have} of ${newSize}`)
        window = Math.min(WINDOW, window * 2)
        const more = await opts.read(have, want)
        if (more.length !== want) throw new ReefError('IO', 'short read while rewriting a file')
        const keep = buf.subarray(pos - bufStart)
        const joined = new Uint8Array(keep.length + more.length)
        joined.set(keep)
        joined.set(more, keep.length)
        buf = joined
        bufStart = pos
      }
      if (n <= 0) throw new ReefError('IO', 'rewrite found no cut point')
      const from = pos - bufStart
      const chunk = buf.slice(from, from + n)
      const b = makeBlock(chunk, RAW)
      blocks.push(b)
      links.push({ cid: b.cid, size: n })
      pos += n
      if (blocks.length >= 16) await opts.put(blocks.splice(0))
    }
    if (!rejoined) break
  }
  // After the last range: the old chunks from where chunking rejoined them.
  if (pos < newSize) {
    for (; i < old.length && old[i].offset < newSize; i++) if (old[i].offset >= pos) links.push(old[i])
  }
  const root = buildTree(links, b => blocks.push(b))
  await opts.put(blocks)
  return root
}
