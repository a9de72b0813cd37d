// Serving test/fixtures/fuse3-tree.mjs (an in-memory tree on reef's fuse3 addon) in a child, for
// the fuse3 tests: the child answers the kernel while the test makes synchronous fs calls.

import { execFile, fork, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { ROOT, waitFor, isMounted } from './mount.js'

const run = promisify(execFile)
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'fuse3-tree.mjs')

export interface Fuse3Stats {
  lookups: Array<[number, number]>
  forgotten: Array<[number, number]>
  viaPlus: Array<[number, number]>
  uids: number[]
  renames: Array<[string, string, number]>
  seen: { readdirplus: number, flush: number, fsync: number, access: number }
}

interface TapLike { teardown: (fn: () => void | Promise<void>) => void }

/** Why the fuse3 tests cannot run here, or false. */
export function fuse3SkipReason (): string | false {
  if (process.platform !== 'linux') return 'FUSE tests need Linux'
  if (!fs.existsSync('/dev/fuse')) return '/dev/fuse is missing'
  if (process.getuid?.() !== 0) return 'needs root (mount, drop_caches)'
  return false
}

export interface Fuse3Child {
  child: ChildProcess
  /** Messages from the child, in arrival order. */
  got: unknown[]
  exited: () => number | null | undefined
  stats: () => Promise<Fuse3Stats>
}

/** Mounts the fixture on `mnt` ('rw': read-write with READDIRPLUS) and waits for INIT. */
export async function serveFuse3 (t: TapLike, mnt: string, mode: 'ro' | 'rw' = 'ro'): Promise<Fuse3Child> {
  const child = fork(FIXTURE, [mnt, mode], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const got: unknown[] = []
  let exited: number | null | undefined
  child.on('message', (m) => got.push(m))
  child.on('exit', (code) => { exited = code })
  t.teardown(async () => {
    if (isMounted(mnt)) await run('fusermount3', ['-uz', mnt]).catch(() => {})
    if (exited === undefined) child.kill('SIGKILL')
  })
  const stats = async (): Promise<Fuse3Stats> => {
    const before = got.length
    child.send('stats')
    await waitFor('stats from the fixture', () => got.slice(before).some((m) => typeof m === 'object'))
    return got.slice(before).find((m) => typeof m === 'object') as Fuse3Stats
  }
  await waitFor('INIT from the kernel', () => got.includes('ready'))
  return { child, got, exited: () => exited, stats }
}

/** Unmounts with fusermount3 and waits for the fixture to see the end and exit. */
export async function unmountFuse3 (f: Fuse3Child, mnt: string): Promise<number | null | undefined> {
  await run('fusermount3', ['-u', mnt])
  await waitFor('the fixture to see the connection end', () => f.got.includes('ended'))
  await waitFor('the fixture to exit', () => f.exited() !== undefined)
  return f.exited()
}
