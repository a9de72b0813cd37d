/**
 * What every foreground daemon (`reef mount`, `reef checkout`, `reef node`) shares: the handlers
 * of its control socket, and its lifetime (stopped once, by `reef unmount`, SIGINT or SIGTERM).
 */
import { cidFromKey, isAguid, parseGuid } from '../block/index.js'
import { ReefError } from '../errors.js'
import type { VersionInfo } from '../fs/fs.js'
import type { ReefNode } from '../node.js'
import { ControlServer, type Handler } from './server.js'

/** What the control socket asks of the daemon behind it. */
export interface DaemonState {
  status: () => Record<string, unknown>
  sync: (message?: string) => Promise<VersionInfo | undefined>
}

/** Runs a command line forwarded by a CLI, inside the daemon (bin/ supplies it). */
export type RunCommand = Handler

export interface ControlHooks {
  socket: string
  run: RunCommand
}

/** Serves the control socket of a daemon; `stop` is called (once the answer is sent) by `stop`. */
export async function serveControl (node: ReefNode, d: DaemonState, hooks: ControlHooks & { stop: () => void }): Promise<ControlServer> {
  // Requests served, by command: `reef status --json` shows them, so a test (or a user) can tell
  // that a command was answered by this daemon rather than by a process of its own.
  const served: Record<string, number> = {}
  const handlers: Record<string, Handler> = {
    ping: async () => 'pong',
    status: async () => ({ ...d.status(), controlRequests: { ...served } }),
    sync: async (args) => {
      const a = (args ?? {}) as { message?: string, timeoutMs?: number }
      const v = await d.sync(a.message)
      // With a network, wait (bounded) for every block this node stored to reach k replicas and
      // say what did not: not only this fold's, but the automatic folds' and puts' before it.
      const r = await node.dht?.replicator.waitTracked(a.timeoutMs ?? 60_000)
      return { vguid: v?.vguid.toString(), seq: v?.root.seq.toString(), notReplicated: r?.blocksShort, replicated: r, replication: node.dht?.replicator.status() }
    },
    stop: async () => {
      setImmediate(hooks.stop)
      return { stopping: true }
    },
    run: hooks.run,
    // Which of these blocks this node holds locally (tests and repair checks use it).
    'local-has': async (args) => (args as { keys: string[] }).keys.map(k => node.local.hasSync(cidFromKey(Buffer.from(k, 'hex')))),
    // The head this node holds for an AGUID in its own head book (no network lookup): null if none.
    head: async (args) => {
      const a = parseGuid(String((args as { aguid?: unknown })?.aguid))
      if (!isAguid(a)) throw ReefError.badGuid(a.toString(), 'not an AGUID')
      const h = await node.heads.current(a)
      return h === undefined ? null : { seq: h.seq.toString(), vguid: h.vguid.toString() }
    }
  }
  const counted = Object.fromEntries(Object.entries(handlers).map(([cmd, h]) => [cmd, async (args: unknown, notify: (event: unknown) => void) => {
    served[cmd] = (served[cmd] ?? 0) + 1
    return await h(args, notify)
  }]))
  const server = new ControlServer(node.dataDir, counted, hooks.socket)
  await server.listen()
  return server
}

/**
 * A foreground daemon's life: `stop()` runs the teardown once, whoever asks first (the control
 * socket, SIGINT, SIGTERM); `done` settles when it has run. Until then the process stays up.
 */
export class Lifetime {
  private stopping?: Promise<void>
  private readonly keepAlive: NodeJS.Timeout
  private resolveDone!: () => void
  readonly done = new Promise<void>(resolve => { this.resolveDone = resolve })

  constructor (private readonly teardown: () => Promise<void>) {
    this.keepAlive = setInterval(() => {}, 1 << 30)
  }

  async stop (): Promise<void> {
    this.stopping ??= this.teardown().finally(() => {
      clearInterval(this.keepAlive)
      this.resolveDone()
    })
    await this.stopping
  }

  /** SIGINT (Ctrl-C) and SIGTERM stop the daemon the same clean way. */
  onSignals (): void {
    process.once('SIGINT', () => { void this.stop() })
    process.once('SIGTERM', () => { void this.stop() })
  }
}

/** `reef node`: a network node serving its data directory until stopped. */
export async function serveNode (node: ReefNode, hooks: ControlHooks): Promise<{ done: Promise<void> }> {
  let server: ControlServer | undefined
  const life = new Lifetime(async () => {
    await server?.close()
    await node.close()
  })
  const state: DaemonState = {
    status: () => ({ dataDir: node.dataDir, aguid: node.aguid.toString(), network: node.dht?.status(), pid: process.pid }),
    sync: async () => await node.currentVersion()
  }
  try {
    server = await serveControl(node, state, { ...hooks, stop: () => { void life.stop() } })
  } catch (e) {
    await life.stop()
    throw e
  }
  life.onSignals()
  return { done: life.done }
}
