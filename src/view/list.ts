/**
 * A view's writer list: one immutable block per version, deterministic dag-cbor.
 *   { t: 'vl', view: viewId, name: bytes, owner: key, seq, prev?: CID of the list before,
 *     time: ms, writers: [{ k: key, a: seq added }], removed: [{ k, a, r: seq removed, cs?, cn? }] }
 * Seq 1 is the genesis (the owner alone, added at 1, no prev); every change adds 1 and links the
 * list it changes. Entries are sorted by key, so a list has one encoding. A removed writer stays
 * in `removed` for good: its log is cut at its removal (see check.ts), and a removed key is
 * never added again (a person who returns gets a new key). Its cut (`cs` head seq, `cn` log record
 * counter, `cv` VGUID, `cr` record CID; 0 and absent when it had published nothing) is the
 * newest head of it the owner found when removing it: the view keeps that writer's log up to
 * there and nothing after, whatever heads it signs later.
 */
import type { CID } from 'multiformats/cid'
import { type Block, DAG_CBOR } from '../block/index.js'
import { ReefError } from '../errors.js'
import { decodeCbor, encodeBlock, field } from '../object/codec.js'
import { keyHex, viewIdFor } from './ids.js'

export interface Writer { key: Uint8Array, added: bigint }
/** Where a removed writer's log ends in the view: its head seq, record counter, VGUID, record. */
export interface Cut { seq: bigint, n: bigint, vguid?: CID, record?: CID }
export interface RemovedWriter extends Writer {
  removed: bigint
  cut: Cut
}
export const NO_CUT: Cut = { seq: 0n, n: 0n }

export interface ViewList {
  view: CID
  name: Uint8Array
  owner: Uint8Array
  seq: bigint
  prev?: CID
  time: number
  writers: Writer[]
  removed: RemovedWriter[]
}

const byKey = (a: { key: Uint8Array }, b: { key: Uint8Array }): number => Buffer.compare(a.key, b.key)
const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0

export function encodeList (l: ViewList): Block {
  const o: Record<string, unknown> = {
    t: 'vl',
    view: l.view,
    name: l.name,
    owner: l.owner,
    seq: l.seq,
    time: l.time,
    writers: [...l.writers].sort(byKey).map(w => ({ k: w.key, a: w.added })),
    removed: [...l.removed].sort(byKey).map(w => {
      const e: Record<string, unknown> = { k: w.key, a: w.added, r: w.removed, cs: w.cut.seq, cn: w.cut.n }
      if (w.cut.vguid !== undefined) e.cv = w.cut.vguid
      if (w.cut.record !== undefined) e.cr = w.cut.record
      return e
    })
  }
  if (l.prev !== undefined) o.prev = l.prev
  return encodeBlock(o)
}

export function decodeList (bytes: Uint8Array): ViewList {
  const what = 'view list'
  let o: Record<string, unknown>
  try {
    o = decodeCbor(bytes, what)
  } catch (err) {
    throw new ReefError('VIEW_MALFORMED', (err as Error).message, err)
  }
  const bad = (why: string): never => { throw new ReefError('VIEW_MALFORMED', `${what}: ${why}`) }
  const f = (obj: Record<string, unknown>, k: string): ReturnType<typeof field> => field(obj, k, what)
  try {
    if (o.t !== 'vl') bad('wrong type tag')
    const key = (obj: Record<string, unknown>): Uint8Array => {
      const k = f(obj, 'k').bytes()
      if (k.length !== 32) bad('a writer key is not 32 bytes')
      return k
    }
    const entry = (e: unknown): Record<string, unknown> => {
      if (e === null || typeof e !== 'object' || Array.isArray(e) || e instanceof Uint8Array) return bad('an entry is not a map')
      return e as Record<string, unknown>
    }
    const l: ViewList = {
      view: f(o, 'view').cid(),
      name: f(o, 'name').bytes(),
      owner: f(o, 'owner').bytes(),
      seq: f(o, 'seq').bigint(),
      time: f(o, 'time').int(),
      writers: f(o, 'writers').array().map(entry).map(e => ({ key: key(e), added: f(e, 'a').bigint() })),
      removed: f(o, 'removed').array().map(entry).map(e => {
        const cut: Cut = { seq: f(e, 'cs').bigint(), n: f(e, 'cn').bigint() }
        if (e.cv !== undefined) cut.vguid = f(e, 'cv').cid()
        if (e.cr !== undefined) cut.record = f(e, 'cr').cid()
        if ((cut.seq === 0n) !== (cut.vguid === undefined) || (cut.n === 0n) !== (cut.record === undefined)) bad('a cut names a head without its version, or a record without its counter')
        return { key: key(e), added: f(e, 'a').bigint(), removed: f(e, 'r').bigint(), cut }
      })
    }
    if (o.prev !== undefined) l.prev = f(o, 'prev').cid()
    if (l.owner.length !== 32) bad('owner is not a 32-byte key')
    if (!viewIdFor(l.owner, l.name).equals(l.view)) bad('its view id is not the one its owner and name give')
    if (l.seq < 1n) bad('seq starts at 1')
    if ((l.prev === undefined) !== (l.seq === 1n)) bad('every list but the first links the one before')
    if (l.prev !== undefined && l.prev.code !== DAG_CBOR) bad('prev does not link a list block')
    const all = [...l.writers, ...l.removed]
    for (let i = 1; i < l.writers.length; i++) if (byKey(l.writers[i - 1], l.writers[i]) >= 0) bad('writers are not sorted by key, or repeat one')
    for (let i = 1; i < l.removed.length; i++) if (byKey(l.removed[i - 1], l.removed[i]) >= 0) bad('removed writers are not sorted by key, or repeat one')
    if (l.writers.some(w => l.removed.some(r => same(r.key, w.key)))) bad('a key is both a writer and removed')
    if (all.some(w => w.added < 1n || w.added > l.seq)) bad('a writer was added outside the list\'s history')
    if (l.removed.some(r => r.removed <= r.added || r.removed > l.seq)) bad('a writer was removed outside its membership')
    const owner = l.writers.find(w => same(w.key, l.owner))
    if (owner === undefined || owner.added !== 1n) bad('the owner is not a writer since seq 1')
    return l
  } catch (err) {
    if (err instanceof ReefError && err.code === 'BAD_ENCODING') throw new ReefError('VIEW_MALFORMED', err.message, err)
    throw err
  }
}

/** Seq 1 of a new view: the owner is its only writer. */
export function genesisList (owner: Uint8Array, name: string | Uint8Array, time = Date.now()): ViewList {
  const n = typeof name === 'string' ? new TextEncoder().encode(name) : name
  return { view: viewIdFor(owner, n), name: n, owner, seq: 1n, time, writers: [{ key: owner, added: 1n }], removed: [] }
}

export type Standing =
  | { state: 'writer', added: bigint }
  | { state: 'removed', added: bigint, removed: bigint, cut: Cut }
  | { state: 'none' }

export function standingOf (l: ViewList, key: Uint8Array): Standing {
  const w = l.writers.find(x => same(x.key, key))
  if (w !== undefined) return { state: 'writer', added: w.added }
  const r = l.removed.find(x => same(x.key, key))
  if (r !== undefined) return { state: 'removed', added: r.added, removed: r.removed, cut: r.cut }
  return { state: 'none' }
}

/** The next list with `key` added (prev: the CID of `l`'s block). */
export function addWriter (l: ViewList, prev: CID, key: Uint8Array, time = Date.now()): ViewList {
  const s = standingOf(l, key)
  if (s.state === 'writer') throw new ReefError('VIEW_ALREADY_WRITER', `${keyHex(key)} is already a writer of this view (since list ${s.added})`)
  if (s.state === 'removed') throw new ReefError('VIEW_REMOVED', `${keyHex(key)} was removed from this view at list ${s.removed}; a removed key is never added again (use a new key)`)
  const seq = l.seq + 1n
  return { ...l, seq, prev, time, writers: [...l.writers, { key, added: seq }].sort(byKey) }
}

/** The next list with `key` removed, its log cut at `cut` (its newest head the owner found). */
export function removeWriter (l: ViewList, prev: CID, key: Uint8Array, cut: Cut = NO_CUT, time = Date.now()): ViewList {
  if (same(key, l.owner)) throw new ReefError('VIEW_NOT_WRITER', 'the owner cannot remove itself from its own view')
  const s = standingOf(l, key)
  if (s.state === 'removed') throw new ReefError('VIEW_NOT_WRITER', `${keyHex(key)} is not a writer of this view (removed at list ${s.removed})`)
  if (s.state !== 'writer') throw new ReefError('VIEW_NOT_WRITER', `${keyHex(key)} is not a writer of this view`)
  const seq = l.seq + 1n
  const gone: RemovedWriter = { key, added: s.added, removed: seq, cut }
  return { ...l, seq, prev, time, writers: l.writers.filter(w => !same(w.key, key)), removed: [...l.removed, gone].sort(byKey) }
}

/**
 * Checks that `next` follows `prev` (whose block is `prevCid`) directly: one seq on, linking it,
 * same view, and changing exactly one writer in the only ways add and remove do.
 */
export function checkSuccessor (prev: ViewList, prevCid: CID, next: ViewList): void {
  const bad = (why: string): never => { throw new ReefError('VIEW_CHAIN', `view list ${next.seq} does not follow list ${prev.seq}: ${why}`) }
  if (!next.view.equals(prev.view)) bad('another view')
  if (next.seq !== prev.seq + 1n) bad('not the next seq')
  if (next.prev === undefined || !next.prev.equals(prevCid)) bad('it links another list')
  for (const r of prev.removed) {
    const s = standingOf(next, r.key)
    if (s.state !== 'removed' || s.removed !== r.removed) bad(`removed writer ${keyHex(r.key)} changed`)
  }
  const added = next.writers.filter(w => standingOf(prev, w.key).state !== 'writer')
  const dropped = prev.writers.filter(w => standingOf(next, w.key).state !== 'writer')
  const changes = added.length + dropped.length
  if (changes !== 1) bad(`${changes} writers changed`)
  if (added.length === 1 && (added[0].added !== next.seq || standingOf(prev, added[0].key).state !== 'none')) bad('an added writer is not new')
  if (dropped.length === 1) {
    const s = standingOf(next, dropped[0].key)
    if (s.state !== 'removed' || s.removed !== next.seq || s.added !== dropped[0].added) bad('a dropped writer is not recorded as removed')
  }
  for (const w of next.writers) {
    const p = standingOf(prev, w.key)
    if (p.state === 'writer' && p.added !== w.added) bad(`writer ${keyHex(w.key)} changed its seq`)
  }
}
