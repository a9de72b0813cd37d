import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import type { Block } from '../src/block/index.js'
import { AVG_CHUNK, Chunker, chunkLengths, MAX_CHUNK, MIN_CHUNK, nextCut } from '../src/object/chunker.js'
import { fileFromBytes, FileReader } from '../src/object/file.js'
import { MemoryBlockStore } from '../src/store/memory.js'

const MiB = 1024 * 1024
const rnd = (n: number): Uint8Array => new Uint8Array(randomBytes(n))

/** Deterministic pseudo-random bytes (xorshift32), so a failure can be reproduced from its seed. */
function seeded (n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n)
  let x = seed | 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

function checkSizes (t: Test, lengths: number[], total: number, what: string): void {
  t.equal(lengths.reduce((a, b) => a + b, 0), total, `${what}: lengths add up`)
  const bad = lengths.slice(0, -1).filter(n => n < MIN_CHUNK || n > MAX_CHUNK)
  t.same(bad, [], `${what}: every chunk but the last is within MIN_CHUNK..MAX_CHUNK`)
  if (lengths.length > 0) {
    const last = lengths[lengths.length - 1]
    t.ok(last >= 1 && last <= MAX_CHUNK, `${what}: last chunk is 1..MAX_CHUNK`)
  }
}

t.test('chunk sizes are within bounds and deterministic', async t => {
  for (const [n, seed] of [[0, 1], [1, 2], [MIN_CHUNK - 1, 3], [MIN_CHUNK, 4], [MIN_CHUNK + 1, 5], [MAX_CHUNK, 6], [MAX_CHUNK + 1, 7], [5 * MiB + 3, 8]]) {
    const buf = seeded(n, seed)
    const lengths = chunkLengths(buf)
    checkSizes(t, lengths, n, `${n} bytes`)
    t.same(chunkLengths(buf.slice()), lengths, `${n} bytes: same input, same chunks`)
  }
  t.same(chunkLengths(new Uint8Array(0)), [], 'no chunks for no data')
  t.same(chunkLengths(new Uint8Array(MIN_CHUNK - 1)), [MIN_CHUNK - 1], 'a small file is one chunk')

  const big = rnd(8 * MiB)
  const lengths = chunkLengths(big)
  checkSizes(t, lengths, big.length, '8 MiB random')
  const mean = big.length / lengths.length
  t.ok(mean > AVG_CHUNK * 0.75 && mean < AVG_CHUNK * 2, `mean chunk ${Math.round(mean)} bytes is near AVG_CHUNK`)
  t.comment(`8 MiB random: ${lengths.length} chunks, mean ${Math.round(mean)} B`)

  // Data with no cut points at all (zeros: the gear hash never matches the masks) still cuts at MAX_CHUNK.
  const zeros = chunkLengths(new Uint8Array(3 * MAX_CHUNK + 5))
  checkSizes(t, zeros, 3 * MAX_CHUNK + 5, 'zeros')
  t.same(zeros.slice(0, 3), [MAX_CHUNK, MAX_CHUNK, MAX_CHUNK], 'zeros cut at MAX_CHUNK')
})

t.test('nextCut asks for more data unless final', async t => {
  const buf = seeded(MIN_CHUNK, 9)
  t.equal(nextCut(buf, 0, buf.length, false), -1, 'MIN_CHUNK bytes, not final: needs more')
  t.equal(nextCut(buf, 0, buf.length, true), MIN_CHUNK, 'final: takes what is there')
  const zeros = new Uint8Array(MAX_CHUNK - 1)
  t.equal(nextCut(zeros, 0, zeros.length, false), -1, 'no cut point below MAX_CHUNK: needs more')
  t.equal(nextCut(new Uint8Array(MAX_CHUNK * 2), 0, MAX_CHUNK * 2, false), MAX_CHUNK, 'forced cut at MAX_CHUNK')
  const data = seeded(2 * MiB, 10)
  const whole = chunkLengths(data)
  t.equal(nextCut(data, whole[0], data.length, true), whole[1], 'a cut depends only on where the chunk starts')
})

t.test('streaming Chunker with random piece sizes equals chunkLengths', async t => {
  const data = rnd(6 * MiB + 12345)
  const want = chunkLengths(data)
  const pieceSizes = [1, 7, 4096, MIN_CHUNK - 1, MAX_CHUNK + 1, 3 * MAX_CHUNK]
  for (let round = 0; round < 8; round++) {
    const c = new Chunker()
    const got: Uint8Array[] = []
    let off = 0
    while (off < data.length) {
      const n = round < pieceSizes.length ? pieceSizes[round] : 1 + Math.floor(Math.random() * 200_000)
      const size = round === pieceSizes.length ? 1 + Math.floor(Math.random() * 64) : n // many tiny pieces
      const piece = data.subarray(off, off + size)
      for (const ch of c.push(piece)) got.push(ch)
      off += piece.length
    }
    for (const ch of c.end()) got.push(ch)
    t.same(got.map(g => g.length), want, `round ${round}: same chunk lengths`)
    let pos = 0
    let contentOk = true
    for (const g of got) {
      if (Buffer.compare(g, data.subarray(pos, pos + g.length)) !== 0) contentOk = false
      pos += g.length
    }
    t.ok(contentOk, `round ${round}: chunks concatenate to the input`)
  }
  const c = new Chunker()
  const first = [...c.push(data.subarray(0, MAX_CHUNK * 3))]
  const kept = first[0].slice()
  for (const _ of c.push(data.subarray(MAX_CHUNK * 3, MAX_CHUNK * 6))) { /* drain */ }
  t.same(first[0], kept, 'yielded chunks are copies: later pushes do not change them')
})

async function leafCids (store: MemoryBlockStore, data: Uint8Array): Promise<string[]> {
  const root = await fileFromBytes(data, async bs => { await store.putMany(bs as Block[]) })
  t.equal(root.size, data.length)
  return (await new FileReader(root.cid, store).leaves()).map(l => l.cid.toString())
}

function share (before: string[], after: string[]): number {
  const now = new Set(after)
  return before.filter(c => now.has(c)).length / before.length
}

t.test('THE KEY TEST: an insert shares >= 95% of chunks', async t => {
  const size = 64 * MiB
  const data = rnd(size)
  const store = new MemoryBlockStore()
  const before = await leafCids(store, data)

  const inserted = new Uint8Array(size + 1)
  inserted.set(data.subarray(0, 100))
  inserted[100] = 0x42
  inserted.set(data.subarray(100), 101)
  const afterInsert = await leafCids(store, inserted)
  const s1 = share(before, afterInsert)
  t.comment(`64 MiB, 1 byte inserted at offset 100: ${(s1 * 100).toFixed(2)}% of ${before.length} chunks shared (${before.length - Math.round(s1 * before.length)} new)`)
  t.ok(s1 >= 0.95, `insert at offset 100 shares ${(s1 * 100).toFixed(2)}% >= 95%`)

  const changed = data.slice()
  changed[size >> 1] ^= 0xff
  const afterChange = await leafCids(store, changed)
  const s2 = share(before, afterChange)
  t.comment(`64 MiB, 1 byte changed in the middle: ${(s2 * 100).toFixed(2)}% of ${before.length} chunks shared (${before.length - Math.round(s2 * before.length)} new)`)
  t.ok(s2 >= 0.95, `change in the middle shares ${(s2 * 100).toFixed(2)}% >= 95%`)

  const deleted = new Uint8Array(size - 1000)
  deleted.set(data.subarray(0, 20 * MiB))
  deleted.set(data.subarray(20 * MiB + 1000), 20 * MiB)
  const afterDelete = await leafCids(store, deleted)
  const s3 = share(before, afterDelete)
  t.comment(`64 MiB, 1000 bytes deleted at 20 MiB: ${(s3 * 100).toFixed(2)}% shared`)
  t.ok(s3 >= 0.95, 'a deletion shares >= 95% too')
})
