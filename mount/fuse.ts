// Typed loader for reef's patched build of fuse-native 2.2.6.
//
// The binding is compiled by mount/native/build.mjs (root "postinstall") into
// node_modules/.reef-fuse-native; see mount/native/README.md. Loading is lazy:
// importing this module never touches the native code, the first use of
// `Fuse` (or loadFuse()) does.
//
// Conventions (all fuse-native's): every callback takes a negative errno or 0
// first (read/write/getxattr/listxattr: a byte count instead); the patched
// build also accepts null/undefined (= 0) and Node errors (err.errno). Every op
// receives the caller's FuseContext as an extra argument AFTER the callback.

import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'

/** Caller of the current operation, from fuse_get_context() on the FUSE thread. */
export interface FuseContext {
  uid: number
  gid: number
  pid: number
  /** umask of the calling process (0 if the kernel did not send one). */
  umask: number
  /** A write-behind write: the sha256 of its data, computed on the FUSE thread. */
  dataDigest?: Uint8Array
}

/**
 * A stat result. 64-bit fields take a number (exact to 2^53) or a bigint.
 * Times: `<x>timeNs` (bigint ns since the epoch) wins; otherwise `<x>time` as a
 * Date, a number of ms (fractions kept, to ns), or a bigint of ns; default now.
 */
export interface FuseStat {
  mode: number
  uid?: number
  gid?: number
  size?: number | bigint
  dev?: number
  nlink?: number
  /** Reported to the kernel only when the fs is mounted with `useIno: true`. */
  ino?: number | bigint
  rdev?: number
  blksize?: number
  /** In 512-byte units. */
  blocks?: number | bigint
  atime?: Date | number | bigint
  mtime?: Date | number | bigint
  ctime?: Date | number | bigint
  atimeNs?: bigint
  mtimeNs?: bigint
  ctimeNs?: bigint
}

export interface FuseStatfs {
  bsize?: number
  frsize?: number
  blocks?: number
  bfree?: number
  bavail?: number
  files?: number
  ffree?: number
  favail?: number
  fsid?: number
  flag?: number
  namemax?: number
}

/** 0 or a negative errno (Fuse.ENOENT, ...). */
export type Errno = number
export type DoneCb = (err: Errno | null | undefined) => void
/**
 * The callback of a mutating op: on success it may also pass the stat its path was left with
 * and that of the path's parent directory. With `attrCache` the binding caches them (taken in
 * the callback's tick, they are exactly the state the op produced); without, they are ignored.
 */
export type AttrsCb = (err: Errno | null | undefined, stat?: FuseStat, parent?: FuseStat) => void

export interface FuseOps {
  init?(cb: DoneCb, ctx: FuseContext): void
  error?(cb: DoneCb, ctx: FuseContext): void
  access?(path: string, mode: number, cb: DoneCb, ctx: FuseContext): void
  statfs?(path: string, cb: (err: Errno, statfs?: FuseStatfs) => void, ctx: FuseContext): void
  getattr?(path: string, cb: (err: Errno, stat?: FuseStat) => void, ctx: FuseContext): void
  fgetattr?(path: string | null, fd: number, cb: (err: Errno, stat?: FuseStat) => void, ctx: FuseContext): void
  flush?(path: string | null, fd: number, cb: DoneCb, ctx: FuseContext): void
  fsync?(path: string | null, datasync: number, fd: number, cb: DoneCb, ctx: FuseContext): void
  fsyncdir?(path: string, datasync: number, fd: number, cb: DoneCb, ctx: FuseContext): void
  /**
   * With `useIno`, pass `stats` (same length as `names`, at least {mode, ino})
   * or the kernel gets d_ino = 0xffffffff for every entry (`ls -i` shows it).
   */
  readdir?(path: string, cb: (err: Errno, names?: string[], stats?: FuseStat[]) => void, ctx: FuseContext): void
  truncate?(path: string, size: number, cb: AttrsCb, ctx: FuseContext): void
  ftruncate?(path: string | null, fd: number, size: number, cb: AttrsCb, ctx: FuseContext): void
  /** fallocate(2): `mode` is Linux's FALLOC_FL_* bits; offset and length are exact to 2^53. */
  fallocate?(path: string | null, fd: number, mode: number, offset: number, length: number, cb: AttrsCb, ctx: FuseContext): void
  /** Times are bigint ns since the epoch; null = leave unchanged (UTIME_OMIT). */
  utimens?(path: string, atime: bigint | null, mtime: bigint | null, cb: AttrsCb, ctx: FuseContext): void
  readlink?(path: string, cb: (err: Errno, target?: string) => void, ctx: FuseContext): void
  chown?(path: string, uid: number, gid: number, cb: AttrsCb, ctx: FuseContext): void
  chmod?(path: string, mode: number, cb: AttrsCb, ctx: FuseContext): void
  mknod?(path: string, mode: number, dev: number, cb: DoneCb, ctx: FuseContext): void
  setxattr?(path: string, name: string, value: Buffer, position: number, flags: number, cb: AttrsCb, ctx: FuseContext): void
  /** cb(0, value) — the binding copies value and reports its length. */
  getxattr?(path: string, name: string, position: number, cb: (err: Errno, value?: Buffer | null) => void, ctx: FuseContext): void
  listxattr?(path: string, cb: (err: Errno, names?: string[]) => void, ctx: FuseContext): void
  removexattr?(path: string, name: string, cb: AttrsCb, ctx: FuseContext): void
  /** cb(0, fh): fh (a uint32, nonzero) comes back as `fd` in later ops. */
  open?(path: string, flags: number, cb: (err: Errno, fd?: number) => void, ctx: FuseContext): void
  opendir?(path: string, flags: number, cb: (err: Errno, fd?: number) => void, ctx: FuseContext): void
  /** cb(bytesRead) or cb(negative errno). */
  read?(path: string | null, fd: number, buf: Buffer, len: number, pos: number, cb: (result: number) => void, ctx: FuseContext): void
  /** cb(bytesWritten) or cb(negative errno); cb(n, n, stat) also reports the file's stat after it. */
  write?(path: string | null, fd: number, buf: Buffer, len: number, pos: number, cb: (result: number, written?: number, stat?: FuseStat) => void, ctx?: FuseContext): void
  release?(path: string | null, fd: number, cb: DoneCb, ctx: FuseContext): void
  releasedir?(path: string, fd: number, cb: DoneCb, ctx: FuseContext): void
  /** cb(0, fd, stat, parentStat): the stats as for AttrsCb. */
  create?(path: string, mode: number, cb: (err: Errno, fd?: number, stat?: FuseStat, parent?: FuseStat) => void, ctx: FuseContext): void
  unlink?(path: string, cb: AttrsCb, ctx: FuseContext): void
  rename?(src: string, dest: string, cb: AttrsCb, ctx: FuseContext): void
  /** link(existing, newPath) */
  link?(src: string, dest: string, cb: AttrsCb, ctx: FuseContext): void
  /** symlink(target, linkPath): target is the link's content. */
  symlink?(target: string, linkPath: string, cb: AttrsCb, ctx: FuseContext): void
  mkdir?(path: string, mode: number, cb: AttrsCb, ctx: FuseContext): void
  rmdir?(path: string, cb: AttrsCb, ctx: FuseContext): void
}

export interface FuseOptions {
  /** Report the st_ino returned by getattr/fgetattr/readdir (libfuse use_ino). */
  useIno?: boolean
  /** Seconds; 0 is honoured (libfuse default 1). */
  attrTimeout?: number
  /**
   * With attrTimeout 0: seconds the kernel may cache attributes where that is exact (the patched
   * binding rewrites each reply: directories, files and symlinks with one link; the first name
   * of a file that gets a second link is invalidated). Undefined leaves the channel alone.
   */
  kernelAttrTimeout?: number
  /**
   * Answer getattr from an exact cache on the FUSE thread (patched binding): entries are
   * dropped after every op that may change them; the owner calls clearAttrCache() after any
   * change that did not come through a FUSE op.
   */
  attrCache?: boolean
  /**
   * Acknowledge a write once the FUSE thread has copied it into a ring slot (patched binding);
   * ops.write applies queued writes in order before any later op is dispatched. Late failures
   * come back from the next write, fsync or close of that handle.
   */
  writeBehind?: boolean
  /** Ring slots of 128 KiB for write-behind (default 128: 16 MiB in flight at most). */
  writeBehindSlots?: number
  /** Writes past this size fail with EFBIG at once instead of late (write-behind). */
  maxFileSize?: number
  entryTimeout?: number
  negativeTimeout?: number
  acAttrTimeout?: number
  /** Raw libfuse/kernel -o options, e.g. ['big_writes', 'max_write=131072']. */
  options?: string[]
  /** Per-op JS timeout in ms (default 15000; false disables). */
  timeout?: number | false | ({ default?: number } & Partial<Record<keyof FuseOps, number | false>>)
  debug?: boolean
  /** Lazily unmount a stale (ENOTCONN) mount at mnt first. */
  force?: boolean
  /** Create the mount point if missing. */
  mkdir?: boolean
  allowOther?: boolean
  allowRoot?: boolean
  autoUnmount?: boolean
  defaultPermissions?: boolean
  fsname?: string
  subtype?: string
  maxRead?: number
  kernelCache?: boolean
  autoCache?: boolean
  umask?: number
  uid?: number
  gid?: number
  noforget?: boolean
}

export interface FuseInstance {
  readonly mnt: string
  readonly opts: FuseOptions
  /** Calls back once the kernel has sent FUSE_INIT (the mount is live). */
  mount(cb: (err: Error | null) => void): void
  /** `fusermount -uz` then releases the native side. */
  unmount(cb: (err: Error | null) => void): void
  setAttrCache(on: boolean): void
  clearAttrCache(): void
  attrCacheStats(): AttrCacheStats
  /** Hands every queued write to ops.write now. */
  flushWriteBehind(): void
  writeBehindStats(): WriteBehindStats
}

export interface WriteBehindStats {
  enabled: boolean
  /** Queued or being applied right now. */
  pending: number
  deferred: number
  synchronous: number
  fullWaits: number
  drainWaits: number
  lateErrors: number
}

export interface AttrCacheStats {
  enabled: boolean
  entries: number
  hits: number
  misses: number
  stores: number
  invalidations: number
  clears: number
}

type ErrnoName = `E${Uppercase<string>}`

export interface FuseConstructor {
  new (mnt: string, ops: FuseOps, opts?: FuseOptions): FuseInstance
  /** `fusermount -uz <mnt>` */
  unmount(mnt: string, cb: (err: Error | null) => void): void
  readonly [name: ErrnoName]: number
}

function locateBuild (): string {
  if (process.env.REEF_FUSE_NATIVE_DIR) return path.resolve(process.env.REEF_FUSE_NATIVE_DIR)
  const require = createRequire(import.meta.url)
  const pkg = require.resolve('fuse-native/package.json')
  return path.join(path.dirname(path.dirname(pkg)), '.reef-fuse-native')
}

let cached: FuseConstructor | undefined

/** Load the patched binding (once). Throws with a how-to-fix message. */
export function loadFuse (): FuseConstructor {
  if (cached) return cached
  const dir = locateBuild()
  if (!fs.existsSync(path.join(dir, 'build', 'Release', 'fuse.node'))) {
    throw new Error(`reef: patched fuse-native binding not built (${dir}); run \`node mount/native/build.mjs\` (needs libfuse-dev, pkg-config, make, a C compiler)`)
  }
  const require = createRequire(import.meta.url)
  cached = require(dir) as FuseConstructor
  return cached
}

/** The patched Fuse class, loaded on first use (new Fuse(...), Fuse.ENOENT, ...). */
export const Fuse: FuseConstructor = new Proxy(function FuseLazy () {} as unknown as FuseConstructor, {
  construct (_t, args: unknown[]) {
    return Reflect.construct(loadFuse() as unknown as new (...a: unknown[]) => object, args)
  },
  get (_t, prop) {
    return Reflect.get(loadFuse(), prop)
  },
  has (_t, prop) {
    return Reflect.has(loadFuse(), prop)
  }
})

/** Mount and resolve once FUSE_INIT has arrived. */
export function mountFuse (mnt: string, ops: FuseOps, opts?: FuseOptions): Promise<FuseInstance> {
  const fuse = new Fuse(mnt, ops, opts)
  return new Promise((resolve, reject) => {
    fuse.mount((err) => (err ? reject(err) : resolve(fuse)))
  })
}

export function unmountFuse (fuse: FuseInstance): Promise<void> {
  return new Promise((resolve, reject) => {
    fuse.unmount((err) => (err ? reject(err) : resolve()))
  })
}

/** True if `mnt` is a fuse mount point according to /proc/mounts. */
export function isFuseMounted (mnt: string): boolean {
  const target = path.resolve(mnt)
  const mounts = fs.readFileSync('/proc/mounts', 'utf8')
  return mounts.split('\n').some((line) => {
    const f = line.split(' ')
    // /proc/mounts escapes space, tab, newline and backslash as octal.
    const where = (f[1] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))
    return where === target && (f[2] ?? '').startsWith('fuse')
  })
}
