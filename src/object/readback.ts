/**
 * Read-back checks: a structural block reef writes must decode, with reef's own decoders, to
 * the value it was encoded from. The fold runs them on every directory node and version root
 * before anything is stored or the head moves, so a bug in an encoder (or a decoder stricter
 * than its encoder, as a hard-linked symlink once met) fails the fold instead of committing a
 * signed version that reef cannot read.
 */
import type { CID } from 'multiformats/cid'
import { ReefError } from '../errors.js'
import type { Entry } from './dir.js'
import type { VersionRoot } from './version.js'

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const bytesEq = (a: Uint8Array | undefined, b: Uint8Array | undefined): boolean =>
  a === undefined || b === undefined ? a === b : Buffer.compare(a, b) === 0
const cidEq = (a: CID | undefined, b: CID | undefined): boolean =>
  a === undefined || b === undefined ? a === b : a.equals(b)

function xattrsEq (a: Record<string, Uint8Array> | undefined, b: Record<string, Uint8Array> | undefined): boolean {
  const ka = Object.keys(a ?? {}).sort()
  const kb = Object.keys(b ?? {}).sort()
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && bytesEq(a?.[k], b?.[k]))
}

/** The first field in which `got` differs from `meant`, or undefined when they agree. */
export function entryDiff (meant: Entry, got: Entry): string | undefined {
  if (!bytesEq(meant.name, got.name)) return 'name'
  if (meant.kind !== got.kind) return 'kind'
  if (meant.linked === true || got.linked === true) {
    // A link-table reference carries its kind and inode number only.
    if (meant.linked !== got.linked) return 'linked'
    return meant.ino !== got.ino ? 'ino' : undefined
  }
  const checks: Array<[string, boolean]> = [
    ['mode', (meant.mode & 0o7777) === got.mode],
    ['uid', meant.uid === got.uid],
    ['gid', meant.gid === got.gid],
    ['size', meant.size === got.size],
    ['mtime', meant.mtime === got.mtime],
    ['atime', meant.atime === got.atime],
    ['ctime', meant.ctime === got.ctime],
    ['cid', cidEq(meant.cid, got.cid)],
    ['target', bytesEq(meant.target, got.target)],
    ['rdev', meant.rdev === got.rdev],
    ['ino', meant.ino === got.ino],
    // A link count of 1 is not written.
    ['nlink', (meant.nlink !== undefined && meant.nlink > 1 ? meant.nlink : undefined) === got.nlink],
    ['xattrs', xattrsEq(meant.xattrs, got.xattrs)]
  ]
  return checks.find(([, ok]) => !ok)?.[0]
}

function refuse (what: string, cid: CID, why: string, cause?: unknown): never {
  throw new ReefError('BAD_ENCODING', `${what} ${cid.toString()} does not read back: ${why}`, cause)
}

/** Decodes `bytes` with `decode`; any failure is a read-back failure of block `cid`. */
export function readBack<T> (what: string, cid: CID, bytes: Uint8Array, decode: (b: Uint8Array) => T): T {
  try {
    return decode(bytes)
  } catch (err) {
    return refuse(what, cid, (err as Error).message, err)
  }
}

export function checkEntries (what: string, cid: CID, meant: Entry[], got: Entry[]): void {
  if (meant.length !== got.length) refuse(what, cid, `${meant.length} entries written, ${got.length} read`)
  for (let i = 0; i < meant.length; i++) {
    const diff = entryDiff(meant[i], got[i])
    if (diff !== undefined) refuse(what, cid, `entry ${JSON.stringify(Buffer.from(meant[i].name).toString())} (${hex(meant[i].name)}) reads back with another ${diff}`)
  }
}

export function checkVersion (cid: CID, meant: VersionRoot, got: VersionRoot): void {
  const vv = (v?: Record<string, number>): string => JSON.stringify(Object.entries(v ?? {}).sort())
  const checks: Array<[string, boolean]> = [
    ['root', meant.root.equals(got.root)],
    ['parents', meant.parents.length === got.parents.length && meant.parents.every((p, i) => p.equals(got.parents[i]))],
    ['seq', meant.seq === got.seq],
    ['time', meant.time === got.time],
    ['author', bytesEq(meant.author, got.author)],
    ['nextIno', meant.nextIno === got.nextIno],
    ['links', cidEq(meant.links, got.links)],
    ['log', cidEq(meant.log, got.log)],
    ['message', meant.message === got.message],
    ['vv', vv(meant.vv) === vv(got.vv)],
    ['rootAttrs', (meant.rootAttrs === undefined) === (got.rootAttrs === undefined)]
  ]
  const bad = checks.find(([, ok]) => !ok)?.[0]
  if (bad !== undefined) refuse('version root', cid, `its ${bad} reads back different`)
  if (meant.rootAttrs !== undefined && got.rootAttrs !== undefined) {
    const diff = entryDiff(meant.rootAttrs, got.rootAttrs)
    if (diff !== undefined) refuse('version root', cid, `the root directory's ${diff} reads back different`)
  }
}
