/**
 * Who may write to a view, as pure functions of a writer list (no store, no network).
 *
 * A writer head counts only if its key is a writer in the view's list and it wrote under a list
 * in which it was one: its `listSeq` must be at least the seq that added it. A removed writer's
 * heads count only if made before its removal: "after" is judged by the list seq the head says
 * it wrote under (`listSeq` >= the removal seq is after), and, since a removed writer could keep
 * signing heads that name an old list, also by the cut the owner pinned at removal: a head with
 * a higher seq or a log record counter beyond the cut is after. (A reader takes a removed
 * writer's final position from the cut in the list itself, which the owner signed.) A log record counts only if the
 * head it is reached from counts, it is that head's writer's own, and its counter is within the
 * head (and within the cut). Rollback of signed records (seq not above the one held, with other
 * bytes) is `checkAdvance`, shared by view records and writer heads.
 */
import type { LogRecord } from '../log/record.js'
import { ReefError } from '../errors.js'
import { keyHex } from './ids.js'
import { standingOf, type ViewList } from './list.js'
import type { WriterHead } from './record.js'

/**
 * Whether a signed record with `seq` and `bytes` may replace `held`: 'new' if its seq is higher
 * (or nothing is held), 'same' if it is the held record itself; anything else is a replay of an
 * older record, or a second record at one seq (a fork), and is VIEW_ROLLBACK.
 */
export function checkAdvance (held: { seq: bigint, bytes: Uint8Array } | undefined, seq: bigint, bytes: Uint8Array, what: string): 'new' | 'same' {
  if (held === undefined || seq > held.seq) return 'new'
  if (seq === held.seq && Buffer.compare(held.bytes, bytes) === 0) return 'same'
  throw new ReefError('VIEW_ROLLBACK', seq === held.seq
    ? `fork: a different ${what} at seq ${seq} than the one held`
    : `${what} seq ${seq} is not above the highest seen (${held.seq})`)
}

/** Throws unless `h` is a head the writer list `list` lets into the view. */
export function checkWriterHead (h: WriterHead, list: ViewList): void {
  const who = keyHex(h.writer)
  if (!h.view.equals(list.view)) throw new ReefError('VIEW_MALFORMED', `writer head of ${who} is for view ${h.view.toString()}, not ${String(list.view)}`)
  if (h.listSeq > list.seq) {
    throw new ReefError('VIEW_STALE', `writer head of ${who} was made under list ${h.listSeq}, newer than the list held here (${list.seq}): fetch the view first`)
  }
  const s = standingOf(list, h.writer)
  if (s.state === 'none') throw new ReefError('VIEW_NOT_WRITER', `${who} is not a writer of view ${list.view.toString()}`)
  if (h.listSeq < s.added) throw new ReefError('VIEW_NOT_WRITER', `writer head of ${who} was made under list ${h.listSeq}, before it became a writer (list ${s.added})`)
  if (s.state === 'removed') {
    if (h.listSeq >= s.removed) throw new ReefError('VIEW_REMOVED', `writer head of ${who} was made under list ${h.listSeq}, after its removal (list ${s.removed})`)
    if (h.seq > s.cut.seq || h.n > s.cut.n) {
      throw new ReefError('VIEW_REMOVED', `writer head ${h.seq} of ${who} (record ${h.n}) is beyond the cut made at its removal (head ${s.cut.seq}, record ${s.cut.n})`)
    }
  }
}

/** Throws unless log record `r`, reached from head `h`, belongs in the view. */
export function checkRecord (r: LogRecord, h: WriterHead, list: ViewList): void {
  checkWriterHead(h, list)
  if (Buffer.compare(r.writer, h.writer) !== 0) {
    throw new ReefError('VIEW_NOT_WRITER', `log record ${r.n} is by ${keyHex(r.writer)}, not by ${keyHex(h.writer)} whose head reached it`)
  }
  if (BigInt(r.n) > h.n) throw new ReefError('VIEW_MALFORMED', `log record ${r.n} of ${keyHex(r.writer)} is beyond its head (record ${h.n})`)
  const s = standingOf(list, r.writer)
  if (s.state === 'removed' && BigInt(r.n) > s.cut.n) {
    throw new ReefError('VIEW_REMOVED', `log record ${r.n} of ${keyHex(r.writer)} was made after its removal (cut at record ${s.cut.n})`)
  }
}
