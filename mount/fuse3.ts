// reef's own FUSE addon on libfuse3's low-level API (mount/native/fuse3, built into
// node_modules/.reef-fuse3 by mount/native/build-fuse3.mjs). The kernel speaks in inode numbers;
// so does this: ops get (ino, name), never paths, and the kernel's lookup counts come back as
// FORGETs. This wrapper types the addon's requests and turns each handler's result (or throw)
// into exactly one reply. Not yet used by the mount daemon (issue 11 moves it here).

import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export interface Ctx { uid: number, gid: number, pid: number }

export interface Attr {
  ino: number
  mode: number
  nlink: number
  uid: number
  gid: number
  size: number
  rdev?: number
  blocks?: number
  /** Times: ns since the epoch (exact), or else ms. */
  atimeNs?: bigint
  mtimeNs?: bigint
  ctimeNs?: bigint
  atimeMs?: number
  mtimeMs?: number
  ctimeMs?: number
}

/** A lookup's answer; each one adds 1 to the kernel's lookup count of attr.ino. Timeouts in s. */
export interface Entry { attr: Attr, attrTimeout: number, entryTimeout: number }
/** A name is raw bytes (a Uint8Array is written as-is; a string as UTF-8). */
export type NameOut = string | Uint8Array
export interface DirEntry { name: NameOut, ino: number, mode: number }
export interface Opened { fh: number, keepCache?: boolean }
/** A READDIRPLUS entry: a listing entry plus its lookup answer. */
export interface DirEntryPlus { name: NameOut, attr: Attr, attrTimeout: number, entryTimeout: number }
/** What setattr changes; absent fields stay. Times in ns since the epoch; a time the caller set
 * to UTIME_NOW is the time the request arrived here; UTIME_OMIT leaves it out. */
export interface SetAttr { mode?: number, uid?: number, gid?: number, size?: number, atimeNs?: bigint, mtimeNs?: bigint, ctimeNs?: bigint }
/** renameat2's flags, passed through from the kernel. */
export const RENAME_NOREPLACE = 1
export const RENAME_EXCHANGE = 2
export interface StatFs { bsize: number, blocks: number, bfree: number, bavail: number, files: number, ffree: number, namemax: number }

type Maybe<T> = T | Promise<T>

/** Handlers; throw a FuseErrno (or anything with a positive numeric `errno`) to answer an error.
 * Names and link targets arrive as Buffers of the caller's bytes (not necessarily UTF-8); xattr
 * names are strings. */
export interface LowLevelOps {
  init?: () => void
  /** The connection is gone (unmounted); no more requests will come. */
  end?: () => void
  /** The kernel dropped `nlookup` references to each inode: [ino, nlookup] pairs. */
  forget?: (forgets: Array<[number, number]>) => void
  lookup: (parent: number, name: Buffer, ctx: Ctx) => Maybe<Entry>
  getattr: (ino: number, ctx: Ctx) => Maybe<{ attr: Attr, timeout: number }>
  open?: (ino: number, flags: number, ctx: Ctx) => Maybe<Opened>
  /** The bytes, or the pieces they lie in (sent as one reply, never joined). */
  read: (ino: number, fh: number, off: number, size: number, ctx: Ctx) => Maybe<Buffer | Uint8Array[]>
  release?: (ino: number, fh: number) => Maybe<void>
  opendir?: (ino: number, flags: number, ctx: Ctx) => Maybe<Opened>
  /** The whole listing, '.' and '..' included; the kernel's offset is an index into it. */
  readdir: (ino: number, fh: number, ctx: Ctx, off: number) => Maybe<DirEntry[]>
  releasedir?: (ino: number, fh: number) => Maybe<void>
  statfs?: (ino: number) => Maybe<StatFs>
  /** `fh` is set when the kernel named an open handle (ftruncate, futimens). */
  setattr?: (ino: number, set: SetAttr, fh: number | undefined, ctx: Ctx) => Maybe<{ attr: Attr, timeout: number }>
  mknod?: (parent: number, name: Buffer, mode: number, rdev: number, ctx: Ctx) => Maybe<Entry>
  mkdir?: (parent: number, name: Buffer, mode: number, ctx: Ctx) => Maybe<Entry>
  symlink?: (parent: number, name: Buffer, target: Buffer, ctx: Ctx) => Maybe<Entry>
  /** The target's bytes (a string is sent as UTF-8). */
  readlink?: (ino: number, ctx: Ctx) => Maybe<NameOut>
  /** A new name for `ino`; the answer's entry counts as a lookup of `ino`. */
  link?: (ino: number, newParent: number, newName: Buffer, ctx: Ctx) => Maybe<Entry>
  unlink?: (parent: number, name: Buffer, ctx: Ctx) => Maybe<void>
  rmdir?: (parent: number, name: Buffer, ctx: Ctx) => Maybe<void>
  /** `flags`: 0, RENAME_NOREPLACE (EEXIST if newName exists) or RENAME_EXCHANGE (swap both). */
  rename?: (parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number, ctx: Ctx) => Maybe<void>
  /** Creates and opens (`flags` are open's); the entry counts as a lookup. */
  create?: (parent: number, name: Buffer, mode: number, flags: number, ctx: Ctx) => Maybe<Entry & Opened>
  /** Returns how many bytes were written (all of `data` unless short). */
  write?: (ino: number, fh: number, off: number, data: Buffer, ctx: Ctx) => Maybe<number>
  flush?: (ino: number, fh: number, ctx: Ctx) => Maybe<void>
  fsync?: (ino: number, fh: number, datasync: boolean, ctx: Ctx) => Maybe<void>
  fsyncdir?: (ino: number, fh: number, datasync: boolean, ctx: Ctx) => Maybe<void>
  /** `flags`: XATTR_CREATE (1) / XATTR_REPLACE (2). */
  setxattr?: (ino: number, name: string, value: Buffer, flags: number, ctx: Ctx) => Maybe<void>
  /** The whole value; the wrapper answers size probes and ERANGE. Throw ENODATA if absent. */
  getxattr?: (ino: number, name: string, ctx: Ctx) => Maybe<Buffer>
  listxattr?: (ino: number, ctx: Ctx) => Maybe<string[]>
  removexattr?: (ino: number, name: string, ctx: Ctx) => Maybe<void>
  /** `mask`: R_OK/W_OK/X_OK/F_OK. Not called under the default_permissions mount option. */
  access?: (ino: number, mask: number, ctx: Ctx) => Maybe<void>
  /** The whole listing with attributes, '.' and '..' included; the kernel's offset is an index
   * into it. Having it makes the kernel use READDIRPLUS (and then this, not readdir). */
  readdirplus?: (ino: number, fh: number, ctx: Ctx, off: number) => Maybe<DirEntryPlus[]>
  /** The kernel's lookup count of each of these grew by 1: the READDIRPLUS entries it was
   * actually sent ('.' and '..' never count), to be given back by FORGET like lookups. */
  counted?: (inos: number[]) => void
  /** An exception without an errno (answered EIO): a handler's bug, or a reply the addon could
   * not convert. Handlers that map their own errors see only the latter here. */
  unexpected?: (op: string, err: unknown) => void
  /** `mode`: FALLOC_FL_* bits (0 allocates and may grow the file; KEEP_SIZE, PUNCH_HOLE,
   * ZERO_RANGE, ...). Without it the kernel gets ENOSYS from libfuse, no hand-off. */
  fallocate?: (ino: number, fh: number, mode: number, off: number, length: number, ctx: Ctx) => Maybe<void>
  /** SEEK_DATA (3) or SEEK_HOLE (4) from `off`: the offset found (throw ENXIO past the data).
   * Without it the kernel answers them itself (all data, a hole at the end). */
  lseek?: (ino: number, fh: number, off: number, whence: number, ctx: Ctx) => Maybe<number>
}

/** Init capabilities to ask the kernel for; a field left out keeps libfuse's default. */
export interface Caps {
  /** The kernel caches writes and sends them later, in bigger WRITEs. */
  writebackCache?: boolean
  /** Zero-message opens: with no `open` handler the wrapper answers ENOSYS (or a handler may
   * throw errno 38), and the kernel then sends no more OPEN (nor RELEASE) on this mount. */
  noOpen?: boolean
  /** The same for OPENDIR/RELEASEDIR. */
  noOpendir?: boolean
  /** Lookups and readdirs in one directory in parallel (libfuse's default: on). */
  parallelDirops?: boolean
  /** Request and reply bytes through pipes (splice) instead of copies. */
  splice?: boolean
  /** The kernel drops a file's cached pages whenever a reply shows a new mtime or size
   * (libfuse's default: on). Without writeback cache every write makes the mtime new, so the
   * pages a write just filled are dropped at the next getattr. */
  autoInvalData?: boolean
  /** Largest WRITE in bytes (libfuse's limit: 1 MiB). */
  maxWrite?: number
  /** Largest READ in bytes (also passed as the max_read mount option, as libfuse requires). */
  maxRead?: number
  maxBackground?: number
  congestionThreshold?: number
  /** getxattr of security.* and system.* answered ENODATA in C, never asking JS (the kernel
   * asks for security.capability before every write). Only for file systems that keep none. */
  noSecurityXattrs?: boolean
}

/** What the kernel and libfuse granted, at INIT. */
export interface Granted {
  writebackCache: boolean
  noOpen: boolean
  noOpendir: boolean
  parallelDirops: boolean
  splice: boolean
  autoInvalData: boolean
  maxWrite: number
  maxRead: number
  maxBackground: number
  congestionThreshold: number
}

export class FuseErrno extends Error {
  constructor (readonly errno: number, message = `errno ${errno}`) { super(message) }
}

declare const requestBrand: unique symbol
type Req = { readonly [requestBrand]: true }
type Session = { readonly [requestBrand]: false }

interface Request {
  op: 'init' | 'end' | 'forget' | 'lookup' | 'getattr' | 'open' | 'read' | 'release' | 'opendir' | 'readdir' | 'releasedir' | 'statfs' |
  'setattr' | 'mknod' | 'mkdir' | 'symlink' | 'readlink' | 'link' | 'unlink' | 'rmdir' | 'rename' | 'create' | 'write' | 'flush' |
  'fsync' | 'fsyncdir' | 'setxattr' | 'getxattr' | 'listxattr' | 'removexattr' | 'access' | 'readdirplus' |
  'fallocate' | 'lseek'
  ino: number
  name?: Buffer
  off: number
  size: number
  fh: number
  flags: number
  uid: number
  gid: number
  pid: number
  forgets?: Array<[number, number]>
  req?: Req
  // ops.c's requests
  ino2?: number
  /** rename's and link's new name, symlink's target (Buffers); an xattr's name (a string). */
  name2?: Buffer | string
  mode?: number
  rdev?: number
  data?: Buffer
  set?: SetAttr & { atimeNow?: boolean, mtimeNow?: boolean }
  hasFh?: boolean
  granted?: Granted
}

interface Addon {
  mount: (mnt: string, options: string[], handler: (r: Request) => void,
    has: { readdirplus: boolean, fallocate: boolean, lseek: boolean }, caps: Caps | undefined,
    notified: (id: number, result: number) => void) => Session
  /** kind 0: inval_inode(ino, off=a, len=b); 1: inval_entry(parent=ino, name); 2: delete(parent=ino, child=a, name). */
  notify: (s: Session, id: number, kind: 0 | 1 | 2, ino: number, a: number, b: number, name?: NameOut) => void
  unmount: (s: Session) => void
  replyErr: (req: Req, errno: number) => void
  replyEntry: (req: Req, attr: Attr, attrTimeout: number, entryTimeout: number) => void
  replyAttr: (req: Req, attr: Attr, timeout: number) => void
  replyOpen: (req: Req, fh: number, keepCache: boolean) => void
  replyData: (req: Req, data: Buffer) => void
  replyDataV: (req: Req, parts: Uint8Array[]) => void
  replyDir: (req: Req, entries: DirEntry[]) => void
  replyStatfs: (req: Req, st: StatFs) => void
  replyCreate: (req: Req, attr: Attr, attrTimeout: number, entryTimeout: number, fh: number, keepCache: boolean) => void
  replyWrite: (req: Req, count: number) => void
  replyReadlink: (req: Req, target: NameOut) => void
  replyXattrSize: (req: Req, size: number) => void
  replyDirPlus: (req: Req, entries: DirEntryPlus[]) => number
  replyLseek: (req: Req, off: number) => void
}

let addon: Addon | undefined

function load (): Addon {
  if (addon) return addon
  // Source (mount/) and compiled (dist/mount/) copies both find the nearest node_modules.
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    const file = path.join(dir, 'node_modules', '.reef-fuse3', 'build', 'Release', 'reef_fuse3.node')
    if (fs.existsSync(file)) return (addon = createRequire(import.meta.url)(file) as Addon)
    if (path.dirname(dir) === dir) break
  }
  throw new Error('reef: the fuse3 addon is not built; run `node mount/native/build-fuse3.mjs` (needs libfuse3-dev, pkg-config, make, a C compiler)')
}

const EIO = 5
const ENOSYS = 38
const ERANGE = 34

function need<F> (f: F | undefined): F {
  if (f === undefined) throw new FuseErrno(ENOSYS)
  return f
}

/** getxattr/listxattr: size 0 asks for the length; a value longer than `size` is ERANGE. */
function replyXattr (a: Addon, req: Req, size: number, value: Buffer): void {
  if (size === 0) return a.replyXattrSize(req, value.length)
  if (value.length > size) return a.replyErr(req, ERANGE)
  return a.replyData(req, value)
}

function setOf (r: Request): SetAttr {
  const { atimeNow, mtimeNow, ...set } = r.set ?? {}
  const now = BigInt(Date.now()) * 1_000_000n
  if (atimeNow === true) set.atimeNs = now
  if (mtimeNow === true) set.mtimeNs = now
  return set
}

const EMPTY = Buffer.alloc(0)
const nameOf = (r: Request): Buffer => r.name ?? EMPTY
const name2Of = (r: Request): Buffer => Buffer.isBuffer(r.name2) ? r.name2 : EMPTY
const xattrName = (r: Request): string => typeof r.name2 === 'string' ? r.name2 : ''

/** '.' or '..', which READDIRPLUS never counts as lookups. */
function isDot (name: NameOut): boolean {
  const b = typeof name === 'string' ? Buffer.from(name) : name
  return (b.length === 1 || b.length === 2) && b.every((c) => c === 0x2e)
}

function errnoOf (err: unknown): number {
  const n = (err as { errno?: unknown } | null)?.errno
  return typeof n === 'number' && n > 0 ? n : EIO
}

async function answer (a: Addon, ops: LowLevelOps, r: Request, req: Req, granted: Granted | undefined): Promise<void> {
  const ctx: Ctx = { uid: r.uid, gid: r.gid, pid: r.pid }
  switch (r.op) {
    case 'lookup': {
      const e = await ops.lookup(r.ino, nameOf(r), ctx)
      return a.replyEntry(req, e.attr, e.attrTimeout, e.entryTimeout)
    }
    case 'getattr': {
      const { attr, timeout } = await ops.getattr(r.ino, ctx)
      return a.replyAttr(req, attr, timeout)
    }
    case 'open':
    case 'opendir': {
      const handler = r.op === 'open' ? ops.open : ops.opendir
      // Without a handler, a granted zero-message open is ENOSYS: the kernel stops asking.
      const zero = r.op === 'open' ? granted?.noOpen : granted?.noOpendir
      if (handler === undefined && zero === true) return a.replyErr(req, ENOSYS)
      const o = handler ? await handler(r.ino, r.flags, ctx) : { fh: 0 }
      return a.replyOpen(req, o.fh, o.keepCache ?? false)
    }
    case 'read': {
      const data = await ops.read(r.ino, r.fh, r.off, r.size, ctx)
      const length = Array.isArray(data) ? data.reduce((n, p) => n + p.length, 0) : data.length
      // The kernel would fail the whole request; a handler's bug is reported as one.
      if (length > r.size) throw new RangeError(`read of ${r.size} bytes answered with ${length}`)
      return Array.isArray(data) ? a.replyDataV(req, data) : a.replyData(req, data)
    }
    case 'readdir':
      return a.replyDir(req, (await ops.readdir(r.ino, r.fh, ctx, r.off)).slice(r.off))
    case 'release':
    case 'releasedir':
      await (r.op === 'release' ? ops.release : ops.releasedir)?.(r.ino, r.fh)
      return a.replyErr(req, 0)
    case 'statfs':
      if (!ops.statfs) return a.replyErr(req, ENOSYS)
      return a.replyStatfs(req, await ops.statfs(r.ino))
    case 'setattr': {
      const { attr, timeout } = await need(ops.setattr)(r.ino, setOf(r), r.hasFh === true ? r.fh : undefined, ctx)
      return a.replyAttr(req, attr, timeout)
    }
    case 'mknod':
    case 'mkdir':
    case 'symlink':
    case 'link': {
      const name = nameOf(r)
      const e = r.op === 'mknod'
        ? await need(ops.mknod)(r.ino, name, r.mode ?? 0, r.rdev ?? 0, ctx)
        : r.op === 'mkdir'
          ? await need(ops.mkdir)(r.ino, name, r.mode ?? 0, ctx)
          : r.op === 'symlink'
            ? await need(ops.symlink)(r.ino, name, name2Of(r), ctx)
            : await need(ops.link)(r.ino, r.ino2 ?? 0, name2Of(r), ctx)
      return a.replyEntry(req, e.attr, e.attrTimeout, e.entryTimeout)
    }
    case 'readlink':
      return a.replyReadlink(req, await need(ops.readlink)(r.ino, ctx))
    case 'unlink':
    case 'rmdir':
      await need(r.op === 'unlink' ? ops.unlink : ops.rmdir)(r.ino, nameOf(r), ctx)
      return a.replyErr(req, 0)
    case 'rename':
      await need(ops.rename)(r.ino, nameOf(r), r.ino2 ?? 0, name2Of(r), r.flags, ctx)
      return a.replyErr(req, 0)
    case 'create': {
      const e = await need(ops.create)(r.ino, nameOf(r), r.mode ?? 0, r.flags, ctx)
      return a.replyCreate(req, e.attr, e.attrTimeout, e.entryTimeout, e.fh, e.keepCache ?? false)
    }
    case 'write':
      return a.replyWrite(req, await need(ops.write)(r.ino, r.fh, r.off, r.data ?? Buffer.alloc(0), ctx))
    case 'flush':
      await ops.flush?.(r.ino, r.fh, ctx)
      return a.replyErr(req, 0)
    case 'fsync':
    case 'fsyncdir':
      await (r.op === 'fsync' ? ops.fsync : ops.fsyncdir)?.(r.ino, r.fh, r.flags !== 0, ctx)
      return a.replyErr(req, 0)
    case 'setxattr':
      await need(ops.setxattr)(r.ino, xattrName(r), r.data ?? Buffer.alloc(0), r.flags, ctx)
      return a.replyErr(req, 0)
    case 'getxattr':
      return replyXattr(a, req, r.size, await need(ops.getxattr)(r.ino, xattrName(r), ctx))
    case 'listxattr': {
      const names = await need(ops.listxattr)(r.ino, ctx)
      return replyXattr(a, req, r.size, Buffer.from(names.map((n) => n + '\0').join('')))
    }
    case 'removexattr':
      await need(ops.removexattr)(r.ino, xattrName(r), ctx)
      return a.replyErr(req, 0)
    case 'access':
      await ops.access?.(r.ino, r.flags, ctx)
      return a.replyErr(req, 0)
    case 'readdirplus': {
      const entries = (await need(ops.readdirplus)(r.ino, r.fh, ctx, r.off)).slice(r.off)
      const sent = a.replyDirPlus(req, entries)
      const counted = entries.slice(0, sent).filter((e) => !isDot(e.name)).map((e) => e.attr.ino)
      if (counted.length > 0) ops.counted?.(counted)
      return
    }
    case 'fallocate':
      await need(ops.fallocate)(r.ino, r.fh, r.mode ?? 0, r.off, r.size, ctx)
      return a.replyErr(req, 0)
    case 'lseek':
      return a.replyLseek(req, await need(ops.lseek)(r.ino, r.fh, r.off, r.flags, ctx))
    default:
      return a.replyErr(req, ENOSYS)
  }
}

export interface Fuse3Mount {
  /** Asks the kernel to end the connection; `ended` resolves when it has. */
  unmount: () => void
  readonly ended: Promise<void>
  /** What INIT granted of the caps asked for. */
  readonly granted: Promise<Granted>
  /** Drops the kernel's cached attributes and pages of `ino` (off 0, len 0: all pages; a
   * negative off: attributes only). Resolves once the kernel has processed it (also when it did
   * not hold the inode). Kernel notifications never block this thread: a notify thread sends
   * them, since the kernel may wait for a LOOKUP only this thread can answer. */
  invalInode: (ino: number, off?: number, len?: number) => Promise<void>
  /** Drops the kernel's cached `name` in `parent` (its dentry; the inode stays). */
  invalEntry: (parent: number, name: NameOut) => Promise<void>
  /** `name` in `parent` (naming `child`) is gone: the kernel drops the dentry, also from an
   * inotify watcher's view. */
  deleteEntry: (parent: number, child: number, name: NameOut) => Promise<void>
  /** Resolves once every notification asked for so far has been processed. */
  flushNotifications: () => Promise<void>
}

/** Mounts `ops` on `mnt` with libfuse3 `-o` options (e.g. 'fsname=reef', 'allow_other') and
 * the init capabilities `caps`. */
export function mountLowLevel (mnt: string, ops: LowLevelOps, options: string[] = [], caps?: Caps): Fuse3Mount {
  const a = load()
  let ended = false
  let onEnd!: () => void
  const endedP = new Promise<void>(resolve => { onEnd = resolve })
  let granted: Granted | undefined
  let onGranted!: (g: Granted) => void
  const grantedP = new Promise<Granted>(resolve => { onGranted = resolve })
  // Notifications in flight: id -> its promise's resolve.
  const waiting = new Map<number, () => void>()
  let nextId = 1
  // Sent in order by one thread and reported in order, so the last one done means all are.
  let last: Promise<void> = Promise.resolve()
  const opts = caps?.maxRead !== undefined ? [...options, `max_read=${caps.maxRead}`] : options
  const has = { readdirplus: ops.readdirplus !== undefined, fallocate: ops.fallocate !== undefined, lseek: ops.lseek !== undefined }
  const session = a.mount(mnt, opts, (r: Request) => {
    if (r.op === 'init') {
      granted = r.granted
      if (granted !== undefined) onGranted(granted)
      return ops.init?.()
    }
    if (r.op === 'end') {
      ended = true
      ops.end?.()
      return onEnd()
    }
    if (r.op === 'forget') return ops.forget?.(r.forgets ?? [])
    const req = r.req
    if (req === undefined) return
    // A throwing handler answers an errno; the mount never dies of it.
    answer(a, ops, r, req, granted).catch((err: unknown) => {
      const errno = errnoOf(err)
      if (errno === EIO && (err as { errno?: unknown } | null)?.errno !== EIO) {
        try { ops.unexpected?.(r.op, err) } catch {}
      }
      try { a.replyErr(req, errno) } catch {}
    })
  }, has, caps, (id: number) => {
    // The result is not passed on: ENOENT (the kernel did not hold it) is success here, and
    // after the connection ended there is nothing left to invalidate.
    const resolve = waiting.get(id)
    waiting.delete(id)
    resolve?.()
  })
  const notify = (kind: 0 | 1 | 2, ino: number, x: number, y: number, name?: NameOut): Promise<void> => {
    if (ended) return Promise.resolve()
    const id = nextId++
    const done = new Promise<void>(resolve => waiting.set(id, resolve))
    try {
      a.notify(session, id, kind, ino, x, y, name)
    } catch (err) {
      waiting.delete(id)
      throw err
    }
    last = done
    return done
  }
  return {
    unmount: () => { if (!ended) a.unmount(session) },
    ended: endedP,
    granted: grantedP,
    invalInode: (ino, off = 0, len = 0) => notify(0, ino, off, len),
    invalEntry: (parent, name) => notify(1, parent, 0, 0, name),
    deleteEntry: (parent, child, name) => notify(2, parent, child, 0, name),
    flushNotifications: async () => await last
  }
}
