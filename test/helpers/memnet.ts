/**
 * Many real reef DHT nodes in one process on libp2p's in-memory transport (@libp2p/memory):
 * the whole libp2p stack (noise, yamux, identify, kad-dht, the block protocol, the connection
 * manager) runs as it does over TCP, without a process and a socket per node, so 64 nodes fit
 * a loaded 2-core machine. Each node has its own LMDB store (noSync) in a temp directory;
 * teardown stops every node and removes the directories.
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { DhtNode, type DhtOptions } from '../../src/dht/index.js'
import { HeadBook } from '../../src/naming/index.js'
import { LmdbBlockStore, LmdbHeadStore, LmdbStore } from '../../src/store/lmdb.js'
import { rmTree } from './cli.js'

interface TapLike { teardown: (fn: () => void | Promise<void>) => void }

export interface MemNode { i: number, node: DhtNode, db: LmdbStore, dir: string, stop: () => Promise<void>, alive: () => boolean }

export interface MemNetOptions extends Partial<DhtOptions> {
  /** 'chain': node i joins through node i-1; 'star': every node joins through node 0. */
  topology?: 'chain' | 'star'
}

let net = 0

export async function startMemNode (t: TapLike, base: string, i: number, bootstrap: string[], opts: Partial<DhtOptions>): Promise<MemNode> {
  const dir = path.join(base, `n${i}`)
  fs.mkdirSync(dir, { recursive: true })
  const db = new LmdbStore({ path: dir, noSync: true })
  const headStore = new LmdbHeadStore(db)
  const node = await DhtNode.start(crypto.randomBytes(32), new LmdbBlockStore(db), new HeadBook(headStore), headStore, {
    ...opts,
    listen: [`/memory/reef-${process.pid}-${net}-${i}`],
    bootstrap,
    transport: 'memory'
  })
  let stopped: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    stopped ??= (async () => {
      await node.stop().catch(() => {})
      await db.close().catch(() => {})
    })()
    await stopped
  }
  t.teardown(stop)
  return { i, node, db, dir, stop, alive: () => stopped === undefined }
}

/** Starts `n` in-memory nodes, one after the other, each joining through the topology's choice. */
export async function startMemNet (t: TapLike, n: number, opts: MemNetOptions = {}): Promise<{ nodes: MemNode[], base: string }> {
  net++
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-memnet-'))
  const nodes: MemNode[] = []
  // Registered first, so it runs after every node's own teardown.
  t.teardown(() => rmTree(base))
  for (let i = 0; i < n; i++) {
    const via = i === 0 ? [] : opts.topology === 'star' ? nodes[0].node.addrs() : nodes[i - 1].node.addrs()
    nodes.push(await startMemNode(t, base, i, via, opts))
    if (process.env.REEF_MEMNET_PROGRESS === '1') console.error(`memnet: node ${i} up at ${new Date().toISOString()}`)
  }
  return { nodes, base }
}
