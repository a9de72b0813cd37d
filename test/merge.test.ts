// The deterministic merge of several writers' logs (issue 12), without a network or a mount:
// convergence whatever order heads arrive in, each conflict case, file identity across writers.
import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { CID } from 'multiformats/cid'
import { decodeVersion } from '../src/object/version.js'
import { ROOT_INO } from '../src/fs/inode.js'
import { CONFLICT_XATTR, RENAME_EXCHANGE, type ReefFS, type VersionInfo } from '../src/fs/fs.js'
import { inoPrefixOf, LEGACY_LIMIT, prefixOfIno, writerIno } from '../src/fs/ino.js'
import { conflictName, extendsBase, isConflictName, listConflicts, merge, MERGE_AUTHOR, mergedFrom, type MergeResult, recordsSince, viewInputs, type WriterInput } from '../src/merge/index.js'
import { encodeRecord, type LogRecord } from '../src/log/record.js'
import { cred, enc, hex, keyOf, openVersion, permutations, snapshot, type Writer, type Writers, writers } from './helpers/writers.js'
import { code, openCoreFs } from './helpers/fs-core.js'
import { reef } from './helpers/cli.js'
import { generateKeyPair } from '../src/crypto/sign.js'
import { MemoryBlockStore, MemoryHeadStore } from '../src/store/memory.js'
import { Views } from '../src/view/views.js'
import { ReefError } from '../src/errors.js'
import { ReefFS as Fs } from '../src/fs/fs.js'
import { WriterLog } from '../src/log/index.js'

const text = async (rfs: ReefFS, p: string): Promise<string> => {
  const n = await rfs.resolve(p)
  return Buffer.from(await rfs.read(n, 0, n.size)).toString()
}

/** Of two writers making the same number of records, the one the merge orders first. */
const order = (a: Writer, b: Writer): [Writer, Writer] => hex(a.key) < hex(b.key) ? [a, b] : [b, a]

const writeFile = async (w: Writer, p: string, s: string): Promise<void> => {
  const n = await w.fs.resolve(p)
  await w.fs.truncate(n.ino, 0)
  await w.fs.write(n.ino, 0, enc(s))
}

async function mergeAll (ws: Writers, inputs: WriterInput[]): Promise<{ out: MergeResult, fs: ReefFS }> {
  const out = await merge({ store: ws.store, base: ws.base, writers: inputs })
  return { out, fs: await openVersion(ws.store, out.version) }
}

t.test('disjoint edits converge: one root hash whatever order the heads arrive in', async t => {
  const ws = await writers(t, async s => {
    const f = await s.fs.create(ROOT_INO, enc('shared.txt'), 0o644, cred)
    await s.fs.write(f.ino, 0, enc('shared'))
  })
  const [a, b, c] = [await ws.writer('a'), await ws.writer('b'), await ws.writer('c')]
  for (const w of [a, b, c]) {
    const d = await w.fs.mkdir(ROOT_INO, enc(`dir-${w.label}`), 0o755, cred)
    const f = await w.fs.create(d.ino, enc('file.txt'), 0o644, cred)
    await w.fs.write(f.ino, 0, enc(`written by ${w.label}`))
    await w.fs.setattr(f.ino, { mode: 0o640 })
  }
  const inputs = [await ws.input(a), await ws.input(b), await ws.input(c)]
  const hashes = new Set<string>()
  let first: MergeResult | undefined
  for (const p of permutations(inputs)) {
    // Records within a writer arrive in any order too.
    const out = await merge({ store: ws.store, base: ws.base, writers: p.map(i => ({ ...i, records: [...i.records].reverse() })) })
    hashes.add(out.version.vguid.toString())
    first ??= out
  }
  t.equal(hashes.size, 1, 'all 6 arrival orders give one root hash')
  const idle = await merge({ store: ws.store, base: ws.base, writers: [...inputs, { key: keyOf('idle'), records: [] }] })
  t.ok(hashes.has(idle.version.vguid.toString()), 'a writer with no head and no records changes nothing')
  const twice = await merge({ store: ws.store, base: ws.base, writers: inputs.map(i => ({ ...i, records: [...i.records, ...i.records] })) })
  t.ok(hashes.has(twice.version.vguid.toString()), 'a record given twice counts once')
  const out = first as MergeResult
  const m = await openVersion(ws.store, out.version)
  const snap = await snapshot(m)
  for (const w of [a, b, c]) t.equal(snap[`/dir-${w.label}/file.txt`], `file 640 written by ${w.label}`)
  t.equal(snap['/shared.txt'], 'file 644 shared')
  t.same(out.conflicts, [], 'no conflicts')
  t.equal(out.records, 12)
  const heads = inputs.map(i => ({ w: hex(i.key), h: i.head?.toString() })).sort((x, y) => x.w < y.w ? -1 : 1).map(x => x.h)
  t.same(out.version.root.parents.map(p => p.toString()), heads, 'parents: every writer head, by writer key (history shows a DAG)')
  t.same(out.version.root.author, MERGE_AUTHOR)
  for (const w of [a, b, c]) t.equal(out.version.root.vv?.[hex(w.key)], 4, 'vv joins every writer')
  t.ok(out.changed.length > 0, 'changed inodes reported for a mount to invalidate')
  // A writer adopting the merged version carries on from it.
  const later = await ws.writer('a2', out.version)
  t.equal(await text(later.fs, '/dir-b/file.txt'), 'written by b')
})

t.test('inode numbers: writer prefix and record counter, distinct across writers, legacy numbers still read', async t => {
  const ws = await writers(t, async s => { await s.fs.mkdir(ROOT_INO, enc('d'), 0o755, cred) })
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  const fa = await a.fs.create(ROOT_INO, enc('x'), 0o644, cred)
  const fb = await b.fs.create(ROOT_INO, enc('y'), 0o644, cred)
  t.equal(prefixOfIno(fa.ino), inoPrefixOf(a.key))
  t.equal(fa.ino, writerIno(inoPrefixOf(a.key), a.log.counter), 'the number of the record that made it')
  t.not(fa.ino, fb.ino)
  t.ok(fa.ino < 2 ** 51 && fb.ino < 2 ** 51, 'below the numbers the mount keeps for itself')
  t.ok(fa.ino >= LEGACY_LIMIT)
  // The base was made by this code too, so its inodes are prefixed; a legacy log replays below.
  const { out, fs: m } = await mergeAll(ws, [await ws.input(a), await ws.input(b)])
  t.equal((await m.resolve('/x')).ino, fa.ino, 'numbers survive the merge')
  t.equal((await m.resolve('/y')).ino, fb.ino)
  t.same(out.events, [])
})

t.test('a log and a version written with old per-file-system inode numbers replay, fold and merge', async t => {
  const ws = await writers(t)
  const w = await ws.writer('old')
  // Records as the code before issue 12 wrote them: inodes 2, 3 from nextIno, no target inos.
  const me = hex(w.key)
  const ops: LogRecord['op'][] = [
    { op: 'mkdir', parent: ROOT_INO, name: enc('docs'), ino: 2, mode: 0o755, uid: 0, gid: 0, time: 1n },
    { op: 'create', parent: 2, name: enc('a.txt'), ino: 3, mode: 0o644, uid: 0, gid: 0, time: 2n },
    { op: 'write', ino: 3, offset: 0, data: enc('legacy'), time: 3n },
    { op: 'rename', parent: 2, name: enc('a.txt'), newParent: ROOT_INO, newName: enc('b.txt'), time: 4n }
  ]
  for (const op of ops) w.log.append(op, 1000)
  w.log.sync()
  w.log.close()
  const log = new WriterLog(w.dir, w.key).open()
  t.teardown(() => log.close())
  const rfs = await Fs.open({ store: ws.store, log, author: w.key })
  t.equal(rfs.replaySkipped, 0)
  t.equal(await text(rfs, '/b.txt'), 'legacy')
  t.equal((await rfs.resolve('/b.txt')).ino, 3)
  t.equal(rfs.nextIno, 4, 'nextIno follows legacy numbers')
  const v = await rfs.fold('legacy') as VersionInfo
  const re = await openVersion(ws.store, v)
  t.equal((await re.resolve('/docs')).ino, 2, 'a version with legacy numbers reads back')
  // New files in that tree get prefixed numbers that cannot meet the legacy ones.
  const n = await rfs.create(2, enc('new.txt'), 0o644, cred)
  t.equal(prefixOfIno(n.ino), inoPrefixOf(w.key))
  // And a merge from nothing replays the legacy records as they are.
  const out = await merge({ store: ws.store, writers: [{ key: w.key, head: v.vguid, records: await recordsSince(ws.store, v.root.log, w.key, 0) }] })
  const m = await openVersion(ws.store, out.version)
  t.equal(await text(m, '/b.txt'), 'legacy')
  t.equal((await m.resolve('/b.txt')).ino, 3)
  t.equal(out.version.root.vv?.[me], 4)
})

t.test('conflict: both writers change one file: one keeps the name, the other is a conflict copy', async t => {
  const ws = await writers(t, async s => {
    const f = await s.fs.create(ROOT_INO, enc('notes.txt'), 0o644, cred)
    await s.fs.write(f.ino, 0, enc('base text'))
  })
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  await writeFile(a, '/notes.txt', 'version of a')
  await writeFile(b, '/notes.txt', 'version of b')
  const [first, second] = order(a, b)
  const ia = await ws.input(a)
  const ib = await ws.input(b)
  const { out, fs: m } = await mergeAll(ws, [ia, ib])
  t.equal(await text(m, '/notes.txt'), `version of ${first.label}`, 'the writer first in merge order keeps the name')
  const secondRec = (second === a ? ia : ib).records[0] as { record: LogRecord }
  const copyName = Buffer.from(conflictName(enc('notes.txt'), secondRec.record.time, second.key)).toString()
  t.match(copyName, /^notes\.sync-conflict-\d{8}-\d{6}-[0-9a-f]{8}\.txt$/, 'one fixed format, starting with the stem')
  t.equal(copyName.slice(-12, -4), hex(second.key).slice(0, 8))
  t.ok(isConflictName(copyName))
  t.equal(await text(m, `/${copyName}`), `version of ${second.label}`, 'the other version survives beside it')
  t.equal(Object.keys(await snapshot(m)).length, 2)
  const from = await mergedFrom(ws.store, out.version)
  const list = await listConflicts(m, w => from.get(w))
  t.equal(list.length, 1)
  t.same(list[0], {
    path: `/${copyName}`,
    kind: 'content',
    original: '/notes.txt',
    writers: [hex(first.key), hex(second.key)],
    versions: [(first === a ? ia : ib).head?.toString(), (second === a ? ia : ib).head?.toString()]
  })
  t.same(out.conflicts.map(c => c.path), [`/${copyName}`])

  // Resolving: deleting the copy takes it off the list; so does renaming it.
  const r1 = await ws.writer('c', out.version)
  await r1.fs.unlink(ROOT_INO, enc(copyName))
  const v1 = await r1.fs.fold() as VersionInfo
  t.same(await listConflicts(await openVersion(ws.store, v1)), [], 'deleting the copy resolves it')
  const r2 = await ws.writer('d', out.version)
  await r2.fs.rename(ROOT_INO, enc(copyName), ROOT_INO, enc('notes-b.txt'))
  const v2 = await r2.fs.fold() as VersionInfo
  const m2 = await openVersion(ws.store, v2)
  t.same(await listConflicts(m2), [], 'renaming the copy resolves it')
  t.equal((await m2.resolve('/notes-b.txt')).xattrs.has(CONFLICT_XATTR), false, 'the rename drops the mark')
})

t.test('conflict: both writers create the same name', async t => {
  const ws = await writers(t, async () => {})
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  for (const w of [a, b]) {
    const f = await w.fs.create(ROOT_INO, enc('todo'), 0o644, cred)
    await w.fs.write(f.ino, 0, enc(`list of ${w.label}`))
  }
  const [first, second] = order(a, b)
  const { fs: m } = await mergeAll(ws, [await ws.input(b), await ws.input(a)])
  const snap = await snapshot(m)
  t.equal(snap['/todo'], `file 644 list of ${first.label}`)
  const copies = Object.keys(snap).filter(p => p.startsWith('/todo.sync-conflict-'))
  t.equal(copies.length, 1)
  t.ok(copies[0].endsWith(hex(second.key).slice(0, 8)), 'no extension: the tag ends the name')
  t.equal(snap[copies[0]], `file 644 list of ${second.label}`)
  const list = await listConflicts(m)
  t.same(list.map(c => [c.path, c.kind, c.original, c.writers]), [[copies[0], 'create', '/todo', [hex(first.key), hex(second.key)]]])
})

t.test('conflict: delete vs modify: the modification survives, whichever comes first', async t => {
  for (const deleter of ['a', 'b']) {
    const ws = await writers(t, async s => {
      const f = await s.fs.create(ROOT_INO, enc('doc.txt'), 0o644, cred)
      await s.fs.write(f.ino, 0, enc('draft'))
    })
    const [a, b] = [await ws.writer('a'), await ws.writer('b')]
    const [del, mod] = deleter === 'a' ? [a, b] : [b, a]
    await del.fs.unlink(ROOT_INO, enc('doc.txt'))
    await writeFile(mod, '/doc.txt', 'final')
    const { out, fs: m } = await mergeAll(ws, [await ws.input(a), await ws.input(b)])
    t.same(await snapshot(m), { '/doc.txt': 'file 644 final' }, `deleted by ${deleter}: the modified file stays at its name`)
    t.same(out.events.map(e => [e.kind, e.writer]), [['kept', hex(del.key)]], 'the removal not applied is reported')
  }
})

t.test('conflict: both writers rename one file to different names: the first rename stands, marked', async t => {
  const ws = await writers(t, async s => {
    const f = await s.fs.create(ROOT_INO, enc('f'), 0o644, cred)
    await s.fs.write(f.ino, 0, enc('content'))
  })
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  await a.fs.rename(ROOT_INO, enc('f'), ROOT_INO, enc('fa'))
  await b.fs.rename(ROOT_INO, enc('f'), ROOT_INO, enc('fb'))
  const [first, second] = order(a, b)
  const { fs: m } = await mergeAll(ws, [await ws.input(a), await ws.input(b)])
  const snap = await snapshot(m)
  t.same(Object.keys(snap), [`/f${first.label}`], 'one file, at the first rename\'s name')
  t.equal(snap[`/f${first.label}`], 'file 644 content')
  const list = await listConflicts(m)
  t.same(list.map(c => [c.path, c.kind, c.original, c.writers]), [[`/f${first.label}`, 'rename', `/f${second.label}`, [hex(first.key), hex(second.key)]]],
    'marked: what the other writer wanted is in the list')
})

t.test('conflict: a directory and a file created under one name both stay', async t => {
  const ws = await writers(t, async () => {})
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  const [first, second] = order(a, b)
  const d = await first.fs.mkdir(ROOT_INO, enc('thing'), 0o755, cred)
  await first.fs.create(d.ino, enc('inside'), 0o644, cred)
  const f = await second.fs.create(ROOT_INO, enc('thing'), 0o644, cred)
  await second.fs.write(f.ino, 0, enc('a file'))
  const { fs: m } = await mergeAll(ws, [await ws.input(a), await ws.input(b)])
  const snap = await snapshot(m)
  t.equal(snap['/thing'], 'dir 755')
  t.equal(snap['/thing/inside'], 'file 644 ')
  const copy = Object.keys(snap).find(p => p.startsWith('/thing.sync-conflict-'))
  t.ok(copy)
  t.equal(snap[copy as string], 'file 644 a file')
  t.equal((await listConflicts(m)).length, 1)
})

t.test('conflict: rmdir races a create inside: the directory and the new file stay; two mkdirs merge', async t => {
  const ws = await writers(t, async s => { await s.fs.mkdir(ROOT_INO, enc('d'), 0o755, cred) })
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  await a.fs.rmdir(ROOT_INO, enc('d'))
  const d = await b.fs.resolve('/d')
  const f = await b.fs.create(d.ino, enc('new.txt'), 0o644, cred)
  await b.fs.write(f.ino, 0, enc('new'))
  await a.fs.mkdir(ROOT_INO, enc('m'), 0o755, cred)
  await a.fs.create((await a.fs.resolve('/m')).ino, enc('from-a'), 0o644, cred)
  await b.fs.mkdir(ROOT_INO, enc('m'), 0o755, cred)
  await b.fs.create((await b.fs.resolve('/m')).ino, enc('from-b'), 0o644, cred)
  const { out, fs: m } = await mergeAll(ws, [await ws.input(a), await ws.input(b)])
  const snap = await snapshot(m)
  t.equal(snap['/d/new.txt'], 'file 644 new', 'the file created inside survives the rmdir')
  t.ok(snap['/m/from-a'] !== undefined && snap['/m/from-b'] !== undefined, 'two mkdirs of one name merge into one directory')
  t.equal(Object.keys(snap).filter(p => p.startsWith('/m')).length, 3)
  t.ok(out.events.some(e => e.kind === 'kept' && e.writer === hex(a.key)), 'the rmdir not applied is reported')
  t.ok(out.events.some(e => e.kind === 'merged'))
  t.same(await listConflicts(m), [])
})

t.test('conflict: concurrent renames that would make a cycle: no loop, no subtree lost', async t => {
  const ws = await writers(t, async s => {
    for (const n of ['a', 'b']) {
      const d = await s.fs.mkdir(ROOT_INO, enc(n), 0o755, cred)
      const f = await s.fs.create(d.ino, enc(`in-${n}`), 0o644, cred)
      await s.fs.write(f.ino, 0, enc(n))
    }
  })
  const [wa, wb] = [await ws.writer('a'), await ws.writer('b')]
  await wa.fs.rename(ROOT_INO, enc('a'), (await wa.fs.resolve('/b')).ino, enc('a'))
  await wb.fs.rename(ROOT_INO, enc('b'), (await wb.fs.resolve('/a')).ino, enc('b'))
  const [first, second] = order(wa, wb)
  const { out, fs: m } = await mergeAll(ws, [await ws.input(wa), await ws.input(wb)])
  const snap = await snapshot(m)
  // The first rename in merge order is applied; the other would put a directory inside itself.
  const [x, y] = first === wa ? ['a', 'b'] : ['b', 'a']
  t.same(Object.keys(snap).sort(), [`/${y}`, `/${y}/${x}`, `/${y}/${x}/in-${x}`, `/${y}/in-${y}`].sort(), 'both subtrees reachable from the root')
  t.equal(snap[`/${y}/${x}/in-${x}`], `file 644 ${x}`)
  const list = await listConflicts(m)
  t.same(list.map(c => [c.path, c.kind, c.writers.at(-1)]), [[`/${y}`, 'cycle', hex(second.key)]])
  t.ok(out.events.some(e => e.kind === 'kept' && e.writer === hex(second.key)))
})

t.test('concurrent chmod and utimes are ordered by the merge, not conflicts', async t => {
  const ws = await writers(t, async s => { await s.fs.create(ROOT_INO, enc('f'), 0o644, cred) })
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  for (const [w, mode, mtime] of [[a, 0o600, 111n], [b, 0o640, 222n]] as const) {
    const n = await w.fs.resolve('/f')
    await w.fs.setattr(n.ino, { mode })
    await w.fs.setattr(n.ino, { mtime })
  }
  const [, second] = order(a, b)
  const { out, fs: m } = await mergeAll(ws, [await ws.input(b), await ws.input(a)])
  const n = await m.resolve('/f')
  t.equal(n.mode, second === a ? 0o600 : 0o640, 'the later in merge order wins')
  t.equal(n.mtime, second === a ? 111n : 222n)
  t.same(out.conflicts, [])
  t.same(await listConflicts(m), [])
})

t.test('two writers whose inode numbers collide: the later file is renumbered, deterministically', async t => {
  const ws = await writers(t, async () => {})
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  // Records as two writers whose prefixes collide would make them: both create inode N.
  const N = writerIno(5, 1) as number
  const recs = (w: Writer, s: string): LogRecord[] => {
    const me = hex(w.key)
    const ops: LogRecord['op'][] = [
      { op: 'create', parent: ROOT_INO, name: enc(`file-${w.label}`), ino: N, mode: 0o644, uid: 0, gid: 0, time: 1n },
      { op: 'write', ino: N, offset: 0, data: enc(s), time: 2n }
    ]
    return ops.map((op, i) => ({ writer: w.key, n: i + 1, vv: { [me]: i + 1 }, time: 1000, op }))
  }
  const inputs = [{ key: a.key, records: recs(a, 'A') }, { key: b.key, records: recs(b, 'B') }]
  const v1 = await merge({ store: ws.store, writers: inputs })
  const v2 = await merge({ store: ws.store, writers: [...inputs].reverse() })
  t.ok(v1.version.vguid.equals(v2.version.vguid))
  const m = await openVersion(ws.store, v1.version)
  t.equal(await text(m, '/file-a'), 'A')
  t.equal(await text(m, '/file-b'), 'B', 'the later writer\'s write went to its own file')
  t.not((await m.resolve('/file-a')).ino, (await m.resolve('/file-b')).ino)
  t.same(v1.events.map(e => e.kind), ['renumbered'])
})

t.test('bad input is a clear ReefError', async t => {
  const ws = await writers(t, async () => {})
  const a = await ws.writer('a')
  const b = await ws.writer('b')
  await a.fs.create(ROOT_INO, enc('x'), 0o644, cred)
  const ia = await ws.input(a)
  t.equal(await code(merge({ store: ws.store, writers: [ia, ia] })), 'BAD_INPUT', 'a writer twice')
  t.equal(await code(merge({ store: ws.store, writers: [{ ...ia, key: b.key }] })), 'BAD_INPUT', 'records of another writer')
  t.equal(await code(merge({ store: ws.store, writers: [{ ...ia, key: new Uint8Array(3) }] })), 'BAD_INPUT', 'a short key')
  const r = (ia.records[0] as { record: LogRecord }).record
  const forked = { ...r, time: r.time + 1 }
  t.equal(await code(merge({ store: ws.store, writers: [{ ...ia, records: [...ia.records, forked] }] })), 'LOG_CORRUPT', 'two records with one counter')
  const v = await a.fs.fold(undefined, true) as VersionInfo
  t.equal(await code(recordsSince(ws.store, v.root.log, a.key, 0, () => { throw new ReefError('VIEW_NOT_WRITER', 'refused') })), 'VIEW_NOT_WRITER', 'check sees every record')
  t.equal(await code(recordsSince(ws.store, v.root.log, b.key, 0)), 'LOG_CORRUPT', 'a head of another writer')
  t.ok(encodeRecord(r).bytes.length > 0)
})

t.test('history of a merged head is a DAG: the merge, each writer head, the base, each once', async t => {
  const s = await openCoreFs(t)
  await s.fs.create(ROOT_INO, enc('base.txt'), 0o644, cred)
  const base = await s.fs.fold('base') as VersionInfo
  const ws = await writers(t, undefined, s.node.store)
  ws.base = base
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  await a.fs.create(ROOT_INO, enc('a.txt'), 0o644, cred)
  await b.fs.create(ROOT_INO, enc('b.txt'), 0o644, cred)
  const [ia, ib] = [await ws.input(a), await ws.input(b)]
  const out = await merge({ store: s.node.store, base, writers: [ia, ib] })
  t.equal(out.version.root.seq, base.root.seq + 2n, 'one above the writer heads\' seqs')
  await s.node.adopt(out.version)
  t.equal(await code(s.node.adopt(base)), 'HEAD_ROLLBACK', 'an older version is not adopted')
  const hist = await s.node.history()
  const ids = hist.map(h => h.vguid.toString())
  t.equal(ids[0], out.version.vguid.toString(), 'the merge first')
  t.same(hist[0].parents.map(p => p.toString()).sort(), [ia.head?.toString(), ib.head?.toString()].sort())
  for (const v of [ia.head, ib.head, base.vguid]) t.ok(ids.includes(v?.toString() as string), 'every parent is listed')
  t.equal(new Set(ids).size, ids.length, 'each version once')
  t.same(hist.map(h => h.message), ['merge of 2 writers', undefined, undefined, 'base'], 'newest first: the merge, the writer heads, the base')
  // reef history prints the DAG: the merge names its parents.
  const j = JSON.parse((await reef(s.dir, ['history', '--json'])).out) as { versions: Array<{ vguid: string, parents: string[] }> }
  t.same(j.versions.map(v => v.vguid), ids)
  t.same(j.versions[0].parents, hist[0].parents.map(p => p.toString()))
  const text = (await reef(s.dir, ['history'])).out.trim().split('\n')
  t.equal(text.length, 4)
  t.match(text[0], new RegExp(`merge of 2 writers  \\[parents: ${hist[0].parents.map(p => p.toString()).join(', ')}\\]$`))
})

t.test('a view\'s merge input: records checked against the writer list, a removed writer cut', async t => {
  const owner = generateKeyPair()
  const alice = generateKeyPair()
  const bob = generateKeyPair()
  const mallory = generateKeyPair()
  const ws = await writers(t, async s => { await s.fs.create(ROOT_INO, enc('readme'), 0o644, cred) })
  const heads = new MemoryHeadStore()
  const mk = (keys: typeof owner): Views => new Views({ keys, heads, blocks: ws.store })
  const o = mk(owner)
  const view = (await o.create('team')).list.view
  await o.add(view, alice.publicKey)
  await o.add(view, bob.publicKey)
  const publish = async (who: typeof owner, w: Writer): Promise<void> => {
    const v = await w.fs.fold(undefined, true) as VersionInfo
    await mk(who).publishHead(view, { vguid: v.vguid, ...(v.root.log !== undefined ? { record: v.root.log } : {}), n: BigInt(w.log.counter) })
  }
  const a = await ws.writer('alice', undefined, alice.publicKey)
  const b = await ws.writer('bob', undefined, bob.publicKey)
  const m = await ws.writer('mallory', undefined, mallory.publicKey)
  await a.fs.create(ROOT_INO, enc('from-alice'), 0o644, cred)
  await b.fs.create(ROOT_INO, enc('bob-before'), 0o644, cred)
  await m.fs.create(ROOT_INO, enc('from-mallory'), 0o644, cred)
  await publish(alice, a)
  await publish(bob, b)
  await t.rejects(publish(mallory, m), { code: 'VIEW_NOT_WRITER' }, 'a non-writer cannot publish a head')
  // Bob is removed (cut at his published head); what he writes after does not count.
  await o.remove(view, bob.publicKey)
  await b.fs.create(ROOT_INO, enc('bob-after'), 0o644, cred)
  await t.rejects(publish(bob, b), { code: 'VIEW_REMOVED' })
  const { writers: inputs, leftOut } = await viewInputs(o, ws.store, view, ws.base)
  t.same(leftOut, [])
  t.same(inputs.map(i => hex(i.key)).sort(), [hex(alice.publicKey), hex(bob.publicKey)].sort())
  const out = await merge({ store: ws.store, base: ws.base, writers: inputs })
  const tree = await snapshot(await openVersion(ws.store, out.version))
  t.same(Object.keys(tree).sort(), ['/bob-before', '/from-alice', '/readme'], 'alice and bob up to his removal; nothing of mallory or of bob after')
})

t.test('an editor\'s save (write a temp file, rename it over) against a concurrent edit: both versions stay', async t => {
  const ws = await writers(t, async s => {
    const f = await s.fs.create(ROOT_INO, enc('notes.txt'), 0o644, cred)
    await s.fs.write(f.ino, 0, enc('v0'))
  })
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  const tmp = await a.fs.create(ROOT_INO, enc('.notes.txt.swp'), 0o644, cred)
  await a.fs.write(tmp.ino, 0, enc('saved by a'))
  await a.fs.rename(ROOT_INO, enc('.notes.txt.swp'), ROOT_INO, enc('notes.txt'))
  await writeFile(b, '/notes.txt', 'edited by b')
  const { fs: m } = await mergeAll(ws, [await ws.input(a), await ws.input(b)])
  const snap = await snapshot(m)
  t.equal(snap['/notes.txt'], 'file 644 saved by a', 'the saved file takes the name')
  const kept = Object.keys(snap).filter(p => p !== '/notes.txt')
  t.equal(kept.length, 1)
  t.match(kept[0], new RegExp(`^/notes\\.sync-conflict-\\d{8}-\\d{6}-${hex(b.key).slice(0, 8)}\\.txt$`), 'the edited one is kept, named for its writer')
  t.equal(snap[kept[0]], 'file 644 edited by b')
  t.same((await listConflicts(m)).map(c => [c.kind, c.original]), [['replaced', '/notes.txt']])
})

t.test('three writers change one file: one name, two conflict copies', async t => {
  const ws = await writers(t, async s => { await s.fs.create(ROOT_INO, enc('f.md'), 0o644, cred) })
  const all = [await ws.writer('a'), await ws.writer('b'), await ws.writer('c')]
  for (const w of all) await writeFile(w, '/f.md', `by ${w.label}`)
  const { fs: m } = await mergeAll(ws, await Promise.all(all.map(async w => await ws.input(w))))
  const snap = await snapshot(m)
  const first = [...all].sort((x, y) => hex(x.key) < hex(y.key) ? -1 : 1)[0]
  t.equal(snap['/f.md'], `file 644 by ${first.label}`)
  t.same(Object.values(snap).sort(), all.map(w => `file 644 by ${w.label}`).sort(), 'every version is in the tree')
  t.equal((await listConflicts(m)).length, 2)
})

t.test('a hard-linked file changed by two writers: the later one\'s copy survives its unlink of one name', async t => {
  const ws = await writers(t, async s => {
    const f = await s.fs.create(ROOT_INO, enc('f'), 0o644, cred)
    await s.fs.link(f.ino, ROOT_INO, enc('g'))
  })
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  const [first, second] = order(a, b)
  await writeFile(first, '/f', 'first')
  await writeFile(second, '/g', 'second')
  await second.fs.unlink(ROOT_INO, enc('g'))
  const { out, fs: m } = await mergeAll(ws, [await ws.input(a), await ws.input(b)])
  const snap = await snapshot(m)
  t.ok(Object.values(snap).includes('file 644 first'))
  t.ok(Object.values(snap).includes('file 644 second'), 'the second writer\'s version is in the tree')
  t.ok(out.events.some(e => e.kind === 'kept' && e.writer === hex(second.key)))
})

t.test('concurrent exchanges: the first applies, the other is reported and marked; nothing lost', async t => {
  const ws = await writers(t, async s => {
    for (const n of ['x', 'y', 'z']) {
      const f = await s.fs.create(ROOT_INO, enc(n), 0o644, cred)
      await s.fs.write(f.ino, 0, enc(n))
    }
  })
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  const [first, second] = order(a, b)
  await first.fs.rename(ROOT_INO, enc('x'), ROOT_INO, enc('y'), RENAME_EXCHANGE)
  await second.fs.rename(ROOT_INO, enc('y'), ROOT_INO, enc('z'), RENAME_EXCHANGE)
  const { out, fs: m } = await mergeAll(ws, [await ws.input(a), await ws.input(b)])
  t.same(await snapshot(m), { '/x': 'file 644 y', '/y': 'file 644 x', '/z': 'file 644 z' }, 'the first exchange')
  t.same(out.events.map(e => [e.kind, e.writer]), [['kept', hex(second.key)]], 'its file was moved by the first: reported')
  t.same((await listConflicts(m)).map(c => [c.path, c.kind, c.original]), [['/x', 'rename', '/z']], 'and marked')
})

t.test('a version and a log written before issue 12 (fixture from 32d41e8) read, replay, take new files and merge', async t => {
  const fx = JSON.parse(fs.readFileSync(new URL('./fixtures/legacy-32d41e8.json', import.meta.url), 'utf8')) as {
    writer: string, version: string, inos: Record<string, number>, blocks: Record<string, string>, log: Record<string, string>
  }
  const store = new MemoryBlockStore()
  for (const [k, b] of Object.entries(fx.blocks)) store.blocks.set(k, new Uint8Array(Buffer.from(b, 'base64')))
  const vguid = CID.parse(fx.version)
  const version: VersionInfo = { vguid, root: decodeVersion(await store.get(vguid)) }
  const old = await openVersion(store, version)
  t.same(await snapshot(old), {
    '/a-link.txt': 'file 644 alpha\n',
    '/docs': 'dir 755',
    '/docs/a.txt': 'file 644 alpha\n',
    '/docs/sub': 'dir 700',
    '/docs/sub/c.txt': 'file 600 gamma\n',
    '/docs/to-a': 'symlink 777'
  }, 'the old version reads')
  t.equal((await old.resolve('/a-link.txt')).ino, fx.inos.a, 'legacy numbers, hard link through the link table')
  t.same(Buffer.from(old.getxattr(await old.resolve('/docs/sub/c.txt'), 'user.color')).toString(), 'blue')

  // The writer's unfolded log, written by the old code, replays on this one.
  const ws = await writers(t, undefined, store)
  ws.base = version
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-legacy-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  for (const [f, b] of Object.entries(fx.log)) fs.writeFileSync(path.join(dir, f), Buffer.from(b, 'base64'))
  const key = new Uint8Array(Buffer.from(fx.writer, 'hex'))
  const log = new WriterLog(dir, key).open()
  t.teardown(() => log.close())
  const rfs = await Fs.open({ store, log, version, author: key })
  t.equal(rfs.replaySkipped, 0)
  const replayed = await snapshot(rfs)
  t.equal(replayed['/docs/a.txt'], 'file 644 alpha\nmore\n')
  t.equal(replayed['/c-moved.txt'], 'file 600 gamma\n')
  t.equal(replayed['/d.txt'], 'file 644 delta\n')
  t.equal(replayed['/a-link.txt'], undefined)
  t.equal((await rfs.resolve('/d.txt')).ino, fx.inos.d)
  // New files get prefixed numbers, clear of the legacy ones.
  const e = await rfs.create(ROOT_INO, enc('e.txt'), 0o644, cred)
  t.equal(prefixOfIno(e.ino), inoPrefixOf(key))
  t.ok(e.ino >= LEGACY_LIMIT)
  const v2 = await rfs.fold('on the new code') as VersionInfo
  t.equal(v2.root.nextIno, fx.inos.d + 1, 'nextIno stays in the legacy range')
  t.same(Object.keys(await snapshot(await openVersion(store, v2))).sort(), [...Object.keys(replayed), '/e.txt'].sort())

  // A merge with another writer on that version: a legacy file changed by both.
  ws.base = v2
  const me: Writer = { key, fs: await Fs.open({ store, log, version: v2, author: key }), log, label: 'legacy', dir }
  const b = await ws.writer('b')
  await writeFile(me, '/docs/a.txt', 'legacy writer')
  await writeFile(b, '/docs/a.txt', 'new writer')
  const { fs: m } = await mergeAll(ws, [await ws.input(me), await ws.input(b)])
  const snap = await snapshot(m)
  t.same(Object.keys(snap).filter(p => p.startsWith('/docs/a')).length, 2, 'the name and one conflict copy')
  t.same(Object.values(snap).filter(v => v.endsWith('writer')).sort(), ['file 644 legacy writer', 'file 644 new writer'])
})

t.test('a writer restarted on a merge it adopted keeps one log chain, and its records say what it has seen', async t => {
  const ws = await writers(t, async () => {})
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  await a.fs.create(ROOT_INO, enc('a1'), 0o644, cred)
  await b.fs.create(ROOT_INO, enc('b1'), 0o644, cred)
  const [ia, ib] = [await ws.input(a), await ws.input(b)]
  const { out } = await mergeAll(ws, [ia, ib])
  // a's process ends; it starts again on the merged version.
  a.log.close()
  const log = new WriterLog(a.dir, a.key).open()
  t.teardown(() => log.close())
  const rfs = await Fs.open({ store: ws.store, log, version: out.version, author: a.key })
  await rfs.create(ROOT_INO, enc('a2'), 0o644, cred)
  const v = await rfs.fold() as VersionInfo
  const all = await recordsSince(ws.store, v.root.log, a.key, 0)
  t.same(all.map(r => r.record.n), [1, 2], 'its records before and after the merge, one chain')
  t.equal(all[1].record.vv[hex(b.key)], 1, 'the record after the merge has seen b\'s')
  t.equal(all[1].record.prev?.toString(), all[0].cid.toString())
  // So a merge of both from the first merge sees no concurrency: b's file stays, a's joins it.
  const next = await merge({ store: ws.store, base: out.version, writers: [{ key: a.key, head: v.vguid, records: all }] })
  t.same(Object.keys(await snapshot(await openVersion(ws.store, next.version))).sort(), ['/a1', '/a2', '/b1'])
})

t.test('a writer\'s later records follow its file to the conflict name the merge gave it', async t => {
  const ws = await writers(t, async () => {})
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  const [first, second] = order(a, b)
  for (const w of [first, second]) {
    const f = await w.fs.create(ROOT_INO, enc('report'), 0o644, cred)
    await w.fs.write(f.ino, 0, enc(`by ${w.label}`))
  }
  // The second writer renames its file, then removes another it made under a taken name.
  await second.fs.rename(ROOT_INO, enc('report'), ROOT_INO, enc(`report-${second.label}`))
  await first.fs.create(ROOT_INO, enc('tmp'), 0o644, cred)
  await second.fs.create(ROOT_INO, enc('tmp'), 0o644, cred)
  await second.fs.unlink(ROOT_INO, enc('tmp'))
  const { out, fs: m } = await mergeAll(ws, [await ws.input(a), await ws.input(b)])
  t.same(await snapshot(m), {
    '/report': `file 644 by ${first.label}`,
    [`/report-${second.label}`]: `file 644 by ${second.label}`,
    '/tmp': 'file 644 '
  }, 'its rename moved its own file, and its unlink removed its own, from their conflict names')
  t.same(await listConflicts(m), [], 'nothing left in conflict')
  t.same(out.events, [])
})

t.test('conflict names: one format, the stem first, at most 255 bytes', async t => {
  const w = new Uint8Array(32).fill(0xab)
  const at = Date.UTC(2026, 11, 6, 20, 45, 0)
  const name = (s: string, k?: number): string => Buffer.from(conflictName(enc(s), at, w, k)).toString()
  t.equal(name('notes.txt'), 'notes.sync-conflict-20261206-204500-abababab.txt')
  t.equal(name('notes.txt', 2), 'notes.sync-conflict-20261206-204500-abababab-2.txt', 'a number only when the name is taken')
  t.equal(name('Makefile'), 'Makefile.sync-conflict-20261206-204500-abababab')
  t.equal(name('.bashrc'), '.bashrc.sync-conflict-20261206-204500-abababab', 'a leading dot is not an extension')
  t.equal(name('a.tar.gz'), 'a.tar.sync-conflict-20261206-204500-abababab.gz')
  const long = name('x'.repeat(250) + '.txt')
  t.equal(Buffer.byteLength(long), 255)
  t.ok(long.startsWith('xxxx') && long.endsWith('-abababab.txt'))
  for (const s of ['notes.txt', 'Makefile', '.bashrc', 'a.tar.gz']) t.ok(isConflictName(name(s)))
  t.notOk(isConflictName('notes.txt'))
  t.notOk(isConflictName('notes.sync-conflict-2026.txt'))
})

t.test('a writer starting --from a version after its head\'s root was lost: new inode numbers stay above the tree\'s', async t => {
  const ws = await writers(t, async () => {})
  const a = await ws.writer('a')
  const made = [await a.fs.create(ROOT_INO, enc('one'), 0o644, cred), await a.fs.create(ROOT_INO, enc('two'), 0o644, cred)]
  const v1 = await a.fs.fold() as VersionInfo
  a.log.close()
  const log = new WriterLog(a.dir, a.key).open()
  t.teardown(() => log.close())
  // As ReefNode.openFs does when the head's version root cannot be read: its seq, no vv, no log.
  const lost: VersionInfo = { vguid: v1.vguid, root: { ...v1.root, seq: v1.root.seq + 1n, parents: [], log: undefined, vv: undefined } }
  const rfs = await Fs.open({ store: ws.store, log, version: lost, from: v1, author: a.key })
  const n = await rfs.create(ROOT_INO, enc('three'), 0o644, cred)
  t.ok(made.every(m => m.ino < n.ino), 'the counter resumed from the version started from')
  t.equal(n.ino, writerIno(inoPrefixOf(a.key), (v1.root.vv?.[hex(a.key)] ?? 0) + 1))
})

t.test('a writer whose version became a conflict copy, once it has the merge, writes the file at the name again', async t => {
  const ws = await writers(t, async s => {
    const f = await s.fs.create(ROOT_INO, enc('s.txt'), 0o644, cred)
    await s.fs.write(f.ino, 0, enc('base\n'))
  })
  const [first, later] = order(await ws.writer('a'), await ws.writer('b'))
  const ino = (await first.fs.resolve('/s.txt')).ino
  await first.fs.write(ino, 5, enc('first\n'))
  await later.fs.write((await later.fs.resolve('/s.txt')).ino, 5, enc('later\n'))
  const m1 = await merge({ store: ws.store, base: ws.base, writers: [await ws.input(first), await ws.input(later)] })
  const copyName = (await snapshotNames(await openVersion(ws.store, m1.version))).find(n => isConflictName(enc(n.slice(1))))
  t.ok(copyName, 'the later writer\'s version is a conflict copy')
  // The later writer adopts the merge and appends to the file at the name (the first's version).
  const l2 = await ws.adopt(later, m1.version)
  const at = await l2.fs.resolve('/s.txt')
  t.equal(at.ino, ino, 'the name has the same inode in the merge')
  await l2.fs.write(at.ino, 11, enc('appended by the later writer\n'))
  const m2 = await merge({ store: ws.store, base: ws.base, writers: [await ws.input(first), await ws.input(l2)] })
  const fs2 = await openVersion(ws.store, m2.version)
  t.equal(await text(fs2, '/s.txt'), 'base\nfirst\nappended by the later writer\n', 'the append lands in the file at the name')
  t.equal(await text(fs2, copyName as string), 'base\nlater\n', 'the copy keeps the later writer\'s version, untouched')
})

async function snapshotNames (rfs: ReefFS): Promise<string[]> {
  return (await rfs.readdir(rfs.root)).map(e => '/' + Buffer.from(e.name).toString())
}

t.test('a merge from an earlier merge that every newer record has seen is the merge from no base', async t => {
  const ws = await writers(t)
  const a = await ws.writer('a')
  const b = await ws.writer('b')
  const fa = await a.fs.create(ROOT_INO, enc('a.txt'), 0o644, cred)
  await a.fs.write(fa.ino, 0, enc('a1\n'))
  await b.fs.mkdir(ROOT_INO, enc('dir-b'), 0o755, cred)
  const m1 = await merge({ store: ws.store, writers: [await ws.input(a), await ws.input(b)] })
  // Both adopt the merge and go on; a third writer that never saw it makes the base unusable.
  const a2 = await ws.adopt(a, m1.version)
  const b2 = await ws.adopt(b, m1.version)
  await a2.fs.write((await a2.fs.resolve('/a.txt')).ino, 3, enc('a2\n'))
  await b2.fs.create((await b2.fs.resolve('/dir-b')).ino, enc('c.txt'), 0o600, cred)
  const later = [await ws.input(a2), await ws.input(b2)]
  t.ok(extendsBase(m1.version, later), 'every newer record has seen the first merge')
  const full = await merge({ store: ws.store, writers: later })
  const inc = await merge({ store: ws.store, base: m1.version, writers: later, extending: true })
  t.equal(inc.version.vguid.toString(), full.version.vguid.toString(), 'the same version, replaying only the newer records')
  t.equal(inc.records, 2, 'two records replayed instead of all')
  t.same(await snapshot(await openVersion(ws.store, inc.version)), await snapshot(await openVersion(ws.store, full.version)))
  const c = await ws.writer('c')
  await c.fs.create(ROOT_INO, enc('c-never-saw.txt'), 0o644, cred)
  t.notOk(extendsBase(m1.version, [...later, await ws.input(c)]), 'a record that had not seen the base: merge from no base')
  t.notOk(extendsBase(m1.version, [later[0]]), 'a writer of the base missing (cut back by a removal): merge from no base')
})

t.test('three writers append to one file: a late third writer ordered first loses no acknowledged line (seed 9 of view-random)', async t => {
  const ws = await writers(t, async s => { await s.fs.create(ROOT_INO, enc('log.txt'), 0o644, cred) })
  // Roles by key order: D (first in merge order) never sees the others until the end.
  const [d, a, b] = [await ws.writer('x'), await ws.writer('y'), await ws.writer('z')].sort((p, q) => hex(p.key) < hex(q.key) ? -1 : 1)
  const append = async (w: Writer, line: string): Promise<void> => {
    const n = await w.fs.resolve('/log.txt')
    await w.fs.write(n.ino, n.size, enc(line))
  }
  await append(d, 'D1\n')
  await append(a, 'A1\n')
  await append(b, 'B1\n')
  // A and B meet: A's line keeps the name, B's becomes a copy; B adopts that and appends.
  const m1 = await merge({ store: ws.store, base: ws.base, writers: [await ws.input(a), await ws.input(b)] })
  const b2 = await ws.adopt(b, m1.version)
  t.equal(await text(b2.fs, '/log.txt'), 'A1\n', 'B sees A\'s line at the name')
  await append(b2, 'B2\n')
  await append(b2, 'B3\n')
  // Now D's line arrives: D is first in merge order, so D's version takes the name.
  const inputs = [await ws.input(a), await ws.input(b2), await ws.input(d)]
  const out = await merge({ store: ws.store, base: ws.base, writers: inputs })
  const m = await openVersion(ws.store, out.version)
  const snap = await snapshot(m)
  t.equal(snap['/log.txt'], 'file 644 D1\n', 'the first in merge order keeps the name')
  const contents = Object.values(snap).map(v => v.replace(/^file 644 /, '')).sort()
  t.same(contents, ['A1\nB2\nB3\n', 'B1\n', 'D1\n'], 'B\'s appends land on the content B saw (A\'s line), nothing overwritten')
  for (const line of ['D1', 'A1', 'B1', 'B2', 'B3']) t.ok(contents.some(c => c.includes(line + '\n')), `line ${line} is in the tree`)
  const again = await merge({ store: ws.store, base: ws.base, writers: [...inputs].reverse() })
  t.equal(again.version.vguid.toString(), out.version.vguid.toString(), 'the same merge whatever order the heads arrive in')
})

t.test('content records without `after` (written before it) still merge by the older rule', async t => {
  const ws = await writers(t, async s => { await s.fs.create(ROOT_INO, enc('f.txt'), 0o644, cred) }, undefined, false)
  const [first, later] = order(await ws.writer('a'), await ws.writer('b'))
  await writeFile(first, '/f.txt', 'first')
  await writeFile(later, '/f.txt', 'later')
  const inputs = [await ws.input(first), await ws.input(later)]
  t.ok(inputs.every(i => i.records.every(r => ('record' in r ? r.record : r).op.op !== 'write' || ('record' in r ? r.record : r).op.after === undefined)), 'records carry no after')
  const { fs: m } = await mergeAll(ws, inputs)
  const snap = await snapshot(m)
  t.equal(snap['/f.txt'], 'file 644 first')
  t.same(Object.values(snap).sort(), ['file 644 first', 'file 644 later'])
})

t.test('a writer whose head has seen every other record: its tree is the merge, with nothing replayed', async t => {
  const ws = await writers(t, async s => { await s.fs.create(ROOT_INO, enc('f.txt'), 0o644, cred) })
  const a = await ws.writer('a')
  const b = await ws.writer('b')
  await writeFile(a, '/f.txt', 'by a\n')
  await b.fs.mkdir(ROOT_INO, enc('dir-b'), 0o755, cred)
  const m1 = await merge({ store: ws.store, base: ws.base, writers: [await ws.input(a), await ws.input(b)] })
  t.equal(m1.fastForward, undefined, 'concurrent records: replayed')
  // B takes the merge and goes on; A does nothing more.
  const b2 = await ws.adopt(b, m1.version)
  const f = await b2.fs.resolve('/f.txt')
  await b2.fs.write(f.ino, f.size, enc('then b\n'))
  await b2.fs.create((await b2.fs.resolve('/dir-b')).ino, enc('new.txt'), 0o600, cred)
  const inputs = [await ws.input(a), await ws.input(b2)]
  const out = await merge({ store: ws.store, base: ws.base, writers: inputs })
  t.equal(out.fastForward, hex(b.key), 'B had seen all of A: its tree is the merge')
  t.equal(out.records, 0, 'nothing replayed')
  const replayed = await merge({ store: ws.store, base: ws.base, writers: [inputs[0], { ...inputs[1], head: undefined }] })
  t.equal(replayed.fastForward, undefined, 'without B\'s head the records are replayed')
  t.same(await snapshot(await openVersion(ws.store, out.version)), await snapshot(await openVersion(ws.store, replayed.version)), 'the same tree as replaying every record')
  t.same(await snapshot(await openVersion(ws.store, out.version)), await snapshot(b2.fs), 'B\'s own tree')
  const reversed = await merge({ store: ws.store, base: ws.base, writers: [...inputs].reverse() })
  t.equal(reversed.version.vguid.toString(), out.version.vguid.toString(), 'whatever order the heads arrive in')
  const inc = await merge({ store: ws.store, base: m1.version, writers: inputs, extending: true })
  t.equal(inc.version.vguid.toString(), out.version.vguid.toString(), 'and from the earlier merge as base')
  t.same(out.version.root.parents.map(String), [...inputs].sort((x, y) => hex(x.key) < hex(y.key) ? -1 : 1).map(i => String(i.head)), 'parents: both heads')
  // A writes once more, unseen by B: a replay again.
  await writeFile(a, '/f.txt', 'a again\n')
  const both = await merge({ store: ws.store, base: ws.base, writers: [await ws.input(a), await ws.input(b2)] })
  t.equal(both.fastForward, undefined, 'a record B has not seen: replayed')
  t.equal((await listConflicts(await openVersion(ws.store, both.version))).length, 1, 'and the concurrent change to f.txt is a conflict copy')
})

t.test('a change to content a merge base holds: its copy starts from that content, and the merge from the base is the merge from none', async t => {
  const ws = await writers(t)
  const a = await ws.writer('a')
  const b = await ws.writer('b')
  const f = await a.fs.create(ROOT_INO, enc('f.txt'), 0o644, cred)
  await a.fs.write(f.ino, 0, enc('one\n'))
  await b.fs.mkdir(ROOT_INO, enc('d'), 0o755, cred)
  const m1 = await merge({ store: ws.store, writers: [await ws.input(a), await ws.input(b)] })
  const a2 = await ws.adopt(a, m1.version)
  const b2 = await ws.adopt(b, m1.version)
  // Both append to the content m1 holds (its last change is a's first write).
  const append = async (w: Writer, line: string): Promise<void> => {
    const n = await w.fs.resolve('/f.txt')
    await w.fs.write(n.ino, n.size, enc(line))
  }
  await append(a2, 'two by a\n')
  await append(b2, 'two by b\n')
  await append(b2, 'three by b\n')
  const later = [await ws.input(a2), await ws.input(b2)]
  t.ok(extendsBase(m1.version, later))
  const full = await merge({ store: ws.store, writers: later })
  const inc = await merge({ store: ws.store, base: m1.version, writers: later, extending: true })
  t.equal(inc.version.vguid.toString(), full.version.vguid.toString(), 'the same version from the base as from none')
  const contents = Object.values(await snapshot(await openVersion(ws.store, inc.version))).filter(v => v.startsWith('file')).map(v => v.replace(/^file 644 /, '')).sort()
  const [first] = order(a2, b2)
  const kept = first === a2 ? 'one\ntwo by a\n' : 'one\ntwo by b\nthree by b\n'
  const copy = first === a2 ? 'one\ntwo by b\nthree by b\n' : 'one\ntwo by a\n'
  t.same(contents, [kept, copy].sort(), 'one keeps the name, the other is a copy of m1\'s content plus its own lines')
})
