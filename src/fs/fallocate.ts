/**
 * fallocate(2) on reef: which modes exist, which reef serves, and the errno Linux gives for each
 * bad call, checked in the order of the kernel's vfs_fallocate (a FUSE request has passed those
 * checks already; callers of the fs core get the same answers).
 *
 * reef stores no preallocated blocks: content is chunks and hole links, so "allocating" a range
 * changes nothing but the size (mode 0) and the times. COLLAPSE_RANGE and INSERT_RANGE are
 * refused: Linux's FUSE module answers EOPNOTSUPP for them itself (fs/fuse/file.c accepts only
 * KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE), so no FUSE file system can receive them.
 */
import { ReefError } from '../errors.js'
import type { Kind } from '../object/dir.js'
import { MAX_FILE_SIZE } from '../object/file.js'

export const FALLOC_FL_KEEP_SIZE = 0x01
export const FALLOC_FL_PUNCH_HOLE = 0x02
export const FALLOC_FL_COLLAPSE_RANGE = 0x08
export const FALLOC_FL_ZERO_RANGE = 0x10
export const FALLOC_FL_INSERT_RANGE = 0x20

const SERVED = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE
const posix = ReefError.posix

/** Throws the errno Linux gives for a fallocate call that cannot be served. */
export function checkFallocate (kind: Kind, mode: number, offset: number, length: number): void {
  // Past 2^53 a number is still an integer, and past MAX_FILE_SIZE: EFBIG below, as Linux.
  if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length <= 0) {
    throw posix('EINVAL', 'fallocate offset must be >= 0 and length > 0')
  }
  if (!Number.isInteger(mode) || (mode & ~SERVED) !== 0) throw posix('ENOTSUP', `fallocate mode 0x${mode.toString(16)}`)
  if ((mode & FALLOC_FL_PUNCH_HOLE) !== 0 && (mode & FALLOC_FL_ZERO_RANGE) !== 0) throw posix('ENOTSUP', 'PUNCH_HOLE and ZERO_RANGE together')
  if ((mode & FALLOC_FL_PUNCH_HOLE) !== 0 && (mode & FALLOC_FL_KEEP_SIZE) === 0) throw posix('ENOTSUP', 'PUNCH_HOLE without KEEP_SIZE')
  if (kind === 'fifo') throw posix('ESPIPE', 'fallocate of a FIFO')
  if (kind === 'dir') throw posix('EISDIR', 'fallocate of a directory')
  if (kind !== 'file') throw posix('ENODEV', `fallocate of a ${kind}`)
  if (offset + length > MAX_FILE_SIZE) throw posix('EFBIG', 'fallocate past the maximum file size')
}

/** What a checked call does to a file of `size` bytes: zero [zeroFrom, zeroTo), then set the size. */
export function planFallocate (mode: number, offset: number, length: number, size: number): { zeroFrom: number, zeroTo: number, newSize: number } {
  const end = offset + length
  const zeroing = (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) !== 0
  return {
    zeroFrom: offset,
    zeroTo: zeroing ? Math.min(end, size) : offset,
    newSize: (mode & FALLOC_FL_KEEP_SIZE) === 0 ? Math.max(size, end) : size
  }
}
