// Several processes on one store: a commit must stay visible however many other processes open
// the store meanwhile. lmdb-js 3.5.6 bundles a liblmdb with ITS#9496: mdb_env_open2 stored the
// newest meta's txnid in the shared lock.mdb on every open, so an open racing another process's
// commit hid that commit again, readers missed it and the next writer overwrote it. The install
// (src/store/lmdb/build-lmdb.mjs) patches mdb.c with upstream's fix and builds lmdb's addon from
// source. Here one process writes one block per commit while another opens and closes the store
// in a loop; every acknowledged block must then be there and the writer must exit 0. With the
// prebuilt (unpatched) addon this lost 19 to 24 of ~1,000 acknowledged blocks per 5 s run, failed
// commits with MDB_PROBLEM and sometimes killed the writer (SIGSEGV).
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseGuid } from '../src/block/index.js'
import { LmdbBlockStore, LmdbStore } from '../src/store/lmdb.js'
import { runChild, type ChildRun } from './helpers/child.js'
import { reef, ROOT, show, tempDir } from './helpers/cli.js'

const dist = (p: string): string => pathToFileURL(path.join(ROOT, 'dist', 'src', p)).href
const DIST_LMDB = path.join(ROOT, 'dist', 'src', 'store', 'lmdb.js')
// What the install builds, and the string its patch adds to mdb.c (src/store/lmdb/its9496.patch).
const PATCHED_ADDON = path.join(ROOT, 'node_modules', 'lmdb', 'build', 'Release', 'lmdb.node')
const MARKER = 'reef-lmdb-its9496-fixed'

// Writes one random block per commit for `ms`; prints the lmdb addons this process mapped
// ("addon PATH ...": .node files of the lmdb and @lmdb/* packages in /proc/self/maps), each BGUID
// once its put resolved, then "errors N" (puts that threw) last.
const WRITER = `
import fs from 'node:fs'
import { randomBytes, randomInt } from 'node:crypto'
import { LmdbBlockStore, LmdbStore } from ${JSON.stringify(dist('store/lmdb.js'))}
import { makeBlock } from ${JSON.stringify(dist('block/index.js'))}
const [dir, ms] = process.argv.slice(2)
const db = new LmdbStore({ path: dir, create: false })
const store = new LmdbBlockStore(db)
const addons = new Set(fs.readFileSync('/proc/self/maps', 'utf8').split('\\n')
  .map(l => l.slice(l.indexOf('/'))).filter(p => /\\/node_modules\\/@?lmdb\\//.test(p) && /\\.node$/.test(p)))
let out = 'addon ' + [...addons].join(' ') + '\\n'
const end = Date.now() + Number(ms)
let errors = 0
while (Date.now() < end) {
  const b = makeBlock(new Uint8Array(randomBytes(randomInt(1, 4000))))
  try { await store.put(b); out += b.cid.toString() + '\\n' } catch (e) { errors++; process.stderr.write(String(e) + '\\n') }
}
await db.close()
process.stdout.write(out + 'errors ' + errors + '\\n')
`

// Opens and closes the store in a loop for `ms` (each open is what a new CLI process does).
// Prints the number of opens.
const OPENER = `
import { LmdbStore } from ${JSON.stringify(dist('store/lmdb.js'))}
const [dir, ms] = process.argv.slice(2)
const end = Date.now() + Number(ms)
let n = 0
while (Date.now() < end) {
  const db = new LmdbStore({ path: dir, create: false })
  db.blocks.getCount()
  await db.close()
  n++
}
process.stdout.write(n + '\\n')
`

type Child = ChildRun

/** Runs a module source in a child node, from a file in `dir`, with none of tap's NODE_OPTIONS
 * (its process-info hook has nothing to do with what is tested here); SIGKILLed (and so failing)
 * after `limitMs`. */
async function child (dir: string, name: string, src: string, args: string[], limitMs: number): Promise<Child> {
  const file = path.join(dir, name + '.mjs')
  fs.writeFileSync(file, src)
  return await runChild([file, ...args], limitMs)
}

/** What a child did, for messages: its exit, the start of its stdout and of its stderr. */
const told = (c: Child): string => `(exit ${String(c.code)}, signal ${String(c.signal)}, stdout ${JSON.stringify(c.stdout.slice(0, 200))}, stderr ${JSON.stringify(c.stderr.slice(0, 600))})`

t.before(() => {
  if (!fs.existsSync(DIST_LMDB)) throw new Error(`${DIST_LMDB} is missing: run tsc first (npm test does)`)
})

t.test('commits survive another process opening the store again and again', async t => {
  const data = path.join(tempDir(t, 'reef-proc-'), 'data')
  const init = await reef(data, ['init'])
  if (init.code !== 0) throw new Error(show(init))
  const store = path.join(data, 'store')
  const ms = 5000
  const scripts = tempDir(t, 'reef-proc-js-')
  const [w, o] = await Promise.all([child(scripts, 'writer', WRITER, [store, String(ms)], 60_000), child(scripts, 'opener', OPENER, [store, String(ms)], 60_000)])
  const lines = w.stdout.trim().split('\n')
  const addon = lines[0]?.startsWith('addon ') === true ? lines.shift()?.slice('addon '.length) : undefined
  t.equal(addon, PATCHED_ADDON, `the writer ran the addon the install built (not the prebuilt @lmdb package) ${told(w)}`)
  t.ok(fs.existsSync(PATCHED_ADDON) && fs.readFileSync(PATCHED_ADDON).includes(MARKER), `${PATCHED_ADDON} has the ITS#9496 patch (marker ${MARKER})`)

  t.equal(w.signal, null, `the writer was not killed ${told(w)}`)
  t.equal(w.code, 0, `the writer exited 0 ${told(w)}`)
  t.equal(o.signal, null, `the opener was not killed ${told(o)}`)
  t.equal(o.code, 0, `the opener exited 0 ${told(o)}`)
  t.equal(lines.at(-1), 'errors 0', `no put failed ${told(w)}`)
  const acked = lines.slice(0, -1)
  t.ok(acked.length > 50, `the writer committed ${acked.length} blocks ${told(w)}`)
  t.ok(Number(o.stdout.trim()) > 50, `the opener opened the store ${o.stdout.trim()} times meanwhile ${told(o)}`)

  const db = new LmdbStore({ path: store, create: false })
  const blocks = new LmdbBlockStore(db)
  try {
    const missing = acked.filter(g => !blocks.hasSync(parseGuid(g)))
    t.same(missing.slice(0, 5), [], `every one of ${acked.length} acknowledged blocks is there (${missing.length} missing)`)
  } finally {
    await db.close()
  }
})
