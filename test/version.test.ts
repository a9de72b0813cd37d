// Version roots: what a fold writes into them, that they decode back to the same value, and that
// a malformed version block is refused (BAD_ENCODING) rather than half-read.
import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import crypto from 'node:crypto'
import * as dagCbor from '@ipld/dag-cbor'
import { cidFor, DAG_CBOR, RAW } from '../src/block/index.js'
import { ROOT_INO } from '../src/fs/inode.js'
import { ReefNode } from '../src/node.js'
import { decodeVersion, encodeVersion, objectKind, type VersionRoot } from '../src/object/version.js'
import { norm } from './helpers/values.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const link = (): ReturnType<typeof cidFor> => cidFor(crypto.randomBytes(16), DAG_CBOR)


t.test('a fold writes a version root naming its parent, author, message and time, and it decodes to the same', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-version-'))
  ReefNode.init(dir)
  const node = await ReefNode.open(dir, { noSync: true })
  const rfs = await node.openFs()
  t.teardown(async () => {
    rfs.log?.close()
    await node.close()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  const f = await rfs.create(ROOT_INO, enc('a'), 0o644, { uid: 1, gid: 1 })
  await rfs.write(f.ino, 0, enc('one'))
  const before1 = Date.now()
  const v1 = await rfs.fold('first')
  const after1 = Date.now()
  await rfs.write(f.ino, 0, enc('two'))
  const v2 = await rfs.fold('second, with ünïcode')
  const v3 = await rfs.fold(undefined, true)
  if (v1 === undefined || v2 === undefined || v3 === undefined) throw new Error('a fold made no version')

  t.same(v1.root.parents, [], 'the first version has no parent')
  t.same(v2.root.parents.map(String), [String(v1.vguid)], 'parents[0] is the previous VGUID')
  t.same(v3.root.parents.map(String), [String(v2.vguid)])
  t.same(Buffer.from(v2.root.author), Buffer.from(node.keys.publicKey), 'the author is the node\'s public key')
  t.same([v1.root.seq, v2.root.seq, v3.root.seq], [1n, 2n, 3n])
  t.ok(v1.root.time >= before1 && v1.root.time <= after1, 'the time is when the fold ran')
  t.equal(v3.root.message, undefined, 'no message when none was given')

  for (const v of [v1, v2, v3]) {
    const bytes = await node.store.get(v.vguid)
    t.ok(cidFor(bytes, DAG_CBOR).equals(v.vguid), 'the VGUID is the BGUID of the stored block')
    t.equal(objectKind(v.vguid, bytes), 'version')
    const back = decodeVersion(bytes)
    t.same(norm(back), norm(v.root), `version ${v.root.seq} decodes to what the fold wrote`)
    t.ok(encodeVersion(back).cid.equals(v.vguid), 'and encodes to the same block again')
  }
  const stored = decodeVersion(await node.store.get(v2.vguid))
  t.equal(stored.message, 'second, with ünïcode', 'the message is kept exactly')
  t.equal(stored.time, v2.root.time, 'the time is kept')
  t.ok(stored.log !== undefined && await node.store.has(stored.log), 'its log record is stored')
  t.same((await node.history()).map(h => [h.seq, h.message]), [[3n, undefined], [2n, 'second, with ünïcode'], [1n, 'first']], 'history follows parents[0]')
})

t.test('encode and decode round-trip every field', async t => {
  const full: VersionRoot = {
    root: link(),
    rootAttrs: { name: new Uint8Array(0), kind: 'dir', mode: 0o755, uid: 3, gid: 4, size: 2, mtime: 5n, atime: 6n, ctime: 7n, cid: link() },
    vv: { ab: 3, cd: 9 },
    links: link(),
    parents: [link(), link()],
    seq: 2n ** 60n,
    time: 1_700_000_000_123,
    author: crypto.randomBytes(32),
    message: 'merge',
    log: link(),
    nextIno: 12345
  }
  t.same(norm(decodeVersion(encodeVersion(full).bytes)), norm(full), 'every field')
  const bare: VersionRoot = { root: link(), parents: [], seq: 1n, time: 0, author: new Uint8Array(32), nextIno: 2 }
  t.same(norm(decodeVersion(encodeVersion(bare).bytes)), norm(bare), 'only the required fields')
})

t.test('a malformed version block is refused with BAD_ENCODING', async t => {
  const good: VersionRoot = { root: link(), parents: [link()], seq: 4n, time: 5, author: crypto.randomBytes(32), nextIno: 7, log: link(), message: 'm' }
  const base = dagCbor.decode(encodeVersion(good).bytes) as Record<string, unknown>
  t.ok(decodeVersion(dagCbor.encode(base)), 'the base case decodes')
  const e = (o: Record<string, unknown>): Uint8Array => dagCbor.encode(Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)))
  const rawLink = cidFor(crypto.randomBytes(8), RAW)
  const cases: Array<[string, Uint8Array]> = [
    ['empty', new Uint8Array(0)],
    ['garbage bytes', crypto.randomBytes(200)],
    ['truncated', encodeVersion(good).bytes.subarray(0, 40)],
    ['not a map', dagCbor.encode([1, 2, 3])],
    ['a string', dagCbor.encode('v')],
    ['wrong type tag (a log record)', e({ ...base, t: 'r' })],
    ['no type tag', e({ ...base, t: undefined })],
    ['root missing', e({ ...base, root: undefined })],
    ['root not a link', e({ ...base, root: 'bafy' })],
    ['root a raw block', e({ ...base, root: rawLink })],
    ['parents missing', e({ ...base, parents: undefined })],
    ['parents not an array', e({ ...base, parents: link() })],
    ['a parent not a link', e({ ...base, parents: [link(), 5] })],
    ['seq missing', e({ ...base, seq: undefined })],
    ['seq negative', e({ ...base, seq: -1 })],
    ['seq a string', e({ ...base, seq: '4' })],
    ['time a string', e({ ...base, time: 'now' })],
    ['time negative', e({ ...base, time: -5 })],
    ['author missing', e({ ...base, author: undefined })],
    ['author a string', e({ ...base, author: 'me' })],
    ['author the wrong length', e({ ...base, author: new Uint8Array(31) })],
    ['ino missing', e({ ...base, ino: undefined })],
    ['message not a string', e({ ...base, msg: 42 })],
    ['log not a link', e({ ...base, log: 'x' })],
    ['log a raw block', e({ ...base, log: rawLink })],
    ['links not a link', e({ ...base, links: [1] })],
    ['vv not a map', e({ ...base, vv: 3 })],
    ['vv count a string', e({ ...base, vv: { ab: 'x' } })],
    ['root attributes not an entry', e({ ...base, ra: 'dir' })]
  ]
  for (const [what, bytes] of cases) t.throws(() => decodeVersion(bytes), { code: 'BAD_ENCODING' }, what)
})
