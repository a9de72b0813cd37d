#!/usr/bin/env node
/**
 * The reef CLI entry: parses arguments, calls the node, prints. The data commands live in
 * bin/program.ts; this file adds the ones that own the process (init, mount, unmount, checkout,
 * status, sync) and forwards data commands to a running daemon of the same data directory
 * (bin/commands.ts says which). Daemons' lifetimes and control sockets live in src/control and
 * mount/daemon.ts.
 */
import fs from 'node:fs'
import path from 'node:path'
import type { Command } from 'commander'
import '../src/polyfills.js'
import { ReefError } from '../src/errors.js'
import { ReefNode } from '../src/node.js'
import { daemonRunning, request } from '../src/control/client.js'
import { SOCKET_NAME } from '../src/control/protocol.js'
import { MountDaemon, cleanupStaleMount, type ServedMount } from '../mount/daemon.js'
import { serveNode } from '../src/control/daemon.js'
import type { Faults } from '../mount/adapter/index.js'
import type { Caps } from '../mount/fuse3.js'
import { describeError } from '../mount/errno.js'
import { isAguid, parseGuid } from '../src/block/index.js'
import { parseViewId } from '../src/view/ids.js'
import type { DhtOptions } from '../src/dht/index.js'
import { isFuseMounted } from '../mount/mounts.js'
import { type CliContext, exitCodeFor, type Progress, rawArgs, resolveVersionArg, runProgram, terminalBar, toJson } from './program.js'
import { formatFields } from './format.js'
import { commandOf, RUNS_IN } from './commands.js'

/** Thrown by openNode when a daemon serves the data directory: main re-sends the command line there. */
class ForwardToDaemon extends Error {
  readonly silent = true
  constructor (readonly dataDir: string) { super('forward to daemon') }
}

let stdinCache: Buffer | undefined
async function readStdin (): Promise<Buffer> {
  if (stdinCache !== undefined) return stdinCache
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  stdinCache = Buffer.concat(chunks)
  return stdinCache
}

const out = (s: string | Uint8Array): void => { process.stdout.write(s) }
const err = (s: string): void => { process.stderr.write(s) }

interface RunResult { stdout: string, stderr: string, exitCode: number }

/**
 * Progress of a command a daemon runs for a CLI on a terminal: sent to that CLI as events on the
 * control socket (at most ten a second, and the last), which draws the bar on its own stderr.
 */
function remoteProgress (notify: (event: unknown) => void): (total: number) => Progress {
  return total => {
    let done = 0
    let sent = 0
    notify({ progress: { total, done } })
    return {
      tick: n => {
        done += n
        if (Date.now() - sent < 100) return
        sent = Date.now()
        notify({ progress: { total, done } })
      },
      stop: () => notify({ progress: { total, done, end: true } })
    }
  }
}

/** Draws the progress events of a forwarded command (see remoteProgress). */
function progressEvents (): { onEvent: (event: unknown) => void, stop: () => void } {
  let bar: Progress | undefined
  let shown = 0
  const stop = (): void => { bar?.stop(); bar = undefined }
  return {
    onEvent: event => {
      const p = (event as { progress?: { total: number, done: number, end?: boolean } } | null)?.progress
      if (p === undefined) return
      if (bar === undefined) { bar = terminalBar(p.total); shown = 0 }
      bar.tick(p.done - shown)
      shown = p.done
      if (p.end === true) stop()
    },
    stop
  }
}

/** Runs a forwarded command line inside a daemon, against the daemon's own node. */
export async function runInDaemon (node: ReefNode, args: unknown, notify: (event: unknown) => void = () => {}): Promise<RunResult> {
  const a = args as { argv: string[], rawArgv?: string[], cwd: string, stdin?: string, tty?: boolean }
  const stdout: Buffer[] = []
  let stderr = ''
  const ctx: CliContext = {
    out: s => { stdout.push(Buffer.from(s)) },
    err: s => { stderr += s },
    readStdin: async () => Buffer.from(a.stdin ?? '', 'base64'),
    cwd: a.cwd,
    tty: a.tty === true,
    progress: remoteProgress(notify),
    rawArg: rawArgs(a.argv, a.rawArgv?.map(b => Buffer.from(b, 'base64'))),
    openNode: async () => ({ node, release: async () => {} })
  }
  const exitCode = await runProgram(ctx, a.argv)
  return { stdout: Buffer.concat(stdout).toString('base64'), stderr, exitCode }
}

const collect = (v: string, acc: string[]): string[] => [...acc, v]

function networkOptions (opts: { listen?: string[], bootstrap?: string[], k?: string, repairInterval?: string, fetchDeadline?: string, maxConnections?: string }, defaultListen: string[] | undefined): DhtOptions | undefined {
  const listen = opts.listen !== undefined && opts.listen.length > 0 ? opts.listen : defaultListen
  const bootstrap = opts.bootstrap ?? []
  if (listen === undefined && bootstrap.length === 0) return undefined
  const k = opts.k !== undefined ? Number(opts.k) : undefined
  if (k !== undefined && !(Number.isInteger(k) && k >= 1 && k <= 20)) throw ReefError.badInput(`bad --k ${opts.k} (1..20)`)
  const repair = opts.repairInterval !== undefined ? Number(opts.repairInterval) * 1000 : undefined
  if (repair !== undefined && !(repair > 0)) throw ReefError.badInput(`bad --repair-interval ${opts.repairInterval}`)
  const deadline = opts.fetchDeadline !== undefined ? Number(opts.fetchDeadline) * 1000 : undefined
  if (deadline !== undefined && !(deadline > 0 && deadline <= 3_600_000)) throw ReefError.badInput(`bad --fetch-deadline ${opts.fetchDeadline} (seconds, above 0, at most 3600)`)
  const maxConnections = opts.maxConnections !== undefined ? Number(opts.maxConnections) : undefined
  if (maxConnections !== undefined && !(Number.isInteger(maxConnections) && maxConnections >= 4 && maxConnections <= 100_000)) throw ReefError.badInput(`bad --max-connections ${opts.maxConnections} (an integer from 4 to 100000)`)
  return { listen: listen ?? ['/ip4/127.0.0.1/tcp/0'], bootstrap, k, repairIntervalMs: repair, fetchDeadlineMs: deadline, maxConnections, log: line => err(`reef: ${line}\n`) }
}

function lifecycle (program: Command): void {
  const dataDir = (): string => path.resolve(program.opts().dataDir as string)

  program.command('init')
    .description('create the identity key and data directory (idempotent)')
    .option('--name <name>', 'name of this file system (with the key, it gives the AGUID)', 'default')
    .option('--json', 'print JSON')
    .action(async (opts: { name: string, json?: boolean }) => {
      const created = ReefNode.init(dataDir(), opts.name)
      const node = await ReefNode.open(dataDir())
      try {
        let v = await node.currentVersion()
        if (v === undefined) {
          const rfs = await node.openFs()
          v = await rfs.fold('init', true)
          rfs.log?.close()
        }
        const text = `${created ? 'initialized' : 'already initialized'} ${node.dataDir}\nAGUID ${node.aguid.toString()}`
        out((opts.json === true ? toJson({ dataDir: node.dataDir, aguid: node.aguid, created, vguid: v?.vguid }) : text) + '\n')
      } finally {
        await node.close()
      }
    })

  /** Test hooks (see mount/adapter/options.ts): the handlers never read the environment. */
  const testFaults = (): Faults => {
    const hook = (v: string | undefined): string | undefined => v === undefined || v === '' ? undefined : v
    return { write: hook(process.env.REEF_TEST_WRITE_FAULT), op: hook(process.env.REEF_TEST_OP_FAULT), viewHold: hook(process.env.REEF_TEST_VIEW_HOLD) }
  }

  /**
   * REEF_FUSE_CAPS: kernel capabilities for measuring them one by one (bench/), e.g.
   * "writebackCache,splice,-parallelDirops,maxWrite=131072"; see Caps in mount/fuse3.ts.
   */
  const fuseCaps = (): Caps | undefined => {
    const text = process.env.REEF_FUSE_CAPS
    if (text === undefined || text.trim() === '') return undefined
    const caps: Record<string, boolean | number> = {}
    for (const item of text.split(',').map(x => x.trim()).filter(x => x !== '')) {
      const [name, value] = item.split('=')
      if (value !== undefined) caps[name] = Number(value)
      else if (name.startsWith('-')) caps[name.slice(1)] = false
      else caps[name] = true
    }
    return caps as Caps
  }

  type MountCliOptions = { view?: string, viewInterval?: string, from?: string, foldInterval?: string, maxDirty?: string, attrTimeout?: string, attrCache?: boolean, readAhead?: string, writeBehind?: boolean, json?: boolean, aguid?: string, listen?: string[], bootstrap?: string[], k?: string, repairInterval?: string, fetchDeadline?: string, maxConnections?: string }
  const foreground = async (mountpoint: string, opts: MountCliOptions, checkout?: string): Promise<void> => {
    const dir = dataDir()
    if (checkout === undefined && ReefNode.init(dir)) err(`reef: created a new data directory at ${dir}\n`)
    const follow = opts.aguid !== undefined ? parseGuid(opts.aguid) : undefined
    if (follow !== undefined && !isAguid(follow)) throw ReefError.badGuid(opts.aguid ?? '', 'not an AGUID')
    const view = opts.view !== undefined ? parseViewId(opts.view) : undefined
    if (view !== undefined && (follow !== undefined || opts.from !== undefined)) throw ReefError.badInput('--view excludes --aguid and --from: a view mount is this node\'s writer tree in the view, merged with the others\'')
    const viewIntervalMs = opts.viewInterval !== undefined ? Math.round(Number(opts.viewInterval) * 1000) : undefined
    if (viewIntervalMs !== undefined && !(viewIntervalMs >= 10 && viewIntervalMs <= 3_600_000)) throw ReefError.badInput(`bad --view-interval ${opts.viewInterval} (0.01 to 3600 seconds)`)
    const node = await ReefNode.open(dir, { network: networkOptions(opts, undefined) })
    let served: ServedMount
    let version: Awaited<ReturnType<ReefNode['version']>> | undefined
    try {
      version = checkout !== undefined ? await node.version(await resolveVersionArg(node, checkout)) : undefined
      if (opts.from !== undefined && follow !== undefined) throw ReefError.badInput('--from and --aguid exclude each other: --from continues this data directory\'s own file system')
      const from = opts.from !== undefined ? await node.version(await resolveVersionArg(node, opts.from)) : undefined
      const foldInterval = opts.foldInterval ?? (view !== undefined ? '2' : undefined)
      const foldIntervalMs = foldInterval !== undefined ? Math.round(Number(foldInterval) * 1000) : undefined
      if (foldIntervalMs !== undefined && !(foldIntervalMs >= 0)) throw ReefError.badInput(`bad --fold-interval ${opts.foldInterval}`)
      const own = follow === undefined || follow.equals(node.aguid)
      const maxDirtyBytes = opts.maxDirty !== undefined ? Number(opts.maxDirty) * 2 ** 20 : undefined
      if (maxDirtyBytes !== undefined && !(maxDirtyBytes > 0)) throw ReefError.badInput(`bad --max-dirty ${opts.maxDirty}`)
      const attrTimeout = opts.attrTimeout !== undefined ? Number(opts.attrTimeout) : undefined
      if (attrTimeout !== undefined && !(attrTimeout >= 0 && attrTimeout <= 3600)) throw ReefError.badInput(`bad --attr-timeout ${opts.attrTimeout}`)
      const readAheadKiB = opts.readAhead !== undefined ? Number(opts.readAhead) : undefined
      if (readAheadKiB !== undefined && !(Number.isInteger(readAheadKiB) && readAheadKiB >= 0 && readAheadKiB <= 65536)) throw ReefError.badInput(`bad --read-ahead ${opts.readAhead}`)
      // A view mount folds once its writes pause (at most 5 intervals after the first).
      const foldQuietMaxMs = view !== undefined ? 5 * (foldIntervalMs ?? 2000) : undefined
      served = await MountDaemon.serve(node, { mountpoint, foldIntervalMs, foldQuietMaxMs, maxDirtyBytes, attrTimeout, attrCache: opts.attrCache, readAheadKiB, writeBehind: opts.writeBehind, checkout: version, from, follow: own ? undefined : follow, view, viewIntervalMs, faults: testFaults(), caps: fuseCaps() },
        { socket: checkout === undefined ? SOCKET_NAME : `checkout-${process.pid}.sock`, run: async (args, notify) => await runInDaemon(node, args, notify) })
    } catch (e) {
      await node.close().catch(() => {})
      throw e
    }
    serving = true
    const d = served.daemon
    const what = checkout !== undefined
      ? `version ${version?.root.seq} (read-only)`
      : view !== undefined ? `view ${view.toString()}${d.fs.readOnly ? ' (read-only: this node is not one of its writers)' : ''}` : d.aguid.toString() + (d.fs.readOnly ? ' (read-only)' : '')
    // With --json, stdout is one JSON document (its network.addrs are these lines).
    if (opts.json !== true) for (const a of node.dht?.addrs() ?? []) out(a + '\n')
    err(`reef: mounted ${what} on ${path.resolve(mountpoint)} (data: ${node.dataDir}); Ctrl-C or \`reef unmount ${mountpoint}\` to unmount\n`)
    if (opts.json === true) out(toJson(d.status()) + '\n')
    const r = await served.done
    if (r.error !== undefined) {
      err(`reef: unmount: ${(r.error as Error).message}\n`)
      process.exitCode = 1
    } else if (r.version !== undefined) {
      err(`reef: folded into version ${r.version.root.seq} (${r.version.vguid.toString()}); unmounted ${mountpoint}\n`)
    }
  }

  program.command('mount')
    .description('mount this data directory\'s file system on DIR (foreground; creates the data directory if needed)')
    .argument('<dir>', 'mount point (created if missing)')
    .option('--fold-interval <seconds>', 'fold writes into a version after this many seconds of activity (default 5); on a view mount, whose folds are what the other writers see, after this many seconds with no write (default 2), at most 5 times it after the first, and at once on fsync')
    .option('--max-dirty <MiB>', 'fold early once this much written data waits in memory', '512')
    .option('--attr-timeout <seconds>', 'let the kernel cache attributes this long (a follower\'s: never); 0: ask every time', '1')
    .option('--no-attr-cache', 'the same as --attr-timeout 0: every stat reaches the daemon')
    .option('--read-ahead <KiB>', 'the kernel\'s read-ahead for the mount (root only; the kernel\'s default for FUSE is 128); 0: leave it', '1024')
    .option('--no-write-behind', 'apply every write before acknowledging it (default: acknowledge once queued, apply right after; fsync and close wait)')
    .option('--json', 'print the mount status as JSON once mounted')
    .option('--from <version>', 'start read-write from this version (seq or VGUID): its tree becomes the live tree and the next version follows the head (see reef fsck)')
    .option('--aguid <aguid>', 'mount another owner\'s file system (read-only), following its signed head')
    .option('--view <view>', 'mount a shared file system: read-write if this node\'s key is one of its writers (reef id), else read-only; merged with the other writers\' changes')
    .option('--view-interval <seconds>', 'how often a view mount looks for the other writers\' new heads', '0.5')
    .option('--listen <multiaddr>', 'be a network node listening here (repeatable)', collect, [])
    .option('--bootstrap <multiaddr>', 'join the network through this node (repeatable)', collect, [])
    .option('--k <n>', 'replicas per block (default 3)')
    .option('--repair-interval <seconds>', 'full repair pass period (default 600)')
    .option('--fetch-deadline <seconds>', 'longest wait for one block from the network before a read fails (default 15)')
    .option('--max-connections <n>', 'connections held at most: routing neighbours plus short-lived transfers (default 64)')
    .action(async (mountpoint: string, opts: MountCliOptions) => {
      await foreground(mountpoint, opts)
    })

  program.command('node')
    .description('run a network node for this data directory (foreground); prints its multiaddrs')
    .option('--listen <multiaddr>', 'listen address (repeatable; default /ip4/0.0.0.0/tcp/4001)', collect, [])
    .option('--bootstrap <multiaddr>', 'join the network through this node (repeatable)', collect, [])
    .option('--k <n>', 'replicas per block (default 3)')
    .option('--repair-interval <seconds>', 'full repair pass period (default 600)')
    .option('--fetch-deadline <seconds>', 'longest wait for one block from the network before a read fails (default 15)')
    .option('--max-connections <n>', 'connections held at most: routing neighbours plus short-lived transfers (default 64)')
    .option('--json', 'print {peerId, addrs, dataDir, aguid} as JSON once up, instead of one multiaddr per line')
    .action(async (opts: { listen?: string[], bootstrap?: string[], k?: string, repairInterval?: string, fetchDeadline?: string, maxConnections?: string, json?: boolean }) => {
      const dir = dataDir()
      if (ReefNode.init(dir)) err(`reef: created a new data directory at ${dir}\n`)
      const node = await ReefNode.open(dir, { network: networkOptions(opts, ['/ip4/0.0.0.0/tcp/4001']) })
      const served = await serveNode(node, { socket: SOCKET_NAME, run: async (args, notify) => await runInDaemon(node, args, notify) })
      const addrs = node.dht?.addrs() ?? []
      if (opts.json === true) out(toJson({ peerId: node.dht?.peerId, addrs, dataDir: node.dataDir, aguid: node.aguid, pid: process.pid }) + '\n')
      else for (const a of addrs) out(a + '\n')
      err(`reef: node ${node.dht?.peerId ?? ''} up (data: ${node.dataDir}); Ctrl-C to stop\n`)
      await served.done
    })

  program.command('checkout')
    .description('mount one old version read-only on DIR (foreground)')
    .argument('<version>', 'VGUID or sequence number')
    .argument('<dir>', 'mount point (created if missing)')
    .option('--json', 'print the mount status as JSON once mounted')
    .action(async (version: string, mountpoint: string, opts: { json?: boolean }) => {
      await foreground(mountpoint, { json: opts.json }, version)
    })

  program.command('unmount')
    .description('fold pending writes and unmount DIR, once the daemon has exited (also cleans up a mount left by a killed daemon)')
    .argument('<dir>', 'mount point')
    .option('--json', 'print JSON')
    .action(async (mountpoint: string, opts: { json?: boolean }) => {
      const mnt = path.resolve(mountpoint)
      const dir = dataDir()
      const say = (text: string, json: Record<string, unknown>): void => { out((opts.json === true ? toJson({ mountpoint: mnt, ...json }) : text) + '\n') }
      const sockets = fs.existsSync(dir) ? fs.readdirSync(dir).filter(f => f === SOCKET_NAME || /^checkout-\d+\.sock$/.test(f)) : []
      for (const s of sockets) {
        let st: { mountpoint?: string, pid?: number, readOnly?: boolean }
        try {
          st = await request(dir, 'status', undefined, 5000, s) as typeof st
        } catch { continue }
        if (st.mountpoint !== mnt) continue
        await request(dir, 'stop', undefined, 5000, s)
        // The daemon folds, unmounts, folds what arrived meanwhile, closes its log and store and
        // exits; only then may the next `reef mount` of this data directory start, and only then
        // is the last version known. Wait for the process itself (bounded), not just the mount.
        const gone = (): boolean => {
          if (isFuseMounted(mnt)) return false
          if (st.pid === undefined) return !fs.existsSync(path.join(dir, s))
          try {
            // An exited daemon its parent has not reaped yet is a zombie (state Z): gone too.
            return /\) [ZX] /.test(fs.readFileSync(`/proc/${st.pid}/stat`, 'utf8'))
          } catch {
            return true
          }
        }
        const deadline = Date.now() + 120_000
        while (!gone() && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 25))
        if (!gone()) throw new ReefError('IO', `the reef daemon of ${mnt} (pid ${st.pid ?? '?'}) has not exited after 120 s`)
        if (st.readOnly === true) {
          say(`unmounted ${mnt}`, { unmounted: true })
          return
        }
        const node = await ReefNode.open(dir)
        try {
          const v = await node.currentVersion()
          say(`unmounted ${mnt}; version ${v?.root.seq ?? '-'} ${v?.vguid.toString() ?? ''}`.trimEnd(), { unmounted: true, seq: v?.root.seq.toString(), vguid: v?.vguid.toString() })
        } finally {
          await node.close()
        }
        return
      }
      if (await cleanupStaleMount(mnt).catch(() => false)) {
        say(`cleaned up a stale mount on ${mnt}`, { cleanedUp: true })
        return
      }
      throw ReefError.badInput(`no reef daemon of ${dir} serves ${mnt}`)
    })

  program.command('status')
    .description('show the running daemon of this data directory, or the stored head')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const dir = dataDir()
      let st: Record<string, unknown>
      if (await daemonRunning(dir)) {
        st = { daemon: true, ...(await request(dir, 'status') as Record<string, unknown>) }
      } else {
        const node = await ReefNode.open(dir)
        try {
          const v = await node.currentVersion()
          st = { daemon: false, dataDir: dir, aguid: node.aguid.toString(), vguid: v?.vguid.toString(), seq: v?.root.seq.toString() }
        } finally {
          await node.close()
        }
      }
      out((opts.json === true ? toJson(st) : formatFields(JSON.parse(toJson(st)) as Record<string, unknown>)) + '\n')
    })

  program.command('sync')
    .description('fold pending writes into a new version now and wait for it')
    .option('-m, --message <text>', 'message recorded in the version')
    .option('--json', 'print JSON')
    .action(async (opts: { message?: string, json?: boolean }) => {
      const dir = dataDir()
      let res: { vguid?: string, seq?: string, notReplicated?: number, replicated?: { k: number, blocks: number, blocksShort: number, missingReplicas: number, untracked: number } }
      if (await daemonRunning(dir)) {
        res = await request(dir, 'sync', { message: opts.message }) as typeof res
      } else {
        // No daemon: replay the log (e.g. after a crash) and fold it here.
        const node = await ReefNode.open(dir)
        try {
          const rfs = await node.openFs()
          const v = (await rfs.fold(opts.message)) ?? rfs.version
          rfs.log?.close()
          res = { vguid: v?.vguid.toString(), seq: v?.root.seq.toString() }
        } finally {
          await node.close()
        }
      }
      const r = res.replicated
      const repl = r === undefined
        ? ''
        : r.blocksShort === 0
          ? `\nall blocks on k=${r.k} replicas`
          : `\n${r.blocksShort} of ${r.blocks} blocks short of k=${r.k} replicas (${r.missingReplicas} replicas missing)`
      const lost = r !== undefined && r.untracked > 0 ? `\n(and ${r.untracked} older blocks not counted: over 100000 were unconfirmed at once)` : ''
      out((opts.json === true ? toJson(res) : `version ${res.seq ?? '-'} ${res.vguid ?? ''}`.trimEnd() + repl + lost) + '\n')
    })
}

/**
 * The command-line arguments as bytes, when one of them is not UTF-8 (Node hands those over with
 * U+FFFD in place of the bytes it could not decode, so a path argument would name another file).
 * Linux keeps the exact bytes in /proc/self/cmdline; they are the last `n` entries there (node's
 * own options come first). Undefined when no argument needs it or they cannot be matched up.
 */
function argvBytes (args: string[]): Buffer[] | undefined {
  if (!args.some(a => a.includes('\ufffd'))) return undefined
  let cmdline: Buffer
  try {
    cmdline = fs.readFileSync('/proc/self/cmdline')
  } catch {
    return undefined
  }
  const all: Buffer[] = []
  for (let at = 0; at < cmdline.length;) {
    const end = cmdline.indexOf(0, at)
    all.push(cmdline.subarray(at, end < 0 ? cmdline.length : end))
    at = end < 0 ? cmdline.length : end + 1
  }
  const raw = all.slice(all.length - args.length)
  return raw.length === args.length && raw.every((b, i) => b.toString('utf8') === args[i]) ? raw : undefined
}

async function main (): Promise<void> {
  const args = process.argv.slice(2)
  const raw = argvBytes(args)
  const ctx: CliContext = {
    out,
    err,
    readStdin,
    cwd: process.cwd(),
    tty: process.stderr.isTTY === true,
    rawArg: rawArgs(args, raw),
    openNode: async (dataDir) => {
      if (RUNS_IN[commandOf(args) ?? ''] === 'daemon' && await daemonRunning(dataDir)) {
        forwarded = dataDir
        throw new ForwardToDaemon(dataDir)
      }
      const node = await ReefNode.open(dataDir)
      return { node, release: async () => await node.close() }
    },
    lifecycle
  }
  let code = await runProgram(ctx, args)
  if (forwarded !== undefined) {
    try {
      // JSON carries text: arguments that are not UTF-8 go along as bytes too (base64). Whether
      // stderr is a terminal goes along too; the daemon sends the progress to draw here.
      const shown = progressEvents()
      let r: RunResult
      try {
        r = await request(forwarded, 'run', { argv: args, rawArgv: raw?.map(b => b.toString('base64')), cwd: process.cwd(), stdin: stdinCache?.toString('base64'), tty: ctx.tty },
          undefined, undefined, shown.onEvent) as RunResult
      } finally {
        shown.stop()
      }
      out(Buffer.from(r.stdout, 'base64'))
      err(r.stderr)
      code = r.exitCode
    } catch (e) {
      code = exitCodeFor(e, ctx)
    }
  }
  process.exitCode = code
}

let forwarded: string | undefined
/**
 * Set once this process serves a mount (`reef mount`, `reef checkout`). Exiting then would leave a
 * dead mount behind: every process using it gets ENOTCONN until someone unmounts. Each FUSE op
 * answers by itself, an exception included (mount/adapter), so what still reaches the process-wide
 * handlers is a bug outside any op (a timer, a stray promise): it is logged and the daemon keeps
 * serving, which is what a user of the mount needs; the state that exception left half-done is
 * at worst one op's, and the writer log still holds every acknowledged write.
 */
let serving = false
// A reader that went away (`reef history | head`, a killed parent) is not an error: stop quietly
// (a mount keeps serving; its log lines are lost).
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (serving) return
    if (e.code === 'EPIPE' || e.code === 'ECONNRESET') process.exit(process.exitCode ?? 0)
  })
}
// Lines go out with a plain write(2) and no retry: writing through the stream here could throw
// again and re-enter these handlers forever (a put whose parent died spun at 100% CPU that way).
const rawErr = (line: string): void => { try { fs.writeSync(2, line) } catch {} }
// While serving, at most 20 such lines a minute: a fault that repeats must not flood the disk.
let unexpectedLogged = { since: 0, lines: 0, dropped: 0 }
const unexpected = (what: string, e: unknown): void => {
  const now = Date.now()
  if (now - unexpectedLogged.since > 60_000) {
    if (unexpectedLogged.dropped > 0) rawErr(`reef: ${unexpectedLogged.dropped} more unexpected errors not logged\n`)
    unexpectedLogged = { since: now, lines: 0, dropped: 0 }
  }
  if (unexpectedLogged.lines++ >= 20) { unexpectedLogged.dropped++; return }
  rawErr(`reef: unexpected ${what}, still serving: ${describeError(e)}\n`)
}
// Anything else unexpected: one line on stderr if it can still be written, then exit.
const fatal = (e: unknown): void => {
  rawErr(`reef: internal error: ${(e as Error)?.stack ?? String(e)}\n`)
  process.exit(70)
}
process.on('uncaughtException', e => { if (serving) unexpected('uncaught exception', e); else fatal(e) })
process.on('unhandledRejection', e => { if (serving) unexpected('unhandled promise rejection', e); else fatal(e) })

await main()
