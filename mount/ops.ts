/**
 * FUSE operations <-> fs core calls. Paths are resolved to inodes here; `.reef/versions/N/`
 * is served from read-only views of old versions. Every handler runs through `wrap`, which
 * turns any failure into an errno (mount/errno.ts) so the daemon keeps serving.
 */
import os from 'node:os'
import type { CID } from 'multiformats/cid'
import { ReefError } from '../src/errors.js'
import type { Cred, ReefFS } from '../src/fs/fs.js'
import { type Attr, type Inode, ROOT_INO, S_IFDIR } from '../src/fs/inode.js'
import { describeError, ERRNO, toErrno, type Logger } from './errno.js'
import type { FuseContext, FuseOps, FuseStat, FuseStatfs } from './fuse.js'

export interface VersionSource {
  /** Sequence numbers of every version, oldest first. */
  list (): Promise<bigint[]>
  /** A read-only view of version `seq`. */
  open (seq: bigint): Promise<ReefFS>
  /** VGUID of the current version (after folding pending writes). */
  current (): Promise<CID | undefined>
}

const O_ACCMODE = 3
const testHook = (v: string | undefined): string | undefined => v === undefined || v === '' ? undefined : v
/** Test hook: writes to paths ending in this fail with ENOSPC (a late failure under write-behind). */
const writeFault = testHook(process.env.REEF_TEST_WRITE_FAULT)
/**
 * Test hook for handler exceptions, REEF_TEST_OP_FAULT=MARK: getattr, read, readdir or write of a
 * path whose name ends in `MARK.<op>` throws a TypeError in the handler; `MARK.<op>.reply` gives
 * the binding a reply it cannot convert (a stat with a Symbol for its size, more data than the read
 * asked for), so the exception comes from the reply path itself; `MARK.uncaught` makes getattr
 * also throw from a timer and leave a promise rejection unhandled (the process-wide handlers).
 */
const opFault = testHook(process.env.REEF_TEST_OP_FAULT)
const faultAt = (op: string, path: string | null, stage: 'run' | 'reply'): boolean =>
  opFault !== undefined && path !== null && path.endsWith(`${opFault}.${op}${stage === 'reply' ? '.reply' : ''}`)
const injected = (op: string, path: string | null): TypeError => new TypeError(`REEF_TEST_OP_FAULT: ${op} of ${String(path)}`)
/** A stat the binding cannot convert (its 64-bit size field refuses a Symbol). */
const unconvertible = (st: FuseStat): FuseStat => ({ ...st, size: Symbol('REEF_TEST_OP_FAULT') as unknown as number })
/** Bit 30 of an open handle: keep the kernel page cache for this open (mount/native patch). */
const KEEP_CACHE = 0x40000000
const RESERVED = '.reef'
/** The name libfuse gives a file unlinked while open (see `hidden` in buildOps). */
const HIDDEN = /^\.fuse_hidden[0-9a-f]{16}$/
const VIRTUAL_INO = 2 ** 52
const VERSION_INO_BASE = 2 ** 51
const enc = new TextEncoder()
const posix = ReefError.posix

type Target =
  | { kind: 'node', fs: ReefFS, node: Inode, ro: boolean, seq?: bigint }
  | { kind: 'virtual', which: 'reef' | 'versions' }

interface Handle { fs: ReefFS, node: Inode, writable: boolean }

/** What a mutating op left: the stat of its path and/or of the path's parent directory. */
interface Attrs { stat?: FuseStat, parent?: FuseStat }

export interface OpsOptions {
  /** The live file system; a follower mount swaps it when a newer head arrives. */
  fs: ReefFS
  versions: VersionSource
  log: Logger
  /** Read-only mount (a checkout): every mutation is EROFS. */
  readOnly?: boolean
  /** Following another owner's head: the live tree changes under the same paths. */
  follower?: boolean
  /** Called after each mutation; the daemon schedules folds from it. */
  onChange?: () => void
  /**
   * Called (before the op's reply) when a file that is also open under libfuse's hidden name
   * changed: the binding's attribute cache is keyed by path and cannot see that alias.
   */
  onAliasedChange?: () => void
  statfsPath?: string
}

function splitPath (p: string): { parent: string, name: Uint8Array } {
  const i = p.lastIndexOf('/')
  return { parent: i <= 0 ? '/' : p.slice(0, i), name: enc.encode(p.slice(i + 1)) }
}

function toStat (a: Attr, ino: number): FuseStat {
  return {
    mode: a.mode,
    ino,
    nlink: a.nlink,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    rdev: a.rdev,
    blocks: a.blocks,
    blksize: 4096,
    atimeNs: a.atime,
    mtimeNs: a.mtime,
    ctimeNs: a.ctime
  }
}

export function buildOps (o: OpsOptions): FuseOps & { settled: () => Promise<void> } {
  const handles = new Map<number, Handle>()
  let nextFh = 1
  const rootAttr = (): Attr => o.fs.root.attr()

  const virtualStat = (which: 'reef' | 'versions'): FuseStat => {
    const r = rootAttr()
    return { mode: S_IFDIR | 0o555, ino: VIRTUAL_INO + (which === 'reef' ? 1 : 2), nlink: 2, uid: r.uid, gid: r.gid, size: 0, blocks: 0, blksize: 4096, atimeNs: r.atime, mtimeNs: r.mtime, ctimeNs: r.ctime }
  }

  const inoOf = (t: Extract<Target, { kind: 'node' }>): number =>
    t.seq === undefined ? t.node.ino : VERSION_INO_BASE + Number(t.seq % 1_048_576n) * 2 ** 31 + (t.node.ino % 2 ** 31)

  /**
   * Files unlinked while open. libfuse's high-level API keeps such a file reachable by renaming
   * it to `.fuse_hidden<16 hex digits>` in its directory and unlinks that name at the last
   * release. reef unlinks the file for real at the rename (so link counts and directory listings
   * are what POSIX says) and keeps the inode, and the directory the name lives in, here until then;
   * the open file lives on in the fs core until its last release. Keyed by the name alone:
   * libfuse's counter makes it unique in the mount, and the directory may be renamed meanwhile.
   */
  const hidden = new Map<string, { node: Inode, dir: Inode }>()
  /**
   * libfuse serves stat of an open file by its path only (the kernel sends GETATTR without the
   * file handle), so a directory holding a hidden name must stay: removing it answers ENOTEMPTY,
   * as libfuse itself and NFS do, until the file is closed.
   */
  const holdsHidden = (dir: Inode | undefined): boolean => {
    if (dir === undefined || hidden.size === 0) return false
    for (const v of hidden.values()) if (v.dir === dir) return true
    return false
  }
  /** The hide just done, if the next op is libfuse's rename over that name (see rename). */
  let lastHide: { victim: Inode, dir: number, name: Uint8Array } | undefined
  const hiddenName = (path: string | null): string | undefined => {
    if (path === null) return undefined
    const name = path.slice(path.lastIndexOf('/') + 1)
    return HIDDEN.test(name) ? name : undefined
  }

  /**
   * libfuse subtracts one from the link count it reports through a hidden name (it expects that
   * name to count); reef has already removed that link, so it adds it back here.
   */
  const seenByLibfuse = (path: string | null, st: FuseStat): FuseStat => {
    const h = hiddenName(path)
    return h !== undefined && hidden.has(h) ? { ...st, nlink: (st.nlink ?? 0) + 1 } : st
  }

  /**
   * While any file is open under a hidden name, a change may reach it under another name (or the
   * reverse), which the binding's path-keyed attribute cache cannot see: drop it all. Hidden
   * files are rare and short-lived, so this costs little.
   */
  const aliasedChange = (): void => { if (hidden.size > 0) o.onAliasedChange?.() }

  async function resolve (path: string): Promise<Target> {
    const h = hiddenName(path)
    if (h !== undefined) {
      const n = hidden.get(h)?.node
      if (n !== undefined) return { kind: 'node', fs: o.fs, node: n, ro: o.readOnly === true }
    }
    if (path === '/' + RESERVED || path.startsWith('/' + RESERVED + '/')) {
      const rest = path.slice(RESERVED.length + 2)
      if (rest === '') return { kind: 'virtual', which: 'reef' }
      if (rest === 'versions') return { kind: 'virtual', which: 'versions' }
      if (!rest.startsWith('versions/')) throw posix('ENOENT', path)
      const sub = rest.slice('versions/'.length)
      const slash = sub.indexOf('/')
      const seqText = slash < 0 ? sub : sub.slice(0, slash)
      if (!/^[1-9]\d{0,18}$/.test(seqText)) throw posix('ENOENT', path)
      const seq = BigInt(seqText)
      const vfs = await o.versions.open(seq)
      const node = slash < 0 ? vfs.root : await vfs.resolve(sub.slice(slash))
      return { kind: 'node', fs: vfs, node, ro: true, seq }
    }
    return { kind: 'node', fs: o.fs, node: await o.fs.resolve(path), ro: o.readOnly === true }
  }

  async function nodeTarget (path: string): Promise<Extract<Target, { kind: 'node' }>> {
    const t = await resolve(path)
    if (t.kind !== 'node') throw posix('EROFS', `${path} is part of reef's read-only control tree`)
    return t
  }

  /** The directory a new name goes into; refuses read-only places and the reserved name. */
  async function writableParent (path: string): Promise<{ dir: Inode, name: Uint8Array }> {
    const { parent, name } = splitPath(path)
    const t = await resolve(parent)
    if (t.kind !== 'node' || t.ro) throw posix('EROFS', 'read-only file system')
    if (t.node.ino === ROOT_INO && Buffer.from(name).toString() === RESERVED) throw posix('EEXIST', `/${RESERVED} is reserved`)
    return { dir: t.node, name }
  }

  async function writableNode (path: string): Promise<Inode> {
    const t = await nodeTarget(path)
    if (t.ro) throw posix('EROFS', 'read-only file system')
    return t.node
  }

  const cred = (ctx: FuseContext): Cred => ({ uid: ctx?.uid ?? 0, gid: ctx?.gid ?? 0 })

  /**
   * Registers an open file; the returned handle asks the kernel to keep its page cache (bit 30,
   * see mount/native) when the file's content can only change through this kernel inode: any
   * file of an immutable version, and a live file that was never hard-linked (its other names
   * would be other kernel inodes). A follower's files change under the same paths when a new
   * version arrives, so their cache is dropped at every open.
   */
  function openHandle (h: Handle): number {
    const fh = nextFh++
    if (nextFh >= KEEP_CACHE) nextFh = 1
    handles.set(fh, h)
    h.fs.open(h.node)
    const keep = h.fs !== o.fs ? true : o.follower !== true && !h.node.inTable
    return keep ? fh | KEEP_CACHE : fh
  }

  function handle (fd: number): Handle {
    const h = handles.get(fd)
    if (h === undefined) throw posix('EBADF', `no open file ${fd}`)
    return h
  }

  const changed = (): void => { o.onChange?.() }

  // Writes may be acknowledged before they are applied (the binding's write-behind hands them
  // over in order, before any later op); every other op first waits for the writes in flight.
  // Mutations are serialized by the fs core anyway, so the last write settling means all did.
  let writing = 0
  let lastWrite: Promise<unknown> = Promise.resolve()
  const inFlight = (): Promise<unknown> | undefined => writing > 0 ? lastWrite : undefined
  /** Runs `fn` once every write handed over before it has been applied. */
  const afterWrites = <T>(fn: () => Promise<T>): Promise<T> => {
    const w = inFlight()
    return w === undefined ? fn() : w.then(fn)
  }
  /** The daemon's logger; a line that cannot be written is dropped rather than thrown at a handler. */
  const log = (line: string): void => { try { o.log(line) } catch {} }
  const statOf = (n: Inode): FuseStat => toStat(n.attr(), n.ino)
  /** The stats an op reports; the op has succeeded, so a failure here only costs the cache. */
  const report = (name: string, after: () => Attrs): [FuseStat?, FuseStat?] => {
    try {
      const a = after()
      return [a.stat, a.parent]
    } catch (err) {
      log(`${name}: attributes not reported: ${describeError(err)}`)
      return []
    }
  }

  const errnoOf = (err: unknown, name: string): number => {
    try {
      return toErrno(err, name, log)
    } catch {
      log(`${name}: unexpected error that cannot even be described`)
      return -ERRNO.EIO
    }
  }
  /** `fn()`, with a synchronous throw turned into a rejection. */
  const attempt = <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return fn()
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /* eslint-disable @typescript-eslint/no-explicit-any */
  type Cb = (...a: any[]) => void
  /**
   * Answers the binding for one op, once, from the promise of its result; the returned promise
   * never rejects, and nothing is thrown into the binding. A failure of the op becomes its errno
   * (toErrno logs what is not an ordinary POSIX outcome). An exception in the reply itself (a
   * value the binding cannot convert, a read buffer too small) is unexpected by definition: EIO
   * and a log line. Every callback of the binding signals the kernel as its last step, so a
   * reply that threw has not answered yet (and the binding ignores a second signal anyway).
   */
  function answer<R> (name: string, cb: Cb, result: Promise<R>, reply: (cb: Cb, r: R) => void): Promise<void> {
    const fail = (errno: number): void => {
      try {
        cb(errno)
      } catch (err) {
        log(`${name}: unexpected exception answering ${errno}: ${describeError(err)}`)
      }
    }
    return result.then(r => {
      try {
        reply(cb, r)
      } catch (err) {
        log(`${name}: unexpected exception in the reply: ${describeError(err)}`)
        fail(-ERRNO.EIO)
      }
    }, err => { fail(errnoOf(err, name)) })
  }

  // Every op: run once the writes in flight are applied, then answer. The binding passes
  // (...args, cb, ctx); handlers receive (...args, ctx).
  function handler<R> (name: string, fn: (...args: any[]) => Promise<R>, reply: (cb: Cb, r: R) => void): any {
    return (...args: any[]) => {
      const cb = args[args.length - 2] as Cb
      const ctx = args[args.length - 1] as FuseContext
      void answer(name, cb, attempt(() => afterWrites(async () => await fn(...args.slice(0, -2), ctx))), reply)
    }
  }
  /** An op that answers 0 (or a count it returns). */
  const wrap = (name: string, fn: (...args: any[]) => Promise<number | void>): any =>
    handler(name, fn, (cb, r) => cb(typeof r === 'number' ? r : 0))
  /** An op that answers a value. */
  const wrapValue = (name: string, fn: (...args: any[]) => Promise<unknown>): any =>
    handler(name, fn, (cb, v) => cb(0, v))
  /**
   * A mutating op that reports the attributes it left behind: the binding puts them into its
   * attribute cache (mount/native), so libfuse's getattr right after the op, and the kernel's
   * permission checks on the parent, need no second trip to this thread. The stats are taken
   * in the same tick as the callback, so they are the state this op produced.
   */
  const wrapAttrs = (name: string, fn: (...args: any[]) => Promise<() => Attrs>): any =>
    handler(name, fn, (cb, after) => { aliasedChange(); cb(0, ...report(name, after)) })
  /* eslint-enable @typescript-eslint/no-explicit-any */

  const ops: FuseOps = {
    init: (cb) => cb(0),

    getattr: wrapValue('getattr', async (path: string): Promise<FuseStat> => {
      const t = await resolve(path)
      if (t.kind === 'virtual') return virtualStat(t.which)
      if (opFault !== undefined) {
        if (faultAt('getattr', path, 'run')) throw injected('getattr', path)
        if (path.endsWith(`${opFault}.uncaught`)) {
          setImmediate(() => { throw injected('uncaught (timer)', path) })
          void Promise.reject(injected('uncaught (promise)', path))
        }
        if (faultAt('getattr', path, 'reply')) return unconvertible(toStat(t.node.attr(), inoOf(t)))
      }
      return seenByLibfuse(path, toStat(t.node.attr(), inoOf(t)))
    }),

    // `path` is null for a file no name reaches any more (unlinked while open, its directory
    // removed): libfuse's flag_nullpath_ok; such ops are served by handle.
    fgetattr: wrapValue('fgetattr', async (path: string | null, fd: number): Promise<FuseStat> => {
      const h = handles.get(fd)
      if (h === undefined) {
        if (path === null) throw posix('EBADF', `no open file ${fd}`)
        const t = await nodeTarget(path)
        return seenByLibfuse(path, toStat(t.node.attr(), inoOf(t)))
      }
      const t = h.fs === o.fs || path === null ? { kind: 'node' as const, fs: h.fs, node: h.node, ro: h.fs !== o.fs } : await nodeTarget(path)
      return seenByLibfuse(path, toStat(h.node.attr(), inoOf(t)))
    }),

    access: wrap('access', async (path: string) => { await resolve(path) }),

    statfs: wrapValue('statfs', async (): Promise<FuseStatfs> => {
      const s = await import('node:fs').then(m => m.promises.statfs(o.statfsPath ?? os.tmpdir()))
      return { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: 1e9, ffree: 1e9 - o.fs.inodes.size, favail: 1e9 - o.fs.inodes.size, namemax: 255 }
    }),

    readdir: (path: string, cb: (err: number, names?: string[], stats?: FuseStat[]) => void) => {
      void answer('readdir', cb, attempt(() => afterWrites(async () => {
        const t = await resolve(path)
        if (faultAt('readdir', path, 'run')) throw injected('readdir', path)
        const names = ['.', '..']
        const stats: FuseStat[] = []
        if (t.kind === 'virtual') {
          stats.push(virtualStat(t.which), t.which === 'reef' ? toStat(rootAttr(), ROOT_INO) : virtualStat('reef'))
          if (t.which === 'reef') {
            names.push('versions')
            stats.push(virtualStat('versions'))
          } else {
            for (const seq of await o.versions.list()) {
              names.push(String(seq))
              stats.push({ ...virtualStat('versions'), ino: VERSION_INO_BASE + Number(seq % 1_048_576n) * 2 ** 31 + ROOT_INO })
            }
          }
          return { names, stats }
        }
        if (t.node.kind !== 'dir') throw posix('ENOTDIR', path)
        const self = toStat(t.node.attr(), inoOf(t))
        stats.push(self, self)
        if (t.seq === undefined && t.node.ino === ROOT_INO) {
          names.push(RESERVED)
          stats.push(virtualStat('reef'))
        }
        for (const e of await t.fs.readdir(t.node)) {
          const n = t.fs.node(e.ino)
          const name = Buffer.from(e.name).toString()
          if (t.seq === undefined && t.node.ino === ROOT_INO && name === RESERVED) continue
          names.push(name)
          stats.push(toStat(n.attr(), inoOf({ ...t, node: n })))
        }
        if (faultAt('readdir', path, 'reply')) stats[stats.length - 1] = unconvertible(stats[stats.length - 1])
        return { names, stats }
      })), (cb, r) => cb(0, r.names, r.stats))
    },

    readlink: wrapValue('readlink', async (path: string): Promise<string> => {
      const t = await nodeTarget(path)
      return Buffer.from(t.fs.readlink(t.node)).toString()
    }),

    open: wrapValue('open', async (path: string, flags: number): Promise<number> => {
      const t = await nodeTarget(path)
      const writable = (flags & O_ACCMODE) !== 0
      if (writable && t.ro) throw posix('EROFS', 'read-only file system')
      if (t.node.kind === 'dir' && writable) throw posix('EISDIR', path)
      return openHandle({ fs: t.fs, node: t.node, writable })
    }),

    create: (path: string, mode: number, cb: (err: number, fd?: number, stat?: FuseStat, parent?: FuseStat) => void, ctx: FuseContext) => {
      void answer('create', cb, attempt(() => afterWrites(async () => {
        const { dir, name } = await writableParent(path)
        const node = await o.fs.create(dir.ino, name, mode, cred(ctx))
        changed()
        return { fd: openHandle({ fs: o.fs, node, writable: true }), node, dir }
      })), (cb, r) => cb(0, r.fd, ...report('create', () => ({ stat: statOf(r.node), parent: statOf(r.dir) }))))
    },

    read: (path: string | null, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
      void answer('read', cb, attempt(() => {
        const h = handle(fd)
        if (faultAt('read', path, 'run')) throw injected('read', path)
        return afterWrites(async () => await h.fs.read(h.node, pos, len))
      }), (cb, data) => {
        // The hook hands over more than was asked for: `set` throws a RangeError.
        buf.set(faultAt('read', path, 'reply') ? Buffer.alloc(buf.length + 1) : data)
        cb(data.length)
      })
    },

    write: (path: string | null, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number, written?: number, stat?: FuseStat) => void, ctx?: FuseContext) => {
      const h = handles.get(fd)
      if (h === undefined || !h.writable || h.fs !== o.fs) { void answer('write', cb, Promise.reject(posix('EBADF', `no open file ${fd} for writing`)), () => {}); return }
      // `buf` stays valid until we call back (the FUSE thread waits for the reply); the log
      // and the dirty pages take their own copies, so no copy is needed here.
      writing++
      const p = attempt(async () => {
        if (writeFault !== undefined && path !== null && path.endsWith(writeFault)) throw posix('ENOSPC', `REEF_TEST_WRITE_FAULT: ${path}`)
        if (faultAt('write', path, 'run')) throw injected('write', path)
        return await o.fs.write(h.node.ino, pos, buf.subarray(0, len), ctx?.dataDigest)
      })
      const applied = p.then(n => {
        writing--
        changed()
        aliasedChange()
        return n
      }, err => {
        writing--
        throw err
      })
      // Settled only once the callback ran: a late failure is on record before any later op.
      lastWrite = answer('write', cb, applied, (cb, n) => {
        const st = report('write', () => ({ stat: statOf(h.node) }))[0]
        cb(n, n, st !== undefined && faultAt('write', path, 'reply') ? unconvertible(st) : st)
      })
    },

    fsync: wrap('fsync', async () => {
      o.fs.sync()
    }),

    fsyncdir: wrap('fsyncdir', async () => {
      o.fs.sync()
    }),

    release: wrap('release', async (_path: string | null, fd: number) => {
      const h = handles.get(fd)
      if (h === undefined) return
      handles.delete(fd)
      h.fs.release(h.node)
    }),

    truncate: wrapAttrs('truncate', async (path: string, size: number) => {
      const n = await writableNode(path)
      await o.fs.truncate(n.ino, size)
      changed()
      return () => ({ stat: statOf(n) })
    }),

    ftruncate: wrapAttrs('ftruncate', async (_path: string | null, fd: number, size: number) => {
      const h = handle(fd)
      if (h.fs !== o.fs) throw posix('EROFS', 'read-only file system')
      await o.fs.truncate(h.node.ino, size)
      changed()
      return () => ({ stat: statOf(h.node) })
    }),

    // The kernel sends the handle of the descriptor fallocate was called on; it has checked
    // that it is open for writing (EBADF otherwise), and refused the modes FUSE does not carry.
    fallocate: wrapAttrs('fallocate', async (path: string | null, fd: number, mode: number, offset: number, length: number) => {
      const h = handles.get(fd)
      if (h !== undefined && (!h.writable || h.fs !== o.fs)) throw posix('EBADF', `file ${fd} is not open for writing`)
      const n = h !== undefined ? h.node : path !== null ? await writableNode(path) : handle(fd).node
      await o.fs.fallocate(n.ino, mode, offset, length)
      changed()
      return () => ({ stat: statOf(n) })
    }),

    unlink: wrapAttrs('unlink', async (path: string) => {
      const h = hiddenName(path)
      // libfuse removing the name it gave an open file at its last release: reef unlinked it
      // when it was hidden, and the fs core forgot it at that release.
      if (h !== undefined && hidden.delete(h)) return () => ({})
      const { dir, name } = await writableParent(path)
      const victim = await o.fs.lookup(dir, name)
      await o.fs.unlink(dir.ino, name)
      changed()
      // The file is reported too: the binding tells the kernel inodes of its other names (and
      // of the names libfuse keeps for it while it is open).
      return () => ({ stat: victim !== undefined ? statOf(victim) : undefined, parent: statOf(dir) })
    }),

    mkdir: wrapAttrs('mkdir', async (path: string, mode: number, ctx: FuseContext) => {
      const { dir, name } = await writableParent(path)
      const n = await o.fs.mkdir(dir.ino, name, mode, cred(ctx))
      changed()
      return () => ({ stat: statOf(n), parent: statOf(dir) })
    }),

    rmdir: wrapAttrs('rmdir', async (path: string) => {
      const { dir, name } = await writableParent(path)
      if (holdsHidden(await o.fs.lookup(dir, name))) throw posix('ENOTEMPTY', `${path} holds a file that is still open`)
      await o.fs.rmdir(dir.ino, name)
      changed()
      return () => ({ parent: statOf(dir) })
    }),

    rename: wrapAttrs('rename', async (src: string, dest: string) => {
      const a = await writableParent(src)
      const h = hiddenName(dest)
      if (h !== undefined && !hidden.has(h)) {
        // libfuse hiding a file that is unlinked (or replaced) while open: unlink it for real.
        const victim = await o.fs.lookup(a.dir, a.name)
        if (victim !== undefined && victim.kind !== 'dir' && victim.openCount > 0) {
          await o.fs.unlink(a.dir.ino, a.name)
          hidden.set(h, { node: victim, dir: a.dir })
          lastHide = { victim, dir: a.dir.ino, name: a.name }
          changed()
          return () => ({ stat: statOf(victim) })
        }
      }
      const hid = lastHide
      lastHide = undefined
      const b = await writableParent(dest)
      const moving = await o.fs.lookup(a.dir, a.name)
      let replaced = await o.fs.lookup(b.dir, b.name)
      if (replaced !== undefined && replaced !== moving && holdsHidden(replaced)) throw posix('ENOTEMPTY', `${dest} holds a file that is still open`)
      if (replaced === undefined && moving !== undefined && hid !== undefined && hid.victim === moving &&
          hid.dir === b.dir.ino && Buffer.from(hid.name).equals(Buffer.from(b.name))) {
        // libfuse hid the target only because it was open, right before this rename; but it is
        // the same file as the source, and then rename does nothing (POSIX): the name comes back.
        await o.fs.link(moving.ino, b.dir.ino, b.name)
        replaced = moving
      }
      if (moving !== undefined && replaced === moving) {
        changed()
        return () => ({ stat: statOf(moving) })
      }
      await o.fs.rename(a.dir.ino, a.name, b.dir.ino, b.name)
      changed()
      // A replaced file is reported: the binding tells the kernel inodes of its other names.
      return () => ({ stat: replaced !== undefined && replaced.kind !== 'dir' ? statOf(replaced) : undefined })
    }),

    link: wrapAttrs('link', async (src: string, dest: string) => {
      const n = await writableNode(src)
      const b = await writableParent(dest)
      await o.fs.link(n.ino, b.dir.ino, b.name)
      changed()
      return () => ({ stat: statOf(n), parent: statOf(b.dir) })
    }),

    symlink: wrapAttrs('symlink', async (target: string, linkPath: string, ctx: FuseContext) => {
      const { dir, name } = await writableParent(linkPath)
      const n = await o.fs.symlink(dir.ino, name, enc.encode(target), cred(ctx))
      changed()
      return () => ({ stat: statOf(n), parent: statOf(dir) })
    }),

    chmod: wrapAttrs('chmod', async (path: string, mode: number) => {
      const n = await writableNode(path)
      await o.fs.setattr(n.ino, { mode })
      changed()
      return () => ({ stat: statOf(n) })
    }),

    chown: wrapAttrs('chown', async (path: string, uid: number, gid: number) => {
      const n = await writableNode(path)
      await o.fs.setattr(n.ino, { uid, gid })
      changed()
      return () => ({ stat: statOf(n) })
    }),

    utimens: wrapAttrs('utimens', async (path: string, atime: bigint | null, mtime: bigint | null) => {
      const n = await writableNode(path)
      await o.fs.setattr(n.ino, { atime: atime ?? undefined, mtime: mtime ?? undefined })
      changed()
      return () => ({ stat: statOf(n) })
    }),

    // FIFOs, sockets (bind(2) makes one through mknod) and device nodes; the kernel has checked
    // CAP_MKNOD for devices and applied the caller's umask.
    mknod: wrap('mknod', async (path: string, mode: number, dev: number, ctx: FuseContext) => {
      const { dir, name } = await writableParent(path)
      await o.fs.mknod(dir.ino, name, mode, dev, cred(ctx))
      changed()
    }),

    setxattr: wrapAttrs('setxattr', async (path: string, name: string, value: Buffer, _position: number, flags: number) => {
      if (name === 'user.reef.guid') throw posix('EPERM', 'user.reef.guid is read-only')
      const n = await writableNode(path)
      await o.fs.setxattr(n.ino, name, new Uint8Array(value), flags)
      changed()
      return () => ({ stat: statOf(n) })
    }),

    getxattr: wrapValue('getxattr', async (path: string, name: string): Promise<Buffer> => {
      const r = await resolve(path)
      if (r.kind === 'virtual') throw posix('ENODATA', name)
      const t = r
      if (name === 'user.reef.guid') return Buffer.from(await guidOf(t))
      return Buffer.from(t.fs.getxattr(t.node, name))
    }),

    listxattr: wrapValue('listxattr', async (path: string): Promise<string[]> => {
      const t = await resolve(path)
      return t.kind === 'virtual' ? [] : t.fs.listxattr(t.node)
    }),

    removexattr: wrapAttrs('removexattr', async (path: string, name: string) => {
      const n = await writableNode(path)
      await o.fs.removexattr(n.ino, name)
      changed()
      return () => ({ stat: statOf(n) })
    })
  }

  /** Current BGUID of a file/dir (VGUID for a root); folds first so the answer is exact. */
  async function guidOf (t: Extract<Target, { kind: 'node' }>): Promise<string> {
    if (t.fs === o.fs && !o.fs.readOnly && o.fs.dirty) await o.fs.fold()
    if (t.node.ino === ROOT_INO) {
      const v = t.fs === o.fs ? await o.versions.current() : t.fs.version?.vguid
      if (v !== undefined) return v.toString()
    }
    const cid = t.node.kind === 'dir' ? t.node.dirBase : t.node.base
    if (cid === undefined) throw posix('ENODATA', 'no GUID for this entry')
    return cid.toString()
  }

  return Object.assign(ops, {
    /** Resolves once every write handed to these ops so far has been applied. */
    settled: async (): Promise<void> => { await inFlight() }
  })
}
