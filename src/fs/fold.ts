/**
 * The fold of a ReefFS (src/fs/fs.ts): the dirty state becomes new blocks (copy-on-write:
 * changed chunks and the paths to the root), a version root, and a signed head (through the
 * `commit` callback of the composition root). ReefFS runs it under its lock.
 */
import type { CID } from 'multiformats/cid'
import type { Block } from '../block/index.js'
import { ReefError } from '../errors.js'
import { buildDir, type Entry } from '../object/dir.js'
import { type Extent, type Leaf, leavesEnd, rewriteFile } from '../object/file.js'
import { decodeVersion, encodeVersion, type VersionRoot } from '../object/version.js'
import { checkVersion, readBack } from '../object/readback.js'
import type { WriterLog } from '../log/index.js'
import type { BlockStore } from '../store/types.js'
import { type Inode, keyName, PAGE } from './inode.js'
import type { Core, Tree } from './tree.js'

export interface VersionInfo { vguid: CID, root: VersionRoot }

/**
 * What a fold without a log of its own (a merge) writes into the version root instead of what
 * the log, the clock and the head would give: every field is the caller's, so that every node
 * folding the same state writes the same bytes.
 */
export interface FoldShape {
  parents: CID[]
  seq: bigint
  time: number
  author: Uint8Array
  vv: Record<string, number>
  message?: string
}

/** What a fold needs besides the state it folds (ReefFS's). */
export interface FoldContext {
  store: BlockStore
  /** The log whose records the version takes in; undefined for a merge (`shape` then). */
  log?: WriterLog
  /** The head the new version follows. */
  version?: VersionInfo
  /** The version a `from` open started from, until the fold that records it. */
  startedFrom?: CID
  author: Uint8Array
  /** Makes the new version root durable and advances the head (FsOptions.commit). */
  commit?: (block: Block, root: VersionRoot) => Promise<void>
  /**
   * Called once the version is committed and the tree settled, before the fold returns (in
   * the same synchronous step: nothing else runs in between).
   */
  folded: (v: VersionInfo) => void
}

/**
 * Where a file's current content is data and where it is a hole: dirty pages are data, the
 * base tree below baseLimit is data except its own hole links, and everything else (never
 * written, or cut off by a truncate) is a hole. Lets a fold skip the holes of sparse files.
 */
function extentsOf (n: Inode, old: Leaf[]): (pos: number) => Extent {
  const pages = n.pages !== undefined ? [...n.pages.keys()].sort((a, b) => a - b) : []
  const nextPageStart = (p: number): number => {
    let lo = 0
    let hi = pages.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (pages[mid] <= p) lo = mid + 1
      else hi = mid
    }
    return lo < pages.length ? pages[lo] * PAGE : Infinity
  }
  return (pos: number): Extent => {
    const p = Math.floor(pos / PAGE)
    if (n.pages?.has(p) === true) {
      let q = p
      while (n.pages.has(q + 1)) q++
      return { hole: false, end: Math.min((q + 1) * PAGE, n.size) }
    }
    const limit = Math.min(nextPageStart(p), n.size)
    if (pos < n.baseLimit) {
      // A punched or zeroed part of the base is a hole too.
      const z = n.zeros?.at(pos) ?? { zero: false, end: Infinity }
      if (z.zero) return { hole: true, end: Math.max(Math.min(z.end, limit), pos + 1) }
      let lo = 0
      let hi = old.length - 1
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1
        if (old[mid].offset <= pos) lo = mid
        else hi = mid - 1
      }
      const leaf = old[lo]
      const end = Math.min(leaf.offset + leaf.size, limit, n.baseLimit, z.end)
      return { hole: leaf.cid === undefined, end: Math.max(end, pos + 1) }
    }
    return { hole: true, end: Math.max(limit, pos + 1) }
  }
}

/** A directory tree a fold has built, applied to its inode once the version is committed. */
interface BuiltDir { cid: CID, count: number, subdirs: number }

/** A directory's entry as of a fold in progress (its new tree, count and link count). */
function withBuilt (e: Entry, b: BuiltDir | undefined): Entry {
  return b === undefined ? e : { ...e, cid: b.cid, size: b.count, nlink: 2 + b.subdirs }
}

/**
 * Folds everything applied so far into a new version, whether or not anything changed (the
 * caller decides that, and holds the lock). Returns the new version.
 */
export async function fold (core: Core, at: FoldContext, message?: string, shape?: FoldShape): Promise<VersionInfo> {
  const { tree, pages, links: table } = core
  const log = at.log
  const blocks: Block[] = []
  const emit = (b: Block): void => { blocks.push(b) }
  const put = async (bs: Block[]): Promise<void> => { await at.store.putMany(bs) }

  for (const ino of pages.dirtyFiles) {
    const n = tree.inodes.get(ino)
    if (n === undefined || n.kind !== 'file' || !n.contentDirty) continue
    const old = n.base !== undefined ? await (n.baseReader(at.store)?.leaves() ?? []) : []
    const oldSize = leavesEnd(old)
    const dirty = n.dirtyRanges()
    // Below baseLimit the base still holds the content; past it (a truncation) it does not.
    if (n.baseLimit < oldSize) dirty.push([n.baseLimit, oldSize])
    const root = await rewriteFile({
      old,
      newSize: n.size,
      dirty,
      read: async (o, l) => await pages.read(n, o, l),
      extent: extentsOf(n, old),
      put
    })
    pages.settle(n, root.cid as CID)
  }

  // Directories are built into `built` and take their new links only once the head has
  // moved: a fold that fails part-way (a block that does not read back, a store error)
  // leaves every directory as it was, still dirty, and the writes in the log.
  const root = tree.root
  const built = new Map<Inode, BuiltDir>()
  await foldDir(tree, root, '/', emit, built)
  let links = table.base
  if (table.dirty) links = await table.fold(emit, tree.inodes.values())

  const prev = at.version
  const builtRoot = built.get(root)
  const vroot: VersionRoot = {
    root: builtRoot?.cid ?? root.dirBase as CID,
    rootAttrs: withBuilt(root.toEntry(new Uint8Array(0)), builtRoot),
    parents: shape?.parents ?? parents(at.version, at.startedFrom),
    seq: shape?.seq ?? (prev?.root.seq ?? 0n) + 1n,
    time: shape?.time ?? Date.now(),
    author: shape?.author ?? at.author,
    nextIno: tree.nextIno,
    vv: shape?.vv ?? log?.versionVector ?? {}
  }
  if (links !== undefined) vroot.links = links
  message ??= shape?.message
  if (message !== undefined) vroot.message = message
  const last = log?.last
  if (last !== undefined) vroot.log = last
  // Log records are blocks (Ivy): the version names its last record, so every record and
  // the data frames they name are stored with it, before the checkpoint drops the segments.
  // Chunks are stored by now, so a data frame equal to one is not stored twice.
  if (log !== undefined) for (const b of await log.blocks(at.store)) blocks.push(b)
  const vblock = encodeVersion(vroot)
  checkVersion(vblock.cid, vroot, readBack('version root', vblock.cid, vblock.bytes, decodeVersion))
  blocks.push(vblock)
  await put(blocks)
  log?.sync()
  if (at.commit !== undefined) await at.commit(vblock, vroot)
  // The version (and its head) are durable: the log up to here is no longer needed.
  log?.checkpoint()
  for (const [dir, b] of built) {
    dir.dirBase = b.cid
    dir.size = b.count
    dir.subdirs = b.subdirs
    dir.nlink = 2 + b.subdirs
  }
  const version = { vguid: vblock.cid, root: vroot }
  table.settle(links)
  tree.dirtyDirs.clear()
  pages.dirtyFiles.clear()
  at.folded(version)
  return version
}

/**
 * The head first (history follows first parents); a version this mount started from (mount
 * --from) second, so history reaches it when the head is unreadable.
 */
function parents (version: VersionInfo | undefined, from: CID | undefined): CID[] {
  const out = version !== undefined ? [version.vguid] : []
  if (from !== undefined && !out.some(p => p.equals(from))) out.push(from)
  return out
}

/** Builds the tree of a dirty directory (and of its dirty subdirectories) into `built`. */
async function foldDir (tree: Tree, dir: Inode, path: string, emit: (b: Block) => void, built: Map<Inode, BuiltDir>): Promise<void> {
  if (!tree.dirtyDirs.has(dir.ino) && dir.dirBase !== undefined) return
  const entries: Entry[] = []
  let subdirs = 0
  for (const [key, ino] of await tree.children(dir)) {
    const n = tree.node(ino)
    const name = keyName(key)
    if (n.kind === 'dir') {
      subdirs++
      await foldDir(tree, n, path + Buffer.from(name).toString() + '/', emit, built)
    }
    if (n.inTable) {
      entries.push({ name, kind: n.kind, mode: 0, uid: 0, gid: 0, size: 0, mtime: 0n, atime: 0n, ctime: 0n, ino: n.ino, linked: true })
    } else {
      entries.push(withBuilt(n.toEntry(name), built.get(n)))
    }
  }
  try {
    const { cid, count } = buildDir(entries, emit)
    built.set(dir, { cid, count, subdirs })
  } catch (err) {
    if (err instanceof ReefError && err.code === 'BAD_ENCODING') throw new ReefError('BAD_ENCODING', `fold refused, directory ${path}: ${err.message}`, err)
    throw err
  }
}
