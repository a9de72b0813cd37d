/**
 * One error class for all of reef, compared on its stable `code` (never on message text).
 * Factories keep codes and messages consistent; the FUSE adapter maps codes to errnos in one place.
 */
export type ReefErrorCode =
  | 'BAD_INPUT'
  | 'BAD_GUID'
  | 'NOT_FOUND'
  | 'BLOCK_CORRUPT'
  | 'BLOCK_TOO_LARGE'
  | 'STORE_CORRUPT'
  | 'BAD_ENCODING'
  | 'HEAD_MALFORMED'
  | 'HEAD_WRONG_KEY'
  | 'HEAD_BAD_SIGNATURE'
  | 'HEAD_ROLLBACK'
  | 'HEAD_FORK'
  | 'LOG_CORRUPT'
  | 'NO_IDENTITY'
  | 'NOT_REPLICATED'
  | 'IO'
  // Views (src/view): a shared file system's writer list and its writers' heads.
  | 'VIEW_BAD_KEY' | 'VIEW_NOT_OWNER' | 'VIEW_ALREADY_WRITER' | 'VIEW_NOT_WRITER' | 'VIEW_REMOVED'
  | 'VIEW_MALFORMED' | 'VIEW_BAD_SIGNATURE' | 'VIEW_ROLLBACK' | 'VIEW_CHAIN' | 'VIEW_STALE'
  // A directory whose tree could not be read: reported once when found, EIO for every reader.
  | 'DAMAGED'
  // POSIX-flavoured codes raised by the fs core; mount/ maps them to errnos.
  | 'ENOENT' | 'EEXIST' | 'ENOTEMPTY' | 'EISDIR' | 'ENOTDIR' | 'ENAMETOOLONG' | 'EFBIG'
  | 'EACCES' | 'EPERM' | 'EINVAL' | 'EROFS' | 'EBADF' | 'ENODATA' | 'ERANGE' | 'EXDEV'
  | 'ELOOP' | 'EMLINK' | 'ENOSPC' | 'ENOTSUP' | 'E2BIG' | 'ESPIPE' | 'ENODEV' | 'ESTALE'

export class ReefError extends Error {
  readonly code: ReefErrorCode
  override readonly cause?: unknown

  constructor (code: ReefErrorCode, message: string, cause?: unknown) {
    super(message)
    this.name = 'ReefError'
    this.code = code
    this.cause = cause
  }

  static badInput (what: string): ReefError { return new ReefError('BAD_INPUT', what) }
  static badGuid (text: string, why: string): ReefError {
    return new ReefError('BAD_GUID', `malformed GUID ${JSON.stringify(short(text))}: ${why}`)
  }
  static notFound (what: string): ReefError { return new ReefError('NOT_FOUND', `not found: ${what}`) }
  static blockCorrupt (guid: string, where: string): ReefError {
    return new ReefError('BLOCK_CORRUPT', `block ${guid} is corrupt in ${where}: its bytes do not hash to its BGUID`)
  }
  static badEncoding (what: string, cause?: unknown): ReefError {
    return new ReefError('BAD_ENCODING', `malformed ${what}`, cause)
  }
  /**
   * A POSIX outcome (ENOENT for a name that is not there, EEXIST...): an expected answer, not a
   * fault, so no stack trace is captured; a lookup that misses is a hot path (a compiler
   * probing include directories, `cp` checking its target) and the capture cost ~10 us.
   */
  static posix (code: ReefErrorCode, what: string): ReefError {
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    try {
      return new ReefError(code, `${code}: ${what}`)
    } finally {
      Error.stackTraceLimit = limit
    }
  }
}

export function isReefError (err: unknown, code?: ReefErrorCode): err is ReefError {
  return err instanceof ReefError && (code === undefined || err.code === code)
}

/**
 * A block that is missing, fails its hash or does not decode: damage to what a version names,
 * as opposed to a fault of the store itself or of the caller.
 */
export function isDamage (err: unknown): err is ReefError {
  return err instanceof ReefError && (err.code === 'NOT_FOUND' || err.code === 'BLOCK_CORRUPT' || err.code === 'BAD_ENCODING' || err.code === 'DAMAGED')
}

function short (s: string): string { return s.length > 80 ? s.slice(0, 77) + '...' : s }
