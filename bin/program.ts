/**
 * The reef command tree. `createProgram(ctx)` builds a fresh commander program whose output,
 * input and node all come from `ctx`, so the same commands run in the CLI process or, while a
 * daemon serves the data directory, inside the daemon (see bin/reef.ts and forwarding).
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import fs from 'node:fs'
import path from 'node:path'
import cliProgress from 'cli-progress'
import type { CID } from 'multiformats/cid'
import { isAguid, makeBlock, parseGuid, RAW } from '../src/block/index.js'
import { isDamage, ReefError } from '../src/errors.js'
import { parseViewId } from '../src/view/ids.js'
import { defaultDataDir, type HistoryItem, type ReefNode } from '../src/node.js'
import { fsck, type FsckReport } from '../src/fsck/check.js'
import { putPath } from '../src/transfer/put.js'
import { resolveBytes } from '../src/transfer/paths.js'
import { recording } from '../src/store/recording.js'
import { getTo } from '../src/transfer/get.js'
import { decodeEntryBlock, DirReader, type Entry, linkTableKey } from '../src/object/dir.js'
import { decodeVersion, objectKind } from '../src/object/version.js'
import { FileReader } from '../src/object/file.js'
import { devMajor, devMinor } from '../src/object/devnum.js'
import { addViewCommands } from './view.js'
import { listConflicts, mergedFrom } from '../src/merge/index.js'

export interface CliContext {
  out: (s: string | Uint8Array) => void
  err: (s: string) => void
  readStdin: () => Promise<Buffer>
  cwd: string
  /** stderr is a terminal (progress bars): the caller's, when a daemon runs the command. */
  tty: boolean
  /** Shows progress of `total` bytes; default: a bar on this process's stderr (terminalBar). */
  progress?: (total: number) => Progress
  /**
   * The bytes of a path argument when they are not UTF-8 (Node decodes argv with U+FFFD in
   * their place): see rawArgs. Absent, or for any other value, the string itself.
   */
  rawArg?: (value: string) => string | Buffer
  /** Opens the node of a data directory; release closes it if it was opened for this command. */
  openNode: (dataDir: string) => Promise<{ node: ReefNode, release: () => Promise<void> }>
  /** Commands that need the process itself (mount, unmount, status, sync, init). */
  lifecycle?: (program: Command) => void
}

/** JSON.stringify calls CID#toJSON ({"/": ...}) before a replacer sees it: print GUIDs as plain strings. */
function jsonValue (_key: string, v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString()
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const keys = Object.keys(v)
    if (keys.length === 1 && keys[0] === '/' && typeof (v as Record<string, unknown>)['/'] === 'string') return (v as Record<string, unknown>)['/']
  }
  return v
}

export function toJson (value: unknown): string { return JSON.stringify(value, jsonValue) }

const fmtTime = (ms: number): string => new Date(ms).toISOString()
const SLASH = Buffer.from('/')

function duSize (p: Buffer): number {
  let total = 0
  const stack = [p]
  for (let guard = 0; stack.length > 0 && guard < 10_000_000; guard++) {
    const cur = stack.pop() as Buffer
    const st = fs.lstatSync(cur)
    if (st.isDirectory()) for (const n of fs.readdirSync(cur, { encoding: 'buffer' })) stack.push(Buffer.concat([cur, SLASH, n]))
    else if (st.isFile()) total += st.size
  }
  return total
}

/**
 * Looks up the bytes of command-line arguments: `args` as Node decoded them, `raw` the same
 * arguments as bytes (from /proc/self/cmdline, or sent along by a forwarding CLI). A value that
 * holds U+FFFD maps to the one raw argument that decodes to it; two different byte strings that
 * decode alike cannot be told apart by value, which is refused rather than guessed.
 */
export function rawArgs (args: string[], raw: Buffer[] | undefined): (value: string) => string | Buffer {
  if (raw === undefined || raw.length !== args.length || raw.some((b, i) => b.toString('utf8') !== args[i])) return v => v
  return value => {
    if (!value.includes('\ufffd')) return value
    const found = raw.filter((b, i) => args[i] === value)
    if (found.length === 0) return value
    if (found.some(b => !b.equals(found[0]))) throw ReefError.badInput(`two arguments read as ${JSON.stringify(value)} but differ in their bytes; rename one of them`)
    return found[0]
  }
}

/** A number of seconds in (0, 1e6] (a usage error otherwise: exit 2); NaN would make a wait unbounded. */
function seconds (value: string): number {
  const n = Number(value)
  if (value.trim() === '' || !(n > 0 && n <= 1e6)) throw new InvalidArgumentError('expected a number of seconds above 0 and at most 1000000.')
  return n
}

export function createProgram (ctx: CliContext): Command {
  const program = new Command()
  program
    .name('reef')
    .description('reef: a versioned peer-to-peer file system')
    .addOption(new Option('--data-dir <dir>', 'data directory').default(defaultDataDir(), '$XDG_DATA_HOME/reef'))
    // Usage errors (missing argument, unknown option or command) print one line with a code like
    // every other error, and exit 2; subcommands inherit both settings.
    .exitOverride()
    .configureOutput({
      writeOut: s => ctx.out(s),
      writeErr: s => ctx.err(s),
      outputError: (str, write) => write(`reef: ${str.trim().replace(/^error: /, '')} (see --help) [BAD_INPUT]\n`)
    })

  const dataDir = (): string => path.resolve(ctx.cwd, program.opts().dataDir as string)
  /** A path argument, absolute, as the exact bytes given (see CliContext.rawArg). */
  const pathArg = (v: string): Buffer => resolveBytes(ctx.rawArg?.(v) ?? v, ctx.cwd)
  const print = (json: boolean | undefined, value: unknown, text: () => string): void => {
    ctx.out((json === true ? toJson(value) : text()) + '\n')
  }
  async function withNode<T> (fn: (node: ReefNode) => Promise<T>): Promise<T> {
    const { node, release } = await ctx.openNode(dataDir())
    try {
      return await fn(node)
    } finally {
      await release()
    }
  }
  const progress = (total: number): Progress => {
    if (!ctx.tty || total < PROGRESS_MIN_BYTES) return { tick: () => {}, stop: () => {} }
    return (ctx.progress ?? terminalBar)(total)
  }

  ctx.lifecycle?.(program)

  program.command('put')
    .description('store a file or a whole tree; prints its GUID last')
    .argument('<path>', 'file, directory or symlink to store')
    .option('--wait-replicated', 'return only when every block has k acknowledged replicas on the network')
    .option('--timeout <seconds>', 'how long --wait-replicated waits', seconds, 120)
    .option('--json', 'print JSON')
    .action(async (target: string, opts: { json?: boolean, waitReplicated?: boolean, timeout: number }) => {
      await withNode(async node => {
        if (opts.waitReplicated === true && node.dht === undefined) {
          throw ReefError.badInput('--wait-replicated needs a network node: run `reef node --bootstrap ...` (or a networked `reef mount`) on this data directory')
        }
        const input = pathArg(target)
        let total = 0
        if (ctx.tty) { try { total = duSize(input) } catch {} }
        const bar = progress(total)
        const rec = recording(node.store)
        const res = await putPath(rec.store, input, { onBytes: bar.tick })
        bar.stop()
        for (const s of res.skipped) ctx.err(`reef: skipped ${s} (a file type reef cannot store)\n`)
        let replication: { blocks: number, missingReplicas: number, blocksShort: number } | undefined
        if (opts.waitReplicated === true && node.dht !== undefined) {
          replication = await node.dht.replicator.waitReplicated(rec.keys, opts.timeout * 1000)
        }
        print(opts.json, { guid: res.cid, kind: res.entry.kind, files: res.files, dirs: res.dirs, symlinks: res.symlinks, specials: res.specials, bytes: res.bytes, skipped: res.skipped, replication }, () =>
          `${res.entry.kind} ${res.files} files ${res.dirs} dirs ${res.symlinks} symlinks ${specials(res.specials)}${res.bytes} bytes` +
          (replication !== undefined ? `\n${replication.blocks} blocks, ${replication.blocksShort} short of k=${node.dht?.replicator.k} replicas` : '') +
          `\n${res.cid.toString()}`)
        if (replication !== undefined && replication.missingReplicas > 0) {
          throw new ReefError('NOT_REPLICATED', `${replication.blocksShort} of ${replication.blocks} blocks lack replicas (${replication.missingReplicas} replicas missing for k=${node.dht?.replicator.k})`)
        }
      })
    })

  program.command('get')
    .description('restore a GUID (put result, VGUID, AGUID, tree or raw block) to a new path')
    .argument('<guid>', 'BGUID, VGUID or AGUID')
    .requiredOption('-o, --output <path>', 'where to restore (must not exist)')
    .option('--json', 'print JSON')
    .action(async (guid: string, opts: { output: string, json?: boolean }) => {
      let cid = parseGuid(guid)
      await withNode(async node => {
        if (isAguid(cid)) {
          const v = await node.currentVersion(cid)
          if (v === undefined) throw ReefError.notFound(`no head known for ${guid}`)
          cid = v.vguid
        }
        const res = await getTo(node.store, cid, pathArg(opts.output))
        // Like tar, the rest is restored and the exit is 0: as non-root, skipping devices is expected.
        for (const s of res.skipped) ctx.err(`reef: skipped device ${s}: making device nodes needs root (CAP_MKNOD)\n`)
        print(opts.json, { guid: cid, output: opts.output, ...res }, () =>
          `restored ${res.kind} to ${opts.output}: ${res.files} files ${res.dirs} dirs ${res.symlinks} symlinks ${specials(res.specials)}${res.bytes} bytes`)
      })
    })

  const block = program.command('block').description('raw blocks')
  block.command('put')
    .description('store stdin as one raw block; prints its BGUID')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const b = makeBlock(new Uint8Array(await ctx.readStdin()), RAW)
      await withNode(async node => { await node.store.put(b) })
      print(opts.json, { bguid: b.cid, size: b.bytes.length }, () => b.cid.toString())
    })
  block.command('get')
    .description('write one block to stdout, verified against its BGUID')
    .argument('<bguid>', 'block GUID')
    .option('--json', 'print {bguid, size, base64} instead of the raw bytes')
    .action(async (guid: string, opts: { json?: boolean }) => {
      const cid = parseGuid(guid)
      const bytes = await withNode(async node => await node.store.get(cid))
      if (opts.json === true) print(true, { bguid: cid, size: bytes.length, base64: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64') }, () => '')
      else ctx.out(bytes)
    })

  program.command('history')
    .description('list the versions of a file system, newest first')
    .argument('[aguid]', 'AGUID (default: this data directory\'s)')
    .option('--view <view>', 'this node\'s versions in a shared file system (what `reef mount --view` made)')
    .option('--json', 'print JSON')
    .action(async (aguid: string | undefined, opts: { json?: boolean, view?: string }) => {
      await withNode(async node => {
        const a = aguid !== undefined ? parseGuid(aguid) : node.fsAguid(opts.view !== undefined ? parseViewId(opts.view) : undefined)
        if (!isAguid(a)) throw ReefError.badGuid(aguid ?? '', 'not an AGUID')
        const items = await node.history(a)
        if (items.length === 0) throw ReefError.notFound(`no head known for ${a.toString()}`)
        print(opts.json, { aguid: a, versions: items }, () =>
          items.map(i => `${String(i.seq).padStart(5)}  ${fmtTime(i.time)}  ${i.vguid.toString()}  ${i.message ?? ''}` +
            // A version with several parents (a merge of writer heads, a mount --from) names them.
            (i.parents.length > 1 ? `  [parents: ${i.parents.map(p => p.toString()).join(', ')}]` : '')).map(l => l.trimEnd()).join('\n'))
      })
    })

  program.command('show')
    .description('list the tree of a version (or of a put GUID, a directory or a file)')
    .argument('<guid>', 'VGUID, SEQ of this file system, or a put, directory or file GUID')
    .option('--json', 'print JSON')
    .action(async (guid: string, opts: { json?: boolean }) => {
      await withNode(async node => {
        const vguid = await resolveVersionArg(node, guid)
        const bytes = await node.store.get(vguid)
        const rows: Row[] = []
        let table: DirReader | undefined
        const walk = async (dir: CID, prefix: Buffer): Promise<void> => {
          for await (let e of new DirReader(dir, node.store).entries()) {
            const p = Buffer.concat([prefix, Buffer.from(e.name)])
            if (e.linked === true && e.ino !== undefined && table !== undefined) {
              // A hard-linked file: its attributes live in the version's link table.
              const t = await table.lookup(linkTableKey(e.ino))
              if (t !== undefined) e = { ...t, name: e.name }
            }
            rows.push(row(p, e))
            if (e.kind === 'dir' && e.cid !== undefined) await walk(e.cid, Buffer.concat([p, SLASH]))
          }
        }
        switch (objectKind(vguid, bytes)) {
          case 'version': {
            const v = decodeVersion(bytes)
            if (v.links !== undefined) table = new DirReader(v.links, node.store)
            await walk(v.root, SLASH)
            break
          }
          case 'file': {
            const size = await new FileReader(vguid, node.store).size()
            rows.push({ path: '/', kind: 'file', mode: '----', size, mtime: '-', mtimeNs: '-', guid: vguid.toString() })
            break
          }
          case 'dir':
            await walk(vguid, SLASH)
            break
          case 'entry': {
            // A put GUID: a directory lists its tree, anything else is its one row.
            const e = decodeEntryBlock(bytes)
            if (e.kind === 'dir' && e.cid !== undefined) await walk(e.cid, SLASH)
            else rows.push(row(Buffer.from(e.name), e))
            break
          }
          default:
            throw ReefError.badInput(`${vguid.toString()} is not a version, directory, file or put GUID`)
        }
        print(opts.json, { guid: vguid, entries: rows }, () =>
          rows.map(r => `${r.kind.padEnd(7)} ${r.mode} ${(r.major !== undefined ? `${r.major},${String(r.minor)}` : String(r.size)).padStart(10)} ${r.mtime} ${r.path}${r.target !== undefined ? ' -> ' + r.target : ''}`).join('\n'))
      })
    })

  addViewCommands(program, { withNode, print })

  program.command('conflicts')
    .description('list the open conflicts a merge of several writers left in a version (default: the current one)')
    .argument('[version]', 'VGUID or SEQ of this file system')
    .option('--view <view>', 'in this node\'s tree of a shared file system (what `reef mount --view` shows)')
    .option('--json', 'print JSON')
    .action(async (version: string | undefined, opts: { json?: boolean, view?: string }) => {
      await withNode(async node => {
        const { vguid } = await versionOrHead(node, version, node.fsAguid(opts.view !== undefined ? parseViewId(opts.view) : undefined))
        const v = await node.version(vguid)
        const from = await mergedFrom(node.store, v).catch(() => new Map<string, string>())
        const list = await listConflicts(await node.openVersion(v), w => from.get(w))
        // A conflict leaves the list when its copy is deleted or renamed, or its mark removed.
        print(opts.json, { vguid, conflicts: list }, () => list.length === 0
          ? 'no open conflicts'
          : list.map(c => `${c.kind.padEnd(8)} ${c.path}` + (c.original !== '' ? `  (beside ${c.original})` : '') +
            (c.writers.length > 0 ? `  writers ${c.writers.map(w => w.slice(0, 8)).join(', ')}` : '')).join('\n'))
      })
    })

  program.command('fsck')
    .description(`check every block of a version (default: the current one); exit ${FSCK_DAMAGED} if any is missing, corrupt or malformed`)
    .argument('[version]', 'VGUID or SEQ of this file system')
    .option('--json', 'print JSON')
    .action(async (version: string | undefined, opts: { json?: boolean }) => {
      await withNode(async node => {
        // The head's VGUID, not its decoded version: an unreadable version root is what fsck reports.
        const { vguid, head } = await versionOrHead(node, version)
        const report = await fsck(node.store, vguid)
        if (report.seq === undefined && head?.vguid.equals(vguid) === true) report.seq = head.seq.toString()
        const rootLost = report.problems.some(p => p.role === 'version root')
        const stored = rootLost ? (await node.storedVersions()).filter(v => !v.vguid.equals(vguid)) : undefined
        print(opts.json, { ...report, clean: report.problems.length === 0, storedVersions: stored }, () => fsckText(report, stored))
        if (report.problems.length > 0) throw new ExitStatus(FSCK_DAMAGED)
      })
    })

  return program
}

/** A VGUID or SEQ argument of this file system, or (none given) the current head's VGUID. */
async function versionOrHead (node: ReefNode, version: string | undefined, aguid = node.aguid): Promise<{ vguid: CID, head: Awaited<ReturnType<ReefNode['heads']['current']>> }> {
  const head = await node.heads.current(aguid)
  const vguid = version !== undefined ? await resolveVersionArg(node, version, aguid) : head?.vguid
  if (vguid === undefined) throw ReefError.notFound(`no head known for ${aguid.toString()}`)
  return { vguid, head }
}

/** Exit status of `reef fsck` when it found damage (1 is a failure to check, 2 a usage error). */
export const FSCK_DAMAGED = 3

/** Ends a command with this exit status, having printed what it had to say. */
export class ExitStatus extends Error {
  constructor (readonly status: number) { super(`exit ${status}`) }
}

function fsckText (r: FsckReport, stored: HistoryItem[] | undefined): string {
  const lines = r.problems.map(p => `${p.problem.padEnd(9)} ${p.role.padEnd(15)} ${p.guid}  ${p.paths.join(', ')}${p.morePaths > 0 ? ` (+${p.morePaths} more)` : ''}  [${p.code}]`)
  const n = r.problems.length
  lines.push(`version ${r.seq ?? '?'} ${r.vguid}: ${r.blocks} block${r.blocks === 1 ? '' : 's'} checked, ${n === 0 ? 'no problems' : n === 1 ? '1 problem' : `${n} problems`}`)
  if (stored !== undefined) {
    lines.push(stored.length === 0
      ? 'no other version of this file system is stored here'
      : 'versions stored here (continue from one with `reef mount DIR --from SEQ`):\n' +
        stored.map(i => `${String(i.seq).padStart(5)}  ${fmtTime(i.time)}  ${i.vguid.toString()}  ${i.message ?? ''}`.trimEnd()).join('\n'))
  }
  return lines.join('\n')
}

export interface Progress { tick: (n: number) => void, stop: () => void }

/** Inputs below this size finish too soon for a progress bar to tell anything. */
export const PROGRESS_MIN_BYTES = 32 * 1024 * 1024

/** A progress bar of `total` bytes on a terminal (this process's stderr). */
export function terminalBar (total: number, stream: NodeJS.WriteStream = process.stderr): Progress {
  const bar = new cliProgress.SingleBar({
    stream,
    format: '{bar} {percentage}% | {value}/{total} MiB | {speed} MiB/s',
    hideCursor: true
  }, cliProgress.Presets.shades_classic)
  const start = Date.now()
  let done = 0
  bar.start(Math.ceil(total / 2 ** 20), 0, { speed: '0' })
  return {
    tick: n => {
      done += n
      bar.update(Math.floor(done / 2 ** 20), { speed: (done / 2 ** 20 / Math.max(0.001, (Date.now() - start) / 1000)).toFixed(0) })
    },
    stop: () => bar.stop()
  }
}

/** A VGUID string, or a sequence number of this data directory's file system. */
export async function resolveVersionArg (node: ReefNode, arg: string, aguid = node.aguid): Promise<CID> {
  if (/^\d+$/.test(arg)) {
    let items: Array<{ seq: bigint, vguid: CID }>
    try {
      items = await node.history(aguid)
    } catch (err) {
      // The head's version root is unreadable (so is the chain of parents in it): the versions
      // still in the store are found by reading it.
      if (!isDamage(err)) throw err
      items = await node.storedVersions()
    }
    const item = items.find(i => i.seq === BigInt(arg))
    if (item === undefined) throw ReefError.notFound(`no version with seq ${arg}`)
    return item.vguid
  }
  return parseGuid(arg)
}

/**
 * One entry of `reef show`. Names and symlink targets are bytes; `path` and `target` are their
 * UTF-8 readings, and when those are not exact (bytes that are not UTF-8) `pathBase64` and
 * `targetBase64` carry the bytes themselves.
 */
interface Row {
  path: string, pathBase64?: string, kind: string, mode: string, size: number, mtime: string, mtimeNs: string, guid?: string, target?: string, targetBase64?: string
  /** Devices ('chr', 'blk'): st_rdev as stored, and its major and minor (shown as ls does). */
  rdev?: number, major?: number, minor?: number
}

/** "N special " for a put or get that met FIFOs, sockets or devices; nothing otherwise. */
const specials = (n: number): string => n > 0 ? `${n} special ` : ''

const isUtf8 = (b: Buffer): boolean => Buffer.from(b.toString('utf8'), 'utf8').equals(b)

function row (path: Buffer, e: Entry): Row {
  const p = path.toString('utf8')
  // Floor to the millisecond: BigInt division truncates toward zero, which would show a
  // pre-1970 time one millisecond late. mtimeNs keeps the stored nanoseconds exactly.
  const ms = e.mtime / 1_000_000n - (e.mtime % 1_000_000n < 0n ? 1n : 0n)
  const r: Row = { path: p, kind: e.linked === true ? 'link' : e.kind, mode: e.mode.toString(8).padStart(4, '0'), size: e.size, mtime: fmtTime(Number(ms)), mtimeNs: e.mtime.toString() }
  if (e.cid !== undefined) r.guid = e.cid.toString()
  if (e.rdev !== undefined) {
    r.rdev = e.rdev
    r.major = devMajor(e.rdev)
    r.minor = devMinor(e.rdev)
  }
  if (!isUtf8(path)) r.pathBase64 = path.toString('base64')
  if (e.target !== undefined) {
    const t = Buffer.from(e.target)
    r.target = t.toString('utf8')
    if (!isUtf8(t)) r.targetBase64 = t.toString('base64')
  }
  return r
}

/** Runs one command line (without "node reef") and returns its exit code; never throws. */
export async function runProgram (ctx: CliContext, args: string[]): Promise<number> {
  const program = createProgram(ctx)
  try {
    await program.parseAsync(args, { from: 'user' })
    return 0
  } catch (err) {
    return exitCodeFor(err, ctx)
  }
}

export function exitCodeFor (err: unknown, ctx: Pick<CliContext, 'err'>): number {
  if (err instanceof ExitStatus) return err.status
  if ((err as { silent?: boolean })?.silent === true) return 0
  if (err instanceof CommanderError) {
    // Already printed (help on stdout, a usage error on stderr via outputError).
    return err.exitCode === 0 ? 0 : 2
  }
  if (err instanceof ReefError) {
    ctx.err(`reef: ${err.message} [${err.code}]\n`)
    return 1
  }
  // Anything else still ends in a code: IO for a system call that failed (errno), INTERNAL for
  // a fault of reef itself (a bug), so a script can always tell what kind of failure it saw.
  const e = err as NodeJS.ErrnoException | undefined
  const message = (e?.message ?? String(err)).split('\n')[0]
  if (typeof e?.code === 'string' && /^E[A-Z0-9]+$/.test(e.code)) {
    ctx.err(`reef: ${message.startsWith(e.code) ? '' : e.code + ': '}${message} [IO]\n`)
    return 1
  }
  ctx.err(`reef: internal error: ${message} [INTERNAL]\n`)
  return 1
}
