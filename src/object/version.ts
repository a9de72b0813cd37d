/**
 * Version roots (Pond's root block): one immutable block per version of a file system. Its
 * BGUID is the VGUID.
 *   { t: 'v', root: dirCID, links?: CID, parents: [VGUID...], seq, time, author, msg?, log?, ino }
 * `links` is the table of multiply-linked inodes (keyed by 8-byte big-endian ino, stored as a
 * directory tree); `log` is the last writer-log record folded into this version, stored with it
 * (its `prev` chain leads back through every earlier record); `ino` is the next free inode number.
 */
import type { CID } from 'multiformats/cid'
import { type Block, DAG_CBOR } from '../block/index.js'
import { ReefError } from '../errors.js'
import { decodeCbor, encodeBlock, field } from './codec.js'
import { decodeEntry, encodeEntry, type Entry } from './dir.js'

export interface VersionRoot {
  root: CID
  /** Attributes of the root directory (its entry has an empty name). */
  rootAttrs?: Entry
  /** Writer version vector after the folded log record. */
  vv?: Record<string, number>
  links?: CID
  parents: CID[]
  seq: bigint
  time: number
  author: Uint8Array
  message?: string
  log?: CID
  nextIno: number
}

export function encodeVersion (v: VersionRoot): Block {
  const o: Record<string, unknown> = {
    t: 'v', root: v.root, parents: v.parents, seq: v.seq, time: v.time, author: v.author, ino: v.nextIno
  }
  if (v.links !== undefined) o.links = v.links
  if (v.rootAttrs !== undefined) o.ra = encodeEntry(v.rootAttrs)
  if (v.vv !== undefined) o.vv = v.vv
  if (v.message !== undefined) o.msg = v.message
  if (v.log !== undefined) o.log = v.log
  return encodeBlock(o)
}

/** ed25519 public keys are 32 bytes. */
const AUTHOR_LENGTH = 32

export function decodeVersion (bytes: Uint8Array): VersionRoot {
  const what = 'version root'
  const o = decodeCbor(bytes, what)
  if (o.t !== 'v') throw ReefError.badEncoding(`${what}: wrong type tag`)
  // Every link of a version root names a structured block (a directory, a version, a record).
  const link = (obj: Record<string, unknown>, key: string): CID => {
    const c = field(obj, key, what).cid()
    if (c.code !== DAG_CBOR) throw ReefError.badEncoding(`${what}: ${key} does not link a dag-cbor block`)
    return c
  }
  const v: VersionRoot = {
    root: link(o, 'root'),
    parents: field(o, 'parents', what).array().map(p => link({ parents: p }, 'parents')),
    seq: field(o, 'seq', what).bigint(),
    time: field(o, 'time', what).int(),
    author: field(o, 'author', what).bytes(),
    nextIno: field(o, 'ino', what).int()
  }
  if (v.author.length !== AUTHOR_LENGTH) throw ReefError.badEncoding(`${what}: author is ${v.author.length} bytes, not an ed25519 public key`)
  if (o.links !== undefined) v.links = link(o, 'links')
  if (o.ra !== undefined) v.rootAttrs = decodeEntry(o.ra)
  if (o.vv !== undefined) {
    const vv: Record<string, number> = {}
    for (const [w, n] of Object.entries(field(o, 'vv', what).map())) vv[w] = field({ n }, 'n', what).int()
    v.vv = vv
  }
  if (o.msg !== undefined) v.message = field(o, 'msg', what).str()
  if (o.log !== undefined) v.log = link(o, 'log')
  return v
}

/** What kind of reef object a block holds, judged from its type tag without a full decode. */
export function objectKind (cid: CID, bytes: Uint8Array): 'file' | 'dir' | 'version' | 'log' | 'entry' | 'raw' {
  if (cid.code !== DAG_CBOR) return 'raw'
  try {
    const o = decodeCbor(bytes, 'object')
    if (o.t === 'f') return 'file'
    if (o.t === 'd') return 'dir'
    if (o.t === 'v') return 'version'
    if (o.t === 'r') return 'log'
    if (o.t === 'e') return 'entry'
  } catch {}
  return 'raw'
}
