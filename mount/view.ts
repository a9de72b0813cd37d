/**
 * A view mount (`reef mount DIR --view VIEW`): one writer's live tree of a shared file system,
 * kept merged with the other writers' (issue 12). What it does, every `intervalMs`:
 *   1. publishes this writer's newest own version as its signed head in the view, if the network
 *      has not got it yet (a fold made it; offline, it is retried here until it goes out);
 *   2. reads every writer's head (checked against the view's writer list) and the records each
 *      appended since the last look (RecordCache: a writer's log is read once);
 *   3. if another writer's head moved, merges (src/merge: every record of every writer, in merge
 *      order; from the last merge when every newer record had seen it, else from the empty tree,
 *      with the same result) with nothing closed, so that blocks come from the network
 *      first; then, alone (the mount's gate closed, acknowledged writes applied): folds what this
 *      writer has not folded yet, merges again with that fold if there was one (local blocks
 *      only), makes the merge this writer's head, opens the live tree at it and tells the kernel
 *      what changed.
 * Why a poll and not a notify: a head is a DHT record that any node may republish and a
 * partitioned writer must catch up on anyway; a poll needs no protocol of its own, heals after
 * a partition by itself, and costs one record lookup per writer per interval (measured in
 * bench/views). Local writes never wait on the network: step 3's network part runs with the
 * gate open, and what runs alone reads local blocks only.
 * A node that is not a writer mounts read-only and follows the merge of the writers' heads.
 */
import type { CID } from 'multiformats/cid'
import { isReefError } from '../src/errors.js'
import { ReefFS, type VersionInfo } from '../src/fs/fs.js'
import { cachedSince, extendsBase, merge, type MergeResult, type RecordCache, viewInputs, type WriterInput } from '../src/merge/index.js'
import type { ReefNode } from '../src/node.js'
import { decodeVersion } from '../src/object/version.js'
import type { BlockStore } from '../src/store/types.js'
import { keyHex } from '../src/view/ids.js'
import { standingOf } from '../src/view/list.js'
import type { Logger } from './errno.js'

/** How often a view mount looks at the heads it holds, by default (ms). */
export const DEFAULT_VIEW_INTERVAL_MS = 500
/**
 * How often it also looks them up on the network (ms). In between, what a writer publishes
 * reaches the others by its DHT put, which stores the head on the k nodes closest to it and, on
 * those, starts a round at once (DhtNode.recordListeners); the lookup is for the rest.
 */
export const VIEW_LOOKUP_MS = 5000

export interface ViewSyncDeps {
  node: ReefNode
  view: CID
  log: Logger
  intervalMs?: number
  /**
   * Runs `build` alone against the live tree (after folding it, for a writer) and makes what it
   * returns the live tree; see MountDaemon.swap.
   */
  swap: (build: (live: ReefFS) => Promise<ReefFS | undefined>) => Promise<void>
  /** Test hook (REEF_TEST_VIEW_HOLD): while true, no rounds run, as if cut off from the others. */
  held?: () => boolean
}

export interface ViewStatus {
  view: string
  writer: boolean
  rounds: number
  /** Whether the last merge replayed only what was newer than the one before. */
  incremental?: boolean
  /** How long the last network round took to look up the writers' heads and read new records. */
  lookupMs?: number
  /** Rounds that looked heads up on the network (the others used the heads held here). */
  lookups: number
  /** Rounds started by a head or view record a peer put here. */
  notified: number
  /** The test hook holds this mount's rounds (REEF_TEST_VIEW_HOLD). */
  held?: boolean
  merges: number
  /** Merges that took one writer's tree as it was (it had seen every other record: nothing replayed). */
  fastForwards: number
  lastMergeMs?: number
  mergedRecords?: number
  /** Conflicts the last merge made (`reef conflicts --view` lists all open ones). */
  conflicts: number
  ownHead?: string
  published?: string
  leftOut: Array<{ key: string, code: string }>
  lastError?: string
}

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0

export class ViewSync {
  /** This writer's newest own version: what its head in the view names. */
  private ownHead?: VersionInfo
  private published?: string
  /** Heads (of the others, for a writer; of all, for a reader) the live tree is merged from. */
  private mergedFrom?: string
  private readonly cache: RecordCache = new Map()
  /** When the last round looked heads up on the network; 0: the next one does. */
  private lastLookup = 0
  /** The last merge made here: the base of the next one when it can be (extendsBase). */
  private base?: VersionInfo
  private timer?: NodeJS.Timeout
  private running?: Promise<void>
  private stopped = false
  private readonly me: Uint8Array
  /** Counters; ownHead and published are derived in status(). */
  private readonly stats: Omit<ViewStatus, 'ownHead' | 'published'>

  constructor (private readonly deps: ViewSyncDeps, readonly writer: boolean) {
    this.me = deps.node.keys.publicKey
    this.stats = { view: deps.view.toString(), writer, rounds: 0, lookups: 0, notified: 0, merges: 0, fastForwards: 0, conflicts: 0, leftOut: [] }
  }

  /** A record a peer put here: any may be this view's (a head, its list), so a round looks now. */
  private readonly onRecord = (): void => {
    if (this.stopped || this.deps.held?.() === true) return
    this.stats.notified++
    this.schedule(0)
  }

  /**
   * Whether this node writes in the view (its key is a current writer of the newest list known
   * here or on the network), and the live tree to mount: a writer's own, at its head.
   */
  static async open (node: ReefNode, view: CID, committed: (v: VersionInfo) => void, warn: (line: string) => void): Promise<{ writer: boolean, fs: ReefFS }> {
    const state = await node.views().resolve(view)
    const writer = standingOf(state.list, node.keys.publicKey).state === 'writer'
    if (!writer) return { writer, fs: await ReefFS.open({ store: node.store, warn }) }
    return { writer, fs: await node.openFs({ view, committed, warn }) }
  }

  /** Where this writer's own versions start: its head's own version (a merge names it). */
  async start (live: ReefFS): Promise<void> {
    const v = live.version
    if (this.writer && v !== undefined) this.ownHead = await this.ownVersion(v)
    this.deps.node.dht?.recordListeners.add(this.onRecord)
    this.schedule(0)
  }

  /** A fold of this writer's tree made `v`: its head in the view names it from now on. */
  folded (v: VersionInfo): void {
    this.ownHead = v
    this.schedule(0)
  }

  /** Publishes, looks up every head and merges now (reef sync); resolves when done. */
  async now (): Promise<void> {
    this.lastLookup = 0
    await this.tick()
  }

  async stop (): Promise<void> {
    this.stopped = true
    this.deps.node.dht?.recordListeners.delete(this.onRecord)
    if (this.timer !== undefined) clearTimeout(this.timer)
    while (this.running !== undefined) await this.running
  }

  private schedule (delay = this.deps.intervalMs ?? DEFAULT_VIEW_INTERVAL_MS): void {
    if (this.stopped) return
    if (this.timer !== undefined) {
      if (delay > 0) return
      clearTimeout(this.timer)
    }
    this.timer = setTimeout(() => {
      this.timer = undefined
      void this.tick().finally(() => this.schedule())
    }, delay)
  }

  private async tick (): Promise<void> {
    while (this.running !== undefined) await this.running
    if (this.stopped) return
    this.running = this.round().catch(err => {
      this.stats.lastError = isReefError(err) ? `${err.message} [${err.code}]` : String((err as Error).stack ?? err)
      this.deps.log(`view ${this.stats.view}: ${this.stats.lastError}`)
    }).finally(() => { this.running = undefined })
    await this.running
  }

  /** This writer's version in `v`: `v` itself, or (for a merge) its parent by this writer. */
  private async ownVersion (v: VersionInfo): Promise<VersionInfo | undefined> {
    if (same(v.root.author, this.me)) return v
    const n = v.root.vv?.[keyHex(this.me)]
    if (n === undefined) return undefined
    for (const p of v.root.parents) {
      const root = decodeVersion(await this.deps.node.store.get(p))
      if (same(root.author, this.me) && root.vv?.[keyHex(this.me)] === n) return { vguid: p, root }
    }
    return undefined
  }

  private async publish (): Promise<void> {
    const h = this.ownHead
    if (h === undefined || this.published === h.vguid.toString()) return
    const n = BigInt(h.root.vv?.[keyHex(this.me)] ?? 0)
    // With lookups only in lookup rounds: the first publication of a mount looks (its key may
    // have published elsewhere), the later ones sign above the head held here.
    await this.deps.node.views().publishHead(this.deps.view, { vguid: h.vguid, ...(h.root.log !== undefined ? { record: h.root.log } : {}), n }, this.published !== undefined || this.stats.lookups > 0)
    this.published = h.vguid.toString()
  }

  /** This writer's merge input from its own newest version (local blocks only). */
  private async ownInput (v: VersionInfo): Promise<WriterInput> {
    return { key: this.me, head: v.vguid, records: await cachedSince(this.deps.node.store, v.root.log, this.me, 0, () => {}, this.cache) }
  }

  /** The inputs with this writer's replaced by its own newest version (fresher than its head). */
  private async withOwn (writers: WriterInput[]): Promise<WriterInput[]> {
    if (!this.writer) return writers
    const others = writers.filter(w => !same(w.key, this.me))
    return this.ownHead === undefined ? others : [...others, await this.ownInput(this.ownHead)]
  }

  /**
   * The merge of these inputs: from the last merge when every newer record had seen it (only
   * those replayed; extendsBase), else from the empty tree. Either way the same version.
   */
  private async merge (writers: WriterInput[]): Promise<MergeResult> {
    const base = this.base !== undefined && extendsBase(this.base, writers) ? this.base : undefined
    this.stats.incremental = base !== undefined
    return await merge({ store: this.mergeStore, writers, ...(base !== undefined ? { base, extending: true } : {}) })
  }

  /**
   * Where merges read and write: reads through the node's store (the network's blocks come to
   * it), writes to the local store only. Every node computes the same merge from the heads, so its
   * blocks need no replicas: pushing them made a follower send its writer the blocks that writer
   * already had (235 ms of its 1.7 s of CPU in one profile).
   */
  private get mergeStore (): BlockStore {
    const { store, local } = this.deps.node
    return {
      get: async cid => await store.get(cid),
      has: async cid => await local.has(cid),
      put: async block => await local.put(block),
      putMany: async blocks => await local.putMany(blocks),
      delete: async cid => await local.delete(cid),
      keys: () => local.keys(),
      close: async () => {}
    }
  }

  private signature (writers: WriterInput[]): string {
    return writers.filter(w => !this.writer || !same(w.key, this.me))
      .map(w => `${keyHex(w.key)}:${w.head?.toString() ?? ''}:${w.records.length}`).sort().join(',')
  }

  private async round (): Promise<void> {
    const { node, view } = this.deps
    this.stats.held = this.deps.held?.() === true
    if (this.stats.held) return
    // The view's list and this writer's head go back on the network now and then (every 120
    // rounds: a minute at the default interval): a view made offline becomes findable, and a
    // record the DHT dropped comes back.
    if (this.stats.rounds % 120 === 0) {
      await node.views().republish(view)
      if (this.writer) this.published = undefined
    }
    this.stats.rounds++
    if (this.writer) {
      try {
        await this.publish()
      } catch (err) {
        // Offline, or the list changed: the head goes out at a later round; merging goes on.
        if (!isReefError(err)) throw err
        this.stats.lastError = `publishing this writer's head: ${err.message} [${err.code}]`
      }
    }
    const r0 = Date.now()
    const lookup = r0 - this.lastLookup >= VIEW_LOOKUP_MS
    const { writers, leftOut } = await viewInputs(node.views(), node.store, view, undefined, this.cache, { local: !lookup, ...(this.writer ? { own: this.me } : {}) })
    if (lookup) {
      this.lastLookup = r0
      this.stats.lookups++
      this.stats.lookupMs = Date.now() - r0
    }
    this.stats.leftOut = leftOut.map(l => ({ key: keyHex(l.key), code: l.code }))
    const sig = this.signature(writers)
    if (sig === this.mergedFrom) return
    // Nobody else has written yet: there is nothing to merge into this tree.
    if (sig === '' && (this.writer || writers.length === 0)) {
      this.mergedFrom = sig
      return
    }
    // With the gate open: whatever the merge needs comes over the network now.
    const t0 = Date.now()
    // Which own version the plan merges: read before the merge, since a fold may end meanwhile.
    const planned = this.ownHead?.vguid.toString()
    let out: MergeResult | undefined = await this.merge(await this.withOwn(writers))
    // Another writer's tree taken whole: its directories come over the network now, not with
    // the gate closed (a replayed merge fetched what it needed while replaying).
    if (out.fastForward !== undefined) await (await ReefFS.open({ store: node.store, version: out.version })).loadAll()
    await this.deps.swap(async live => {
      // The swap folded the live tree first: a fold since the plan makes its own input newer.
      if (this.writer && this.ownHead?.vguid.toString() !== planned) out = undefined
      const result = out ?? await this.merge(await this.withOwn(writers))
      // The new tree loads whole before anything takes it (a merge that is another writer's
      // tree may need its directories from the network): if that fails, the round is retried.
      const next = this.writer
        ? await node.openFs({ view, at: result.version, log: live.log, committed: v => this.folded(v) })
        : await ReefFS.open({ store: node.store, version: result.version })
      await next.loadAll()
      if (this.writer) await node.adopt(result.version, view)
      this.mergedFrom = sig
      // The next merge replays only what is newer than this one when this one allows it.
      this.base = result.extendable ? result.version : undefined
      this.stats.merges++
      if (result.fastForward !== undefined) this.stats.fastForwards++
      this.stats.lastMergeMs = Date.now() - t0
      this.stats.mergedRecords = result.records
      this.stats.conflicts = result.conflicts.length
      const how = result.fastForward !== undefined ? `took writer ${result.fastForward.slice(0, 8)}'s tree (it had seen every other record)` : `merged ${result.records} records of ${writers.length} writers`
      this.deps.log(`view ${this.stats.view}: ${how} into version ${result.version.root.seq} (${result.version.vguid.toString()}) in ${this.stats.lastMergeMs} ms`)
      return next
    })
  }

  status (): ViewStatus {
    const out: ViewStatus = { ...this.stats }
    if (this.ownHead !== undefined) out.ownHead = this.ownHead.vguid.toString()
    if (this.published !== undefined) out.published = this.published
    return out
  }
}
