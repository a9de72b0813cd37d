/**
 * Helpers for the CLI tests: run `node dist/bin/reef.js` as a real child process, read its
 * error code, make and remove temp dirs, look inside the LMDB store, and compare two trees
 * byte for byte (names as Buffers, so non-UTF-8 names compare exactly).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { open } from 'lmdb'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const REEF_BIN = path.join(ROOT, 'dist', 'bin', 'reef.js')

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: Buffer
  /** stdout as UTF-8 text. */
  out: string
  stderr: string
}

export interface RunOptions {
  input?: Buffer | string
  cwd?: string
  env?: NodeJS.ProcessEnv
}

/** Runs `reef --data-dir DATA ...args`; resolves (never rejects) with the exit code and output. */
export async function reef (dataDir: string | undefined, args: string[], opts: RunOptions = {}): Promise<CliResult> {
  const argv = [REEF_BIN, ...(dataDir !== undefined ? ['--data-dir', dataDir] : []), ...args]
  const child = spawn(process.execPath, argv, {
    cwd: opts.cwd ?? os.tmpdir(),
    env: { ...process.env, NODE_NO_WARNINGS: '1', ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe']
  })
  child.stdin.on('error', () => {}) // the child may exit before reading all of stdin
  child.stdin.end(opts.input ?? '')
  return await collect(child)
}

/** Resolves (never rejects on exit) with a child's exit code and everything it wrote. */
async function collect (child: ChildProcess): Promise<CliResult> {
  return await new Promise((resolve, reject) => {
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout?.on('data', (b: Buffer) => out.push(b))
    child.stderr?.on('data', (b: Buffer) => err.push(b))
    child.on('error', reject)
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out)
      resolve({ code, signal, stdout, out: stdout.toString('utf8'), stderr: Buffer.concat(err).toString('utf8') })
    })
  })
}

/**
 * Runs `reef --data-dir DATA <words>` through sh, for arguments a JS string cannot carry: Node
 * encodes spawn's arguments as UTF-8, so a name that is not UTF-8 is made by the shell instead,
 * e.g. words = `put "$DIR/$(printf 'n\\377')"` with DIR in `opts.env`.
 */
export async function reefShell (dataDir: string, words: string, opts: { env?: NodeJS.ProcessEnv, cwd?: string } = {}): Promise<CliResult> {
  return await collect(spawn('/bin/sh', ['-c', `exec "$REEF_NODE" "$REEF_BIN" --data-dir "$REEF_DATA" ${words}`], {
    cwd: opts.cwd ?? os.tmpdir(),
    env: { ...process.env, NODE_NO_WARNINGS: '1', REEF_NODE: process.execPath, REEF_BIN, REEF_DATA: dataDir, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe']
  }))
}

/** util-linux's script(1), which runs a command on a pseudo-terminal (Debian: bsdutils, Essential). */
export const SCRIPT_BIN = ['/usr/bin/script', '/bin/script'].find(p => fs.existsSync(p))

/**
 * Runs `reef --data-dir DATA ...args` with its stdin, stdout and stderr on a pseudo-terminal (by
 * script -qfec); `stdout` is everything the terminal showed, stderr included. Needs SCRIPT_BIN.
 */
export async function reefPty (dataDir: string, args: string[]): Promise<CliResult> {
  const quote = (a: string): string => `'${a.replace(/'/g, "'\\''")}'`
  const cmd = ['exec', process.execPath, REEF_BIN, '--data-dir', dataDir, ...args].map(quote).join(' ')
  return await collect(spawn(SCRIPT_BIN ?? 'script', ['-qfec', cmd, '/dev/null'], {
    cwd: os.tmpdir(),
    env: { ...process.env, NODE_NO_WARNINGS: '1', SHELL: '/bin/sh' },
    stdio: ['ignore', 'pipe', 'pipe']
  }))
}

export interface Daemon {
  /** Everything written to stdout / stderr so far. */
  stdout: () => string
  stderr: () => string
  exited: () => { code: number | null, signal: NodeJS.Signals | null } | undefined
  /** Waits (bounded) for the process to exit on its own; SIGKILL after `ms`. */
  waitExit: (ms: number) => Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

/**
 * Starts a long-running `reef --data-dir DATA ...args` (node, mount, checkout) with stdout and
 * stderr in files (never pipes a test might stop reading), killed at teardown if still running.
 */
export function startDaemon (t: { teardown: (fn: () => void | Promise<void>) => void }, dataDir: string, args: string[]): Daemon {
  const logs = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-daemon-'))
  const ofd = fs.openSync(path.join(logs, 'stdout'), 'w')
  const efd = fs.openSync(path.join(logs, 'stderr'), 'w')
  const child = spawn(process.execPath, [REEF_BIN, '--data-dir', dataDir, ...args], {
    cwd: os.tmpdir(),
    env: { ...process.env, NODE_NO_WARNINGS: '1' },
    stdio: ['ignore', ofd, efd]
  })
  fs.closeSync(ofd)
  fs.closeSync(efd)
  let exit: { code: number | null, signal: NodeJS.Signals | null } | undefined
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => {
    child.on('exit', (code, signal) => { exit = { code, signal }; resolve(exit) })
  })
  const read = (f: string) => (): string => { try { return fs.readFileSync(path.join(logs, f), 'utf8') } catch { return '' } }
  const waitExit = async (ms: number): Promise<{ code: number | null, signal: NodeJS.Signals | null }> => {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<undefined>(resolve => { timer = setTimeout(() => resolve(undefined), ms) })
    const r = await Promise.race([exited, late])
    clearTimeout(timer)
    if (r !== undefined) return r
    child.kill('SIGKILL')
    return await exited
  }
  t.teardown(async () => {
    if (exit === undefined) {
      child.kill('SIGTERM')
      await waitExit(30_000)
    }
    fs.rmSync(logs, { recursive: true, force: true })
  })
  return { stdout: read('stdout'), stderr: read('stderr'), exited: () => exit, waitExit }
}

/** Polls `cond` every `everyMs` until it returns true; throws after `timeoutMs` naming `what`. */
export async function waitUntil (what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 30_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await cond()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}

/** The bracketed error code ending the CLI's error line, e.g. "BAD_GUID", or undefined. */
export function errorCode (r: CliResult): string | undefined {
  const m = /\[([A-Z0-9_]+)\]\s*$/.exec(r.stderr)
  return m?.[1]
}

/** The last word of the last non-empty line of stdout (where put prints its GUID). */
export function lastWord (r: CliResult): string {
  const lines = r.out.split('\n').filter(l => l.trim() !== '')
  const words = (lines.at(-1) ?? '').trim().split(/\s+/)
  return words.at(-1) ?? ''
}

/** Describes a result for assertion messages. */
export function show (r: CliResult): string {
  // eslint-disable-next-line no-control-regex
  const text = /^[\t\n\x20-\x7e\u00a0-\uffff]*$/.test(r.out) && !r.out.includes('\ufffd') ? r.out.slice(0, 400) : `<${r.stdout.length} bytes>`
  return `exit ${String(r.code)}${r.signal !== null ? ' ' + r.signal : ''}; stdout: ${text}; stderr: ${r.stderr.slice(0, 800)}`
}

/** Removes a tree even if it holds read-only directories (mode 0555 and the like). */
export function rmTree (p: string | Buffer): void {
  const walk = (q: Buffer): void => {
    let st: fs.Stats
    try { st = fs.lstatSync(q) } catch { return }
    if (!st.isDirectory()) return
    try { fs.chmodSync(q, 0o700) } catch {}
    for (const n of fs.readdirSync(q, { encoding: 'buffer' })) walk(Buffer.concat([q, Buffer.from('/'), n]))
  }
  walk(Buffer.isBuffer(p) ? p : Buffer.from(p))
  fs.rmSync(p, { recursive: true, force: true })
}

/** A fresh temp dir removed when the test ends. */
export function tempDir (t: { teardown: (fn: () => void) => void }, prefix = 'reef-cli-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  t.teardown(() => rmTree(d))
  return d
}

export const STORE_DIR = (dataDir: string): string => path.join(dataDir, 'store')

/** Everything a failed command must leave alone: every block key and every head record (hex). */
export async function storeSnapshot (dataDir: string): Promise<{ blocks: string[], heads: string[] }> {
  const env = open({ path: STORE_DIR(dataDir), compression: false, maxDbs: 8 })
  try {
    const blocks = env.openDB<Buffer, Buffer>({ name: 'blocks', keyEncoding: 'binary', encoding: 'binary' })
    const heads = env.openDB<Buffer, Buffer>({ name: 'heads', keyEncoding: 'binary', encoding: 'binary' })
    const b: string[] = []
    for (const k of blocks.getKeys()) b.push(Buffer.from(k as Buffer).toString('hex'))
    const h: string[] = []
    for (const { key, value } of heads.getRange({})) h.push(`${Buffer.from(key as Buffer).toString('hex')}=${Buffer.from(value as Buffer).toString('hex')}`)
    return { blocks: b.sort(), heads: h.sort() }
  } finally {
    await env.close()
  }
}

/**
 * Every name under `dir` (as bytes) with its kind and, for files, the sha256 of its bytes: what a
 * failed command must leave alone when the store cannot even be opened (a corrupt data.mdb).
 */
export function dirDigest (dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  const walk = (p: Buffer, rel: string): void => {
    const st = fs.lstatSync(p)
    if (st.isDirectory()) {
      out[rel + '/'] = 'dir'
      for (const n of fs.readdirSync(p, { encoding: 'buffer' })) walk(join(p, n), `${rel}/${n.toString('latin1')}`)
    } else if (st.isFile()) {
      out[rel] = createHash('sha256').update(fs.readFileSync(p)).digest('hex')
    } else {
      out[rel] = st.isSymbolicLink() ? 'symlink' : 'other'
    }
  }
  walk(Buffer.from(dir), '.')
  return out
}

/** Overwrites the stored bytes of a block (keyed by its 32-byte sha256 digest) with `bytes`. */
export async function overwriteBlock (dataDir: string, digest: Uint8Array, bytes: (old: Buffer) => Buffer): Promise<void> {
  const env = open({ path: STORE_DIR(dataDir), compression: false, maxDbs: 8 })
  try {
    const blocks = env.openDB<Buffer, Buffer>({ name: 'blocks', keyEncoding: 'binary', encoding: 'binary' })
    const key = Buffer.from(digest)
    const old = blocks.getBinary(key)
    if (old === undefined) throw new Error(`no block ${key.toString('hex')} in the store`)
    await blocks.put(key, bytes(Buffer.from(old)))
  } finally {
    await env.close()
  }
}

// ---------------------------------------------------------------------------------------------
// Special files

export type SpecialKind = 'fifo' | 'socket' | 'chr' | 'blk'

// Names are bytes, which a child's arguments cannot carry: the paths go on stdin. A socket is
// bound under a short name in its directory (sun_path holds 108 bytes) and renamed into place.
const MAKE_NODES_PY = `
import base64, json, os, socket, stat, sys
for it in json.load(sys.stdin):
    p = base64.b64decode(it['path'])
    d, _, name = p.rpartition(b'/')
    if it['kind'] == 'socket':
        cwd = os.open('.', os.O_RDONLY)
        os.chdir(d or b'/')
        s = socket.socket(socket.AF_UNIX)
        s.bind(b'.reef-test-sock')
        os.rename(b'.reef-test-sock', name)
        s.close()
        os.fchdir(cwd)
    else:
        t = {'fifo': stat.S_IFIFO, 'chr': stat.S_IFCHR, 'blk': stat.S_IFBLK}[it['kind']]
        os.mknod(p, 0o600 | t, os.makedev(it['major'], it['minor']))
    os.chmod(p, it['mode'])
`

/**
 * Makes FIFOs, Unix sockets and device nodes (devices need root) with python3, independently of
 * the code under test, at paths given as bytes; throws with python's message on failure.
 */
export function makeNodes (items: Array<{ path: string | Buffer, kind: SpecialKind, mode?: number, major?: number, minor?: number }>): void {
  const input = JSON.stringify(items.map(it => ({ path: Buffer.from(it.path).toString('base64'), kind: it.kind, mode: it.mode ?? 0o644, major: it.major ?? 0, minor: it.minor ?? 0 })))
  const r = spawnSync('python3', ['-c', MAKE_NODES_PY], { input, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`making ${items.length} special files failed: ${r.stderr ?? String(r.error)}`)
}

// ---------------------------------------------------------------------------------------------
// Tree comparison

/** Time arguments for fs.utimes that set `ns` exactly to the microsecond (see src/transfer/get.ts). */
export function utimeArg (ns: bigint): string {
  const us = ns / 1000n
  const aim = us * 1000n + (ns < 0n ? -500n : 500n)
  const neg = aim < 0n
  const abs = neg ? -aim : aim
  return `${neg ? '-' : ''}${abs / 1_000_000_000n}.${(abs % 1_000_000_000n).toString().padStart(9, '0')}`
}

/** |t| below this (2^33 s, years 1698..2242) restores exact to the microsecond; beyond, within ~2 µs. */
export const EXACT_US_LIMIT_NS = (2n ** 33n) * 1_000_000_000n

/** What `reef get` guarantees for a stored nanosecond time: truncation toward zero to whole µs. */
export function expectedMtime (ns: bigint): bigint { return (ns / 1000n) * 1000n }

export function mtimeMatches (orig: bigint, restored: bigint): boolean {
  const abs = orig < 0n ? -orig : orig
  if (abs < EXACT_US_LIMIT_NS) return restored === expectedMtime(orig)
  const d = restored - orig
  return (d < 0n ? -d : d) <= 3000n
}

const join = (a: Buffer, n: Buffer): Buffer => Buffer.concat([a, Buffer.from('/'), n])
const shown = (rel: Buffer): string => JSON.stringify(rel.toString('latin1'))

export interface CompareOptions {
  /** Compare the top item's own mode and mtime too (default true). */
  top?: boolean
}

/**
 * Compares trees `a` (original) and `b` (restored): names (as bytes), kinds, file bytes, modes,
 * mtimes (see mtimeMatches), uid/gid, symlink targets and device numbers. Returns one line per
 * difference.
 */
export function compareTrees (a: string | Buffer, b: string | Buffer, opts: CompareOptions = {}): string[] {
  const diffs: string[] = []
  const visit = (pa: Buffer, pb: Buffer, rel: Buffer, top: boolean): void => {
    const sa = fs.lstatSync(pa, { bigint: true })
    let sb: fs.BigIntStats
    try { sb = fs.lstatSync(pb, { bigint: true }) } catch (err) {
      diffs.push(`${shown(rel)}: missing in restored tree (${(err as NodeJS.ErrnoException).code})`)
      return
    }
    if (kindOf(sa) !== kindOf(sb)) {
      diffs.push(`${shown(rel)}: kind ${kindOf(sa)} != ${kindOf(sb)}`)
      return
    }
    if ((sa.isCharacterDevice() || sa.isBlockDevice()) && sa.rdev !== sb.rdev) diffs.push(`${shown(rel)}: rdev ${sa.rdev} != ${sb.rdev}`)
    if (!top || opts.top !== false) {
      if (!sa.isSymbolicLink() && (sa.mode & 0o7777n) !== (sb.mode & 0o7777n)) diffs.push(`${shown(rel)}: mode ${sa.mode.toString(8)} != ${sb.mode.toString(8)}`)
      if (!mtimeMatches(sa.mtimeNs, sb.mtimeNs)) diffs.push(`${shown(rel)}: mtime ${sa.mtimeNs} != ${sb.mtimeNs} (expected ${expectedMtime(sa.mtimeNs)})`)
      if (sa.uid !== sb.uid || sa.gid !== sb.gid) diffs.push(`${shown(rel)}: owner ${sa.uid}:${sa.gid} != ${sb.uid}:${sb.gid}`)
    }
    if (sa.isSymbolicLink()) {
      const ta = fs.readlinkSync(pa, { encoding: 'buffer' })
      const tb = fs.readlinkSync(pb, { encoding: 'buffer' })
      if (!ta.equals(tb)) diffs.push(`${shown(rel)}: symlink target ${shown(ta)} != ${shown(tb)}`)
    } else if (sa.isFile()) {
      if (sa.size !== sb.size) diffs.push(`${shown(rel)}: size ${sa.size} != ${sb.size}`)
      else if (!fs.readFileSync(pa).equals(fs.readFileSync(pb))) diffs.push(`${shown(rel)}: contents differ`)
    } else if (sa.isDirectory()) {
      const na = fs.readdirSync(pa, { encoding: 'buffer' }).sort(Buffer.compare)
      const nb = fs.readdirSync(pb, { encoding: 'buffer' }).sort(Buffer.compare)
      const setB = new Set(nb.map(n => n.toString('hex')))
      const setA = new Set(na.map(n => n.toString('hex')))
      for (const n of nb) if (!setA.has(n.toString('hex'))) diffs.push(`${shown(join(rel, n))}: extra in restored tree`)
      for (const n of na) {
        if (!setB.has(n.toString('hex'))) diffs.push(`${shown(join(rel, n))}: missing in restored tree`)
        else visit(join(pa, n), join(pb, n), join(rel, n), false)
      }
    }
  }
  visit(Buffer.isBuffer(a) ? a : Buffer.from(a), Buffer.isBuffer(b) ? b : Buffer.from(b), Buffer.from('.'), true)
  return diffs
}

/** The kind of a stat as reef names it (file, dir, symlink, fifo, socket, chr, blk). */
export function kindOf (s: fs.Stats | fs.BigIntStats): string {
  return s.isSymbolicLink() ? 'symlink' : s.isDirectory() ? 'dir' : s.isFile() ? 'file' : s.isFIFO() ? 'fifo' : s.isSocket() ? 'socket' : s.isCharacterDevice() ? 'chr' : s.isBlockDevice() ? 'blk' : 'other'
}

/** Counts the entries of a tree (for assertions that a comparison covered something). */
export function countTree (p: string | Buffer): { files: number, dirs: number, symlinks: number, specials: number } {
  const c = { files: 0, dirs: 0, symlinks: 0, specials: 0 }
  const walk = (q: Buffer): void => {
    const st = fs.lstatSync(q)
    if (st.isSymbolicLink()) c.symlinks++
    else if (st.isFile()) c.files++
    else if (st.isDirectory()) {
      c.dirs++
      for (const n of fs.readdirSync(q, { encoding: 'buffer' })) walk(join(q, n))
    } else c.specials++
  }
  walk(Buffer.isBuffer(p) ? p : Buffer.from(p))
  return c
}
