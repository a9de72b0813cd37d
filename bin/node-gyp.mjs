// The node-gyp command the install's native builds run (mount/native/build-fuse3.mjs,
// src/store/lmdb/build-lmdb.mjs): npm's bundled node-gyp, with the headers installed next to
// node, so that no build reaches the network.
import fs from 'node:fs'
import path from 'node:path'

/** [script, ...args] of `node-gyp rebuild --release` (run with process.execPath), or undefined. */
export function nodeGypRebuild () {
  const prefix = path.resolve(path.dirname(process.execPath), '..')
  const nodeGyp = [
    process.env.npm_config_node_gyp,
    path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    path.join(prefix, 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')
  ].find((c) => c && fs.existsSync(c))
  if (!nodeGyp) return undefined
  const args = [nodeGyp, 'rebuild', '--release']
  if (!process.env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi'))) {
    args.push(`--nodedir=${prefix}`)
  }
  return args
}
