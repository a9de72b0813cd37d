// A fold takes a snapshot under the fs lock and builds its blocks outside it (src/fs/fold.ts,
// src/fs/layer.ts): changes made while it builds must read right at once, must not leak into
// the version being built, and must reach the next one, a crash's replay, and a fold that
// failed and was abandoned. The fold's afterSnapshot hook runs changes in that window.
import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import type { ReefFS } from '../src/fs/fs.js'
import { ROOT_INO } from '../src/fs/inode.js'
import { openCoreFs } from './helpers/fs-core.js'
import { prng } from './helpers/views.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const cred = { uid: 0, gid: 0 }
const PUNCH = 0x02 | 0x01 // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE

/** Paths -> file ids, ids -> content (hard links share an id). One directory, `d`. */
interface Model { paths: Map<string, number>, content: Map<number, Buffer> }

const clone = (m: Model): Model => ({ paths: new Map(m.paths), content: new Map([...m.content].map(([k, v]) => [k, Buffer.from(v)])) })

/** The tree of a ReefFS as path -> size and content hash, and the model's the same way. */
async function treeOf (rfs: ReefFS): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  const walk = async (ino: number, p: string): Promise<void> => {
    for (const e of await rfs.readdir(rfs.node(ino))) {
      const n = rfs.node(e.ino)
      const q = `${p}${Buffer.from(e.name).toString()}`
      if (n.kind === 'dir') await walk(n.ino, `${q}/`)
      else out[q] = `${n.size} ${crypto.createHash('sha256').update(await rfs.read(n, 0, n.size)).digest('hex').slice(0, 16)}`
    }
  }
  await walk(rfs.root.ino, '')
  return out
}

function modelTree (m: Model): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [p, id] of [...m.paths].sort()) {
    const c = m.content.get(id) as Buffer
    out[p] = `${c.length} ${crypto.createHash('sha256').update(c).digest('hex').slice(0, 16)}`
  }
  return Object.fromEntries(Object.entries(out).sort())
}

const sortedTree = async (rfs: ReefFS): Promise<Record<string, string>> => Object.fromEntries(Object.entries(await treeOf(rfs)).sort())

/** Random operations on files of the root and of `d`, applied to the fs and the model alike. */
class Ops {
  private nextId = 1
  constructor (readonly m: Model, private readonly r: () => number, private readonly fs: () => ReefFS) {}
  private pick<T> (xs: T[]): T { return xs[Math.floor(this.r() * xs.length)] }
  /** `n` bytes of a xorshift stream seeded from the test's generator (never all one value). */
  private bytes (n: number): Buffer {
    const b = Buffer.alloc(n)
    let x = (Math.floor(this.r() * 2 ** 32) | 1) >>> 0
    for (let i = 0; i < n; i++) {
      x ^= x << 13
      x >>>= 0
      x ^= x >>> 17
      x ^= x << 5
      x >>>= 0
      b[i] = x & 255
    }
    return b
  }

  private async at (p: string): Promise<{ dir: number, name: Uint8Array }> {
    const i = p.lastIndexOf('/')
    const dir = i < 0 ? ROOT_INO : (await this.fs().resolve('/' + p.slice(0, i))).ino
    return { dir, name: enc(p.slice(i + 1)) }
  }

  async one (): Promise<string> {
    const fs = this.fs()
    const names = ['a', 'b', 'c', 'd/x', 'd/y']
    const have = [...this.m.paths.keys()]
    // 'poke': a small write, mostly inside one page of a file with a stored base (a partial page).
    const kind = have.length === 0 ? 'create' : this.pick(['write', 'write', 'write', 'poke', 'poke', 'truncate', 'punch', 'create', 'unlink', 'rename', 'link'])
    switch (kind) {
      case 'create': {
        const p = this.pick(names)
        if (this.m.paths.has(p)) return await this.one()
        const { dir, name } = await this.at(p)
        await fs.create(dir, name, 0o644, cred)
        const id = this.nextId++
        this.m.paths.set(p, id)
        this.m.content.set(id, Buffer.alloc(0))
        return `create ${p}`
      }
      case 'write':
      case 'poke': {
        const p = this.pick(have)
        const c = this.m.content.get(this.m.paths.get(p) as number) as Buffer
        const off = Math.floor(this.r() * (c.length + (kind === 'poke' ? 0 : 100_000)))
        const data = this.bytes(1 + Math.floor(this.r() * (kind === 'poke' ? 9000 : 200_000)))
        await fs.write((await fs.resolve('/' + p)).ino, off, data)
        const next = Buffer.alloc(Math.max(c.length, off + data.length))
        c.copy(next)
        data.copy(next, off)
        this.m.content.set(this.m.paths.get(p) as number, next)
        return `${kind} ${p} ${off}+${data.length}`
      }
      case 'truncate': {
        const p = this.pick(have)
        const c = this.m.content.get(this.m.paths.get(p) as number) as Buffer
        const size = Math.floor(this.r() * (c.length * 1.5 + 1000))
        await fs.truncate((await fs.resolve('/' + p)).ino, size)
        const next = Buffer.alloc(size)
        c.copy(next, 0, 0, Math.min(size, c.length))
        this.m.content.set(this.m.paths.get(p) as number, next)
        return `truncate ${p} ${size}`
      }
      case 'punch': {
        const p = this.pick(have)
        const c = this.m.content.get(this.m.paths.get(p) as number) as Buffer
        if (c.length === 0) return await this.one()
        const off = Math.floor(this.r() * c.length)
        const len = 1 + Math.floor(this.r() * 150_000)
        await fs.fallocate((await fs.resolve('/' + p)).ino, PUNCH, off, len)
        c.fill(0, off, Math.min(c.length, off + len))
        return `punch ${p} ${off}+${len}`
      }
      case 'unlink': {
        const p = this.pick(have)
        const { dir, name } = await this.at(p)
        await fs.unlink(dir, name)
        this.m.paths.delete(p)
        return `unlink ${p}`
      }
      case 'rename': {
        const p = this.pick(have)
        const q = this.pick(names)
        if (q === p || this.m.paths.get(q) === this.m.paths.get(p)) return await this.one()
        const a = await this.at(p)
        const b = await this.at(q)
        await fs.rename(a.dir, a.name, b.dir, b.name)
        this.m.paths.set(q, this.m.paths.get(p) as number)
        this.m.paths.delete(p)
        return `rename ${p} ${q}`
      }
      default: {
        const p = this.pick(have)
        const q = this.pick(names)
        if (this.m.paths.has(q)) return await this.one()
        const b = await this.at(q)
        await fs.link((await fs.resolve('/' + p)).ino, b.dir, b.name)
        this.m.paths.set(q, this.m.paths.get(p) as number)
        return `link ${p} ${q}`
      }
    }
  }
}

t.test('changes made while a fold builds read right, stay out of its version, and reach the next', async t => {
  const s = await openCoreFs(t, 'reef-fold-snap-')
  const f = await s.fs.create(ROOT_INO, enc('f'), 0o644, cred)
  const first = crypto.randomBytes(3 * 65536 + 1000)
  await s.fs.write(f.ino, 0, first)
  const g = await s.fs.create(ROOT_INO, enc('g'), 0o644, cred)
  await s.fs.write(g.ino, 0, enc('gone soon'))
  const during = crypto.randomBytes(5000)
  s.fs.foldHooks = {
    afterSnapshot: async () => {
      // Into a frozen page, across a page boundary, past the frozen end, and a cut.
      await s.fs.write(f.ino, 65536 - 100, during)
      t.same(Buffer.from(await s.fs.read(f, 0, first.length)).subarray(0, 65536 - 100), first.subarray(0, 65536 - 100), 'a read during the fold: frozen bytes below the write')
      await s.fs.truncate(f.ino, 100_000)
      await s.fs.write(f.ino, 250_000, enc('tail'))
      await s.fs.unlink(ROOT_INO, enc('g'))
      await s.fs.mkdir(ROOT_INO, enc('new'), 0o755, cred)
      await s.fs.rename(ROOT_INO, enc('f'), (await s.fs.resolve('/new')).ino, enc('f'))
    }
  }
  const v1 = await s.fs.fold('one')
  s.fs.foldHooks = undefined
  t.ok(v1, 'the fold made a version')
  const old = await s.node.openVersion(v1!)
  t.same(Buffer.from(await old.read(await old.resolve('/f'), 0, first.length + 10)), first, 'the version holds the content of the snapshot')
  t.equal(Buffer.from(await old.read(await old.resolve('/g'), 0, 100)).toString(), 'gone soon', 'and the file unlinked after it')
  const expect = Buffer.alloc(250_004)
  first.copy(expect, 0, 0, 100_000)
  during.copy(expect, 65536 - 100)
  expect.write('tail', 250_000)
  const live = await s.fs.resolve('/new/f')
  t.same(Buffer.from(await s.fs.read(live, 0, 300_000)), expect, 'the live file: the snapshot with every later change')
  t.ok(s.fs.dirty, 'the changes made during the fold are pending')
  t.same([s.fs.root.attr().nlink, s.fs.root.size], [3, 1], 'the root counts the directory made during the fold, not the snapshot\'s entries')
  s.fs.sync()
  const r = await s.reopen()
  t.same(Buffer.from(await r.read(await r.resolve('/new/f'), 0, 300_000)), expect, 'a crash replays them over the version')
  const v2 = await r.fold('two')
  const back = await s.node.openVersion(v2!)
  t.same(Buffer.from(await back.read(await back.resolve('/new/f'), 0, 300_000)), expect, 'and the next fold stores them')
  t.equal(await back.resolve('/g').then(() => 'found', () => 'ENOENT'), 'ENOENT', 'g is gone in it')
})

t.test('a fold that fails after its snapshot gives everything back: nothing is lost, the next fold stores it', async t => {
  const s = await openCoreFs(t, 'reef-fold-snap-')
  const f = await s.fs.create(ROOT_INO, enc('f'), 0o644, cred)
  const base = crypto.randomBytes(200_000)
  await s.fs.write(f.ino, 0, base)
  const v0 = await s.fs.fold('base')
  await s.fs.write(f.ino, 70_000, enc('first change'))
  await s.fs.fallocate(f.ino, PUNCH, 150_000, 10_000)
  const store = (s.fs as unknown as { store: { putMany: (b: unknown[]) => Promise<void> } }).store
  const putMany = store.putMany.bind(store)
  let fail = true
  store.putMany = async (bs) => {
    if (fail) throw new Error('REEF_TEST: the store refused')
    await putMany(bs)
  }
  s.fs.foldHooks = {
    afterSnapshot: async () => {
      await s.fs.write(f.ino, 70_005, enc('SECOND'))
      await s.fs.truncate(f.ino, 180_000)
      await s.fs.fallocate(f.ino, PUNCH, 10, 20)
    }
  }
  await t.rejects(s.fs.fold('fails'), /the store refused/, 'the fold fails')
  s.fs.foldHooks = undefined
  fail = false
  const expect = Buffer.from(base.subarray(0, 180_000))
  expect.write('first change', 70_000)
  expect.write('SECOND', 70_005)
  expect.fill(0, 150_000, 160_000)
  expect.fill(0, 10, 30)
  t.same(Buffer.from(await s.fs.read(f, 0, 300_000)), expect, 'the file reads as every change made it')
  t.equal(s.fs.version?.vguid.toString(), v0?.vguid.toString(), 'the head did not move')
  const v = await s.fs.fold('again')
  const back = await s.node.openVersion(v!)
  t.same(Buffer.from(await back.read(await back.resolve('/f'), 0, 300_000)), expect, 'the next fold stores all of it')
  const r = await s.reopen()
  t.same(Buffer.from(await r.read(await r.resolve('/f'), 0, 300_000)), expect, 'and a reopen reads the same')
})

t.test('a small write into a stored file reads nothing from the store (a partial page), reads right, and survives a failed fold with partial pages above and below', async t => {
  const s = await openCoreFs(t, 'reef-fold-snap-')
  const f0 = await s.fs.create(ROOT_INO, enc('f'), 0o644, cred)
  const base = crypto.randomBytes(300_000)
  await s.fs.write(f0.ino, 0, base)
  await s.fs.fold('base')
  const rfs = await s.reopen()
  const f = await rfs.resolve('/f')
  const store = (rfs as unknown as { store: { get: (c: unknown) => Promise<Uint8Array>, putMany: (b: unknown[]) => Promise<void> } }).store
  const get = store.get.bind(store)
  let gets = 0
  store.get = async (c) => { gets++; return await get(c) }
  const expect = Buffer.from(base)
  const poke = async (off: number, text: string): Promise<void> => {
    await rfs.write(f.ino, off, enc(text))
    expect.write(text, off)
  }
  await poke(10_000, 'first')
  await poke(70_000, 'second')
  await poke(70_003, 'overlapping')
  t.equal(gets, 0, 'three small writes into stored pages read no block')
  t.same(Buffer.from(await rfs.read(f, 0, 400_000)), expect, 'the file reads as base and writes')
  t.same(Buffer.from(await rfs.read(f, 69_990, 30)), expect.subarray(69_990, 70_020), 'a read inside a partial page')
  // Whole-page coverage by small writes makes the page whole again.
  for (let off = 131_072; off < 196_608; off += 8192) await poke(off, 'x'.repeat(8192))
  t.same(Buffer.from(await rfs.read(f, 131_000, 70_000)), expect.subarray(131_000, 201_000), 'a page written whole in pieces')
  const putMany = store.putMany.bind(store)
  let fail = true
  store.putMany = async (bs) => {
    if (fail) throw new Error('REEF_TEST: the store refused')
    await putMany(bs)
  }
  rfs.foldHooks = {
    afterSnapshot: async () => {
      // Over F's partial page 0 and F's partial page 1, and a page F lacks.
      await poke(10_002, 'THIRD')
      await poke(70_010, 'FOURTH')
      await poke(250_000, 'FIFTH')
      t.same(Buffer.from(await rfs.read(f, 0, 400_000)), expect, 'during the fold the file reads through both layers')
    }
  }
  await t.rejects(rfs.fold('fails'), /the store refused/, 'the fold fails')
  rfs.foldHooks = undefined
  fail = false
  t.same(Buffer.from(await rfs.read(f, 0, 400_000)), expect, 'after the failed fold the file reads as every write made it')
  await rfs.truncate(f.ino, 70_012)
  expect.fill(0, 70_012)
  await rfs.truncate(f.ino, 300_000)
  t.same(Buffer.from(await rfs.read(f, 0, 400_000)), expect, 'a truncate through a partial page cuts it')
  const v = await rfs.fold('again')
  const back = await s.node.openVersion(v!)
  t.same(Buffer.from(await back.read(await back.resolve('/f'), 0, 400_000)), expect, 'the next fold stores all of it')
})

t.test('a write whose bytes are handed over keeps its whole pages as they are; one that is not, copies them', async t => {
  const s = await openCoreFs(t, 'reef-fold-snap-')
  const f = await s.fs.create(ROOT_INO, enc('f'), 0o644, cred)
  const given = crypto.randomBytes(200_000)
  const expect = Buffer.alloc(262_144 + 131_072)
  given.copy(expect)
  await s.fs.writeAt(f.ino, 0, given, { give: true })
  const pages = s.fs.node(f.ino).pages
  t.equal(pages?.get(1)?.buffer, given.buffer, 'a whole page of the given write is that write\'s memory')
  t.not(pages?.get(3)?.buffer, given.buffer, 'the last, partly written page is a page of its own')
  await s.fs.write(f.ino, 70_000, enc('over an adopted page'))
  expect.write('over an adopted page', 70_000)
  const kept = crypto.randomBytes(131_072)
  await s.fs.write(f.ino, 262_144, kept)
  expect.set(kept, 262_144)
  kept.fill(7)
  t.same(Buffer.from(await s.fs.read(f, 0, 500_000)), expect, 'reads right; a write not handed over was copied (its caller may reuse the buffer)')
  const v = await s.fs.fold('adopted')
  const back = await s.node.openVersion(v!)
  t.same(Buffer.from(await back.read(await back.resolve('/f'), 0, 500_000)), expect, 'and the fold stores it')
})

const SEEDS = Number(process.env.REEF_TEST_FOLD_SEEDS ?? 12)
t.test(`random changes during random folds (${SEEDS} seeds): every version is its snapshot, the live tree is the model`, async t => {
  for (let seed = 1; seed <= SEEDS; seed++) {
    const s = await openCoreFs(t, 'reef-fold-snap-')
    await s.fs.mkdir(ROOT_INO, enc('d'), 0o755, cred)
    const r = prng(seed * 7919)
    const ops = new Ops({ paths: new Map(), content: new Map() }, r, () => s.fs)
    const done: string[] = []
    let bad = 0
    for (let round = 0; round < 8 && bad === 0; round++) {
      for (let i = Math.floor(r() * 6); i > 0; i--) done.push(await ops.one())
      let atSnapshot: Model | undefined
      const failing = r() < 0.2
      s.fs.foldHooks = {
        afterSnapshot: async () => {
          atSnapshot = clone(ops.m)
          done.push('-- fold')
          for (let i = Math.floor(r() * 6); i > 0; i--) done.push(await ops.one())
          if (failing) throw new Error('REEF_TEST: fold fails')
        }
      }
      const v = await s.fs.fold(`round ${round}`, true).catch(err => { if (!failing) throw err; return undefined })
      s.fs.foldHooks = undefined
      if (!failing) {
        const got = await sortedTree(await s.node.openVersion(v!))
        if (JSON.stringify(got) !== JSON.stringify(modelTree(atSnapshot!))) {
          bad++
          t.same(got, modelTree(atSnapshot!), `seed ${seed} round ${round}: the version is the snapshot\n${done.join('\n')}`)
        }
      }
      const live = await sortedTree(s.fs)
      if (JSON.stringify(live) !== JSON.stringify(modelTree(ops.m))) {
        bad++
        t.same(live, modelTree(ops.m), `seed ${seed} round ${round}: the live tree is the model\n${done.join('\n')}`)
      }
    }
    s.fs.sync()
    const re = await s.reopen()
    t.same(await sortedTree(re), modelTree(ops.m), `seed ${seed}: after a crash, the replayed tree is the model`)
    const v = await re.fold('last', true)
    t.same(await sortedTree(await s.node.openVersion(v!)), modelTree(ops.m), `seed ${seed}: and its fold stores it`)
  }
})

t.test('a crash after a fold committed, with the log segment before its cut cut short: the version stands, nothing replays over it, numbering goes on after it', async t => {
  const s = await openCoreFs(t, 'reef-fold-snap-')
  const logDir = path.join(s.dir, 'log')
  const f = await s.fs.create(ROOT_INO, enc('f'), 0o644, cred)
  await s.fs.write(f.ino, 0, enc('old!'))
  await s.fs.write(f.ino, 0, enc('new!'))
  let saved: Array<[string, Buffer]> = []
  s.fs.foldHooks = {
    // The segments before the cut, as the fold left them (unsynced; dropped once it commits).
    afterSnapshot: async () => {
      const segs = fs.readdirSync(logDir).filter(n => n.endsWith('.log')).sort()
      saved = segs.slice(0, -1).map(n => [n, fs.readFileSync(path.join(logDir, n))])
    }
  }
  const v = await s.fs.fold('v')
  s.fs.foldHooks = undefined
  t.equal(saved.length, 1, 'one segment before the cut')
  // The crash came after the head moved, before the old segment was dropped, and the old
  // segment lost its last bytes (the record writing 'new!' is torn).
  const [name, bytes] = saved[0]
  fs.writeFileSync(path.join(logDir, name), bytes.subarray(0, bytes.length - 3))
  const r = await s.reopen()
  t.equal(Buffer.from(await r.read(await r.resolve('/f'), 0, 100)).toString(), 'new!', 'the version, with no older record replayed over it')
  t.notOk(r.dirty, 'nothing is pending')
  const self = Buffer.from(r.log!.writer).toString('hex')
  await r.write((await r.resolve('/f')).ino, 0, enc('NEW'))
  r.sync()
  const r2 = await s.reopen()
  t.equal(Buffer.from(await r2.read(await r2.resolve('/f'), 0, 100)).toString(), 'NEW!', 'a later write replays after a second crash')
  const v2 = await r2.fold('v2')
  t.equal(v2?.root.vv?.[self], (v?.root.vv?.[self] ?? 0) + 1, 'the writer\'s numbering went on after the version\'s')
})
