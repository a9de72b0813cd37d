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
  seen: {
    readdirplus: number
    flush: number
    fsync: number
    access: number
    open: number
    opendir: number
    /** Each WRITE's size, in arrival order. */
    writes: number[]
    /** Each getxattr name JS was asked for. */
    getxattr: string[]
    /** [mode, off, length] of each FALLOCATE. */
    fallocate: Array<[number, number, number]>
    lookupNames: string[]
    /** Each READ's size asked by the kernel. */
    reads: number[]
  }
}

/** The fixture's argv[4]: caps for mountLowLevel, attr/entry timeouts, which open handler. */
export interface Fuse3Config { caps?: Record<string, unknown>, ttl?: number, open?: 'keep' | 'enosys' }

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
  /** A control message to the fixture ({ cmd, ... }); resolves with its result. */
  ask: (cmd: string, args?: Record<string, unknown>) => Promise<unknown>
}

/** Mounts the fixture on `mnt` ('rw': read-write with READDIRPLUS) and waits for INIT. */
export async function serveFuse3 (t: TapLike, mnt: string, mode: 'ro' | 'rw' = 'ro', cfg: Fuse3Config = {}): Promise<Fuse3Child> {
  const child = fork(FIXTURE, [mnt, mode, JSON.stringify(cfg)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
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
    const isStats = (m: unknown): boolean => typeof m === 'object' && m !== null && 'lookups' in m
    await waitFor('stats from the fixture', () => got.slice(before).some(isStats))
    return got.slice(before).find(isStats) as Fuse3Stats
  }
  let nextId = 1
  const ask = async (cmd: string, args: Record<string, unknown> = {}): Promise<unknown> => {
    const id = nextId++
    child.send({ ...args, id, cmd })
    type Reply = { id: number, result?: unknown, error?: string }
    const mine = (m: unknown): m is Reply => typeof m === 'object' && m !== null && (m as Reply).id === id
    await waitFor(`the fixture's answer to ${cmd}`, () => got.some(mine))
    const reply = got.find(mine) as Reply
    if (reply.error !== undefined) throw new Error(`fixture ${cmd}: ${reply.error}`)
    return reply.result
  }
  await waitFor('INIT from the kernel', () => got.includes('ready'))
  return { child, got, exited: () => exited, stats, ask }
}

/** Unmounts with fusermount3 and waits for the fixture to see the end and exit. */
export async function unmountFuse3 (f: Fuse3Child, mnt: string): Promise<number | null | undefined> {
  await run('fusermount3', ['-u', mnt])
  await waitFor('the fixture to see the connection end', () => f.got.includes('ended'))
  await waitFor('the fixture to exit', () => f.exited() !== undefined)
  return f.exited()
}
