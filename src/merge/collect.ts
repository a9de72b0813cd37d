/**
 * A writer's records since a merge base, read from the block store: walk back from the head's
 * newest record along `prev` until a record the base already holds (its counter within the
 * base's version vector) or the start of the writer's log. A write record's named data is read
 * from its raw block. `check` (views: check.ts's checkRecord with the head that reached it) sees
 * every record before it is taken.
 */
import type { CID } from 'multiformats/cid'
import { ReefError } from '../errors.js'
import { decodeRecord, type LogRecord } from '../log/record.js'
import type { BlockGetter } from '../store/types.js'

export interface Collected { record: LogRecord, cid: CID }

export async function recordsSince (store: BlockGetter, head: CID | undefined, writer: Uint8Array, after: number, check?: (r: LogRecord) => void): Promise<Collected[]> {
  const out: Collected[] = []
  const who = Buffer.from(writer).toString('hex').slice(0, 16)
  let expect: number | undefined
  for (let at = head; at !== undefined;) {
    const record = decodeRecord(await store.get(at))
    // A writer's first record after adopting another's version chains to that version's record.
    if (Buffer.compare(record.writer, writer) !== 0) {
      if (expect === undefined) throw new ReefError('LOG_CORRUPT', `head record ${at.toString()} is not by writer ${who}`)
      break
    }
    if (record.n <= after) break
    if (expect !== undefined && record.n !== expect) throw new ReefError('LOG_CORRUPT', `log of writer ${who}: record ${expect + 1} links back to record ${record.n}, not ${expect}`)
    check?.(record)
    if (record.op.op === 'write' && record.op.dataCid !== undefined) record.op.data = await store.get(record.op.dataCid)
    out.push({ record, cid: at })
    expect = record.n - 1
    at = record.prev
  }
  if (expect !== undefined && expect > after && expect > 0) {
    throw new ReefError('LOG_CORRUPT', `log of writer ${who} ends at record ${expect + 1}; records ${after + 1}..${expect} are missing`)
  }
  return out.reverse()
}
