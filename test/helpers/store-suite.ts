/**
 * Conformance suites for the store interfaces (after perkeep's storagetest): every BlockStore and
 * HeadStore implementation runs the same checks, so memory, disk and (later) DHT stores agree.
 */
import { randomBytes } from 'node:crypto'
import type { Test } from 'tap'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { blockKey, cidFor, DAG_CBOR, makeBlock, MAX_BLOCK_SIZE, RAW, type Block } from '../../src/block/index.js'
import { aguidFor } from '../../src/naming/index.js'
import type { BlockStore, HeadStore } from '../../src/store/types.js'

export interface BlockStoreFixture {
  store: BlockStore
  /** Replaces the stored bytes of `cid` with other bytes, behind the store's back. */
  corrupt: (cid: CID) => Promise<void>
  cleanup: () => Promise<void>
  /**
   * Networked stores: a corrupt or deleted local copy is replaced by a verified copy from a
   * replica, so get returns the right bytes instead of failing (never wrong bytes either way).
   * `settle` waits until puts have reached their replicas.
   */
  heals?: boolean
  settle?: () => Promise<void>
}

export interface HeadStoreFixture {
  store: HeadStore
  cleanup: () => Promise<void>
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

/** Byte equality whatever the Uint8Array subclass (lmdb returns Buffers), without a huge diff. */
export function sameBytes (t: Test, got: Uint8Array, want: Uint8Array, msg = 'same bytes'): void {
  t.ok(got.length === want.length && Buffer.compare(got, want) === 0, msg, { gotLength: got.length, wantLength: want.length })
}

export function randomBlock (size: number, codec = RAW): Block {
  return makeBlock(new Uint8Array(randomBytes(size)), codec)
}

async function allKeys (store: BlockStore): Promise<string[]> {
  const out: string[] = []
  for await (const k of store.keys()) {
    if (k.length !== 32) throw new Error(`key of ${k.length} bytes`)
    out.push(hex(k))
  }
  return out.sort()
}

export function blockStoreSuite (t: Test, name: string, factory: () => Promise<BlockStoreFixture>): Promise<void> {
  return t.test(`BlockStore conformance: ${name}`, async t => {
    const each = (title: string, fn: (t: Test, f: BlockStoreFixture) => Promise<void>): Promise<void> =>
      t.test(title, async t => {
        const f = await factory()
        try { await fn(t, f) } finally { await f.cleanup() }
      })

    await each('put, has, get', async (t, { store }) => {
      const b = randomBlock(1000)
      t.equal(await store.has(b.cid), false, 'absent before put')
      await store.put(b)
      t.equal(await store.has(b.cid), true, 'present after put')
      sameBytes(t, await store.get(b.cid), b.bytes, 'get returns the bytes put')
      t.same(await allKeys(store), [hex(blockKey(b.cid))], 'keys lists exactly the digest')
    })

    await each('empty block', async (t, { store }) => {
      const b = makeBlock(new Uint8Array(0))
      await store.put(b)
      t.equal((await store.get(b.cid)).length, 0)
      t.equal(await store.has(b.cid), true)
    })

    await each('missing get is NOT_FOUND, missing has is false', async (t, { store }) => {
      const b = randomBlock(10)
      await t.rejects(store.get(b.cid), { code: 'NOT_FOUND' })
      t.equal(await store.has(b.cid), false)
      await store.put(randomBlock(10))
      await t.rejects(store.get(b.cid), { code: 'NOT_FOUND' }, 'still not found when others exist')
    })

    await each('blocks are keyed by digest: the codec does not matter', async (t, { store }) => {
      const bytes = new Uint8Array(randomBytes(100))
      await store.put(makeBlock(bytes, RAW))
      const asCbor = cidFor(bytes, DAG_CBOR)
      t.equal(await store.has(asCbor), true)
      sameBytes(t, await store.get(asCbor), bytes)
    })

    await each('a non-sha256 CID is BAD_GUID everywhere', async (t, { store }) => {
      const bytes = new Uint8Array(randomBytes(32))
      const cid = CID.createV1(RAW, Digest.create(0x13, new Uint8Array(randomBytes(64)))) // sha2-512
      await t.rejects(store.get(cid), { code: 'BAD_GUID' })
      await t.rejects(store.has(cid), { code: 'BAD_GUID' })
      await t.rejects(store.put({ cid, bytes }), { code: 'BAD_GUID' })
      await t.rejects(store.delete(cid), { code: 'BAD_GUID' })
    })

    await each('delete', async (t, { store, heals, settle }) => {
      const a = randomBlock(100)
      const b = randomBlock(100)
      await store.putMany([a, b])
      await settle?.()
      await store.delete(a.cid)
      t.equal(await store.has(a.cid), false)
      // A networked store drops its local copy; the block's replicas still serve it.
      if (heals === true) sameBytes(t, await store.get(a.cid), a.bytes, 'served by a replica after a local delete')
      else await t.rejects(store.get(a.cid), { code: 'NOT_FOUND' })
      await store.delete(a.cid)
      sameBytes(t, await store.get(b.cid), b.bytes, 'the other block is untouched')
      await store.delete(a.cid) // deleting an absent block is not an error
      t.same(await allKeys(store), [hex(blockKey(b.cid))])
      await store.put(a)
      sameBytes(t, await store.get(a.cid), a.bytes, 'can be put again after delete')
    })

    await each('idempotent put', async (t, { store }) => {
      const b = randomBlock(5000)
      await store.put(b)
      await store.put(b)
      await store.putMany([b, b])
      t.same(await allKeys(store), [hex(blockKey(b.cid))], 'one key after four puts')
      sameBytes(t, await store.get(b.cid), b.bytes)
    })

    await each('putMany and keys', async (t, { store }) => {
      const blocks = Array.from({ length: 200 }, (_, i) => randomBlock(1 + (i * 997) % 20000))
      await store.putMany(blocks)
      t.same(await allKeys(store), blocks.map(b => hex(blockKey(b.cid))).sort(), 'keys are exactly the blocks put')
      for (const b of blocks) sameBytes(t, await store.get(b.cid), b.bytes)
      await store.putMany([])
      t.equal((await allKeys(store)).length, 200, 'empty putMany is a no-op')
    })

    await each('concurrent puts', async (t, { store }) => {
      const blocks = Array.from({ length: 100 }, () => randomBlock(3000))
      await Promise.all(blocks.map(async b => await store.put(b)))
      const got = await Promise.all(blocks.map(async b => await store.get(b.cid)))
      t.ok(got.every((g, i) => Buffer.compare(g, blocks[i].bytes) === 0), 'every concurrent put is readable')
      t.equal((await allKeys(store)).length, 100)
    })

    await each('the store keeps its own copy', async (t, { store }) => {
      const bytes = new Uint8Array(randomBytes(4096))
      const original = bytes.slice()
      const b = makeBlock(bytes)
      const p = store.put(b)
      bytes.fill(0) // caller reuses its buffer before the put resolves
      await p
      sameBytes(t, await store.get(b.cid), original, 'mutating the input after put does not change the block')
      const got = await store.get(b.cid)
      got.fill(7)
      sameBytes(t, await store.get(b.cid), original, 'mutating a returned buffer does not change the block')
    })

    await each('corrupt stored bytes: get throws BLOCK_CORRUPT, never wrong bytes', async (t, { store, corrupt, heals, settle }) => {
      const good = randomBlock(2000)
      const victim = randomBlock(2000)
      await store.putMany([good, victim])
      await settle?.()
      await corrupt(victim.cid)
      if (heals === true) {
        sameBytes(t, await store.get(victim.cid), victim.bytes, 'a corrupt local copy is replaced by a verified replica')
        await corrupt(good.cid)
        sameBytes(t, await store.get(good.cid), good.bytes, 'and again for another block')
        return
      }
      await t.rejects(store.get(victim.cid), { code: 'BLOCK_CORRUPT' })
      sameBytes(t, await store.get(good.cid), good.bytes, 'other blocks still read')
      await store.delete(victim.cid)
      await store.put(victim)
      sameBytes(t, await store.get(victim.cid), victim.bytes, 'a corrupt block is repaired by delete + put')
    })

    await each('large blocks near MAX_BLOCK_SIZE', async (t, { store }) => {
      const sizes = [MAX_BLOCK_SIZE, MAX_BLOCK_SIZE - 1, 1024 * 1024 + 1]
      const blocks = sizes.map(s => randomBlock(s))
      for (const b of blocks) await store.put(b)
      for (const b of blocks) {
        const got = await store.get(b.cid)
        t.equal(got.length, b.bytes.length)
        t.ok(Buffer.compare(got, b.bytes) === 0, `${b.bytes.length} bytes roundtrip`)
      }
    })
  }).then(() => undefined)
}

const norm = (e: { seq: bigint, bytes: Uint8Array } | undefined): { seq: bigint, bytes: string } | undefined =>
  e === undefined ? undefined : { seq: e.seq, bytes: hex(e.bytes) }

export function headStoreSuite (t: Test, name: string, factory: () => Promise<HeadStoreFixture>): Promise<void> {
  return t.test(`HeadStore conformance: ${name}`, async t => {
    const each = (title: string, fn: (t: Test, s: HeadStore) => Promise<void>): Promise<void> =>
      t.test(title, async t => {
        const f = await factory()
        try { await fn(t, f.store) } finally { await f.cleanup() }
      })
    const aguid = (): CID => aguidFor(new Uint8Array(randomBytes(32)), 'fs')
    const payload = (n: number): Uint8Array => new Uint8Array(randomBytes(n))

    await each('no head at first', async (t, s) => {
      t.equal(await s.getHead(aguid()), undefined)
      t.same(await s.forks(aguid()), [])
    })

    await each('putHeadIfHigher: higher wins, lower and equal are refused with the blocking entry', async (t, s) => {
      const a = aguid()
      const h1 = payload(100)
      const h5 = payload(120)
      t.equal(await s.putHeadIfHigher(a, 1n, h1), undefined, 'first head stored')
      t.same(norm(await s.getHead(a)), { seq: 1n, bytes: hex(h1) })
      t.equal(await s.putHeadIfHigher(a, 5n, h5), undefined, 'higher seq stored')
      t.same(norm(await s.getHead(a)), { seq: 5n, bytes: hex(h5) })
      t.same(norm(await s.putHeadIfHigher(a, 3n, payload(10))), { seq: 5n, bytes: hex(h5) }, 'lower refused')
      t.same(norm(await s.putHeadIfHigher(a, 5n, payload(10))), { seq: 5n, bytes: hex(h5) }, 'equal refused')
      t.same(norm(await s.getHead(a)), { seq: 5n, bytes: hex(h5) }, 'refusals change nothing')
    })

    await each('seq 0 and seq 2^64-1', async (t, s) => {
      const a = aguid()
      t.equal(await s.putHeadIfHigher(a, 0n, payload(5)), undefined)
      const top = 2n ** 64n - 1n
      const hb = payload(7)
      t.equal(await s.putHeadIfHigher(a, top, hb), undefined)
      t.same(norm(await s.getHead(a)), { seq: top, bytes: hex(hb) })
      t.same((await s.putHeadIfHigher(a, top - 1n, payload(5)))?.seq, top)
    })

    await each('AGUIDs are independent', async (t, s) => {
      const a = aguid()
      const b = aguid()
      await s.putHeadIfHigher(a, 10n, payload(10))
      t.equal(await s.putHeadIfHigher(b, 1n, payload(10)), undefined, 'b is not blocked by a')
      t.equal((await s.getHead(b))?.seq, 1n)
      t.equal((await s.getHead(a))?.seq, 10n)
    })

    await each('concurrent putHeadIfHigher keeps the highest', async (t, s) => {
      const a = aguid()
      const heads = Array.from({ length: 30 }, (_, i) => ({ seq: BigInt((i * 7) % 30 + 1), bytes: payload(40) }))
      const results = await Promise.all(heads.map(async h => await s.putHeadIfHigher(a, h.seq, h.bytes)))
      const top = heads.find(h => h.seq === 30n)
      t.same(norm(await s.getHead(a)), norm(top), 'the highest seq is stored')
      t.equal(results[heads.indexOf(top!)], undefined, 'and was reported stored')
      for (let i = 0; i < heads.length; i++) {
        const r = results[i]
        if (r !== undefined) t.ok(r.seq >= heads[i].seq, 'a refusal names a head at least as high')
      }
    })

    await each('recordFork and forks', async (t, s) => {
      const a = aguid()
      const b = aguid()
      const f1 = payload(100)
      const f2 = payload(100)
      const f3 = payload(100)
      await s.recordFork(a, 4n, f1)
      await s.recordFork(a, 4n, f2) // same millisecond, same seq: both must be kept
      await s.recordFork(a, 9n, f3)
      await s.recordFork(b, 4n, payload(50))
      const got = (await s.forks(a)).map(f => `${f.seq}:${hex(f.bytes)}`).sort()
      t.same(got, [`4:${hex(f1)}`, `4:${hex(f2)}`, `9:${hex(f3)}`].sort(), 'every fork recorded, none lost')
      t.equal((await s.forks(b)).length, 1, 'forks are per AGUID')
      await s.recordFork(a, 4n, f1)
      t.equal((await s.forks(a)).length, 3, 'the same evidence again is stored once')
      t.equal(await s.getHead(a), undefined, 'fork evidence is not a head')
    })

    await each('returned entries are copies', async (t, s) => {
      const a = aguid()
      const bytes = payload(64)
      await s.putHeadIfHigher(a, 2n, bytes)
      bytes.fill(0)
      const got = await s.getHead(a)
      t.notOk(got!.bytes.every(x => x === 0), 'mutating the input after put does not change the head')
      const before = hex(got!.bytes)
      got!.bytes.fill(1)
      t.equal(hex((await s.getHead(a))!.bytes), before, 'mutating a returned entry does not change the head')
    })
  }).then(() => undefined)
}
