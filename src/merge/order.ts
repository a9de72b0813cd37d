/**
 * The merge order of log records (Ivy's): by version vector, ties between concurrent records
 * broken by writer key. A record's key is (sum of its version vector, writer key, counter). If
 * record a happened before b (b's writer had seen a: b.vv >= a.vv everywhere, and more
 * somewhere), a's sum is smaller, so the order extends causality; concurrent records with one sum
 * are ordered by writer key, so every node sorts one set of records the same way whatever order
 * they arrived in.
 */
import type { CID } from 'multiformats/cid'
import type { LogRecord } from '../log/record.js'

/** A record as the merge holds it: its writer's key in hex, its vv sum, its block id if known. */
export interface Ranked { r: LogRecord, w: string, sum: number, cid?: CID }

export function ranked (r: LogRecord, cid?: CID): Ranked {
  let sum = 0
  for (const v of Object.values(r.vv)) sum += v
  const out: Ranked = { r, w: Buffer.from(r.writer).toString('hex'), sum }
  if (cid !== undefined) out.cid = cid
  return out
}

export function compareRanked (a: Ranked, b: Ranked): number {
  if (a.sum !== b.sum) return a.sum - b.sum
  if (a.w !== b.w) return a.w < b.w ? -1 : 1
  return a.r.n - b.r.n
}

/** Whether the writer of `later` had seen record n of writer w when it wrote `later`. */
export function hasSeen (later: LogRecord, w: string, n: number): boolean {
  return (later.vv[w] ?? 0) >= n
}

/** Pointwise maximum of version vectors. */
export function joinVV (into: Record<string, number>, vv: Record<string, number>): Record<string, number> {
  for (const [w, n] of Object.entries(vv)) if ((into[w] ?? 0) < n) into[w] = n
  return into
}
