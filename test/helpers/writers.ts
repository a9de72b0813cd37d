/**
 * Several writers of one tree without a network or a mount, for merge tests: one memory block
 * store, a base version, and per writer its own log (in a temporary directory) and file system
 * opened at the base. A writer's records since the base are read back from the store after its
 * fold, as a node would read them from a head.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { sha256 } from '../../src/crypto/hash.js'
import { ReefFS, type VersionInfo } from '../../src/fs/fs.js'
import { WriterLog } from '../../src/log/index.js'
import { MemoryBlockStore } from '../../src/store/memory.js'
import type { BlockStore } from '../../src/store/types.js'
import { recordsSince, type WriterInput } from '../../src/merge/index.js'

export const cred = { uid: 1000, gid: 1000 }
export const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

/** A fixed 32-byte key per label (only its bytes matter here: records are not signed). */
export const keyOf = (label: string): Uint8Array => sha256(enc(`reef merge test writer ${label}`))

export interface Writer { key: Uint8Array, fs: ReefFS, log: WriterLog, label: string, dir: string }

export interface Writers {
  store: BlockStore
  base?: VersionInfo
  /** A writer whose file system starts at `at` (default: the base). */
  writer: (label: string, at?: VersionInfo, key?: Uint8Array) => Promise<Writer>
  /** The same writer (key and log) carrying on from version `v` (a merge it adopts). */
  adopt: (w: Writer, v: VersionInfo) => Promise<Writer>
  /** Folds the writer and returns its merge input: head version and records since the base. */
  input: (w: Writer, base?: VersionInfo) => Promise<WriterInput>
}

/**
 * `lineage` (default on, as in a view mount): content records say what content they changed;
 * off, they are as records made before that (the merge's older rule applies to them).
 */
export async function writers (t: Tap.Test, build?: (w: Writer) => Promise<void>, store: BlockStore = new MemoryBlockStore(), lineage = true): Promise<Writers> {
  const dirs: string[] = []
  const logs: WriterLog[] = []
  t.teardown(() => {
    for (const l of logs) l.close()
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
  })
  let clock = 1_765_000_000_000_000_000n
  const writer = async (label: string, at?: VersionInfo, own?: Uint8Array): Promise<Writer> => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-merge-'))
    dirs.push(dir)
    const key = own ?? keyOf(label)
    const log = new WriterLog(dir, key).open()
    logs.push(log)
    const rfs = await ReefFS.open({ store, log, version: at ?? out.base, author: key, now: () => (clock += 1_000_000n), lineage })
    return { key, fs: rfs, log, label, dir }
  }
  const out: Writers = {
    store,
    writer,
    adopt: async (w, v) => ({ ...w, fs: await ReefFS.open({ store, log: w.log, version: v, author: w.key, now: () => (clock += 1_000_000n), lineage }) }),
    input: async (w, base) => {
      const b = base ?? out.base
      const v = await w.fs.fold(undefined, true) as VersionInfo
      return { key: w.key, head: v.vguid, records: await recordsSince(store, v.root.log, w.key, b?.root.vv?.[hex(w.key)] ?? 0) }
    }
  }
  if (build !== undefined) {
    const s = await writer('setup', undefined)
    await build(s)
    out.base = await s.fs.fold('base', true)
  }
  return out
}

/** A tree as text: every path with its kind, mode and content (files), sorted. */
export async function snapshot (rfs: ReefFS): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  const walk = async (ino: number, p: string): Promise<void> => {
    for (const e of await rfs.readdir(rfs.node(ino))) {
      const n = rfs.node(e.ino)
      const q = `${p}/${Buffer.from(e.name).toString()}`
      const mode = (n.mode & 0o7777).toString(8)
      if (n.kind === 'file') out[q] = `file ${mode} ${Buffer.from(await rfs.read(n, 0, n.size)).toString()}`
      else if (n.kind === 'dir') {
        out[q] = `dir ${mode}`
        await walk(n.ino, q)
      } else out[q] = `${n.kind} ${mode}`
    }
  }
  await walk(rfs.root.ino, '')
  return out
}

/** The merged version opened read-only. */
export async function openVersion (store: BlockStore, v: VersionInfo): Promise<ReefFS> {
  return await ReefFS.open({ store, version: v })
}

/** Every permutation of a small array. */
export function permutations<T> (a: T[]): T[][] {
  if (a.length <= 1) return [a]
  return a.flatMap((x, i) => permutations([...a.slice(0, i), ...a.slice(i + 1)]).map(p => [x, ...p]))
}
