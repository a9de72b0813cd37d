import type { CID } from 'multiformats/cid'
import type { Block } from '../block/index.js'

/** Read side of a block store: every implementation verifies bytes against the CID it returns them for. */
export interface BlockGetter {
  /** Verified bytes; NOT_FOUND if absent, BLOCK_CORRUPT if stored bytes do not hash to `cid`. */
  get (cid: CID): Promise<Uint8Array>
  /**
   * A hint that these blocks will be read soon: a store that can bring them into memory off
   * the caller's thread does (the local store's pages fault in on a worker thread instead of
   * during a later synchronous get). Never fails, never waits.
   */
  prefetch?: (cids: CID[]) => void
}

export interface BlockPutter {
  /** Durable once the promise resolves. Idempotent. */
  put (block: Block): Promise<void>
}

export interface BlockStore extends BlockGetter, BlockPutter {
  has (cid: CID): Promise<boolean>
  /** Stores many blocks, durable together once the promise resolves. */
  putMany (blocks: Iterable<Block>): Promise<void>
  delete (cid: CID): Promise<void>
  /** Digests (32-byte sha256) of every stored block. */
  keys (): AsyncIterable<Uint8Array>
  close (): Promise<void>
}

/**
 * Durable storage of the best signed head per AGUID. The rules (signature, seq monotonicity,
 * forks) live in src/naming; a store only offers an atomic compare-and-set on the sequence number.
 */
export interface HeadStore {
  /** Encoded head and its seq, if any head is stored for this AGUID. */
  getHead (aguid: CID): Promise<{ seq: bigint, bytes: Uint8Array } | undefined>
  /**
   * Stores `bytes` as the head iff `seq` is higher than the stored one. Returns the stored entry
   * that blocked it (same or higher seq) when refused, undefined when stored.
   */
  putHeadIfHigher (aguid: CID, seq: bigint, bytes: Uint8Array): Promise<{ seq: bigint, bytes: Uint8Array } | undefined>
  /** Records fork evidence: a second, different head at an already-seen seq. */
  recordFork (aguid: CID, seq: bigint, bytes: Uint8Array): Promise<void>
  forks (aguid: CID): Promise<Array<{ seq: bigint, bytes: Uint8Array }>>
  close (): Promise<void>
}
