/**
 * Python 3 for the mount tests: it has the system calls Node lacks (mknod of every type,
 * utimensat with UTIME_NOW/UTIME_OMIT, renameat2). The interpreter is resolved once: a version
 * manager's `python3` shim can cost a second per start on a loaded machine.
 */
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from './mount.js'

export const PYTHON = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim()
/** The conformance case runner (see its docstring). */
export const POSIX_RUNNER = path.join(ROOT, 'test', 'helpers', 'posix', 'run.py')

export type SpecialKind = 'fifo' | 'socket' | 'chr' | 'blk'

export const FALLOC_FL_KEEP_SIZE = 1
export const FALLOC_FL_PUNCH_HOLE = 2
export const FALLOC_FL_ZERO_RANGE = 0x10

/** Serves one call per line of `req`, answering OK or the errno name on `resp`. */
const SERVER = `
import ctypes, errno, json, os, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
TYPES = {'fifo': stat.S_IFIFO, 'socket': stat.S_IFSOCK, 'chr': stat.S_IFCHR, 'blk': stat.S_IFBLK}

def fallocate(p, mode, off, length):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, 0o644)
    try:
        if libc.fallocate(fd, mode, off, length) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    finally:
        os.close(fd)

CALLS = {'mknod': lambda p, kind, dev: os.mknod(p, TYPES[kind] | 0o644, dev), 'fallocate': fallocate}
req = open(sys.argv[1], 'r')
resp = open(sys.argv[2], 'w')
for line in req:
    name, *args = json.loads(line)
    try:
        CALLS[name](*args)
        out = 'OK'
    except OSError as e:
        out = errno.errorcode.get(e.errno, str(e.errno))
    resp.write(out + '\\n')
    resp.flush()
`

export interface Syscalls {
  /** mknod(2) of a FIFO, socket or device node (mode 0644). */
  mknod: (p: string, kind: SpecialKind, rdev?: number) => void
  /** fallocate(2) on `p`, opened O_WRONLY|O_CREAT|O_NONBLOCK. */
  fallocate: (p: string, mode: number, offset: number, length: number) => void
}

/**
 * Synchronous system calls through one Python process, for tests that make thousands of them
 * in a loop (a Python start per call costs 20-200 ms). Calls and answers go through two FIFOs
 * in `dir`, which Node can read and write synchronously. Each call throws an error with the
 * errno's `code`, as Node's own fs calls do. Ends when the test does.
 */
export function syscalls (t: { teardown: (fn: () => void) => void }, dir: string): Syscalls {
  const req = path.join(dir, 'syscalls.req')
  const resp = path.join(dir, 'syscalls.resp')
  execFileSync('mkfifo', [req, resp])
  const child = spawn(PYTHON, ['-S', '-c', SERVER, req, resp], { stdio: 'inherit' })
  // Both sides open req first, then resp: each open waits for its peer, in the same order.
  const w = fs.openSync(req, 'w')
  const r = fs.openSync(resp, 'r')
  t.teardown(() => {
    fs.closeSync(w)
    fs.closeSync(r)
    child.kill()
  })
  const buf = Buffer.alloc(256)
  const call = (...args: unknown[]): void => {
    fs.writeSync(w, JSON.stringify(args) + '\n')
    let line = ''
    while (!line.endsWith('\n')) {
      const n = fs.readSync(r, buf, 0, buf.length, null)
      if (n === 0) throw new Error('the syscall server ended')
      line += buf.toString('utf8', 0, n)
    }
    const code = line.trim()
    if (code !== 'OK') throw Object.assign(new Error(`${String(args[0])} ${String(args[1])}: ${code}`), { code })
  }
  return {
    mknod: (p, kind, rdev = 0) => { call('mknod', p, kind, rdev) },
    fallocate: (p, mode, offset, length) => { call('fallocate', p, mode, offset, length) }
  }
}
