import t from 'tap'
import { randomBytes } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { base58btc } from 'multiformats/bases/base58'
import { base64 } from 'multiformats/bases/base64'
import {
  blockKey, cidFor, cidFromKey, DAG_CBOR, isAguid, makeBlock, MAX_BLOCK_SIZE, parseGuid, RAW, REEF_AGUID, SHA256_CODE, verifyBlock
} from '../src/block/index.js'
import { sha256 } from '../src/crypto/hash.js'

const rnd = (n: number): Uint8Array => new Uint8Array(randomBytes(n))
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

t.test('cidFor: CIDv1, sha256, codec as asked', async t => {
  const b = rnd(100)
  const raw = cidFor(b)
  t.equal(raw.version, 1)
  t.equal(raw.code, RAW)
  t.equal(raw.multihash.code, SHA256_CODE)
  t.equal(hex(raw.multihash.digest), hex(sha256(b)))
  t.ok(raw.toString().startsWith('b'), 'base32 text')
  const cbor = cidFor(b, DAG_CBOR)
  t.equal(cbor.code, DAG_CBOR)
  t.equal(hex(blockKey(cbor)), hex(blockKey(raw)), 'same digest whatever the codec')
  t.not(cbor.toString(), raw.toString())
  t.ok(cidFromKey(blockKey(raw)).equals(raw), 'cidFromKey inverts blockKey')
  t.ok(cidFromKey(blockKey(raw), DAG_CBOR).equals(cbor))
})

t.test('makeBlock and BLOCK_TOO_LARGE', async t => {
  const ok = makeBlock(new Uint8Array(MAX_BLOCK_SIZE))
  t.equal(ok.bytes.length, MAX_BLOCK_SIZE, 'exactly MAX_BLOCK_SIZE is allowed')
  t.ok(ok.cid.equals(cidFor(ok.bytes)))
  t.throws(() => makeBlock(new Uint8Array(MAX_BLOCK_SIZE + 1)), { code: 'BLOCK_TOO_LARGE' })
  t.throws(() => makeBlock(new Uint8Array(MAX_BLOCK_SIZE * 2), DAG_CBOR), { code: 'BLOCK_TOO_LARGE' })
  const empty = makeBlock(new Uint8Array(0))
  t.equal(empty.cid.toString(), cidFor(new Uint8Array(0)).toString())
})

t.test('verifyBlock', async t => {
  const b = makeBlock(rnd(5000))
  t.equal(verifyBlock(b.cid, b.bytes, 'test'), b.bytes, 'returns the bytes when they match')
  for (const pos of [0, 1, 2500, 4999]) {
    const bad = b.bytes.slice()
    bad[pos] ^= 0x01
    t.throws(() => verifyBlock(b.cid, bad, 'test'), { code: 'BLOCK_CORRUPT' }, `bit flip at ${pos}`)
  }
  t.throws(() => verifyBlock(b.cid, b.bytes.subarray(0, 4999), 'test'), { code: 'BLOCK_CORRUPT' }, 'truncated')
  t.throws(() => verifyBlock(b.cid, new Uint8Array(0), 'test'), { code: 'BLOCK_CORRUPT' }, 'empty')
  t.throws(() => verifyBlock(b.cid, Buffer.concat([b.bytes, new Uint8Array(1)]), 'test'), { code: 'BLOCK_CORRUPT' }, 'extended')
  const other = CID.createV1(RAW, Digest.create(0x13, rnd(64)))
  t.throws(() => verifyBlock(other, b.bytes, 'test'), { code: 'BAD_GUID' }, 'a non-sha256 CID cannot name a block')
})

t.test('blockKey refuses non-sha256 and truncated digests', async t => {
  t.throws(() => blockKey(CID.createV1(RAW, Digest.create(0x13, rnd(64)))), { code: 'BAD_GUID' })
  t.throws(() => blockKey(CID.createV1(RAW, Digest.create(SHA256_CODE, rnd(20)))), { code: 'BAD_GUID' })
  t.throws(() => blockKey(CID.createV1(RAW, Digest.create(0x00, rnd(32)))), { code: 'BAD_GUID' }, 'identity hash')
})

t.test('parseGuid', async t => {
  const cid = cidFor(rnd(10))
  t.ok(parseGuid(cid.toString()).equals(cid), 'base32 roundtrip')
  t.ok(parseGuid(`  ${cid.toString()}\n`).equals(cid), 'surrounding whitespace is ignored')
  t.ok(parseGuid(cid.toString(base58btc)).equals(cid), 'base58btc multibase')
  const aguid = CID.createV1(REEF_AGUID, Digest.create(SHA256_CODE, rnd(32)))
  const parsed = parseGuid(aguid.toString())
  t.ok(isAguid(parsed), 'AGUIDs parse and are recognised')
  t.notOk(isAguid(cid))

  const v0 = CID.createV0(Digest.create(SHA256_CODE, rnd(32)))
  const bad: Array<[string, string]> = [
    ['empty', ''],
    ['spaces', '   '],
    ['garbage', 'hello world'],
    ['not base32', 'b!!!!!!!!!!!!!!!!!!!!'],
    ['truncated', cid.toString().slice(0, 20)],
    ['one char short', cid.toString().slice(0, -1)],
    ['CIDv0', v0.toString()],
    ['sha2-512', CID.createV1(RAW, Digest.create(0x13, rnd(64))).toString()],
    ['identity hash', CID.createV1(RAW, Digest.create(0x00, rnd(32))).toString()],
    ['short sha256 digest', CID.createV1(RAW, Digest.create(SHA256_CODE, rnd(20))).toString()],
    ['unsupported multibase', cid.toString(base64)],
    ['path', `/ipfs/${cid.toString()}`],
    ['two GUIDs', `${cid.toString()} ${cid.toString()}`],
    ['very long', 'b' + 'a'.repeat(10_000)]
  ]
  for (const [what, text] of bad) t.throws(() => parseGuid(text), { code: 'BAD_GUID' }, what)
})
