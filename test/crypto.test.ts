import t from 'tap'
import { randomBytes } from 'node:crypto'
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { cidFor, DAG_CBOR, RAW, SHA256_CODE } from '../src/block/index.js'
import { sha256, sha256Noble, sha256Parts } from '../src/crypto/hash.js'
import { aguidDigest, DOMAIN, headSigningPayload, type HeadFields } from '../src/crypto/layouts.js'
import { generateKeyPair, keyPairFromSeed, sign, verify } from '../src/crypto/sign.js'

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const rnd = (n: number): Uint8Array => new Uint8Array(randomBytes(n))
const MiB = 1024 * 1024

t.test('sha256: node:crypto and @noble/hashes agree', async t => {
  const sizes = [0, 1, 2, 31, 32, 33, 55, 56, 57, 63, 64, 65, 127, 128, 129, 1000, 4095, 4096, 65536, 65537, MiB - 1, 3 * MiB + 17, 5 * MiB]
  for (const n of sizes) {
    const b = rnd(n)
    const node = sha256(b)
    t.equal(node.length, 32)
    t.equal(hex(node), hex(nobleSha256(b)), `${n} bytes`)
    t.equal(hex(sha256Noble(b)), hex(node))
    t.equal(cidFor(b).toString(), CID.createV1(RAW, Digest.create(SHA256_CODE, nobleSha256(b))).toString(), `BGUID of ${n} bytes`)
    t.equal(cidFor(b, DAG_CBOR).toString(), CID.createV1(DAG_CBOR, Digest.create(SHA256_CODE, nobleSha256(b))).toString())
  }
  for (let i = 0; i < 200; i++) {
    const b = rnd(Math.floor(Math.random() * 3000))
    if (hex(sha256(b)) !== hex(nobleSha256(b))) t.fail(`digests differ for ${b.length} random bytes`)
  }
  t.pass('200 random short inputs agree')
})

t.test('sha256: known vectors and views', async t => {
  t.equal(hex(sha256(new Uint8Array(0))), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  t.equal(hex(sha256(new TextEncoder().encode('abc'))), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  // A subarray view must hash only its own bytes, not its whole backing buffer.
  const big = rnd(1000)
  const view = big.subarray(100, 200)
  t.equal(hex(sha256(view)), hex(nobleSha256(big.slice(100, 200))))
  const d = sha256(rnd(10))
  t.equal(d.length, 32, 'digest view has exactly 32 bytes')
})

t.test('sha256Parts equals sha256 of the concatenation', async t => {
  const parts = [rnd(0), rnd(1), rnd(63), rnd(64), rnd(1000)]
  t.equal(hex(sha256Parts(parts)), hex(nobleSha256(Buffer.concat(parts))))
  t.equal(hex(sha256Parts([])), hex(sha256(new Uint8Array(0))))
})

t.test('ed25519: sign and verify', async t => {
  const kp = generateKeyPair()
  t.equal(kp.secretKey.length, 32)
  t.equal(kp.publicKey.length, 32)
  t.equal(hex(keyPairFromSeed(kp.secretKey).publicKey), hex(kp.publicKey), 'public key derives from the seed')
  for (const n of [0, 1, 64, 1000]) {
    const msg = rnd(n)
    const sig = sign(msg, kp.secretKey)
    t.equal(sig.length, 64)
    t.equal(verify(sig, msg, kp.publicKey), true, `${n}-byte message verifies`)
    t.equal(hex(sign(msg, kp.secretKey)), hex(sig), 'signatures are deterministic')
  }
})

t.test('ed25519: tampering is refused', async t => {
  const kp = generateKeyPair()
  const other = generateKeyPair()
  const msg = rnd(100)
  const sig = sign(msg, kp.secretKey)
  for (let bit = 0; bit < msg.length * 8; bit += 37) {
    const m = msg.slice()
    m[bit >> 3] ^= 1 << (bit & 7)
    t.equal(verify(sig, m, kp.publicKey), false, `message bit ${bit} flipped`)
  }
  for (let bit = 0; bit < 512; bit += 13) {
    const s = sig.slice()
    s[bit >> 3] ^= 1 << (bit & 7)
    t.equal(verify(s, msg, kp.publicKey), false, `signature bit ${bit} flipped`)
  }
  for (let bit = 0; bit < 256; bit += 11) {
    const k = kp.publicKey.slice()
    k[bit >> 3] ^= 1 << (bit & 7)
    t.equal(verify(sig, msg, k), false, `key bit ${bit} flipped`)
  }
  t.equal(verify(sig, msg, other.publicKey), false, 'another key')
  t.equal(verify(sign(msg, other.secretKey), msg, kp.publicKey), false, 'signed by another key')
})

t.test('ed25519: malformed inputs are false, never a throw', async t => {
  const kp = generateKeyPair()
  const msg = rnd(20)
  const sig = sign(msg, kp.secretKey)
  const cases: Array<[string, Uint8Array, Uint8Array]> = [
    ['empty signature', new Uint8Array(0), kp.publicKey],
    ['63-byte signature', sig.subarray(0, 63), kp.publicKey],
    ['65-byte signature', Buffer.concat([sig, new Uint8Array(1)]), kp.publicKey],
    ['empty key', sig, new Uint8Array(0)],
    ['31-byte key', sig, kp.publicKey.subarray(0, 31)],
    ['33-byte key', sig, Buffer.concat([kp.publicKey, new Uint8Array(1)])],
    ['all-zero signature', new Uint8Array(64), kp.publicKey],
    ['all-ones signature (S out of range)', new Uint8Array(64).fill(0xff), kp.publicKey],
    ['all-ones key (not a point)', sig, new Uint8Array(32).fill(0xff)],
    ['all-zero key', sig, new Uint8Array(32)]
  ]
  for (const [what, s, k] of cases) {
    let r: unknown
    t.doesNotThrow(() => { r = verify(s, msg, k) }, what)
    t.equal(r, false, what)
  }
})

t.test('layouts: domain separation', async t => {
  const base: HeadFields = { aguid: rnd(36), vguid: rnd(36), seq: 5n, time: 1_700_000_000_000n }
  const p = headSigningPayload(base)
  t.equal(hex(p.subarray(0, DOMAIN.head.length)), hex(DOMAIN.head), 'head payload starts with its tag')
  t.equal(p.length, DOMAIN.head.length + 4 + 36 + 4 + 36 + 8 + 8, 'fixed layout length')
  const variants: Array<[string, HeadFields]> = [
    ['seq', { ...base, seq: 6n }],
    ['time', { ...base, time: base.time + 1n }],
    ['vguid', { ...base, vguid: rnd(36) }],
    ['aguid', { ...base, aguid: rnd(36) }],
    ['seq high bits', { ...base, seq: 5n + (1n << 56n) }]
  ]
  const seen = new Set([hex(p)])
  for (const [what, v] of variants) {
    const q = headSigningPayload(v)
    t.not(hex(q), hex(p), `payload changes with ${what}`)
    seen.add(hex(q))
  }
  t.equal(seen.size, variants.length + 1, 'all payloads distinct')
  t.equal(hex(headSigningPayload({ ...base })), hex(p), 'deterministic')

  // Length prefixes: moving a byte from the end of aguid to the start of vguid changes the payload.
  const a = rnd(36)
  const v = rnd(36)
  const shifted = headSigningPayload({ ...base, aguid: a.subarray(0, 35), vguid: Buffer.concat([a.subarray(35), v]) })
  t.not(hex(shifted), hex(headSigningPayload({ ...base, aguid: a, vguid: v })), 'field boundaries are unambiguous')

  // Tags are distinct, and none is a prefix of another.
  const tags = Object.values(DOMAIN).map(hex)
  for (const x of tags) for (const y of tags) if (x !== y) t.notOk(y.startsWith(x), `${x} is not a prefix of ${y}`)

  const pub = rnd(32)
  const name = new TextEncoder().encode('home')
  t.not(hex(aguidDigest(pub, name)), hex(aguidDigest(rnd(32), name)), 'AGUID depends on the key')
  t.not(hex(aguidDigest(pub, name)), hex(aguidDigest(pub, new TextEncoder().encode('homf'))), 'AGUID depends on the name')
  t.not(hex(aguidDigest(pub.subarray(0, 31), Buffer.concat([pub.subarray(31), name]))), hex(aguidDigest(pub, name)),
    'AGUID fields are length-prefixed')
  t.not(hex(aguidDigest(pub, name)), hex(sha256Parts([pub, name])), 'AGUID is tagged')
  t.equal(hex(aguidDigest(pub, name)), hex(sha256Parts([DOMAIN.aguid, new Uint8Array([0, 0, 0, 32]), pub, new Uint8Array([0, 0, 0, 4]), name])),
    'AGUID layout is tag || len || pub || len || name')
})
