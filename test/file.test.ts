import t, { type Test } from 'tap'
import { createCipheriv, createHash, randomBytes } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import type { Block, CID } from '../src/block/index.js'
import { cidFor, DAG_CBOR } from '../src/block/index.js'
import { MIN_CHUNK, MAX_CHUNK } from '../src/object/chunker.js'
import { decodeFileNode, encodeFileNode, fileFromBytes, FileReader, rewriteFile, type Link } from '../src/object/file.js'
import { MemoryBlockStore } from '../src/store/memory.js'
import type { BlockGetter } from '../src/store/types.js'

const MiB = 1024 * 1024
const rnd = (n: number): Uint8Array => new Uint8Array(randomBytes(n))
/**
 * The same pseudo-random bytes every run (AES-256-CTR of zeros under a fixed key): for tests
 * whose claim depends on where content-defined boundaries fall, which random data would move
 * (a 40 MiB file of random bytes fits in one tree node about once in 150 runs).
 */
function fixedBytes (n: number, seed = 'reef'): Uint8Array {
  const key = createHash('sha256').update(seed).digest()
  const c = createCipheriv('aes-256-ctr', key, Buffer.alloc(16))
  return new Uint8Array(Buffer.concat([c.update(Buffer.alloc(n)), c.final()]))
}
const randInt = (n: number): number => Math.floor(Math.random() * n)

function bytesEqual (a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0
}

async function put (store: MemoryBlockStore, data: Uint8Array): Promise<Link> {
  return await fileFromBytes(data, async bs => { await store.putMany(bs) })
}

/** Counts the blocks a reader fetches. */
class CountingGetter implements BlockGetter {
  gets = 0
  constructor (private readonly inner: BlockGetter) {}
  async get (cid: CID): Promise<Uint8Array> { this.gets++; return await this.inner.get(cid) }
}

t.test('random-access reads equal the original bytes', async t => {
  const store = new MemoryBlockStore()
  for (const size of [0, 1, MIN_CHUNK - 1, MIN_CHUNK, MAX_CHUNK + 1, 5 * MiB + 77]) {
    const data = rnd(size)
    const root = await put(store, data)
    t.equal(root.size, size)
    const r = new FileReader(root.cid, store)
    t.equal(await r.size(), size, `${size}: size`)
    t.ok(bytesEqual(await r.read(0, size + 10), data), `${size}: whole read (length past the end is short)`)
    let bad = 0
    for (let i = 0; i < 200; i++) {
      const off = randInt(size + 2)
      const len = randInt(i % 10 === 0 ? 3 * MAX_CHUNK : 5000)
      const got = await r.read(off, len)
      if (!bytesEqual(got, data.subarray(off, Math.min(size, off + len)))) bad++
    }
    t.equal(bad, 0, `${size}: 200 random reads match`)
    t.equal((await r.read(size, 10)).length, 0, `${size}: read at EOF is empty`)
    t.equal((await r.read(size + 100, 10)).length, 0, `${size}: read past EOF is empty`)
    t.equal((await r.read(0, 0)).length, 0, `${size}: zero-length read`)
    const streamed = Buffer.concat(await (async () => { const out: Uint8Array[] = []; for await (const c of r.stream()) out.push(c); return out })())
    t.ok(bytesEqual(streamed, data), `${size}: stream() yields the file`)
    const leaves = await r.leaves()
    t.equal(leaves.reduce((a, l) => a + l.size, 0), size, `${size}: leaves cover the file`)
    t.ok(leaves.every((l, i) => i === 0 ? l.offset === 0 : l.offset === leaves[i - 1].offset + leaves[i - 1].size), `${size}: leaf offsets are contiguous`)
  }
})

t.test('same content, same root; the root reflects every byte', async t => {
  const store = new MemoryBlockStore()
  const data = rnd(3 * MiB)
  const a = await put(store, data)
  const b = await put(new MemoryBlockStore(), data.slice())
  t.ok(a.cid.equals(b.cid), 'deterministic root')
  const c = data.slice()
  c[c.length - 1] ^= 1
  t.notOk((await put(store, c)).cid.equals(a.cid), 'the last byte changes the root')
  const empty = await put(store, new Uint8Array(0))
  t.equal(empty.size, 0)
  t.equal((await new FileReader(empty.cid, store).leaves()).length, 0, 'an empty file has no chunks')
})

t.test('a 40 MiB file: tree has height > 0 and a small read touches few blocks', async t => {
  const store = new MemoryBlockStore()
  const data = fixedBytes(40 * MiB)
  const root = await put(store, data)
  const rootNode = await new FileReader(root.cid, store).node(root.cid)
  const height = rootNode.height
  t.ok(height > 0, `height ${height} > 0`)
  const leaves = await new FileReader(root.cid, store).leaves()
  t.comment(`40 MiB: ${leaves.length} chunks, height ${height}, root has ${rootNode.links.length} links`)
  let worst = 0
  for (let i = 0; i < 100; i++) {
    // A 1 KiB range inside one chunk: one block per tree level plus the chunk.
    const leaf = leaves[randInt(leaves.length)]
    const off = leaf.offset + randInt(leaf.size - 1024)
    const counter = new CountingGetter(store)
    const r = new FileReader(root.cid, counter)
    const got = await r.read(off, 1024)
    if (!bytesEqual(got, data.subarray(off, off + 1024))) t.fail(`read at ${off} differs`)
    worst = Math.max(worst, counter.gets)
  }
  t.ok(worst <= height + 2, `1 KiB at a random offset fetches at most ${worst} <= height + 2 = ${height + 2} blocks`)
  // Across a chunk boundary: the two chunks and at most two paths.
  const leaf = leaves[Math.floor(leaves.length / 2)]
  const counter = new CountingGetter(store)
  const got = await new FileReader(root.cid, counter).read(leaf.offset - 512, 1024)
  t.ok(bytesEqual(got, data.subarray(leaf.offset - 512, leaf.offset + 512)), 'read across a chunk boundary')
  t.ok(counter.gets <= 2 * (height + 1) + 1, `straddling read fetched ${counter.gets} blocks`)
})

/** Applies an edit with rewriteFile and checks the root equals a fresh put of the new content. */
async function checkRewrite (t: Test, store: MemoryBlockStore, oldData: Uint8Array, newData: Uint8Array,
  dirtyStart: number, dirtyEnd: number, what: string, dirty?: Array<[number, number]>): Promise<{ newBlocks: number, newChunks: number }> {
  const oldRoot = await put(store, oldData)
  const old = await new FileReader(oldRoot.cid, store).leaves()
  const written: Block[] = []
  const root = await rewriteFile({
    old,
    newSize: newData.length,
    dirty: dirty ?? [[dirtyStart, dirtyEnd]],
    read: async (off, len) => newData.slice(off, off + len),
    put: async bs => { written.push(...bs); await store.putMany(bs) }
  })
  const fresh = await put(new MemoryBlockStore(), newData)
  t.equal(root.size, newData.length, `${what}: size`)
  t.equal(root.cid.toString(), fresh.cid.toString(), `${what}: same root CID as putting the new content`)
  t.ok(bytesEqual(await new FileReader(root.cid, store).read(0, newData.length), newData), `${what}: reads back`)
  const oldChunks = new Set(old.map(l => l.cid.toString()))
  const newChunks = written.filter(b => b.cid.code !== DAG_CBOR && !oldChunks.has(b.cid.toString())).length
  return { newBlocks: written.length, newChunks }
}

t.test('rewriteFile: same root as fileFromBytes on the new content', async t => {
  const store = new MemoryBlockStore()
  const base = rnd(8 * MiB + 333)
  const n = base.length

  // Small overwrite in the middle: only a few new chunks.
  {
    const d = base.slice()
    const at = 3 * MiB + 1234
    d.set(rnd(100), at)
    const r = await checkRewrite(t, store, base, d, at, at + 100, 'overwrite 100 B in the middle')
    t.comment(`100-byte overwrite in an 8 MiB file: ${r.newChunks} new chunks, ${r.newBlocks} blocks written`)
    t.ok(r.newChunks <= 4, `small overwrite made ${r.newChunks} new chunks`)
    t.ok(r.newBlocks <= 8, `small overwrite wrote ${r.newBlocks} blocks`)
  }
  for (let i = 0; i < 6; i++) {
    const d = base.slice()
    const at = randInt(n)
    const len = Math.min(n - at, 1 + randInt(i < 3 ? 1000 : 2 * MiB))
    d.set(rnd(len), at)
    await checkRewrite(t, store, base, d, at, at + len, `random overwrite ${len} B at ${at}`)
  }
  {
    const d = base.slice()
    d.set(rnd(10), 0)
    await checkRewrite(t, store, base, d, 0, 10, 'overwrite at offset 0')
    const e = base.slice()
    e.set(rnd(10), n - 10)
    await checkRewrite(t, store, base, e, n - 10, n, 'overwrite the last bytes')
  }
  // Truncation.
  for (const newSize of [0, 1, MIN_CHUNK - 1, 2 * MiB + 7, n - 1]) {
    await checkRewrite(t, store, base, base.slice(0, newSize), newSize, newSize, `truncate to ${newSize}`)
  }
  // Extension: appends and a sparse extension (zeros), from small and large files.
  for (const [from, add] of [[n, 10], [n, 3 * MiB], [0, 100], [1, MIN_CHUNK], [MIN_CHUNK - 1, 5], [2 * MiB + 7, 1]]) {
    const oldData = base.slice(0, from)
    const d = new Uint8Array(from + add)
    d.set(oldData)
    d.set(rnd(add), from)
    await checkRewrite(t, store, oldData, d, from, from + add, `append ${add} B to ${from} B`)
  }
  {
    const d = new Uint8Array(n + MiB)
    d.set(base)
    await checkRewrite(t, store, base, d, n, n, 'truncate up (sparse) by 1 MiB')
  }
  // Write past the end plus an earlier overwrite.
  {
    const d = new Uint8Array(n + 500)
    d.set(base)
    d.set(rnd(500), n)
    d.set(rnd(50), 1000)
    await checkRewrite(t, store, base, d, 1000, n + 500, 'overwrite early and append')
  }
})

t.test('rewriteFile with scattered dirty ranges: the fresh root, and chunks only around each edit', async t => {
  const store = new MemoryBlockStore()
  const base = rnd(16 * MiB + 77)
  const n = base.length
  // 8 random 4 KiB writes (a database or disk-image pattern), given as one range each.
  const d = base.slice()
  const ranges: Array<[number, number]> = []
  for (let i = 0; i < 8; i++) {
    const at = randInt(n / 4096) * 4096
    const len = Math.min(4096, n - at)
    d.set(rnd(len), at)
    ranges.push([at, at + len])
  }
  const r = await checkRewrite(t, store, base, d, 0, 0, '8 scattered 4 KiB writes', ranges)
  t.comment(`8 scattered 4 KiB writes in a 16 MiB file: ${r.newChunks} new chunks, ${r.newBlocks} blocks written`)
  t.ok(r.newChunks <= 8 * 4, `new chunks (${r.newChunks}) follow the edits, not the span between the first and the last`)
  const whole = await checkRewrite(t, store, base, d, Math.min(...ranges.map(x => x[0])), Math.max(...ranges.map(x => x[1])), 'the same as one range')
  t.ok(whole.newBlocks > 3 * r.newBlocks, `one range from the first to the last edit hashes and writes far more blocks (${whole.newBlocks} against ${r.newBlocks})`)
  // Overlapping, unsorted and empty ranges, with a truncation and a growth.
  const e = new Uint8Array(n - 3 * MiB)
  e.set(base.subarray(0, e.length))
  e.set(rnd(100), 5 * MiB)
  e.set(rnd(9000), 1 * MiB)
  await checkRewrite(t, store, base, e, 0, 0, 'unsorted, overlapping and empty ranges, and a truncation',
    [[5 * MiB, 5 * MiB + 100], [1 * MiB, 1 * MiB + 9000], [1 * MiB + 10, 1 * MiB + 20], [7 * MiB, 7 * MiB]])
  const g = new Uint8Array(n + 2 * MiB)
  g.set(base)
  g.set(rnd(4096), 4096)
  g.set(rnd(2 * MiB), n)
  await checkRewrite(t, store, base, g, 0, 0, 'an early write and an append', [[4096, 8192], [n, n + 2 * MiB]])
  await checkRewrite(t, store, base, base, 0, 0, 'no ranges: the same file', [])
})

t.test('decodeFileNode refuses malformed nodes', async t => {
  const chunk = cidFor(rnd(10))
  const good = encodeFileNode({ size: 10, height: 0, links: [{ cid: chunk, size: 10 }] })
  t.same(decodeFileNode(good.bytes).links.map(l => l.size), [10], 'a good node decodes')
  const enc = (v: unknown): Uint8Array => dagCbor.encode(v)
  const cases: Array<[string, Uint8Array]> = [
    ['empty bytes', new Uint8Array(0)],
    ['random bytes', rnd(64)],
    ['truncated', good.bytes.subarray(0, good.bytes.length - 3)],
    ['not a map', enc([1, 2, 3])],
    ['a string', enc('f')],
    ['wrong tag', enc({ t: 'd', s: 10, h: 0, l: [[chunk, 10]] })],
    ['no tag', enc({ s: 10, h: 0, l: [[chunk, 10]] })],
    ['no size', enc({ t: 'f', h: 0, l: [[chunk, 10]] })],
    ['no height', enc({ t: 'f', s: 10, l: [[chunk, 10]] })],
    ['no links', enc({ t: 'f', s: 10, h: 0 })],
    ['sizes do not add up', enc({ t: 'f', s: 11, h: 0, l: [[chunk, 10]] })],
    ['negative size', enc({ t: 'f', s: -10, h: 0, l: [[chunk, -10]] })],
    ['float size', enc({ t: 'f', s: 10.5, h: 0, l: [[chunk, 10.5]] })],
    ['string size', enc({ t: 'f', s: '10', h: 0, l: [[chunk, 10]] })],
    ['links not an array', enc({ t: 'f', s: 10, h: 0, l: { a: 1 } })],
    ['link not a pair', enc({ t: 'f', s: 10, h: 0, l: [[chunk]] })],
    ['link with extra item', enc({ t: 'f', s: 10, h: 0, l: [[chunk, 10, 1]] })],
    ['link not a CID', enc({ t: 'f', s: 10, h: 0, l: [['bafk', 10]] })],
    ['link bytes instead of CID', enc({ t: 'f', s: 10, h: 0, l: [[chunk.bytes, 10]] })],
    ['absurd height', enc({ t: 'f', s: 10, h: 99, l: [[chunk, 10]] })],
    ['size beyond 2^53', enc({ t: 'f', s: 2n ** 60n, h: 0, l: [[chunk, 2n ** 60n]] })]
  ]
  for (const [what, bytes] of cases) t.throws(() => decodeFileNode(bytes), { code: 'BAD_ENCODING' }, what)
})

t.test('a chunk whose size differs from its link is refused on read', async t => {
  const store = new MemoryBlockStore()
  const chunk = rnd(100)
  const c = cidFor(chunk)
  await store.put({ cid: c, bytes: chunk })
  const node = encodeFileNode({ size: 200, height: 0, links: [{ cid: c, size: 200 }] })
  await store.put(node)
  await t.rejects(new FileReader(node.cid, store).read(0, 200), { code: 'BAD_ENCODING' })
  const missing = encodeFileNode({ size: 5, height: 0, links: [{ cid: cidFor(rnd(5)), size: 5 }] })
  await store.put(missing)
  await t.rejects(new FileReader(missing.cid, store).read(0, 5), { code: 'NOT_FOUND' })
})
