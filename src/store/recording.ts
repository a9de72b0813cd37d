import type { CID } from 'multiformats/cid'
import { type Block, blockKey } from '../block/index.js'
import type { BlockStore } from './types.js'

/** A view of a store that remembers the key of every block put through it (for --wait-replicated). */
export function recording (store: BlockStore): { store: BlockStore, keys: Uint8Array[] } {
  const keys: Uint8Array[] = []
  const view: BlockStore = {
    get: async (cid: CID) => await store.get(cid),
    has: async (cid: CID) => await store.has(cid),
    put: async (b: Block) => { keys.push(blockKey(b.cid)); await store.put(b) },
    putMany: async (bs: Iterable<Block>) => {
      const list = [...bs]
      for (const b of list) keys.push(blockKey(b.cid))
      await store.putMany(list)
    },
    delete: async (cid: CID) => await store.delete(cid),
    keys: () => store.keys(),
    close: async () => {}
  }
  return { store: view, keys }
}
