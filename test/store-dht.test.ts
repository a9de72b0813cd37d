// The block store conformance suite on the DHT store: a node's DhtBlockStore (local LMDB plus
// two peers over real libp2p connections on 127.0.0.1) behaves like every other block store.
import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { blockKey, type CID } from '../src/block/index.js'
import { generateKeyPair } from '../src/crypto/sign.js'
import { DhtNode } from '../src/dht/index.js'
import { HeadBook } from '../src/naming/index.js'
import { LmdbBlockStore, LmdbHeadStore, LmdbStore } from '../src/store/lmdb.js'
import { blockStoreSuite } from './helpers/store-suite.js'

interface Peer { node: DhtNode, db: LmdbStore, dir: string }

async function startPeer (bootstrap: string[]): Promise<Peer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-dhtstore-'))
  const db = new LmdbStore({ path: dir, noSync: true })
  const headStore = new LmdbHeadStore(db)
  const node = await DhtNode.start(generateKeyPair().secretKey, new LmdbBlockStore(db), new HeadBook(headStore), headStore, {
    listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap, k: 3
  })
  return { node, db, dir }
}

async function stopPeer (p: Peer): Promise<void> {
  await p.node.stop()
  await p.db.close()
  fs.rmSync(p.dir, { recursive: true, force: true })
}

await blockStoreSuite(t, 'DhtBlockStore (3 nodes, k=3)', async () => {
  const a = await startPeer([])
  const b = await startPeer([a.node.addrs()[0]])
  const c = await startPeer([a.node.addrs()[0]])
  // Bounded wait until all three see each other (placement needs the full membership).
  for (let i = 0; i < 200 && [a, b, c].some(p => p.node.members.size < 3); i++) await new Promise(resolve => setTimeout(resolve, 25))
  if ([a, b, c].some(p => p.node.members.size < 3)) throw new Error('the three nodes did not find each other within 5 s')
  return {
    store: a.node.store,
    heals: true,
    settle: async () => { await a.node.replicator.waitIdle(10_000) },
    corrupt: async (cid: CID) => {
      const key = blockKey(cid) as Buffer
      const cur = a.db.blocks.getBinary(key)
      a.db.blocks.putSync(key, new Uint8Array(Math.max(cur?.length ?? 1, 1)).fill(0xa5))
    },
    cleanup: async () => {
      for (const p of [c, b, a]) await stopPeer(p)
    }
  }
})
