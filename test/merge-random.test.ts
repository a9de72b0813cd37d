// Seeded random concurrent operations by three writers, merged (issue 12): every arrival order
// gives one root hash, the merged tree reads back with no loop, and every file a writer changed
// and kept is in the merged tree, at its name or as a conflict copy. A fixed set of seeds runs by
// default; REEF_TEST_SEED=<n> runs that seed (REEF_TEST_SEEDS=<count> runs that many from it).
import t from 'tap'
import { ROOT_INO } from '../src/fs/inode.js'
import { RENAME_EXCHANGE, type ReefFS } from '../src/fs/fs.js'
import type { Inode } from '../src/fs/inode.js'
import { isReefError } from '../src/errors.js'
import type { CID } from 'multiformats/cid'
import type { VersionInfo } from '../src/fs/fs.js'
import { extendsBase, merge, recordsSince } from '../src/merge/index.js'
import { decodeVersion } from '../src/object/version.js'
import { cred, enc, keyOf, openVersion, permutations, type Writer, writers } from './helpers/writers.js'

function rng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const NAMES = ['a', 'b', 'c', 'notes.txt', 'x.log']
const DIRS = ['d0', 'd1', 'd2']

/** Directories of a writer's tree (inode numbers), root first. */
async function dirsOf (w: Writer): Promise<number[]> {
  const out = [ROOT_INO]
  for (let i = 0; i < out.length; i++) {
    for (const e of await w.fs.readdir(w.fs.node(out[i]))) if (w.fs.node(e.ino).kind === 'dir') out.push(e.ino)
  }
  return out
}

/** Every inode of a tree by number: its attributes, content or entries, as text. */
async function byIno (rfs: ReefFS): Promise<Map<number, string>> {
  const out = new Map<number, string>()
  const walk = async (n: Inode): Promise<void> => {
    const a = n.attr()
    let body = ''
    if (n.kind === 'file') body = Buffer.from(await rfs.read(n, 0, n.size)).toString()
    if (n.kind === 'dir') {
      const kids = await rfs.readdir(n)
      body = kids.map(e => `${Buffer.from(e.name).toString()}=${e.ino}`).sort().join(',')
      for (const e of kids) if (!out.has(e.ino)) await walk(rfs.node(e.ino))
    }
    out.set(n.ino, `${a.mode} ${a.uid} ${a.gid} ${a.size} ${a.nlink} ${a.mtime} ${[...n.xattrs.keys()].join()} ${body}`)
  }
  await walk(rfs.root)
  return out
}

async function entriesOf (w: Writer): Promise<Array<{ dir: number, name: Uint8Array, ino: number }>> {
  const out: Array<{ dir: number, name: Uint8Array, ino: number }> = []
  for (const d of await dirsOf(w)) for (const e of await w.fs.readdir(w.fs.node(d))) out.push({ dir: d, name: e.name, ino: e.ino })
  return out
}

/** One random operation; POSIX refusals (EEXIST, ENOTEMPTY, ...) are part of the game. */
async function step (w: Writer, r: () => number, changed: Set<number>): Promise<void> {
  const pick = <T>(a: T[]): T => a[Math.floor(r() * a.length)]
  const dirs = await dirsOf(w)
  const entries = await entriesOf(w)
  const files = entries.filter(e => w.fs.node(e.ino).kind === 'file')
  const word = `${w.label}${Math.floor(r() * 1000)};`
  try {
    switch (Math.floor(r() * 13)) {
      case 0: {
        const f = await w.fs.create(pick(dirs), enc(pick(NAMES)), 0o644, cred)
        await w.fs.write(f.ino, 0, enc(word))
        changed.add(f.ino)
        break
      }
      case 1: case 2: {
        if (files.length === 0) break
        const f = pick(files)
        const n = w.fs.node(f.ino)
        await w.fs.write(f.ino, Math.floor(r() * (n.size + 1)), enc(word))
        changed.add(f.ino)
        break
      }
      case 3: {
        if (files.length === 0) break
        const f = pick(files)
        await w.fs.write(f.ino, w.fs.node(f.ino).size, enc(word))
        changed.add(f.ino)
        break
      }
      case 4: {
        if (files.length === 0) break
        const f = pick(files)
        await w.fs.truncate(f.ino, Math.floor(r() * (w.fs.node(f.ino).size + 1)))
        changed.add(f.ino)
        break
      }
      case 5: {
        if (entries.length === 0) break
        const e = pick(entries)
        await w.fs.rename(e.dir, e.name, pick(dirs), enc(r() < 0.5 ? pick(NAMES) : pick(DIRS)))
        break
      }
      case 6: {
        if (files.length === 0) break
        const f = pick(files)
        await w.fs.unlink(f.dir, f.name)
        changed.delete(f.ino)
        break
      }
      case 7: await w.fs.mkdir(pick(dirs), enc(pick(DIRS)), 0o755, cred); break
      case 8: {
        const ds = entries.filter(e => w.fs.node(e.ino).kind === 'dir')
        if (ds.length === 0) break
        const d = pick(ds)
        await w.fs.rmdir(d.dir, d.name)
        break
      }
      case 9: {
        if (entries.length === 0) break
        const e = pick(entries)
        await w.fs.setattr(e.ino, r() < 0.5 ? { mode: r() < 0.5 ? 0o600 : 0o755 } : { mtime: BigInt(Math.floor(r() * 1e12)) })
        break
      }
      case 10: {
        // renameat2(RENAME_EXCHANGE)
        if (entries.length < 2) break
        const [x, y] = [pick(entries), pick(entries)]
        await w.fs.rename(x.dir, x.name, y.dir, y.name, RENAME_EXCHANGE)
        break
      }
      case 11: {
        if (files.length === 0) break
        const f = pick(files)
        await w.fs.link(f.ino, pick(dirs), enc(pick(NAMES)))
        break
      }
      case 12: await w.fs.symlink(pick(dirs), enc(pick(NAMES)), enc(word), cred); break
    }
  } catch (err) {
    if (!isReefError(err)) throw err
  }
}

const start = Number(process.env.REEF_TEST_SEED ?? 1)
const count = Number(process.env.REEF_TEST_SEEDS ?? (process.env.REEF_TEST_SEED !== undefined ? 1 : 8))

for (let seed = start; seed < start + count; seed++) {
  t.test(`seed ${seed}: three writers, concurrent random operations, one merged tree`, async t => {
    const r = rng(seed)
    const ws = await writers(t, async s => {
      for (const d of DIRS.slice(0, 2)) {
        const dir = await s.fs.mkdir(ROOT_INO, enc(d), 0o755, cred)
        for (const n of NAMES.slice(0, 3)) {
          const f = await s.fs.create(dir.ino, enc(n), 0o644, cred)
          await s.fs.write(f.ino, 0, enc(`base ${d}/${n};`))
        }
      }
    })
    let ws3 = [await ws.writer('p'), await ws.writer('q'), await ws.writer('r')]
    let base = ws.base
    // Whether the base (the last round's merge) may be extended (MergeResult.extendable).
    let baseExtendable = false
    let extendable = false
    // Two rounds: concurrent operations, a merge; every writer adopts it; again, from that base.
    for (const round of [1, 2]) {
      const changed = new Map<Writer, Set<number>>(ws3.map(w => [w, new Set()]))
      for (let i = 0; i < 40; i++) {
        const w = ws3[Math.floor(r() * 3)]
        await step(w, r, changed.get(w) as Set<number>)
      }
      // What each writer changed and kept: its content must be in the merged tree.
      const kept: Array<{ w: string, content: string }> = []
      for (const w of ws3) {
        for (const ino of changed.get(w) as Set<number>) {
          const n = w.fs.inodes.get(ino)
          if (n === undefined || n.nlink === 0) continue
          kept.push({ w: w.label, content: Buffer.from(await w.fs.read(n, 0, n.size)).toString() })
        }
      }
      // The setup writer made the first base: a writer of every merge here too (as every writer of
      // a view is), so that a merge from an earlier merge has the same writers as one from none.
      const first = ws.base as VersionInfo
      const setup = { key: keyOf('setup'), head: first.vguid, records: await recordsSince(ws.store, first.root.log, keyOf('setup'), 0) }
      const inputs = [await ws.input(ws3[0], base), await ws.input(ws3[1], base), await ws.input(ws3[2], base), setup]
      const roots = new Set<string>()
      let version
      let changedInos: number[] = []
      for (const p of permutations(inputs.slice(0, 3))) {
        const shuffled = p.map(i => ({ ...i, records: [...i.records].sort(() => r() - 0.5) }))
        const out = await merge({ store: ws.store, base, writers: [...shuffled, setup] })
        roots.add(out.version.vguid.toString())
        version ??= out.version
        extendable = out.extendable
        changedInos = out.changed
      }
      t.equal(roots.size, 1, `round ${round}: one root hash for every arrival order`)
      if (round === 2 && baseExtendable && extendsBase(base as VersionInfo, inputs)) {
        // From the round-1 merge as base, replaying only round 2: the very version a merge of
        // both rounds from the first base gives.
        const whole = await Promise.all(inputs.map(async i => ({ ...i, records: await recordsSince(ws.store, decodeVersion(await ws.store.get(i.head as CID)).log, i.key, first.root.vv?.[Buffer.from(i.key).toString('hex')] ?? 0) })))
        const full = await merge({ store: ws.store, base: first, writers: whole })
        const inc = await merge({ store: ws.store, base, writers: inputs, extending: true })
        t.equal(inc.version.vguid.toString(), full.version.vguid.toString(), 'round 2: the merge from the round-1 merge is the merge of both rounds from the first base')
      }
      const merged = version as NonNullable<typeof version>
      const m = await openVersion(ws.store, merged)
      // Walk the merged tree: every directory once (no loop), every file read.
      const seen = new Set<number>()
      const contents: string[] = []
      const stack = [ROOT_INO]
      let loop = false
      while (stack.length > 0) {
        const d = stack.pop() as number
        if (seen.has(d)) { loop = true; break }
        seen.add(d)
        for (const e of await m.readdir(m.node(d))) {
          const n = m.node(e.ino)
          if (n.kind === 'dir') stack.push(n.ino)
          else if (n.kind === 'file') contents.push(Buffer.from(await m.read(n, 0, n.size)).toString())
        }
      }
      t.notOk(loop, `round ${round}: no directory reached twice`)
      // What a mount would invalidate: every inode that differs between the base and the merge.
      const before = await byIno(await openVersion(ws.store, base as NonNullable<typeof base>))
      const after = await byIno(m)
      const differ = [...new Set([...before.keys(), ...after.keys()])].filter(i => before.get(i) !== after.get(i))
      t.same(differ.filter(i => !changedInos.includes(i)), [], `round ${round}: every inode that changed is in \`changed\` (${differ.length})`)
      // And for a mount that showed its writer's own tree.
      for (const w of ws3) {
        const own = await byIno(w.fs)
        const ownDiffer = [...new Set([...own.keys(), ...after.keys()])].filter(i => own.get(i) !== after.get(i))
        if (process.env.REEF_TEST_DEBUG !== undefined) {
          for (const i of ownDiffer.filter(i => !changedInos.includes(i))) console.error(i, JSON.stringify(own.get(i)), JSON.stringify(after.get(i)))
          if (ownDiffer.some(i => !changedInos.includes(i))) {
            const out = await merge({ store: ws.store, base, writers: inputs })
            console.error(JSON.stringify(out.events))
            for (const i of inputs) for (const x of i.records) { const rr = (x as { record: { n: number, op: unknown } }).record; console.error(Buffer.from(i.key).toString('hex').slice(0, 6), rr.n, JSON.stringify(rr.op, (k, v) => v instanceof Uint8Array ? Buffer.from(v).toString() : typeof v === 'bigint' ? undefined : v)) }
          }
        }
        t.same(ownDiffer.filter(i => !changedInos.includes(i)), [], `round ${round}: ${w.label}'s tree to the merge: every inode that differs is in \`changed\``)
      }
      const missing = kept.filter(k => !contents.includes(k.content))
      if (missing.length > 0 && process.env.REEF_TEST_DEBUG !== undefined) {
        const out = await merge({ store: ws.store, base, writers: inputs })
        const show = (v: unknown): unknown => JSON.parse(JSON.stringify(v, (k, x) => x instanceof Uint8Array ? Buffer.from(x).toString() : typeof x === 'bigint' ? undefined : x))
        console.error(JSON.stringify({ missing, events: out.events, conflicts: out.conflicts, records: inputs.map(i => i.records.map(x => { const rr = (x as { record: { n: number, op: unknown } }).record; return `${Buffer.from(i.key).toString('hex').slice(0, 6)} ${rr.n} ${JSON.stringify(show(rr.op))}` })) }, null, 1))
      }
      t.same(missing, [], `round ${round}: every changed file of every writer is in the merged tree (${kept.length} checked)`)
      const again = await merge({ store: ws.store, base: merged, writers: inputs })
      t.ok(again.version.root.root.equals(merged.root.root) && again.records === 0, `round ${round}: merging the same heads onto the merge changes no tree`)
      base = merged
      baseExtendable = extendable
      ws3 = await Promise.all(ws3.map(async w => await ws.adopt(w, merged)))
    }
  })
}
