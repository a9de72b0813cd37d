/**
 * The one place where reef errors become errnos (after gocryptfs's fs.ToErrno). Every FUSE
 * handler's failure passes through `toErrno`; anything unexpected is EIO and a log line,
 * never an exception escaping into the binding.
 */
import os from 'node:os'
import { ReefError, type ReefErrorCode } from '../src/errors.js'

const E = os.constants.errno

/** Every code reef has, so a new code does not compile until it is given its errno here. */
const BY_CODE: Record<ReefErrorCode, number> = {
  ENOENT: E.ENOENT,
  EEXIST: E.EEXIST,
  ENOTEMPTY: E.ENOTEMPTY,
  EISDIR: E.EISDIR,
  ENOTDIR: E.ENOTDIR,
  ENAMETOOLONG: E.ENAMETOOLONG,
  EFBIG: E.EFBIG,
  EACCES: E.EACCES,
  EPERM: E.EPERM,
  EINVAL: E.EINVAL,
  EROFS: E.EROFS,
  EBADF: E.EBADF,
  ENODATA: E.ENODATA,
  ERANGE: E.ERANGE,
  EXDEV: E.EXDEV,
  ELOOP: E.ELOOP,
  EMLINK: E.EMLINK,
  ENOSPC: E.ENOSPC,
  ENOTSUP: E.EOPNOTSUPP,
  E2BIG: E.E2BIG,
  ESPIPE: E.ESPIPE,
  ENODEV: E.ENODEV,
  // An inode number the kernel still holds and reef no longer knows (the kernel looks the name
  // up again and retries once).
  ESTALE: E.ESTALE,
  BAD_INPUT: E.EINVAL,
  // A block that is missing or fails verification is an I/O error for the reader.
  NOT_FOUND: E.EIO,
  BLOCK_CORRUPT: E.EIO,
  BAD_ENCODING: E.EIO,
  IO: E.EIO,
  // Faults of the store, the log or the network under a read or a write: the caller sees an I/O
  // error, and the daemon logs the code and message.
  BAD_GUID: E.EIO,
  BLOCK_TOO_LARGE: E.EIO,
  STORE_CORRUPT: E.EIO,
  HEAD_MALFORMED: E.EIO,
  HEAD_WRONG_KEY: E.EIO,
  HEAD_BAD_SIGNATURE: E.EIO,
  HEAD_ROLLBACK: E.EIO,
  HEAD_FORK: E.EIO,
  LOG_CORRUPT: E.EIO,
  NO_IDENTITY: E.EIO,
  NOT_REPLICATED: E.EIO,
  // Already reported once, with path and GUID, when it was found (src/fs): not again per reader.
  DAMAGED: E.EIO,
  // Views: who may write is a permission; a bad or stale record under a read is an I/O error.
  VIEW_BAD_KEY: E.EINVAL,
  VIEW_NOT_OWNER: E.EPERM,
  VIEW_ALREADY_WRITER: E.EEXIST,
  VIEW_NOT_WRITER: E.EPERM,
  VIEW_REMOVED: E.EPERM,
  VIEW_MALFORMED: E.EIO,
  VIEW_BAD_SIGNATURE: E.EIO,
  VIEW_ROLLBACK: E.EIO,
  VIEW_CHAIN: E.EIO,
  VIEW_STALE: E.EIO
}

export type Logger = (line: string) => void

/** An exception on one log line: its stack with the frames joined (never throws). */
export function describeError (err: unknown): string {
  try {
    const text = err instanceof Error ? err.stack ?? `${err.name}: ${err.message}` : String(err)
    return text.replace(/\n\s*/g, ' | ')
  } catch {
    return 'an exception that cannot be described'
  }
}

/** Negative errno for any thrown value; logs what is not an ordinary POSIX outcome. */
export function toErrno (err: unknown, op: string, log: Logger): number {
  if (err instanceof ReefError) {
    // A code outside the type (a cast somewhere) is EIO too.
    const n = BY_CODE[err.code] ?? E.EIO
    if (n === E.EIO && err.code !== 'DAMAGED') log(`${op}: ${err.code}: ${err.message}`)
    return -n
  }
  const sys = (err as NodeJS.ErrnoException)?.code
  if (typeof sys === 'string' && typeof (E as Record<string, number>)[sys] === 'number') {
    return -(E as Record<string, number>)[sys]
  }
  log(`${op}: unexpected ${describeError(err)}`)
  return -E.EIO
}

export const ERRNO = E
