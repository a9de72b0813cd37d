/**
 * What the view tests (test/view-*.test.ts) share: a tree's fingerprint as a mount shows it, a
 * mount's status, and a seeded generator.
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { reefCli, type NetMount } from './cluster.js'

/** Every path under `dir` (but /.reef, each mount's own history) with kind, mode, size and content hash (files), sorted: one string. */
export function treeDigest (dir: string): string {
  const lines: string[] = []
  const walk = (p: string, rel: string): void => {
    for (const name of fs.readdirSync(p).sort()) {
      if (rel === '' && name === '.reef') continue
      const q = path.join(p, name)
      const st = fs.lstatSync(q)
      const r = `${rel}/${name}`
      if (st.isDirectory()) {
        lines.push(`${r}/ dir ${(st.mode & 0o7777).toString(8)}`)
        walk(q, r)
      } else if (st.isFile()) {
        lines.push(`${r} file ${(st.mode & 0o7777).toString(8)} ${st.size} ${crypto.createHash('sha256').update(fs.readFileSync(q)).digest('hex').slice(0, 16)}`)
      } else {
        lines.push(`${r} ${st.isSymbolicLink() ? `symlink ${fs.readlinkSync(q)}` : 'other'}`)
      }
    }
  }
  walk(dir, '')
  return lines.join('\n')
}

/** `reef status --json` of the daemon serving a mount's data directory. */
export const statusOf = async (m: NetMount): Promise<any> => JSON.parse((await reefCli(m.dataDir, ['status', '--json'])).stdout)

/** mulberry32: small, fast, good enough to drive a generator. */
export function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32
  }
}
