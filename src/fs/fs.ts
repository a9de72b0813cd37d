/**
 * The POSIX file-system core, testable without a mount. State is the last version plus the
 * writer log: every mutation is validated, appended to the log as a record, then applied to
 * the in-memory inodes by the same `apply` that replays the log after a crash. `fold` turns
 * the dirty state into new blocks (copy-on-write: changed chunks and the paths to the root),
 * a version root, and a signed head (through the `commit` callback of the composition root).
 *
 * ReefFS is the front: it opens a version, owns the lock (`exclusive`: mutations one at a
 * time, never during a fold's snapshot or settle), makes the POSIX checks of each mutation and logs it (`commit`),
 * and hands the rest to the parts it owns, one concern each:
 * - src/fs/tree.ts: the inode table and directories (loading, damage, lookup, resolve, the
 *   dirty-directory marks, unload and release);
 * - src/fs/pages.ts: file content in memory (dirty pages, reads, writes, truncate, fallocate,
 *   and the dirtyBytes count);
 * - src/fs/links.ts: the hard-link table;
 * - src/fs/apply.ts: `apply`, the single place where state changes (live and on replay);
 * - src/fs/fold.ts: the fold (blocks, version root, head);
 * - src/fs/replay.ts: the replay of the log at open.
 */
import type { CID } from 'multiformats/cid'
import type { Block } from '../block/index.js'
import { ReefError } from '../errors.js'
import { checkName, type Entry, isDevice, type Kind } from '../object/dir.js'
import { MAX_FILE_SIZE } from '../object/file.js'
import type { VersionRoot } from '../object/version.js'
import { isContentOp, type Op, recordId } from '../log/record.js'
import type { WriterLog } from '../log/index.js'
import type { BlockStore } from '../store/types.js'
import { type Attr, Inode, kindOfType, ROOT_INO, S_IFMT } from './inode.js'
import { checkFallocate } from './fallocate.js'
import { inoPrefixOf, writerIno } from './ino.js'
import { apply as applyOp, CONFLICT_XATTR } from './apply.js'
import { type FoldContext, type FoldHooks, fold as foldVersion, type FoldShape, type VersionInfo } from './fold.js'
import { LinkTable } from './links.js'
import { Pages } from './pages.js'
import { replay } from './replay.js'
import { type Core, Tree } from './tree.js'

export { CONFLICT_XATTR } from './apply.js'
export type { FoldShape, VersionInfo } from './fold.js'

export interface Cred { uid: number, gid: number }

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
  /**
   * The log's replayed records stay after they are applied (until its next checkpoint), for a
   * later open of the same log at a merged version (a view's writer, mount/view.ts). Otherwise
   * they go once applied: 100,000 unfolded creates held ~1.5 KiB each until a fold committed.
   */
  keepReplayed?: boolean
}

export const XATTR_CREATE = 1
export const XATTR_REPLACE = 2
export const XATTR_SIZE_MAX = 64 * 1024
export const RENAME_NOREPLACE = 1
export const RENAME_EXCHANGE = 2
/** Data carried by one write record. */
export const MAX_WRITE_RECORD = 1024 * 1024
/** `after` of a change to content no record made (a file as created, or as an older version left it). */
const NO_RECORD = new Uint8Array(0)

const posix = ReefError.posix
const S_ISGID = 0o2000
const nowNs = (): bigint => BigInt(Date.now()) * 1_000_000n

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
  readonly inodes: Map<number, Inode>
  readonly store: BlockStore
  readonly log?: WriterLog
  version?: VersionInfo
  /** Directories whose tree could not be read, by inode (see children). */
  readonly damaged: Tree['damaged']
  /** Log records the replay at open could not apply, each reported through `warn`. */
  replaySkipped = 0
  private readonly tree: Tree
  private readonly pages: Pages
  private readonly links: LinkTable
  /** The three parts, as `apply` and `fold` take them. */
  private readonly core: Core
  private readonly commitFn?: FsOptions['commit']
  private readonly author: Uint8Array
  private readonly now: () => bigint
  private chain: Promise<unknown> = Promise.resolve()
  /** Records applied since the last fold (logged live, or replayed at open). */
  private unfolded = 0
  /** The version a `from` open started from, until the fold that records it. */
  private startedFrom?: CID
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
    this.pages = new Pages(this.store)
    this.links = new LinkTable(this.store)
    this.tree = new Tree(this.store, this.pages, this.links, this.warn)
    this.core = { tree: this.tree, pages: this.pages, links: this.links }
    this.inodes = this.tree.inodes
    this.damaged = this.tree.damaged
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
      fs.tree.dirtyDirs.add(ROOT_INO)
    }
    fs.inodes.set(ROOT_INO, root)
    if (v !== undefined) {
      fs.nextIno = Math.max(v.nextIno, opts.version?.root.nextIno ?? 0, ROOT_INO + 1)
      fs.links.base = v.links
    }
    // Starting from another version is itself a change: the next fold records it as a version,
    // whose second parent is the version it started from.
    if (opts.from !== undefined) {
      fs.tree.dirtyDirs.add(ROOT_INO)
      fs.startedFrom = opts.from.vguid
    }
    if (opts.log !== undefined) {
      const { applied, skipped } = await replay(fs.core, { store: fs.store, lineage: fs.lineage, warn: fs.warn }, opts.log, opts.version?.root, opts.from?.root)
      fs.unfolded += applied
      fs.replaySkipped += skipped
      if (opts.keepReplayed !== true) opts.log.replayed = []
    }
    return fs
  }

  /** The next inode number for a foreign entry that carries none (legacy range, src/fs/ino.ts). */
  get nextIno (): number { return this.tree.nextIno }
  set nextIno (ino: number) { this.tree.nextIno = ino }

  /** Bytes held in dirty pages: the composition root folds early when this grows. */
  get dirtyBytes (): number { return this.pages.dirtyBytes }
  set dirtyBytes (bytes: number) { this.pages.dirtyBytes = bytes }

  /** Loads every directory of the tree (used before replaying a log); damaged ones are skipped. */
  loadAll (): Promise<void> { return this.tree.loadAll() }

  // ---- reading ---------------------------------------------------------------------------

  node (ino: number): Inode { return this.tree.node(ino) }

  get root (): Inode { return this.tree.root }

  /** Children of a directory (name key -> ino), loaded from its tree on first use (see Tree.children). */
  children (dir: Inode): Promise<Map<string, number>> { return this.tree.children(dir) }

  /** A loaded inode's path, for messages ("?" where a name cannot be found). */
  pathOf (n: Inode): string { return this.tree.pathOf(n) }

  lookup (dir: Inode, name: Uint8Array): Promise<Inode | undefined> { return this.tree.lookup(dir, name) }

  /** Resolves an absolute path ("/a/b") without following a final symlink. */
  resolve (path: string | Uint8Array): Promise<Inode> { return this.tree.resolve(path) }

  getattr (ino: number): Attr { return this.node(ino).attr() }

  readdir (dir: Inode): Promise<Array<{ name: Uint8Array, ino: number, key: string }>> { return this.tree.readdir(dir) }

  readlink (n: Inode): Uint8Array {
    if (n.kind !== 'symlink' || n.target === undefined) throw posix('EINVAL', 'not a symlink')
    return n.target
  }

  /** Reads file content: dirty pages first, then the base tree, zeros past both. */
  read (n: Inode, offset: number, length: number): Promise<Uint8Array> { return this.pages.read(n, offset, length) }

  /** The same bytes as the pieces they lie in (views of cached chunks: never modify them). */
  readParts (n: Inode, offset: number, length: number): Promise<Uint8Array[]> { return this.pages.readParts(n, offset, length) }

  getxattr (n: Inode, name: string): Uint8Array {
    const v = n.xattrs.get(name)
    if (v === undefined) throw posix('ENODATA', `no attribute ${name}`)
    return v
  }

  listxattr (n: Inode): string[] { return [...n.xattrs.keys()] }

  // ---- mutations: validate, log, apply ---------------------------------------------------

  /** Runs mutations one at a time (and never during a fold's snapshot or settle). */
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
   * Writes `data` at `offset`; returns how many bytes were written and where. `dataDigest`, when
   * given, is the sha256 of `data` (computed by the caller, off this thread). As Linux does at a
   * file system's maximum file size (s_maxbytes), a write that straddles MAX_FILE_SIZE writes what
   * fits and returns that short count; one that starts at or past it fails with EFBIG.
   *
   * `offset` 'end' is O_APPEND: the write goes to the file's end as it is when the write runs,
   * under the lock. Only this is atomic: where the file changes under the caller (a view's
   * merge brings another writer's lines), an end the caller computed earlier may be stale.
   */
  async write (ino: number, offset: number | 'end', data: Uint8Array, dataDigest?: Uint8Array): Promise<number> {
    return (await this.writeAt(ino, offset, data, { digest: dataDigest })).n
  }

  /**
   * write(), also telling the offset it wrote at (for 'end': the file's size then). `give`: the
   * caller hands `data` over (never touches it again, like a FUSE request's buffer), so whole
   * pages of it become dirty pages as they are, without a copy.
   */
  async writeAt (ino: number, offset: number | 'end', data: Uint8Array, opts: { digest?: Uint8Array, give?: boolean } = {}): Promise<{ n: number, offset: number }> {
    let dataDigest = opts.digest
    return await this.exclusive(async () => {
      const n = this.node(ino)
      if (n.kind === 'dir') throw posix('EISDIR', 'write to a directory')
      if (n.kind !== 'file') throw posix('EINVAL', 'write to a non-file')
      const at = offset === 'end' ? n.size : offset
      if (!Number.isSafeInteger(at) || at < 0) throw posix('EINVAL', 'bad offset')
      if (data.length === 0) return { n: 0, offset: at }
      if (at >= MAX_FILE_SIZE) throw posix('EFBIG', 'write at or past the maximum file size')
      if (at + data.length > MAX_FILE_SIZE) {
        data = data.subarray(0, MAX_FILE_SIZE - at)
        dataDigest = undefined
      }
      // Log records are blocks (at most MAX_BLOCK_SIZE): large writes become several records.
      const time = this.now()
      if (opts.give === true) this.pages.given = data.buffer
      try {
        for (let done = 0; done < data.length; done += MAX_WRITE_RECORD) {
          await this.commit({ op: 'write', ino, offset: at + done, data: data.subarray(done, done + MAX_WRITE_RECORD), time }, data.length <= MAX_WRITE_RECORD ? dataDigest : undefined)
        }
      } finally {
        this.pages.given = undefined
      }
      return { n: data.length, offset: at }
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
   * Forgets the loaded children of a clean directory, under the lock (see Tree.unload): how the
   * memory the kernel gives back with FORGET is given back here too. Returns how many went.
   */
  async unload (dir: Inode): Promise<number> {
    return await this.exclusive(async () => this.tree.unload(dir))
  }

  release (n: Inode): void { this.tree.release(n) }

  /** Makes every appended record durable (fdatasync of the log). */
  sync (): void { this.log?.sync() }

  // ---- what a merge (src/merge) needs besides apply; no log, so never on a writer's tree ---

  /** One name of a loaded inode: its parent's entry, or for a hard-linked one the first found. */
  where (ino: number): { dir: Inode, name: Uint8Array } | undefined { return this.tree.where(ino) }

  /** Whether `ino` is `ancestor` or below it (loaded parents only). */
  within (ino: number, ancestor: number): boolean { return this.tree.within(ino, ancestor) }

  /**
   * Adds a new inode made from a stored entry (a conflict copy) under `name` in `dir`, which
   * changes at `time` (the record's that made the copy, not the entry's: one merge from several
   * bases must give one tree).
   */
  async place (dir: Inode, name: Uint8Array, ino: number, e: Entry, time: bigint): Promise<Inode> {
    if (this.log !== undefined) throw new ReefError('BAD_INPUT', 'place is for a merge tree, not a writer\'s')
    if (this.inodes.has(ino)) throw new ReefError('BAD_INPUT', `inode ${ino} exists already`)
    if (await this.lookup(dir, name) !== undefined) throw posix('EEXIST', Buffer.from(name).toString())
    const n = Inode.fromEntry(ino, { ...e, nlink: undefined })
    if (n.kind === 'dir') throw new ReefError('BAD_INPUT', 'place of a directory')
    this.inodes.set(ino, n)
    await this.tree.attachChild(dir, name, n, time)
    if (n.kind === 'file') this.pages.dirtyFiles.add(ino)
    return n
  }

  /** Sets or clears an inode's conflict mark (CONFLICT_XATTR) without touching its times. */
  markConflict (n: Inode, value: Uint8Array | undefined): void {
    if (value === undefined) n.removeXattr(CONFLICT_XATTR)
    else n.setXattr(CONFLICT_XATTR, value)
    this.tree.markEntryDirty(n)
  }

  /** The single place where state changes, live and on replay (src/fs/apply.ts). */
  apply (op: Op): Promise<void> { return applyOp(this.core, op) }

  // ---- fold: dirty state -> blocks -> version -> signed head (src/fs/fold.ts) -------------

  get dirty (): boolean {
    return this.tree.dirtyDirs.size > 0 || this.pages.dirtyFiles.size > 0 || this.links.dirty || this.unfolded > 0
  }

  /** Test hooks of the fold (FoldHooks). */
  foldHooks?: FoldHooks
  private foldChain: Promise<unknown> = Promise.resolve()

  /**
   * Folds everything applied so far into a new version; returns it, or undefined when nothing
   * changed. Folds run one at a time. Mutations wait only while the fold takes its snapshot
   * and while it settles; chunking, hashing and storing run beside them (src/fs/fold.ts). A
   * merge's fold (`shape`) holds the lock throughout.
   */
  async fold (message?: string, force = false, shape?: FoldShape): Promise<VersionInfo | undefined> {
    const run = this.foldChain.then(async () => await this.foldOnce(message, force, shape))
    this.foldChain = run.catch(() => {})
    return await run
  }

  private async foldOnce (message: string | undefined, force: boolean, shape: FoldShape | undefined): Promise<VersionInfo | undefined> {
    // A merge folds a tree it built with no log of its own (its records are the writers').
    const log = shape === undefined ? this.log : undefined
    if (log === undefined && shape === undefined) throw posix('EROFS', 'read-only file system')
    const at: FoldContext = {
      store: this.store,
      log,
      version: this.version,
      startedFrom: this.startedFrom,
      author: this.author,
      commit: this.commitFn,
      folded: (v, records) => {
        this.version = v
        this.startedFrom = undefined
        this.unfolded -= records
      }
    }
    const start = (): number | undefined => !this.dirty && !force ? undefined : this.unfolded
    if (shape !== undefined) return await this.exclusive(async () => await foldVersion(this.core, at, { message, shape, hooks: this.foldHooks, start }))
    return await foldVersion(this.core, at, { message, hooks: this.foldHooks, start, locked: async fn => await this.exclusive(fn) })
  }
}
