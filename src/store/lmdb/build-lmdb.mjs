#!/usr/bin/env node
// Build lmdb-js's native addon from source with LMDB's ITS#9496 fix (its9496.patch, next to this
// script).
//
// lmdb-js 3.5.6 (the newest) bundles a liblmdb from 2020 whose mdb_env_open2 stores the newest
// meta page's txnid in the shared lock.mdb on every open. Upstream LMDB fixed that in 2021 so that
// only an MDB_PREVSNAPSHOT open does it. Without the fix, an open that races another process's
// commit hides that commit: readers miss it and the next writer overwrites it, so acknowledged
// blocks are lost (test/store-process.test.ts).
//
// Run by the root package's "postinstall". The patch goes into node_modules/lmdb's own mdb.c,
// node-gyp builds node_modules/lmdb/build/Release/lmdb.node, and a child process checks that
// lmdb loads that file (node-gyp-build-optional-packages tries build/Release before the prebuilt
// @lmdb/lmdb-<platform> package) and that the file has the patch's marker string. The patch is
// applied only when its exact text is found; if the source matches neither the unpatched nor the
// patched text the build stops with an error. Skipped when the stamp records the same inputs
// (lmdb version, patched mdb.c, binding.gyp, patch, this script, node ABI/arch, compiler). npm ci
// deletes node_modules and the stamp with it, so each build is also kept in a cache outside the
// checkout (~/.cache/reef/lmdb/lmdb-VERSION-DIGEST.node) and a later npm ci with the same inputs
// copies it instead of compiling (it is checked the same way).
// Env: REEF_SKIP_LMDB_BUILD=1 keeps the prebuilt, unpatched addon (one process per store only);
// REEF_LMDB_REBUILD=1 forces a build; REEF_LMDB_CACHE=DIR caches in DIR/lmdb instead of
// ${XDG_CACHE_HOME:-~/.cache}/reef/lmdb, REEF_LMDB_CACHE=off caches nothing; JOBS=N builds with
// make -jN (node-gyp's own variable).

import { createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { nodeGypRebuild } from '../../../bin/node-gyp.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..', '..', '..')
const lmdbDir = path.join(root, 'node_modules', 'lmdb')
const patchFile = path.join(here, 'its9496.patch')
const addonFile = path.join(lmdbDir, 'build', 'Release', 'lmdb.node')
const stampFile = path.join(lmdbDir, 'build', '.reef-build-stamp')
/** The string the patch adds to mdb.c (kept in the binary by __attribute__((used))). */
const MARKER = 'reef-lmdb-its9496-fixed'

function log (msg) { console.error(`[reef lmdb] ${msg}`) }
function die (msg) {
  log(`ERROR: ${msg}`)
  process.exit(1)
}

if (process.env.REEF_SKIP_LMDB_BUILD === '1') {
  log('REEF_SKIP_LMDB_BUILD=1: not building; lmdb loads its prebuilt addon, which still has the ' +
    'ITS#9496 bug (a store is then safe in one process at a time only)')
  process.exit(0)
}
if (process.platform !== 'linux') die(`only Linux is supported (platform ${process.platform})`)
if (!fs.existsSync(path.join(lmdbDir, 'binding.gyp'))) die(`${path.relative(root, lmdbDir)}/binding.gyp is missing (is lmdb installed?)`)

/**
 * The patch as a list of exact replacements: per hunk, the old text (context and '-' lines) and
 * the new text (context and '+' lines), for the one file it names. Enough for a unified diff
 * made by diff -u; `patch -p1` in node_modules/lmdb applies the same file.
 */
function readPatch (file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n')
  let target
  const hunks = []
  let hunk
  for (const line of lines) {
    if (line.startsWith('+++ ')) {
      target = line.slice(4).trim().replace(/^b\//, '')
    } else if (line.startsWith('--- ')) {
      hunk = undefined
    } else if (line.startsWith('@@')) {
      hunk = { old: [], new: [] }
      hunks.push(hunk)
    } else if (hunk !== undefined && line.length > 0) {
      const body = line.slice(1)
      if (line[0] === ' ') { hunk.old.push(body); hunk.new.push(body) } else if (line[0] === '-') hunk.old.push(body)
      else if (line[0] === '+') hunk.new.push(body)
      else if (line[0] !== '\\') die(`${file}: cannot read the line ${JSON.stringify(line)}`)
    }
  }
  if (target === undefined || hunks.length === 0) die(`${file}: no file or no hunk`)
  return { target, hunks: hunks.map(h => ({ old: h.old.join('\n') + '\n', new: h.new.join('\n') + '\n' })) }
}

function count (text, part) {
  let n = 0
  for (let i = text.indexOf(part); i !== -1; i = text.indexOf(part, i + 1)) n++
  return n
}

// The patched source: each hunk's old text found exactly once and replaced, or its new text
// already there exactly once (a second run); anything else means a different lmdb source.
const patch = readPatch(patchFile)
const lmdbVersion = JSON.parse(fs.readFileSync(path.join(lmdbDir, 'package.json'), 'utf8')).version
const sourceFile = path.join(lmdbDir, patch.target)
const source = fs.readFileSync(sourceFile, 'utf8')
let patched = source
for (const [i, h] of patch.hunks.entries()) {
  const olds = count(patched, h.old)
  const news = count(patched, h.new)
  if (news === 1 && olds === 0) continue
  if (olds === 1 && news === 0) { patched = patched.replace(h.old, () => h.new); continue }
  die(`lmdb ${lmdbVersion}: hunk ${i + 1} of ${path.relative(root, patchFile)} does not match ` +
    `${path.relative(root, sourceFile)} (unpatched text found ${olds} times, patched text ${news} times). ` +
    'Check whether this lmdb already has the ITS#9496 fix and update the patch.')
}
if (!patched.includes(MARKER)) die(`${path.relative(root, patchFile)} does not add the marker ${MARKER}`)

const cc = spawnSync(process.env.CC ?? 'gcc', ['--version'], { encoding: 'utf8' })
const hash = createHash('sha256')
hash.update(`lmdb ${lmdbVersion}\n`).update(patched)
hash.update(fs.readFileSync(path.join(lmdbDir, 'binding.gyp')))
hash.update(fs.readFileSync(patchFile)).update(fs.readFileSync(fileURLToPath(import.meta.url)))
hash.update(`${process.versions.modules} ${process.versions.napi} ${process.arch} ${(cc.stdout ?? '').split('\n')[0]}`)
const digest = hash.digest('hex')

/** Which addon lmdb loads, checked in a new process: resolved path, mapped file, a put and get. */
function loadedAddon () {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `
    import fs from 'node:fs'
    import os from 'node:os'
    import path from 'node:path'
    import { createRequire } from 'node:module'
    const lmdbDir = ${JSON.stringify(lmdbDir)}
    const req = createRequire(path.join(lmdbDir, 'package.json'))
    const resolved = req('node-gyp-build-optional-packages').path(lmdbDir)
    const { open } = await import('lmdb')
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-lmdb-check-'))
    try {
      const db = open({ path: dir })
      await db.put('k', 'v')
      if (db.get('k') !== 'v') throw new Error('put then get failed')
      const mapped = [...new Set(fs.readFileSync('/proc/self/maps', 'utf8').split('\\n')
        .map(l => l.slice(l.indexOf('/'))).filter(p => p.endsWith('.node') && /\\/node_modules\\/@?lmdb\\//.test(p)))]
      await db.close()
      console.log(JSON.stringify({ resolved, mapped }))
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  `], { cwd: root, encoding: 'utf8' })
  if (r.status !== 0) die(`loading lmdb failed: ${r.stderr || r.stdout}`)
  return JSON.parse(r.stdout.trim().split('\n').at(-1))
}

function verify () {
  if (!fs.readFileSync(addonFile).includes(MARKER)) die(`${path.relative(root, addonFile)} lacks the marker ${MARKER}`)
  const { resolved, mapped } = loadedAddon()
  if (resolved !== addonFile || mapped.length !== 1 || mapped[0] !== addonFile) {
    die(`lmdb does not load the patched addon: it resolves ${resolved} and maps ${mapped.join(', ') || 'nothing'}`)
  }
}

if (process.env.REEF_LMDB_REBUILD !== '1' && fs.existsSync(addonFile) && source === patched &&
    fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8').trim() === digest) {
  verify()
  log(`up to date (${path.relative(root, addonFile)}, ${digest.slice(0, 12)})`)
  process.exit(0)
}

if (patched !== source) {
  fs.writeFileSync(sourceFile, patched)
  log(`patched ${path.relative(root, sourceFile)} (lmdb ${lmdbVersion}, ${path.relative(root, patchFile)})`)
}

// A build made from the same inputs before (npm ci deletes node_modules, and with it the stamp).
const cacheDir = process.env.REEF_LMDB_CACHE === 'off'
  ? undefined
  : path.join(process.env.REEF_LMDB_CACHE || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'reef'), 'lmdb')
const cached = cacheDir && path.join(cacheDir, `lmdb-${lmdbVersion}-${digest.slice(0, 16)}.node`)
if (process.env.REEF_LMDB_REBUILD !== '1' && cached && fs.existsSync(cached)) {
  fs.rmSync(path.join(lmdbDir, 'build'), { recursive: true, force: true })
  fs.mkdirSync(path.dirname(addonFile), { recursive: true })
  fs.copyFileSync(cached, addonFile)
  verify()
  fs.writeFileSync(stampFile, digest + '\n')
  log(`used the build cached in ${cached} (same inputs, ${digest.slice(0, 12)}); lmdb loads ${path.relative(root, addonFile)}`)
  process.exit(0)
}

const args = nodeGypRebuild()
if (!args) die('cannot find node-gyp (expected npm\'s bundled node_modules/npm/node_modules/node-gyp)')
// binding.gyp reads LMDB_DATA_V1 (an older data format, another mdb.c): reef's stores are
// format 2, as the prebuilt addon writes them.
const env = { ...process.env }
delete env.LMDB_DATA_V1
const started = Date.now()
// lmdb's sources print hundreds of compiler warnings: they go to a log, shown if the build fails.
const buildLog = path.join(root, 'node_modules', '.reef-lmdb-build.log')
log(`building ${path.relative(root, addonFile)} with node-gyp (lmdb ${lmdbVersion}, JOBS=${env.JOBS ?? 'unset'}; ` +
  `output in ${path.relative(root, buildLog)}, about a minute)`)
const r = spawnSync(process.execPath, args, { cwd: lmdbDir, env, encoding: 'utf8', maxBuffer: 64 << 20 })
fs.writeFileSync(buildLog, `${r.stdout ?? ''}${r.stderr ?? ''}`)
if (r.status !== 0) {
  console.error(`${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').slice(-40).join('\n'))
  die(`node-gyp build failed (needs make, a C/C++ compiler, python3); full output in ${buildLog}`)
}
if (!fs.existsSync(addonFile)) die(`node-gyp did not produce ${path.relative(root, addonFile)}`)

verify()
fs.writeFileSync(stampFile, digest + '\n')
if (cached) {
  try {
    fs.mkdirSync(cacheDir, { recursive: true })
    fs.copyFileSync(addonFile, `${cached}.${process.pid}`)
    fs.renameSync(`${cached}.${process.pid}`, cached)
  } catch (e) {
    log(`could not cache the build in ${cacheDir}: ${e.message}`)
  }
}
log(`built ${path.relative(root, addonFile)} in ${((Date.now() - started) / 1000).toFixed(0)} s; ` +
  `lmdb loads it (${digest.slice(0, 12)})`)
