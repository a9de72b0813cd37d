/**
 * In-memory inodes of a mounted version. A file inode's content is its base file tree (as of
 * the last fold) overlaid with dirty 64 KiB pages written since; a directory's children are
 * loaded from its base directory tree on first use.
 */
import { CID } from 'multiformats/cid'
import { type Entry, isDevice, type Kind } from '../object/dir.js'
import { FileReader, mergeRanges } from '../object/file.js'
import type { BlockGetter } from '../store/types.js'
import type { Frozen } from './layer.js'
import type { ZeroRanges } from './zeros.js'

/** Disjoint dirty ranges a file keeps before a fold treats dirtyLo..dirtyHi as one. */
const MAX_DIRTY_RANGES = 100_000

export const S_IFREG = 0o100000
export const S_IFDIR = 0o040000
export const S_IFLNK = 0o120000
export const S_IFIFO = 0o010000
export const S_IFCHR = 0o020000
export const S_IFBLK = 0o060000
export const S_IFSOCK = 0o140000
export const S_IFMT = 0o170000
/** The file-type bits of each kind (st_mode & S_IFMT). */
export const KIND_TYPE: Readonly<Record<Kind, number>> = {
  file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, fifo: S_IFIFO, socket: S_IFSOCK, chr: S_IFCHR, blk: S_IFBLK
}
/** The kind of a file-type value (mode & S_IFMT), or undefined for none. */
export function kindOfType (type: number): Kind | undefined {
  for (const [k, t] of Object.entries(KIND_TYPE)) if (t === type) return k as Kind
  return undefined
}
export const PAGE = 64 * 1024
export const ROOT_INO = 1

/**
 * Dirty pages come from 16 MiB slabs and go back to a free list when a fold settles them.
 * One ArrayBuffer per 64 KiB page made V8 count thousands of external allocations and run
 * full GCs ever more often as dirty data grew (write handlers went from 0.4 to 2 ms each).
 */
const SLAB = 16 * 1024 * 1024
const freePages: Uint8Array[] = []
/** A page from the pool; zeroed unless the caller will overwrite all of it. */
export function allocPage (zero = true): Uint8Array {
  let page = freePages.pop()
  if (page === undefined) {
    const slab = new ArrayBuffer(SLAB)
    for (let off = SLAB - PAGE; off > 0; off -= PAGE) freePages.push(new Uint8Array(slab, off, PAGE))
    page = new Uint8Array(slab, 0, PAGE)
  }
  return zero ? page.fill(0) : page
}
export function freePage (page: Uint8Array): void {
  if (page.length === PAGE && freePages.length < 8192) freePages.push(page)
}

/**
 * The first page of a file with no stored data starts at the size its writes reach (a power of
 * two from 4 KiB) and grows: a 64 KiB page per small new file cost a fresh-slab page fault run
 * (~200 us) per create and 16x the dirty memory of what was written.
 */
export function smallPage (bytes: number): Uint8Array {
  let size = 4096
  while (size < bytes) size *= 2
  return size >= PAGE ? allocPage(true) : new Uint8Array(size)
}

/** Bytes held by a file's dirty pages. */
export function pagesBytes (pages: ReadonlyMap<number, Uint8Array> | undefined): number {
  let total = 0
  if (pages !== undefined) for (const page of pages.values()) total += page.length
  return total
}

export const nameKey = (name: Uint8Array): string => Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('latin1')
export const keyName = (key: string): Uint8Array => new Uint8Array(Buffer.from(key, 'latin1'))

export interface Attr {
  ino: number
  mode: number
  nlink: number
  uid: number
  gid: number
  size: number
  rdev: number
  blocks: number
  atime: bigint
  mtime: bigint
  ctime: bigint
  kind: Kind
}

const NO_XATTRS: ReadonlyMap<string, Uint8Array> = new Map()

/** A CID kept as its bytes in a one-byte string (~50 bytes, against ~1 KiB for a CID object). */
export const cidKey = (cid: CID): string => nameKey(cid.bytes)
/** The CID `cidKey` made; a fresh array, so the CID shares no buffer with anything else. */
export function cidOfKey (key: string): CID {
  const bytes = new Uint8Array(key.length)
  for (let i = 0; i < key.length; i++) bytes[i] = key.charCodeAt(i)
  return CID.decode(bytes)
}

/**
 * The part of an inode that most never need: write state, open-file state, directory loading,
 * symlink targets, devices, xattrs. Every inode the kernel holds is loaded (after `find` over
 * 100,000 files, 100,000 of them), and those fields in every one cost as much as the rest.
 */
class Extra {
  inTable = false
  ownXattrs?: Map<string, Uint8Array>
  pages?: Map<number, Uint8Array>
  partial?: Map<number, Array<[number, number]>>
  zeros?: ZeroRanges
  frozen?: Frozen
  dirtyLo = Infinity
  dirtyHi = 0
  ranges?: Array<[number, number]> | null
  rangesMerged?: number
  reader?: FileReader
  /** The base (cidKey) the reader reads. */
  readerKey?: string
  children?: Map<string, number>
  loading?: Promise<Map<string, number>>
  subdirs = 0
  target?: Uint8Array
  rdev = 0
  last?: Uint8Array
}

export class Inode {
  kind: Kind
  mode: number
  uid: number
  gid: number
  nlink: number
  size: number
  atime: bigint
  mtime: bigint
  ctime: bigint
  /** Containing directory (dirs and singly-linked files); 0 for the root and table residents. */
  parent = 0
  /** Open handles: an unlinked file stays readable until the last one closes. */
  openCount = 0
  baseLimit = 0
  /** A directory's stored tree (dirBase), or any other inode's base, as a cidKey. */
  private cid?: string
  /** Allocated at the first field of Extra set to other than its default. */
  private x?: Extra

  private get extra (): Extra { return (this.x ??= new Extra()) }

  /** Hard-linked at some point: lives in the version's link table. */
  get inTable (): boolean { return this.x?.inTable ?? false }
  set inTable (v: boolean) { if (v || this.x !== undefined) this.extra.inTable = v }
  private get baseKey (): string | undefined { return this.kind === 'dir' ? undefined : this.cid }

  // files
  /** The file tree of the content as of the last fold (a CID made at each read of this). */
  get base (): CID | undefined { return this.baseKey === undefined ? undefined : cidOfKey(this.baseKey) }
  set base (cid: CID | undefined) { if (this.kind !== 'dir') this.cid = cid === undefined ? undefined : cidKey(cid) }
  get pages (): Map<number, Uint8Array> | undefined { return this.x?.pages }
  set pages (v: Map<number, Uint8Array> | undefined) { if (v !== undefined || this.x !== undefined) this.extra.pages = v }
  /**
   * Pages written in part over content below that was never loaded (src/fs/layer.ts): page
   * index -> the page-relative [lo, hi) ranges it holds; the rest of such a page reads through.
   */
  get partial (): Map<number, Array<[number, number]>> | undefined { return this.x?.partial }
  set partial (v: Map<number, Array<[number, number]>> | undefined) { if (v !== undefined || this.x !== undefined) this.extra.partial = v }
  /** Parts of the base (below baseLimit) punched or zeroed since the last fold; pages win. */
  get zeros (): ZeroRanges | undefined { return this.x?.zeros }
  set zeros (v: ZeroRanges | undefined) { if (v !== undefined || this.x !== undefined) this.extra.zeros = v }
  /**
   * While a fold stores this file's content as of its snapshot: that content, which the live
   * layer (pages, zeros, baseLimit) lies over instead of `base` (src/fs/layer.ts).
   */
  get frozen (): Frozen | undefined { return this.x?.frozen }
  set frozen (v: Frozen | undefined) { if (v !== undefined || this.x !== undefined) this.extra.frozen = v }
  get dirtyLo (): number { return this.x?.dirtyLo ?? Infinity }
  set dirtyLo (v: number) { if (v !== Infinity || this.x !== undefined) this.extra.dirtyLo = v }
  get dirtyHi (): number { return this.x?.dirtyHi ?? 0 }
  set dirtyHi (v: number) { if (v !== 0 || this.x !== undefined) this.extra.dirtyHi = v }
  /**
   * The byte ranges changed since the last fold, so that a fold re-chunks around each of them
   * (random writes into a big file) rather than everything from dirtyLo to dirtyHi. Merged when
   * it grows; beyond MAX_DIRTY_RANGES disjoint ranges it gives up (null: dirtyLo..dirtyHi).
   * Allocated at the first change (most inodes never have one).
   */
  private get ranges (): Array<[number, number]> | null | undefined { return this.x?.ranges }
  private set ranges (v: Array<[number, number]> | null | undefined) { if (v !== undefined || this.x !== undefined) this.extra.ranges = v }

  // directories
  /** The directory's stored tree as of the last fold (a CID made at each read of this). */
  get dirBase (): CID | undefined { return this.kind !== 'dir' || this.cid === undefined ? undefined : cidOfKey(this.cid) }
  set dirBase (cid: CID | undefined) { if (this.kind === 'dir') this.cid = cid === undefined ? undefined : cidKey(cid) }
  /** Whether the directory has a stored tree (without making its CID). */
  get hasDirBase (): boolean { return this.kind === 'dir' && this.cid !== undefined }
  get children (): Map<string, number> | undefined { return this.x?.children }
  set children (v: Map<string, number> | undefined) { if (v !== undefined || this.x !== undefined) this.extra.children = v }
  get loading (): Promise<Map<string, number>> | undefined { return this.x?.loading }
  set loading (v: Promise<Map<string, number>> | undefined) { if (v !== undefined || this.x !== undefined) this.extra.loading = v }
  get subdirs (): number { return this.x?.subdirs ?? 0 }
  set subdirs (v: number) { if (v !== 0 || this.x !== undefined) this.extra.subdirs = v }

  // symlinks
  get target (): Uint8Array | undefined { return this.x?.target }
  set target (v: Uint8Array | undefined) { if (v !== undefined || this.x !== undefined) this.extra.target = v }

  // character and block devices
  get rdev (): number { return this.x?.rdev ?? 0 }
  set rdev (v: number) { if (v !== 0 || this.x !== undefined) this.extra.rdev = v }

  /** The log record whose change was the content's last (Entry.last), where tracked. */
  get last (): Uint8Array | undefined { return this.x?.last }
  set last (v: Uint8Array | undefined) { if (v !== undefined || this.x !== undefined) this.extra.last = v }

  constructor (readonly ino: number, kind: Kind, mode: number, uid: number, gid: number, time: bigint) {
    this.kind = kind
    this.mode = mode & 0o7777
    this.uid = uid
    this.gid = gid
    this.nlink = kind === 'dir' ? 2 : 1
    this.size = 0
    this.atime = this.mtime = this.ctime = time
  }

  static fromEntry (ino: number, e: Entry): Inode {
    const n = new Inode(ino, e.kind, e.mode, e.uid, e.gid, e.mtime)
    // Equal times share one bigint (a file not changed since it was made has three equal ones).
    n.atime = e.atime === n.mtime ? n.mtime : e.atime
    n.ctime = e.ctime === n.mtime ? n.mtime : e.ctime === n.atime ? n.atime : e.ctime
    n.size = e.size
    if (e.xattrs !== undefined) for (const [k, v] of Object.entries(e.xattrs)) n.setXattr(k, v)
    if (e.last !== undefined) n.last = e.last
    if (e.kind === 'file') {
      n.base = e.cid
      n.baseLimit = e.size
      n.nlink = e.nlink ?? 1
    } else if (e.kind === 'dir') {
      n.dirBase = e.cid
      n.nlink = e.nlink ?? 2
      n.subdirs = n.nlink - 2
      n.size = e.size
    } else if (e.kind === 'symlink') {
      n.target = e.target
      n.size = e.target?.length ?? 0
      n.nlink = e.nlink ?? 1
    } else {
      n.rdev = e.rdev ?? 0
      n.size = 0
      n.nlink = e.nlink ?? 1
    }
    return n
  }

  toEntry (name: Uint8Array): Entry {
    const e: Entry = {
      name, kind: this.kind, mode: this.mode, uid: this.uid, gid: this.gid, size: this.size,
      mtime: this.mtime, atime: this.atime, ctime: this.ctime, ino: this.ino
    }
    if (this.kind === 'file') e.cid = this.base
    if (this.kind === 'dir') {
      e.cid = this.dirBase
      e.nlink = this.nlink
    }
    if (this.kind === 'symlink') e.target = this.target
    if (isDevice(this.kind)) e.rdev = this.rdev
    if (this.kind !== 'dir' && this.nlink > 1) e.nlink = this.nlink
    if (this.xattrs.size > 0) e.xattrs = Object.fromEntries(this.xattrs)
    if (this.last !== undefined) e.last = this.last
    return e
  }

  attr (): Attr {
    return {
      ino: this.ino,
      mode: KIND_TYPE[this.kind] | this.mode,
      nlink: this.nlink,
      uid: this.uid,
      gid: this.gid,
      size: this.size,
      rdev: this.rdev,
      blocks: Math.ceil(this.size / 512),
      atime: this.atime,
      mtime: this.mtime,
      ctime: this.ctime,
      kind: this.kind
    }
  }

  get contentDirty (): boolean { return this.dirtyLo < this.dirtyHi || (this.kind === 'file' && this.baseKey === undefined) }

  baseReader (store: BlockGetter): FileReader | undefined {
    const key = this.baseKey
    if (key === undefined) return undefined
    const x = this.extra
    if (x.reader === undefined || x.readerKey !== key) {
      x.reader = new FileReader(cidOfKey(key), store)
      x.readerKey = key
    }
    return x.reader
  }

  get xattrs (): ReadonlyMap<string, Uint8Array> { return this.x?.ownXattrs ?? NO_XATTRS }
  setXattr (name: string, value: Uint8Array): void { (this.extra.ownXattrs ??= new Map()).set(name, value) }
  removeXattr (name: string): void { this.x?.ownXattrs?.delete(name) }

  /** Whether a reader of the base tree (with its cached nodes and chunks) is held. */
  get readerHeld (): boolean { return this.x?.reader !== undefined }

  /** Forgets the cached reader of the base tree (the next read makes a new one). */
  dropReader (): void {
    const x = this.x
    if (x === undefined) return
    x.reader = undefined
    x.readerKey = undefined
    this.trim()
  }

  /** Lets Extra go once every field of it is back to its default (a read file, closed). */
  private trim (): void {
    const x = this.x
    if (x === undefined || x.ownXattrs !== undefined || x.pages !== undefined || x.partial !== undefined || x.zeros !== undefined || x.frozen !== undefined) return
    if (x.dirtyLo !== Infinity || x.dirtyHi !== 0 || x.ranges !== undefined || x.rangesMerged !== undefined || x.reader !== undefined) return
    if (x.loading !== undefined || x.subdirs !== 0 || x.target !== undefined || x.rdev !== 0 || x.last !== undefined) return
    if (x.inTable || x.children !== undefined) return
    this.x = undefined
  }

  markDirty (lo: number, hi: number): void {
    if (lo < this.dirtyLo) this.dirtyLo = lo
    if (hi > this.dirtyHi) this.dirtyHi = hi
    const x = this.extra
    if (x.ranges === null) return
    const r = (x.ranges ??= [])
    const last = r[r.length - 1]
    // Sequential writes extend the last range in place.
    if (last !== undefined && lo >= last[0] && lo <= last[1]) {
      if (hi > last[1]) last[1] = hi
      return
    }
    r.push([lo, hi])
    if (r.length > 2 * (x.rangesMerged ?? 0) + 1024) {
      const merged = mergeRanges(r)
      x.rangesMerged = merged.length
      x.ranges = merged.length > MAX_DIRTY_RANGES ? null : merged
    }
  }

  /** What changed since the last fold, as [start, end) ranges (see `ranges`). */
  dirtyRanges (): Array<[number, number]> {
    if (this.ranges === null) return this.dirtyLo < this.dirtyHi ? [[this.dirtyLo, this.dirtyHi]] : []
    return mergeRanges(this.ranges ?? [])
  }

  /**
   * The content below (a fold's frozen layer) now holds everything up to the size: no pages,
   * zeros or changed ranges of its own (the pages went into that layer).
   */
  restart (): void {
    this.baseLimit = this.size
    this.pages = undefined
    this.partial = undefined
    this.zeros = undefined
    this.dirtyLo = Infinity
    this.dirtyHi = 0
    this.ranges = undefined
    if (this.x !== undefined) this.x.rangesMerged = undefined
    this.trim()
  }
}
