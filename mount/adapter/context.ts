/**
 * What the operation groups (entries, files, dirs, xattrs) share: the options, the kernel's
 * inodes (Tree), open handles, the write-behind queue, and the checks every mutation makes.
 */
import { ReefError } from '../../src/errors.js'
import type { Cred, ReefFS } from '../../src/fs/fs.js'
import { type Inode, keyName, ROOT_INO } from '../../src/fs/inode.js'
import type { Ctx } from '../fuse3.js'
import type { AdapterOptions } from './options.js'
import { isReserved, RESERVED, Tree, type NodeTarget } from './tree.js'

const posix = ReefError.posix

export interface Handle {
  fs: ReefFS
  node: Inode
  ino: number
  writable: boolean
  /** O_SYNC, O_DSYNC or O_DIRECT: every write is applied before it is answered. */
  sync: boolean
  /** O_APPEND, with the kernel not caching writes: each write goes to the end reef's file has
   * when the write runs, not to the kernel's (possibly stale) size. */
  append: boolean
  /** A queued write that failed after it was acknowledged: reported once, by the next call. */
  lateError?: unknown
}

/**
 * Every handler runs inside the gate; a swap of the live tree (a view's merge, a follower's new
 * version) closes it, waits for the handlers inside to finish, and runs alone. While it is open,
 * entering costs a counter (no await).
 */
export class Gate {
  private active = 0
  private closed?: Promise<void>
  private idle?: () => void

  /** Runs `fn` inside the gate (waiting while it is closed). */
  run<T> (fn: () => Promise<T>): Promise<T> {
    if (this.closed !== undefined) return this.closed.then(() => this.run(fn))
    this.active++
    let p: Promise<T>
    try {
      p = fn()
    } catch (err) {
      this.leave()
      return Promise.reject(err)
    }
    return p.finally(() => this.leave())
  }

  private leave (): void {
    if (--this.active === 0 && this.idle !== undefined) this.idle()
  }

  /** Runs `fn` alone: no handler is inside while it runs, and new ones wait for it. */
  async exclusive<T> (fn: () => Promise<T>): Promise<T> {
    while (this.closed !== undefined) await this.closed
    let open = (): void => {}
    this.closed = new Promise<void>(resolve => { open = resolve })
    try {
      while (this.active > 0) await new Promise<void>(resolve => { this.idle = resolve })
      this.idle = undefined
      return await fn()
    } finally {
      this.closed = undefined
      open()
    }
  }
}

export interface WriteBehindStats { enabled: boolean, pending: number, deferred: number, synchronous: number, fullWaits: number, lateErrors: number }

/** Held inodes beyond which `preload` loads the whole new tree instead of walking to each. */
const PRELOAD_MAX = 4096

export class Adapter {
  readonly tree: Tree
  readonly handles = new Map<number, Handle>()
  private nextFh = 1
  readonly wb: WriteBehindStats
  /** Bytes acknowledged and not yet applied; past `maxQueued` a writer waits. */
  queuedBytes = 0
  readonly maxQueued = 16 * 1024 * 1024
  /** Settles once every write handed over so far has been applied (or failed). */
  lastWrite: Promise<unknown> = Promise.resolve()
  /** `staleAppends`: O_APPEND writes whose kernel offset was not reef's end of file (the file
   * changed under the kernel: a view's merge). */
  counters = { getattr: 0, lookup: 0, forget: 0, staleAppends: 0 }
  /** The kernel caches writes (writeback cache granted at INIT): it then owns O_APPEND. */
  kernelWriteback = false
  readonly gate = new Gate()

  constructor (readonly o: AdapterOptions) {
    this.tree = new Tree(o)
    this.wb = { enabled: o.writeBehind && o.readOnly !== true, pending: 0, deferred: 0, synchronous: 0, fullWaits: 0, lateErrors: 0 }
  }

  get fs (): ReefFS { return this.o.fs }

  log (line: string): void { try { this.o.log(line) } catch {} }

  changed (): void { this.o.onChange?.() }

  cred (ctx: Ctx): Cred { return { uid: ctx.uid, gid: ctx.gid } }

  /** Runs `fn` once every write acknowledged before it has been applied. */
  afterWrites<T> (fn: () => Promise<T>): Promise<T> {
    return this.wb.pending > 0 ? this.lastWrite.then(fn) : fn()
  }

  open (h: Omit<Handle, 'lateError'>): number {
    const fh = this.nextFh++
    if (this.nextFh >= 2 ** 52) this.nextFh = 1
    this.handles.set(fh, h)
    h.fs.open(h.node)
    return fh
  }

  handle (fh: number): Handle {
    const h = this.handles.get(fh)
    if (h === undefined) throw posix('EBADF', `no open file ${fh}`)
    return h
  }

  /**
   * Loads into `next` (a tree opened lazily) every inode that an open file or the kernel holds
   * in `old`, by the path it has in `old`, so that `rebase` finds them by number without loading
   * all of `next`. It loads all of `next` instead when one is not at its old path (moved or
   * replaced in the new version, or hard-linked: it has no single path), or when more than
   * PRELOAD_MAX are held (a walk costs more than a load then).
   */
  async preload (old: ReefFS, next: ReefFS): Promise<void> {
    const want = new Map<number, Inode>()
    for (const h of this.handles.values()) if (h.fs === old) want.set(h.ino, h.node)
    for (const [ino, n] of this.tree.heldIn(old)) want.set(ino, n)
    if (want.size > PRELOAD_MAX) return await next.loadAll()
    // Each directory's entries by inode, built once per directory a held inode is in.
    const nameIn = new Map<number, Map<number, Uint8Array>>()
    const nameOf = (dir: Inode, ino: number): Uint8Array | undefined => {
      let m = nameIn.get(dir.ino)
      if (m === undefined) {
        m = new Map()
        for (const [key, i] of dir.children ?? []) m.set(i, keyName(key))
        nameIn.set(dir.ino, m)
      }
      return m.get(ino)
    }
    for (const [ino, n] of want) {
      if (next.inodes.has(ino)) continue
      const names: Uint8Array[] = []
      let ok = true
      for (let cur = n, guard = 0; cur.ino !== ROOT_INO; guard++) {
        const parent = old.inodes.get(cur.parent)
        const name = parent === undefined || cur.inTable || guard > 4096 ? undefined : nameOf(parent, cur.ino)
        if (parent === undefined || name === undefined) { ok = false; break }
        names.push(name)
        cur = parent
      }
      let at: Inode | undefined = ok ? next.root : undefined
      for (const name of names.reverse()) {
        if (at === undefined || at.kind !== 'dir') break
        at = await next.lookup(at, name).catch(() => undefined)
      }
      if (!next.inodes.has(ino)) return await next.loadAll()
    }
  }

  /**
   * The live tree is now `next` (a merge made elsewhere, a follower's new version): every open
   * file and every inode the kernel holds moves to it by inode number. One that `next` does not
   * have (unlinked here while open, or removed by another writer) goes along as an unlinked
   * inode, as an open file whose name is gone does on a local file system. Returns the inodes and
   * names whose kernel caches must go: attributes or content that differ, names that differ.
   * Synchronous: nothing else runs between the first move and the last.
   */
  rebase (old: ReefFS, next: ReefFS): { inodes: number[], entries: Array<[number, Uint8Array]> } {
    const moved = new Map<number, Inode>()
    const move = (ino: number, n: Inode): Inode => {
      let m = moved.get(ino)
      if (m === undefined) {
        m = next.inodes.get(ino)
        if (m === undefined) {
          m = n
          m.nlink = 0
          m.openCount = 0
          next.inodes.set(ino, m)
        }
        moved.set(ino, m)
      }
      next.open(m)
      return m
    }
    for (const h of this.handles.values()) {
      if (h.fs !== old) continue
      h.node = move(h.ino, h.node)
      h.fs = next
    }
    return this.tree.rebase(old, next, move)
  }

  /** A late write failure of `h`, reported once. */
  takeLateError (h: Handle): void {
    const e = h.lateError
    if (e === undefined) return
    h.lateError = undefined
    throw e
  }

  /** A live inode that may change; EROFS in a read-only place. */
  async writable (ino: number): Promise<NodeTarget> {
    const t = await this.tree.target(ino)
    if (t.kind !== 'node' || t.ro) throw posix('EROFS', 'read-only file system')
    return t
  }

  /** The directory a new name goes into; refuses read-only places and the reserved name. */
  async writableDir (parent: number, name: Uint8Array): Promise<Inode> {
    const t = await this.writable(parent)
    if (isReserved(t.node.ino, name)) throw posix('EEXIST', `/${RESERVED} is reserved`)
    return t.node
  }

  /** The test hook of `Faults.op`: whether `op` at `stage` should fail for inode `ino`. */
  faultAt (op: string, ino: number, stage: 'run' | 'reply'): boolean {
    const mark = this.o.faults?.op
    if (mark === undefined) return false
    return this.tree.nameOf(ino).endsWith(`${mark}.${op}${stage === 'reply' ? '.reply' : ''}`)
  }

  injected (op: string, ino: number): TypeError {
    return new TypeError(`REEF_TEST_OP_FAULT: ${op} of /${this.tree.nameOf(ino)}`)
  }
}
