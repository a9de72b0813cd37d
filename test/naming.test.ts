import t from 'tap'
import { randomBytes } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { cidFor, DAG_CBOR, REEF_AGUID, SHA256_CODE } from '../src/block/index.js'
import { headSigningPayload } from '../src/crypto/layouts.js'
import { generateKeyPair, sign } from '../src/crypto/sign.js'
import {
  aguidFor, decodeHead, encodeHead, HeadBook, MAX_HEAD_BYTES, signHead, verifyHead, type SignedHead
} from '../src/naming/index.js'
import { LmdbHeadStore, LmdbStore } from '../src/store/lmdb.js'
import { MemoryHeadStore } from '../src/store/memory.js'

const rnd = (n: number): Uint8Array => new Uint8Array(randomBytes(n))
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const vguid = (): CID => cidFor(rnd(40), DAG_CBOR)
const keys = generateKeyPair()

/** The head's fields as plain dag-cbor, to build malformed variants. */
function raw (h: SignedHead): Record<string, unknown> {
  return { a: h.aguid, v: h.vguid, s: h.seq, t: h.time, n: h.name, k: h.publicKey, sig: h.signature }
}

t.test('aguidFor: stable, per key and per name', async t => {
  const a = aguidFor(keys.publicKey, 'home')
  t.ok(a.equals(aguidFor(keys.publicKey, new TextEncoder().encode('home'))), 'string and bytes names agree')
  t.equal(a.code, REEF_AGUID)
  t.equal(a.multihash.code, SHA256_CODE)
  t.notOk(a.equals(aguidFor(keys.publicKey, 'work')))
  t.notOk(a.equals(aguidFor(generateKeyPair().publicKey, 'home')))
})

t.test('signHead / encodeHead / verifyHead roundtrip', async t => {
  const v = vguid()
  const h = signHead(keys, 'home', v, 42n, 1_700_000_000_000n)
  const bytes = encodeHead(h)
  t.ok(bytes.length <= MAX_HEAD_BYTES)
  const back = verifyHead(bytes)
  t.ok(back.aguid.equals(aguidFor(keys.publicKey, 'home')))
  t.ok(back.vguid.equals(v))
  t.equal(back.seq, 42n)
  t.equal(back.time, 1_700_000_000_000n)
  t.equal(hex(back.name), hex(new TextEncoder().encode('home')))
  t.equal(hex(back.publicKey), hex(keys.publicKey))
  t.equal(hex(back.signature), hex(h.signature))
  t.ok(verifyHead(bytes, h.aguid).aguid.equals(h.aguid), 'with the expected AGUID')
  t.throws(() => verifyHead(bytes, aguidFor(keys.publicKey, 'other')), { code: 'HEAD_WRONG_KEY' }, 'for another AGUID than expected')
  // Extreme but legal values.
  const top = signHead(keys, new Uint8Array(0), v, 2n ** 64n - 1n, 0n)
  t.equal(verifyHead(encodeHead(top)).seq, 2n ** 64n - 1n)
  t.equal(verifyHead(encodeHead(signHead(keys, 'x', v, 0n))).seq, 0n)
})

t.test('a head signed by another key for the same AGUID is HEAD_WRONG_KEY', async t => {
  const mallory = generateKeyPair()
  const real = signHead(keys, 'home', vguid(), 5n)
  const v = vguid()
  const payload = headSigningPayload({ aguid: real.aguid.bytes, vguid: v.bytes, seq: 6n, time: real.time })
  const forged: SignedHead = { ...real, vguid: v, seq: 6n, publicKey: mallory.publicKey, signature: sign(payload, mallory.secretKey) }
  t.throws(() => verifyHead(encodeHead(forged)), { code: 'HEAD_WRONG_KEY' })
  // Claiming the owner's key while signing with another fails on the signature.
  const claimed: SignedHead = { ...forged, publicKey: keys.publicKey }
  t.throws(() => verifyHead(encodeHead(claimed)), { code: 'HEAD_BAD_SIGNATURE' })
  // Another name under the same key is another AGUID.
  t.throws(() => verifyHead(encodeHead({ ...real, name: new TextEncoder().encode('hom') })), { code: 'HEAD_WRONG_KEY' })
})

t.test('tampering after signing is HEAD_BAD_SIGNATURE', async t => {
  const h = signHead(keys, 'home', vguid(), 10n, 1_000n)
  for (const bit of [0, 1, 7, 8, 100, 255, 256, 300, 511]) {
    const sig = h.signature.slice()
    sig[bit >> 3] ^= 1 << (bit & 7)
    t.throws(() => verifyHead(encodeHead({ ...h, signature: sig })), { code: 'HEAD_BAD_SIGNATURE' }, `signature bit ${bit}`)
  }
  t.throws(() => verifyHead(encodeHead({ ...h, seq: 11n })), { code: 'HEAD_BAD_SIGNATURE' }, 'seq changed')
  t.throws(() => verifyHead(encodeHead({ ...h, seq: 9n })), { code: 'HEAD_BAD_SIGNATURE' }, 'seq lowered')
  t.throws(() => verifyHead(encodeHead({ ...h, vguid: vguid() })), { code: 'HEAD_BAD_SIGNATURE' }, 'vguid changed')
  t.throws(() => verifyHead(encodeHead({ ...h, time: 1_001n })), { code: 'HEAD_BAD_SIGNATURE' }, 'time changed')
  const sameDigestOtherCodec = CID.createV1(0x55, h.vguid.multihash)
  t.throws(() => verifyHead(encodeHead({ ...h, vguid: sameDigestOtherCodec })), { code: 'HEAD_BAD_SIGNATURE' }, 'vguid codec changed')
})

t.test('malformed encodings are HEAD_MALFORMED', async t => {
  const h = signHead(keys, 'home', vguid(), 3n)
  const good = raw(h)
  const enc = (o: unknown): Uint8Array => dagCbor.encode(o)
  const without = (k: string): Record<string, unknown> => Object.fromEntries(Object.entries(good).filter(([x]) => x !== k))
  const cases: Array<[string, Uint8Array]> = [
    ['empty', new Uint8Array(0)],
    ['one byte', new Uint8Array([0xa0 + 1])],
    ['not a map', enc([1, 2])],
    ['a number', enc(5)],
    ['null', enc(null)],
    ['truncated', encodeHead(h).subarray(0, 50)],
    ['trailing byte', Buffer.concat([encodeHead(h), new Uint8Array([0])])],
    ['extra field', enc({ ...good, x: 1 })],
    ['too long', enc({ ...good, n: rnd(MAX_HEAD_BYTES) })],
    ['a is a VGUID', enc({ ...good, a: vguid() })],
    ['a is bytes', enc({ ...good, a: h.aguid.bytes })],
    ['a with a 20-byte digest', enc({ ...good, a: CID.createV1(REEF_AGUID, Digest.create(SHA256_CODE, rnd(20))) })],
    ['v is not a link', enc({ ...good, v: 'bafy' })],
    ['v is not sha256', enc({ ...good, v: CID.createV1(DAG_CBOR, Digest.create(0x13, rnd(64))) })],
    ['s negative', enc({ ...good, s: -1 })],
    ['s a float', enc({ ...good, s: 1.5 })],
    ['s a string', enc({ ...good, s: '3' })],
    ['s a big negative', enc({ ...good, s: -(2n ** 63n) })],
    ['t a string', enc({ ...good, t: 'now' })],
    ['n a string', enc({ ...good, n: 'home' })],
    ['k 31 bytes', enc({ ...good, k: h.publicKey.subarray(0, 31) })],
    ['k a string', enc({ ...good, k: 'key' })],
    ['sig 63 bytes', enc({ ...good, sig: h.signature.subarray(0, 63) })],
    ['sig 65 bytes', enc({ ...good, sig: Buffer.concat([h.signature, new Uint8Array(1)]) })]
  ]
  for (const k of Object.keys(good)) cases.push([`missing ${k}`, enc(without(k))])
  for (let i = 0; i < 50; i++) cases.push([`random bytes ${i}`, rnd(1 + Math.floor(Math.random() * 300))])
  for (const [what, bytes] of cases) {
    t.throws(() => decodeHead(bytes), { code: 'HEAD_MALFORMED' }, what)
    t.throws(() => verifyHead(bytes), { code: 'HEAD_MALFORMED' }, `${what} (verifyHead)`)
  }
})

t.test('HeadBook: seq rules, forks, re-delivery', async t => {
  const book = new HeadBook(new MemoryHeadStore())
  const v5 = vguid()
  const h5 = encodeHead(signHead(keys, 'home', v5, 5n))
  const a = aguidFor(keys.publicKey, 'home')
  t.equal(await book.current(a), undefined, 'no head yet')
  t.equal((await book.accept(h5)).seq, 5n, 'first head accepted')
  t.equal((await book.accept(encodeHead(signHead(keys, 'home', vguid(), 7n)))).seq, 7n, 'higher seq accepted')
  await t.rejects(book.accept(h5), { code: 'HEAD_ROLLBACK' }, 'an older head is a rollback')
  await t.rejects(book.accept(encodeHead(signHead(keys, 'home', v5, 6n))), { code: 'HEAD_ROLLBACK' })
  const h7again = (await book.current(a))!
  t.equal(h7again.seq, 7n)
  t.equal((await book.accept(encodeHead(h7again))).seq, 7n, 'identical re-delivery returns without error')
  t.same(await book.forks(a), [], 'a re-delivery is not a fork')

  const fork = encodeHead(signHead(keys, 'home', vguid(), 7n))
  await t.rejects(book.accept(fork), { code: 'HEAD_FORK' }, 'same seq, other vguid')
  const forks = await book.forks(a)
  t.equal(forks.length, 1, 'fork recorded')
  t.equal(hex(encodeHead(forks[0])), hex(fork), 'the fork evidence is the refused head')
  t.equal((await book.current(a))!.seq, 7n, 'the first head at seq 7 stays current')
  t.ok((await book.current(a))!.vguid.equals(h7again.vguid))

  // Verification comes before any bookkeeping: a bad head changes nothing.
  const bad = signHead(keys, 'home', vguid(), 100n)
  bad.signature[0] ^= 1
  await t.rejects(book.accept(encodeHead(bad)), { code: 'HEAD_BAD_SIGNATURE' })
  t.equal((await book.current(a))!.seq, 7n)
  await t.rejects(book.accept(encodeHead(signHead(keys, 'home', vguid(), 8n)), aguidFor(keys.publicKey, 'work')), { code: 'HEAD_WRONG_KEY' })
  t.equal((await book.current(a))!.seq, 7n, 'a head for another AGUID than expected is not stored')

  // Other AGUIDs have their own sequence.
  t.equal((await book.accept(encodeHead(signHead(keys, 'work', vguid(), 1n)))).seq, 1n)
})

t.test('HeadBook: the highest seq is durable in the LMDB head store', async t => {
  const dir = t.testdir()
  const a = aguidFor(keys.publicKey, 'home')
  {
    const db = new LmdbStore({ path: dir })
    const book = new HeadBook(new LmdbHeadStore(db))
    await book.accept(encodeHead(signHead(keys, 'home', vguid(), 5n)))
    await db.close()
  }
  const db = new LmdbStore({ path: dir })
  t.teardown(async () => await db.close())
  const book = new HeadBook(new LmdbHeadStore(db))
  t.equal((await book.current(a))?.seq, 5n, 'the head survives reopening')
  await t.rejects(book.accept(encodeHead(signHead(keys, 'home', vguid(), 3n))), { code: 'HEAD_ROLLBACK' })
  await t.rejects(book.accept(encodeHead(signHead(keys, 'home', vguid(), 5n))), { code: 'HEAD_FORK' })
  t.equal((await book.forks(a)).length, 1)
  t.equal((await book.accept(encodeHead(signHead(keys, 'home', vguid(), 6n)))).seq, 6n)
})
