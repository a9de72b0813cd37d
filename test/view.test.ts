import t from 'tap'
import { randomBytes } from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { cidFor, DAG_CBOR } from '../src/block/index.js'
import { generateKeyPair } from '../src/crypto/sign.js'
import { type ReefErrorCode } from '../src/errors.js'
import { aguidFor } from '../src/naming/index.js'
import type { LogRecord } from '../src/log/record.js'
import { MemoryBlockStore, MemoryHeadStore } from '../src/store/memory.js'
import { ViewBook } from '../src/view/book.js'
import { checkAdvance, checkRecord, checkWriterHead } from '../src/view/check.js'
import { idOfRecordKey, recordKeyFor, VIEW_SELECTORS, VIEW_VALIDATORS } from '../src/view/dht.js'
import { keyHex, parseKey, parseViewId, REEF_VIEW, viewIdFor, writerSlotFor } from '../src/view/ids.js'
import { addWriter, checkSuccessor, decodeList, encodeList, genesisList, removeWriter, standingOf, type ViewList } from '../src/view/list.js'
import {
  decodeViewRecord, encodeViewRecord, encodeWriterHead, signViewRecord, signWriterHead, verifyViewRecord, verifyWriterHead, type WriterHead
} from '../src/view/record.js'
import { Views } from '../src/view/views.js'

const owner = generateKeyPair()
const alice = generateKeyPair()
const bob = generateKeyPair()
const mallory = generateKeyPair()
const vguid = (): ReturnType<typeof cidFor> => cidFor(new Uint8Array(randomBytes(40)), DAG_CBOR)
const code = (c: ReefErrorCode): { code: ReefErrorCode } => ({ code: c })

/** genesis -> +alice (2) -> +bob (3), with each list's block CID. */
function history (): Array<{ list: ViewList, cid: ReturnType<typeof cidFor> }> {
  const l1 = genesisList(owner.publicKey, 'team', 1000)
  const c1 = encodeList(l1).cid
  const l2 = addWriter(l1, c1, alice.publicKey, 2000)
  const c2 = encodeList(l2).cid
  const l3 = addWriter(l2, c2, bob.publicKey, 3000)
  return [{ list: l1, cid: c1 }, { list: l2, cid: c2 }, { list: l3, cid: encodeList(l3).cid }]
}

t.test('view ids: per owner and name, never an AGUID, parsed back from text', async t => {
  const v = viewIdFor(owner.publicKey, 'team')
  t.equal(v.code, REEF_VIEW)
  t.ok(v.equals(viewIdFor(owner.publicKey, new TextEncoder().encode('team'))))
  t.notOk(v.equals(viewIdFor(owner.publicKey, 'other')))
  t.notOk(v.equals(viewIdFor(alice.publicKey, 'team')))
  t.not(Buffer.from(v.multihash.digest).toString('hex'), Buffer.from(aguidFor(owner.publicKey, 'team').multihash.digest).toString('hex'), 'another domain than the AGUID of the same owner and name')
  t.ok(parseViewId(v.toString()).equals(v))
  t.throws(() => parseViewId(aguidFor(owner.publicKey, 'team').toString()), code('BAD_GUID'))
  t.notOk(writerSlotFor(v, alice.publicKey).equals(writerSlotFor(v, bob.publicKey)))
  t.same(parseKey(keyHex(alice.publicKey).toUpperCase() + '\n'), alice.publicKey)
  for (const bad of ['', 'xyz', keyHex(alice.publicKey).slice(2), keyHex(alice.publicKey) + '00', 'g'.repeat(64)]) {
    t.throws(() => parseKey(bad), code('VIEW_BAD_KEY'), JSON.stringify(bad))
  }
})

t.test('writer lists: deterministic blocks, add and remove rules, strict decode', async t => {
  const [h1, h2, h3] = history()
  t.same(decodeList(encodeList(h3.list).bytes), h3.list, 'roundtrip')
  t.ok(encodeList(decodeList(encodeList(h3.list).bytes)).cid.equals(h3.cid), 'one encoding')
  // The same writers added in the other order give the same entries (sorted by key).
  const other = addWriter(addWriter(h1.list, h1.cid, bob.publicKey, 2000), h1.cid, alice.publicKey, 3000)
  t.same(other.writers.map(w => keyHex(w.key)), h3.list.writers.map(w => keyHex(w.key)))
  t.equal(h3.list.seq, 3n)
  t.ok(h3.list.prev?.equals(h2.cid))
  t.same(standingOf(h3.list, alice.publicKey), { state: 'writer', added: 2n })
  t.same(standingOf(h3.list, mallory.publicKey), { state: 'none' })
  t.throws(() => addWriter(h3.list, h3.cid, alice.publicKey), code('VIEW_ALREADY_WRITER'))
  t.throws(() => addWriter(h3.list, h3.cid, owner.publicKey), code('VIEW_ALREADY_WRITER'))
  t.throws(() => removeWriter(h3.list, h3.cid, mallory.publicKey), code('VIEW_NOT_WRITER'))
  t.throws(() => removeWriter(h3.list, h3.cid, owner.publicKey), code('VIEW_NOT_WRITER'), 'the owner stays')
  const cut = { seq: 4n, n: 9n, vguid: vguid(), record: vguid() }
  const l4 = removeWriter(h3.list, h3.cid, alice.publicKey, cut, 4000)
  t.same(standingOf(l4, alice.publicKey), { state: 'removed', added: 2n, removed: 4n, cut })
  t.same(decodeList(encodeList(l4).bytes), l4, 'a cut survives the roundtrip')
  t.throws(() => removeWriter(l4, encodeList(l4).cid, alice.publicKey), code('VIEW_NOT_WRITER'), 'removed twice')
  t.throws(() => addWriter(l4, encodeList(l4).cid, alice.publicKey), code('VIEW_REMOVED'), 'a removed key is never added again')
  checkSuccessor(h2.list, h2.cid, h3.list)
  checkSuccessor(h3.list, h3.cid, l4)
  t.throws(() => checkSuccessor(h1.list, h1.cid, h3.list), code('VIEW_CHAIN'), 'skips a seq')
  t.throws(() => checkSuccessor(h2.list, h1.cid, h3.list), code('VIEW_CHAIN'), 'links another list')
  const twoAtOnce = { ...h3.list, seq: 2n, prev: h1.cid }
  t.throws(() => checkSuccessor(h1.list, h1.cid, twoAtOnce), code('VIEW_CHAIN'), 'two writers changed')

  const raw = dagCbor.decode<Record<string, unknown>>(encodeList(h3.list).bytes)
  const variants: Array<[string, Record<string, unknown>]> = [
    ['another view id', { ...raw, view: viewIdFor(owner.publicKey, 'x') }],
    ['another owner', { ...raw, owner: alice.publicKey }],
    ['no prev after seq 1', { ...raw, prev: undefined }],
    ['unsorted writers', { ...raw, writers: [...(raw.writers as unknown[])].reverse() }],
    ['owner missing', { ...raw, writers: (raw.writers as Array<{ k: Uint8Array }>).filter(w => keyHex(w.k) !== keyHex(owner.publicKey)) }],
    ['short key', { ...raw, writers: [{ k: new Uint8Array(31), a: 1 }] }],
    ['added in the future', { ...raw, writers: (raw.writers as Array<{ k: Uint8Array, a: number }>).map(w => ({ ...w, a: 9 })) }],
    ['wrong tag', { ...raw, t: 'v' }]
  ]
  for (const [why, v] of variants) {
    const o = Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined))
    t.throws(() => decodeList(dagCbor.encode(o)), code('VIEW_MALFORMED'), why)
  }
  t.throws(() => decodeList(new Uint8Array([0xff])), code('VIEW_MALFORMED'), 'not cbor')
})

t.test('view records: sign/verify, forgery refused, strict layout', async t => {
  const [, , h3] = history()
  const name = h3.list.name
  const r = signViewRecord(owner, name, h3.cid, 3n, 3000n)
  const bytes = encodeViewRecord(r)
  const back = verifyViewRecord(bytes, h3.list.view)
  t.ok(back.list.equals(h3.cid))
  t.equal(back.seq, 3n)
  // Forgery: mallory signs a record for the owner's view (same name, owner field kept).
  const forged = encodeViewRecord({ ...signViewRecord(mallory, name, h3.cid, 4n), view: h3.list.view, owner: owner.publicKey })
  t.throws(() => verifyViewRecord(forged), code('VIEW_BAD_SIGNATURE'), 'owner named, signature by another key')
  const claimed = encodeViewRecord({ ...signViewRecord(mallory, name, h3.cid, 4n), view: h3.list.view })
  t.throws(() => verifyViewRecord(claimed), code('VIEW_NOT_OWNER'), 'signed by a key that does not own the view')
  t.throws(() => verifyViewRecord(encodeViewRecord({ ...r, seq: 4n })), code('VIEW_BAD_SIGNATURE'), 'seq changed after signing')
  t.throws(() => verifyViewRecord(encodeViewRecord({ ...r, list: vguid() })), code('VIEW_BAD_SIGNATURE'), 'list changed after signing')
  t.throws(() => verifyViewRecord(bytes, viewIdFor(owner.publicKey, 'other')), code('VIEW_MALFORMED'), 'another view expected')
  const o = dagCbor.decode<Record<string, unknown>>(bytes)
  t.throws(() => decodeViewRecord(dagCbor.encode({ ...o, x: 1 })), code('VIEW_MALFORMED'), 'extra field')
  t.throws(() => decodeViewRecord(dagCbor.encode({ ...o, a: aguidFor(owner.publicKey, 'team') })), code('VIEW_MALFORMED'), 'an AGUID is not a view id')
  t.throws(() => decodeViewRecord(new Uint8Array(2000)), code('VIEW_MALFORMED'), 'too large')
})

t.test('view book: rollback and forks refused, the held record again is fine', async t => {
  const [h1, h2, h3] = history()
  const store = new MemoryHeadStore()
  const book = new ViewBook(store)
  const rec = (h: typeof h1, time = 1n): Uint8Array => encodeViewRecord(signViewRecord(owner, h.list.name, h.cid, h.list.seq, time))
  await book.acceptView(rec(h2))
  await book.acceptView(rec(h2))
  await t.rejects(book.acceptView(rec(h1)), code('VIEW_ROLLBACK'), 'lower seq')
  await t.rejects(book.acceptView(rec(h2, 99n)), code('VIEW_ROLLBACK'), 'equal seq, other content')
  t.equal((await store.forks(h2.list.view)).length, 1, 'the fork is kept as evidence')
  await book.acceptView(rec(h3))
  t.equal((await book.currentView(h3.list.view))?.record.seq, 3n)
  await t.rejects(book.acceptView(rec(h2)), code('VIEW_ROLLBACK'), 'a replay of the older record')
  t.equal(checkAdvance(undefined, 1n, new Uint8Array(1), 'x'), 'new')
})

function head (keys = alice, o: Partial<{ listSeq: bigint, seq: bigint, n: bigint }> = {}, view = viewIdFor(owner.publicKey, 'team')): WriterHead {
  const n = o.n ?? 5n
  return signWriterHead(keys, { view, vguid: vguid(), record: n > 0n ? vguid() : undefined, n, listSeq: o.listSeq ?? 3n, seq: o.seq ?? 1n, time: 1n })
}

t.test('writer heads: sign/verify, forged and misplaced refused', async t => {
  const h = head()
  const bytes = encodeWriterHead(h)
  const slot = writerSlotFor(h.view, alice.publicKey)
  const back = verifyWriterHead(bytes, slot)
  t.equal(back.n, 5n)
  t.ok(back.record?.equals(h.record as ReturnType<typeof vguid>))
  t.throws(() => verifyWriterHead(bytes, writerSlotFor(h.view, bob.publicKey)), code('VIEW_MALFORMED'), 'another writer\'s slot')
  t.throws(() => verifyWriterHead(encodeWriterHead({ ...h, writer: bob.publicKey })), code('VIEW_BAD_SIGNATURE'), 'claims another writer')
  t.throws(() => verifyWriterHead(encodeWriterHead({ ...h, seq: 9n })), code('VIEW_BAD_SIGNATURE'), 'seq changed after signing')
  t.throws(() => verifyWriterHead(encodeWriterHead({ ...h, listSeq: 1n })), code('VIEW_BAD_SIGNATURE'), 'list seq changed after signing')
  t.throws(() => verifyWriterHead(encodeWriterHead({ ...h, record: undefined })), code('VIEW_MALFORMED'), 'counter without record')
  const none = head(alice, { n: 0n })
  t.equal(verifyWriterHead(encodeWriterHead(none)).record, undefined, 'a writer with no records yet')
})

t.test('membership: non-writers, heads from before joining, removed writers cut off', async t => {
  const [, , h3] = history()
  const list = h3.list
  checkWriterHead(head(alice), list)
  checkWriterHead(head(bob, { listSeq: 3n }), list)
  checkWriterHead(head(owner, { listSeq: 1n }), list)
  t.throws(() => checkWriterHead(head(mallory), list), code('VIEW_NOT_WRITER'), 'never a writer')
  t.throws(() => checkWriterHead(head(bob, { listSeq: 2n }), list), code('VIEW_NOT_WRITER'), 'made under a list before it was added')
  t.throws(() => checkWriterHead(head(alice, { listSeq: 4n }), list), code('VIEW_STALE'), 'refers to a list this reader lacks')
  t.throws(() => checkWriterHead(head(alice, {}, viewIdFor(owner.publicKey, 'x')), list), code('VIEW_MALFORMED'), 'another view')

  // Alice's newest head the owner saw: seq 2, record 7. She is removed at list 4.
  const l4 = removeWriter(list, h3.cid, alice.publicKey, { seq: 2n, n: 7n, vguid: vguid(), record: vguid() })
  checkWriterHead(head(alice, { listSeq: 3n, seq: 2n, n: 7n }), l4)
  checkWriterHead(head(alice, { listSeq: 2n, seq: 1n, n: 3n }), l4)
  t.throws(() => checkWriterHead(head(alice, { listSeq: 4n, seq: 3n, n: 8n }), l4), code('VIEW_REMOVED'), 'made under the list that removed her')
  t.throws(() => checkWriterHead(head(alice, { listSeq: 3n, seq: 3n, n: 7n }), l4), code('VIEW_REMOVED'), 'backdated to an old list, but a later head')
  t.throws(() => checkWriterHead(head(alice, { listSeq: 3n, seq: 2n, n: 8n }), l4), code('VIEW_REMOVED'), 'records beyond the cut')
  checkWriterHead(head(bob, { listSeq: 4n }), l4)

  // A removed writer that had published nothing: nothing of hers counts.
  const l4none = removeWriter(list, h3.cid, alice.publicKey)
  t.throws(() => checkWriterHead(head(alice, { listSeq: 2n, seq: 1n }), l4none), code('VIEW_REMOVED'))

  const rec = (keys: typeof alice, n: number): LogRecord => ({ writer: keys.publicKey, n, vv: { [keyHex(keys.publicKey)]: n }, time: 1, op: { op: 'truncate', ino: 2, size: 0, time: 1n } })
  const ah = head(alice, { listSeq: 3n, seq: 2n, n: 7n })
  checkRecord(rec(alice, 7), ah, list)
  checkRecord(rec(alice, 7), ah, l4)
  t.throws(() => checkRecord(rec(bob, 7), ah, list), code('VIEW_NOT_WRITER'), 'another writer\'s record under her head')
  t.throws(() => checkRecord(rec(alice, 8), ah, list), code('VIEW_MALFORMED'), 'beyond the head that reached it')
  const late = head(alice, { listSeq: 3n, seq: 2n, n: 9n })
  t.throws(() => checkRecord(rec(alice, 8), late, l4), code('VIEW_REMOVED'), 'a record made after the removal')
  t.throws(() => checkRecord(rec(mallory, 1), head(mallory, { n: 1n }), list), code('VIEW_NOT_WRITER'), 'a non-writer\'s record')
})

t.test('DHT keys, validators and selectors', async t => {
  const [, , h3] = history()
  const view = h3.list.view
  const vkey = recordKeyFor(view) as Uint8Array
  t.ok(idOfRecordKey(vkey)?.equals(view))
  t.equal(recordKeyFor(aguidFor(owner.publicKey, 'team')), undefined)
  const slot = writerSlotFor(view, alice.publicKey)
  const wkey = recordKeyFor(slot) as Uint8Array
  t.ok(idOfRecordKey(wkey)?.equals(slot))
  t.equal(Buffer.from(vkey.subarray(0, 11)).toString(), '/reef-view/')
  t.equal(Buffer.from(wkey.subarray(0, 13)).toString(), '/reef-writer/')
  const r2 = encodeViewRecord(signViewRecord(owner, h3.list.name, vguid(), 2n))
  const r3 = encodeViewRecord(signViewRecord(owner, h3.list.name, h3.cid, 3n))
  await VIEW_VALIDATORS['reef-view'](vkey, r3)
  await t.rejects(VIEW_VALIDATORS['reef-view'](recordKeyFor(viewIdFor(owner.publicKey, 'x')) as Uint8Array, r3), code('VIEW_MALFORMED'), 'under another view\'s key')
  await t.rejects(VIEW_VALIDATORS['reef-view'](vkey, encodeViewRecord({ ...signViewRecord(mallory, h3.list.name, h3.cid, 9n), view, owner: owner.publicKey })), code('VIEW_BAD_SIGNATURE'))
  t.equal(VIEW_SELECTORS['reef-view'](vkey, [r2, r3, new Uint8Array([1])]), 1)
  const w1 = encodeWriterHead(head(alice, { seq: 1n }))
  const w2 = encodeWriterHead(head(alice, { seq: 2n }))
  await VIEW_VALIDATORS['reef-writer'](wkey, w2)
  await t.rejects(VIEW_VALIDATORS['reef-writer'](recordKeyFor(writerSlotFor(view, bob.publicKey)) as Uint8Array, w2), code('VIEW_MALFORMED'), 'in another writer\'s slot')
  t.equal(VIEW_SELECTORS['reef-writer'](wkey, [w2, w1]), 0)
})

/** An in-memory "network": one shared record map, as if every node stored every record. */
function memNet (): { publishRecord: (k: Uint8Array, b: Uint8Array) => Promise<number>, fetchRecord: (k: Uint8Array) => Promise<Uint8Array | undefined>, records: Map<string, Uint8Array> } {
  const records = new Map<string, Uint8Array>()
  return {
    records,
    publishRecord: async (k, b) => { records.set(Buffer.from(k).toString('hex'), b); return 1 },
    fetchRecord: async k => records.get(Buffer.from(k).toString('hex'))
  }
}

t.test('Views: owner changes, others follow, non-owners refused, heads checked', async t => {
  const net = memNet()
  const blocks = new MemoryBlockStore()
  const mk = (keys: typeof owner): Views => new Views({ keys, heads: new MemoryHeadStore(), blocks, net })
  const o = mk(owner)
  const a = mk(alice)
  const m = mk(mallory)
  const created = await o.create('team')
  t.equal(created.created, true)
  t.equal((await o.create('team')).created, false, 'create again returns the view')
  const view = created.list.view
  await t.rejects(a.publishHead(view, { vguid: vguid(), n: 0n }), code('VIEW_NOT_WRITER'))
  await o.add(view, alice.publicKey)
  t.equal((await a.resolve(view)).list.seq, 2n, 'another node sees the change')
  await t.rejects(m.add(view, mallory.publicKey), code('VIEW_NOT_OWNER'))
  await t.rejects(a.remove(view, owner.publicKey), code('VIEW_NOT_OWNER'))
  await t.rejects(o.add(view, alice.publicKey), code('VIEW_ALREADY_WRITER'))
  await t.rejects(o.remove(view, bob.publicKey), code('VIEW_NOT_WRITER'))
  const v1 = vguid()
  const p1 = await a.publishHead(view, { vguid: v1, record: vguid(), n: 4n })
  t.equal(p1.head.seq, 1n)
  t.equal(p1.head.listSeq, 2n)
  const pos = await o.positions(view)
  const ap = pos.writers.find(w => keyHex(w.key) === keyHex(alice.publicKey))
  t.ok(ap?.state === 'writer' && ap.head?.vguid.equals(v1), 'the owner reads alice\'s head')
  // A forged head in alice's slot is refused by the book, whoever stores it.
  const slot = writerSlotFor(view, alice.publicKey)
  const forged = encodeWriterHead({ ...signWriterHead(mallory, { view, vguid: vguid(), n: 0n, listSeq: 2n, seq: 9n }), writer: alice.publicKey })
  await t.rejects(o.book.acceptWriterHead(forged, slot), code('VIEW_BAD_SIGNATURE'))
  // Removal pins alice's newest head; what she signs afterwards does not count.
  const removed = await o.remove(view, alice.publicKey)
  const st = standingOf(removed.list, alice.publicKey)
  t.ok(st.state === 'removed' && st.cut.seq === 1n && st.cut.n === 4n && st.cut.vguid?.equals(v1), 'cut at her newest head')
  await t.rejects(a.publishHead(view, { vguid: vguid(), n: 5n }), code('VIEW_REMOVED'))
  // She signs one anyway, backdated to list 2, and it reaches the network.
  const late = encodeWriterHead(signWriterHead(alice, { view, vguid: vguid(), record: vguid(), n: 5n, listSeq: 2n, seq: 2n }))
  net.records.set(Buffer.from(recordKeyFor(slot) as Uint8Array).toString('hex'), late)
  const after = await o.positions(view)
  const ar = after.writers.find(w => keyHex(w.key) === keyHex(alice.publicKey))
  t.ok(ar?.state === 'removed' && ar.cut.vguid?.equals(v1), 'a removed writer\'s position is her cut')
  await t.rejects(o.book.acceptView(encodeViewRecord(signViewRecord(owner, created.list.name, created.listCid, 1n))), code('VIEW_ROLLBACK'), 'the genesis replayed')
  t.equal((await m.resolve(view)).list.seq, 3n)
})

t.test('Views: a fetched list that does not follow the held one is refused (VIEW_CHAIN)', async t => {
  const net = memNet()
  const blocks = new MemoryBlockStore()
  const o = new Views({ keys: owner, heads: new MemoryHeadStore(), blocks, net })
  const reader = new Views({ keys: bob, heads: new MemoryHeadStore(), blocks, net })
  const { list, listCid } = await o.create('chain')
  await reader.resolve(list.view)
  // The owner's key signs list 2 that claims to follow another list 1 than the one published.
  const other = encodeList({ ...genesisList(owner.publicKey, 'chain', 5), time: 5 })
  t.notOk(other.cid.equals(listCid))
  await blocks.put(other)
  const bad = encodeList(addWriter(list, other.cid, alice.publicKey))
  await blocks.put(bad)
  net.records.set(Buffer.from(recordKeyFor(list.view) as Uint8Array).toString('hex'), encodeViewRecord(signViewRecord(owner, list.name, bad.cid, 2n)))
  await t.rejects(reader.resolve(list.view), code('VIEW_CHAIN'))
  t.equal((await reader.book.currentView(list.view))?.record.seq, 1n, 'the reader keeps list 1')
  // A newer list whose block nobody has: the held list still answers.
  const lost = encodeList(addWriter(list, listCid, alice.publicKey))
  net.records.set(Buffer.from(recordKeyFor(list.view) as Uint8Array).toString('hex'), encodeViewRecord(signViewRecord(owner, list.name, lost.cid, 2n)))
  t.equal((await reader.resolve(list.view)).list.seq, 1n, 'list 1, while list 2\'s block cannot be fetched')
  await blocks.put(lost)
  t.equal((await reader.resolve(list.view)).list.seq, 2n, 'list 2 once its block can be')
})
