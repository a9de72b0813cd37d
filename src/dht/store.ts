/**
 * The block store a node's file systems use when it is part of a network: the local LMDB store
 * first, then the block's replicas in order of closeness, then everyone else, each asked with
 * a deadline. A corrupt or missing replica is skipped and the next one tried; a block fetched
 * from the network is verified and cached locally. Puts are local and durable at once and are
 * replicated in the background: writing never waits for the network.
 */
import type { CID } from 'multiformats/cid'
import { type Block, blockKey } from '../block/index.js'
import { isReefError, ReefError } from '../errors.js'
import type { LmdbBlockStore } from '../store/lmdb.js'
import type { BlockStore } from '../store/types.js'
import type { BlockService } from './blocks.js'
import type { Members } from './members.js'
import type { Replicator } from './replicator.js'

export interface FetchStats { local: number, remote: number, corruptReplicas: number, failedPeers: number, misses: number }

export class DhtBlockStore implements BlockStore {
  readonly stats: FetchStats = { local: 0, remote: 0, corruptReplicas: 0, failedPeers: 0, misses: 0 }

  constructor (
    readonly local: LmdbBlockStore,
    private readonly members: Members,
    private readonly service: BlockService,
    private readonly replicator: Replicator,
    private readonly opts: { maxPeers?: number, log?: (line: string) => void } = {}
  ) {}

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
    const peers = this.members.ranked(key).filter(m => !m.self).slice(0, this.opts.maxPeers ?? 32)
    for (const m of peers) {
      try {
        const d = await this.service.getFrom(m.id, key)
        if (d === undefined) continue
        // A cache copy: verified already, and re-fetchable, so the read does not wait for the
        // local fsync (it used to, for several ms per block).
        this.local.put({ cid, bytes: d }).catch(err => this.opts.log?.(`cache ${cid.toString()}: ${(err as Error).message}`))
        this.stats.remote++
        return d
      } catch (err) {
        if (isReefError(err, 'BLOCK_CORRUPT')) {
          this.stats.corruptReplicas++
          this.opts.log?.(err.message)
        } else {
          this.stats.failedPeers++
        }
      }
    }
    this.stats.misses++
    throw ReefError.notFound(`block ${cid.toString()} (not local, and none of ${peers.length} peers has a good copy)`)
  }

  async has (cid: CID): Promise<boolean> { return await this.local.has(cid) }

  async put (block: Block): Promise<void> { await this.putMany([block]) }

  async putMany (blocks: Iterable<Block>): Promise<void> {
    const list = [...blocks]
    await this.local.putMany(list)
    this.replicator.enqueue(list.map(b => blockKey(b.cid)), list.map(b => b.bytes))
    this.replicator.track(list.map(b => blockKey(b.cid)))
  }

  async delete (cid: CID): Promise<void> { await this.local.delete(cid) }
  keys (): AsyncIterable<Uint8Array> { return this.local.keys() }
  async close (): Promise<void> {}
}
