/**
 * The one name format of a conflict copy (Syncthing's form):
 *
 *   <stem>.sync-conflict-<YYYYMMDD>-<HHMMSS>-<writer8>[-<k>]<ext>
 *
 * `stem` and `ext` split the original name at its last dot (`ext` keeps the dot; a name with no
 * dot, or whose only dot leads it, is all stem), so the copy sorts and globs next to the
 * original. The date and time (UTC) are those of the log record that made the copy's version
 * diverge, `writer8` the first 8 hex digits of that writer's public key, and `-<k>` (2, 3, ...)
 * is added only when the name is taken already. A stem that would push the name past 255 bytes
 * is shortened.
 *
 *   notes.txt  ->  notes.sync-conflict-20261206-204500-1a2b3c4d.txt
 *   Makefile   ->  Makefile.sync-conflict-20261206-204500-1a2b3c4d
 */
const MARK = '.sync-conflict-'
const PATTERN = /\.sync-conflict-\d{8}-\d{6}-[0-9a-f]{8}(-\d+)?/
const MAX_NAME = 255

const two = (v: number): string => String(v).padStart(2, '0')

export function conflictName (name: Uint8Array, timeMs: number, writer: Uint8Array, k = 1): Uint8Array {
  const b = Buffer.from(name)
  const dot = b.lastIndexOf(0x2e)
  const split = dot > 0 ? dot : b.length
  const d = new Date(timeMs)
  const when = `${d.getUTCFullYear()}${two(d.getUTCMonth() + 1)}${two(d.getUTCDate())}-${two(d.getUTCHours())}${two(d.getUTCMinutes())}${two(d.getUTCSeconds())}`
  const tag = Buffer.from(`${MARK}${when}-${Buffer.from(writer).toString('hex').slice(0, 8)}${k > 1 ? `-${k}` : ''}`)
  const ext = b.subarray(split)
  const stem = b.subarray(0, Math.max(0, Math.min(split, MAX_NAME - tag.length - ext.length)))
  return new Uint8Array(Buffer.concat([stem, tag, ext.length + stem.length + tag.length <= MAX_NAME ? ext : Buffer.alloc(0)]))
}

/** Whether a name is in the conflict-copy format. */
export function isConflictName (name: Uint8Array | string): boolean {
  return PATTERN.test(typeof name === 'string' ? name : Buffer.from(name).toString('latin1'))
}
