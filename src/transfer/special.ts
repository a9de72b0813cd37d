/**
 * Making FIFOs, Unix sockets and device nodes on the local disk, for `reef get`.
 *
 * Node has no mkfifo or mknod, so coreutils' `mkfifo` and `mknod` make them; a socket file is
 * what binding a listening socket leaves. Two limits shape how: a child's arguments are strings
 * (UTF-8), so a path that is not UTF-8 cannot be passed, and a socket path must fit in 108
 * bytes. Each node is therefore made under a short random ASCII name reached through the
 * parent directory's descriptor (/proc/self/fd/N/NAME: the directory, whatever its path), and
 * then renamed into place by its byte path. Nothing here opens the node itself: opening a FIFO
 * blocks until a writer comes, and a device is not ours to read.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import { ReefError } from '../errors.js'
import { devMajor, devMinor } from '../object/devnum.js'
import type { Kind } from '../object/dir.js'
import { parentBytes } from './paths.js'

/** CAP_MKNOD's bit in the capability sets of /proc/self/status. */
const CAP_MKNOD = 27n

/**
 * Whether this process may make device nodes: root, or any process with CAP_MKNOD in its
 * effective set. Without /proc, only uid 0 counts.
 */
export function mayMakeDevices (): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'latin1'))
    if (m !== null) return ((BigInt('0x' + m[1]) >> CAP_MKNOD) & 1n) === 1n
  } catch {}
  return process.getuid?.() === 0
}

/**
 * Runs a coreutils tool with the directory as its descriptor 3; a failure carries what it wrote
 * on stderr (in the C locale, so an EPERM reads the same everywhere).
 */
async function runTool (cmd: string, args: string[], dirFd: number): Promise<void> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe', dirFd], env: { ...process.env, LC_ALL: 'C' } })
  let err = ''
  child.stderr?.on('data', (b: Buffer) => { if (err.length < 2000) err += b.toString() })
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', resolve)
  })
  if (code !== 0) throw new Error(err.trim() !== '' ? err.trim() : `${cmd} exited with ${String(code)}`)
}

/** A socket file at `to`: bind a listening socket at `at`, rename its file to `to`, close it. */
async function bindSocket (at: string, to: Buffer): Promise<void> {
  const server = net.createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(at, resolve)
  })
  try {
    // libuv unlinks a server's path when it closes: the file survives only under another name.
    await fs.promises.rename(at, to)
  } finally {
    await new Promise<void>(resolve => server.close(() => resolve()))
  }
}

/**
 * Makes a node of `kind` ('fifo', 'socket', 'chr' or 'blk'; rdev for devices) at `out`, which
 * must not exist, with mode 0600 (the caller sets mode, owner and times). A device made without
 * the right to (see mayMakeDevices) fails with EPERM. Errors name the node as `shown`.
 */
export async function makeSpecial (out: Buffer, kind: Kind, rdev = 0, shown = out.toString()): Promise<void> {
  if (kind !== 'fifo' && kind !== 'socket' && kind !== 'chr' && kind !== 'blk') throw new Error(`not a special kind: ${kind}`)
  const dirFd = await fs.promises.open(parentBytes(out), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
  const tmpName = `.reef-node-${randomBytes(6).toString('hex')}.tmp`
  const tmp = Buffer.concat([parentBytes(out), Buffer.from('/' + tmpName)])
  try {
    if (kind === 'socket') {
      await bindSocket(`/proc/self/fd/${dirFd.fd}/${tmpName}`, out)
      return
    }
    // In the child, the directory is its descriptor 3.
    const at = `/proc/self/fd/3/${tmpName}`
    if (kind === 'fifo') await runTool('mkfifo', ['-m', '600', '--', at], dirFd.fd)
    else await runTool('mknod', ['-m', '600', '--', at, kind === 'chr' ? 'c' : 'b', String(devMajor(rdev)), String(devMinor(rdev))], dirFd.fd)
    await fs.promises.rename(tmp, out)
  } catch (err) {
    await fs.promises.unlink(tmp).catch(() => {})
    const msg = (err as Error).message
    const code = (err as NodeJS.ErrnoException).code
    if (code === undefined && /Operation not permitted/.test(msg)) throw ReefError.posix('EPERM', `cannot make ${kind} ${shown}: ${msg}`)
    throw new ReefError('IO', `cannot make ${kind} ${shown}: ${code !== undefined ? `${code} (${(err as NodeJS.ErrnoException).syscall ?? 'make'})` : msg}`, err)
  } finally {
    await dirFd.close()
  }
}
