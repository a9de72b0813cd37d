/**
 * A cluster of real `reef node` processes on 127.0.0.1 for the DHT tests and the benchmark.
 * Each node is `node dist/bin/reef.js --data-dir D node --listen /ip4/127.0.0.1/tcp/0
 * [--bootstrap FIRST] --k K` in its own temp data directory; stdout and stderr go to files (never
 * pipes: a node that logs a lot can then never block on a full pipe). Every wait is a bounded
 * poll; teardown kills whatever is still running and removes the directories.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { open } from 'lmdb'
import { peerIdFromString } from '@libp2p/peer-id'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify, type Identify } from '@libp2p/identify'
import { ping, type Ping } from '@libp2p/ping'
import { kadDHT, type SingleKadDHT, type PeerInfoMapper } from '@libp2p/kad-dht'
import { MemoryDatastore } from 'datastore-core/memory'
import type { Key } from 'interface-datastore'
import type { AbortOptions } from '@libp2p/interface'
import { request } from '../../src/control/client.js'
import { DHT_PROTOCOL } from '../../src/dht/index.js'
import { compareDistance, kadId } from '../../src/dht/placement.js'
import { rmTree } from './cli.js'
import { isMounted, run, type RunResult } from './mount.js'

export { rmTree, run, type RunResult }

// From test/helpers under tap, or from dist/test/helpers when the benchmark imports it.
const HERE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const ROOT = path.basename(HERE) === 'dist' ? path.dirname(HERE) : HERE
export const REEF_BIN = path.join(ROOT, 'dist', 'bin', 'reef.js')

interface TapLike { teardown: (fn: () => void | Promise<void>) => void }


// eslint-disable-next-line no-control-regex
const printable = (s: string): string => /^[\t\n\x20-\x7e]*$/.test(s.slice(0, 600)) ? s.slice(0, 600) : `<${Buffer.byteLength(s)} bytes>`
export const describe = (r: RunResult): string =>
  `exit ${String(r.code)}${r.signal !== null ? ' ' + r.signal : ''} after ${r.ms} ms; stdout: ${printable(r.stdout)}; stderr: ${r.stderr.slice(0, 1500)}`

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

/** Thrown from a waitFor condition to stop waiting at once (e.g. the process waited on exited). */
export class StopWaiting extends Error {}

/** Polls `cond` (sync or async) until it returns true; throws after `timeoutMs` naming `what`. */
export async function waitFor (what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 30_000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      if (await cond()) return
    } catch (err) {
      if (err instanceof StopWaiting) throw err
      last = err
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last !== undefined ? ` (last error: ${(last as Error).message})` : ''}`)
    await sleep(everyMs)
  }
}

/** Runs `reef --data-dir DATA ...args` (forwarded to the node serving DATA, if one runs). */
export async function reefCli (dataDir: string, args: string[], opts: { input?: string | Buffer, timeoutMs?: number, cwd?: string } = {}): Promise<RunResult> {
  return await run(process.execPath, [REEF_BIN, '--data-dir', dataDir, ...args], opts)
}


export interface NodeHandle {
  /** Index in the cluster (0 is the bootstrap node). */
  i: number
  dataDir: string
  /** /ip4/127.0.0.1/tcp/PORT/p2p/ID */
  addr: string
  addrs: string[]
  peerId: string
  pid: number
  proc: ChildProcess
  alive: () => boolean
  stdout: () => string
  stderr: () => string
  /** SIGKILL and wait (bounded) for the exit. */
  kill9: () => Promise<void>
  /** SIGTERM, wait (bounded), SIGKILL if still running. */
  stop: () => Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** A control request to this node. */
  control: (cmd: string, args?: unknown, timeoutMs?: number) => Promise<any>
  /** The node's `network` status. */
  network: () => Promise<any>
  /** Which of these block keys (hex sha256 digests) the node holds in its local store. */
  localHas: (keys: string[]) => Promise<boolean[]>
}

export interface ClusterOptions {
  k?: number
  /** Extra environment, for every node or per node index. */
  env?: NodeJS.ProcessEnv | ((i: number) => NodeJS.ProcessEnv | undefined)
  /** Seconds between full repair passes. */
  repairInterval?: number
  /** How long to wait for the cluster to form (default 60 s). */
  formTimeoutMs?: number
  /** Extra arguments for `reef node`. */
  extraArgs?: string[]
  /** Arguments for node itself (e.g. --cpu-prof). */
  nodeArgs?: string[]
}

export interface Cluster {
  nodes: NodeHandle[]
  base: string
  /** Runs `reef --data-dir NODE.dataDir ...args` (forwarded through that node). */
  reef: (node: NodeHandle, ...args: string[]) => Promise<RunResult>
  /** The same with `input` on stdin. */
  reefIn: (node: NodeHandle, input: string | Buffer, ...args: string[]) => Promise<RunResult>
  /** The nodes still running. */
  live: () => NodeHandle[]
  /** Waits until every live node reports `members` equal to the number of live nodes. */
  waitMembers: (timeoutMs?: number) => Promise<void>
  /** Stops every node (SIGTERM, bounded). */
  stopAll: () => Promise<void>
}

const ADDR_LINE = /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\S+$/

let counter = 0

/** Starts one `reef node` process; resolves once it printed its multiaddrs and its control socket answers. */
export async function startNode (t: TapLike, dataDir: string, i: number, opts: { k?: number, bootstrap?: string, repairInterval?: number, env?: NodeJS.ProcessEnv, extraArgs?: string[], nodeArgs?: string[], logDir?: string } = {}): Promise<NodeHandle> {
  fs.mkdirSync(dataDir, { recursive: true })
  const logDir = opts.logDir ?? dataDir
  const tag = `node${i}-${process.pid}-${++counter}`
  const outFile = path.join(logDir, `${tag}.stdout`)
  const errFile = path.join(logDir, `${tag}.stderr`)
  const ofd = fs.openSync(outFile, 'w')
  const efd = fs.openSync(errFile, 'w')
  const args = [...(opts.nodeArgs ?? []), REEF_BIN, '--data-dir', dataDir, 'node', '--listen', '/ip4/127.0.0.1/tcp/0']
  if (opts.bootstrap !== undefined) args.push('--bootstrap', opts.bootstrap)
  if (opts.k !== undefined) args.push('--k', String(opts.k))
  if (opts.repairInterval !== undefined) args.push('--repair-interval', String(opts.repairInterval))
  args.push(...(opts.extraArgs ?? []))
  const proc = spawn(process.execPath, args, {
    stdio: ['ignore', ofd, efd],
    env: { ...process.env, NODE_NO_WARNINGS: '1', ...opts.env }
  })
  fs.closeSync(ofd)
  fs.closeSync(efd)
  let exit: { code: number | null, signal: NodeJS.Signals | null } | undefined
  const exitP = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => {
    proc.on('exit', (code, signal) => { exit = { code, signal }; resolve(exit) })
  })
  const read = (f: string) => (): string => { try { return fs.readFileSync(f, 'utf8') } catch { return '' } }
  const stdout = read(outFile)
  const stderr = read(errFile)
  const waitExit = async (ms: number): Promise<boolean> => {
    if (exit !== undefined) return true
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), ms) })
    try {
      return await Promise.race([exitP.then(() => true), timeout])
    } finally {
      clearTimeout(timer)
    }
  }
  const kill9 = async (): Promise<void> => {
    if (exit === undefined) proc.kill('SIGKILL')
    if (!(await waitExit(30_000))) throw new Error(`node ${i} (pid ${proc.pid}) did not die on SIGKILL`)
  }
  const stop = async (): Promise<{ code: number | null, signal: NodeJS.Signals | null }> => {
    if (exit === undefined) {
      proc.kill('SIGTERM')
      if (!(await waitExit(20_000))) await kill9()
    }
    return exit ?? { code: null, signal: null }
  }
  t.teardown(async () => { await kill9().catch(() => {}) })
  let addrs: string[] = []
  try {
    await waitFor(`the multiaddrs of node ${i}`, () => {
      if (exit !== undefined) throw new StopWaiting(`node ${i} exited (${exit.code ?? exit.signal}) before printing its address:\n${stderr()}`)
      addrs = stdout().split('\n').filter(l => ADDR_LINE.test(l))
      return addrs.length > 0 && /up \(data:/.test(stderr())
    }, 30_000, 50)
    await waitFor(`the control socket of node ${i}`, async () => {
      if (exit !== undefined) throw new StopWaiting(`node ${i} exited:\n${stderr()}`)
      return (await request(dataDir, 'ping', undefined, 5000)) === 'pong'
    }, 30_000, 50)
  } catch (err) {
    await kill9().catch(() => {})
    throw err
  }
  const addr = addrs[0]
  const control = async (cmd: string, args?: unknown, timeoutMs = 30_000): Promise<any> => await request(dataDir, cmd, args, timeoutMs)
  return {
    i,
    dataDir,
    addr,
    addrs,
    peerId: addr.slice(addr.lastIndexOf('/p2p/') + 5),
    pid: proc.pid as number,
    proc,
    alive: () => exit === undefined,
    stdout,
    stderr,
    kill9,
    stop,
    control,
    network: async () => (await control('status')).network,
    localHas: async (keys: string[]) => await control('local-has', { keys }) as boolean[]
  }
}

/**
 * Starts `n` nodes: the first, then the rest bootstrapped from it (a few at a time, so a
 * 2-core machine is not flooded with process start-ups), and waits (bounded) until every node
 * reports `members === n`.
 */
export async function startCluster (t: TapLike, n: number, opts: ClusterOptions = {}): Promise<Cluster> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-dht-'))
  fs.chmodSync(base, 0o755)
  const nodes: NodeHandle[] = []
  // Teardowns run in reverse order: this one (registered first) runs after every node's kill.
  t.teardown(async () => {
    await Promise.all(nodes.map(async nd => await nd.kill9().catch(() => {})))
    rmTree(base)
  })
  const envOf = (i: number): NodeJS.ProcessEnv | undefined => typeof opts.env === 'function' ? opts.env(i) : opts.env
  const common = { k: opts.k, repairInterval: opts.repairInterval, extraArgs: opts.extraArgs, nodeArgs: opts.nodeArgs }
  const first = await startNode(t, path.join(base, 'n0'), 0, { ...common, env: envOf(0) })
  nodes.push(first)
  const rest = Array.from({ length: n - 1 }, (_v, j) => j + 1)
  for (let s = 0; s < rest.length; s += 4) {
    const group = rest.slice(s, s + 4)
    const started = await Promise.all(group.map(async i => await startNode(t, path.join(base, `n${i}`), i, { ...common, env: envOf(i), bootstrap: first.addr })))
    nodes.push(...started)
  }
  nodes.sort((a, b) => a.i - b.i)
  const live = (): NodeHandle[] => nodes.filter(nd => nd.alive())
  const waitMembers = async (timeoutMs = opts.formTimeoutMs ?? 60_000): Promise<void> => {
    let seen: number[] = []
    await waitFor('every node to see every live node', async () => {
      const ls = live()
      seen = await Promise.all(ls.map(async nd => ((await nd.network()) as { members: number }).members))
      return seen.every(m => m === ls.length)
    }, timeoutMs, 200).catch(err => { throw new Error(`${(err as Error).message}; members seen: ${seen.join(',')}`) })
  }
  await waitMembers()
  return {
    nodes,
    base,
    live,
    waitMembers,
    reef: async (node, ...args) => await reefCli(node.dataDir, args),
    reefIn: async (node, input, ...args) => await reefCli(node.dataDir, args, { input }),
    stopAll: async () => { await Promise.all(nodes.map(async nd => await nd.stop())) }
  }
}

export interface NetMount { mnt: string, dataDir: string, addr: string, pid: number, stderr: () => string, stop: () => Promise<void>, alive: () => boolean }

/** `reef mount MNT --listen /ip4/127.0.0.1/tcp/0 ...`: resolves once mounted, with the node's multiaddr. */
export async function startNetMount (t: { teardown: (fn: () => Promise<void>) => void }, dataDir: string, mnt: string, extra: string[], env: NodeJS.ProcessEnv = {}): Promise<NetMount> {
  const outFile = path.join(path.dirname(dataDir), `${path.basename(dataDir)}.stdout`)
  const errFile = path.join(path.dirname(dataDir), `${path.basename(dataDir)}.stderr`)
  const ofd = fs.openSync(outFile, 'w')
  const efd = fs.openSync(errFile, 'w')
  const proc = spawn(process.execPath, [REEF_BIN, '--data-dir', dataDir, 'mount', mnt, '--listen', '/ip4/127.0.0.1/tcp/0', ...extra], {
    stdio: ['ignore', ofd, efd],
    env: { ...process.env, NODE_NO_WARNINGS: '1', ...env }
  })
  fs.closeSync(ofd)
  fs.closeSync(efd)
  let exited = false
  const exitP = new Promise<void>(resolve => proc.on('exit', () => { exited = true; resolve() }))
  const read = (f: string) => (): string => { try { return fs.readFileSync(f, 'utf8') } catch { return '' } }
  const stderr = read(errFile)
  const stdout = read(outFile)
  const waitExit = async (ms: number): Promise<void> => {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([exitP, new Promise(resolve => { timer = setTimeout(resolve, ms) })])
    clearTimeout(timer)
  }
  let stopped: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    stopped ??= (async () => {
      if (!exited) {
        proc.kill('SIGTERM')
        await waitExit(30_000)
        if (!exited) { proc.kill('SIGKILL'); await waitExit(10_000) }
      }
      if (isMounted(mnt)) spawn('fusermount', ['-uz', mnt], { stdio: 'ignore' })
    })()
    await stopped
  }
  t.teardown(stop)
  await waitFor(`the mount of ${dataDir} on ${mnt}`, () => {
    if (exited) throw new StopWaiting(`reef mount exited before mounting:\n${stderr()}`)
    return /^reef: mounted /m.test(stderr()) && isMounted(mnt)
  }, 40_000, 50)
  const addr = stdout().split('\n').find(l => /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\S+$/.test(l))
  if (addr === undefined) throw new Error(`no multiaddr on stdout: ${stdout()}`)
  return { mnt, dataDir, addr, pid: proc.pid as number, stderr, stop, alive: () => !exited }
}

/** Resident memory of a process in kB (VmRSS from /proc/PID/status). */
export function rssKb (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (m === null) throw new Error(`no VmRSS for ${pid}`)
  return Number(m[1])
}

/** CPU time (user + system) of a process in clock ticks (from /proc/PID/stat). */
export function cpuTicks (pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
  // after "pid (comm) ": state is f[0]; utime is field 14 overall -> f[11], stime f[12]
  return Number(f[11]) + Number(f[12])
}

/** Every block key (hex sha256 digest) in a data directory's store; safe while its node runs (LMDB is multi-process). */
export async function storeKeys (dataDir: string): Promise<string[]> {
  const env = open({ path: path.join(dataDir, 'store'), compression: false, maxDbs: 8, readOnly: true })
  try {
    const blocks = env.openDB<Buffer, Buffer>({ name: 'blocks', keyEncoding: 'binary', encoding: 'binary' })
    const out: string[] = []
    for (const k of blocks.getKeys()) out.push(Buffer.from(k as Buffer).toString('hex'))
    return out.sort()
  } finally {
    await env.close()
  }
}

/** Nodes ordered by Kademlia distance to a block key (hex), closest first: the order placement and reads use. */
export function rankFor (keyHex: string, nodes: NodeHandle[]): NodeHandle[] {
  const target = kadId(Buffer.from(keyHex, 'hex'))
  const ids = new Map(nodes.map(nd => [nd, kadId(peerIdFromString(nd.peerId).toMultihash().bytes)]))
  return [...nodes].sort((a, b) => compareDistance(target, ids.get(a) as Uint8Array, ids.get(b) as Uint8Array))
}

/** holders[node index] = which of `keys` that node holds (live nodes only). */
export async function holdings (nodes: NodeHandle[], keys: string[]): Promise<Map<NodeHandle, boolean[]>> {
  const m = new Map<NodeHandle, boolean[]>()
  await Promise.all(nodes.map(async nd => { m.set(nd, await nd.localHas(keys)) }))
  return m
}

/** Keys (with their expected holders) that are not held by all of their k closest among `nodes`. */
export async function misplaced (nodes: NodeHandle[], keys: string[], k: number): Promise<string[]> {
  const h = await holdings(nodes, keys)
  const out: string[] = []
  keys.forEach((key, j) => {
    const want = rankFor(key, nodes).slice(0, k)
    const lacking = want.filter(nd => !(h.get(nd) as boolean[])[j])
    if (lacking.length > 0) out.push(`${key.slice(0, 12)}: not on node ${lacking.map(nd => nd.i).join(',')}`)
  })
  return out
}

/** Keeps no DHT records: the test client only pushes and reads records, it never holds any. */
class NoRecordDatastore extends MemoryDatastore {
  override async put (key: Key, val: Uint8Array, options?: AbortOptions): Promise<Key> {
    if (key.toString().startsWith('/dht/record/')) return key
    return await super.put(key, val, options)
  }
}

/**
 * An in-process libp2p client on 127.0.0.1 speaking the reef DHT protocol in client mode (it
 * is never a member or a record holder) with validators that accept anything, so a test can
 * push forged or malformed head records to the nodes and open raw block-protocol streams.
 */
export async function startClient (t: TapLike): Promise<Libp2p<{ identify: Identify, ping: Ping, dht: SingleKadDHT }>> {
  const mapper: PeerInfoMapper = (peer) => ({ ...peer, multiaddrs: peer.multiaddrs.filter(ma => ma.toString().startsWith('/ip4/127.0.0.1/')) })
  const node = await createLibp2p({
    datastore: new NoRecordDatastore(),
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      ping: ping({ maxInboundStreams: 16, maxOutboundStreams: 16 }),
      // A single (not dual) kad-dht has a routing table: the cast says so.
      dht: kadDHT({
        protocol: DHT_PROTOCOL,
        clientMode: true,
        peerInfoMapper: mapper,
        allowQueryWithZeroPeers: true,
        validators: { reef: async () => {} },
        selectors: { reef: () => 0 }
      }) as (components: any) => SingleKadDHT
    }
  })
  t.teardown(async () => { await node.stop() })
  return node
}
