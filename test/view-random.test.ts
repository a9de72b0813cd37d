// A seeded random test of shared file systems through real mounts (issue 12 item 7): three
// writers (A owns the view; B and D are added), each a `reef mount --view` process on loopback.
// In each epoch a random set of writers is cut off (REEF_TEST_VIEW_HOLD: no view rounds, as if
// partitioned) and every writer runs random operations at once:
//   - in its own directory /w<i>: create, write, append, truncate, rename, unlink, mkdir, rmdir
//     (checked against a model of that directory: nobody else touches it);
//   - on three shared files /shared/s<k>.txt: append a unique line and fsync it (acknowledged).
// Then everyone is let back in, and the epoch ends when all three mounts show one tree. Checked
// after every epoch:
//   - all writers converge to one tree (every path's kind, mode, size, content);
//   - each /w<i> is exactly writer i's model;
//   - every line acknowledged by fsync on any writer is in its shared file or in a conflict copy
//     of it (`s<k>.sync-conflict-...txt`), its bytes intact: no acknowledged write is lost.
// A fixed seed runs in CI; REEF_TEST_SEED=<n> explores another (bench/views runs many).
import tap from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { skipReason, tempDir } from './helpers/mount.js'
import { describe, reefCli, startNetMount, waitFor, type NetMount } from './helpers/cluster.js'
import { prng, statusOf, treeDigest } from './helpers/views.js'

const skip = skipReason()
const SEED = process.env.REEF_TEST_SEED !== undefined && process.env.REEF_TEST_SEED !== '' ? Number(process.env.REEF_TEST_SEED) >>> 0 : 20261207
const EPOCHS = Number(process.env.REEF_TEST_EPOCHS ?? 3)
const OPS = Number(process.env.REEF_TEST_OPS ?? 14)
const SHARED = 3



/** One writer's directory as its model: path (relative) -> content, or null for a directory. */
type Model = Map<string, string | null>

function modelOf (dir: string): Model {
  const out: Model = new Map()
  const walk = (p: string, rel: string): void => {
    for (const name of fs.readdirSync(p).sort()) {
      const q = path.join(p, name)
      const r = rel === '' ? name : `${rel}/${name}`
      if (fs.lstatSync(q).isDirectory()) {
        out.set(r, null)
        walk(q, r)
      } else {
        out.set(r, fs.readFileSync(q, 'utf8'))
      }
    }
  }
  walk(dir, '')
  return out
}

const sorted = (m: Model): Array<[string, string | null]> => [...m.entries()].sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)

class Writer {
  readonly model: Model = new Map()
  constructor (readonly label: string, readonly mount: NetMount, readonly hold: string, private readonly r: () => number) {}
  get dir (): string { return path.join(this.mount.mnt, `w${this.label}`) }

  private pick<T> (xs: T[]): T { return xs[Math.floor(this.r() * xs.length)] }
  private token (): string { return crypto.createHash('sha256').update(String(this.r())).digest('hex').slice(0, 12) }

  /** One random operation on its own directory, valid against the model; returns what it did. */
  own (): string {
    const files = [...this.model].filter(([, v]) => v !== null).map(([k]) => k)
    const dirs = ['', ...[...this.model].filter(([, v]) => v === null).map(([k]) => k)]
    const at = (p: string): string => path.join(this.dir, p)
    const join = (d: string, n: string): string => d === '' ? n : `${d}/${n}`
    const freeName = (d: string): string => {
      for (let i = 0; i < 100; i++) {
        const n = `${this.pick(['f', 'g', 'h', 'k'])}${Math.floor(this.r() * 8)}`
        if (!this.model.has(join(d, n))) return join(d, n)
      }
      return join(d, `x${this.token()}`)
    }
    const kind = this.pick(['create', 'create', 'write', 'append', 'truncate', 'rename', 'unlink', 'mkdir', 'rmdir'])
    if (kind !== 'create' && kind !== 'mkdir' && kind !== 'rmdir' && files.length === 0) return this.own()
    switch (kind) {
      case 'create': {
        const p = freeName(this.pick(dirs))
        const s = `${this.token()}\n`
        fs.writeFileSync(at(p), s)
        this.model.set(p, s)
        return `create ${p}`
      }
      case 'write': {
        const p = this.pick(files)
        const s = `${this.token()}-${this.token()}\n`
        fs.writeFileSync(at(p), s)
        this.model.set(p, s)
        return `write ${p}`
      }
      case 'append': {
        const p = this.pick(files)
        const s = `${this.token()}\n`
        fs.appendFileSync(at(p), s)
        this.model.set(p, (this.model.get(p) as string) + s)
        return `append ${p}`
      }
      case 'truncate': {
        const p = this.pick(files)
        const old = this.model.get(p) as string
        const n = Math.floor(this.r() * (old.length + 1))
        fs.truncateSync(at(p), n)
        this.model.set(p, old.slice(0, n))
        return `truncate ${p} ${n}`
      }
      case 'rename': {
        const p = this.pick(files)
        const q = freeName(this.pick(dirs))
        fs.renameSync(at(p), at(q))
        this.model.set(q, this.model.get(p) as string)
        this.model.delete(p)
        return `rename ${p} ${q}`
      }
      case 'unlink': {
        const p = this.pick(files)
        fs.unlinkSync(at(p))
        this.model.delete(p)
        return `unlink ${p}`
      }
      case 'mkdir': {
        const d = this.pick(dirs)
        if (d.split('/').length >= 3) return this.own()
        const p = freeName(d).replace(/\/?([fghk])(\d)$/, (m, a: string, b: string) => m.slice(0, m.length - 2) + `d${a}${b}`)
        if (this.model.has(p)) return this.own()
        fs.mkdirSync(at(p))
        this.model.set(p, null)
        return `mkdir ${p}`
      }
      default: {
        const empty = dirs.filter(d => d !== '' && ![...this.model.keys()].some(k => k.startsWith(d + '/')))
        if (empty.length === 0) return this.own()
        const d = this.pick(empty)
        fs.rmdirSync(at(d))
        this.model.delete(d)
        return `rmdir ${d}`
      }
    }
  }

  /** Appends a unique line to a shared file and fsyncs it: an acknowledged write. */
  shared (k: number, acked: string[]): string {
    const line = `${this.label}:${this.token()}`
    const fd = fs.openSync(path.join(this.mount.mnt, 'shared', `s${k}.txt`), 'a')
    try {
      fs.writeSync(fd, line + '\n')
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
    acked.push(`${k} ${line}`)
    return `shared s${k} ${line}`
  }
}

tap.test(`three writers, random operations and partitions (seed ${SEED}, rerun with REEF_TEST_SEED=${SEED})`, { skip }, async t => {
  const r = prng(SEED)
  const base = tempDir(t, 'reef-view-random-')
  const labels = ['a', 'b', 'd']
  const dirs = labels.map(l => path.join(base, l))
  for (const d of dirs) t.equal((await reefCli(d, ['init'])).code, 0)
  const created = await reefCli(dirs[0], ['view', 'create', 'random'])
  t.equal(created.code, 0, describe(created))
  const view = created.stdout.trim().split('\n').pop() as string
  for (const d of dirs.slice(1)) {
    const key = (await reefCli(d, ['id'])).stdout.trim()
    t.equal((await reefCli(dirs[0], ['view', 'add', view, key])).code, 0)
  }
  const common = ['--view', view, '--fold-interval', '0.2', '--view-interval', '0.2', '--attr-timeout', '3600']
  const mounts: NetMount[] = []
  for (const [i, d] of dirs.entries()) {
    mounts.push(await startNetMount(t, d, path.join(base, `mnt-${labels[i]}`), [...common, ...(i > 0 ? ['--bootstrap', mounts[0].addr] : [])], { REEF_TEST_VIEW_HOLD: `${d}.hold` }))
    if (i === 0) await waitFor('A to publish the view', async () => (await statusOf(mounts[0])).view?.rounds >= 1, 60_000)
  }
  const writers = labels.map((l, i) => new Writer(l, mounts[i], `${dirs[i]}.hold`, prng(SEED + i + 1)))
  // The start: each writer's directory, and the shared files (made by A, seen by all).
  fs.mkdirSync(path.join(mounts[0].mnt, 'shared'))
  for (let k = 0; k < SHARED; k++) fs.writeFileSync(path.join(mounts[0].mnt, 'shared', `s${k}.txt`), '')
  for (const w of writers) fs.mkdirSync(w.dir)
  const acked: string[] = []

  const converge = async (what: string): Promise<string> => {
    await waitFor(what, () => {
      const d = mounts.map(m => treeDigest(m.mnt))
      return d.every(x => x === d[0]) && writers.every(w => d[0].includes(`/w${w.label}/`))
    }, 120_000, 250).catch(async err => {
      t.fail((err as Error).message)
      for (const m of mounts) t.comment(`${m.dataDir}: ${JSON.stringify((await statusOf(m)).view)}\n${m.stderr().split('\n').slice(-15).join('\n')}`)
    })
    return treeDigest(mounts[0].mnt)
  }
  await converge('the start to reach everyone')

  for (let epoch = 0; epoch < EPOCHS; epoch++) {
    const cut = writers.filter(() => r() < 0.5)
    for (const w of cut) fs.writeFileSync(w.hold, '')
    await waitFor('the cut-off writers to stop their rounds', async () => {
      for (const w of cut) if ((await statusOf(w.mount)).view?.held !== true) return false
      return true
    }, 60_000, 100)
    const done: string[] = []
    for (let i = 0; i < OPS; i++) {
      for (const w of writers) done.push(`${w.label} ${r() < 0.3 ? w.shared(Math.floor(r() * SHARED), acked) : w.own()}`)
    }
    t.comment(`epoch ${epoch}: cut off ${cut.map(w => w.label).join(',') || 'nobody'}; ${done.length} ops`)
    for (const w of cut) {
      const s = await reefCli(w.mount.dataDir, ['sync'])
      t.equal(s.code, 0, describe(s))
      fs.rmSync(w.hold, { force: true })
    }
    const tree = await converge(`epoch ${epoch}: all writers to converge`)
    const digests = mounts.map(m => treeDigest(m.mnt))
    for (let i = 1; i < digests.length; i++) t.equal(digests[i], digests[0], `epoch ${epoch}: ${labels[i]} has a's tree`)
    for (const w of writers) {
      t.same(sorted(modelOf(path.join(mounts[0].mnt, `w${w.label}`))), sorted(w.model), `epoch ${epoch}: /w${w.label} is writer ${w.label}'s model`)
    }
    const lost: string[] = []
    for (const entry of acked) {
      const [k, line] = entry.split(' ')
      const names = fs.readdirSync(path.join(mounts[0].mnt, 'shared')).filter(n => n === `s${k}.txt` || new RegExp(`^s${k}\\.sync-conflict-.*\\.txt$`).test(n))
      // The line's bytes: a write whose file changed under it (a third writer's concurrent change
      // ordered before what its writer saw) lands in a conflict copy of its own, at its offset.
      const found = names.some(n => fs.readFileSync(path.join(mounts[0].mnt, 'shared', n), 'utf8').includes(line + '\n'))
      if (!found) lost.push(entry)
    }
    t.same(lost, [], `epoch ${epoch}: all ${acked.length} acknowledged lines are in their shared file or a conflict copy of it`)
    if (lost.length > 0) t.comment(tree)
  }
})
