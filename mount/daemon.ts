/**
 * The mount daemon: mounts a reef file system on a directory, folds the writer log into
 * versions every few seconds of activity (and on demand, and at unmount), and cleans up a mount
 * left behind by a killed daemon. It mounts through reef's own addon on libfuse3's low-level API
 * (mount/fuse3.ts, mount/native/fuse3), with the operations of mount/adapter. Choices and why:
 *   inode numbers        the kernel names every inode by reef's own number (stable across
 *                        remounts, one kernel inode for all names of a hard-linked file); there is
 *                        no path table, and FORGET tells the daemon what the kernel still holds
 *   attribute cache      the kernel's: every reply carries its validity (--attr-timeout, default
 *                        1 s), exact for every file since all changes go through this mount and
 *                        a file's names share one kernel inode; /.reef/versions (it grows with
 *                        each fold) gets 0. What changes under the kernel is invalidated
 *                        explicitly: a follower's new version (every held inode and the names in
 *                        held directories), a write that failed after it was acknowledged
 *   entry timeout 1 s    name -> inode lookups may be cached: namespace changes go through this
 *                        mount, which updates the kernel's dentries itself; negative entries are
 *                        not cached (a name created right after a failed lookup is seen at once)
 *   page cache           kept across opens (keep_cache), for the same reasons
 *   read-ahead 1 MiB     the kernel's for FUSE is 128 KiB; set through sysfs as root
 *                        (--read-ahead), else left
 *   write-behind         a write is acknowledged once queued and applied right after, before any
 *                        later op; a late failure is reported by the next write, close or fsync
 *                        of that descriptor (--no-write-behind)
 *   atomic O_TRUNC       libfuse3 asks for it: O_TRUNC comes with the open, not as a SETATTR
 *   default_permissions  the kernel enforces mode bits (EACCES) with the attrs we report
 *   nosuid,nodev         fusermount3's defaults, kept on purpose: a reef tree can come from another
 *                        writer or from someone else's put, and a device node in it must not
 *                        open this machine's devices. Device nodes are stored, listed and
 *                        stat'ed like any entry (rdev kept); opening one answers EACCES
 *   allow_other          other local users (and tests running as another uid) can reach it;
 *                        only when root mounts or /etc/fuse.conf has user_allow_other (without it,
 *                        fusermount3 refuses the option and a non-root mount would fail)
 */
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import type { CID } from 'multiformats/cid'
import { ReefError } from '../src/errors.js'
import type { ReefFS, VersionInfo } from '../src/fs/fs.js'
import type { ReefNode } from '../src/node.js'
import type { Logger } from './errno.js'
import { isFuseMounted, setReadAhead } from './mounts.js'
import { type ControlHooks, Lifetime, serveControl } from '../src/control/daemon.js'
import type { ControlServer } from '../src/control/server.js'
import { MAX_FILE_SIZE } from '../src/object/file.js'
import { buildAdapter, type AdapterOptions, type Faults, type MountAdapter, type VersionSource } from './adapter/index.js'
import type { Adapter } from './adapter/context.js'
import { type Caps, type Fuse3Mount, type Granted, mountLowLevel } from './fuse3.js'
import { ViewSync } from './view.js'

const run = promisify(execFile)

/**
 * Dirty data held in memory before a fold is forced. A fold blocks writers while it chunks and
 * hashes (about 150 MB/s here), so folding every 64 MiB cut a 256 MiB sequential write to a
 * third of its speed; 512 MiB of RAM buys uninterrupted bursts and folds at the interval.
 */
export const DEFAULT_MAX_DIRTY = 512 * 1024 * 1024
/**
 * What reef asks of the kernel at INIT (README, "Kernel features"): security.* and system.*
 * xattrs answered ENODATA without a hand-off (reef keeps user.* only; the kernel asks for
 * security.capability before every write); no automatic page invalidation on a new mtime
 * (every change to a live tree's files goes through this mount, and the daemon invalidates
 * explicitly where content changes under the kernel: a follower's new version, a write that
 * failed late). With it on, a file read right after it was written came from the daemon
 * again (317 MB/s instead of 7.5 GB/s for 256 MiB).
 */
export const DEFAULT_CAPS: Caps = { noSecurityXattrs: true, autoInvalData: false }
/**
 * The kernel's read-ahead for the mount, in KiB (its default for FUSE is 128). Cold sequential
 * reads of 256 MiB, alternating mounts (README, "Measured"): 238-261 MB/s at 128, 293-320 at
 * 1024: bigger READs, fewer hand-offs, and the next READ already queued while JS answers one.
 */
export const DEFAULT_READ_AHEAD_KIB = 1024
/** Seconds the kernel keeps exact attributes (see the header). */
export const DEFAULT_ATTR_TIMEOUT = 1

export interface MountOptions {
  mountpoint: string
  /** Fold after this many ms of write activity (default 5000). */
  foldIntervalMs?: number
  /**
   * Fold after foldIntervalMs with no write instead (each change pushes the fold back), but at
   * most this many ms after the first unfolded change. View mounts: a burst of writes (a copy, a
   * build) becomes one version the other writers merge once, not one every interval.
   */
  foldQuietMaxMs?: number
  /** Fold early once this many bytes are held in dirty pages (default 512 MiB). */
  maxDirtyBytes?: number
  /** Mount this version read-only instead of the live file system. */
  checkout?: VersionInfo
  /** Mount read-write with this version's tree as the live tree (the way back to a good version). */
  from?: VersionInfo
  /**
   * Follow another owner's file system (read-only): mount the version its signed head names
   * and switch to newer versions as their heads arrive from the network.
   */
  follow?: CID
  /** How often a follower asks the network for a newer head (default 2000 ms). */
  followIntervalMs?: number
  /**
   * Mount this view (a shared file system, issue 12): read-write as this node's writer tree in
   * it when its key is a writer, else read-only; merged with the other writers' (mount/view.ts).
   */
  view?: CID
  /** How often a view mount looks for other writers' heads (default 500 ms). */
  viewIntervalMs?: number
  /**
   * Seconds the kernel may cache attributes (default 1; 0 makes the kernel ask every time).
   */
  attrTimeout?: number
  /** false: the same as attrTimeout 0 (default true). */
  attrCache?: boolean
  /** Acknowledge writes once queued, apply them right after (default true). */
  writeBehind?: boolean
  /** Test faults, set by the composition root (bin/), never read from the environment here. */
  faults?: Faults
  /** Kernel capabilities to ask for beyond DEFAULT_CAPS (benchmarks turn them on one by one). */
  caps?: Caps
  /** Kernel read-ahead in KiB (default DEFAULT_READ_AHEAD_KIB; 0 leaves the kernel's). Needs
   * root (sysfs): elsewhere the kernel's stays, said once in the log. */
  readAheadKiB?: number
  log?: Logger
}

/**
 * Whether to mount with allow_other: root may always; anyone else only where /etc/fuse.conf
 * enables `user_allow_other` (Debian ships it commented out), or fusermount refuses the mount.
 */
export function allowOtherFor (uid: number, fuseConf: string | undefined): boolean {
  if (uid === 0) return true
  return (fuseConf ?? '').split('\n').some(line => line.replace(/#.*/, '').trim() === 'user_allow_other')
}

function readFuseConf (): string | undefined {
  try {
    return fs.readFileSync('/etc/fuse.conf', 'utf8')
  } catch {
    return undefined
  }
}

/** Removes a FUSE mount whose daemon died ("Transport endpoint is not connected"). */
export async function cleanupStaleMount (mnt: string): Promise<boolean> {
  if (!isFuseMounted(mnt)) return false
  try {
    await fs.promises.stat(mnt)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTCONN') {
      await run('fusermount', ['-uz', mnt])
      return true
    }
    throw err
  }
  throw new ReefError('BAD_INPUT', `${mnt} is already a live FUSE mount`)
}

/** A mount served until it is stopped: `done` tells how the stop went. */
export interface ServedMount {
  daemon: MountDaemon
  done: Promise<{ version?: VersionInfo, error?: unknown }>
}

export class MountDaemon {
  private fuse3?: Fuse3Mount
  private granted?: Granted
  /** The read-ahead set for the mount, if it was. */
  private readAheadKiB?: number
  private adapter?: MountAdapter
  private adapterOptions?: AdapterOptions
  private timer?: NodeJS.Timeout
  /** When the first change the pending fold timer covers came (foldQuietMaxMs). */
  private firstChange = 0
  private folding?: Promise<VersionInfo | undefined>
  private readonly versionCache = new Map<string, ReefFS>()
  private stopped = false
  lastError?: string
  folds = 0

  private followTimer?: NodeJS.Timeout
  /** A view mount's merging with the other writers. */
  viewSync?: ViewSync

  private constructor (readonly node: ReefNode, public fs: ReefFS, readonly opts: MountOptions, private readonly log: Logger) {}

  /** The AGUID whose versions this mount shows. */
  get aguid (): CID { return this.opts.follow ?? this.node.fsAguid(this.opts.view) }

  static async start (node: ReefNode, opts: MountOptions): Promise<MountDaemon> {
    // A log line that cannot be written (stderr gone) is dropped, never thrown at a FUSE op.
    const log = opts.log ?? ((line: string) => { try { process.stderr.write(`reef: ${line}\n`) } catch {} })
    const mnt = path.resolve(opts.mountpoint)
    if (await cleanupStaleMount(mnt)) log(`cleaned up a stale mount on ${mnt}`)
    fs.mkdirSync(mnt, { recursive: true })
    let rfs: ReefFS
    let view: ViewSync | undefined
    if (opts.view !== undefined) {
      const { writer, fs: live } = await ViewSync.open(node, opts.view, v => view?.folded(v), log)
      rfs = live
      const hold = opts.faults?.viewHold
      view = new ViewSync({ node, view: opts.view, log, intervalMs: opts.viewIntervalMs, swap: async build => await d.swap(build), ...(hold !== undefined ? { held: () => fs.existsSync(hold) } : {}) }, writer)
      if (live.replaySkipped > 0) log(`log replay: ${live.replaySkipped} records skipped, ${live.pending} applied`)
    } else if (opts.checkout !== undefined) {
      rfs = await node.openVersion(opts.checkout, log)
    } else if (opts.follow !== undefined) {
      await node.refreshHead(opts.follow)
      const v = await node.currentVersion(opts.follow)
      if (v === undefined) throw ReefError.notFound(`no head known for ${opts.follow.toString()} (is a node of the network reachable?)`)
      rfs = await node.openVersion(v, log)
    } else {
      rfs = await node.openFs({ from: opts.from, warn: log })
      if (opts.from !== undefined) log(`continuing from version ${opts.from.root.seq} (${opts.from.vguid.toString()}): the next version follows ${rfs.version?.root.seq ?? 0} with its tree`)
      if (rfs.replaySkipped > 0) log(`log replay: ${rfs.replaySkipped} records skipped, ${rfs.pending} applied`)
    }
    const d = new MountDaemon(node, rfs, { ...opts, mountpoint: mnt }, log)
    d.viewSync = view
    d.mountLowLevel(rfs)
    // Continuing from another version is recorded at once, as a version that says so.
    if (opts.from !== undefined) {
      await d.fold(`from version ${opts.from.root.seq}`).catch(err => log(`fold of the version continued from failed: ${(err as Error).message}`))
    }
    // Anything the log replay recovered becomes a version right away.
    if (!rfs.readOnly && rfs.dirty) d.scheduleFold(0)
    if (opts.follow !== undefined) d.startFollowing()
    await view?.start(rfs)
    return d
  }

  private get readOnlyMount (): boolean {
    return this.opts.checkout !== undefined || this.opts.follow !== undefined || this.viewSync?.writer === false
  }

  /**
   * Makes what `build` returns the live tree, with no handler running meanwhile (the adapter's
   * gate closed) and every acknowledged write applied; a writable tree is folded first, so that
   * `build` sees all of it in a version. Open files and the inodes the kernel holds move to the
   * new tree by number (loaded into it first by path when `build` opened it lazily:
   * Adapter.preload); the kernel is told which inodes and names changed.
   */
  async swap (build: (live: ReefFS) => Promise<ReefFS | undefined>): Promise<void> {
    const a = this.adapter
    if (a === undefined || this.stopped) return
    let changed: ReturnType<Adapter['rebase']> | undefined
    await a.adapter.gate.exclusive(async () => {
      if (this.stopped) return
      await this.settleWrites()
      while (this.folding !== undefined) await this.folding.catch(() => {})
      const old = this.fs
      if (!old.readOnly && old.dirty) await this.foldNow()
      const next = await build(old)
      if (next === undefined) return
      await a.adapter.preload(old, next)
      this.fs = next
      if (this.adapterOptions !== undefined) this.adapterOptions.fs = next
      changed = a.adapter.rebase(old, next)
    })
    // Outside the gate: the kernel may send requests of its own while it drops what it cached.
    if (changed !== undefined) await a.adapter.tree.invalidate(changed)
  }

  /** Mounts through reef's own libfuse3 low-level addon (mount/fuse3.ts, mount/adapter). */
  private mountLowLevel (rfs: ReefFS): void {
    const o: AdapterOptions = {
      fs: rfs,
      versions: this.versionSource(),
      log: this.log,
      readOnly: this.readOnlyMount,
      follower: this.opts.follow !== undefined,
      onChange: () => this.scheduleFold(),
      // In a view, fsync is when a writer wants its change seen: fold (and so publish) now.
      onFsync: this.viewSync?.writer === true ? () => this.scheduleFold(0) : undefined,
      statfsPath: this.node.dataDir,
      attrTimeout: this.opts.attrCache === false ? 0 : this.opts.attrTimeout ?? DEFAULT_ATTR_TIMEOUT,
      entryTimeout: 1,
      writeBehind: (this.opts.writeBehind ?? true) && !this.readOnlyMount,
      maxFileSize: MAX_FILE_SIZE,
      faults: this.opts.faults
    }
    this.adapterOptions = o
    this.adapter = buildAdapter(o)
    const options = [`fsname=reef:${this.node.config.name}`, 'subtype=reef', 'default_permissions']
    if (allowOtherFor(process.getuid?.() ?? 0, readFuseConf())) options.push('allow_other')
    const { readdirplus, ...caps } = { ...DEFAULT_CAPS, ...this.opts.caps } as Caps & { readdirplus?: boolean }
    // Without the handler libfuse does not offer READDIRPLUS (measured against it: README).
    const ops = readdirplus === false ? { ...this.adapter.ops, readdirplus: undefined } : this.adapter.ops
    this.fuse3 = mountLowLevel(this.opts.mountpoint, ops, options, caps)
    const adapter = this.adapter.adapter
    adapter.tree.kernel = this.fuse3
    // Until INIT answers, what was asked for (INIT comes before any open).
    adapter.kernelWriteback = caps.writebackCache === true
    this.fuse3.granted.then(g => {
      this.granted = g
      adapter.kernelWriteback = g.writebackCache
      const kib = this.opts.readAheadKiB ?? DEFAULT_READ_AHEAD_KIB
      if (kib <= 0) return
      try {
        setReadAhead(this.opts.mountpoint, kib)
        this.readAheadKiB = kib
      } catch (err) {
        this.log(`read-ahead stays the kernel's (128 KiB): ${(err as Error).message}`)
      }
    }, () => {})
  }

  /**
   * Mounts, serves the control socket and stops on `reef unmount`, SIGINT or SIGTERM: folds,
   * unmounts, closes the socket and the node, in that order, whatever fails on the way.
   */
  static async serve (node: ReefNode, opts: MountOptions, hooks: ControlHooks): Promise<ServedMount> {
    let d: MountDaemon | undefined
    let server: ControlServer | undefined
    const result: { version?: VersionInfo, error?: unknown } = {}
    const life = new Lifetime(async () => {
      try {
        result.version = await d?.stop()
      } catch (e) {
        result.error = e
      } finally {
        await server?.close()
        await node.close()
      }
    })
    try {
      d = await MountDaemon.start(node, opts)
      server = await serveControl(node, d, { ...hooks, stop: () => { void life.stop() } })
    } catch (e) {
      await life.stop()
      throw e
    }
    life.onSignals()
    return { daemon: d, done: life.done.then(() => result) }
  }

  private startFollowing (): void {
    const tick = async (): Promise<void> => {
      const aguid = this.aguid
      await this.node.refreshHead(aguid)
      const v = await this.node.currentVersion(aguid)
      if (v === undefined || this.stopped) return
      if (this.fs.version !== undefined && v.root.seq <= this.fs.version.root.seq) return
      // Opened lazily: swap() loads what open files and the kernel hold, by path.
      await this.swap(async () => await this.node.openVersion(v))
      this.log(`following ${aguid.toString()}: now at version ${v.root.seq}`)
    }
    const loop = (): void => {
      this.followTimer = setTimeout(() => {
        tick().catch(err => { this.lastError = (err as Error).message }).finally(() => { if (!this.stopped) loop() })
      }, this.opts.followIntervalMs ?? 2000)
    }
    loop()
  }

  private versionSource (): VersionSource {
    return {
      // A view's history is a DAG whose merged versions share seqs with their parents' siblings:
      // one entry per seq (the newest version of it, as `open` finds).
      list: async () => [...new Set((await this.node.history(this.aguid)).map(h => h.seq))].reverse(),
      open: async (seq) => {
        const key = seq.toString()
        let v = this.versionCache.get(key)
        if (v === undefined) {
          const item = (await this.node.history(this.aguid)).find(h => h.seq === seq)
          if (item === undefined) throw ReefError.posix('ENOENT', `no version ${seq}`)
          v = await this.node.openVersion(await this.node.version(item.vguid), this.log)
          if (this.versionCache.size >= 16) this.versionCache.delete(this.versionCache.keys().next().value as string)
          this.versionCache.set(key, v)
        }
        return v
      },
      current: async () => this.fs.version?.vguid
    }
  }

  scheduleFold (delay = this.opts.foldIntervalMs ?? 5000): void {
    if (this.stopped || this.fs.readOnly) return
    if (this.fs.dirtyBytes >= (this.opts.maxDirtyBytes ?? DEFAULT_MAX_DIRTY)) delay = 0
    const quietMax = this.opts.foldQuietMaxMs
    if (this.timer !== undefined) {
      if (delay > 0 && quietMax === undefined) return
      clearTimeout(this.timer)
      // Quiet mode: pushed back by this change, but never past the first change plus the max.
      if (delay > 0 && quietMax !== undefined) delay = Math.max(0, Math.min(delay, this.firstChange + quietMax - Date.now()))
    } else {
      this.firstChange = Date.now()
    }
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.fold().catch(err => {
        this.lastError = (err as Error).message
        // A refusal reef knows (a block that does not read back, a store error) is one line; the
        // writes stay in the log and the next fold tries again. Anything else keeps its stack.
        const why = err instanceof ReefError ? `${err.message} [${err.code}]` : (err as Error).stack ?? String(err)
        this.log(`fold failed, head stays at version ${this.fs.version?.root.seq ?? 0}: ${why}`)
      })
    }, delay)
  }

  /** Folds pending writes into a version now; concurrent callers share one fold. */
  async fold (message?: string): Promise<VersionInfo | undefined> {
    if (this.fs.readOnly) return this.fs.version
    await this.settleWrites()
    while (this.folding !== undefined) await this.folding.catch(() => {})
    return await this.foldNow(message)
  }

  /**
   * `reef sync`: a fold, and on a view mount a view round at once (the head goes out and the
   * other writers' changes come in). A timer's fold needs no round of its own: the fold's
   * `committed` hook already asks ViewSync for one.
   */
  async sync (message?: string): Promise<VersionInfo | undefined> {
    const v = await this.fold(message)
    await this.viewSync?.now()
    return v
  }

  /** One fold of the live tree (callers wait for any fold in progress first). */
  private async foldNow (message?: string): Promise<VersionInfo | undefined> {
    this.folding = this.fs.fold(message)
    try {
      const v = await this.folding
      if (v !== undefined) this.folds++
      return v ?? this.fs.version
    } finally {
      this.folding = undefined
    }
  }

  /** Every write acknowledged so far (write-behind) applied to the fs core. */
  private async settleWrites (): Promise<void> {
    await this.adapter?.settled()
  }

  status (): Record<string, unknown> {
    return {
      mountpoint: this.opts.mountpoint,
      dataDir: this.node.dataDir,
      aguid: this.aguid.toString(),
      network: this.node.dht?.status(),
      readOnly: this.fs.readOnly,
      vguid: this.fs.version?.vguid.toString(),
      seq: this.fs.version?.root.seq.toString(),
      pendingRecords: this.fs.pending,
      replaySkipped: this.fs.replaySkipped,
      damagedDirs: [...this.fs.damaged.values()].map(d => ({ path: d.path, guid: d.guid, code: d.code })),
      dirtyBytes: this.fs.dirtyBytes,
      folds: this.folds,
      kernel: this.granted,
      readAheadKiB: this.readAheadKiB,
      attrCache: this.kernelCacheStats(),
      writeBehind: this.adapter?.writeBehind(),
      lastError: this.lastError,
      view: this.viewSync?.status(),
      pid: process.pid
    }
  }

  /**
   * The kernel is the attribute cache on the low-level API (every name of a file is one kernel
   * inode, so its cache is exact); what reaches the daemon is what it did not answer.
   */
  private kernelCacheStats (): Record<string, unknown> {
    const a = this.adapter?.adapter
    return {
      enabled: (this.adapterOptions?.attrTimeout ?? 0) > 0,
      timeoutSeconds: this.adapterOptions?.attrTimeout,
      getattrs: a?.counters.getattr,
      lookups: a?.counters.lookup,
      forgets: a?.counters.forget,
      staleAppends: a?.counters.staleAppends,
      inodesHeld: a?.tree.referenced,
      inodesLoaded: this.fs.inodes.size,
      inodesUnloaded: a?.tree.unloaded
    }
  }

  /** Folds, unmounts and releases everything. Safe to call twice. */
  async stop (): Promise<VersionInfo | undefined> {
    if (this.stopped) return this.fs.version
    if (this.timer !== undefined) clearTimeout(this.timer)
    if (this.followTimer !== undefined) clearTimeout(this.followTimer)
    this.timer = undefined
    let v: VersionInfo | undefined
    try {
      await this.viewSync?.stop()
      v = await this.fold('unmount')
    } finally {
      this.stopped = true
      if (this.fuse3 !== undefined) {
        this.fuse3.unmount()
        await this.fuse3.ended
      }
      // Writes acknowledged after that fold, before the kernel let go: into the log and a version.
      if (!this.fs.readOnly) {
        await this.settleWrites()
        if (this.fs.pending > 0) v = (await this.fs.fold('unmount').catch(err => { this.log(`fold at unmount: ${(err as Error).message}`); return undefined })) ?? v
      }
      this.fs.log?.close()
    }
    return v
  }
}
