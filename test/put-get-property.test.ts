// Property: for random trees, `reef get (reef put T)` restores T exactly (names as bytes, kinds,
// contents, modes, mtimes to the µs, symlink targets, FIFOs, sockets and, as root, character and
// block devices with their rdev), `reef put` is deterministic, one changed
// byte changes the GUID, and for trees whose times are whole microseconds the restored copy puts
// to the very same GUID. Trees come from a seeded PRNG: the seed is printed; rerun one with
// REEF_SEED=<seed>.
import tap from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import {
  compareTrees, countTree, EXACT_US_LIMIT_NS, lastWord, makeNodes, reef, show, type SpecialKind, storeSnapshot, tempDir, utimeArg
} from './helpers/cli.js'
import { prng } from './helpers/views.js'

const t = tap
const SEED = process.env.REEF_SEED !== undefined && process.env.REEF_SEED !== ''
  ? Number(process.env.REEF_SEED) >>> 0
  : (Math.random() * 2 ** 32) >>> 0
t.comment(`seed ${SEED} (rerun with REEF_SEED=${SEED})`)
const TREES = 20
// Device nodes can only be made (and restored) by root.
const SPECIAL_KINDS: SpecialKind[] = process.getuid?.() === 0 ? ['fifo', 'socket', 'chr', 'blk'] : ['fifo', 'socket']


class Gen {
  constructor (readonly r: () => number) {}
  int (lo: number, hi: number): number { return lo + Math.floor(this.r() * (hi - lo + 1)) }
  pick<T> (xs: readonly T[]): T { return xs[Math.floor(this.r() * xs.length)] }
  chance (p: number): boolean { return this.r() < p }
  bytes (n: number): Buffer {
    const b = Buffer.allocUnsafe(n)
    let i = 0
    for (; i + 4 <= n; i += 4) b.writeUInt32LE((this.r() * 2 ** 32) >>> 0, i)
    for (; i < n; i++) b[i] = this.int(0, 255)
    return b
  }

  /** A file of `size` bytes built from a few random segments, some repeated (dedup, chunking). */
  largeContent (size: number): Buffer {
    const pool = Array.from({ length: 4 }, () => this.bytes(this.int(64, 512) * 1024))
    const parts: Buffer[] = []
    let n = 0
    while (n < size) {
      const p = this.chance(0.6) ? this.pick(pool) : this.bytes(this.int(1, 300) * 1024)
      parts.push(p)
      n += p.length
    }
    return Buffer.concat(parts).subarray(0, size)
  }
}

// Names: bytes, anything legal. Categories a tree can be forced to include.
const NAME_KINDS = ['plain', 'space', 'newline', 'unicode', 'nonutf8', 'long255', 'long255utf8', 'dash', 'dots', 'control'] as const
type NameKind = typeof NAME_KINDS[number]

function makeName (g: Gen, kind: NameKind): Buffer {
  switch (kind) {
    case 'plain': return Buffer.from(`f${g.int(0, 99999)}`)
    case 'space': return Buffer.from(g.pick([' lead', 'trail ', 'in the middle', ' ']) + g.int(0, 999))
    case 'newline': return Buffer.from(`new\nline${g.int(0, 999)}\n`)
    case 'unicode': return Buffer.from(g.pick(['ünïcødé', '日本語', '🐟🌊', 'Ωμέγα', 'e\u0301']) + g.int(0, 999))
    case 'nonutf8': return Buffer.concat([Buffer.from('raw-'), Buffer.from([0xff, 0xfe, g.int(0x80, 0xbf), 0xc0]), Buffer.from(String(g.int(0, 999)))])
    case 'long255': {
      // 255 random bytes, none NUL or '/'.
      const b = g.bytes(255)
      for (let i = 0; i < b.length; i++) if (b[i] === 0 || b[i] === 0x2f) b[i] = 0x41 + (i % 26)
      if (b.length <= 2 && b.every(c => c === 0x2e)) b[0] = 0x41
      return b
    }
    case 'long255utf8': return Buffer.concat([Buffer.from('é'.repeat(126)), Buffer.from(String(g.int(100, 999)))]) // 252 + 3 bytes
    case 'dash': return Buffer.from(g.pick(['-rf', '--help', '-', '-o', '--']) + g.int(0, 999))
    case 'dots': return Buffer.from(g.pick(['.hidden', '...', '..x', '.']) + g.int(0, 999))
    case 'control': return Buffer.from(`tab\there\x01\x7f${g.int(0, 999)}`)
  }
}

const FILE_MODES = [0o600, 0o755, 0o700, 0o444, 0o644, 0o640, 0o400]
const DIR_MODES = [0o755, 0o700, 0o555, 0o750, 0o500]
const S = 1_000_000_000n

interface Caps { pre1970: boolean, farFuture: boolean, beyond2e33: boolean }

/** Can this file system hold such times? (Probed, so the test asserts what the disk keeps.) */
function probeTimes (dir: string): Caps {
  const p = path.join(dir, 'probe')
  fs.writeFileSync(p, '')
  const ok = (ns: bigint): boolean => {
    try {
      fs.utimesSync(p, utimeArg(ns), utimeArg(ns))
      return fs.statSync(p, { bigint: true }).mtimeNs === ns
    } catch { return false }
  }
  const caps = { pre1970: ok(-2_000_000_000n * S + 123_456_000n), farFuture: ok(7_000_000_000n * S + 1000n), beyond2e33: ok(10_000_000_000n * S) }
  fs.rmSync(p)
  return caps
}

/** A random mtime, or undefined to keep the natural (ns-precise) creation time. */
function pickTime (g: Gen, caps: Caps, exact: boolean): bigint | undefined {
  const us = (lo: bigint, hi: bigint): bigint => lo + BigInt(Math.floor(g.r() * Number(hi - lo) / 1000)) * 1000n
  const k = g.int(0, exact ? 5 : 7)
  switch (k) {
    case 0: return us(0n, 2_000_000_000n * S) // 1970..2033
    case 1: return caps.pre1970 ? -us(1000n, 2_100_000_000n * S) : us(0n, S) // 1903..1970
    case 2: return caps.farFuture ? us(4_000_000_000n * S, EXACT_US_LIMIT_NS - S) : us(0n, S) // 2096..2242
    case 3: return g.pick([0n, -1000n, 1000n, 1_700_000_000n * S])
    case 4: case 5: return us(1_600_000_000n * S, 1_800_000_000n * S)
    case 6: return undefined // natural: nanosecond digits the restore truncates
    default: return caps.beyond2e33 ? us(EXACT_US_LIMIT_NS + S, 15_000_000_000n * S) : undefined // year 2242+: ±2 µs
  }
}

interface Built { large: Buffer[], largeMtime?: bigint, entries: number, specials: SpecialKind[] }

/** Builds tree number `i` at `root` (a string path whose basename names it). */
function buildTree (g: Gen, root: string, i: number, caps: Caps): Built {
  const exact = i % 2 === 1
  const built: Built = { large: [], entries: 0, specials: [] }
  const setTime = (p: Buffer, link: boolean): void => {
    const ns = pickTime(g, caps, exact)
    if (ns === undefined) return
    if (link) fs.lutimesSync(p, utimeArg(ns), utimeArg(ns))
    else fs.utimesSync(p, utimeArg(ns), utimeArg(ns))
  }
  const join = (d: Buffer, n: Buffer): Buffer => Buffer.concat([d, Buffer.from('/'), n])
  const forced = NAME_KINDS[i % NAME_KINDS.length]

  const fill = (dir: Buffer, depth: number, top: boolean): void => {
    const used = new Set<string>()
    const names: Buffer[] = []
    const fresh = (kind: NameKind): Buffer => {
      for (;;) {
        const n = makeName(g, kind)
        if (!used.has(n.toString('hex'))) { used.add(n.toString('hex')); names.push(n); return n }
      }
    }
    const count = top ? g.int(3, 7) : g.int(0, 5)
    for (let k = 0; k < count; k++) {
      const name = fresh(top && k === 0 ? forced : g.chance(0.5) ? 'plain' : g.pick(NAME_KINDS))
      const p = join(dir, name)
      built.entries++
      const what = top && k === 1 ? 'symlink' : top && k === 2 ? 'special' : g.pick(['small', 'small', 'small', 'empty', 'dir', 'dir', 'symlink', 'symlink', 'special'])
      if (what === 'special') {
        // Every tree has one at its top, each kind in turn; the rest at random.
        const kind = top && k === 2 ? SPECIAL_KINDS[i % SPECIAL_KINDS.length] : g.pick(SPECIAL_KINDS)
        const [major, minor] = g.pick([[1, 3], [7, 0], [g.int(0, 4095), g.int(0, 2 ** 20 - 1)]])
        makeNodes([{ path: p, kind, mode: g.pick(FILE_MODES), major, minor }])
        built.specials.push(kind)
        setTime(p, false)
      } else if (what === 'dir' && depth < 4) {
        fs.mkdirSync(p, { mode: 0o700 })
        fill(p, depth + 1, false)
        fs.chmodSync(p, g.pick(DIR_MODES)) // restrictive modes last, once filled
        setTime(p, false)
      } else if (what === 'symlink') {
        const target = g.pick([
          () => names.length > 1 ? names[g.int(0, names.length - 2)] : Buffer.from('self-less'), // sibling
          () => Buffer.from('../' + (g.chance(0.5) ? 'up' : '')), // relative, up
          () => Buffer.from('/nonexistent/reef/' + g.int(0, 9999)), // absolute, dangling
          () => Buffer.from('/tmp'), // absolute, existing
          () => Buffer.from('dangling-' + g.int(0, 9999)),
          () => Buffer.concat([Buffer.from('bytes-'), Buffer.from([0xff, 0x80, 0x0a, 0x20])]), // non-UTF-8 target
          () => Buffer.from('x/'.repeat(g.int(50, 500))) // long target
        ])()
        fs.symlinkSync(target, p)
        setTime(p, true)
      } else {
        const data = what === 'empty' ? Buffer.alloc(0) : g.bytes(g.pick([1, g.int(0, 100), g.int(100, 20_000), g.int(20_000, 200_000)]))
        fs.writeFileSync(p, data, { mode: 0o600 })
        fs.chmodSync(p, g.pick(FILE_MODES))
        setTime(p, false)
      }
    }
  }

  const rootBuf = Buffer.from(root)
  fs.mkdirSync(rootBuf, { mode: 0o700 })
  fill(rootBuf, 0, true)
  // Some trees carry a large file; tree 0 always has one > 1 MiB with repeated regions.
  if (i % 7 === 0) {
    const size = i === 0 ? g.int(1536, 3072) * 1024 : g.int(1024, 8192) * 1024
    const content = g.largeContent(size)
    const p = join(rootBuf, Buffer.from('large.bin'))
    fs.writeFileSync(p, content, { mode: g.pick([0o644, 0o444, 0o600]) })
    built.large.push(content)
    built.entries++
    if (i === 0) {
      built.largeMtime = 1_650_000_000n * S + BigInt(g.int(0, 999_999)) * 1000n
      fs.utimesSync(p, utimeArg(built.largeMtime), utimeArg(built.largeMtime))
    } else {
      setTime(p, false)
    }
  }
  fs.chmodSync(rootBuf, g.pick([0o755, 0o700, 0o555]))
  if (exact || g.chance(0.5)) {
    const ns = pickTime(g, caps, true) ?? 1_234_567_890_000_000n
    fs.utimesSync(rootBuf, utimeArg(ns), utimeArg(ns))
  }
  return built
}

/** Runs `fn` over items with at most `n` at a time. */
async function pool<T> (items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) await fn(items[next++])
  }))
}

const base = tempDir(t, 'reef-prop-')
const data = path.join(base, 'data')
const caps = probeTimes(base)
t.comment(`file system times: ${JSON.stringify(caps)}`)

t.before(async () => {
  const r = await reef(data, ['init'])
  if (r.code !== 0) throw new Error(show(r))
})

interface Done { i: number, src: string, guid: string, built: Built }
const done: Done[] = []

t.test(`${TREES} random trees survive put -> get`, async t => {
  const g = new Gen(prng(SEED))
  const trees = Array.from({ length: TREES }, (_, i) => {
    const src = path.join(base, `src-${i}`, `tree-${i}`)
    fs.mkdirSync(path.dirname(src))
    return { i, src, built: buildTree(g, src, i, caps) }
  })
  const total = { files: 0, dirs: 0, symlinks: 0, specials: 0 }
  await pool(trees, 2, async ({ i, src, built }) => {
    const p = await reef(data, ['put', src])
    t.equal(p.code, 0, `tree ${i}: put: ${show(p)}`)
    const guid = lastWord(p)
    const outDir = path.join(base, `out-${i}`)
    fs.mkdirSync(outDir)
    const out = path.join(outDir, `tree-${i}`) // same name: the restored copy can put to the same GUID
    const r = await reef(data, ['get', guid, '-o', out])
    t.equal(r.code, 0, `tree ${i}: get: ${show(r)}`)
    t.same(compareTrees(src, out), [], `tree ${i}: restored tree equals the original`)
    const c = countTree(out)
    t.equal(c.files + c.dirs + c.symlinks + c.specials - 1, built.entries, `tree ${i}: every entry restored`)
    t.equal(c.specials, built.specials.length, `tree ${i}: every special file restored`)
    total.files += c.files
    total.dirs += c.dirs
    total.symlinks += c.symlinks
    total.specials += c.specials

    const again = await reef(data, ['put', src])
    t.equal(lastWord(again), guid, `tree ${i}: put twice, same GUID`)
    if (i % 2 === 1) {
      // Every time in this tree is whole µs within 2^33 s, so the restored copy is the same tree.
      const rp = await reef(data, ['put', out])
      t.equal(lastWord(rp), guid, `tree ${i}: put(get(T)) == put(T)`)
    }
    done.push({ i, src, guid, built })
  })
  t.comment(`checked ${total.files} files, ${total.dirs} dirs, ${total.symlinks} symlinks, ${total.specials} special files`)
  t.ok(total.symlinks >= TREES, 'every tree has symlinks')
  t.ok(total.specials >= TREES, 'every tree has special files')
  t.same([...new Set(trees.flatMap(x => x.built.specials))].sort(), [...SPECIAL_KINDS].sort(), 'every special kind was made')
  t.ok(total.dirs > TREES, 'trees have subdirectories')
})

t.test('one changed byte in a large file changes the GUID, and only that file\'s tree', async t => {
  const d = done.find(x => x.i === 0)
  if (d === undefined) return t.fail('tree 0 missing')
  const content = d.built.large[0]
  t.ok(content.length > 1024 * 1024, `large file of ${content.length} bytes`)
  const file = path.join(d.src, 'large.bin')
  const mtime = d.built.largeMtime as bigint
  const at = Math.floor(content.length * 0.6)
  const flip = (): void => {
    const mode = fs.statSync(file).mode & 0o7777
    fs.chmodSync(file, 0o600)
    const fd = fs.openSync(file, 'r+')
    const b = Buffer.alloc(1)
    fs.readSync(fd, b, 0, 1, at)
    b[0] ^= 0x20
    fs.writeSync(fd, b, 0, 1, at)
    fs.closeSync(fd)
    fs.chmodSync(file, mode)
    fs.utimesSync(file, utimeArg(mtime), utimeArg(mtime)) // same metadata: only the byte differs
  }
  const before = await storeSnapshot(data)
  const rows = async (guid: string): Promise<Map<string, unknown>> => {
    const r = await reef(data, ['show', guid, '--json'])
    t.equal(r.code, 0, show(r))
    return new Map((JSON.parse(r.out).entries as Array<{ path: string }>).map(e => [e.path, e]))
  }
  flip()
  const p = await reef(data, ['put', d.src])
  t.equal(p.code, 0, show(p))
  const changed = lastWord(p)
  t.not(changed, d.guid, 'one byte changes the GUID')
  const a = await rows(d.guid)
  const b = await rows(changed)
  t.same([...b.keys()].sort(), [...a.keys()].sort(), 'same paths')
  for (const [k, v] of a) {
    if (k === '/large.bin') t.not((b.get(k) as { guid: string }).guid, (v as { guid: string }).guid, 'the file\'s tree differs')
    else t.same(b.get(k), v, `${k} unchanged`)
  }
  const after = await storeSnapshot(data)
  const added = after.blocks.filter(k => !before.blocks.includes(k)).length
  t.ok(added > 0 && added <= 16, `copy-on-write: ${added} new blocks for one changed byte`)
  t.same(after.heads, before.heads, 'put does not move the head')
  flip()
  t.equal(lastWord(await reef(data, ['put', d.src])), d.guid, 'flipping the byte back gives the original GUID')
})
