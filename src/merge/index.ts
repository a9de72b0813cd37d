/**
 * The deterministic merge of several writers' logs (issue 12 item 3), without a network or a
 * mount: a base version (or none) and each writer's records since it in, one new version out.
 *
 * Rule: every record newer than the base (its counter above the base's version vector for its
 * writer) is replayed onto the base in merge order (order.ts: version vector, then writer key),
 * translated so that concurrent changes never silently undo each other (apply.ts has the rules
 * and conflict cases). The version is folded with nothing taken from the local node: parents are
 * the writers' head versions sorted by writer key (each must be in the store), seq one above the
 * highest of theirs and the base's, time the newest record's, author zero, vv the join of the
 * base's and every record's. So every node holding the same base and heads computes
 * the same root hash, whatever order the heads arrived in.
 *
 * For a mount (later): `changed` lists the inodes whose attributes, entries or pages the merge
 * touched, for kernel invalidation; `conflicts` and `events` are what the merge did about
 * concurrent changes.
 *
 * @example
 *   const out = await merge({ store, base, writers: [
 *     { key: a, head: aHead, records: await recordsSince(store, aHead.root.log, a, base.root.vv[aHex] ?? 0) },
 *     { key: b, head: bHead, records: ... } ] })
 *   out.version.vguid   // the merged version, its blocks in `store`
 */
import type { CID } from 'multiformats/cid'
import { sameBytes } from '../block/index.js'
import { ReefError } from '../errors.js'
import { CONFLICT_XATTR, ReefFS, type VersionInfo } from '../fs/fs.js'
import { encodeRecord, type LogRecord } from '../log/record.js'
import { decodeVersion, encodeVersion, type VersionRoot } from '../object/version.js'
import type { BlockStore } from '../store/types.js'
import { type ConflictNote, type MergeEvent, Merger } from './apply.js'
import { isConflictName } from './names.js'
import { compareRanked, joinVV, type Ranked, ranked } from './order.js'

export { conflictName, isConflictName } from './names.js'
export { recordsSince } from './collect.js'
export type { ConflictKind, ConflictNote, MergeEvent } from './apply.js'

export interface WriterInput {
  key: Uint8Array
  /** The writer's head version (a parent of the merged version). */
  head?: CID
  /** Its records since the base, in any order; older ones (within the base) are ignored. */
  records: Array<LogRecord | { record: LogRecord, cid: CID }>
}

export interface MergeInput {
  store: BlockStore
  base?: VersionInfo
  writers: WriterInput[]
  message?: string
  /**
   * The base is an earlier merge of these writers that every newer record has seen (check with
   * `extendsBase`): the result is then the very version a merge from no base gives, with only
   * the newer records replayed. Its seq comes from the heads alone, as there.
   */
  extending?: boolean
}

/**
 * Whether a merge from `base` (an earlier merge of these writers' logs) gives the same version
 * as a merge from no base, replaying only the records newer than it: every writer the base holds
 * records of still brings at least those (none was cut back by a removal), and every newer record
 * had seen all of the base (its version vector covers the base's), so in merge order it comes
 * after every record of the base and meets none of them as a concurrent change.
 */
export function extendsBase (base: VersionInfo, writers: WriterInput[]): boolean {
  const bv = base.root.vv ?? {}
  const byKey = new Map(writers.map(w => [Buffer.from(w.key).toString('hex'), w]))
  for (const [w, n] of Object.entries(bv)) {
    const input = byKey.get(w)
    if (input === undefined) return false
    let top = 0
    for (const item of input.records) top = Math.max(top, ('record' in item ? item.record : item).n)
    if (top < n) return false
  }
  for (const input of writers) {
    const w = Buffer.from(input.key).toString('hex')
    for (const item of input.records) {
      const r = 'record' in item ? item.record : item
      if (r.n <= (bv[w] ?? 0)) continue
      for (const [v, n] of Object.entries(bv)) if ((r.vv[v] ?? 0) < n) return false
    }
  }
  return true
}

export interface MergeResult {
  version: VersionInfo
  /**
   * Inodes the merge changed from the base (sorted), and those named by records not applied as
   * written: a mount invalidates them whether it showed the base or its writer's own tree.
   */
  changed: number[]
  conflicts: ConflictNote[]
  events: MergeEvent[]
  /** Records replayed. */
  records: number
  /** The writer (hex key) whose tree the merge is, when its head had seen all the others (aheadOfAll). */
  fastForward?: string
  /**
   * Whether a later merge may start from this one (with `extending`, when extendsBase holds) and
   * give what a merge from none gives: only a replay that set nothing aside (no conflict, no
   * event) from no base or from such a merge. A merge that did keeps per-merge state (whose
   * copy is whose, where a writer's records now go) that a merge from it would not know, and a
   * fast-forward's tree carries whatever the writer's own merges set aside.
   */
  extendable: boolean
}

/**
 * The writer whose head has seen exactly every record given (of the others, and its own: its
 * head holds them all) and nothing else: its tree already is the merge of these heads, since
 * its own records since it last took the others' were made against their merge, and a replay
 * would put them where they are. If several have (every writer idle since one merge), the first
 * by key. Decided from the heads alone, so every node takes the same one whatever order the
 * heads arrived in or whatever base it merges from.
 */
async function aheadOfAll (input: MergeInput, top: Map<string, number>): Promise<{ w: string, v: VersionInfo } | undefined> {
  const candidates = input.writers.filter(wi => wi.head !== undefined)
    .map(wi => ({ w: Buffer.from(wi.key).toString('hex'), head: wi.head as CID }))
    .sort((a, b) => a.w < b.w ? -1 : a.w > b.w ? 1 : 0)
  for (const { w, head } of candidates) {
    let root: VersionRoot
    try {
      root = decodeVersion(await input.store.get(head))
    } catch {
      continue
    }
    const vv = root.vv ?? {}
    let exact = true
    for (const [v, n] of top) if ((vv[v] ?? 0) !== n) exact = false
    // A writer it had seen that is not given (left out, or cut back by a removal): not this one.
    for (const [v, n] of Object.entries(vv)) if (n > 0 && !top.has(v)) exact = false
    if (exact) return { w, v: { vguid: head, root } }
  }
  return undefined
}

/** The author of a merged version: no single writer's. */
export const MERGE_AUTHOR = new Uint8Array(32)

export async function merge (input: MergeInput): Promise<MergeResult> {
  const baseVV = input.base?.root.vv ?? {}
  const seen = new Set<string>()
  const all: Ranked[] = []
  const heads = new Map<string, CID>()
  for (const wi of input.writers) {
    if (!(wi.key instanceof Uint8Array) || wi.key.length !== 32) throw new ReefError('BAD_INPUT', 'merge: a writer key is not a 32-byte public key')
    const w = Buffer.from(wi.key).toString('hex')
    if (seen.has(w)) throw new ReefError('BAD_INPUT', `merge: writer ${w.slice(0, 8)} is given twice`)
    seen.add(w)
    if (wi.head !== undefined) heads.set(w, wi.head)
    const byN = new Map<number, Ranked>()
    for (const item of wi.records) {
      const x = 'record' in item ? ranked(item.record, item.cid) : ranked(item)
      if (x.w !== w) throw new ReefError('BAD_INPUT', `merge: record ${x.r.n} given for writer ${w.slice(0, 8)} is by ${x.w.slice(0, 8)}`)
      if ((x.r.vv[w] ?? 0) !== x.r.n) throw new ReefError('LOG_CORRUPT', `merge: record ${x.r.n} of writer ${w.slice(0, 8)} has its own version-vector entry at ${x.r.vv[w] ?? 0}`)
      if (x.r.n <= (baseVV[w] ?? 0)) continue
      const dup = byN.get(x.r.n)
      if (dup !== undefined) {
        if (!sameBytes(encodeRecord(dup.r).bytes, encodeRecord(x.r).bytes)) throw new ReefError('LOG_CORRUPT', `merge: writer ${w.slice(0, 8)} has two different records ${x.r.n} (a forked log)`)
        continue
      }
      byN.set(x.r.n, x)
    }
    all.push(...byN.values())
  }
  all.sort(compareRanked)

  const vv = joinVV({ ...baseVV }, {})
  let time = input.base?.root.time ?? 0
  for (const x of all) {
    joinVV(vv, x.r.vv)
    if (x.r.time > time) time = x.r.time
  }
  const parents = [...heads.entries()].sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0).map(([, c]) => c)
    .filter((c, i, arr) => arr.findIndex(d => d.equals(c)) === i)
  if (parents.length === 0 && input.base !== undefined) parents.push(input.base.vguid)
  // Writers that bring something (a head or records): one given with neither changes nothing.
  const merged = new Set([...heads.keys(), ...all.map(x => x.w)]).size
  // Above every parent's seq, so that any writer whose head it merges can adopt it as its head.
  let seq = input.extending === true ? 0n : input.base?.root.seq ?? 0n
  for (const p of parents) {
    const s = decodeVersion(await input.store.get(p)).seq
    if (s > seq) seq = s
  }
  const message = input.message ?? `merge of ${merged} writer${merged === 1 ? '' : 's'}`

  // Every writer's newest record given (or held by the base).
  const top = new Map<string, number>(Object.entries(baseVV))
  for (const wi of input.writers) top.set(Buffer.from(wi.key).toString('hex'), Math.max(top.get(Buffer.from(wi.key).toString('hex')) ?? 0, 0))
  for (const x of all) if (x.r.n > (top.get(x.w) ?? 0)) top.set(x.w, x.r.n)
  const ahead = all.length > 0 ? await aheadOfAll(input, top) : undefined
  if (ahead !== undefined) {
    const { root } = ahead.v
    const vroot: VersionRoot = { root: root.root, parents, seq: seq + 1n, time, author: MERGE_AUTHOR, nextIno: root.nextIno, vv, message }
    if (root.rootAttrs !== undefined) vroot.rootAttrs = root.rootAttrs
    if (root.links !== undefined) vroot.links = root.links
    const block = encodeVersion(vroot)
    await input.store.put(block)
    return { version: { vguid: block.cid, root: vroot }, changed: [], conflicts: [], events: [], records: 0, fastForward: ahead.w, extendable: false }
  }

  const fs = await ReefFS.open({ store: input.store, version: input.base, now: () => 0n })
  await fs.loadAll()
  const merger = new Merger(fs, all, heads)
  for (const x of all) await merger.apply(x)

  const version = await fs.fold(undefined, true, {
    parents,
    seq: seq + 1n,
    time,
    author: MERGE_AUTHOR,
    vv,
    message
  }) as VersionInfo
  const extendable = merger.notes.length === 0 && merger.events.length === 0 && (input.base === undefined || input.extending === true)
  return { version, changed: [...merger.changed].sort((a, b) => a - b), conflicts: merger.notes, events: merger.events, records: all.length, extendable }
}

/** An open conflict as `reef conflicts` shows it. */
export interface OpenConflict { path: string, kind: string, original: string, writers: string[], versions: string[] }

/**
 * The writers' versions a version was merged from: the parents of `v`, or of the nearest merge
 * its first parents lead back to (a writer's own versions after a merge), by author (hex key).
 */
export async function mergedFrom (store: BlockStore, v: VersionInfo, steps = 64): Promise<Map<string, string>> {
  let at: VersionInfo | undefined = v
  for (let i = 0; at !== undefined && i < steps; i++) {
    if (sameBytes(at.root.author, MERGE_AUTHOR)) {
      const out = new Map<string, string>()
      for (const p of at.root.parents) {
        try {
          out.set(Buffer.from(decodeVersion(await store.get(p)).author).toString('hex'), p.toString())
        } catch {}
      }
      return out
    }
    const p: CID | undefined = at.root.parents[0]
    at = p === undefined ? undefined : { vguid: p, root: decodeVersion(await store.get(p)) }
  }
  return new Map()
}

/**
 * Every open conflict in a tree: each inode carrying the conflict mark (CONFLICT_XATTR), sorted
 * by path; `versionOf` gives each writer's version (mergedFrom). A conflict leaves the list when its inode is deleted or renamed (a rename drops the
 * mark), or when the mark is removed (`setfattr -x user.reef.conflict`).
 */
export async function listConflicts (fs: ReefFS, versionOf?: (writer: string) => string | undefined): Promise<OpenConflict[]> {
  const out: OpenConflict[] = []
  const stack: Array<{ ino: number, path: string }> = [{ ino: fs.root.ino, path: '' }]
  while (stack.length > 0) {
    const { ino, path } = stack.pop() as { ino: number, path: string }
    for (const e of await fs.readdir(fs.node(ino))) {
      const n = fs.node(e.ino)
      const p = `${path}/${Buffer.from(e.name).toString()}`
      const v = n.xattrs.get(CONFLICT_XATTR)
      if (v !== undefined) {
        let o: { kind?: unknown, original?: unknown, writers?: unknown, versions?: unknown } = {}
        try { o = JSON.parse(Buffer.from(v).toString()) } catch {}
        const strs = (a: unknown): string[] => Array.isArray(a) ? a.filter((s): s is string => typeof s === 'string') : []
        out.push({
          path: p,
          kind: typeof o.kind === 'string' ? o.kind : (isConflictName(e.name) ? 'content' : 'unknown'),
          original: typeof o.original === 'string' ? o.original : '',
          writers: strs(o.writers),
          // Marks made before versions left them name their merge's heads; newer ones do not.
          versions: versionOf !== undefined ? strs(o.writers).map(versionOf).filter((v): v is string => v !== undefined) : strs(o.versions)
        })
      }
      if (n.kind === 'dir') stack.push({ ino: n.ino, path: p })
    }
  }
  return out.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0)
}

export { cachedSince, viewInputs, type LeftOut, type RecordCache } from './view.js'
