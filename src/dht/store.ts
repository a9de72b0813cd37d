/**
 * The block store a node's file systems use when it is part of a network: the local LMDB store
 * first, then the block's replicas (its k closest nodes: from a cached key region, or found by a
 * lookup), then the other nodes that lookup found closest to it, each asked with a deadline,
 * the whole fetch (lookup included) within an overall deadline (a read through the mount, where the
 * kernel waits as long as reef does, ends with data or EIO). A corrupt or missing replica is
 * skipped and the next one tried; a block fetched from the network is verified and cached
 * locally. Puts are local and durable at once and are replicated in the background: writing
 * never waits for the network.
 */
import type { CID } from 'multiformats/cid'
import { type Block, blockKey } from '../block/index.js'
import { isReefError, ReefError } from '../errors.js'
import type { LmdbBlockStore } from '../store/lmdb.js'
import type { BlockStore } from '../store/types.js'
import type { BlockService } from './blocks.js'
import type { Member } from './members.js'
import type { Regions } from './regions.js'
import type { Replicator } from './replicator.js'

export interface FetchStats { local: number, remote: number, corruptReplicas: number, failedPeers: number, misses: number, deadlines: number }

/**
 * Default overall deadline of one block fetch from the network: three silent peers at the
 * block service's 5 s request deadline. Without it a block could try 32 peers for 160 s.
 */
export const FETCH_DEADLINE_MS = 15_000

export interface DhtStoreOptions {
  /** Peers asked per block at most (default 20: the nodes one lookup returns). */
  maxPeers?: number
  /** Overall deadline of one block fetch from the network, in ms (default FETCH_DEADLINE_MS). */
  fetchDeadlineMs?: number
  log?: (line: string) => void
}

export class DhtBlockStore implements BlockStore {
  readonly stats: FetchStats = { local: 0, remote: 0, corruptReplicas: 0, failedPeers: 0, misses: 0, deadlines: 0 }

  constructor (
    readonly local: LmdbBlockStore,
    private readonly placement: Regions<Member>,
    private readonly service: BlockService,
    private readonly replicator: Replicator,
    private readonly opts: DhtStoreOptions = {}
  ) {}

  /** Local blocks only: one that is not here is fetched when it is read. */
  prefetch (cids: CID[]): void { this.local.prefetch(cids) }

  async get (cid: CID): Promise<Uint8Array> {
    try {
      const b = await this.local.get(cid)
      this.stats.local++
      return b
    } catch (err) {
      if (!isReefError(err, 'NOT_FOUND') && !isReefError(err, 'BLOCK_CORRUPT')) throw err
      if (isReefError(err, 'BLOCK_CORRUPT')) this.opts.log?.(err.message + '; fetching a good copy from the network')
    }
    const key = blockKey(cid)
    const deadline = Date.now() + (this.opts.fetchDeadlineMs ?? FETCH_DEADLINE_MS)
    // Locally known holders first (a cached region names the k closest without a message); the
    // lookup that follows if they fail, or if none is known, names the nodes closest to the key.
    const cached = this.placement.cached(key)?.filter(m => !m.self) ?? []
    const peers: Member[] = [...cached]
    let looked = false
    let asked = 0
    for (let i = 0; i < peers.length || !looked; i++) {
      if (i >= peers.length) {
        looked = true
        const left = deadline - Date.now()
        if (left <= 0) break
        const failed0 = this.placement.stats.failedRequests
        try {
          // Half of what is left at most, so that the holders it names can still be asked.
          const found = await this.placement.lookupAll(key, AbortSignal.timeout(Math.max(1, Math.floor(left / 2))))
          // Peers that failed the lookup's requests failed this fetch too.
          this.stats.failedPeers += this.placement.stats.failedRequests - failed0
          for (const m of found) if (!m.self && !peers.some(p => p.key === m.key)) peers.push(m)
        } catch (err) {
          this.opts.log?.(`lookup for ${cid.toString()}: ${(err as Error).message}`)
        }
        if (i >= peers.length) break
      }
      if (asked >= (this.opts.maxPeers ?? 20)) break
      const m = peers[i]
      const left = deadline - Date.now()
      if (left <= 0) break
      asked++
      try {
        // The request itself ends by what is left of the deadline: a peer that fails then is the
        // last one asked.
        const d = await this.service.getFrom(m.id, key, left)
        if (d === undefined) continue
        // A cache copy: verified already, and re-fetchable, so the read does not wait for the
        // local fsync (it used to, for several ms per block). Marked as such, repair leaves it
        // out: every reader checking its copies' replicas made a 64-node network's reads crawl.
        this.local.putCacheCopy({ cid, bytes: d }).catch(err => this.opts.log?.(`cache ${cid.toString()}: ${(err as Error).message}`))
        this.stats.remote++
        return d
      } catch (err) {
        if (isReefError(err, 'BLOCK_CORRUPT')) {
          this.stats.corruptReplicas++
          this.opts.log?.(err.message)
        } else {
          this.stats.failedPeers++
          this.placement.suspect(m.key)
        }
      }
    }
    this.stats.misses++
    const late = Date.now() >= deadline
    if (late) this.stats.deadlines++
    throw ReefError.notFound(`block ${cid.toString()} (not local, and none of the ${asked} peers asked (of ${peers.length}) has a good copy` +
      (late ? `; gave up after the ${this.opts.fetchDeadlineMs ?? FETCH_DEADLINE_MS} ms fetch deadline)` : ')'))
  }

  async has (cid: CID): Promise<boolean> { return await this.local.has(cid) }

  async put (block: Block): Promise<void> { await this.putMany([block]) }

  async putMany (blocks: Iterable<Block>): Promise<void> {
    const list = [...blocks]
    // Queued before the local write: pushes start from the bytes at hand while it becomes durable,
    // and a repair pass never finds a stored block that is not queued yet (it pushed such blocks
    // a second time).
    const keys = list.map(b => blockKey(b.cid))
    this.replicator.enqueue(keys, list.map(b => b.bytes))
    await this.local.putMany(list)
    this.replicator.track(keys)
  }

  async delete (cid: CID): Promise<void> { await this.local.delete(cid) }
  keys (): AsyncIterable<Uint8Array> { return this.local.keys() }
  async close (): Promise<void> {}
}
