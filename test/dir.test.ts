import t from 'tap'
import { randomBytes } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import type { Block } from '../src/block/index.js'
import { cidFor } from '../src/block/index.js'
import {
  buildDir, checkName, compareBytes, decodeEntry, decodeEntryBlock, DirReader, encodeEntry, encodeEntryBlock, NAME_MAX, type Entry
} from '../src/object/dir.js'
import { MemoryBlockStore } from '../src/store/memory.js'
import { devMajor, devMinor, makeDev } from '../src/object/devnum.js'

const enc = new TextEncoder()
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const fileCid = cidFor(new Uint8Array([1]))

function entry (name: Uint8Array | string, i = 0): Entry {
  return {
    name: typeof name === 'string' ? enc.encode(name) : name,
    kind: 'file',
    mode: 0o644,
    uid: 1000,
    gid: 1000,
    size: i,
    mtime: 1_700_000_000_123_456_789n + BigInt(i),
    atime: 1_700_000_000_000_000_000n,
    ctime: 1_700_000_000_000_000_001n,
    cid: fileCid,
    ino: i + 2
  }
}

function build (entries: Entry[], store: MemoryBlockStore): { root: ReturnType<typeof buildDir>, blocks: Block[] } {
  const blocks: Block[] = []
  const root = buildDir(entries, b => blocks.push(b))
  for (const b of blocks) store.blocks.set(hex(b.cid.multihash.digest), b.bytes)
  return { root, blocks }
}

const N = 100_000
const names = Array.from({ length: N }, (_, i) => `file-${i.toString(36)}-${(i * 2654435761 >>> 0).toString(16)}.txt`)
const big = names.map((n, i) => entry(n, i))
// Built once and shared by the tests below (a 100k build takes most of a second).
const bigStore = new MemoryBlockStore()
const bigBuilt = build(big, bigStore)

t.test('100,000 entries: many small blocks, every name found, entries in byte order', async t => {
  const store = bigStore
  const { root, blocks } = bigBuilt
  t.equal(root.count, N)
  const maxBlock = Math.max(...blocks.map(b => b.bytes.length))
  t.ok(blocks.length > 100, `${blocks.length} blocks > 100`)
  t.ok(maxBlock <= 256 * 1024, `largest block ${maxBlock} B <= 256 KiB`)
  t.comment(`100k entries: ${blocks.length} blocks, largest ${maxBlock} B`)
  const dir = new DirReader(root.cid, store)
  t.equal((await dir.blocks()).length, new Set(blocks.map(b => b.cid.toString())).size, 'blocks() lists the tree')

  let missing = 0
  let wrong = 0
  for (let i = 0; i < 2000; i++) {
    const k = Math.floor(Math.random() * N)
    const e = await dir.lookup(enc.encode(names[k]))
    if (e === undefined) missing++
    else if (e.ino !== k + 2 || e.size !== k || e.mtime !== big[k].mtime) wrong++
  }
  t.equal(missing, 0, '2,000 random names found')
  t.equal(wrong, 0, 'with their attributes')
  for (const absent of ['', 'file-', 'file-0-00.txt', 'zzzz', '\x00', 'a', 'file-zzzzzz-0.txt', names[5] + 'x', names[5].slice(0, -1), '\xff\xff']) {
    t.equal(await dir.lookup(enc.encode(absent)), undefined, `absent ${JSON.stringify(absent)}`)
  }
  t.equal(await dir.lookup(new Uint8Array([0xff, 0xff, 0xff])), undefined, 'absent, after every name')

  const listed: Uint8Array[] = []
  for await (const e of dir.entries()) listed.push(e.name)
  t.equal(listed.length, N, 'entries() yields all')
  let ordered = true
  for (let i = 1; i < listed.length; i++) if (compareBytes(listed[i - 1], listed[i]) >= 0) ordered = false
  t.ok(ordered, 'entries() is in strictly increasing byte order')
})

t.test('adding one entry to 100k changes only a few blocks', async t => {
  const store = bigStore
  const before = new Set(bigBuilt.blocks.map(b => b.cid.toString()))
  for (const extra of ['aaaa-first', names[500] + '-sibling']) {
    const { root, blocks } = build([...big, entry(extra, N)], store)
    const after = blocks.map(b => b.cid.toString())
    const fresh = after.filter(c => !before.has(c))
    t.ok(fresh.length <= 8, `adding ${extra}: ${fresh.length} new of ${after.length} blocks`)
    const found = await new DirReader(root.cid, store).lookup(enc.encode(extra))
    t.equal(found?.ino, N + 2, `${extra} is found`)
    t.equal(root.count, N + 1)
  }
  // Removing one entry is as local.
  const { blocks } = build(big.filter((_, i) => i !== 777), store)
  const fresh = blocks.filter(b => !before.has(b.cid.toString())).length
  t.ok(fresh <= 8, `removing one entry: ${fresh} new blocks`)
})

t.test('order of input does not matter', async t => {
  const es = big.slice(0, 3000)
  const shuffled = [...es].sort(() => Math.random() - 0.5)
  const a = buildDir(es, () => {})
  const b = buildDir(shuffled, () => {})
  t.ok(a.cid.equals(b.cid), 'same entries, same root')
})

t.test('empty and tiny directories', async t => {
  const store = new MemoryBlockStore()
  const { root } = build([], store)
  t.equal(root.count, 0)
  const dir = new DirReader(root.cid, store)
  t.same(await dir.list(), [])
  t.equal(await dir.lookup(enc.encode('x')), undefined)
  const one = build([entry('only')], store).root
  t.equal((await new DirReader(one.cid, store).lookup(enc.encode('only')))?.ino, 2)
})

t.test('unusual names roundtrip', async t => {
  const store = new MemoryBlockStore()
  const odd: Uint8Array[] = [
    new Uint8Array([0xff, 0xfe, 0x80]), // not UTF-8
    new Uint8Array([0xc3]), // truncated UTF-8 sequence
    new Uint8Array([0xed, 0xa0, 0x80]), // UTF-8-encoded surrogate
    enc.encode('with space'),
    enc.encode(' leading and trailing '),
    enc.encode('new\nline'),
    enc.encode('tab\there'),
    enc.encode('\r'),
    enc.encode('...'),
    enc.encode('.hidden'),
    enc.encode('..x'),
    enc.encode('ünïcødé-名前-🐚'),
    enc.encode('\\back\\slash'),
    new Uint8Array(NAME_MAX).fill(0x61), // 255 bytes
    new Uint8Array(NAME_MAX).fill(0xfe),
    new Uint8Array([0x01]),
    new Uint8Array([0x7f])
  ]
  for (const n of odd) t.doesNotThrow(() => checkName(n), `checkName accepts ${hex(n).slice(0, 20)}`)
  const { root } = build(odd.map((n, i) => entry(n, i)), store)
  const dir = new DirReader(root.cid, store)
  for (let i = 0; i < odd.length; i++) {
    const e = await dir.lookup(odd[i])
    t.ok(e !== undefined && hex(e.name) === hex(odd[i]) && e.ino === i + 2, `${hex(odd[i]).slice(0, 20)} roundtrips`)
  }
  t.same((await dir.list()).map(e => hex(e.name)), odd.map(hex).sort((a, b) => compareBytes(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'))))
  t.equal(await dir.lookup(enc.encode('with  space')), undefined)
})

t.test('checkName errors', async t => {
  t.throws(() => checkName(new Uint8Array(NAME_MAX + 1).fill(0x61)), { code: 'ENAMETOOLONG' }, '256 bytes')
  t.throws(() => checkName(new Uint8Array(4096).fill(0x61)), { code: 'ENAMETOOLONG' }, '4096 bytes')
  for (const [what, n] of [
    ['empty', new Uint8Array(0)],
    ['/', enc.encode('/')],
    ['a/b', enc.encode('a/b')],
    ['trailing /', enc.encode('a/')],
    ['.', enc.encode('.')],
    ['..', enc.encode('..')],
    ['NUL', new Uint8Array([0])],
    ['embedded NUL', enc.encode('a\0b')]
  ] as Array<[string, Uint8Array]>) {
    t.throws(() => checkName(n), { code: 'EINVAL' }, what)
  }
})

t.test('duplicate names are EEXIST', async t => {
  t.throws(() => buildDir([entry('a'), entry('b'), entry('a', 5)], () => {}), { code: 'EEXIST' })
  t.throws(() => buildDir([...big.slice(0, 1000), entry(names[999])], () => {}), { code: 'EEXIST' }, 'among many')
})

t.test('entries: every field roundtrips; malformed entries are BAD_ENCODING', async t => {
  const full: Entry = {
    ...entry('full', 7),
    mode: 0o4755,
    nlink: 3,
    linked: true,
    xattrs: { 'user.a': new Uint8Array([1, 2]), 'user.empty': new Uint8Array(0) },
    mtime: -1_000_000_000n // before 1970
  }
  const back = decodeEntryBlock(encodeEntryBlock(full).bytes)
  t.same({ ...back, name: hex(back.name), cid: back.cid?.toString(), xattrs: Object.fromEntries(Object.entries(back.xattrs ?? {}).map(([k, v]) => [k, hex(v)])) },
    { ...full, name: hex(full.name), cid: full.cid?.toString(), xattrs: { 'user.a': '0102', 'user.empty': '' } })
  const link: Entry = { ...entry('l'), kind: 'symlink', cid: undefined, target: enc.encode('../x') }
  delete link.cid
  t.equal(hex(decodeEntryBlock(encodeEntryBlock(link).bytes).target!), hex(enc.encode('../x')))

  const good = encodeEntry(entry('x'))
  const bad: Array<[string, unknown]> = [
    ['null', null],
    ['array', []],
    ['unknown kind', { ...good, k: 7 }],
    ['negative kind', { ...good, k: -1 }],
    ['name as string', { ...good, n: 'x' }],
    ['missing name', { ...good, n: undefined }],
    ['mode as string', { ...good, m: '644' }],
    ['negative size', { ...good, s: -1 }],
    ['mtime as string', { ...good, mt: '1' }],
    ['file without cid', { ...good, c: undefined }],
    ['symlink without target', { ...good, k: 2 }],
    ['cid not a link', { ...good, c: 'bafy' }],
    ['xattr value not bytes', { ...good, x: { 'user.a': 'v' } }],
    ['xattrs not a map', { ...good, x: [1] }]
  ]
  for (const [what, raw] of bad) {
    const clean = raw !== null && typeof raw === 'object' && !Array.isArray(raw)
      ? Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined))
      : raw
    t.throws(() => decodeEntry(dagCbor.decode(dagCbor.encode(clean))), { code: 'BAD_ENCODING' }, what)
  }
  t.throws(() => decodeEntryBlock(dagCbor.encode({ t: 'd', e: good })), { code: 'BAD_ENCODING' }, 'entry block with wrong tag')
  t.throws(() => decodeEntryBlock(new Uint8Array([0xff, 0x00])), { code: 'BAD_ENCODING' }, 'entry block garbage')
})

t.test('malformed directory nodes are BAD_ENCODING on read', async t => {
  const store = new MemoryBlockStore()
  const put = async (v: unknown): Promise<ReturnType<typeof cidFor>> => {
    const bytes = dagCbor.encode(v)
    const cid = cidFor(bytes, 0x71)
    await store.put({ cid, bytes })
    return cid
  }
  const cases: Array<[string, unknown]> = [
    ['wrong tag', { t: 'f', h: 0, e: [] }],
    ['no height', { t: 'd', e: [] }],
    ['entries not an array', { t: 'd', h: 0, e: 5 }],
    ['bad entry', { t: 'd', h: 0, e: [{ n: 1 }] }],
    ['interior link not a triple', { t: 'd', h: 1, l: [[new Uint8Array([1]), fileCid]] }],
    ['interior link cid not a link', { t: 'd', h: 1, l: [[new Uint8Array([1]), 'x', 1]] }]
  ]
  for (const [what, v] of cases) {
    const cid = await put(v)
    await t.rejects(new DirReader(cid, store).lookup(enc.encode('a')), { code: 'BAD_ENCODING' }, `${what}: lookup`)
    await t.rejects(new DirReader(cid, store).list(), { code: 'BAD_ENCODING' }, `${what}: list`)
  }
})

t.test('entries with large attributes still make blocks well under MAX_BLOCK_SIZE', async t => {
  const store = new MemoryBlockStore()
  const es = Array.from({ length: 600 }, (_, i) => ({
    ...entry(`x${i}`.padEnd(NAME_MAX, '-'), i),
    target: undefined,
    xattrs: { 'user.big': new Uint8Array(32 * 1024).fill(i & 0xff) }
  }))
  for (const e of es) delete e.target
  let blocks: Block[] = []
  t.doesNotThrow(() => { blocks = build(es, store).blocks }, 'no BLOCK_TOO_LARGE')
  const maxBlock = Math.max(...blocks.map(b => b.bytes.length))
  t.ok(maxBlock <= 256 * 1024, `largest block ${maxBlock} B <= 256 KiB`)
  const root = buildDir(es, () => {})
  const got = await new DirReader(root.cid, store).lookup(es[321].name)
  t.equal(got?.xattrs?.['user.big'].length, 32 * 1024, 'entries with big xattrs are found')
  t.equal((await new DirReader(root.cid, store).list()).length, 600)
})

t.test('FIFOs, sockets and devices: each kind roundtrips, rdev only on devices', async t => {
  const special = (name: string, kind: Entry['kind'], rdev?: number): Entry => {
    const e: Entry = { ...entry(name, 3), kind, size: 0, mode: 0o640 }
    delete e.cid
    if (rdev !== undefined) e.rdev = rdev
    return e
  }
  const cases: Array<[Entry, number]> = [
    [special('p', 'fifo'), 3],
    [special('s', 'socket'), 4],
    [special('c', 'chr', 259), 5], // 1,3: /dev/null
    [special('b', 'blk', makeDev(259, 70000)), 6] // major and minor beyond the old 8-bit fields
  ]
  for (const [e, k] of cases) {
    const raw = encodeEntry(e)
    t.equal(raw.k, k, `${e.kind}: wire value ${k}`)
    t.equal('rd' in raw, e.rdev !== undefined, `${e.kind}: rd present only for devices`)
    const back = decodeEntryBlock(encodeEntryBlock(e).bytes)
    t.same({ ...back, name: hex(back.name) }, { ...e, name: hex(e.name) }, `${e.kind} roundtrips`)
  }
  t.equal(devMajor(makeDev(259, 70000)), 259)
  t.equal(devMinor(makeDev(259, 70000)), 70000)
  t.equal(makeDev(1, 3), 259, 'makedev(1, 3) as glibc encodes it')
  t.equal(makeDev(7, 0), 1792)

  // A directory holding every kind lists and looks them up like any other.
  const store = new MemoryBlockStore()
  const { root } = build([entry('f'), ...cases.map(([e]) => e)], store)
  const listed = await new DirReader(root.cid, store).list()
  t.same(listed.map(e => [Buffer.from(e.name).toString(), e.kind, e.rdev]).sort(),
    [['b', 'blk', makeDev(259, 70000)], ['c', 'chr', 259], ['f', 'file', undefined], ['p', 'fifo', undefined], ['s', 'socket', undefined]])

  const fifo = encodeEntry(cases[0][0])
  const chr = encodeEntry(cases[2][0])
  const bad: Array<[string, unknown]> = [
    ['rdev on a fifo', { ...fifo, rd: 5 }],
    ['rdev on a socket', { ...fifo, k: 4, rd: 0 }],
    ['rdev on a file', { ...encodeEntry(entry('x')), rd: 1 }],
    ['character device without rdev', { ...chr, rd: undefined }],
    ['block device without rdev', { ...chr, k: 6, rd: undefined }],
    ['negative rdev', { ...chr, rd: -1 }],
    ['rdev as string', { ...chr, rd: '259' }],
    ['unknown kind 7', { ...fifo, k: 7 }]
  ]
  for (const [what, raw] of bad) {
    const clean = Object.fromEntries(Object.entries(raw as Record<string, unknown>).filter(([, v]) => v !== undefined))
    t.throws(() => decodeEntry(dagCbor.decode(dagCbor.encode(clean))), { code: 'BAD_ENCODING' }, what)
  }
})

t.test('entries written before the new kinds read as before, beside entries of the new kinds', async t => {
  // Hand-encoded the way every earlier version of reef wrote them: kinds 0-2, no rd field.
  const old = (n: string, k: number, extra: Record<string, unknown>): Record<string, unknown> => ({
    n: enc.encode(n), k, m: 0o644, u: 1000, g: 100, s: 2, mt: 1_600_000_000_000_000_000n, at: 1_600_000_000_000_000_000n, ct: 1_600_000_000_000_000_000n, i: 9, ...extra
  })
  const oldFile = old('f', 0, { c: fileCid })
  const oldDir = old('d', 1, { c: fileCid })
  const oldLink = old('l', 2, { y: enc.encode('f') })
  const fifo = old('p', 3, {})
  const chr = old('c', 5, { rd: 259 })
  // The encoding of an old kind has not changed: same bytes, so the same GUIDs.
  const fileEntry = decodeEntry(oldFile)
  t.same(Buffer.from(encodeEntryBlock(fileEntry).bytes), Buffer.from(dagCbor.encode({ t: 'e', e: oldFile })), 'an old file entry re-encodes to the same bytes')
  t.same(Buffer.from(encodeEntryBlock(decodeEntry(oldLink)).bytes), Buffer.from(dagCbor.encode({ t: 'e', e: oldLink })), 'an old symlink entry re-encodes to the same bytes')

  const store = new MemoryBlockStore()
  const bytes = dagCbor.encode({ t: 'd', h: 0, e: [chr, oldDir, oldFile, oldLink, fifo] })
  const cid = cidFor(bytes, 0x71)
  await store.put({ cid, bytes })
  const got = await new DirReader(cid, store).list()
  t.same(got.map(e => [Buffer.from(e.name).toString(), e.kind, e.rdev ?? null, e.target !== undefined ? Buffer.from(e.target).toString() : null]),
    [['c', 'chr', 259, null], ['d', 'dir', null, null], ['f', 'file', null, null], ['l', 'symlink', null, 'f'], ['p', 'fifo', null, null]])
  t.equal((await new DirReader(cid, store).lookup(enc.encode('f')))?.cid?.toString(), fileCid.toString(), 'an old file is found by name')
})
