import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { blockKey, type CID } from '../src/block/index.js'
import { LmdbBlockStore, LmdbHeadStore, LmdbStore } from '../src/store/lmdb.js'
import { MemoryBlockStore, MemoryHeadStore } from '../src/store/memory.js'
import { aguidFor } from '../src/naming/index.js'
import { blockStoreSuite, headStoreSuite, randomBlock, sameBytes } from './helpers/store-suite.js'

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const norm = (e: { seq: bigint, bytes: Uint8Array } | undefined): { seq: bigint, bytes: string } | undefined =>
  e === undefined ? undefined : { seq: e.seq, bytes: hex(e.bytes) }

function tempDir (): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'reef-store-'))
}

function wrongBytes (n: number): Uint8Array {
  const b = new Uint8Array(Math.max(n, 1))
  b.fill(0xa5)
  return b
}

await blockStoreSuite(t, 'MemoryBlockStore', async () => {
  const store = new MemoryBlockStore()
  return {
    store,
    corrupt: async (cid: CID) => {
      const key = hex(blockKey(cid))
      const cur = store.blocks.get(key)
      store.blocks.set(key, wrongBytes(cur?.length ?? 1))
    },
    cleanup: async () => await store.close()
  }
})

await headStoreSuite(t, 'MemoryHeadStore', async () => {
  const store = new MemoryHeadStore()
  return { store, cleanup: async () => await store.close() }
})

// The suite runs once with fsync on (the production setting) and once with noSync (tests, benches).
for (const noSync of [false, true]) {
  await blockStoreSuite(t, `LmdbBlockStore${noSync ? ' (noSync)' : ''}`, async () => {
    const dir = tempDir()
    const db = new LmdbStore({ path: dir, noSync })
    const store = new LmdbBlockStore(db, true)
    return {
      store,
      corrupt: async (cid: CID) => {
        const key = blockKey(cid) as Buffer
        const cur = db.blocks.getBinary(key)
        db.blocks.putSync(key, wrongBytes(cur?.length ?? 1))
      },
      cleanup: async () => {
        await store.close()
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }
  })

  await headStoreSuite(t, `LmdbHeadStore${noSync ? ' (noSync)' : ''}`, async () => {
    const dir = tempDir()
    const store = new LmdbHeadStore(new LmdbStore({ path: dir, noSync }), true)
    return {
      store,
      cleanup: async () => {
        await store.close()
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }
  })
}

t.test('LMDB: blocks, heads and forks survive close and reopen', async t => {
  const dir = t.testdir()
  const blocks = Array.from({ length: 50 }, (_, i) => randomBlock(1 + i * 5000))
  const a = aguidFor(new Uint8Array(32).fill(3), 'home')
  const headBytes = new Uint8Array([1, 2, 3, 4])
  const forkBytes = new Uint8Array([9, 9])
  {
    const db = new LmdbStore({ path: dir })
    const bs = new LmdbBlockStore(db)
    const hs = new LmdbHeadStore(db)
    await bs.putMany(blocks.slice(0, 25))
    for (const b of blocks.slice(25)) await bs.put(b)
    await bs.delete(blocks[0].cid)
    await hs.putHeadIfHigher(a, 7n, headBytes)
    await hs.recordFork(a, 7n, forkBytes)
    await db.close()
  }
  const db = new LmdbStore({ path: dir })
  const bs = new LmdbBlockStore(db)
  const hs = new LmdbHeadStore(db)
  t.teardown(async () => await db.close())
  t.equal(await bs.has(blocks[0].cid), false, 'the delete is durable')
  for (const b of blocks.slice(1)) sameBytes(t, await bs.get(b.cid), b.bytes)
  const keys: string[] = []
  for await (const k of bs.keys()) keys.push(hex(k))
  t.same(keys.sort(), blocks.slice(1).map(b => hex(blockKey(b.cid))).sort())
  t.same(norm(await hs.getHead(a)), { seq: 7n, bytes: hex(headBytes) })
  t.same(norm(await hs.putHeadIfHigher(a, 6n, new Uint8Array([0]))), { seq: 7n, bytes: hex(headBytes) }, 'rollback still refused after reopen')
  t.same((await hs.forks(a)).map(norm), [{ seq: 7n, bytes: hex(forkBytes) }])
})

t.test('LMDB: two handles on one directory see each other\'s writes', async t => {
  const dir = t.testdir()
  const db1 = new LmdbStore({ path: dir })
  const db2 = new LmdbStore({ path: dir })
  t.teardown(async () => { await db1.close(); await db2.close() })
  const b = randomBlock(777)
  await new LmdbBlockStore(db1).put(b)
  sameBytes(t, await new LmdbBlockStore(db2).get(b.cid), b.bytes)
})

t.test('LMDB: an unopenable path is STORE_CORRUPT', async t => {
  const dir = t.testdir({ 'not-a-dir': 'plain file' })
  t.throws(() => new LmdbStore({ path: path.join(dir, 'not-a-dir', 'store') }), { code: 'STORE_CORRUPT' })
})

t.test('LMDB: a path with a dot in its last component is still a directory', async t => {
  const dir = path.join(t.testdir(), 'data.reef')
  const db = new LmdbStore({ path: dir })
  const b = randomBlock(10)
  await new LmdbBlockStore(db).put(b)
  await db.close()
  t.ok(fs.statSync(dir).isDirectory(), 'the environment lives inside the directory')
  const again = new LmdbStore({ path: dir })
  t.teardown(async () => await again.close())
  sameBytes(t, await new LmdbBlockStore(again).get(b.cid), b.bytes)
})
