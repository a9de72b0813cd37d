#!/usr/bin/env node
// Build reef's own FUSE addon (mount/native/fuse3/, libfuse3's low-level API) with node-gyp.
//
// Run by the root package's "postinstall" after build.mjs. The sources are copied to
// node_modules/.reef-fuse3 (ignored by git) and compiled there against `pkg-config fuse3`, so
// the source tree never holds build output. Skipped when the stamp records the same inputs
// (sources, this script, node ABI/arch).
// Env: REEF_SKIP_FUSE_BUILD=1 skips (machines without FUSE); REEF_FUSE_REBUILD=1 forces a build.

import { createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { nodeGypRebuild } from '../../bin/node-gyp.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..', '..')
const srcDir = path.join(here, 'fuse3')
const outDir = path.join(root, 'node_modules', '.reef-fuse3')
const stampFile = path.join(outDir, '.reef-build-stamp')
const addonFile = path.join(outDir, 'build', 'Release', 'reef_fuse3.node')

function log (msg) { console.error(`[reef fuse3] ${msg}`) }
function die (msg) {
  log(`ERROR: ${msg}`)
  process.exit(1)
}

if (process.env.REEF_SKIP_FUSE_BUILD === '1') {
  log('REEF_SKIP_FUSE_BUILD=1: not building the fuse3 addon')
  process.exit(0)
}
if (process.platform !== 'linux') die(`only Linux is supported (platform ${process.platform})`)

const sources = fs.readdirSync(srcDir).filter((f) => /\.(c|h|gyp)$/.test(f)).sort()
const hash = createHash('sha256')
for (const f of sources) hash.update(f).update(fs.readFileSync(path.join(srcDir, f)))
hash.update(fs.readFileSync(fileURLToPath(import.meta.url)))
hash.update(`${process.versions.modules} ${process.versions.napi} ${process.arch}`)
const digest = hash.digest('hex')
if (process.env.REEF_FUSE_REBUILD !== '1' && fs.existsSync(addonFile) &&
    fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8').trim() === digest) {
  log(`up to date (${path.relative(root, outDir)}, ${digest.slice(0, 12)})`)
  process.exit(0)
}

const pc = spawnSync('pkg-config', ['--exists', 'fuse3'])
if (pc.error || pc.status !== 0) die('pkg-config cannot find libfuse3. On Debian: apt-get install -y libfuse3-dev fuse3 pkg-config')

fs.rmSync(outDir, { recursive: true, force: true })
fs.mkdirSync(outDir, { recursive: true })
for (const f of sources) fs.copyFileSync(path.join(srcDir, f), path.join(outDir, f))

const args = nodeGypRebuild()
if (!args) die('cannot find node-gyp (expected npm\'s bundled node_modules/npm/node_modules/node-gyp)')
const r = spawnSync(process.execPath, args, { cwd: outDir, stdio: 'inherit' })
if (r.status !== 0) die('node-gyp build failed (needs make, a C compiler, python3, libfuse3-dev)')

const check = spawnSync(process.execPath, ['-e', `
  const addon = require(${JSON.stringify(addonFile)})
  if (typeof addon.mount !== 'function') throw new Error('no mount export')
`], { stdio: 'inherit' })
if (check.status !== 0) die('the built addon does not load')

fs.writeFileSync(stampFile, digest + '\n')
log(`built ${path.relative(root, addonFile)} (${digest.slice(0, 12)})`)
