#!/usr/bin/env node
// Build reef's patched copy of fuse-native from source.
//
// Run by the root package's "postinstall" (dependency install scripts are
// blocked by npm 11, and fuse-native's own one is denied in "allowScripts").
//
//   node_modules/fuse-native            pristine npm package (never modified)
//   node_modules/.reef-fuse-native      copy + mount/native/fuse-native.patch,
//                                       compiled with node-gyp against the
//                                       system libfuse2 (pkg-config fuse)
//
// Idempotent: skipped when the stamp file records the same input hash
// (patch, this script, fuse-native version, node ABI/arch).
// Env: REEF_SKIP_FUSE_BUILD=1 skips with a warning (machines without FUSE);
//      REEF_FUSE_REBUILD=1 forces a rebuild; REEF_FUSE_NATIVE_DIR overrides
//      the output directory (the loader in mount/fuse.ts honours it too).

import { createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const FUSE_NATIVE_VERSION = '2.2.6'
const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..', '..')
const patchFile = path.join(here, 'fuse-native.patch')
const require = createRequire(path.join(root, 'package.json'))

function log (msg) { console.error(`[reef fuse-native] ${msg}`) }
function die (msg) {
  log(`ERROR: ${msg}`)
  process.exit(1)
}

function run (cmd, args, opts = {}) {
  log(`$ ${cmd} ${args.join(' ')}`)
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...opts })
  if (r.error) return { ok: false, error: r.error }
  return { ok: r.status === 0, status: r.status }
}

if (process.env.REEF_SKIP_FUSE_BUILD === '1') {
  log('REEF_SKIP_FUSE_BUILD=1: not building the FUSE binding; mounting will not work')
  process.exit(0)
}
if (process.platform !== 'linux') die(`only Linux is supported (platform ${process.platform})`)

// 1. Locate the pristine package.
let srcDir
try {
  srcDir = path.dirname(require.resolve('fuse-native/package.json'))
} catch {
  die('node_modules/fuse-native is missing: run `npm install` first')
}
const srcPkg = JSON.parse(fs.readFileSync(path.join(srcDir, 'package.json'), 'utf8'))
if (srcPkg.version !== FUSE_NATIVE_VERSION) {
  die(`fuse-native ${srcPkg.version} is installed, the patch is for ${FUSE_NATIVE_VERSION}`)
}
const outDir = process.env.REEF_FUSE_NATIVE_DIR
  ? path.resolve(process.env.REEF_FUSE_NATIVE_DIR)
  : path.join(path.dirname(srcDir), '.reef-fuse-native')
const stampFile = path.join(outDir, '.reef-build-stamp')
const bindingFile = path.join(outDir, 'build', 'Release', 'fuse.node')

// 2. Skip if already built from the same inputs.
const hash = createHash('sha256')
  .update(fs.readFileSync(patchFile))
  .update(fs.readFileSync(fileURLToPath(import.meta.url)))
  .update(`${srcPkg.version} ${process.versions.modules} ${process.versions.napi} ${process.arch}`)
  .digest('hex')
if (process.env.REEF_FUSE_REBUILD !== '1' && fs.existsSync(bindingFile) &&
    fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8').trim() === hash) {
  log(`up to date (${path.relative(root, outDir)}, ${hash.slice(0, 12)})`)
  process.exit(0)
}

// 3. Preflight: the system libfuse2 headers, found through pkg-config.
const pc = spawnSync('pkg-config', ['--exists', 'fuse'])
if (pc.error || pc.status !== 0) {
  die('pkg-config cannot find libfuse2 ("fuse"). On Debian/Ubuntu: apt-get install -y libfuse-dev pkg-config fuse')
}

// 4. Fresh copy of the package (without prebuilds, which are unpatched).
fs.rmSync(outDir, { recursive: true, force: true })
fs.cpSync(srcDir, outDir, {
  recursive: true,
  filter: (p) => !p.startsWith(path.join(srcDir, 'prebuilds')) && !p.startsWith(path.join(srcDir, 'build'))
})

// 5. Apply the patch; any fuzz/reject is fatal.
let r = run('patch', ['-p1', '--forward', '--batch', '--fuzz=0', '--no-backup-if-mismatch', '-i', patchFile], { cwd: outDir })
if (!r.ok && r.error && r.error.code === 'ENOENT') {
  log('`patch` not found, trying `git apply`')
  r = run('git', ['apply', '--verbose', patchFile], { cwd: outDir })
}
if (!r.ok) die(`${path.relative(root, patchFile)} does not apply to fuse-native ${srcPkg.version}`)

// 6. Compile with node-gyp (npm's bundled copy; no network needed when the
//    node headers are installed next to the node binary, e.g. /usr/include/node).
function findNodeGyp () {
  const candidates = []
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp)
  if (process.env.npm_execpath) {
    candidates.push(path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'))
  }
  const prefix = path.resolve(path.dirname(process.execPath), '..')
  candidates.push(path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'))
  candidates.push(path.join(prefix, 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'))
  try { candidates.push(require.resolve('node-gyp/bin/node-gyp.js')) } catch {}
  return candidates.find((c) => c && fs.existsSync(c))
}
const nodeGyp = findNodeGyp()
if (!nodeGyp) die('cannot find node-gyp (expected npm\'s bundled node_modules/npm/node_modules/node-gyp)')

const gypArgs = [nodeGyp, 'rebuild', '--release']
if (!process.env.npm_config_nodedir) {
  // Distribution / tarball installs ship the headers (with common.gypi) here.
  const prefix = path.resolve(path.dirname(process.execPath), '..')
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) gypArgs.push(`--nodedir=${prefix}`)
}
r = run(process.execPath, gypArgs, { cwd: outDir })
if (!r.ok) die('node-gyp build failed (needs make, a C compiler, python3, libfuse-dev)')

// 7. Smoke-load the result in a child process before stamping it.
const check = spawnSync(process.execPath, ['-e', `
  const Fuse = require(${JSON.stringify(outDir)})
  if (typeof Fuse !== 'function') throw new Error('no Fuse export')
`], { stdio: 'inherit' })
if (check.status !== 0) die('the built binding does not load')

fs.writeFileSync(stampFile, hash + '\n')
log(`built ${path.relative(root, bindingFile)} (${hash.slice(0, 12)})`)
