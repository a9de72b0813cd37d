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
  atimeMs: number
  mtimeMs: number
  ctimeMs: number
}

/** A lookup's answer; each one adds 1 to the kernel's lookup count of attr.ino. Timeouts in s. */
export interface Entry { attr: Attr, attrTimeout: number, entryTimeout: number }
export interface DirEntry { name: string, ino: number, mode: number }
export interface Opened { fh: number, keepCache?: boolean }
export interface StatFs { bsize: number, blocks: number, bfree: number, bavail: number, files: number, ffree: number, namemax: number }

type Maybe<T> = T | Promise<T>

/** Handlers; throw a FuseErrno (or anything with a positive numeric `errno`) to answer an error. */
export interface LowLevelOps {
  init?: () => void
  /** The connection is gone (unmounted); no more requests will come. */
  end?: () => void
  /** The kernel dropped `nlookup` references to each inode: [ino, nlookup] pairs. */
  forget?: (forgets: Array<[number, number]>) => void
  lookup: (parent: number, name: string, ctx: Ctx) => Maybe<Entry>
  getattr: (ino: number, ctx: Ctx) => Maybe<{ attr: Attr, timeout: number }>
  open?: (ino: number, flags: number, ctx: Ctx) => Maybe<Opened>
  read: (ino: number, fh: number, off: number, size: number, ctx: Ctx) => Maybe<Buffer>
  release?: (ino: number, fh: number) => Maybe<void>
  opendir?: (ino: number, flags: number, ctx: Ctx) => Maybe<Opened>
  /** The whole listing, '.' and '..' included; the kernel's offset is an index into it. */
  readdir: (ino: number, fh: number, ctx: Ctx) => Maybe<DirEntry[]>
  releasedir?: (ino: number, fh: number) => Maybe<void>
  statfs?: (ino: number) => Maybe<StatFs>
}

export class FuseErrno extends Error {
  constructor (readonly errno: number, message = `errno ${errno}`) { super(message) }
}

declare const requestBrand: unique symbol
type Req = { readonly [requestBrand]: true }
type Session = { readonly [requestBrand]: false }

interface Request {
  op: 'init' | 'end' | 'forget' | 'lookup' | 'getattr' | 'open' | 'read' | 'release' | 'opendir' | 'readdir' | 'releasedir' | 'statfs'
  ino: number
  name?: string
  off: number
  size: number
  fh: number
  flags: number
  uid: number
  gid: number
  pid: number
  forgets?: Array<[number, number]>
  req?: Req
}

interface Addon {
  mount: (mnt: string, options: string[], handler: (r: Request) => void) => Session
  unmount: (s: Session) => void
  replyErr: (req: Req, errno: number) => void
  replyEntry: (req: Req, attr: Attr, attrTimeout: number, entryTimeout: number) => void
  replyAttr: (req: Req, attr: Attr, timeout: number) => void
  replyOpen: (req: Req, fh: number, keepCache: boolean) => void
  replyData: (req: Req, data: Buffer) => void
  replyDir: (req: Req, entries: DirEntry[]) => void
  replyStatfs: (req: Req, st: StatFs) => void
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

function errnoOf (err: unknown): number {
  const n = (err as { errno?: unknown } | null)?.errno
  return typeof n === 'number' && n > 0 ? n : EIO
}

async function answer (a: Addon, ops: LowLevelOps, r: Request, req: Req): Promise<void> {
  const ctx: Ctx = { uid: r.uid, gid: r.gid, pid: r.pid }
  switch (r.op) {
    case 'lookup': {
      const e = await ops.lookup(r.ino, r.name ?? '', ctx)
      return a.replyEntry(req, e.attr, e.attrTimeout, e.entryTimeout)
    }
    case 'getattr': {
      const { attr, timeout } = await ops.getattr(r.ino, ctx)
      return a.replyAttr(req, attr, timeout)
    }
    case 'open':
    case 'opendir': {
      const handler = r.op === 'open' ? ops.open : ops.opendir
      const o = handler ? await handler(r.ino, r.flags, ctx) : { fh: 0 }
      return a.replyOpen(req, o.fh, o.keepCache ?? false)
    }
    case 'read':
      return a.replyData(req, await ops.read(r.ino, r.fh, r.off, r.size, ctx))
    case 'readdir':
      return a.replyDir(req, (await ops.readdir(r.ino, r.fh, ctx)).slice(r.off))
    case 'release':
    case 'releasedir':
      await (r.op === 'release' ? ops.release : ops.releasedir)?.(r.ino, r.fh)
      return a.replyErr(req, 0)
    case 'statfs':
      if (!ops.statfs) return a.replyErr(req, ENOSYS)
      return a.replyStatfs(req, await ops.statfs(r.ino))
    default:
      return a.replyErr(req, ENOSYS)
  }
}

export interface Fuse3Mount {
  /** Asks the kernel to end the connection; `ended` resolves when it has. */
  unmount: () => void
  readonly ended: Promise<void>
}

/** Mounts `ops` on `mnt` with libfuse3 `-o` options (e.g. 'fsname=reef', 'allow_other'). */
export function mountLowLevel (mnt: string, ops: LowLevelOps, options: string[] = []): Fuse3Mount {
  const a = load()
  let ended = false
  let onEnd!: () => void
  const endedP = new Promise<void>(resolve => { onEnd = resolve })
  const session = a.mount(mnt, options, (r: Request) => {
    if (r.op === 'init') return ops.init?.()
    if (r.op === 'end') {
      ended = true
      ops.end?.()
      return onEnd()
    }
    if (r.op === 'forget') return ops.forget?.(r.forgets ?? [])
    const req = r.req
    if (req === undefined) return
    // A throwing handler answers an errno; the mount never dies of it.
    answer(a, ops, r, req).catch((err: unknown) => {
      try { a.replyErr(req, errnoOf(err)) } catch {}
    })
  })
  return {
    unmount: () => { if (!ended) a.unmount(session) },
    ended: endedP
  }
}
