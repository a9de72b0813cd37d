/**
 * Child processes for the benchmarks: timed tool runs, long-lived daemons whose output goes to
 * files (never pipes: a daemon that logs while this process is busy could otherwise block on a
 * full pipe, and with it the FUSE request the benchmark is waiting for), bounded polling, and a
 * cleanup registry that also runs on Ctrl-C, so no mount or daemon outlives the benchmark.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { isFuseMounted } from '../../mount/mounts.js'

/** The repository root, found from this file's place (ROOT/dist/bench/phases/proc.js). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
export const REEF_BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'reef.js')

export const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

export interface RunResult { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string, seconds: number }

/** Runs a command to completion (async: this process keeps serving timers and signals). */
export async function run (cmd: string, args: string[], opts: { cwd?: string, env?: NodeJS.ProcessEnv, timeoutMs?: number, stdoutFile?: string } = {}): Promise<RunResult> {
  const outFd = opts.stdoutFile !== undefined ? fs.openSync(opts.stdoutFile, 'w') : undefined
  const t0 = process.hrtime.bigint()
  return await new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, NODE_NO_WARNINGS: '1', ...opts.env },
      stdio: ['ignore', outFd ?? 'pipe', 'pipe']
    })
    if (outFd !== undefined) fs.closeSync(outFd)
    const out: Buffer[] = []
    const err: Buffer[] = []
    const timer = opts.timeoutMs !== undefined ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined
    child.stdout?.on('data', (b: Buffer) => out.push(b))
    child.stderr?.on('data', (b: Buffer) => err.push(b))
    child.on('error', reject)
    child.on('close', (code, signal) => {
      if (timer !== undefined) clearTimeout(timer)
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), seconds: Number(process.hrtime.bigint() - t0) / 1e9 })
    })
  })
}

/** `bash -c line` in `cwd`; throws with the tail of stderr on failure. */
export async function sh (line: string, cwd: string, opts: { timeoutMs?: number, stdoutFile?: string } = {}): Promise<RunResult> {
  const r = await run('bash', ['-c', line], { cwd, ...opts })
  if (r.code !== 0) throw new Error(`\`${line}\` in ${cwd} failed (${r.code ?? r.signal}): ${r.stderr.slice(-1500)}`)
  return r
}

/** Polls `cond` until true; throws after `timeoutMs` naming `what`. Never a fixed sleep. */
export async function waitFor (what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 30_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await cond()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(everyMs)
  }
}

export { isFuseMounted }

// ---- cleanup registry -------------------------------------------------------------------------

type Cleanup = () => Promise<void>
const cleanups = new Set<Cleanup>()
const liveChildren = new Set<ChildProcess>()
const liveMounts = new Set<string>()

/** Registers `fn` to run at cleanupAll() (and on SIGINT/SIGTERM); returns an unregister function. */
export function onCleanup (fn: Cleanup): () => void {
  cleanups.add(fn)
  return () => { cleanups.delete(fn) }
}

/** Runs every registered cleanup, newest first. */
export async function cleanupAll (): Promise<void> {
  for (const fn of [...cleanups].reverse()) {
    cleanups.delete(fn)
    await fn().catch(err => process.stderr.write(`bench: cleanup: ${(err as Error).message}\n`))
  }
}

/** Runs a benchmark's main: a failure is logged, everything started is cleaned up, exit code 1. */
export function runMain (main: () => Promise<void>, log: (s: string) => void): void {
  main().catch(async err => {
    log(`failed: ${(err as Error).stack ?? String(err)}`)
    await cleanupAll()
    process.exitCode = 1
  })
}

export const trackMount = (mnt: string): void => { liveMounts.add(mnt) }
export const untrackMount = (mnt: string): void => { liveMounts.delete(mnt) }

/** Lazily unmounts `mnt` if it is still a FUSE mount (the daemon died or would not stop). */
export function forceUnmount (mnt: string): void {
  if (!isFuseMounted(mnt)) return
  try { execFileSync('fusermount', ['-uz', mnt], { stdio: 'ignore' }) } catch {}
}

let signalled = false
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    if (signalled) return
    signalled = true
    process.stderr.write(`bench: ${sig}: tearing down mounts and daemons\n`)
    void cleanupAll().finally(() => process.exit(130))
  })
}
// Last resort if the process exits without running the registry (an exception, process.exit).
process.on('exit', () => {
  for (const c of liveChildren) { try { c.kill('SIGKILL') } catch {} }
  for (const m of liveMounts) forceUnmount(m)
})

export interface Daemon {
  proc: ChildProcess
  stdout: () => string
  stderr: () => string
  exited: () => boolean
  /** SIGTERM, bounded wait, then SIGKILL; true if it exited on SIGTERM with code 0. */
  stop: (graceMs?: number) => Promise<boolean>
}

/** Starts `reef --data-dir DATA ...args` in the background, output to files in `logDir`. */
export function startReef (name: string, dataDir: string, args: string[], logDir: string): Daemon {
  fs.mkdirSync(logDir, { recursive: true })
  const outFile = path.join(logDir, `${name}.stdout`)
  const errFile = path.join(logDir, `${name}.stderr`)
  const outFd = fs.openSync(outFile, 'w')
  const errFd = fs.openSync(errFile, 'w')
  // REEF_BENCH_DAEMON_NODE_ARGS profiles the daemons only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
  // (node flags on the command line: NODE_OPTIONS refuses --cpu-prof).
  const nodeArgs = (process.env.REEF_BENCH_DAEMON_NODE_ARGS ?? '').split(/\s+/).filter(a => a !== '')
  const proc = spawn(process.execPath, [...nodeArgs, REEF_BIN, '--data-dir', dataDir, ...args], {
    stdio: ['ignore', outFd, errFd],
    env: { ...process.env, NODE_NO_WARNINGS: '1' }
  })
  fs.closeSync(outFd)
  fs.closeSync(errFd)
  liveChildren.add(proc)
  let exit: { code: number | null, signal: NodeJS.Signals | null } | undefined
  const exitP = new Promise<void>(resolve => proc.on('exit', (code, signal) => { exit = { code, signal }; liveChildren.delete(proc); resolve() }))
  const read = (f: string) => (): string => { try { return fs.readFileSync(f, 'utf8') } catch { return '' } }
  const waitExit = async (ms: number): Promise<boolean> => {
    if (exit !== undefined) return true
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(exit !== undefined), ms) })
    try {
      return await Promise.race([exitP.then(() => true), expired])
    } finally {
      clearTimeout(timer)
    }
  }
  return {
    proc,
    stdout: read(outFile),
    stderr: read(errFile),
    exited: () => exit !== undefined,
    stop: async (graceMs = 120_000) => {
      if (exit === undefined) {
        proc.kill('SIGTERM')
        if (!(await waitExit(graceMs))) {
          process.stderr.write(`bench: ${name} did not exit ${graceMs} ms after SIGTERM; SIGKILL\n`)
          proc.kill('SIGKILL')
          await waitExit(10_000)
        }
      }
      return exit?.code === 0 && exit.signal === null
    }
  }
}

/** Runs a short `reef` CLI command (status, sync) and parses its --json output. */
export async function reefJson<T> (dataDir: string, args: string[], timeoutMs = 180_000): Promise<T> {
  const r = await run(process.execPath, [REEF_BIN, '--data-dir', dataDir, ...args, '--json'], { timeoutMs })
  if (r.code !== 0) throw new Error(`reef ${args.join(' ')} failed (${r.code ?? r.signal}): ${r.stderr.slice(-800)}`)
  return JSON.parse(r.stdout) as T
}

/** Drops the page, dentry and inode caches (root only); false if not allowed. */
export function dropCaches (): boolean {
  try {
    execFileSync('sync')
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3')
    return true
  } catch {
    return false
  }
}
