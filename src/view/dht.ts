/**
 * View records and writer heads on the DHT: kad-dht records beside the file-system heads, in
 * namespaces of their own, with the same three defences heads have.
 *   '/reef-view/'   + view id bytes      -> the owner's signed view record (record.ts)
 *   '/reef-writer/' + writer slot bytes  -> that writer's signed head in the view
 * The validators check layout, signature and key binding on every node that stores or reads a
 * record; the selectors keep the highest seq; and every storing node passes record writes
 * through its ViewBook (via the head guard datastore in src/dht/heads.ts), so a replayed older
 * record or a fork is refused there and never served. Membership (is this key a writer of the
 * view?) needs the view's list and is checked by readers (check.ts), not by storing nodes.
 */
import { CID } from 'multiformats/cid'
import { ReefError } from '../errors.js'
import type { ViewBook } from './book.js'
import { isViewId, isWriterSlot, REEF_VIEW, REEF_WRITER_SLOT } from './ids.js'
import { decodeViewRecord, decodeWriterHead, verifyViewRecord, verifyWriterHead } from './record.js'

const enc = new TextEncoder()
const VIEW_PREFIX = enc.encode('/reef-view/')
const WRITER_PREFIX = enc.encode('/reef-writer/')

function prefixed (prefix: Uint8Array, id: CID): Uint8Array {
  const k = new Uint8Array(prefix.length + id.bytes.length)
  k.set(prefix)
  k.set(id.bytes, prefix.length)
  return k
}

/** The DHT key of a view id or a writer slot; undefined for any other CID. */
export function recordKeyFor (id: CID): Uint8Array | undefined {
  if (id.code === REEF_VIEW) return prefixed(VIEW_PREFIX, id)
  if (id.code === REEF_WRITER_SLOT) return prefixed(WRITER_PREFIX, id)
  return undefined
}

function after (prefix: Uint8Array, key: Uint8Array, check: (c: CID) => boolean): CID | undefined {
  if (key.length <= prefix.length) return undefined
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return undefined
  try {
    const c = CID.decode(key.subarray(prefix.length))
    return check(c) ? c : undefined
  } catch {
    return undefined
  }
}

/** The view id or writer slot a DHT record key names, or undefined. */
export function idOfRecordKey (key: Uint8Array): CID | undefined {
  return after(VIEW_PREFIX, key, isViewId) ?? after(WRITER_PREFIX, key, isWriterSlot)
}

async function validateView (key: Uint8Array, value: Uint8Array): Promise<void> {
  const id = after(VIEW_PREFIX, key, isViewId)
  if (id === undefined) throw new ReefError('VIEW_MALFORMED', 'record key is not a reef view id')
  verifyViewRecord(value, id)
}

async function validateWriter (key: Uint8Array, value: Uint8Array): Promise<void> {
  const slot = after(WRITER_PREFIX, key, isWriterSlot)
  if (slot === undefined) throw new ReefError('VIEW_MALFORMED', 'record key is not a reef writer slot')
  verifyWriterHead(value, slot)
}

/** The seq of a view record or writer head (whichever the key names); -1 if unreadable. */
function seqOf (key: Uint8Array, value: Uint8Array): bigint {
  try {
    if (after(VIEW_PREFIX, key, isViewId) !== undefined) return decodeViewRecord(value).seq
    return decodeWriterHead(value).seq
  } catch {
    return -1n
  }
}

function select (key: Uint8Array, records: Uint8Array[]): number {
  let best = 0
  let bestSeq = -1n
  records.forEach((r, i) => {
    const s = seqOf(key, r)
    if (s > bestSeq) { best = i; bestSeq = s }
  })
  return best
}

/** kad-dht `validators` and `selectors` entries for the view namespaces. */
export const VIEW_VALIDATORS = { 'reef-view': validateView, 'reef-writer': validateWriter }
export const VIEW_SELECTORS = { 'reef-view': select, 'reef-writer': select }

/**
 * The guard a storing node applies to view records and writer heads (see HeadGuardDatastore).
 * `accepted` hears of each one taken into the book (a peer put it here: a view mount's notify).
 */
export function viewRecordGuard (book: ViewBook, accepted?: (id: CID) => void): {
  idOf: (recordKey: Uint8Array) => CID | undefined
  accept: (id: CID, value: Uint8Array) => Promise<void>
  held: (id: CID) => Promise<{ seq: bigint, bytes: Uint8Array } | undefined>
  seqOf: (recordKey: Uint8Array, value: Uint8Array) => bigint
} {
  return {
    idOf: idOfRecordKey,
    accept: async (id, value) => {
      if (id.code === REEF_VIEW) await book.acceptView(value, id)
      else await book.acceptWriterHead(value, id)
      accepted?.(id)
    },
    held: async (id) => await book.held(id),
    seqOf
  }
}
