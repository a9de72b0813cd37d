/**
 * Local paths as bytes. Names on Linux are bytes, not text: a name that is not UTF-8 reaches
 * put and get as a Buffer, and everything done to it (resolving, taking its parent) must keep
 * every byte.
 */
import path from 'node:path'

/**
 * path.resolve for a name given as bytes or text: as latin1 every byte is one character, so
 * resolving (which only looks at '/' and '.') keeps every other byte as it was.
 */
export function resolveBytes (target: string | Buffer, cwd = process.cwd()): Buffer {
  if (typeof target === 'string') return Buffer.from(path.resolve(cwd, target))
  return Buffer.from(path.posix.resolve(Buffer.from(cwd).toString('latin1'), target.toString('latin1')), 'latin1')
}

/** The parent directory of an absolute path given as bytes. */
export function parentBytes (abs: Buffer): Buffer {
  const i = abs.lastIndexOf(0x2f)
  return i <= 0 ? Buffer.from('/') : abs.subarray(0, i)
}

/** The last name of an absolute path given as bytes ('/' for the root itself). */
export function baseBytes (abs: Buffer): Buffer {
  const name = abs.subarray(abs.lastIndexOf(0x2f) + 1)
  return name.length > 0 ? name : Buffer.from('/')
}
