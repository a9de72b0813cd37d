/**
 * Signed heads as kad-dht records under '/reef/' + AGUID bytes. The validator (signature,
 * layout, key binding) runs on every node that receives a record and on every answer a reader
 * gets; the selector keeps the highest seq. kad-dht's PUT_VALUE handler validates but then
 * overwrites whatever it held, so every storing node also routes record writes through
 * HeadGuardDatastore, which applies the head book: a replayed older head or a fork is refused
 * there and never stored or served. Heads live durably in the node's head store (LMDB), so a
 * restarted node still serves, and still refuses rollbacks below, what it held.
 */
import { Libp2pRecord } from '@libp2p/record'
import { MemoryDatastore } from 'datastore-core/memory'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { base32 } from 'multiformats/bases/base32'
import type { AbortOptions } from '@libp2p/interface'
import { REEF_AGUID } from '../block/index.js'
import { isReefError, ReefError } from '../errors.js'
import { decodeHead, encodeHead, type HeadBook, verifyHead } from '../naming/index.js'

const PREFIX = new TextEncoder().encode('/reef/')
const RECORD_PREFIX = '/dht/record/'

export function headKey (aguid: CID): Uint8Array {
  const k = new Uint8Array(PREFIX.length + aguid.bytes.length)
  k.set(PREFIX)
  k.set(aguid.bytes, PREFIX.length)
  return k
}

/** The AGUID a record key names, or undefined if it is not a reef head key. */
export function aguidOfKey (key: Uint8Array): CID | undefined {
  if (key.length <= PREFIX.length) return undefined
  for (let i = 0; i < PREFIX.length; i++) if (key[i] !== PREFIX[i]) return undefined
  try {
    const cid = CID.decode(key.subarray(PREFIX.length))
    return cid.code === REEF_AGUID ? cid : undefined
  } catch {
    return undefined
  }
}

/** kad-dht validator for the 'reef' namespace. */
export async function validateHeadRecord (key: Uint8Array, value: Uint8Array): Promise<void> {
  const aguid = aguidOfKey(key)
  if (aguid === undefined) throw new ReefError('HEAD_MALFORMED', 'record key is not a reef AGUID')
  verifyHead(value, aguid)
}

/** kad-dht selector for the 'reef' namespace: the valid record with the highest seq. */
export function selectHeadRecord (_key: Uint8Array, records: Uint8Array[]): number {
  let best = 0
  let bestSeq = -1n
  records.forEach((r, i) => {
    try {
      const seq = decodeHead(r).seq
      if (seq > bestSeq) { best = i; bestSeq = seq }
    } catch {}
  })
  return best
}

function recordKeyOf (dsKey: Key): Uint8Array | undefined {
  const s = dsKey.toString()
  if (!s.startsWith(RECORD_PREFIX)) return undefined
  try {
    return base32.baseDecode(s.slice(RECORD_PREFIX.length))
  } catch {
    return undefined
  }
}

/**
 * Other signed records with a seq (view records and writer heads, src/view/dht.ts), guarded the
 * same way under their own key prefixes: refused unless they advance, served from the book.
 */
export interface RecordGuard {
  idOf: (recordKey: Uint8Array) => CID | undefined
  accept: (id: CID, value: Uint8Array) => Promise<void>
  held: (id: CID) => Promise<{ seq: bigint, bytes: Uint8Array } | undefined>
  seqOf: (recordKey: Uint8Array, value: Uint8Array) => bigint
}

export class HeadGuardDatastore extends MemoryDatastore {
  refused = 0

  constructor (private readonly book: HeadBook, private readonly guard?: RecordGuard) { super() }

  override async put (key: Key, val: Uint8Array, options?: AbortOptions): Promise<Key> {
    const rk = recordKeyOf(key)
    const aguid = rk !== undefined ? aguidOfKey(rk) : undefined
    if (aguid !== undefined) {
      try {
        const rec = Libp2pRecord.deserialize(val)
        await this.book.accept(rec.value, aguid)
      } catch (err) {
        this.refused++
        throw isReefError(err) ? err : new ReefError('HEAD_MALFORMED', `unreadable head record: ${(err as Error).message}`)
      }
    }
    const other = rk !== undefined && aguid === undefined ? this.guard?.idOf(rk) : undefined
    if (other !== undefined && this.guard !== undefined) {
      try {
        await this.guard.accept(other, Libp2pRecord.deserialize(val).value)
      } catch (err) {
        this.refused++
        throw isReefError(err) ? err : new ReefError('VIEW_MALFORMED', `unreadable view record: ${(err as Error).message}`)
      }
    }
    return await super.put(key, val, options)
  }

  /**
   * A reef head record is served from whichever is newer: the record kad-dht stored here, or
   * the node's durable head book (which also learns heads through fetches, folds and restarts).
   */
  override async get (key: Key, options?: AbortOptions): Promise<Uint8Array> {
    const rk = recordKeyOf(key)
    const aguid = rk !== undefined ? aguidOfKey(rk) : undefined
    let stored: Uint8Array | undefined
    let storedErr: unknown
    try {
      stored = await super.get(key, options)
    } catch (err) {
      storedErr = err
    }
    const other = rk !== undefined && aguid === undefined ? this.guard?.idOf(rk) : undefined
    if (other !== undefined && rk !== undefined && this.guard !== undefined) {
      const held = await this.guard.held(other).catch(() => undefined)
      let storedSeq = -1n
      try {
        if (stored !== undefined) storedSeq = this.guard.seqOf(rk, Libp2pRecord.deserialize(stored).value)
      } catch {}
      if (held !== undefined && held.seq > storedSeq) return new Libp2pRecord(rk, held.bytes, new Date()).serialize()
    }
    if (aguid === undefined || rk === undefined) {
      if (stored === undefined) throw storedErr
      return stored
    }
    const h = await this.book.current(aguid).catch(() => undefined)
    if (h !== undefined) {
      let storedSeq = -1n
      try {
        if (stored !== undefined) storedSeq = decodeHead(Libp2pRecord.deserialize(stored).value).seq
      } catch {}
      if (h.seq > storedSeq) return new Libp2pRecord(rk, encodeHead(h), new Date()).serialize()
    }
    if (stored === undefined) throw storedErr
    return stored
  }

  override async has (key: Key, options?: AbortOptions): Promise<boolean> {
    if (await super.has(key, options)) return true
    try {
      await this.get(key, options)
      return true
    } catch {
      return false
    }
  }
}

export { Key }
