// Several processes on one store: a commit must stay visible however many other processes open
// the store meanwhile. lmdb-js's LMDB lets an open that races another process's commit hide that
// commit again, and the next writer then overwrites it (src/store/lmdb-txnid.ts): `reef get` in
// CI answered NOT_FOUND for a block a finished `reef put` had stored. Here one process writes
// blocks one commit at a time while another opens and closes the store in a loop; every
// acknowledged block must then be there. Before the fix this lost 11 of 808 acknowledged blocks
// in 3 s (19 to 24 of ~1,000 to 1,450 in 5 s), failed commits with MDB_PROBLEM and once crashed
// the writer (SIGSEGV).
import t from 'tap'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseGuid } from '../src/block/index.js'
import { LmdbBlockStore, LmdbStore } from '../src/store/lmdb.js'
import { lastWord, reef, ROOT, show, tempDir } from './helpers/cli.js'

const dist = (p: string): string => pathToFileURL(path.join(ROOT, 'dist', 'src', p)).href
const DIST_LMDB = path.join(ROOT, 'dist', 'src', 'store', 'lmdb.js')

// Writes one random block per commit for `ms`; prints each BGUID once its put resolved, then
// "errors N" (puts that threw) last.
const WRITER = `
import { randomBytes, randomInt } from 'node:crypto'
import { LmdbBlockStore, LmdbStore } from ${JSON.stringify(dist('store/lmdb.js'))}
import { makeBlock } from ${JSON.stringify(dist('block/index.js'))}
const [dir, ms] = process.argv.slice(1)
const db = new LmdbStore({ path: dir, create: false })
const store = new LmdbBlockStore(db)
const end = Date.now() + Number(ms)
let errors = 0
let out = ''
while (Date.now() < end) {
  const b = makeBlock(new Uint8Array(randomBytes(randomInt(1, 4000))))
  try { await store.put(b); out += b.cid.toString() + '\\n' } catch (e) { errors++; process.stderr.write(String(e) + '\\n') }
}
await db.close()
process.stdout.write(out + 'errors ' + errors + '\\n')
`

// Opens and closes the store in a loop for `ms` or until file `stop` exists (each open is what a
// new CLI process does); with `pause` > 0 it waits that many ms between opens. Prints the number
// of opens.
const OPENER = `
import fs from 'node:fs'
import { LmdbStore } from ${JSON.stringify(dist('store/lmdb.js'))}
const [dir, ms, pause, stop] = process.argv.slice(1)
const end = Date.now() + Number(ms)
let n = 0
while (Date.now() < end && !(stop !== undefined && fs.existsSync(stop))) {
  const db = new LmdbStore({ path: dir, create: false })
  db.blocks.getCount()
  await db.close()
  n++
  if (Number(pause) > 0) await new Promise(resolve => setTimeout(resolve, Number(pause)))
}
process.stdout.write(n + '\\n')
`

interface Child { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }

/** Runs a module source in a child node; SIGKILLed (and so failing) after `limitMs`. */
async function child (src: string, args: string[], limitMs: number): Promise<Child> {
  const c = spawn(process.execPath, ['--input-type=module', '-e', src, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  c.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  c.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => c.kill('SIGKILL'), limitMs)
  return await new Promise((resolve, reject) => {
    c.on('error', reject)
    c.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }) })
  })
}

async function initStore (t: { teardown: (fn: () => void) => void }): Promise<{ data: string, store: string }> {
  const data = path.join(tempDir(t, 'reef-proc-'), 'data')
  const r = await reef(data, ['init'])
  if (r.code !== 0) throw new Error(show(r))
  return { data, store: path.join(data, 'store') }
}

t.before(() => {
  if (!fs.existsSync(DIST_LMDB)) throw new Error(`${DIST_LMDB} is missing: run tsc first (npm test does)`)
})

t.test('commits survive another process opening the store again and again', async t => {
  const { store } = await initStore(t)
  const ms = 3000
  const [w, o] = await Promise.all([child(WRITER, [store, String(ms)], 60_000), child(OPENER, [store, String(ms), '0'], 60_000)])
  t.equal(w.signal, null, `the writer was not killed: ${w.stderr.slice(0, 600)}`)
  t.equal(w.code, 0, `the writer exited 0: ${w.stderr.slice(0, 600)}`)
  t.equal(o.code, 0, `the opener exited 0: ${o.stderr.slice(0, 600)}`)
  const lines = w.stdout.trim().split('\n')
  t.equal(lines.at(-1), 'errors 0', 'no put failed')
  const acked = lines.slice(0, -1)
  t.ok(acked.length > 50, `the writer committed ${acked.length} blocks`)
  t.ok(Number(o.stdout.trim()) > 50, `the opener opened the store ${o.stdout.trim()} times meanwhile`)

  const db = new LmdbStore({ path: store, create: false })
  const blocks = new LmdbBlockStore(db)
  try {
    const missing = acked.filter(g => !blocks.hasSync(parseGuid(g)))
    t.same(missing.slice(0, 5), [], `every one of ${acked.length} acknowledged blocks is there (${missing.length} missing)`)
  } finally {
    await db.close()
  }
})

t.test('reef get in a new process finds what reef put stored, while other processes open the store', async t => {
  const { data, store } = await initStore(t)
  const src = tempDir(t, 'reef-proc-src-')
  const rounds = 3
  const stop = path.join(src, 'stop')
  // Opens spaced by 2 ms: enough to land inside puts, light on the CPU.
  const opener = child(OPENER, [store, '50000', '2', stop], 60_000)
  t.teardown(() => fs.writeFileSync(stop, ''))
  for (let i = 0; i < rounds; i++) {
    const tree = path.join(src, `tree-${i}`)
    fs.mkdirSync(path.join(tree, 'sub'), { recursive: true })
    for (let f = 0; f < 8; f++) fs.writeFileSync(path.join(tree, f % 2 === 0 ? 'sub' : '', `f${f}`), `round ${i} file ${f} ${'x'.repeat(f * 3000)}`)
    const p = await reef(data, ['put', tree])
    t.equal(p.code, 0, `round ${i}: put: ${show(p)}`)
    const out = path.join(src, `out-${i}`)
    const g = await reef(data, ['get', lastWord(p), '-o', out])
    t.equal(g.code, 0, `round ${i}: get right after put: ${show(g)}`)
    t.equal(fs.readFileSync(path.join(out, 'f1'), 'utf8'), `round ${i} file 1 ${'x'.repeat(3000)}`, `round ${i}: restored bytes`)
  }
  fs.writeFileSync(stop, '')
  const o = await opener
  t.ok(Number(o.stdout.trim()) > 0, `the store was opened ${o.stdout.trim()} times meanwhile`)
  t.equal(o.code, 0, `the opener exited 0: ${o.stderr.slice(0, 600)}`)
})
