import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { blockKey, type CID } from '../src/block/index.js'
import { LmdbBlockStore, LmdbHeadStore, LmdbStore } from '../src/store/lmdb.js'
import { checkLmdbFile } from '../src/store/lmdb-check.js'
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

t.test('LMDB: read-cache copies are marked until the block is put or pushed here, and the mark survives reopen', async t => {
  const dir = t.testdir()
  const [cached, owned, promoted, deleted] = Array.from({ length: 4 }, (_, i) => randomBlock(100 + i))
  {
    const db = new LmdbStore({ path: dir })
    const bs = new LmdbBlockStore(db)
    await bs.put(owned)
    await bs.putCacheCopy(owned)
    t.equal(bs.isCacheCopy(blockKey(owned.cid)), false, 'a block held already stays what it was')
    for (const b of [cached, promoted, deleted]) await bs.putCacheCopy(b)
    t.equal(bs.isCacheCopy(blockKey(cached.cid)), true, 'a fetched block is a cache copy')
    sameBytes(t, await bs.get(cached.cid), cached.bytes)
    await bs.putMany([promoted])
    t.equal(bs.isCacheCopy(blockKey(promoted.cid)), false, 'a put (or a replica push) makes it this node\'s')
    await bs.delete(deleted.cid)
    await bs.put(deleted)
    t.equal(bs.isCacheCopy(blockKey(deleted.cid)), false, 'a delete takes the mark with the block')
    await db.close()
  }
  const db = new LmdbStore({ path: dir })
  const bs = new LmdbBlockStore(db)
  t.teardown(async () => await db.close())
  t.equal(bs.isCacheCopy(blockKey(cached.cid)), true, 'the mark survives a reopen')
  t.equal(bs.isCacheCopy(blockKey(promoted.cid)), false)
  sameBytes(t, await bs.get(cached.cid), cached.bytes)
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

// A damaged data.mdb must be refused before lmdb maps it: lmdb's native code trusts the file and
// crashes the process (SIGSEGV/SIGBUS) on a truncated or overwritten one, which would end this
// test file too, so every case here also checks that the refusal comes first.
t.test('LMDB: a damaged data file is STORE_CORRUPT, never a crash', async t => {
  const made = t.testdir()
  const blocks = Array.from({ length: 40 }, (_, i) => randomBlock(1000 + i * 3000))
  {
    const db = new LmdbStore({ path: made })
    await new LmdbBlockStore(db).putMany(blocks)
    await db.close()
  }
  const good = fs.readFileSync(path.join(made, 'data.mdb'))
  const info = checkLmdbFile(path.join(made, 'data.mdb'), { create: false, overlappingSync: true })
  t.ok(info !== undefined && info.psize >= 512 && good.length >= (info.lastPage + 1) * info.psize, 'the intact file passes', info)
  const psize = info?.psize ?? 4096
  const cases: Array<[string, (b: Buffer) => Buffer, RegExp]> = [
    ['emptied', () => Buffer.alloc(0), /empty \(0 bytes\)/],
    ['truncated to one page', b => b.subarray(0, psize), /shorter than its two/],
    ['truncated to 100 bytes', b => b.subarray(0, 100), /too short/],
    ['truncated in the middle', b => b.subarray(0, Math.floor(b.length / 2)), /truncated/],
    ['first 8 KiB random', b => Buffer.concat([Buffer.from(Array.from({ length: 8192 }, (_, i) => (i * 7919 + 13) % 251)), b.subarray(8192)]), /not an LMDB meta page|magic/],
    ['magic overwritten', b => { const c = Buffer.from(b); c.writeUInt32LE(0x12345678, 24); return c }, /magic 0x12345678/],
    ['format version changed', b => { const c = Buffer.from(b); c.writeUInt32LE(7, 28); return c }, /data format 7/],
    ['page size impossible', b => { const c = Buffer.from(b); c.writeUInt32LE(3000, 48); return c }, /page size 3000/],
    ['second meta page zeroed', b => { const c = Buffer.from(b); c.fill(0, psize, 2 * psize); return c }, /page 1 is not an LMDB meta page/],
    ['last page far past the end', b => {
      const c = Buffer.from(b)
      for (const at of [24, psize + 24, psize / 2 + 24]) c.writeBigUInt64LE(1n << 40n, at + 120)
      return c
    }, /uses pages up to 1099511627776/]
  ]
  for (const [what, damage, message] of cases) {
    const dir = t.testdir()
    fs.writeFileSync(path.join(dir, 'data.mdb'), damage(good))
    const before = fs.readFileSync(path.join(dir, 'data.mdb'))
    let err: unknown
    try {
      const db = new LmdbStore({ path: dir, create: false })
      await db.close()
    } catch (e) { err = e }
    t.match(err, { code: 'STORE_CORRUPT', message }, `${what}: refused`)
    t.match((err as Error | undefined)?.message, path.join(dir, 'data.mdb'), `${what}: the message names the file`)
    t.ok(fs.readFileSync(path.join(dir, 'data.mdb')).equals(before), `${what}: the file is left as it was`)
  }

  const missing = t.testdir()
  t.throws(() => new LmdbStore({ path: missing, create: false }), { code: 'STORE_CORRUPT', message: /missing/ }, 'a missing store is refused when it must exist')
  t.same(fs.readdirSync(missing), [], 'and not created')
  const empty = t.testdir({ 'data.mdb': '' })
  const fresh = new LmdbStore({ path: empty })
  t.equal(await new LmdbBlockStore(fresh).has(blocks[0].cid), false, 'create: a 0-byte file is a new store (lmdb was killed while creating it)')
  await fresh.close()
})

t.test('LMDB: a file that ends before its last page opens when the missing pages are free', async t => {
  // Pages allocated and freed within one transaction are never written, so LMDB's own file can
  // end before the last page its meta records (mdb_env_copy allows for it): a check on the size
  // alone would refuse a good store. A large value put and removed in one transaction makes one.
  const dir = t.testdir()
  const keep = Array.from({ length: 5 }, (_, i) => randomBlock(2000 + i * 7000))
  {
    const db = new LmdbStore({ path: dir })
    await new LmdbBlockStore(db).putMany(keep)
    const gone = randomBlock(300_000)
    await db.blocks.transaction(() => {
      void db.blocks.put(blockKey(gone.cid) as Buffer, Buffer.from(gone.bytes))
      void db.blocks.remove(blockKey(gone.cid) as Buffer)
    })
    await db.close()
  }
  const file = path.join(dir, 'data.mdb')
  const info = checkLmdbFile(file, { create: false, overlappingSync: true })
  t.ok(info !== undefined && info.freeTail > 0, 'the file ends before the last page, every missing page free', info)
  const db = new LmdbStore({ path: dir, create: false })
  for (const b of keep) sameBytes(t, await new LmdbBlockStore(db).get(b.cid), b.bytes)
  const more = randomBlock(50_000)
  await new LmdbBlockStore(db).put(more)
  sameBytes(t, await new LmdbBlockStore(db).get(more.cid), more.bytes, 'and takes new writes')
  await db.close()
  // Cut into pages the snapshot uses: refused.
  const size = fs.statSync(file).size
  const psize = info?.psize ?? 4096
  fs.truncateSync(file, Math.max(2 * psize, size - 6 * psize))
  t.throws(() => new LmdbStore({ path: dir, create: false }), { code: 'STORE_CORRUPT', message: /truncated/ })
})

t.test('LMDB: initialize creates an empty store once and keeps an existing one', async t => {
  const dir = path.join(t.testdir(), 'store')
  LmdbStore.initialize(dir)
  const b = randomBlock(5000)
  {
    const db = new LmdbStore({ path: dir, create: false })
    await new LmdbBlockStore(db).put(b)
    await db.close()
  }
  LmdbStore.initialize(dir)
  const db = new LmdbStore({ path: dir, create: false, noSync: true })
  t.teardown(async () => await db.close())
  sameBytes(t, await new LmdbBlockStore(db).get(b.cid), b.bytes, 'a second initialize keeps the blocks')
  const corrupt = path.join(t.testdir(), 'store')
  fs.mkdirSync(corrupt)
  fs.writeFileSync(path.join(corrupt, 'data.mdb'), Buffer.alloc(10_000, 1))
  t.throws(() => LmdbStore.initialize(corrupt), { code: 'STORE_CORRUPT' }, 'initialize does not paper over a damaged store')
})
