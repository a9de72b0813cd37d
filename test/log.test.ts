import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { createHash, randomBytes } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { type Block, cidFor, type CID, DAG_CBOR, RAW } from '../src/block/index.js'
import { MemoryBlockStore } from '../src/store/memory.js'
import { DATA_FRAME_MIN, WriterLog } from '../src/log/index.js'
import { decodeRecord, encodeRecord, type LogRecord, type Op } from '../src/log/record.js'
import { norm } from './helpers/values.js'

const rnd = (n: number): Uint8Array => new Uint8Array(randomBytes(n))
const enc = new TextEncoder()
const writer = rnd(32)
const writerHex = Buffer.from(writer).toString('hex')

/** Every op type, with bigints (incl. beyond 2^53 and negative-era times) and byte arrays. */
function allOps (): Op[] {
  const big = 2n ** 62n + 12345n
  return [
    { op: 'create', parent: 1, name: enc.encode('a.txt'), ino: 2, mode: 0o644, uid: 1000, gid: 100, time: 1_700_000_000_123_456_789n },
    { op: 'mkdir', parent: 1, name: new Uint8Array([0xff, 0x00, 0x20]), ino: 3, mode: 0o755, uid: 0, gid: 0, time: big },
    { op: 'symlink', parent: 3, name: enc.encode('ln'), ino: 4, target: enc.encode('../a.txt'), uid: 1, gid: 2, time: 5n },
    { op: 'mknod', parent: 3, name: enc.encode('fifo'), ino: 5, kind: 'fifo', mode: 0o600, rdev: 0, uid: 1, gid: 2, time: 5n },
    { op: 'mknod', parent: 3, name: enc.encode('sda1'), ino: 6, kind: 'blk', mode: 0o660, rdev: (259 << 8) | 1, uid: 0, gid: 6, time: 5n },
    { op: 'mknod', parent: 3, name: enc.encode('sock'), ino: 7, kind: 'socket', mode: 0o755, rdev: 0, uid: 1, gid: 2, time: 5n },
    { op: 'mknod', parent: 3, name: enc.encode('null'), ino: 8, kind: 'chr', mode: 0o666, rdev: 0x103, uid: 0, gid: 0, time: 5n },
    { op: 'write', ino: 2, offset: 2 ** 40, data: rnd(10_000), time: 6n },
    { op: 'write', ino: 2, offset: 0, data: new Uint8Array(0), time: 7n },
    { op: 'truncate', ino: 2, size: 123456789, time: 8n },
    { op: 'fallocate', ino: 2, mode: 3, offset: 4096, length: 2 ** 40, time: 8n },
    { op: 'unlink', parent: 1, name: enc.encode('gone'), time: 9n },
    { op: 'rmdir', parent: 1, name: enc.encode('dir'), time: 10n },
    { op: 'rename', parent: 1, name: enc.encode('x'), newParent: 3, newName: enc.encode('y'), time: 11n },
    { op: 'link', ino: 2, parent: 3, name: enc.encode('hard'), time: 12n },
    { op: 'setattr', ino: 2, time: 13n },
    { op: 'setattr', ino: 2, time: 14n, mode: 0o4755, uid: 5, gid: 6, atime: big, mtime: 0n },
    { op: 'setattr', ino: 2, time: 15n, xattrName: 'user.k', xattrValue: rnd(100) },
    { op: 'setattr', ino: 2, time: 16n, xattrName: 'user.k', xattrRemove: true },
    { op: 'setattr', ino: 2, time: 17n, xattrName: 'user.empty', xattrValue: new Uint8Array(0), xattrRemove: false },
    { op: 'attach', parent: 1, name: enc.encode('imported'), ino: 9, kind: 'dir', cid: cidFor(rnd(10), DAG_CBOR), time: 18n }
  ]
}


t.test('every op type roundtrips through append, close and open', async t => {
  const dir = t.testdir()
  const ops = allOps()
  const log = new WriterLog(dir, writer).open()
  t.equal(log.replayed.length, 0)
  t.equal(log.counter, 0)
  const appended = ops.map((op, i) => log.append(op, 1_700_000_000_000 + i))
  log.sync()
  log.close()

  // Counters, version vectors and prev links.
  appended.forEach((a, i) => {
    t.equal(a.record.n, i + 1, `n of record ${i}`)
    t.same(a.record.vv, { [writerHex]: i + 1 }, `vv of record ${i}`)
    if (i === 0) t.equal(a.record.prev, undefined, 'the first record has no prev')
    else t.ok(a.record.prev?.equals(appended[i - 1].cid), `record ${i} links to record ${i - 1}`)
    t.ok(a.cid.equals(encodeRecord(a.record).cid), 'the CID is the record block\'s BGUID')
  })

  const again = new WriterLog(dir, writer).open()
  t.teardown(() => again.close())
  t.equal(again.discardedBytes, 0, 'a clean log discards nothing')
  t.equal(again.replayed.length, ops.length)
  t.same(again.replayed.map(r => norm(r.record)), appended.map(a => norm(a.record)), 'replayed records equal the appended ones')
  t.same(again.replayed.map(r => String(r.cid)), appended.map(a => String(a.cid)), 'same CIDs')
  t.same(again.replayed.map(r => norm(r.record.op)), ops.map(norm), 'ops equal what was appended')
  const w = again.replayed.find(r => r.record.op.op === 'write')?.record.op as Op
  t.ok(w.op === 'write' && typeof w.time === 'bigint' && w.offset === 2 ** 40, 'times are bigints, offsets numbers')
  t.equal(again.counter, ops.length, 'the counter resumes')
  t.ok(again.last?.equals(appended[appended.length - 1].cid), 'prev resumes')
  const next = again.append({ op: 'truncate', ino: 2, size: 0, time: 99n })
  t.equal(next.record.n, ops.length + 1)
  t.ok(next.record.prev?.equals(appended[appended.length - 1].cid), 'appends continue the chain after reopen')
})

/** XORs the byte at `pos` of file `f` with `mask`. */
function flipBits (f: string, pos: number, mask: number): void {
  const fd = fs.openSync(f, 'r+')
  try {
    const b = Buffer.alloc(1)
    fs.readSync(fd, b, 0, 1, pos)
    b[0] ^= mask
    fs.writeSync(fd, b, 0, 1, pos)
  } finally {
    fs.closeSync(fd)
  }
}

function segmentFile (dir: string): string {
  const files = fs.readdirSync(dir).filter(f => f.endsWith('.log')).sort()
  return path.join(dir, files[files.length - 1])
}

async function writeLog (dir: string, n: number): Promise<{ sizes: number[], cids: string[] }> {
  const log = new WriterLog(dir, writer).open()
  const sizes: number[] = []
  const cids: string[] = []
  for (let i = 0; i < n; i++) {
    const a = log.append({ op: 'write', ino: 2, offset: i * 100, data: rnd(50 + i * 10), time: BigInt(i) })
    cids.push(String(a.cid))
    sizes.push(log.segmentBytes)
  }
  log.sync()
  log.close()
  return { sizes, cids }
}

t.test('a torn tail is detected, discarded and truncated away', async t => {
  const damage: Array<[string, (file: string, sizes: number[]) => void]> = [
    ['last frame cut mid-way', (f, sizes) => fs.truncateSync(f, sizes[sizes.length - 2] + 20)],
    ['last frame cut inside its header', (f, sizes) => fs.truncateSync(f, sizes[sizes.length - 2] + 3)],
    ['last frame missing one byte', (f, sizes) => fs.truncateSync(f, sizes[sizes.length - 1] - 1)],
    ['garbage appended', f => fs.appendFileSync(f, rnd(1000))],
    ['a few garbage bytes appended', f => fs.appendFileSync(f, rnd(5))],
    ['zeros appended (preallocated tail)', f => fs.appendFileSync(f, new Uint8Array(4096))],
    ['a byte flipped in the last frame body', (f, sizes) => flipBits(f, sizes[sizes.length - 1] - 7, 0x10)],
    ['a byte flipped in the last frame checksum', (f, sizes) => flipBits(f, sizes[sizes.length - 2] + 10, 0x01)],
    ['length field made huge', (f, sizes) => {
      const fd = fs.openSync(f, 'r+')
      fs.writeSync(fd, Buffer.from([0x7f, 0xff, 0xff, 0xff]), 0, 4, sizes[sizes.length - 2])
      fs.closeSync(fd)
    }]
  ]
  for (const [what, hurt] of damage) {
    await t.test(what, async t => {
      const dir = t.testdir()
      const n = 10
      const { sizes, cids } = await writeLog(dir, n)
      const file = segmentFile(dir)
      hurt(file, sizes)
      const appendedGarbage = fs.statSync(file).size > sizes[n - 1]
      const keep = appendedGarbage ? n : n - 1

      const log = new WriterLog(dir, writer).open()
      t.ok(log.discardedBytes > 0, `discarded ${log.discardedBytes} bytes`)
      t.equal(log.replayed.length, keep, `${keep} whole records replayed`)
      t.same(log.replayed.map(r => String(r.cid)), cids.slice(0, keep), 'exactly the intact prefix')
      t.equal(fs.statSync(file).size, sizes[keep - 1], 'the file is truncated to the last whole frame')
      t.equal(log.counter, keep, 'numbering resumes after the last whole record')
      const a = log.append({ op: 'unlink', parent: 1, name: enc.encode('after'), time: 1n })
      t.equal(a.record.n, keep + 1)
      log.sync()
      log.close()

      const again = new WriterLog(dir, writer).open()
      t.teardown(() => again.close())
      t.equal(again.discardedBytes, 0, 'nothing to discard on the next open')
      t.equal(again.replayed.length, keep + 1, 'later appends replay cleanly')
      t.equal(String(again.replayed[keep].cid), String(a.cid))
      t.ok(again.replayed[keep].record.prev?.equals(again.replayed[keep - 1].cid), 'the chain is unbroken')
    })
  }
})

t.test('checkpoint drops old segments and numbering continues', async t => {
  const dir = t.testdir()
  const log = new WriterLog(dir, writer).open()
  const first: string[] = []
  for (let i = 0; i < 5; i++) first.push(String(log.append({ op: 'truncate', ino: 2, size: i, time: 1n }).cid))
  const segsBefore = fs.readdirSync(dir).filter(f => f.endsWith('.log'))
  t.equal(segsBefore.length, 1)
  log.checkpoint()
  t.equal(log.replayed.length, 0)
  t.equal(log.segmentBytes, 0, 'a fresh segment')
  const segsAfter = fs.readdirSync(dir).filter(f => f.endsWith('.log'))
  t.equal(segsAfter.length, 1, 'the old segment is gone')
  t.not(segsAfter[0], segsBefore[0], 'segment numbering moved on')
  t.ok(segsAfter[0] > segsBefore[0], 'to a higher segment number')
  const a6 = log.append({ op: 'truncate', ino: 2, size: 6, time: 1n })
  t.equal(a6.record.n, 6, 'record numbering continues across a checkpoint')
  t.equal(String(a6.record.prev), first[4], 'and so does the prev chain')
  log.append({ op: 'truncate', ino: 2, size: 7, time: 1n })
  log.sync()
  log.close()

  const again = new WriterLog(dir, writer).open()
  t.equal(again.replayed.length, 2, 'only records after the checkpoint replay')
  t.same(again.replayed.map(r => r.record.n), [6, 7])
  t.equal(again.counter, 7)
  again.checkpoint()
  again.checkpoint()
  again.append({ op: 'truncate', ino: 2, size: 8, time: 1n })
  again.sync()
  again.close()
  const third = new WriterLog(dir, writer).open()
  t.teardown(() => third.close())
  t.same(third.replayed.map(r => r.record.n), [8])
  t.equal(fs.readdirSync(dir).filter(f => f.endsWith('.log')).length, 1)
})

t.test('a fold\'s cut: checkpoint(cut) drops only the segments before it; the records after it stay', async t => {
  const dir = t.testdir()
  const log = new WriterLog(dir, writer).open()
  for (let i = 1; i <= 3; i++) log.append({ op: 'truncate', ino: 2, size: i, time: 1n })
  const cut = log.cut()
  const after = log.append({ op: 'truncate', ino: 2, size: 4, time: 1n })
  t.equal(after.record.n, 4, 'numbering goes on across the cut')
  t.same((await log.blocks(new MemoryBlockStore(), undefined, cut)).length, 3, 'blocks before the cut: the three records')
  log.checkpoint(cut)
  log.sync()
  log.close()
  const again = new WriterLog(dir, writer).open()
  t.teardown(() => again.close())
  t.same(again.replayed.map(r => r.record.n), [4], 'only the record after the cut replays')
})

t.test('a crash cut short a segment a fold left unsynced: what followed it in later segments goes, numbering resumes after the gap', async t => {
  const dir = t.testdir()
  const log = new WriterLog(dir, writer).open()
  const recs = []
  let beforeThird = 0
  for (let i = 1; i <= 3; i++) {
    beforeThird = log.segmentBytes
    recs.push(log.append({ op: 'truncate', ino: 2, size: i, time: 1n }))
  }
  log.cut()
  log.append({ op: 'truncate', ino: 2, size: 4, time: 1n })
  log.append({ op: 'truncate', ino: 2, size: 5, time: 1n })
  log.close()
  // The crash: the older segment lost its last record (never synced), the newer kept its two.
  const segs = fs.readdirSync(dir).filter(f => f.endsWith('.log')).sort()
  t.equal(segs.length, 2)
  const old = path.join(dir, segs[0])
  fs.truncateSync(old, beforeThird)
  const again = new WriterLog(dir, writer).open()
  t.same(again.replayed.map(r => r.record.n), [1, 2], 'records past the gap are not replayed')
  t.ok(again.discardedBytes > 0, 'and are counted as discarded')
  t.equal(fs.statSync(path.join(dir, segs[1])).size, 0, 'the later segment is emptied (appending resumes in it)')
  const next = again.append({ op: 'truncate', ino: 2, size: 6, time: 1n })
  t.equal(next.record.n, 3, 'numbering resumes after the last record kept')
  t.ok(next.record.prev?.equals(recs[1].cid), 'chained to it')
  again.sync()
  again.close()
  const third = new WriterLog(dir, writer).open()
  t.teardown(() => third.close())
  t.same(third.replayed.map(r => r.record.n), [1, 2, 3], 'and a reopen keeps it')
})

t.test('sync after a cut syncs the older segment before the newer one', async t => {
  const dir = t.testdir()
  const log = new WriterLog(dir, writer).open()
  t.teardown(() => log.close())
  log.append({ op: 'truncate', ino: 2, size: 1, time: 1n })
  log.cut()
  log.append({ op: 'truncate', ino: 2, size: 2, time: 1n })
  const synced: number[] = []
  const real = fs.fdatasyncSync
  const byFd = new Map<number, string>()
  for (const f of fs.readdirSync('/proc/self/fd')) {
    try { byFd.set(Number(f), fs.readlinkSync(`/proc/self/fd/${f}`)) } catch {}
  }
  ;(fs as { fdatasyncSync: (fd: number) => void }).fdatasyncSync = (fd: number) => { synced.push(fd); real(fd) }
  try { log.sync() } finally { (fs as { fdatasyncSync: (fd: number) => void }).fdatasyncSync = real }
  const names = synced.map(fd => path.basename(byFd.get(fd) ?? '?'))
  const segs = fs.readdirSync(dir).filter(f => f.endsWith('.log')).sort()
  t.same(names, segs, 'both segments, the older first')
})

t.test('resumeAfter continues numbering after a folded log', async t => {
  const dir = t.testdir()
  const log = new WriterLog(dir, writer).open()
  t.teardown(() => log.close())
  const prev = cidFor(rnd(10), DAG_CBOR)
  log.resumeAfter(prev, 41, { [writerHex]: 41, other: 3 })
  const a = log.append({ op: 'truncate', ino: 2, size: 0, time: 1n })
  t.equal(a.record.n, 42)
  t.same(a.record.vv, { [writerHex]: 42, other: 3 })
  t.ok(a.record.prev?.equals(prev))
  log.resumeAfter(undefined, 10, {})
  t.equal(log.counter, 42, 'resumeAfter never moves the counter back')
})

t.test('decodeRecord refuses malformed records', async t => {
  const good: LogRecord = { writer, n: 1, vv: { [writerHex]: 1 }, time: 5, op: { op: 'truncate', ino: 2, size: 3, time: 4n } }
  const ok = encodeRecord(good)
  t.same(norm(decodeRecord(ok.bytes)), norm(good))
  const base = dagCbor.decode(ok.bytes) as Record<string, unknown>
  const e = (o: unknown): Uint8Array => dagCbor.encode(o !== null && typeof o === 'object' && !Array.isArray(o)
    ? Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined))
    : o)
  const cases: Array<[string, Uint8Array]> = [
    ['empty', new Uint8Array(0)],
    ['random', rnd(100)],
    ['not a map', e([1])],
    ['wrong tag', e({ ...base, t: 'v' })],
    ['unknown op', e({ ...base, op: 'explode' })],
    ['op inherited from Object.prototype', e({ ...base, op: 'toString' })],
    ['op "constructor"', e({ ...base, op: 'constructor' })],
    ['op "__proto__"', e({ ...base, op: '__proto__' })],
    ['op not a string', e({ ...base, op: 3 })],
    ['args missing', e({ ...base, a: undefined })],
    ['args not a map', e({ ...base, a: [1, 2] })],
    ['arg missing', e({ ...base, a: { i: 2, t: 4 } })],
    ['int arg a string', e({ ...base, a: { i: '2', s: 3, t: 4 } })],
    ['int arg negative', e({ ...base, a: { i: -2, s: 3, t: 4 } })],
    ['time arg a string', e({ ...base, a: { i: 2, s: 3, t: 'now' } })],
    ['writer not bytes', e({ ...base, w: 'me' })],
    ['n missing', e({ ...base, n: undefined })],
    ['vv not a map', e({ ...base, vv: 5 })],
    ['vv value a string', e({ ...base, vv: { x: 'one' } })],
    ['prev not a link', e({ ...base, p: 'bafy' })],
    ['bad kind', encodeRecordLoose({ op: 'attach', parent: 1, name: enc.encode('x'), ino: 2, kind: 'door', cid: ok.cid, time: 1n })],
    ['bad bool', encodeRecordLoose({ op: 'setattr', ino: 2, time: 1n, xattrRemove: 1 })],
    ['bytes arg a string', encodeRecordLoose({ op: 'unlink', parent: 1, name: 'x', time: 1n })]
  ]
  for (const [what, bytes] of cases) t.throws(() => decodeRecord(bytes), { code: 'BAD_ENCODING' }, what)
  t.throws(() => encodeRecord({ ...good, op: { op: 'truncate', ino: 2, time: 1n } as unknown as Op }), { code: 'BAD_INPUT' }, 'encode refuses a missing field')

  function encodeRecordLoose (op: Record<string, unknown>): Uint8Array {
    // encodeRecord does not type-check values: it writes what it is given, as a buggy or hostile peer might.
    return encodeRecord({ ...good, op: op as unknown as Op }).bytes
  }
})

t.test('a corrupt record inside an intact frame is refused at open', async t => {
  const dir = t.testdir()
  await writeLog(dir, 2)
  // A frame whose checksum matches but whose bytes are not a record (e.g. written by a bug).
  const bytes = dagCbor.encode({ t: 'r', hello: 1 })
  const header = Buffer.alloc(36)
  header.writeUInt32BE(bytes.length, 0)
  Buffer.from(cidFor(bytes).multihash.digest).copy(header, 4)
  fs.appendFileSync(segmentFile(dir), Buffer.concat([header, bytes]))
  t.throws(() => new WriterLog(dir, writer).open(), { code: 'BAD_ENCODING' })
})

t.test('large writes keep their data in a raw frame the record names; a given digest is used as is', async t => {
  const dir = t.testdir()
  const log = new WriterLog(dir, writer).open()
  const big = rnd(DATA_FRAME_MIN + 5)
  const small = rnd(DATA_FRAME_MIN - 1)
  const hinted = rnd(100)
  const hint = new Uint8Array(createHash('sha256').update(hinted).digest())
  const a = log.append({ op: 'write', ino: 2, offset: 0, data: big, time: 1n })
  const b = log.append({ op: 'write', ino: 2, offset: 7, data: small, time: 2n })
  const c = log.append({ op: 'write', ino: 3, offset: 9, data: hinted, time: 3n }, undefined, hint)
  log.sync()
  log.close()
  const named = (r: LogRecord): boolean => r.op.op === 'write' && r.op.dataCid !== undefined
  t.ok(named(a.record), `a write of ${big.length} bytes names its data`)
  t.notOk(named(b.record), `a write of ${small.length} bytes carries it inline`)
  t.ok(named(c.record), 'a write with a digest given names its data')
  t.ok(a.record.op.op === 'write' && a.record.op.dataCid?.equals(cidFor(big)), 'the name is the data\'s raw BGUID')
  t.ok(a.cid.equals(encodeRecord(a.record).cid), 'the record CID is its block\'s BGUID')
  t.ok(encodeRecord(a.record).bytes.length < 400, `the record block stays small (${encodeRecord(a.record).bytes.length} bytes)`)
  const again = new WriterLog(dir, writer).open()
  t.teardown(() => again.close())
  const datas = again.replayed.map(r => r.record.op.op === 'write' ? Buffer.from(r.record.op.data) : undefined)
  t.same(datas, [Buffer.from(big), Buffer.from(small), Buffer.from(hinted)], 'replay attaches every write\'s data')
  t.same(again.replayed.map(r => String(r.cid)), [a, b, c].map(x => String(x.cid)), 'same record CIDs after replay')
  t.ok(again.replayed[1].record.prev?.equals(a.cid), 'the chain links records, not data frames')
})

t.test('a record naming data that is not in the log refuses to open (LOG_CORRUPT)', async t => {
  const dir = t.testdir()
  const log = new WriterLog(dir, writer).open()
  log.append({ op: 'write', ino: 2, offset: 0, data: new Uint8Array(0), dataCid: cidFor(rnd(10)), time: 1n })
  log.sync()
  log.close()
  t.throws(() => new WriterLog(dir, writer).open(), { code: 'LOG_CORRUPT' })
})

t.test('a write record with its data both inline and named, or neither, is malformed', async t => {
  const base = { t: 'r', w: writer, n: 1, vv: { [writerHex]: 1 }, tm: 1, op: 'write' }
  const both = dagCbor.encode({ ...base, a: { i: 2, o: 0, d: rnd(3), dc: cidFor(rnd(3)), t: 1 } })
  const neither = dagCbor.encode({ ...base, a: { i: 2, o: 0, t: 1 } })
  t.throws(() => decodeRecord(both), { code: 'BAD_ENCODING' }, 'both')
  t.throws(() => decodeRecord(neither), { code: 'BAD_ENCODING' }, 'neither')
})

t.test('blocks(): every record and data frame on disk as its verified block, in bounded batches, skipping stored ones', async t => {
  const dir = t.testdir()
  const log = new WriterLog(dir, writer).open()
  t.teardown(() => log.close())
  const big = rnd(DATA_FRAME_MIN * 3)
  const stored = rnd(DATA_FRAME_MIN + 1)
  const appended = [
    log.append({ op: 'mkdir', parent: 1, name: enc.encode('d'), ino: 2, mode: 0o755, uid: 0, gid: 0, time: 1n }),
    log.append({ op: 'write', ino: 3, offset: 0, data: big, time: 2n }),
    log.append({ op: 'write', ino: 3, offset: 0, data: rnd(1024 * 1024), time: 2n }), // the largest write record
    log.append({ op: 'write', ino: 3, offset: 5, data: rnd(5000), time: 3n }), // inline, written in parts
    log.append({ op: 'write', ino: 3, offset: 9, data: stored, time: 4n }),
    log.append({ op: 'truncate', ino: 3, size: 7, time: 5n })
  ]
  for (let i = 0; i < 40; i++) appended.push(log.append({ op: 'write', ino: 3, offset: i, data: rnd(DATA_FRAME_MIN), time: 6n }))
  log.sync()
  const store = new MemoryBlockStore()
  await store.put({ cid: cidFor(stored), bytes: stored })
  const puts: Block[][] = []
  const counting = { has: async (c: CID) => await store.has(c), putMany: async (bs: Iterable<Block>) => { const l = [...bs]; puts.push(l); await store.putMany(l) } }
  const batch = 100_000
  const rest = await log.blocks(counting, batch)
  await store.putMany(rest)

  t.ok(puts.length >= 5, `full batches are stored as they fill (${puts.length})`)
  for (const b of puts) {
    const bytes = b.reduce((s, x) => s + x.bytes.length, 0)
    const last = b[b.length - 1].bytes.length
    t.ok(bytes >= batch && bytes - last < batch, `a batch of ${bytes} bytes is stored once it reaches ${batch}, not later`)
  }
  const sent = [...puts.flat(), ...rest].map(b => String(b.cid))
  t.notOk(sent.includes(String(cidFor(stored))), 'a data frame the store has is not stored again')
  t.equal(new Set(sent).size, sent.length, 'no block is sent twice')
  for (const a of appended) {
    const bytes = await store.get(a.cid) // verifies
    const back = decodeRecord(bytes)
    t.same(norm({ ...back, op: { ...back.op, data: undefined } }), norm({ ...a.record, op: { ...a.record.op, data: undefined } }), `record ${a.record.n} decodes to what was appended`)
    t.ok(encodeRecord(back).cid.equals(a.cid), `record ${a.record.n} re-encodes to its BGUID`)
    const op = a.record.op
    if (op.op === 'write' && op.dataCid !== undefined) {
      t.equal(op.dataCid.code, RAW, 'a data frame is a raw block')
      t.same(Buffer.from(await store.get(op.dataCid)), Buffer.from(op.data), `the data of record ${a.record.n} is its block`)
    }
  }
  t.equal(sent.length + 1, appended.length + appended.filter(a => a.record.op.op === 'write' && a.record.op.dataCid !== undefined).length,
    'exactly the records and the data frames, less the one already stored')

  // After a checkpoint the log on disk is empty: nothing is left to store.
  log.checkpoint()
  t.same(await log.blocks(counting, batch), [], 'a checkpointed log has no blocks')
})

t.test('blocks() refuses a frame that changed on disk after open (LOG_CORRUPT)', async t => {
  for (const [what, hurt] of [
    ['a byte flipped in a frame body', (f: string, sizes: number[]) => flipBits(f, sizes[3] - 5, 0x04)],
    ['the last frame cut short', (f: string, sizes: number[]) => fs.truncateSync(f, sizes[sizes.length - 1] - 2)]
  ] as const) {
    await t.test(what, async t => {
      const dir = t.testdir()
      const { sizes } = await writeLog(dir, 6)
      const log = new WriterLog(dir, writer).open()
      t.teardown(() => log.close())
      t.equal(log.replayed.length, 6, 'the log was whole when opened')
      hurt(segmentFile(dir), sizes)
      const store = new MemoryBlockStore()
      await t.rejects(log.blocks(store), { code: 'LOG_CORRUPT' })
    })
  }
})

t.test('a new log directory and its first segment are made durable with a directory fsync; reopening costs none', async t => {
  const synced: string[] = []
  const fdPath = new Map<number, string>()
  const openSync = fs.openSync
  const fsyncSync = fs.fsyncSync
  // segment.ts calls these through the shared node:fs module object, so patching it observes them.
  fs.openSync = ((p: fs.PathLike, ...rest: unknown[]) => {
    const fd = (openSync as (...a: unknown[]) => number)(p, ...rest)
    fdPath.set(fd, path.resolve(String(p)))
    return fd
  }) as typeof fs.openSync
  fs.fsyncSync = ((fd: number) => {
    synced.push(fdPath.get(fd) ?? `fd ${fd}`)
    fsyncSync(fd)
  }) as typeof fs.fsyncSync
  t.teardown(() => { fs.openSync = openSync; fs.fsyncSync = fsyncSync })

  const base = t.testdir()
  // A relative path, two levels missing: the walk up to the first created directory must end.
  const dir = path.relative(process.cwd(), path.join(base, 'data', 'log'))
  const log = new WriterLog(dir, writer).open()
  log.append({ op: 'truncate', ino: 2, size: 1, time: 1n })
  log.sync()
  log.close()
  t.ok(synced.includes(path.resolve(base)), 'the directory holding the new data directory')
  t.ok(synced.includes(path.join(base, 'data')), 'the directory holding the new log directory')
  t.ok(synced.includes(path.join(base, 'data', 'log')), 'the log directory, holding the first segment')
  t.ok(synced.every(p => p === path.resolve(base) || p.startsWith(path.resolve(base) + path.sep)), `nothing above what was created: ${synced.join(', ')}`)

  synced.length = 0
  const again = new WriterLog(dir, writer).open()
  t.equal(again.replayed.length, 1)
  again.close()
  t.same(synced, [], 'reopening an existing log fsyncs no directory')

  // The same when only the log directory is new.
  synced.length = 0
  const other = new WriterLog(path.join(base, 'data', 'log2'), writer).open()
  other.close()
  t.same(synced.sort(), [path.join(base, 'data'), path.join(base, 'data', 'log2')], 'its parent and itself')
})
