/**
 * The rollback-protected local copy of view records and writer heads, durable in the node's head
 * store (the same compare-and-set on seq that file-system heads use), keyed by view id and by
 * writer slot: their multicodecs keep them apart from AGUIDs in the one store. A record is taken
 * only if it verifies and its seq is above the one held; the held record again is a no-op, and a
 * second record at a held seq is kept as fork evidence and refused.
 */
import type { CID } from 'multiformats/cid'
import type { HeadStore } from '../store/types.js'
import { isReefError } from '../errors.js'
import { checkAdvance } from './check.js'
import { writerSlotFor } from './ids.js'
import { verifyViewRecord, verifyWriterHead, type ViewRecord, type WriterHead } from './record.js'

export class ViewBook {
  constructor (private readonly store: HeadStore) {}

  private async put (key: CID, seq: bigint, bytes: Uint8Array, what: string): Promise<void> {
    const held = await this.store.getHead(key)
    try {
      if (checkAdvance(held, seq, bytes, what) === 'same') return
      const blocking = await this.store.putHeadIfHigher(key, seq, bytes)
      if (blocking !== undefined) checkAdvance(blocking, seq, bytes, what)
    } catch (err) {
      if (isReefError(err, 'VIEW_ROLLBACK') && held?.seq === seq) await this.store.recordFork(key, seq, bytes)
      throw err
    }
  }

  /** Takes a view record signed by the view's owner (see verifyViewRecord). */
  async acceptView (bytes: Uint8Array, expected?: CID): Promise<ViewRecord> {
    const r = verifyViewRecord(bytes, expected)
    await this.put(r.view, r.seq, bytes, `view record of ${r.view.toString()}`)
    return r
  }

  async currentView (view: CID): Promise<{ record: ViewRecord, bytes: Uint8Array } | undefined> {
    const e = await this.store.getHead(view)
    return e === undefined ? undefined : { record: verifyViewRecord(e.bytes, view), bytes: e.bytes }
  }

  /**
   * Takes a writer head signed by its writer, for its slot. Whether that writer may write to the
   * view is for the reader to check against the list (check.ts): a DHT node storing heads for
   * others holds the heads without the list.
   */
  async acceptWriterHead (bytes: Uint8Array, slot?: CID): Promise<WriterHead> {
    const h = verifyWriterHead(bytes, slot)
    await this.put(slot ?? writerSlotFor(h.view, h.writer), h.seq, bytes, 'writer head')
    return h
  }

  async currentWriterHead (slot: CID): Promise<{ head: WriterHead, bytes: Uint8Array } | undefined> {
    const e = await this.store.getHead(slot)
    return e === undefined ? undefined : { head: verifyWriterHead(e.bytes, slot), bytes: e.bytes }
  }

  /** The held record for a view id or writer slot, as stored (for serving it to the DHT). */
  async held (key: CID): Promise<{ seq: bigint, bytes: Uint8Array } | undefined> {
    return await this.store.getHead(key)
  }
}
