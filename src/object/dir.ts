/**
 * Directories as sorted entries in a content-defined B-tree, so a directory of 100,000 entries
 * is a few hundred small blocks, a lookup reads one path of them, and adding one entry
 * changes only its leaf and the path to the root.
 *   leaf:     { t: 'd', h: 0, e: [entry, ...] }            entries sorted by name bytes
 *   interior: { t: 'd', h: n, l: [[firstName, cid, count], ...] }
 * Names are bytes (any legal POSIX name, not only UTF-8).
 */
import type { CID } from 'multiformats/cid'
import type { Block } from '../block/index.js'
import { ReefError } from '../errors.js'
import type { BlockGetter } from '../store/types.js'
import { sha256 } from '../crypto/hash.js'
import { decodeCbor, encodeBlock, field } from './codec.js'
import { checkEntries, readBack } from './readback.js'
import { group } from './tree.js'

/**
 * Entry kinds. Their index is the wire value, so new kinds are only ever appended (versions
 * written before FIFOs, sockets and devices existed use 0-2 and read as they did).
 */
export type Kind = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chr' | 'blk'
export const KINDS: readonly Kind[] = ['file', 'dir', 'symlink', 'fifo', 'socket', 'chr', 'blk']
/** Kinds whose entry is all there is: the kernel handles their data (FIFOs, sockets) or the device does. */
export const SPECIAL_KINDS: ReadonlySet<Kind> = new Set(['fifo', 'socket', 'chr', 'blk'])
export const isDevice = (k: Kind): boolean => k === 'chr' || k === 'blk'

export const NAME_MAX = 255

export interface Entry {
  name: Uint8Array
  kind: Kind
  /** Permission bits (07777); the kind gives the file type. */
  mode: number
  uid: number
  gid: number
  /** Bytes for files, target length for symlinks, entry count for directories, 0 for special files. */
  size: number
  /** Nanoseconds since the epoch. */
  mtime: bigint
  atime: bigint
  ctime: bigint
  /** File tree root (files) or directory root (dirs). */
  cid?: CID
  /** Symlink target. */
  target?: Uint8Array
  /** Device number (Linux's encoding, as in st_rdev) of a character or block device. */
  rdev?: number
  /** Stable inode number, assigned by the file system that wrote the entry. */
  ino?: number
  /** Link count when > 1: then the version's link table holds the authoritative inode. */
  nlink?: number
  /** Extended attributes (user.* namespace), name -> value. */
  xattrs?: Record<string, Uint8Array>
  /** Once hard-linked, a file's inode lives in the version's link table; this entry only names it. */
  linked?: boolean
  /**
   * Shared file systems (issue 12): the log record (recordId, 40 bytes) whose change was this
   * file's content's last, so that a writer's next record can say what content it changed.
   */
  last?: Uint8Array
}

export function compareBytes (a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b)
}

export function checkName (name: Uint8Array): void {
  if (name.length === 0) throw ReefError.posix('EINVAL', 'empty name')
  if (name.length > NAME_MAX) throw ReefError.posix('ENAMETOOLONG', `name of ${name.length} bytes exceeds ${NAME_MAX}`)
  for (const c of name) if (c === 0x2f || c === 0) throw ReefError.posix('EINVAL', 'name contains "/" or NUL')
  if ((name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e)) {
    throw ReefError.posix('EINVAL', 'name is "." or ".."')
  }
}

/**
 * Test hook, REEF_TEST_ENCODE_FAULT=NAME: an entry named NAME is encoded wrong (its mode's
 * lowest bit flipped, a symlink's target left out), so tests can show that the fold's read-back
 * (readback.ts) refuses the block. Read once, at load.
 */
export const encodeFault: { name?: string } = { name: process.env.REEF_TEST_ENCODE_FAULT !== '' ? process.env.REEF_TEST_ENCODE_FAULT : undefined }

export function encodeEntry (e: Entry): Record<string, unknown> {
  const o: Record<string, unknown> = {
    n: e.name, k: KINDS.indexOf(e.kind), m: e.mode, u: e.uid, g: e.gid, s: e.size,
    mt: e.mtime, at: e.atime, ct: e.ctime
  }
  if (e.cid !== undefined) o.c = e.cid
  if (e.target !== undefined) o.y = e.target
  if (e.rdev !== undefined) o.rd = e.rdev
  if (e.ino !== undefined) o.i = e.ino
  if (e.nlink !== undefined && e.nlink > 1) o.nl = e.nlink
  if (e.xattrs !== undefined && Object.keys(e.xattrs).length > 0) o.x = e.xattrs
  if (e.linked === true) o.hl = true
  if (e.last !== undefined) o.lr = e.last
  if (encodeFault.name !== undefined && Buffer.from(e.name).toString() === encodeFault.name) {
    o.m = e.mode ^ 1
    delete o.y
  }
  return o
}

function sint (o: Record<string, unknown>, key: string, what: string): bigint {
  const v = o[key]
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v)
  if (typeof v === 'bigint') return v
  throw ReefError.badEncoding(`${what}: field ${key} is not an integer`)
}

export function decodeEntry (raw: unknown): Entry {
  const what = 'directory entry'
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw ReefError.badEncoding(what)
  const o = raw as Record<string, unknown>
  const k = field(o, 'k', what).int()
  if (k >= KINDS.length) throw ReefError.badEncoding(`${what}: unknown kind ${k}`)
  const e: Entry = {
    name: field(o, 'n', what).bytes(),
    kind: KINDS[k],
    mode: field(o, 'm', what).int() & 0o7777,
    uid: field(o, 'u', what).int(),
    gid: field(o, 'g', what).int(),
    size: field(o, 's', what).int(),
    mtime: sint(o, 'mt', what),
    atime: sint(o, 'at', what),
    ctime: sint(o, 'ct', what)
  }
  if (o.c !== undefined) e.cid = field(o, 'c', what).cid()
  if (o.y !== undefined) e.target = field(o, 'y', what).bytes()
  if (o.i !== undefined) e.ino = field(o, 'i', what).int()
  if (o.nl !== undefined) e.nlink = field(o, 'nl', what).int()
  if (o.x !== undefined) {
    const x = field(o, 'x', what).map()
    const xattrs: Record<string, Uint8Array> = {}
    for (const [name, v] of Object.entries(x)) {
      if (!(v instanceof Uint8Array)) throw ReefError.badEncoding(`${what}: xattr ${name} is not bytes`)
      xattrs[name] = v
    }
    e.xattrs = xattrs
  }
  if (o.rd !== undefined) e.rdev = field(o, 'rd', what).int()
  if (o.hl === true) e.linked = true
  if (o.lr !== undefined) {
    e.last = field(o, 'lr', what).bytes()
    if (e.last.length !== 40) throw ReefError.badEncoding(`${what}: last record id of ${e.last.length} bytes`)
  }
  if (e.linked === true) {
    // A link-table reference names its inode only: content, target and device number live in
    // the table entry, whatever the kind (a hard-linked symlink has no target here).
    if (e.ino === undefined) throw ReefError.badEncoding(`${what}: link-table reference without an inode number`)
    return e
  }
  if (e.kind === 'symlink' && e.target === undefined) throw ReefError.badEncoding(`${what}: symlink without target`)
  if ((e.kind === 'file' || e.kind === 'dir') && e.cid === undefined) throw ReefError.badEncoding(`${what}: ${e.kind} without content link`)
  if (isDevice(e.kind) && e.rdev === undefined) throw ReefError.badEncoding(`${what}: ${e.kind} device without a device number`)
  if (!isDevice(e.kind) && e.rdev !== undefined) throw ReefError.badEncoding(`${what}: device number on a ${e.kind}`)
  return e
}

/** Upper estimate of an entry's dag-cbor size: fixed fields, plus its variable-length parts. */
function entrySize (e: Entry): number {
  let n = 128 + e.name.length + (e.target?.length ?? 0) + (e.last !== undefined ? 48 : 0)
  for (const [k, v] of Object.entries(e.xattrs ?? {})) n += 16 + k.length + v.length
  return n
}

export interface DirLink { first: Uint8Array, cid: CID, count: number }

export interface DirNode {
  height: number
  entries?: Entry[]
  links?: DirLink[]
}

export function decodeDirNode (bytes: Uint8Array): DirNode {
  const what = 'directory node'
  const o = decodeCbor(bytes, what)
  if (o.t !== 'd') throw ReefError.badEncoding(`${what}: wrong type tag`)
  const height = field(o, 'h', what).int()
  if (height === 0) return { height, entries: field(o, 'e', what).array().map(decodeEntry) }
  const links = field(o, 'l', what).array().map(raw => {
    if (!Array.isArray(raw) || raw.length !== 3) throw ReefError.badEncoding(`${what}: bad link`)
    const p = { f: raw[0], c: raw[1], n: raw[2] }
    return { first: field(p, 'f', what).bytes(), cid: field(p, 'c', what).cid(), count: field(p, 'n', what).int() }
  })
  return { height, links }
}

/**
 * Builds a directory from entries (any order; duplicate names are an error). Emits every node,
 * each read back first: a node that does not decode to what it was built from is BAD_ENCODING
 * (see readback.ts), and nothing is emitted after it.
 */
export function buildDir (entries: Entry[], emit: (b: Block) => void): { cid: CID, count: number } {
  const sorted = [...entries].sort((a, b) => compareBytes(a.name, b.name))
  for (let i = 1; i < sorted.length; i++) {
    if (compareBytes(sorted[i - 1].name, sorted[i].name) === 0) {
      throw ReefError.posix('EEXIST', `duplicate directory entry ${Buffer.from(sorted[i].name).toString()}`)
    }
  }
  const leafGroups = sorted.length === 0 ? [[]] : group(sorted, e => sha256(e.name), entrySize)
  let level: DirLink[] = leafGroups.map(g => {
    const b = encodeBlock({ t: 'd', h: 0, e: g.map(encodeEntry) })
    checkEntries('directory node', b.cid, g, readBack('directory node', b.cid, b.bytes, decodeDirNode).entries ?? [])
    emit(b)
    return { first: g.length > 0 ? g[0].name : new Uint8Array(0), cid: b.cid, count: g.length }
  })
  let height = 1
  while (level.length > 1) {
    level = group(level, l => l.cid.multihash.digest).map(g => {
      const b = encodeBlock({ t: 'd', h: height, l: g.map(l => [l.first, l.cid, l.count]) })
      const got = readBack('directory node', b.cid, b.bytes, decodeDirNode).links ?? []
      if (got.length !== g.length || g.some((l, i) => compareBytes(l.first, got[i].first) !== 0 || !l.cid.equals(got[i].cid) || l.count !== got[i].count)) {
        throw new ReefError('BAD_ENCODING', `directory node ${b.cid.toString()} does not read back: its links differ`)
      }
      emit(b)
      return { first: g[0].first, cid: b.cid, count: g.reduce((a, l) => a + l.count, 0) }
    })
    height++
  }
  return { cid: level[0].cid, count: level[0].count }
}

/** Reads a directory tree lazily: lookup touches one path, list streams the leaves in order. */
export class DirReader {
  /** Decoded interior nodes: every lookup walks the same few of them (leaves are not cached). */
  private readonly interior = new Map<string, DirNode>()

  constructor (readonly root: CID, private readonly store: BlockGetter) {}

  private async node (cid: CID): Promise<DirNode> {
    const key = cid.toString()
    const hit = this.interior.get(key)
    if (hit !== undefined) return hit
    const n = decodeDirNode(await this.store.get(cid))
    if (n.height > 0) {
      if (this.interior.size >= 256) this.interior.clear()
      this.interior.set(key, n)
    }
    return n
  }

  async lookup (name: Uint8Array): Promise<Entry | undefined> {
    let n = await this.node(this.root)
    for (let depth = 0; n.height > 0; depth++) {
      if (depth > 32) throw ReefError.badEncoding('directory tree too deep')
      const links = n.links ?? []
      let lo = 0
      let hi = links.length - 1
      let pick = 0
      while (lo <= hi) {
        const mid = (lo + hi) >> 1
        if (compareBytes(links[mid].first, name) <= 0) { pick = mid; lo = mid + 1 } else hi = mid - 1
      }
      if (links.length === 0) return undefined
      n = await this.node(links[pick].cid)
    }
    const es = n.entries ?? []
    let lo = 0
    let hi = es.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >> 1
      const c = compareBytes(es[mid].name, name)
      if (c === 0) return es[mid]
      if (c < 0) lo = mid + 1
      else hi = mid - 1
    }
    return undefined
  }

  async * entries (): AsyncGenerator<Entry> {
    const walk = async function * (this: DirReader, cid: CID, depth: number): AsyncGenerator<Entry> {
      if (depth > 32) throw ReefError.badEncoding('directory tree too deep')
      const n = await this.node(cid)
      if (n.height === 0) {
        yield * (n.entries ?? [])
        return
      }
      for (const l of n.links ?? []) yield * walk.call(this, l.cid, depth + 1)
    }
    yield * walk.call(this, this.root, 0)
  }

  async list (): Promise<Entry[]> {
    const out: Entry[] = []
    for await (const e of this.entries()) out.push(e)
    return out
  }

  /** Every block of this directory tree (not of its children). */
  async blocks (): Promise<CID[]> {
    const out: CID[] = []
    const walk = async (cid: CID): Promise<void> => {
      out.push(cid)
      const n = await this.node(cid)
      for (const l of n.links ?? []) await walk(l.cid)
    }
    await walk(this.root)
    return out
  }
}

/** A single named entry as its own block: what `reef put` prints, so the top item keeps its attributes. */
export function encodeEntryBlock (e: Entry): Block {
  return encodeBlock({ t: 'e', e: encodeEntry(e) })
}

export function decodeEntryBlock (bytes: Uint8Array): Entry {
  const o = decodeCbor(bytes, 'entry block')
  if (o.t !== 'e') throw ReefError.badEncoding('entry block: wrong type tag')
  return decodeEntry(o.e)
}

/** Key of an inode in a version's link table (a directory tree keyed by 8-byte big-endian ino). */
export function linkTableKey (ino: number): Uint8Array {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(ino))
  return b
}
