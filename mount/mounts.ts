/** What the system's mount table says about FUSE mounts. */
import fs from 'node:fs'
import path from 'node:path'

/** True if `mnt` is a FUSE mount point according to /proc/mounts. */
export function isFuseMounted (mnt: string): boolean {
  const target = path.resolve(mnt)
  const mounts = fs.readFileSync('/proc/mounts', 'utf8')
  return mounts.split('\n').some((line) => {
    const f = line.split(' ')
    // /proc/mounts escapes space, tab, newline and backslash as octal.
    const where = (f[1] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))
    return where === target && (f[2] ?? '').startsWith('fuse')
  })
}
