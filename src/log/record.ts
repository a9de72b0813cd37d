/**
 * Writer-log records (Ivy): one block per file-system operation, appended by one writer.
 *   { t: 'r', w: writer public key, n: counter, vv: { writerHex: counter }, p?: prev record,
 *     tm: ms, op: name, a: { ...arguments } }
 * Records name files by inode number. `vv` is the writer's version vector when it wrote the
 * record: with one writer it is { self: n }; merging several writers' logs (a view) orders
 * records by it and flags concurrent updates. Records are blocks: the log frame's checksum is
 * the record's BGUID digest, and a fold stores every record (and the raw data frames that
 * writes name by `dc`) in the block store, so records replicate and verify like any block.
 */
import { CID } from 'multiformats/cid'
import * as dagCbor from '@ipld/dag-cbor'
import { type Block, DAG_CBOR, makeBlock } from '../block/index.js'
import { ReefError } from '../errors.js'
import { decodeCbor, field } from '../object/codec.js'
import { type Kind, KINDS } from '../object/dir.js'

export type Op =
  | { op: 'create', parent: number, name: Uint8Array, ino: number, mode: number, uid: number, gid: number, time: bigint }
  | { op: 'mkdir', parent: number, name: Uint8Array, ino: number, mode: number, uid: number, gid: number, time: bigint }
  | { op: 'symlink', parent: number, name: Uint8Array, ino: number, target: Uint8Array, uid: number, gid: number, time: bigint }
  /** A FIFO, socket or device node (kind), rdev 0 for the first two. */
  | { op: 'mknod', parent: number, name: Uint8Array, ino: number, kind: Kind, mode: number, rdev: number, uid: number, gid: number, time: bigint }
  /**
   * Content changes. `after` (view writers, issue 12): the record whose change was the file's
   * last when its writer made this one (recordId), or empty for the file as created or as an
   * older version left it: the content the writer changed, so a merge can put the change on
   * exactly that content (src/merge/apply.ts). Absent in records made before it.
   */
  | { op: 'write', ino: number, offset: number, data: Uint8Array, time: bigint, dataCid?: CID, after?: Uint8Array }
  | { op: 'truncate', ino: number, size: number, time: bigint, after?: Uint8Array }
  /** fallocate(2): mode is Linux's FALLOC_FL_* bits. */
  | { op: 'fallocate', ino: number, mode: number, offset: number, length: number, time: bigint, after?: Uint8Array }
  /**
   * `ino` (absent in records made before issue 12): the inode the writer removed, so a merge
   * knows what the writer meant even when another writer changed the name concurrently.
   */
  | { op: 'unlink', parent: number, name: Uint8Array, time: bigint, ino?: number }
  | { op: 'rmdir', parent: number, name: Uint8Array, time: bigint, ino?: number }
  /**
   * exchange: renameat2's RENAME_EXCHANGE, both names swap their inodes atomically. `ino` is the
   * inode moved and `target` the one it replaced (or swapped with), for the merge, as for unlink.
   */
  | { op: 'rename', parent: number, name: Uint8Array, newParent: number, newName: Uint8Array, time: bigint, exchange?: boolean, ino?: number, target?: number }
  | { op: 'link', ino: number, parent: number, name: Uint8Array, time: bigint }
  | { op: 'setattr', ino: number, time: bigint, mode?: number, uid?: number, gid?: number, atime?: bigint, mtime?: bigint, xattrName?: string, xattrValue?: Uint8Array, xattrRemove?: boolean }
  | { op: 'attach', parent: number, name: Uint8Array, ino: number, kind: Kind, cid: CID, time: bigint }

export type OpName = Op['op']

type FieldType = 'int' | 'time' | 'bytes' | 'str' | 'cid' | 'kind' | 'bool'
// [op field, wire key, type, optional]
const SCHEMA: Record<OpName, Array<[string, string, FieldType, boolean?]>> = {
  create: [['parent', 'p', 'int'], ['name', 'n', 'bytes'], ['ino', 'i', 'int'], ['mode', 'm', 'int'], ['uid', 'u', 'int'], ['gid', 'g', 'int'], ['time', 't', 'time']],
  mkdir: [['parent', 'p', 'int'], ['name', 'n', 'bytes'], ['ino', 'i', 'int'], ['mode', 'm', 'int'], ['uid', 'u', 'int'], ['gid', 'g', 'int'], ['time', 't', 'time']],
  symlink: [['parent', 'p', 'int'], ['name', 'n', 'bytes'], ['ino', 'i', 'int'], ['target', 'y', 'bytes'], ['uid', 'u', 'int'], ['gid', 'g', 'int'], ['time', 't', 'time']],
  mknod: [['parent', 'p', 'int'], ['name', 'n', 'bytes'], ['ino', 'i', 'int'], ['kind', 'k', 'kind'], ['mode', 'm', 'int'], ['rdev', 'rd', 'int'], ['uid', 'u', 'int'], ['gid', 'g', 'int'], ['time', 't', 'time']],
  // A write carries its data inline (d) or names it (dc: a raw block in its own log frame).
  write: [['ino', 'i', 'int'], ['offset', 'o', 'int'], ['data', 'd', 'bytes', true], ['dataCid', 'dc', 'cid', true], ['time', 't', 'time'], ['after', 'af', 'bytes', true]],
  truncate: [['ino', 'i', 'int'], ['size', 's', 'int'], ['time', 't', 'time'], ['after', 'af', 'bytes', true]],
  fallocate: [['ino', 'i', 'int'], ['mode', 'm', 'int'], ['offset', 'o', 'int'], ['length', 'l', 'int'], ['time', 't', 'time'], ['after', 'af', 'bytes', true]],
  unlink: [['parent', 'p', 'int'], ['name', 'n', 'bytes'], ['time', 't', 'time'], ['ino', 'i', 'int', true]],
  rmdir: [['parent', 'p', 'int'], ['name', 'n', 'bytes'], ['time', 't', 'time'], ['ino', 'i', 'int', true]],
  rename: [['parent', 'p', 'int'], ['name', 'n', 'bytes'], ['newParent', 'p2', 'int'], ['newName', 'n2', 'bytes'], ['time', 't', 'time'], ['exchange', 'x', 'bool', true],
    ['ino', 'i', 'int', true], ['target', 'ti', 'int', true]],
  link: [['ino', 'i', 'int'], ['parent', 'p', 'int'], ['name', 'n', 'bytes'], ['time', 't', 'time']],
  setattr: [['ino', 'i', 'int'], ['time', 't', 'time'], ['mode', 'm', 'int', true], ['uid', 'u', 'int', true], ['gid', 'g', 'int', true],
    ['atime', 'at', 'time', true], ['mtime', 'mt', 'time', true], ['xattrName', 'xn', 'str', true], ['xattrValue', 'xv', 'bytes', true], ['xattrRemove', 'xr', 'bool', true]],
  attach: [['parent', 'p', 'int'], ['name', 'n', 'bytes'], ['ino', 'i', 'int'], ['kind', 'k', 'kind'], ['cid', 'c', 'cid'], ['time', 't', 'time']]
}

/** Content ops: the ones that carry `after`. */
export type ContentOp = Extract<Op, { op: 'write' | 'truncate' | 'fallocate' }>
export const isContentOp = (op: Op): op is ContentOp => op.op === 'write' || op.op === 'truncate' || op.op === 'fallocate'

/** A record's id as content lineage names it (`after`, an entry's `last`): writer key, then n as 8 bytes big-endian. */
export function recordId (writer: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(40)
  out.set(writer, 0)
  new DataView(out.buffer).setBigUint64(32, BigInt(n))
  return out
}

/** A record id (or, with `empty`, the empty "no record" form) well formed. */
export function isRecordId (b: Uint8Array, empty = false): boolean {
  return b.length === 40 || (empty && b.length === 0)
}

/** A record id as a map key: `<writer hex>:<n>`, '' for none. */
export function recordIdKey (b: Uint8Array | undefined): string {
  if (b === undefined || b.length === 0) return ''
  return `${Buffer.from(b.subarray(0, 32)).toString('hex')}:${new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(32)}`
}

export interface LogRecord {
  writer: Uint8Array
  n: number
  vv: Record<string, number>
  prev?: CID
  time: number
  op: Op
}

export function encodeRecord (r: LogRecord): Block {
  return makeBlock(encodeRecordBytes(r), DAG_CBOR)
}

/** The record's dag-cbor bytes (no hashing: the log hashes its frames itself). */
function encodeRecordBytes (r: LogRecord): Uint8Array {
  const schema = SCHEMA[r.op.op]
  const a: Record<string, unknown> = {}
  const opv = r.op as unknown as Record<string, unknown>
  const named = r.op.op === 'write' && r.op.dataCid !== undefined
  if (r.op.op === 'write' && !named && r.op.data === undefined) throw new ReefError('BAD_INPUT', 'log record write lacks data')
  for (const [k, wire, , optional] of schema) {
    if (named && k === 'data') continue
    const v = opv[k]
    if (v === undefined) {
      if (optional !== true) throw new ReefError('BAD_INPUT', `log record ${r.op.op} lacks ${k}`)
      continue
    }
    a[wire] = v
  }
  const o: Record<string, unknown> = { t: 'r', w: r.writer, n: r.n, vv: r.vv, tm: r.time, op: r.op.op, a }
  if (r.prev !== undefined) o.p = r.prev
  return dagCbor.encode(o)
}

const MARKER = Uint8Array.from(Buffer.from('7265656620646174612068657265210a', 'hex')) // 16 bytes, never real data in practice

function bytesHeader (len: number): Uint8Array {
  if (len < 24) return Uint8Array.of(0x40 + len)
  if (len < 256) return Uint8Array.of(0x58, len)
  if (len < 65536) return Uint8Array.of(0x59, len >> 8, len & 0xff)
  return Uint8Array.of(0x5a, (len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff)
}

/**
 * The encoding of a record as parts whose concatenation is exactly encodeRecord(r).bytes, with
 * a write's data as its own part: the log hashes and writes the parts without first copying the
 * data into one buffer (dag-cbor orders map keys by the keys alone, so the data's position does
 * not depend on its value, and a byte string's header depends only on its length).
 */
export function encodeRecordParts (r: LogRecord): Uint8Array[] {
  if (r.op.op !== 'write' || r.op.dataCid !== undefined || r.op.data.length < 1024) return [encodeRecordBytes(r)]
  const data = r.op.data
  const shell = encodeRecordBytes({ ...r, op: { ...r.op, data: MARKER } })
  let at = -1
  for (let i = 0; i + MARKER.length < shell.length && at < 0; i++) {
    if (shell[i] === 0x50 && Buffer.compare(shell.subarray(i + 1, i + 1 + MARKER.length), MARKER) === 0) at = i
  }
  if (at < 0) return [encodeRecordBytes(r)]
  return [shell.subarray(0, at), bytesHeader(data.length), data, shell.subarray(at + 1 + MARKER.length)]
}

export function decodeRecord (bytes: Uint8Array): LogRecord {
  const what = 'log record'
  const o = decodeCbor(bytes, what)
  if (o.t !== 'r') throw ReefError.badEncoding(`${what}: wrong type tag`)
  const name = field(o, 'op', what).str() as OpName
  // Own keys only: "toString" or "__proto__" would otherwise find Object.prototype members.
  if (!Object.hasOwn(SCHEMA, name)) throw ReefError.badEncoding(`${what}: unknown op ${name}`)
  const schema = SCHEMA[name]
  const a = field(o, 'a', what).map()
  const op: Record<string, unknown> = { op: name }
  for (const [k, wire, type, optional] of schema) {
    if (a[wire] === undefined) {
      if (optional === true) continue
      throw ReefError.badEncoding(`${what}: ${name} lacks ${k}`)
    }
    const f = field(a, wire, what)
    switch (type) {
      case 'int': op[k] = f.int(); break
      case 'time': {
        const v = a[wire]
        if (typeof v === 'bigint') op[k] = v
        else if (typeof v === 'number' && Number.isSafeInteger(v)) op[k] = BigInt(v)
        else throw ReefError.badEncoding(`${what}: ${k} is not a time`)
        break
      }
      case 'bytes': op[k] = f.bytes(); break
      case 'str': op[k] = f.str(); break
      case 'cid': op[k] = f.cid(); break
      case 'bool': if (typeof a[wire] !== 'boolean') throw ReefError.badEncoding(`${what}: ${k} is not a bool`); op[k] = a[wire]; break
      case 'kind': {
        const s = f.str()
        if (!(KINDS as readonly string[]).includes(s)) throw ReefError.badEncoding(`${what}: bad kind`)
        op[k] = s
        break
      }
    }
  }
  if (op.after !== undefined && !isRecordId(op.after as Uint8Array, true)) throw ReefError.badEncoding(`${what}: ${name}'s after is not a record id`)
  if (name === 'write') {
    if ((op.data === undefined) === (op.dataCid === undefined)) throw ReefError.badEncoding(`${what}: a write needs its data inline or named, not both`)
    // Named data is attached by the log from its own frame.
    if (op.data === undefined) op.data = new Uint8Array(0)
  }
  const vvRaw = field(o, 'vv', what).map()
  const vv: Record<string, number> = {}
  for (const [w, n] of Object.entries(vvRaw)) vv[w] = field({ n }, 'n', what).int()
  const r: LogRecord = {
    writer: field(o, 'w', what).bytes(),
    n: field(o, 'n', what).int(),
    vv,
    time: field(o, 'tm', what).int(),
    op: op as unknown as Op
  }
  if (o.p !== undefined) r.prev = field(o, 'p', what).cid()
  return r
}

export { CID }
