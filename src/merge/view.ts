/**
 * A view's merge input: every writer's records since a base, each checked against the view's
 * writer list (src/view/check.ts) as it is read. A current writer's records come from its newest
 * head that the list lets in; a removed writer's from the cut the owner pinned at its removal,
 * none beyond it. A writer whose head is refused, or whose records cannot all be read yet, is left
 * out (with the reason): the merge is then of the heads that are in, and its parents say which.
 */
import type { CID } from 'multiformats/cid'
import { isReefError, ReefError, type ReefErrorCode } from '../errors.js'
import type { VersionInfo } from '../fs/fs.js'
import type { LogRecord } from '../log/record.js'
import type { BlockGetter } from '../store/types.js'
import { checkRecord } from '../view/check.js'
import { keyHex } from '../view/ids.js'
import type { Views } from '../view/views.js'
import { type Collected, recordsSince } from './collect.js'
import type { WriterInput } from './index.js'

export interface LeftOut { key: Uint8Array, code: ReefErrorCode, message: string }

/**
 * Records already read, per writer (key hex): the newest record read and the records up to it.
 * A mount that merges again and again reads only what each writer appended since.
 */
export type RecordCache = Map<string, { head: string, n: number, records: Collected[] }>

/** `recordsSince`, reading back only to the newest record `cache` holds of this writer. */
export async function cachedSince (store: BlockGetter, head: CID | undefined, key: Uint8Array, after: number, check: (r: LogRecord) => void, cache?: RecordCache): Promise<Collected[]> {
  const k = keyHex(key)
  const held = after === 0 ? cache?.get(k) : undefined
  if (head !== undefined && held !== undefined && held.head === head.toString()) return held.records
  let records: Collected[]
  if (held !== undefined) {
    const newer = await recordsSince(store, head, key, held.n, check)
    // A head behind what was held (a removed writer's cut) or a chain that does not reach back to
    // it is read whole.
    records = newer.length > 0 && newer[0].record.n === held.n + 1 ? [...held.records, ...newer] : await recordsSince(store, head, key, after, check)
  } else {
    records = await recordsSince(store, head, key, after, check)
  }
  if (cache !== undefined && after === 0 && head !== undefined && records.length > 0) {
    cache.set(k, { head: head.toString(), n: records[records.length - 1].record.n, records })
  }
  return records
}

/**
 * Options of viewInputs. `local`: heads as this node holds them, no lookup (Views.positions).
 * `own`: a writer mount's own key: its head is not looked up and its records are not read (the
 * mount has them in its own tree and gives them itself), so its input comes with none.
 */
export interface InputOptions { local?: boolean, own?: Uint8Array }

export async function viewInputs (views: Views, store: BlockGetter, view: CID, base?: VersionInfo, cache?: RecordCache, opts: InputOptions = {}): Promise<{ writers: WriterInput[], leftOut: LeftOut[] }> {
  const { state, writers: positions } = await views.positions(view, { local: opts.local, skip: opts.own })
  const writers: WriterInput[] = []
  const leftOut: LeftOut[] = []
  for (const p of positions) {
    const after = base?.root.vv?.[keyHex(p.key)] ?? 0
    try {
      if (p.state === 'writer') {
        if (p.refused !== undefined) {
          leftOut.push({ key: p.key, ...p.refused })
          continue
        }
        const h = p.head
        if (h === undefined) continue
        if (opts.own !== undefined && Buffer.compare(opts.own, p.key) === 0) {
          writers.push({ key: p.key, head: h.vguid, records: [] })
          continue
        }
        const records = await cachedSince(store, h.record, p.key, after, r => checkRecord(r, h, state.list), cache)
        writers.push({ key: p.key, head: h.vguid, records })
      } else {
        const cut = p.cut
        if (cut.record === undefined) continue
        const records = await cachedSince(store, cut.record, p.key, after, r => {
          if (BigInt(r.n) > cut.n) throw new ReefError('VIEW_REMOVED', `log record ${r.n} of ${keyHex(p.key)} was made after its removal (cut at record ${cut.n})`)
        }, cache)
        writers.push({ key: p.key, ...(cut.vguid !== undefined ? { head: cut.vguid } : {}), records })
      }
    } catch (err) {
      if (!isReefError(err)) throw err
      leftOut.push({ key: p.key, code: err.code, message: err.message })
    }
  }
  return { writers, leftOut }
}
