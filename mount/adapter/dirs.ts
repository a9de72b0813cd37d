/**
 * Directories: opendir, readdir and readdirplus, releasedir, fsyncdir, statfs. A listing is
 * taken once per open directory (and again at offset 0, rewinddir), so the kernel's pages of a
 * big directory each cost a slice, not a new listing.
 */
import os from 'node:os'
import { promises as fsp } from 'node:fs'
import { ReefError } from '../../src/errors.js'
import { ROOT_INO } from '../../src/fs/inode.js'
import type { DirEntryPlus, LowLevelOps, StatFs } from '../fuse3.js'
import type { Adapter } from './context.js'
import { unconvertible } from './entries.js'
import { isReserved, type Target } from './tree.js'

const posix = ReefError.posix

/** `name` as bytes, or as the nameKey string the fs core's directory map holds (kept by Tree.counted without a copy). */
interface Listed { t: Target, name: Uint8Array | string }

type DirOps = Pick<LowLevelOps, 'opendir' | 'releasedir' | 'fsyncdir' | 'statfs' | 'counted'> & {
  readdir: (ino: number, fh: number, ctx: unknown, off: number) => Promise<Array<{ name: string | Uint8Array, ino: number, mode: number }>>
  readdirplus: (ino: number, fh: number, ctx: unknown, off: number) => Promise<DirEntryPlus[]>
}

export function dirOps (a: Adapter): DirOps {
  const { tree } = a
  /** Per open directory: its listing, and the target of each inode number in it. */
  const listings = new Map<number, { entries: DirEntryPlus[], targets: Map<number, Listed> } | undefined>()
  let nextFh = 1

  async function list (ino: number): Promise<{ entries: DirEntryPlus[], targets: Map<number, Listed> }> {
    const targets = new Map<number, Listed>()
    const t = await tree.target(ino)
    if (a.faultAt('readdir', ino, 'run')) throw a.injected('readdir', ino)
    const plus = (name: string | Uint8Array, c: Target, key?: string): DirEntryPlus => {
      targets.set(tree.inoOf(c), { t: c, name: key ?? (typeof name === 'string' ? Buffer.from(name) : name) })
      return { name, attr: tree.attr(c), attrTimeout: tree.attrTimeout(c), entryTimeout: tree.entryTimeout(c) }
    }
    const out: DirEntryPlus[] = [plus('.', t)]
    if (t.kind === 'virtual') {
      out.push(plus('..', t.which === 'reef' ? { kind: 'node', fs: a.fs, node: a.fs.root, ro: true } : { kind: 'virtual', which: 'reef' }))
      if (t.which === 'reef') {
        out.push(plus('versions', { kind: 'virtual', which: 'versions' }))
      } else {
        for (const seq of await a.o.versions.list()) {
          const fs = await a.o.versions.open(seq)
          out.push(plus(String(seq), { kind: 'node', fs, node: fs.root, ro: true, seq }))
        }
      }
      return { entries: out, targets }
    }
    if (t.node.kind !== 'dir') throw posix('ENOTDIR', tree.nameOf(ino))
    out.push(plus('..', t))
    const top = t.seq === undefined && t.node.ino === ROOT_INO
    if (top) out.push(plus('.reef', { kind: 'virtual', which: 'reef' }))
    for (const e of await t.fs.readdir(t.node)) {
      if (top && isReserved(ROOT_INO, e.name)) continue
      out.push(plus(e.name, { ...t, node: t.fs.node(e.ino) }, e.key))
    }
    if (a.faultAt('readdir', ino, 'reply')) {
      const last = out[out.length - 1]
      out[out.length - 1] = { ...last, attr: unconvertible({ ...last.attr, mode: Symbol('REEF_TEST_OP_FAULT') as unknown as number }) }
    }
    return { entries: out, targets }
  }

  async function listing (ino: number, fh: number, off: number): Promise<DirEntryPlus[]> {
    let l = listings.get(fh)
    if (l === undefined || off === 0) {
      l = await list(ino)
      if (listings.has(fh)) listings.set(fh, l)
    }
    return l.entries
  }

  return {
    opendir: async (ino: number) => {
      const t = await tree.target(ino)
      if (t.kind === 'node' && t.node.kind !== 'dir') throw posix('ENOTDIR', tree.nameOf(ino))
      const fh = nextFh++
      listings.set(fh, undefined)
      return { fh }
    },

    readdir: async (ino: number, fh: number, _ctx: unknown, off: number) =>
      (await listing(ino, fh, off)).map(e => ({ name: e.name, ino: e.attr.ino, mode: e.attr.mode })),

    readdirplus: async (ino: number, fh: number, _ctx: unknown, off: number) => await listing(ino, fh, off),

    // READDIRPLUS entries the kernel was sent count as lookups; they come from open listings.
    counted: (inos: number[]) => {
      for (const ino of inos) {
        for (const l of listings.values()) {
          const e = l?.targets.get(ino)
          if (e !== undefined) {
            tree.counted(e.t, e.name)
            break
          }
        }
      }
    },

    releasedir: async (_ino: number, fh: number) => { listings.delete(fh) },

    fsyncdir: async () => {
      a.fs.sync()
      a.o.onFsync?.()
    },

    statfs: async (): Promise<StatFs> => {
      const s = await fsp.statfs(a.o.statfsPath ?? os.tmpdir())
      const used = a.fs.inodes.size
      return { bsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: 1e9, ffree: 1e9 - used, namemax: 255 }
    }
  }
}
