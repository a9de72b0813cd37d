/**
 * The fold of a ReefFS (src/fs/fs.ts): the dirty state becomes new blocks (copy-on-write:
 * changed chunks and the paths to the root), a version root, and a signed head (through the
 * `commit` callback of the composition root). In four steps:
 * - `snapshot`, under the fs lock and short: each dirty file's content is frozen (layer.ts),
 *   each dirty directory's entries and the link table's residents are captured, the log is cut;
 *   changes made from then on are tracked afresh, relative to the snapshot;
 * - `build`, outside the lock (writes go on): chunks, hashes and stores the frozen content, the
 *   directories, the link table, the log up to the cut and the version root;
 * - `publish`, outside the lock: advances the head;
 * - `settle`, under the lock: files take their new trees as base, directories theirs, the log
 *   drops what the version holds. Or `abandon`, if anything failed: everything captured is
 *   dirty again, and the next fold stores it.
 * A merge's fold (no log of its own) runs all four under the lock.
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
import { freeze, type Frozen, type Layer, settleFrozen, thaw } from './layer.js'
import type { LinkSnapshot } from './links.js'

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
   * the same synchronous step: nothing else runs in between), with the number of records the
   * version took in (Snapshot.records).
   */
  folded: (v: VersionInfo, records: number) => void
}

/**
 * Where a layer's content is data and where it is a hole: its pages are data, the base tree
 * below baseLimit is data except its own hole links, and everything else (never written, or cut
 * off by a truncate) is a hole. Lets a fold skip the holes of sparse files.
 */
function extentsOf (n: Layer, old: Leaf[]): (pos: number) => Extent {
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

/** One entry of a captured directory: as it was at the snapshot, with what the build fills in. */
interface CapturedEntry {
  entry: Entry
  /** A file whose content the fold stores: the entry takes that tree. */
  file?: Frozen
  /** A dirty subdirectory: the entry takes the tree built for it. */
  dir?: CapturedDir
}

/** A dirty directory as the snapshot captured it. */
interface CapturedDir {
  dir: Inode
  path: string
  entries: CapturedEntry[]
  built?: BuiltDir
}

/** What a fold took under the lock, and what it has built from it so far. */
interface Snapshot {
  files: Array<{ n: Inode, f: Frozen }>
  /** The root's capture, if it was dirty (else the root's tree is unchanged). */
  root?: CapturedDir
  dirs: CapturedDir[]
  rootEntry: Entry
  rootBase?: CID
  links?: LinkSnapshot
  linksBase?: CID
  /** The log's cut (records before it are this version's), when the fold has a log. */
  cut?: number
  /** Records the version takes in (ReefFS's unfolded count at the snapshot). */
  records: number
  vroot: Omit<VersionRoot, 'root' | 'rootAttrs'>
  /** Filled by build. */
  vblock?: Block
  version?: VersionInfo
  linksBuilt?: CID
}

/** Test hooks of a fold. */
export interface FoldHooks {
  /** Called between the snapshot and the build (the lock is free then, except in a merge). */
  afterSnapshot?: () => Promise<void>
}

/**
 * Under the lock: freezes and captures the dirty state (see the header). `records`: the
 * records applied since the last fold, which the version takes in.
 */
async function snapshot (core: Core, at: FoldContext, records: number, message?: string, shape?: FoldShape): Promise<Snapshot> {
  const { tree, pages, links: table } = core
  const log = at.log
  const files: Snapshot['files'] = []
  for (const ino of pages.dirtyFiles) {
    const n = tree.inodes.get(ino)
    if (n === undefined || n.kind !== 'file' || !n.contentDirty) continue
    files.push({ n, f: freeze(n, at.store) })
  }
  const dirs: CapturedDir[] = []
  const root = tree.root
  let rootCapture: CapturedDir | undefined
  let cut: number | undefined
  try {
    rootCapture = await captureDir(tree, root, '/', dirs)
    // The log's cut last: nothing can fail after it but what is undone here.
    cut = log?.cut()
  } catch (err) {
    for (const { n, f } of files) pages.dirtyBytes += thaw(n, f)
    throw err
  }
  const linksSnap = table.dirty ? table.snapshot(tree.inodes.values()) : undefined
  const prev = at.version
  const vroot: Snapshot['vroot'] = {
    parents: shape?.parents ?? parents(at.version, at.startedFrom),
    seq: shape?.seq ?? (prev?.root.seq ?? 0n) + 1n,
    time: shape?.time ?? Date.now(),
    author: shape?.author ?? at.author,
    nextIno: tree.nextIno,
    vv: shape?.vv ?? log?.versionVector ?? {}
  }
  message ??= shape?.message
  if (message !== undefined) vroot.message = message
  const last = log?.last
  if (last !== undefined) vroot.log = last
  // From here on, changes are tracked relative to this snapshot.
  tree.dirtyDirs.clear()
  pages.dirtyFiles.clear()
  tree.folding = true
  return {
    files,
    root: rootCapture,
    dirs,
    rootEntry: root.toEntry(new Uint8Array(0)),
    rootBase: root.dirBase,
    links: linksSnap,
    linksBase: table.base,
    cut,
    records,
    vroot
  }
}

/** Captures a dirty directory's entries (and its dirty subdirectories') into `out`. */
async function captureDir (tree: Tree, dir: Inode, path: string, out: CapturedDir[]): Promise<CapturedDir | undefined> {
  if (!tree.dirtyDirs.has(dir.ino) && dir.dirBase !== undefined) return undefined
  const c: CapturedDir = { dir, path, entries: [] }
  for (const [key, ino] of await tree.children(dir)) {
    const n = tree.node(ino)
    const name = keyName(key)
    if (n.inTable) {
      c.entries.push({ entry: { name, kind: n.kind, mode: 0, uid: 0, gid: 0, size: 0, mtime: 0n, atime: 0n, ctime: 0n, ino: n.ino, linked: true } })
      if (n.kind === 'dir') await captureDir(tree, n, path + Buffer.from(name).toString() + '/', out)
      continue
    }
    const e: CapturedEntry = { entry: n.toEntry(name) }
    if (n.kind === 'file' && n.frozen !== undefined) e.file = n.frozen
    if (n.kind === 'dir') e.dir = await captureDir(tree, n, path + Buffer.from(name).toString() + '/', out)
    c.entries.push(e)
  }
  out.push(c)
  return c
}

/** Outside the lock: stores everything the snapshot froze, and the version root. */
async function build (snap: Snapshot, at: FoldContext, table: { build: (s: LinkSnapshot, emit: (b: Block) => void) => Promise<CID | undefined> }): Promise<void> {
  const blocks: Block[] = []
  const emit = (b: Block): void => { blocks.push(b) }
  const put = async (bs: Block[]): Promise<void> => { await at.store.putMany(bs) }

  for (const { f } of snap.files) {
    const old = f.base !== undefined ? await (f.baseReader()?.leaves() ?? []) : []
    const oldSize = leavesEnd(old)
    const dirty = [...f.ranges]
    // Below baseLimit the base still holds the content; past it (a truncation) it does not.
    if (f.baseLimit < oldSize) dirty.push([f.baseLimit, oldSize])
    const root = await rewriteFile({
      old,
      newSize: f.size,
      dirty,
      read: async (o, l) => await f.read(o, l),
      extent: extentsOf(f, old),
      put
    })
    f.cid = root.cid as CID
  }

  // Subdirectories were captured before their parents: build in that order.
  for (const c of snap.dirs) {
    let subdirs = 0
    const entries = c.entries.map(({ entry, file, dir }) => {
      if (entry.kind === 'dir') subdirs++
      if (file !== undefined) return { ...entry, cid: file.cid }
      if (dir?.built !== undefined) return { ...entry, cid: dir.built.cid, size: dir.built.count, nlink: 2 + dir.built.subdirs }
      return entry
    })
    try {
      const { cid, count } = buildDir(entries, emit)
      c.built = { cid, count, subdirs }
    } catch (err) {
      if (err instanceof ReefError && err.code === 'BAD_ENCODING') throw new ReefError('BAD_ENCODING', `fold refused, directory ${c.path}: ${err.message}`, err)
      throw err
    }
  }
  const links = snap.links !== undefined ? await table.build(snap.links, emit) : snap.linksBase
  snap.linksBuilt = links

  const builtRoot = snap.root?.built
  const vroot: VersionRoot = {
    ...snap.vroot,
    root: builtRoot?.cid ?? snap.rootBase as CID,
    rootAttrs: withBuilt(snap.rootEntry, builtRoot)
  }
  if (links !== undefined) vroot.links = links
  // Log records are blocks (Ivy): the version names its last record, so every record and
  // the data frames they name are stored with it, before the checkpoint drops the segments.
  // Chunks are stored by now, so a data frame equal to one is not stored twice.
  if (at.log !== undefined) for (const b of await at.log.blocks(at.store, undefined, snap.cut)) blocks.push(b)
  const vblock = encodeVersion(vroot)
  checkVersion(vblock.cid, vroot, readBack('version root', vblock.cid, vblock.bytes, decodeVersion))
  blocks.push(vblock)
  await put(blocks)
  snap.vblock = vblock
  snap.version = { vguid: vblock.cid, root: vroot }
}

/** Outside the lock: makes the version root durable and advances the head. */
async function publish (snap: Snapshot, at: FoldContext): Promise<void> {
  if (snap.vblock === undefined || snap.version === undefined) throw new Error('publish before build')
  if (at.commit !== undefined) await at.commit(snap.vblock, snap.version.root)
}

/** Under the lock, once the head names the version: the tree takes what was stored. */
function settle (core: Core, snap: Snapshot, at: FoldContext): VersionInfo {
  const { tree, pages, links: table } = core
  const version = snap.version as VersionInfo
  // The version (and its head) are durable: the log up to the cut is no longer needed.
  if (snap.cut !== undefined) at.log?.checkpoint(snap.cut)
  for (const { n, f } of snap.files) pages.dirtyBytes -= settleFrozen(n, f, f.cid as CID)
  for (const c of snap.dirs) {
    const b = c.built as BuiltDir
    c.dir.dirBase = b.cid
    // Changed again since the snapshot: the live counts are newer than the built ones.
    if (!tree.dirtyDirs.has(c.dir.ino)) {
      c.dir.size = b.count
      c.dir.subdirs = b.subdirs
      c.dir.nlink = 2 + b.subdirs
    }
  }
  table.settleSnapshot(snap.linksBuilt)
  tree.folding = false
  at.folded(version, snap.records)
  return version
}

/** Under the lock, after a failure anywhere past the snapshot: all it took is dirty again. */
function abandon (core: Core, snap: Snapshot): void {
  const { tree, pages, links: table } = core
  for (const { n, f } of snap.files) {
    pages.dirtyBytes += thaw(n, f)
    pages.dirtyFiles.add(n.ino)
  }
  for (const c of snap.dirs) tree.markDirDirty(c.dir.ino)
  if (snap.links !== undefined) table.restore(snap.links)
  tree.folding = false
}

/** How a fold begins and where its lock is (ReefFS's). */
export interface FoldRun {
  message?: string
  shape?: FoldShape
  hooks?: FoldHooks
  /** Under the lock, before the snapshot: the records the version takes in, or undefined when
   * there is nothing to fold. */
  start: () => number | undefined
  /** Runs `fn` under the fs lock: the snapshot, the settle and an abandon. Absent: the caller
   * holds the lock throughout (a merge's fold). */
  locked?: <T>(fn: () => Promise<T>) => Promise<T>
}

/**
 * Folds everything applied so far into a new version: the snapshot, build, publish and settle
 * (or abandon) of the header, the snapshot and the settle under the lock. Returns the new
 * version, or undefined when `start` finds nothing to fold.
 */
export async function fold (core: Core, at: FoldContext, run: FoldRun): Promise<VersionInfo | undefined> {
  const locked = run.locked ?? (async <T>(fn: () => Promise<T>): Promise<T> => await fn())
  const snap = await locked(async () => {
    const records = run.start()
    return records === undefined ? undefined : await snapshot(core, at, records, run.message, run.shape)
  })
  if (snap === undefined) return undefined
  try {
    await run.hooks?.afterSnapshot?.()
    await build(snap, at, core.links)
    await publish(snap, at)
  } catch (err) {
    await locked(async () => { abandon(core, snap) })
    throw err
  }
  return await locked(async () => settle(core, snap, at))
}

/** A directory's entry as of a fold in progress (its new tree, count and link count). */
function withBuilt (e: Entry, b: BuiltDir | undefined): Entry {
  return b === undefined ? e : { ...e, cid: b.cid, size: b.count, nlink: 2 + b.subdirs }
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
