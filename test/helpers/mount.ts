/**
 * Helpers for the mount tests: a real `reef mount` daemon in a child process (the test process
 * never serves FUSE, so synchronous fs calls on the mount are fine here), the CLI as a child
 * process, commands run as another uid, and bounded polling instead of sleeps.
 *
 * The daemon's stderr goes to a file, not a pipe: a test blocked in a synchronous call can then
 * never stall a daemon that logs (Node writes to pipes synchronously), which would deadlock
 * both on the FUSE request in flight.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { isFuseMounted } from '../../mount/mounts.js'
import { rmTree } from './cli.js'

export { rmTree }

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const REEF_BIN = path.join(ROOT, 'dist', 'bin', 'reef.js')

interface TapLike { teardown: (fn: () => void | Promise<void>) => void }

/** Why the mount tests cannot run here, or false. */
export function skipReason (): string | false {
  if (process.platform !== 'linux') return 'FUSE mount tests need Linux'
  if (!fs.existsSync('/dev/fuse')) return '/dev/fuse is missing'
  if (process.getuid?.() !== 0) return 'needs root (allow_other, chown, setpriv to another uid)'
  if (!fs.existsSync(REEF_BIN)) return `${REEF_BIN} is missing: run npm run build`
  return false
}

/** Polls `cond` every `everyMs` until it is true; throws after `timeoutMs` with `what`. */
export async function waitFor (what: string, cond: () => boolean, timeoutMs = 30_000, everyMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (cond()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}

/** True if `mnt` is a FUSE mount point according to /proc/mounts (the daemon's own check). */
export const isMounted = isFuseMounted


/**
 * A fresh temp dir (mode 0755, so uid 1234 can reach mount points inside it), removed when the
 * test ends. Teardowns run in reverse order, so mounts started later are gone by then; a mount
 * still present is lazily unmounted first rather than recursed into.
 */
export function tempDir (t: TapLike, prefix = 'reef-mount-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  fs.chmodSync(d, 0o755)
  t.teardown(async () => {
    for (const m of live) if (m.mnt.startsWith(d + '/') || m.dataDir.startsWith(d + '/')) await m.stop()
    for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const where = line.split(' ')[1] ?? ''
      if (where.startsWith(d + '/')) { try { execFileSync('fusermount', ['-uz', where]) } catch {} }
    }
    rmTree(d)
  })
  return d
}

export interface RunResult { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string, out: Buffer, ms: number }

/**
 * Runs a command as a child process (async: never blocks this process), optionally as another
 * uid, killed after `timeoutMs` (default 180 s). Every test helper runs commands through this.
 */
export async function run (cmd: string, args: string[], opts: { cwd?: string, input?: string | Buffer, env?: NodeJS.ProcessEnv, uid?: number, timeoutMs?: number } = {}): Promise<RunResult> {
  const start = Date.now()
  let argv = [cmd, ...args]
  if (opts.uid !== undefined) argv = ['setpriv', '--reuid', String(opts.uid), '--regid', String(opts.uid), '--clear-groups', ...argv]
  return await new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { cwd: opts.cwd ?? os.tmpdir(), env: { ...process.env, NODE_NO_WARNINGS: '1', ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 180_000)
    child.stdout.on('data', (b: Buffer) => out.push(b))
    child.stderr.on('data', (b: Buffer) => err.push(b))
    child.on('error', reject)
    child.stdin.on('error', () => {})
    child.stdin.end(opts.input ?? '')
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const o = Buffer.concat(out)
      resolve({ code, signal, stdout: o.toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), out: o, ms: Date.now() - start })
    })
  })
}

/** Runs a shell command line (bash -c), e.g. for pipelines. */
export async function sh (line: string, opts: { cwd?: string, uid?: number, input?: string | Buffer } = {}): Promise<RunResult> {
  return await run('bash', ['-c', line], opts)
}

/** Runs `reef --data-dir DATA ...args`. */
export async function reef (dataDir: string, ...args: string[]): Promise<RunResult> {
  return await run(process.execPath, [REEF_BIN, '--data-dir', dataDir, ...args])
}

export const describe = (r: RunResult): string => `exit ${String(r.code)}${r.signal !== null ? ' ' + r.signal : ''}; stdout: ${r.stdout.slice(0, 600)}; stderr: ${r.stderr.slice(0, 1200)}`

export interface Mount {
  mnt: string
  dataDir: string
  proc: ChildProcess
  /** Everything the daemon wrote to stderr so far. */
  stderr: () => string
  /** Lines of stderr that report an exception which was not a POSIX outcome. */
  unexpected: () => string[]
  /** SIGTERM (fold + unmount), wait for exit (bounded); falls back to SIGKILL and fusermount -uz. */
  stop: () => Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** SIGKILL, wait for exit: leaves a stale FUSE mount behind, like a crash. */
  kill9: () => Promise<void>
  exited: () => boolean
}

export interface StartOptions {
  dataDir?: string
  mnt?: string
  /** Seconds (default: the CLI's). */
  foldInterval?: number
  extraArgs?: string[]
  /** `reef checkout VERSION MNT` instead of `reef mount MNT`. */
  checkout?: string
  /** Extra environment of the daemon (test hooks such as REEF_TEST_ENCODE_FAULT). */
  env?: NodeJS.ProcessEnv
}

let counter = 0
const live = new Set<Mount>()

/** Starts `reef mount` (or checkout) and resolves once the daemon says it is mounted and /proc/mounts agrees. */
export async function startMount (t: TapLike, opts: StartOptions = {}): Promise<Mount> {
  const base = opts.dataDir === undefined || opts.mnt === undefined ? tempDir(t) : undefined
  const dataDir = opts.dataDir ?? path.join(base as string, 'data')
  const mnt = opts.mnt ?? path.join(base as string, 'mnt')
  const errFile = path.join(os.tmpdir(), `reef-mount-${process.pid}-${++counter}.stderr`)
  const fd = fs.openSync(errFile, 'w')
  const args = opts.checkout !== undefined
    ? ['checkout', opts.checkout, mnt]
    : ['mount', mnt, ...(opts.foldInterval !== undefined ? ['--fold-interval', String(opts.foldInterval)] : [])]
  const proc = spawn(process.execPath, [REEF_BIN, '--data-dir', dataDir, ...args, ...(opts.extraArgs ?? [])], {
    stdio: ['ignore', 'ignore', fd],
    env: { ...process.env, NODE_NO_WARNINGS: '1', ...opts.env }
  })
  fs.closeSync(fd)
  let exit: { code: number | null, signal: NodeJS.Signals | null } | undefined
  const exitP = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => {
    proc.on('exit', (code, signal) => { exit = { code, signal }; resolve(exit) })
  })
  const stderr = (): string => { try { return fs.readFileSync(errFile, 'utf8') } catch { return '' } }
  const waitExit = async (ms: number): Promise<boolean> => {
    if (exit !== undefined) return true
    return await Promise.race([exitP.then(() => true), new Promise<boolean>(resolve => setTimeout(() => resolve(false), ms).unref())])
  }
  let stopped: Promise<{ code: number | null, signal: NodeJS.Signals | null }> | undefined
  const stop = async (): Promise<{ code: number | null, signal: NodeJS.Signals | null }> => {
    stopped ??= (async () => {
      if (exit === undefined) {
        proc.kill('SIGTERM')
        if (!(await waitExit(60_000))) {
          proc.kill('SIGKILL')
          await waitExit(10_000)
        }
      }
      if (isMounted(mnt)) { try { execFileSync('fusermount', ['-uz', mnt]) } catch {} }
      return exit ?? { code: null, signal: null }
    })()
    return await stopped
  }
  const m: Mount = {
    mnt,
    dataDir,
    proc,
    stderr,
    unexpected: () => stderr().split('\n').filter(l => /unexpected|internal error/i.test(l)),
    stop,
    kill9: async () => {
      if (exit === undefined) proc.kill('SIGKILL')
      if (!(await waitExit(30_000))) throw new Error('daemon did not die on SIGKILL')
      stopped = Promise.resolve(exit ?? { code: null, signal: 'SIGKILL' })
    },
    exited: () => exit !== undefined
  }
  live.add(m)
  t.teardown(async () => {
    await stop()
    live.delete(m)
    fs.rmSync(errFile, { force: true })
  })
  try {
    await waitFor(`"reef: mounted" from the daemon on ${mnt}`, () => {
      if (exit !== undefined) throw new Error(`reef ${args.join(' ')} exited (${exit.code ?? exit.signal}) before mounting:\n${stderr()}`)
      return /^reef: mounted /m.test(stderr()) && isMounted(mnt)
    }, 30_000)
  } catch (err) {
    await stop()
    throw err
  }
  return m
}

/** The errno code (e.g. 'ENOENT') a synchronous fs call fails with, or 'OK'. */
export function errnoOf (fn: () => unknown): string {
  try {
    fn()
    return 'OK'
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err)
  }
}
