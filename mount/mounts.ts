/** What the system's mount table says about FUSE mounts. */
import fs from 'node:fs'
import path from 'node:path'

const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))

/** True if `mnt` is a FUSE mount point according to /proc/mounts. */
export function isFuseMounted (mnt: string): boolean {
  const target = path.resolve(mnt)
  const mounts = fs.readFileSync('/proc/mounts', 'utf8')
  return mounts.split('\n').some((line) => {
    const f = line.split(' ')
    // /proc/mounts escapes space, tab, newline and backslash as octal.
    return unescape(f[1] ?? '') === target && (f[2] ?? '').startsWith('fuse')
  })
}

/**
 * Sets the kernel's read-ahead for the FUSE mount at `mnt` (its backing device's
 * read_ahead_kb in sysfs; the kernel's default for FUSE is 128 KiB). Found through
 * /proc/self/mountinfo, never by touching the mount: this runs in the process that serves it.
 * Throws if the mount is not found or sysfs refuses (a non-root mount).
 */
export function setReadAhead (mnt: string, kib: number): void {
  const abs = path.resolve(mnt)
  // The parent's real path (the mount point itself is this process's own mount: not touched).
  const target = path.join(fs.realpathSync(path.dirname(abs)), path.basename(abs))
  let dev: string | undefined
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    // id parent major:minor root mountpoint ...
    const f = line.split(' ')
    if (unescape(f[4] ?? '') === target) dev = f[2]
  }
  if (dev === undefined || !/^\d+:\d+$/.test(dev)) throw new Error(`no mount at ${target} in /proc/self/mountinfo`)
  fs.writeFileSync(`/sys/class/bdi/${dev}/read_ahead_kb`, String(kib))
}
