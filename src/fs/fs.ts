/**
 * The POSIX file-system core, testable without a mount. State is the last version plus the
 * writer log: every mutation is validated, appended to the log as a record, then applied to
 * the in-memory inodes by the same `apply` that replays the log after a crash. `fold` turns
 * the dirty state into new blocks (copy-on-write: changed chunks and the paths to the root),
 * a version root, and a signed head (through the `commit` callback of the composition root).
 */
import type { CID } from 'multiformats/cid'
import type { Block } from '../block/index.js'
import { isDamage, ReefError } from '../errors.js'
import { buildDir, checkName, DirReader, type Entry, isDevice, type Kind, linkTableKey } from '../object/dir.js'
import { type Extent, type Leaf, leavesEnd, MAX_FILE_SIZE, rewriteFile } from '../object/file.js'
import { decodeVersion, encodeVersion, type VersionRoot } from '../object/version.js'
import { checkVersion, readBack } from '../object/readback.js'
import { isContentOp, type Op, recordId } from '../log/record.js'
import type { WriterLog } from '../log/index.js'
import type { BlockGetter, BlockStore } from '../store/types.js'
import { allocPage, type Attr, freePage, Inode, keyName, kindOfType, nameKey, PAGE, pagesBytes, ROOT_INO, S_IFMT, smallPage } from './inode.js'
import { checkFallocate, planFallocate } from './fallocate.js'
import { ZeroRanges } from './zeros.js'
import { inoPrefixOf, LEGACY_LIMIT, writerIno } from './ino.js'

export interface Cred { uid: number, gid: number }

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

/**
 * The extended attribute that marks an open conflict (src/merge): the merge sets it on a
 * conflict copy (or on a file whose concurrent rename lost); a rename of the inode, or removing
 * the attribute, resolves it, and so does deleting the inode.
 */
export const CONFLICT_XATTR = 'user.reef.conflict'

export interface FsOptions {
  store: BlockStore
  /** The writer log; absent for a read-only view of a version. */
  log?: WriterLog
  version?: VersionInfo
  /** Called by fold with the new version root block; must make it durable and advance the head. */
  commit?: (block: Block, root: VersionRoot) => Promise<void>
  author?: Uint8Array
  now?: () => bigint
  /**
   * Starts the live tree from this version instead of `version` (the way back to a good
   * version): `version` stays the head the next fold follows (its seq + 1, with it as parent)
   * and names the unfolded part of the log.
   */
  from?: VersionInfo
  /** Where damage and skipped log records are reported (the daemon's log); one line each. */
  warn?: (line: string) => void
  /**
   * A writer of a shared file system (issue 12): each content record says what content it
   * changed (`after`: the file's last record), and each file remembers its last (Entry.last),
   * so that a merge puts every change on the very content its writer saw.
   */
  lineage?: boolean
}

export const XATTR_CREATE = 1
export const XATTR_REPLACE = 2
export const XATTR_SIZE_MAX = 64 * 1024
export const RENAME_NOREPLACE = 1
export const RENAME_EXCHANGE = 2
/** Data carried by one write record. */
export const MAX_WRITE_RECORD = 1024 * 1024
const enc = new TextEncoder()
/** `after` of a change to content no record made (a file as created, or as an older version left it). */
const NO_RECORD = new Uint8Array(0)

const posix = ReefError.posix
const S_ISGID = 0o2000
const nowNs = (): bigint => BigInt(Date.now()) * 1_000_000n

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

const DAMAGE_WORD: Record<string, string> = { NOT_FOUND: 'is missing', BLOCK_CORRUPT: 'is corrupt', BAD_ENCODING: 'is malformed' }

/** A log op in a few words, for the line that says it was skipped. */
function describeOp (op: Op): string {
  const parts: string[] = [op.op]
  if ('ino' in op) parts.push(`inode ${op.ino}`)
  if ('parent' in op) parts.push(`in directory inode ${op.parent}`)
  if ('name' in op) parts.push(JSON.stringify(Buffer.from(op.name).toString()))
  if ('newName' in op) parts.push(`to ${JSON.stringify(Buffer.from(op.newName).toString())} in directory inode ${op.newParent}`)
  return parts.join(' ')
}

/** A directory tree a fold has built, applied to its inode once the version is committed. */
interface BuiltDir { cid: CID, count: number, subdirs: number }

/** A directory's entry as of a fold in progress (its new tree, count and link count). */
function withBuilt (e: Entry, b: BuiltDir | undefined): Entry {
  return b === undefined ? e : { ...e, cid: b.cid, size: b.count, nlink: 2 + b.subdirs }
}

/**
 * Group and mode of a new entry. The caller's group, except in a setgid directory: there the
 * entry takes the directory's group, and a new directory the setgid bit too (as ext4 and every
 * Linux file system do; FUSE leaves this to the file system). Dropping S_ISGID from a new file
 * whose creator is not in the group is the kernel's part, done before the request arrives.
 */
function ownerIn (dir: Inode, kind: Kind, mode: number, cred: Cred): { gid: number, mode: number } {
  const perm = mode & 0o7777
  if ((dir.mode & S_ISGID) === 0) return { gid: cred.gid, mode: perm }
  return { gid: dir.gid, mode: kind === 'dir' ? perm | S_ISGID : perm }
}

export class ReefFS {
  readonly inodes = new Map<number, Inode>()
  readonly store: BlockStore
  readonly log?: WriterLog
  version?: VersionInfo
  nextIno = ROOT_INO + 1
  /** Bytes held in dirty pages: the composition root folds early when this grows. */
  dirtyBytes = 0
  private readonly dirtyDirs = new Set<number>()
  private readonly dirtyFiles = new Set<number>()
  private tableBase?: CID
  private tableDirty = false
  private readonly tableDropped = new Set<number>()
  private readonly commitFn?: FsOptions['commit']
  private readonly author: Uint8Array
  private readonly now: () => bigint
  private chain: Promise<unknown> = Promise.resolve()
  private unfolded = 0
  /** Directories whose tree could not be read, by inode (see children). */
  readonly damaged = new Map<number, { path: string, guid: string, code: string, message: string }>()
  /** Damaged blocks already reported (dir ino and GUID): a retried `ls` logs nothing new. */
  private readonly reported = new Set<string>()
  /** The version a `from` open started from, until the fold that records it. */
  private startedFrom?: CID
  /** Log records the replay at open could not apply, each reported through `warn`. */
  replaySkipped = 0
  private readonly warn: (line: string) => void
  /** This writer's inode-number prefix (src/fs/ino.ts). */
  private readonly inoPrefix?: number
  /** FsOptions.lineage. */
  private readonly lineage: boolean

  private constructor (opts: FsOptions) {
    this.store = opts.store
    this.log = opts.log
    this.version = opts.version
    this.commitFn = opts.commit
    this.author = opts.author ?? new Uint8Array(32)
    this.now = opts.now ?? nowNs
    this.warn = opts.warn ?? (() => {})
    if (opts.log !== undefined) this.inoPrefix = inoPrefixOf(opts.log.writer)
    this.lineage = opts.lineage === true
  }

  /** Opens a version (or an empty file system) and replays the unfolded part of the log. */
  static async open (opts: FsOptions): Promise<ReefFS> {
    const fs = new ReefFS(opts)
    const v = (opts.from ?? opts.version)?.root
    const t = fs.now()
    const root = v?.rootAttrs !== undefined ? Inode.fromEntry(ROOT_INO, v.rootAttrs) : new Inode(ROOT_INO, 'dir', 0o755, 0, 0, t)
    root.dirBase = v?.root
    if (v === undefined) {
      root.children = new Map()
      fs.dirtyDirs.add(ROOT_INO)
    }
    fs.inodes.set(ROOT_INO, root)
    if (v !== undefined) {
      fs.nextIno = Math.max(v.nextIno, opts.version?.root.nextIno ?? 0, ROOT_INO + 1)
      fs.tableBase = v.links
    }
    // Starting from another version is itself a change: the next fold records it as a version,
    // whose second parent is the version it started from.
    if (opts.from !== undefined) {
      fs.dirtyDirs.add(ROOT_INO)
      fs.startedFrom = opts.from.vguid
    }
    if (opts.log !== undefined) await fs.replay(opts.log, opts.version?.root, opts.from?.root)
    return fs
  }

  /**
   * `from`: the version a `from` open starts the tree from. When the head's own root is lost
   * (its vv with it), the log's counter resumes from `from`'s: new inode numbers come from the
   * counter (src/fs/ino.ts), so it must stay above every number in the tree.
   */
  private async replay (log: WriterLog, v: VersionRoot | undefined, from?: VersionRoot): Promise<void> {
    let records = log.replayed
    if (v?.log !== undefined) {
      const at = records.findIndex(r => r.cid.equals(v.log))
      if (at >= 0) records = records.slice(at + 1)
    }
    if (records.length === 0) {
      const at = v?.vv !== undefined ? v : from
      if (log.replayed.length === 0 && at?.vv !== undefined) {
        const self = Buffer.from(log.writer).toString('hex')
        log.resumeAfter(at.log ?? await this.ownLastRecord(at, log.writer), at.vv[self] ?? 0, at.vv)
      }
      return
    }
    // Opened at a merge (issue 12) with records of its own not in it: what follows has seen both.
    if (v?.vv !== undefined) log.observe(v.vv)
    // Records name inodes by number, so everything they may touch must be in memory first.
    await this.loadAll()
    for (const r of records) {
      const op = r.record.op
      let why = await this.replayBlocker(op)
      if (why === undefined) {
        try {
          await this.apply(op)
          if (this.lineage && isContentOp(op)) this.node(op.ino).last = recordId(r.record.writer, r.record.n)
          this.unfolded++
          continue
        } catch (err) {
          // A record that no longer applies (e.g. a write to a file unlinked before the crash)
          // changes nothing reachable; skipping it is what the live system would have shown.
          if (!(err instanceof ReefError)) throw err
          why = err.message
        }
      }
      this.replaySkipped++
      this.warn(`log replay: skipped record ${r.record.n} (${describeOp(op)}): ${why}`)
    }
  }

  /**
   * This writer's newest record in a merged version (which names no record of its own): the
   * `log` of the parent that is this writer's head at the counter the merge holds of it. Its
   * next record chains to it, so its log stays one chain through every merge it adopts.
   */
  private async ownLastRecord (v: VersionRoot, writer: Uint8Array): Promise<CID | undefined> {
    const self = Buffer.from(writer).toString('hex')
    const n = v.vv?.[self]
    if (n === undefined) return undefined
    for (const p of v.parents) {
      try {
        const root = decodeVersion(await this.store.get(p))
        if (Buffer.compare(root.author, writer) === 0 && root.vv?.[self] === n && root.log !== undefined) return root.log
      } catch (err) {
        if (!isDamage(err)) throw err
      }
    }
    return undefined
  }

  /**
   * Why a logged op cannot apply to the state as loaded, checked before anything changes (apply
   * may change state before it meets a damaged directory); undefined if nothing stands in its way.
   */
  private async replayBlocker (op: Op): Promise<string | undefined> {
    const unknown = (what: string, ino: number): string => `${what} ${ino} is not in the tree (removed before the crash` +
      (this.damaged.size > 0 ? `, or inside a damaged directory: ${this.damaged.size} found)` : ')')
    const dirs = 'newParent' in op ? [op.parent, op.newParent] : 'parent' in op ? [op.parent] : []
    for (const ino of dirs) {
      const d = this.inodes.get(ino)
      if (d === undefined) return unknown('directory', ino)
      try {
        await this.children(d)
      } catch (err) {
        if (isDamage(err)) return err.message
        throw err
      }
    }
    if ('ino' in op && op.ino !== undefined) {
      const creates = op.op === 'create' || op.op === 'mkdir' || op.op === 'symlink' || op.op === 'mknod' || op.op === 'attach'
      if (creates && this.inodes.has(op.ino)) return `inode ${op.ino} already exists`
      if (!creates && !this.inodes.has(op.ino)) return unknown('inode', op.ino)
    }
    return undefined
  }

  /** Loads every directory of the tree (used before replaying a log); damaged ones are skipped. */
  async loadAll (): Promise<void> {
    const stack = [this.inodes.get(ROOT_INO) as Inode]
    while (stack.length > 0) {
      const d = stack.pop() as Inode
      let kids: Map<string, number>
      try {
        kids = await this.children(d)
      } catch (err) {
        if (isDamage(err)) continue
        throw err
      }
      for (const ino of kids.values()) {
        const c = this.inodes.get(ino)
        if (c?.kind === 'dir') stack.push(c)
      }
    }
  }

  // ---- reading ---------------------------------------------------------------------------

  node (ino: number): Inode {
    const n = this.inodes.get(ino)
    if (n === undefined) throw posix('ENOENT', `no inode ${ino}`)
    return n
  }

  get root (): Inode { return this.node(ROOT_INO) }

  /**
   * Children of a directory (name key -> ino), loading them from its tree on first use. A tree
   * that cannot be read makes the directory damaged (DAMAGED, EIO through the mount), not the
   * file system: the next call tries again, so a block that arrives later heals it.
   */
  async children (dir: Inode): Promise<Map<string, number>> {
    if (dir.children !== undefined) return dir.children
    if (dir.kind !== 'dir') throw posix('ENOTDIR', `inode ${dir.ino} is not a directory`)
    if (dir.loading === undefined) {
      dir.loading = this.loadDir(dir).finally(() => { dir.loading = undefined })
    }
    return await dir.loading
  }

  /**
   * Reads the whole tree (and the link-table records of its hard links) before any inode is
   * made, so a directory that fails part-way leaves nothing behind, and is never dirty: a
   * damaged directory keeps its old tree link at every fold (nothing in it is lost).
   */
  private async loadDir (dir: Inode): Promise<Map<string, number>> {
    const map = new Map<string, number>()
    if (dir.dirBase !== undefined) {
      // Reads are sequential, so the block that failed is the last one asked for.
      let last: CID = dir.dirBase
      const store: BlockGetter = { get: async cid => { last = cid; return await this.store.get(cid) } }
      const read: Array<{ e: Entry, t?: Entry }> = []
      try {
        for await (const e of new DirReader(dir.dirBase, store).entries()) read.push({ e, t: await this.tableEntry(e, store) })
      } catch (err) {
        if (!isDamage(err)) throw err
        throw this.damage(dir, last, err)
      }
      for (const { e, t } of read) map.set(nameKey(e.name), this.inodeFor(e, dir, t).ino)
    }
    this.damaged.delete(dir.ino)
    if (dir.children === undefined) dir.children = map
    return dir.children
  }

  /** The link-table record of a hard-linked entry whose inode is not in memory yet. */
  private async tableEntry (e: Entry, store: BlockGetter): Promise<Entry | undefined> {
    if (e.linked !== true || e.ino === undefined || this.inodes.has(e.ino)) return undefined
    if (this.tableBase === undefined) throw ReefError.badEncoding(`entry ${Buffer.from(e.name).toString()}: linked entry without a link table`)
    const t = await new DirReader(this.tableBase, store).lookup(linkTableKey(e.ino))
    if (t === undefined) throw ReefError.badEncoding(`entry ${Buffer.from(e.name).toString()}: link table lacks inode ${e.ino}`)
    return t
  }

  private inodeFor (e: Entry, dir: Inode, t: Entry | undefined): Inode {
    if (e.ino !== undefined) {
      const known = this.inodes.get(e.ino)
      if (known !== undefined) return known
    }
    let n: Inode
    if (t !== undefined && e.ino !== undefined) {
      n = Inode.fromEntry(e.ino, t)
      n.inTable = true
    } else {
      // Every entry reef writes carries an ino; one without (a foreign tree) gets the next free
      // one, and its directory is rewritten at the next fold so the number sticks.
      const ino = e.ino ?? this.nextIno++
      if (e.ino === undefined) this.markDirDirty(dir.ino)
      n = Inode.fromEntry(ino, e)
      n.parent = dir.ino
    }
    this.bumpLegacy(n.ino)
    this.inodes.set(n.ino, n)
    return n
  }

  /** Records a damaged directory, reports it once per block, and gives the error its readers get. */
  private damage (dir: Inode, block: CID, err: ReefError): ReefError {
    const path = this.pathOf(dir)
    const guid = block.toString()
    this.damaged.set(dir.ino, { path, guid, code: err.code, message: err.message })
    this.dirtyDirs.delete(dir.ino)
    const key = `${dir.ino} ${guid}`
    if (!this.reported.has(key)) {
      this.reported.add(key)
      this.warn(`damaged directory ${path}: block ${guid} ${DAMAGE_WORD[err.code] ?? 'is unreadable'} (${err.message} [${err.code}]); ` +
        'it answers EIO, the rest is served, and its stored tree is kept as it is')
    }
    return new ReefError('DAMAGED', `directory ${path} is damaged: block ${guid} ${DAMAGE_WORD[err.code] ?? 'is unreadable'}`, err)
  }

  /** A loaded inode's path, for messages ("?" where a name cannot be found). */
  pathOf (n: Inode): string {
    const names: string[] = []
    for (let cur = n, guard = 0; cur.ino !== ROOT_INO && guard < 4096; guard++) {
      const parent = this.inodes.get(cur.parent)
      let name = '?'
      for (const [k, ino] of parent?.children ?? []) if (ino === cur.ino) { name = Buffer.from(keyName(k)).toString(); break }
      names.push(name)
      if (parent === undefined) break
      cur = parent
    }
    return '/' + names.reverse().join('/')
  }

  async lookup (dir: Inode, name: Uint8Array): Promise<Inode | undefined> {
    if (dir.kind !== 'dir') throw posix('ENOTDIR', `inode ${dir.ino} is not a directory`)
    const ino = (await this.children(dir)).get(nameKey(name))
    return ino === undefined ? undefined : this.inodes.get(ino)
  }

  /** Resolves an absolute path ("/a/b") without following a final symlink. */
  async resolve (path: string | Uint8Array): Promise<Inode> {
    const p = typeof path === 'string' ? enc.encode(path) : path
    let cur = this.root
    let start = 0
    for (let i = 0; i <= p.length; i++) {
      if (i === p.length || p[i] === 0x2f) {
        if (i > start) {
          const name = p.subarray(start, i)
          if (cur.kind !== 'dir') throw posix('ENOTDIR', 'a path component is not a directory')
          if (name.length > 255) throw posix('ENAMETOOLONG', 'a path component exceeds 255 bytes')
          const next = await this.lookup(cur, name)
          if (next === undefined) throw posix('ENOENT', Buffer.from(p).toString())
          cur = next
        }
        start = i + 1
      }
    }
    return cur
  }

  getattr (ino: number): Attr { return this.node(ino).attr() }

  async readdir (dir: Inode): Promise<Array<{ name: Uint8Array, ino: number }>> {
    const out: Array<{ name: Uint8Array, ino: number }> = []
    for (const [k, ino] of await this.children(dir)) out.push({ name: keyName(k), ino })
    return out
  }

  readlink (n: Inode): Uint8Array {
    if (n.kind !== 'symlink' || n.target === undefined) throw posix('EINVAL', 'not a symlink')
    return n.target
  }

  /** Reads file content: dirty pages first, then the base tree, zeros past both. */
  async read (n: Inode, offset: number, length: number): Promise<Uint8Array> {
    if (n.kind === 'dir') throw posix('EISDIR', 'read of a directory')
    if (n.kind !== 'file') throw posix('EINVAL', 'read of a non-file')
    const end = Math.min(n.size, offset + length)
    if (offset >= end) return new Uint8Array(0)
    const out = new Uint8Array(end - offset)
    let pos = offset
    while (pos < end) {
      const p = Math.floor(pos / PAGE)
      const page = n.pages?.get(p)
      if (page !== undefined) {
        const to = Math.min(end, (p + 1) * PAGE)
        out.set(page.subarray(pos - p * PAGE, to - p * PAGE), pos - offset)
        pos = to
        continue
      }
      // Extend over consecutive non-dirty pages and read them from the base in one go.
      let to = Math.min(end, (p + 1) * PAGE)
      while (to < end && n.pages?.has(Math.floor(to / PAGE)) !== true) to = Math.min(end, to + PAGE)
      const baseEnd = Math.min(to, n.baseLimit)
      if (pos < baseEnd) {
        const r = n.baseReader(this.store)
        if (r !== undefined) out.set(await r.read(pos, baseEnd - pos), pos - offset)
        n.zeros?.mask(out.subarray(pos - offset, baseEnd - offset), pos)
      }
      pos = to
    }
    return out
  }

  getxattr (n: Inode, name: string): Uint8Array {
    const v = n.xattrs.get(name)
    if (v === undefined) throw posix('ENODATA', `no attribute ${name}`)
    return v
  }

  listxattr (n: Inode): string[] { return [...n.xattrs.keys()] }

  // ---- mutations: validate, log, apply ---------------------------------------------------

  /** Runs mutations one at a time (and never during a fold). */
  private exclusive<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn)
    this.chain = run.catch(() => {})
    return run
  }

  get readOnly (): boolean { return this.log === undefined }
  /** Records applied since the last fold. */
  get pending (): number { return this.unfolded }

  private async commit (op: Op, dataDigest?: Uint8Array): Promise<void> {
    if (this.log === undefined) throw posix('EROFS', 'read-only file system')
    const n = this.lineage && isContentOp(op) ? this.node(op.ino) : undefined
    if (n !== undefined) op = { ...op, after: n.last ?? NO_RECORD } as Op
    const { record } = this.log.append(op, undefined, dataDigest)
    this.unfolded++
    await this.apply(op)
    if (n !== undefined) n.last = recordId(record.writer, record.n)
  }

  private async dirFor (ino: number, name: Uint8Array): Promise<{ dir: Inode, existing?: Inode }> {
    const dir = this.node(ino)
    if (dir.kind !== 'dir') throw posix('ENOTDIR', `inode ${ino} is not a directory`)
    checkName(name)
    return { dir, existing: await this.lookup(dir, name) }
  }

  /**
   * The number of the inode the next record creates: this writer's prefix and that record's
   * counter (src/fs/ino.ts), unique across every writer whose prefix differs.
   */
  private newIno (): number {
    if (this.log === undefined || this.inoPrefix === undefined) throw posix('EROFS', 'read-only file system')
    const ino = writerIno(this.inoPrefix, this.log.counter + 1)
    if (ino === undefined) throw posix('ENOSPC', `writer log counter ${this.log.counter} is past the inode-number range`)
    // Cannot happen while the log's counter only grows (it resumes from every version's vv).
    if (this.inodes.has(ino)) throw new ReefError('LOG_CORRUPT', `inode ${ino} for log record ${this.log.counter + 1} exists already: the log counter went back`)
    return ino
  }

  /** `nextIno` numbers foreign entries that carry none; it stays in the legacy range. */
  private bumpLegacy (ino: number): void {
    if (ino < LEGACY_LIMIT && ino >= this.nextIno) this.nextIno = ino + 1
  }

  private async make (kind: Kind, parent: number, name: Uint8Array, mode: number, cred: Cred, target?: Uint8Array): Promise<Inode> {
    return await this.exclusive(async () => {
      const { dir, existing } = await this.dirFor(parent, name)
      if (existing !== undefined) throw posix('EEXIST', Buffer.from(name).toString())
      const ino = this.newIno()
      const time = this.now()
      const owner = ownerIn(dir, kind, mode, cred)
      const base = { parent, name, ino, uid: cred.uid, gid: owner.gid, time }
      if (kind === 'symlink') {
        if (target === undefined || target.length === 0) throw posix('ENOENT', 'empty symlink target')
        if (target.length > 4095) throw posix('ENAMETOOLONG', 'symlink target exceeds 4095 bytes')
        await this.commit({ op: 'symlink', ...base, target })
      } else {
        await this.commit({ op: kind === 'dir' ? 'mkdir' : 'create', ...base, mode: owner.mode })
      }
      return this.node(ino)
    })
  }

  async create (parent: number, name: Uint8Array, mode: number, cred: Cred): Promise<Inode> {
    return await this.make('file', parent, name, mode, cred)
  }

  async mkdir (parent: number, name: Uint8Array, mode: number, cred: Cred): Promise<Inode> {
    return await this.make('dir', parent, name, mode, cred)
  }

  async symlink (parent: number, name: Uint8Array, target: Uint8Array, cred: Cred): Promise<Inode> {
    return await this.make('symlink', parent, name, 0o777, cred, target)
  }

  /**
   * mknod(2): `mode` carries the file type (S_IFMT bits) and the permission bits. A regular
   * file is created as by create (rdev ignored, as Linux does); a FIFO, socket or device node
   * becomes an entry of its kind, with rdev kept for devices only. Whether the caller may create
   * a device (CAP_MKNOD) is the kernel's check, made before a request reaches a FUSE file system.
   */
  async mknod (parent: number, name: Uint8Array, mode: number, rdev: number, cred: Cred): Promise<Inode> {
    const type = mode & S_IFMT
    const kind = type === 0 ? 'file' : kindOfType(type)
    if (kind === 'dir') throw posix('EPERM', 'mknod of a directory')
    if (kind === undefined || kind === 'symlink') throw posix('EINVAL', `mknod of file type 0${type.toString(8)}`)
    if (kind === 'file') return await this.make('file', parent, name, mode, cred)
    if (!Number.isSafeInteger(rdev) || rdev < 0) throw posix('EINVAL', 'bad device number')
    return await this.exclusive(async () => {
      const { dir, existing } = await this.dirFor(parent, name)
      if (existing !== undefined) throw posix('EEXIST', Buffer.from(name).toString())
      const ino = this.newIno()
      const owner = ownerIn(dir, kind, mode, cred)
      await this.commit({
        op: 'mknod', parent, name, ino, kind, mode: owner.mode, rdev: isDevice(kind) ? rdev : 0, uid: cred.uid, gid: owner.gid, time: this.now()
      })
      return this.node(ino)
    })
  }

  /**
   * Writes `data` at `offset`; returns how many bytes were written. `dataDigest`, when given, is
   * the sha256 of `data` (computed by the caller, off this thread). As Linux does at a file
   * system's maximum file size (s_maxbytes), a write that straddles MAX_FILE_SIZE writes what fits
   * and returns that short count; one that starts at or past it fails with EFBIG.
   */
  async write (ino: number, offset: number, data: Uint8Array, dataDigest?: Uint8Array): Promise<number> {
    return await this.exclusive(async () => {
      const n = this.node(ino)
      if (n.kind === 'dir') throw posix('EISDIR', 'write to a directory')
      if (n.kind !== 'file') throw posix('EINVAL', 'write to a non-file')
      if (!Number.isSafeInteger(offset) || offset < 0) throw posix('EINVAL', 'bad offset')
      if (data.length === 0) return 0
      if (offset >= MAX_FILE_SIZE) throw posix('EFBIG', 'write at or past the maximum file size')
      if (offset + data.length > MAX_FILE_SIZE) {
        data = data.subarray(0, MAX_FILE_SIZE - offset)
        dataDigest = undefined
      }
      // Log records are blocks (at most MAX_BLOCK_SIZE): large writes become several records.
      const time = this.now()
      for (let done = 0; done < data.length; done += MAX_WRITE_RECORD) {
        await this.commit({ op: 'write', ino, offset: offset + done, data: data.subarray(done, done + MAX_WRITE_RECORD), time }, data.length <= MAX_WRITE_RECORD ? dataDigest : undefined)
      }
      return data.length
    })
  }

  async truncate (ino: number, size: number): Promise<void> {
    await this.exclusive(async () => {
      const n = this.node(ino)
      if (n.kind === 'dir') throw posix('EISDIR', 'truncate of a directory')
      if (n.kind !== 'file') throw posix('EINVAL', 'truncate of a non-file')
      if (!Number.isSafeInteger(size) || size < 0) throw posix('EINVAL', 'bad size')
      if (size > MAX_FILE_SIZE) throw posix('EFBIG', 'size past the maximum file size')
      await this.commit({ op: 'truncate', ino, size, time: this.now() })
    })
  }

  /**
   * fallocate(2) with Linux's FALLOC_FL_* mode bits (src/fs/fallocate.ts): mode 0 grows the size
   * to offset+length, KEEP_SIZE keeps it; PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE make the range
   * read as zeros (ZERO_RANGE grows the size unless KEEP_SIZE). Nothing is written: reef has no
   * blocks to reserve, and a fold stores the range as hole links where it spans whole chunks.
   */
  async fallocate (ino: number, mode: number, offset: number, length: number): Promise<void> {
    await this.exclusive(async () => {
      checkFallocate(this.node(ino).kind, mode, offset, length)
      await this.commit({ op: 'fallocate', ino, mode, offset, length, time: this.now() })
    })
  }

  async unlink (parent: number, name: Uint8Array): Promise<void> {
    await this.exclusive(async () => {
      const { existing } = await this.dirFor(parent, name)
      if (existing === undefined) throw posix('ENOENT', Buffer.from(name).toString())
      if (existing.kind === 'dir') throw posix('EISDIR', 'unlink of a directory')
      await this.commit({ op: 'unlink', parent, name, time: this.now(), ino: existing.ino })
    })
  }

  async rmdir (parent: number, name: Uint8Array): Promise<void> {
    await this.exclusive(async () => {
      const { existing } = await this.dirFor(parent, name)
      if (existing === undefined) throw posix('ENOENT', Buffer.from(name).toString())
      if (existing.kind !== 'dir') throw posix('ENOTDIR', 'rmdir of a non-directory')
      if ((await this.children(existing)).size > 0) throw posix('ENOTEMPTY', 'directory not empty')
      await this.commit({ op: 'rmdir', parent, name, time: this.now(), ino: existing.ino })
    })
  }

  /** `flags`: renameat2's RENAME_NOREPLACE (1: EEXIST if newName exists) or RENAME_EXCHANGE
   * (2: both names must exist, and swap), decided under the lock, so atomically for everyone. */
  async rename (parent: number, name: Uint8Array, newParent: number, newName: Uint8Array, flags = 0): Promise<void> {
    if (flags !== 0 && flags !== RENAME_NOREPLACE && flags !== RENAME_EXCHANGE) throw posix('EINVAL', `rename flags ${flags}`)
    await this.exclusive(async () => {
      const { dir: from, existing: src } = await this.dirFor(parent, name)
      if (src === undefined) throw posix('ENOENT', Buffer.from(name).toString())
      const { dir: dst, existing: target } = await this.dirFor(newParent, newName)
      if (flags === RENAME_NOREPLACE && target !== undefined) throw posix('EEXIST', Buffer.from(newName).toString())
      if (flags === RENAME_EXCHANGE) {
        if (target === undefined) throw posix('ENOENT', Buffer.from(newName).toString())
        if (target === src) return
        this.refuseCycle(src, dst)
        this.refuseCycle(target, from)
        await this.commit({ op: 'rename', parent, name, newParent, newName, time: this.now(), exchange: true, ino: src.ino, target: target.ino })
        return
      }
      if (target === src) return
      this.refuseCycle(src, dst)
      if (target !== undefined) {
        if (target.kind === 'dir' && src.kind !== 'dir') throw posix('EISDIR', 'rename of a non-directory over a directory')
        if (target.kind !== 'dir' && src.kind === 'dir') throw posix('ENOTDIR', 'rename of a directory over a non-directory')
        if (target.kind === 'dir' && (await this.children(target)).size > 0) throw posix('ENOTEMPTY', 'target directory not empty')
      }
      const op: Op = { op: 'rename', parent, name, newParent, newName, time: this.now(), ino: src.ino }
      if (target !== undefined) op.target = target.ino
      await this.commit(op)
    })
  }

  /** Moving a directory into its own subtree would detach it from the root. */
  private refuseCycle (moving: Inode, into: Inode): void {
    if (moving.kind !== 'dir') return
    for (let a: Inode | undefined = into; a !== undefined && a.ino !== ROOT_INO; a = this.inodes.get(a.parent)) {
      if (a === moving) throw posix('EINVAL', 'cannot move a directory into itself')
    }
  }

  async link (ino: number, newParent: number, newName: Uint8Array): Promise<Inode> {
    return await this.exclusive(async () => {
      const n = this.node(ino)
      if (n.kind === 'dir') throw posix('EPERM', 'hard link to a directory')
      const { existing } = await this.dirFor(newParent, newName)
      if (existing !== undefined) throw posix('EEXIST', Buffer.from(newName).toString())
      if (n.nlink >= 65000) throw posix('EMLINK', 'too many links')
      await this.commit({ op: 'link', ino, parent: newParent, name: newName, time: this.now() })
      return n
    })
  }

  async setattr (ino: number, a: { mode?: number, uid?: number, gid?: number, atime?: bigint, mtime?: bigint }): Promise<void> {
    await this.exclusive(async () => {
      this.node(ino)
      const op: Op = { op: 'setattr', ino, time: this.now() }
      if (a.mode !== undefined) op.mode = a.mode & 0o7777
      if (a.uid !== undefined && a.uid !== -1 && a.uid !== 0xffffffff) op.uid = a.uid
      if (a.gid !== undefined && a.gid !== -1 && a.gid !== 0xffffffff) op.gid = a.gid
      if (a.atime !== undefined) op.atime = a.atime
      if (a.mtime !== undefined) op.mtime = a.mtime
      await this.commit(op)
    })
  }

  async setxattr (ino: number, name: string, value: Uint8Array, flags = 0): Promise<void> {
    await this.exclusive(async () => {
      const n = this.node(ino)
      if (!name.startsWith('user.') || name.length <= 5) throw posix('ENOTSUP', `xattr namespace of ${name}`)
      if (name.length > 255) throw posix('ERANGE', 'xattr name too long')
      if (value.length > XATTR_SIZE_MAX) throw posix('E2BIG', 'xattr value too large')
      if ((flags & XATTR_CREATE) !== 0 && n.xattrs.has(name)) throw posix('EEXIST', name)
      if ((flags & XATTR_REPLACE) !== 0 && !n.xattrs.has(name)) throw posix('ENODATA', name)
      await this.commit({ op: 'setattr', ino, time: this.now(), xattrName: name, xattrValue: value })
    })
  }

  async removexattr (ino: number, name: string): Promise<void> {
    await this.exclusive(async () => {
      const n = this.node(ino)
      if (!n.xattrs.has(name)) throw posix('ENODATA', name)
      await this.commit({ op: 'setattr', ino, time: this.now(), xattrName: name, xattrRemove: true })
    })
  }

  open (n: Inode): void { n.openCount++ }

  /**
   * Forgets the loaded children of a clean directory (they load again from its tree at the next
   * lookup): how the memory the kernel gives back with FORGET is given back here too. A child
   * that is open or held, has unfolded changes, is hard-linked (the link table owns it) or is a
   * directory with loaded children stays. Returns how many inodes went.
   */
  async unload (dir: Inode): Promise<number> {
    return await this.exclusive(async () => {
      if (dir.kind !== 'dir' || dir.children === undefined || dir.loading !== undefined || dir.dirBase === undefined) return 0
      if (this.dirtyDirs.has(dir.ino) || this.damaged.has(dir.ino) || !this.inodes.has(dir.ino)) return 0
      let gone = 0
      for (const ino of dir.children.values()) {
        const c = this.inodes.get(ino)
        if (c === undefined || c.openCount > 0 || c.inTable || c.pages !== undefined || c.contentDirty || this.dirtyFiles.has(ino)) continue
        if (c.kind === 'dir' && (c.children !== undefined || this.dirtyDirs.has(ino) || this.damaged.has(ino))) continue
        this.inodes.delete(ino)
        gone++
      }
      dir.children = undefined
      return gone
    })
  }

  release (n: Inode): void {
    n.openCount = Math.max(0, n.openCount - 1)
    if (n.openCount === 0 && n.nlink === 0) {
      this.forget(n)
      return
    }
    // The reader's cached tree nodes and chunks (~5 KiB even for a tiny file) would otherwise
    // stay with every inode ever read for as long as something holds it, and the mount holds
    // every inode the kernel does (reading 100,000 small files left 864 MiB of heap, not 401).
    // Dropped at every release: another descriptor's next read makes a new reader.
    n.dropReader()
  }

  /** Makes every appended record durable (fdatasync of the log). */
  sync (): void { this.log?.sync() }

  // ---- what a merge (src/merge) needs besides apply; no log, so never on a writer's tree ---

  /** One name of a loaded inode: its parent's entry, or for a hard-linked one the first found. */
  where (ino: number): { dir: Inode, name: Uint8Array } | undefined {
    const n = this.inodes.get(ino)
    if (n === undefined || n.ino === ROOT_INO) return undefined
    const dirs = n.inTable ? [...this.inodes.values()].filter(d => d.kind === 'dir') : [this.inodes.get(n.parent)]
    for (const d of dirs) {
      for (const [k, i] of d?.children ?? []) if (i === ino && d !== undefined) return { dir: d, name: keyName(k) }
    }
    return undefined
  }

  /** Whether `ino` is `ancestor` or below it (loaded parents only). */
  within (ino: number, ancestor: number): boolean {
    for (let a = this.inodes.get(ino), guard = 0; a !== undefined && guard < 1 << 20; a = this.inodes.get(a.parent), guard++) {
      if (a.ino === ancestor) return true
      if (a.ino === ROOT_INO) return false
    }
    return false
  }

  /** Adds a new inode made from a stored entry (a conflict copy) under `name` in `dir`. */
  async place (dir: Inode, name: Uint8Array, ino: number, e: Entry): Promise<Inode> {
    if (this.log !== undefined) throw new ReefError('BAD_INPUT', 'place is for a merge tree, not a writer\'s')
    if (this.inodes.has(ino)) throw new ReefError('BAD_INPUT', `inode ${ino} exists already`)
    if (await this.lookup(dir, name) !== undefined) throw posix('EEXIST', Buffer.from(name).toString())
    const n = Inode.fromEntry(ino, { ...e, nlink: undefined })
    if (n.kind === 'dir') throw new ReefError('BAD_INPUT', 'place of a directory')
    this.inodes.set(ino, n)
    await this.attachChild(dir, name, n, n.ctime)
    if (n.kind === 'file') this.dirtyFiles.add(ino)
    return n
  }

  /** Sets or clears an inode's conflict mark (CONFLICT_XATTR) without touching its times. */
  markConflict (n: Inode, value: Uint8Array | undefined): void {
    if (value === undefined) n.removeXattr(CONFLICT_XATTR)
    else n.setXattr(CONFLICT_XATTR, value)
    this.markEntryDirty(n)
  }

  // ---- apply: the single place where state changes (live and on replay) -----------------

  private markDirDirty (ino: number): void {
    // A damaged directory is never rebuilt (it would be written from what could not be read).
    while (ino !== 0 && !this.dirtyDirs.has(ino) && !this.damaged.has(ino)) {
      this.dirtyDirs.add(ino)
      ino = this.inodes.get(ino)?.parent ?? 0
    }
  }

  private markEntryDirty (n: Inode): void {
    if (n.ino === ROOT_INO) this.markDirDirty(ROOT_INO)
    else if (n.inTable) this.tableDirty = true
    else this.markDirDirty(n.parent)
  }

  private forget (n: Inode): void {
    this.inodes.delete(n.ino)
    this.dirtyFiles.delete(n.ino)
    if (n.pages !== undefined) {
      this.dirtyBytes -= pagesBytes(n.pages)
      for (const page of n.pages.values()) freePage(page)
      n.pages = undefined
    }
    if (n.inTable) {
      this.tableDropped.add(n.ino)
      this.tableDirty = true
    }
  }

  private async detach (dir: Inode, name: Uint8Array, time: bigint): Promise<Inode> {
    const kids = await this.children(dir)
    const key = nameKey(name)
    const ino = kids.get(key)
    if (ino === undefined) throw posix('ENOENT', Buffer.from(name).toString())
    const n = this.node(ino)
    kids.delete(key)
    dir.size = kids.size
    dir.mtime = dir.ctime = time
    this.markDirDirty(dir.ino)
    if (n.kind === 'dir') {
      dir.nlink--
      dir.subdirs--
    }
    return n
  }

  private async attachChild (dir: Inode, name: Uint8Array, n: Inode, time: bigint): Promise<void> {
    const kids = await this.children(dir)
    kids.set(nameKey(name), n.ino)
    dir.size = kids.size
    dir.mtime = dir.ctime = time
    if (n.kind === 'dir') {
      dir.nlink++
      dir.subdirs++
    }
    if (!n.inTable) n.parent = dir.ino
    this.markDirDirty(dir.ino)
  }

  private drop (n: Inode, time: bigint): void {
    n.nlink = n.kind === 'dir' ? 0 : n.nlink - 1
    n.ctime = time
    if (n.nlink > 0) {
      this.markEntryDirty(n)
      return
    }
    if (n.openCount === 0) this.forget(n)
    else if (n.inTable) this.tableDirty = true
  }

  async apply (op: Op): Promise<void> {
    switch (op.op) {
      case 'create':
      case 'mkdir':
      case 'symlink': {
        const dir = this.node(op.parent)
        const kind: Kind = op.op === 'create' ? 'file' : op.op === 'mkdir' ? 'dir' : 'symlink'
        const n = new Inode(op.ino, kind, op.op === 'symlink' ? 0o777 : op.mode, op.uid, op.gid, op.time)
        if (kind === 'dir') n.children = new Map()
        if (op.op === 'symlink') {
          n.target = op.target
          n.size = op.target.length
        }
        this.inodes.set(n.ino, n)
        this.bumpLegacy(n.ino)
        await this.attachChild(dir, op.name, n, op.time)
        if (kind === 'dir') this.markDirDirty(n.ino)
        if (kind === 'file') this.dirtyFiles.add(n.ino)
        return
      }
      case 'mknod': {
        const n = new Inode(op.ino, op.kind, op.mode, op.uid, op.gid, op.time)
        if (isDevice(op.kind)) n.rdev = op.rdev
        this.inodes.set(n.ino, n)
        this.bumpLegacy(n.ino)
        await this.attachChild(this.node(op.parent), op.name, n, op.time)
        return
      }
      case 'write': {
        const n = this.node(op.ino)
        await this.applyWrite(n, op.offset, op.data)
        n.mtime = n.ctime = op.time
        this.markEntryDirty(n)
        return
      }
      case 'truncate': {
        const n = this.node(op.ino)
        this.applyTruncate(n, op.size)
        n.mtime = n.ctime = op.time
        this.markEntryDirty(n)
        return
      }
      case 'fallocate': {
        const n = this.node(op.ino)
        checkFallocate(n.kind, op.mode, op.offset, op.length)
        this.applyFallocate(n, op.mode, op.offset, op.length)
        // As ext4 and tmpfs do for every mode, even one that changes nothing else.
        n.mtime = n.ctime = op.time
        this.markEntryDirty(n)
        return
      }
      case 'unlink':
      case 'rmdir': {
        const n = await this.detach(this.node(op.parent), op.name, op.time)
        this.drop(n, op.time)
        return
      }
      case 'rename': {
        const src = this.node(op.parent)
        const dst = this.node(op.newParent)
        if (op.exchange === true) {
          const a = await this.detach(src, op.name, op.time)
          const b = await this.detach(dst, op.newName, op.time)
          a.ctime = b.ctime = op.time
          await this.attachChild(dst, op.newName, a, op.time)
          await this.attachChild(src, op.name, b, op.time)
          this.markEntryDirty(a)
          this.markEntryDirty(b)
          return
        }
        const target = await this.lookup(dst, op.newName)
        const n = await this.detach(src, op.name, op.time)
        if (target !== undefined && target !== n) {
          await this.detach(dst, op.newName, op.time)
          this.drop(target, op.time)
        }
        n.ctime = op.time
        // Renaming a conflict copy (or a file whose rename lost) resolves its conflict.
        if (n.xattrs.has(CONFLICT_XATTR)) n.removeXattr(CONFLICT_XATTR)
        await this.attachChild(dst, op.newName, n, op.time)
        this.markEntryDirty(n)
        return
      }
      case 'link': {
        const n = this.node(op.ino)
        if (!n.inTable) {
          // The inode moves to the link table; its old entry becomes a reference to it.
          this.markDirDirty(n.parent)
          n.inTable = true
          n.parent = 0
        }
        n.nlink++
        n.ctime = op.time
        this.tableDirty = true
        await this.attachChild(this.node(op.parent), op.name, n, op.time)
        return
      }
      case 'setattr': {
        const n = this.node(op.ino)
        if (op.mode !== undefined) n.mode = op.mode & 0o7777
        if (op.uid !== undefined) n.uid = op.uid
        if (op.gid !== undefined) n.gid = op.gid
        if (op.atime !== undefined) n.atime = op.atime
        if (op.mtime !== undefined) n.mtime = op.mtime
        if (op.xattrName !== undefined) {
          if (op.xattrRemove === true) n.removeXattr(op.xattrName)
          else if (op.xattrValue !== undefined) n.setXattr(op.xattrName, op.xattrValue)
        }
        n.ctime = op.time
        this.markEntryDirty(n)
        return
      }
      case 'attach':
        throw posix('ENOTSUP', 'attach records are not applied by this version')
    }
  }

  /** Dirty page `p` of `n`, at least `upTo` bytes long (a small first page grows to that). */
  private async page (n: Inode, p: number, whole: boolean, upTo = PAGE): Promise<Uint8Array> {
    if (n.pages === undefined) n.pages = new Map()
    let page = n.pages.get(p)
    if (page !== undefined) return this.grown(n, p, page, upTo)
    // Nothing to copy from a stored base: the first page may start small.
    if (p === 0 && n.baseLimit === 0 && upTo < PAGE) {
      page = smallPage(upTo)
      n.pages.set(p, page)
      this.dirtyBytes += page.length
      return page
    }
    page = allocPage(!whole)
    const start = p * PAGE
    if (!whole && start < n.baseLimit) {
      const r = n.baseReader(this.store)
      if (r !== undefined) page.set(await r.read(start, Math.min(PAGE, n.baseLimit - start)))
      n.zeros?.mask(page, start)
    }
    // A concurrent filler may have won while we awaited.
    const raced = n.pages.get(p)
    if (raced !== undefined) {
      freePage(page)
      return this.grown(n, p, raced, upTo)
    }
    n.pages.set(p, page)
    this.dirtyBytes += PAGE
    return page
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

  private async applyWrite (n: Inode, offset: number, data: Uint8Array): Promise<void> {
    const end = offset + data.length
    for (let p = Math.floor(offset / PAGE); p * PAGE < end; p++) {
      const ps = p * PAGE
      const from = Math.max(offset, ps)
      const to = Math.min(end, ps + PAGE)
      const page = await this.page(n, p, offset <= ps && end >= ps + PAGE, to - ps)
      page.set(data.subarray(from - offset, to - offset), from - ps)
    }
    if (end > n.size) n.size = end
    n.markDirty(offset, end)
    this.dirtyFiles.add(n.ino)
  }

  private applyTruncate (n: Inode, size: number): void {
    if (size < n.size) {
      if (n.pages !== undefined) {
        for (const p of [...n.pages.keys()]) {
          const page = n.pages.get(p) as Uint8Array
          if (p * PAGE >= size) {
            freePage(page)
            n.pages.delete(p)
            this.dirtyBytes -= page.length
          }
        }
        const last = n.pages.get(Math.floor(size / PAGE))
        if (last !== undefined) last.fill(0, size % PAGE)
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
  private applyFallocate (n: Inode, mode: number, offset: number, length: number): void {
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
            freePage(page)
            n.pages.delete(p)
            this.dirtyBytes -= page.length
          } else {
            page.fill(0, Math.max(zeroFrom, ps) - ps, Math.min(zeroTo, ps + PAGE) - ps)
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

  // ---- fold: dirty state -> blocks -> version -> signed head -----------------------------

  get dirty (): boolean {
    return this.dirtyDirs.size > 0 || this.dirtyFiles.size > 0 || this.tableDirty || this.unfolded > 0
  }

  /**
   * Folds everything applied so far into a new version. Mutations wait while it runs; reads
   * do not. Returns the new version, or undefined when nothing changed.
   */
  async fold (message?: string, force = false, shape?: FoldShape): Promise<VersionInfo | undefined> {
    return await this.exclusive(async () => {
      // A merge folds a tree it built with no log of its own (its records are the writers').
      const log = shape === undefined ? this.log : undefined
      if (log === undefined && shape === undefined) throw posix('EROFS', 'read-only file system')
      if (!this.dirty && !force) return undefined
      const blocks: Block[] = []
      const emit = (b: Block): void => { blocks.push(b) }
      const put = async (bs: Block[]): Promise<void> => { await this.store.putMany(bs) }

      for (const ino of this.dirtyFiles) {
        const n = this.inodes.get(ino)
        if (n === undefined || n.kind !== 'file' || !n.contentDirty) continue
        const old = n.base !== undefined ? await (n.baseReader(this.store)?.leaves() ?? []) : []
        const oldSize = leavesEnd(old)
        const dirty = n.dirtyRanges()
        // Below baseLimit the base still holds the content; past it (a truncation) it does not.
        if (n.baseLimit < oldSize) dirty.push([n.baseLimit, oldSize])
        const root = await rewriteFile({
          old,
          newSize: n.size,
          dirty,
          read: async (o, l) => await this.read(n, o, l),
          extent: extentsOf(n, old),
          put
        })
        this.dirtyBytes -= pagesBytes(n.pages)
        n.settle(root.cid as CID)
      }

      // Directories are built into `built` and take their new links only once the head has
      // moved: a fold that fails part-way (a block that does not read back, a store error)
      // leaves every directory as it was, still dirty, and the writes in the log.
      const root = this.root
      const built = new Map<Inode, BuiltDir>()
      await this.foldDir(root, '/', emit, built)
      let links = this.tableBase
      if (this.tableDirty) links = await this.foldTable(emit)

      const prev = this.version
      const builtRoot = built.get(root)
      const vroot: VersionRoot = {
        root: builtRoot?.cid ?? root.dirBase as CID,
        rootAttrs: withBuilt(root.toEntry(new Uint8Array(0)), builtRoot),
        parents: shape?.parents ?? this.parents(),
        seq: shape?.seq ?? (prev?.root.seq ?? 0n) + 1n,
        time: shape?.time ?? Date.now(),
        author: shape?.author ?? this.author,
        nextIno: this.nextIno,
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
      if (log !== undefined) for (const b of await log.blocks(this.store)) blocks.push(b)
      const vblock = encodeVersion(vroot)
      checkVersion(vblock.cid, vroot, readBack('version root', vblock.cid, vblock.bytes, decodeVersion))
      blocks.push(vblock)
      await put(blocks)
      log?.sync()
      if (this.commitFn !== undefined) await this.commitFn(vblock, vroot)
      // The version (and its head) are durable: the log up to here is no longer needed.
      log?.checkpoint()
      for (const [dir, b] of built) {
        dir.dirBase = b.cid
        dir.size = b.count
        dir.subdirs = b.subdirs
        dir.nlink = 2 + b.subdirs
      }
      this.version = { vguid: vblock.cid, root: vroot }
      this.startedFrom = undefined
      this.tableBase = links
      this.tableDirty = false
      this.tableDropped.clear()
      this.dirtyDirs.clear()
      this.dirtyFiles.clear()
      this.unfolded = 0
      return this.version
    })
  }

  /**
   * The head first (history follows first parents); a version this mount started from (mount
   * --from) second, so history reaches it when the head is unreadable.
   */
  private parents (): CID[] {
    const out = this.version !== undefined ? [this.version.vguid] : []
    const from = this.startedFrom
    if (from !== undefined && !out.some(p => p.equals(from))) out.push(from)
    return out
  }

  /** Builds the tree of a dirty directory (and of its dirty subdirectories) into `built`. */
  private async foldDir (dir: Inode, path: string, emit: (b: Block) => void, built: Map<Inode, BuiltDir>): Promise<void> {
    if (!this.dirtyDirs.has(dir.ino) && dir.dirBase !== undefined) return
    const entries: Entry[] = []
    let subdirs = 0
    for (const [key, ino] of await this.children(dir)) {
      const n = this.node(ino)
      const name = keyName(key)
      if (n.kind === 'dir') {
        subdirs++
        await this.foldDir(n, path + Buffer.from(name).toString() + '/', emit, built)
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

  private async foldTable (emit: (b: Block) => void): Promise<CID | undefined> {
    const byIno = new Map<number, Entry>()
    if (this.tableBase !== undefined) {
      for await (const e of new DirReader(this.tableBase, this.store).entries()) {
        if (e.ino !== undefined && !this.tableDropped.has(e.ino)) byIno.set(e.ino, e)
      }
    }
    for (const n of this.inodes.values()) {
      if (n.inTable && n.nlink > 0) byIno.set(n.ino, n.toEntry(linkTableKey(n.ino)))
      if (n.inTable && n.nlink === 0) byIno.delete(n.ino)
    }
    if (byIno.size === 0) return undefined
    return buildDir([...byIno.values()].map(e => ({ ...e, name: linkTableKey(e.ino as number) })), emit).cid
  }
}
