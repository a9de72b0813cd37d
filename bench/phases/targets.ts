/**
 * The implementations a scenario runs against, behind one interface: a directory on local disk,
 * a reef mount on a fresh embedded node, and a reef mount whose node is one of a 3-node
 * loopback cluster replicating in the background. Every reef daemon is a separate child
 * process, so the benchmark process may use synchronous fs calls on the mount.
 */
import fs from 'node:fs'
import path from 'node:path'
import { type Daemon, dropCaches, forceUnmount, isFuseMounted, onCleanup, reefJson, run, sleep, startReef, trackMount, untrackMount, waitFor } from './proc.js'

export type TargetName = 'local' | 'reef' | 'reef-cluster' | 'reef-view'

export interface Settled {
  seconds: number
  /** Cluster only: blocks not yet on their replicas when the bounded wait ended (0 = done). */
  notReplicated?: number
}

export interface Target {
  readonly name: TargetName
  readonly label: string
  /** The (empty, after start) directory the scenario works in. */
  readonly dir: string
  start (): Promise<void>
  /**
   * Makes the work durable where the target keeps it: local `sync -f`; reef: fold into a
   * version (`reef sync`); cluster: fold, then poll `reef sync --json` until notReplicated is 0.
   */
  settle (timeoutMs: number): Promise<Settled>
  /** Makes the next access cold: reef unmounts and remounts its data dir; all drop caches. */
  coldRestart (): Promise<{ dropped: boolean }>
  stop (): Promise<void>
  /** The mount daemon's resident set now, in MiB (reef targets only). */
  daemonRssMiB?: () => Promise<number | undefined>
}

const LOOPBACK = '/ip4/127.0.0.1/tcp/0'

function freshDir (base: string, name: string): string {
  fs.mkdirSync(base, { recursive: true })
  const d = fs.mkdtempSync(path.join(base, `${name}-`))
  fs.chmodSync(d, 0o755)
  return d
}

function removeTree (d: string): void {
  // Never recurse into a mount that is still there.
  for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const where = line.split(' ')[1] ?? ''
    if (where.startsWith(d + '/')) forceUnmount(where)
  }
  fs.rmSync(d, { recursive: true, force: true })
}

export class LocalTarget implements Target {
  readonly name: TargetName = 'local'
  readonly label = 'local disk'
  readonly dir: string
  private readonly base: string
  private unregister?: () => void

  constructor (baseDir: string) {
    this.base = freshDir(baseDir, 'local')
    this.dir = path.join(this.base, 'work')
  }

  async start (): Promise<void> {
    fs.mkdirSync(this.dir)
    this.unregister = onCleanup(async () => { removeTree(this.base) })
  }

  async settle (): Promise<Settled> {
    const r = await run('sync', ['-f', this.dir])
    return { seconds: r.seconds }
  }

  async coldRestart (): Promise<{ dropped: boolean }> {
    return { dropped: dropCaches() }
  }

  async stop (): Promise<void> {
    this.unregister?.()
    removeTree(this.base)
  }
}

/** One `reef mount` daemon on `mnt` over `dataDir`. */
class ReefMount {
  private daemon?: Daemon
  private starts = 0

  constructor (readonly dataDir: string, readonly mnt: string, private readonly logDir: string, private readonly extraArgs: () => string[]) {}

  async start (): Promise<void> {
    const name = `mount-${++this.starts}`
    // REEF_BENCH_MOUNT_ARGS adds options to every reef mount (e.g. "--attr-timeout 0 --no-attr-cache --no-write-behind").
    const fromEnv = (process.env.REEF_BENCH_MOUNT_ARGS ?? '').split(/\s+/).filter(a => a !== '')
    const d = startReef(name, this.dataDir, ['mount', this.mnt, ...this.extraArgs(), ...fromEnv], this.logDir)
    this.daemon = d
    trackMount(this.mnt)
    try {
      await waitFor(`"reef: mounted" on ${this.mnt}`, () => {
        if (d.exited()) throw new Error(`reef mount exited before mounting:\n${d.stderr().slice(-2000)}`)
        return /^reef: mounted /m.test(d.stderr()) && isFuseMounted(this.mnt)
      }, 60_000)
    } catch (err) {
      await this.stop()
      throw err
    }
  }

  /** SIGTERM (the daemon folds and unmounts), bounded wait, then `fusermount -uz` if needed. */
  async stop (): Promise<void> {
    const d = this.daemon
    this.daemon = undefined
    if (d !== undefined) {
      const clean = await d.stop()
      if (!clean) process.stderr.write(`bench: reef mount on ${this.mnt} did not stop cleanly:\n${d.stderr().slice(-1500)}\n`)
    }
    forceUnmount(this.mnt)
    untrackMount(this.mnt)
  }

  stderr (): string { return this.daemon?.stderr() ?? '' }
}

export class ReefTarget implements Target {
  readonly name: TargetName = 'reef'
  readonly label: string = 'reef mount, embedded node'
  readonly dir: string
  protected readonly base: string
  protected readonly mount: ReefMount
  private unregister?: () => void

  constructor (baseDir: string, name = 'reef') {
    this.base = freshDir(baseDir, name)
    this.dir = path.join(this.base, 'mnt')
    this.mount = new ReefMount(path.join(this.base, 'data'), this.dir, path.join(this.base, 'logs'), () => this.mountArgs())
  }

  protected mountArgs (): string[] { return [] }

  async start (): Promise<void> {
    this.unregister = onCleanup(async () => { await this.teardown() })
    await this.mount.start()
  }

  async settle (timeoutMs: number): Promise<Settled> {
    const t0 = process.hrtime.bigint()
    await reefJson(this.mount.dataDir, ['sync'], timeoutMs)
    return { seconds: Number(process.hrtime.bigint() - t0) / 1e9 }
  }

  async coldRestart (): Promise<{ dropped: boolean }> {
    await this.mount.stop()
    const dropped = dropCaches()
    await this.mount.start()
    return { dropped }
  }

  protected async teardown (): Promise<void> {
    await this.mount.stop()
    removeTree(this.base)
  }

  async stop (): Promise<void> {
    this.unregister?.()
    await this.teardown()
  }

  /** The mount daemon's stderr so far (for reports of failures). */
  daemonLog (): string { return this.mount.stderr() }

  async daemonRssMiB (): Promise<number | undefined> {
    const st = await reefJson(this.mount.dataDir, ['status'], 30_000) as { pid?: number }
    if (st.pid === undefined) return undefined
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${st.pid}/status`, 'utf8'))
    return m === null ? undefined : Number(m[1]) / 1024
  }
  get dataDir (): string { return this.mount.dataDir }
}

interface NetStatus { network?: { members?: number } }

/**
 * A reef mount whose node joins two plain `reef node` processes on 127.0.0.1 (k = 3, the
 * default, so every block goes to all three); the mount replicates in the background.
 */
export class ClusterTarget extends ReefTarget {
  override readonly name: TargetName = 'reef-cluster'
  override readonly label = 'reef mount in a 3-node loopback cluster'
  private nodes: Daemon[] = []
  private addrs: string[] = []

  constructor (baseDir: string) {
    super(baseDir, 'reef-cluster')
  }

  protected override mountArgs (): string[] {
    return ['--listen', LOOPBACK, ...this.addrs.flatMap(a => ['--bootstrap', a])]
  }

  private async startNode (i: number): Promise<void> {
    const args = ['node', '--listen', LOOPBACK, ...this.addrs.flatMap(a => ['--bootstrap', a])]
    const d = startReef(`node${i}`, path.join(this.base, `node${i}`), args, path.join(this.base, 'logs'))
    this.nodes.push(d)
    let addr = ''
    await waitFor(`node${i}'s multiaddr on stdout`, () => {
      if (d.exited()) throw new Error(`reef node ${i} exited:\n${d.stderr().slice(-1500)}`)
      addr = d.stdout().split('\n').find(l => l.startsWith('/ip4/127.0.0.1/') && l.includes('/p2p/')) ?? ''
      return addr !== ''
    }, 60_000)
    this.addrs.push(addr)
  }

  override async start (): Promise<void> {
    this.unregisterCluster = onCleanup(async () => { await this.teardown() })
    await this.startNode(1)
    await this.startNode(2)
    await this.mount.start()
    // Membership settles through peer exchange; start once the mount knows both nodes (bounded).
    await waitFor('the mount to see both cluster nodes', async () => {
      const st = await reefJson<NetStatus>(this.dataDir, ['status'], 30_000).catch(() => ({}) as NetStatus)
      return (st.network?.members ?? 0) >= 2
    }, 30_000, 250).catch(err => process.stderr.write(`bench: ${(err as Error).message}; going on\n`))
  }

  private unregisterCluster?: () => void

  /**
   * Fold, then poll until no block waits for replication. Each `reef sync` itself waits up to
   * 60 s for the replicator; the loop is bounded by `timeoutMs` in all.
   */
  override async settle (timeoutMs: number): Promise<Settled> {
    const t0 = process.hrtime.bigint()
    const deadline = Date.now() + timeoutMs
    let pending: number | undefined
    for (;;) {
      const r = await reefJson<{ notReplicated?: number }>(this.dataDir, ['sync'], Math.max(10_000, deadline - Date.now() + 70_000))
      pending = r.notReplicated
      if (pending === 0 || pending === undefined || Date.now() >= deadline) break
      await sleep(200)
    }
    return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, notReplicated: pending }
  }

  protected override async teardown (): Promise<void> {
    await this.mount.stop()
    for (const n of this.nodes.reverse()) await n.stop(30_000)
    this.nodes = []
    removeTree(this.base)
  }

  override async stop (): Promise<void> {
    this.unregisterCluster?.()
    await this.teardown()
  }
}

/**
 * Writer A's mount of a shared file system (issue 12) with a second writer B mounted beside it
 * on this machine: A owns view "bench" and adds B; both mount it with --view on loopback, so
 * B merges everything A writes while the phases run (its CPU is part of what is measured, as
 * it would be on one laptop), and A looks for B's head every view interval.
 */
export class ViewTarget extends ReefTarget {
  override readonly name: TargetName = 'reef-view'
  override readonly label = 'reef view mount, 2 writers on loopback'
  private view = ''
  private addr = ''
  private second?: ReefMount

  constructor (baseDir: string) {
    super(baseDir, 'reef-view')
  }

  protected override mountArgs (): string[] {
    return ['--view', this.view, '--listen', LOOPBACK]
  }

  override async start (): Promise<void> {
    this.unregisterView = onCleanup(async () => { await this.teardown() })
    const a = this.dataDir
    const b = path.join(this.base, 'data-b')
    for (const d of [a, b]) await reefJson(d, ['init'], 60_000)
    this.view = (await reefJson<{ view: string }>(a, ['view', 'create', 'bench'], 60_000)).view
    const key = (await reefJson<{ key: string }>(b, ['id'], 60_000)).key
    await reefJson(a, ['view', 'add', this.view, key], 60_000)
    await this.mount.start()
    const st = await reefJson<{ network?: { addrs?: string[] }, view?: { rounds?: number } }>(a, ['status'], 30_000)
    this.addr = st.network?.addrs?.[0] ?? ''
    await waitFor('A to publish the view', async () => ((await reefJson<{ view?: { rounds?: number } }>(a, ['status'], 30_000)).view?.rounds ?? 0) >= 1, 60_000, 100)
    this.second = new ReefMount(b, path.join(this.base, 'mnt-b'), path.join(this.base, 'logs'), () => ['--view', this.view, '--listen', LOOPBACK, '--bootstrap', this.addr])
    await this.second.start()
  }

  private unregisterView?: () => void

  protected override async teardown (): Promise<void> {
    await this.second?.stop()
    this.second = undefined
    await super.teardown()
  }

  override async stop (): Promise<void> {
    this.unregisterView?.()
    await this.teardown()
  }
}

export function makeTarget (name: TargetName, baseDir: string): Target {
  switch (name) {
    case 'local': return new LocalTarget(baseDir)
    case 'reef': return new ReefTarget(baseDir)
    case 'reef-cluster': return new ClusterTarget(baseDir)
    case 'reef-view': return new ViewTarget(baseDir)
  }
}
