/**
 * The smaller real run as separate processes over TCP on 127.0.0.1 (issue 10, item 7): M
 * `node dist/bin/reef.js --data-dir D node --listen /ip4/127.0.0.1/tcp/0 --bootstrap ADDR`
 * children, each with its own data directory and its stdout/stderr in files (never pipes), each
 * joining through a random node already up (the approach of test/helpers/cluster.ts, copied:
 * bench code does not import from test/). Two in-process members join them over TCP as well:
 * C, which puts a file (waitReplicated: MB/s across processes), and R, which looks keys up
 * (hops) and reads the file's blocks it does not hold (get success and latency). Idle CPU and RSS
 * are the children's own, from /proc/PID/stat and /proc/PID/status; connections and routing
 * from each child's control socket (`status`). Then 30% of the children are SIGKILLed at once
 * (C, the publisher, lives: nothing may be lost) and the run waits (bounded) until every block
 * is on its k closest live nodes, counting the copies repair moved. Every wait is bounded; every
 * child is killed and every directory removed at the end, even on failure.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { peerIdFromString } from '@libp2p/peer-id'
import { type Block, blockKey } from '../../src/block/index.js'
import { request } from '../../src/control/client.js'
import { DhtNode } from '../../src/dht/index.js'
import { kadId, type KadId } from '../../src/dht/placement.js'
import { closestK } from '../../src/dht/regions.js'
import { HeadBook } from '../../src/naming/index.js'
import { fileFromBytes } from '../../src/object/file.js'
import { LmdbBlockStore, LmdbHeadStore, LmdbStore } from '../../src/store/lmdb.js'
import { bounded, mean, pool, quantile, round, sleep } from './real.js'
import type { ScaleRun } from './run.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const REEF_BIN = path.join(ROOT, 'dist', 'bin', 'reef.js')
const K = 3
const MiB = 1024 * 1024
const ADDR_LINE = /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\S+$/
const REPAIR_INTERVAL_S = 30

/** Every child spawned, at once (a run stopped mid-start still kills the ones starting). */
const spawned = new Set<ChildProcess>()

interface Proc {
  i: number
  dir: string
  addr: string
  peerId: string
  kad: KadId
  proc: ChildProcess
  alive: () => boolean
  kill9: () => Promise<void>
  stop: () => Promise<void>
  status: () => Promise<any>
  has: (keys: string[]) => Promise<boolean[]>
}

/** utime + stime of a process, in clock ticks (100 per second here). */
function cpuTicks (pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
  return Number(f[11]) + Number(f[12])
}
function rssKiB (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? NaN : Number(m[1])
}
const CLK_TCK = 100

async function waitFor (what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      if (await cond()) return
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last !== undefined ? ` (${(last as Error).message})` : ''}`)
    await sleep(everyMs)
  }
}

async function startProc (base: string, i: number, bootstrap: string | undefined): Promise<Proc> {
  const dir = path.join(base, `n${i}`)
  fs.mkdirSync(dir, { recursive: true })
  const outFile = path.join(base, `n${i}.stdout`)
  const errFile = path.join(base, `n${i}.stderr`)
  const ofd = fs.openSync(outFile, 'w')
  const efd = fs.openSync(errFile, 'w')
  const args = [REEF_BIN, '--data-dir', dir, 'node', '--listen', '/ip4/127.0.0.1/tcp/0', '--k', String(K), '--repair-interval', String(REPAIR_INTERVAL_S), '--max-connections', '64']
  if (bootstrap !== undefined) args.push('--bootstrap', bootstrap)
  const proc = spawn(process.execPath, args, { stdio: ['ignore', ofd, efd], env: { ...process.env, NODE_NO_WARNINGS: '1' } })
  spawned.add(proc)
  proc.on('exit', () => spawned.delete(proc))
  fs.closeSync(ofd)
  fs.closeSync(efd)
  let exited = false
  const exitP = new Promise<void>(resolve => proc.on('exit', () => { exited = true; resolve() }))
  const waitExit = async (ms: number): Promise<void> => {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([exitP, new Promise(resolve => { timer = setTimeout(resolve, ms) })])
    clearTimeout(timer)
  }
  const read = (f: string): string => { try { return fs.readFileSync(f, 'utf8') } catch { return '' } }
  const kill9 = async (): Promise<void> => { if (!exited) { proc.kill('SIGKILL'); await waitExit(30_000) } }
  const stop = async (): Promise<void> => {
    if (exited) return
    proc.kill('SIGTERM')
    await waitExit(20_000)
    await kill9()
  }
  let addr = ''
  try {
    await waitFor(`node ${i} to print its address`, () => {
      if (exited) throw new Error(`node ${i} exited: ${read(errFile).slice(0, 800)}`)
      addr = read(outFile).split('\n').find(l => ADDR_LINE.test(l)) ?? ''
      return addr !== '' && /up \(data:/.test(read(errFile))
    }, 60_000, 50)
    await waitFor(`node ${i}'s control socket`, async () => (await request(dir, 'ping', undefined, 5000)) === 'pong', 30_000, 50)
  } catch (err) {
    await kill9()
    throw err
  }
  const peerId = addr.slice(addr.lastIndexOf('/p2p/') + 5)
  return {
    i,
    dir,
    addr,
    peerId,
    kad: kadId(peerIdFromString(peerId).toMultihash().bytes),
    proc,
    alive: () => !exited,
    kill9,
    stop,
    status: async () => ((await request(dir, 'status', undefined, 30_000)) as { network: any }).network,
    has: async (keys: string[]) => await request(dir, 'local-has', { keys }, 30_000) as boolean[]
  }
}

async function startMember (base: string, name: string, bootstrap: string[]): Promise<{ node: DhtNode, db: LmdbStore, stop: () => Promise<void> }> {
  const dir = path.join(base, name)
  fs.mkdirSync(dir, { recursive: true })
  const db = new LmdbStore({ path: dir, noSync: true })
  const headStore = new LmdbHeadStore(db)
  const node = await DhtNode.start(crypto.randomBytes(32), new LmdbBlockStore(db), new HeadBook(headStore), headStore, {
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap,
    transport: 'tcp',
    k: K,
    repairIntervalMs: REPAIR_INTERVAL_S * 1000
  })
  let stopped: Promise<void> | undefined
  return { node, db, stop: async () => { stopped ??= (async () => { await bounded('stop', 30_000, node.stop()).catch(() => {}); await db.close().catch(() => {}) })(); await stopped } }
}

export async function tcpRun (opts: { quick: boolean, log: (s: string) => void }): Promise<ScaleRun> {
  const { quick, log } = opts
  const M = quick ? 6 : 8
  const fileBytes = (quick ? 4 : 16) * MiB
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-scale-tcp-'))
  const procs: Proc[] = []
  const members: Array<Awaited<ReturnType<typeof startMember>>> = []
  const t00 = Date.now()
  const onSignal = (): void => { for (const p of spawned) p.kill('SIGKILL'); fs.rmSync(base, { recursive: true, force: true }) }
  process.once('exit', onSignal)
  try {
    // ---- start ----------------------------------------------------------------------------
    procs.push(await startProc(base, 0, undefined))
    await pool(Array.from({ length: M - 1 }, (_x, j) => j + 1), 2, async i => {
      const via = procs[crypto.randomInt(procs.length)]
      const p = await startProc(base, i, via.addr)
      procs.push(p)
    })
    procs.sort((a, b) => a.i - b.i)
    const startSeconds = (Date.now() - t00) / 1000
    const C = await startMember(base, 'C', [procs[crypto.randomInt(M)].addr])
    members.push(C)
    const R = await startMember(base, 'R', [procs[crypto.randomInt(M)].addr])
    members.push(R)
    await C.node.router.refresh(true)
    await R.node.router.refresh(true)
    const N = M + 2
    let tables: number[] = []
    await waitFor('every routing table to hold every other node', async () => {
      tables = [...await Promise.all(procs.map(async p => (await p.status()).routing.table as number)), C.node.router.table.size, R.node.router.table.size]
      return tables.every(t => t >= N - 1)
    }, 60_000, 500).catch(err => log(`${(err as Error).message}; tables ${tables.join(',')}`))
    log(`${M} reef node processes + 2 in-process members up in ${((Date.now() - t00) / 1000).toFixed(1)} s; routing tables ${tables.join(',')}`)

    // ---- idle -----------------------------------------------------------------------------
    await sleep(6_000)
    const c0 = procs.map(p => cpuTicks(p.proc.pid as number))
    const i0 = Date.now()
    await sleep(10_000)
    const idleS = (Date.now() - i0) / 1000
    const cpuPct = procs.map((p, j) => (cpuTicks(p.proc.pid as number) - c0[j]) / CLK_TCK / idleS * 100)
    const rss = procs.map(p => rssKiB(p.proc.pid as number) / 1024)
    const conns = await Promise.all(procs.map(async p => (await p.status()).connections.open as number))
    log(`idle: ${mean(cpuPct).toFixed(2)}% of a core per process (max ${Math.max(...cpuPct).toFixed(2)}), RSS ${mean(rss).toFixed(0)} MiB per process, ${mean(conns).toFixed(1)} connections (max ${Math.max(...conns)})`)

    // ---- lookups from R -------------------------------------------------------------------
    const everyone = [...procs.map(p => ({ key: p.peerId, kad: p.kad })), C.node.router.self, R.node.router.self]
    const hops: number[] = []
    const lookupMs: number[] = []
    let trueK = 0
    const L = quick ? 30 : 60
    for (let j = 0; j < L; j++) {
      const target = kadId(crypto.randomBytes(32))
      const t = Date.now()
      const w = await R.node.router.walk(target, AbortSignal.timeout(30_000)).catch(() => undefined)
      if (w === undefined) continue
      lookupMs.push(Date.now() - t)
      hops.push(w.hops)
      if (closestK(target, everyone, K).map(p => p.key).join() === closestK(target, [R.node.router.self, ...w.peers], K).map(p => p.key).join()) trueK++
    }

    // ---- put through C --------------------------------------------------------------------
    const bytes = crypto.randomBytes(fileBytes)
    const blocks: Block[] = []
    const lk0 = C.node.placement.stats.lookups
    let s0 = Date.now()
    await fileFromBytes(bytes, async bs => { blocks.push(...bs); await C.node.store.putMany(bs) })
    const rep = await C.node.replicator.waitReplicated(blocks.map(b => blockKey(b.cid)), 180_000)
    const putSeconds = (Date.now() - s0) / 1000
    const putLookups = C.node.placement.stats.lookups - lk0
    log(`put: ${fileBytes / MiB} MiB (${blocks.length} blocks) through an in-process member, replicated in ${putSeconds.toFixed(2)} s (${(fileBytes / 1e6 / putSeconds).toFixed(1)} MB/s), ${putLookups} lookups, ${rep.blocksShort} short`)

    // ---- gets from R ----------------------------------------------------------------------
    const remote = blocks.filter(b => !R.node.store.local.hasSync(b.cid))
    const getMs: number[] = []
    let ok = 0
    const errors: string[] = []
    for (const b of remote) {
      const t = Date.now()
      try {
        const d = await bounded('get', 20_000, R.node.store.get(b.cid))
        if (Buffer.compare(Buffer.from(d), Buffer.from(b.bytes)) === 0) ok++
        else errors.push('bytes differ')
      } catch (err) {
        errors.push((err as Error).message)
      }
      getMs.push(Date.now() - t)
    }
    log(`gets: ${ok} of ${remote.length} blocks R did not hold; latency p50 ${quantile(getMs, 0.5)} ms p95 ${quantile(getMs, 0.95)} ms`)

    // ---- 30% of the processes killed ------------------------------------------------------
    const hexKeys = blocks.map(b => Buffer.from(blockKey(b.cid)).toString('hex'))
    type Holder = { key: string, kad: KadId, has: (keys: string[]) => Promise<boolean[]>, alive: () => boolean }
    const holders: Holder[] = [
      ...procs.map(p => ({ key: p.peerId, kad: p.kad, has: p.has, alive: p.alive })),
      ...[C, R].map(m => ({ key: m.node.router.self.key, kad: m.node.router.self.kad, has: async (ks: string[]) => ks.map(k => m.node.store.local.hasSync(blocks[hexKeys.indexOf(k)].cid)), alive: () => true }))
    ]
    const holdings = async (among: Holder[]): Promise<Map<string, boolean[]>> => new Map(await Promise.all(among.map(async h => [h.key, await h.has(hexKeys)] as const)))
    const V = Math.round(0.3 * M)
    const victims = [...procs].sort(() => Math.random() - 0.5).slice(0, V)
    const kill0 = Date.now()
    await Promise.all(victims.map(async p => await p.kill9()))
    const live = holders.filter(h => h.alive())
    const before = await holdings(live)
    const lost = blocks.filter((_b, j) => !live.some(h => before.get(h.key)?.[j] === true)).length
    const want = blocks.map(b => closestK(kadId(blockKey(b.cid)), live, K))
    let short = 0
    let restoreSeconds: number | null = null
    let after = before
    while (Date.now() - kill0 < (quick ? 180_000 : 300_000)) {
      after = await holdings(live)
      short = 0
      want.forEach((ws, j) => { for (const h of ws) if (after.get(h.key)?.[j] !== true) short++ })
      if (short === 0) { restoreSeconds = (Date.now() - kill0) / 1000; break }
      await sleep(2000)
    }
    let bytesMoved = 0
    let copies = 0
    blocks.forEach((b, j) => { for (const h of live) if (before.get(h.key)?.[j] !== true && after.get(h.key)?.[j] === true) { copies++; bytesMoved += b.bytes.length } })
    log(`killed ${V} of ${M} processes: ${lost} blocks lost; ${restoreSeconds !== null ? `k restored in ${restoreSeconds.toFixed(1)} s` : `${short} replicas still short`}; ${copies} copies (${(bytesMoved / MiB).toFixed(2)} MiB) moved`)

    return {
      kind: 'real',
      n: N,
      transport: 'tcp',
      processes: M,
      inProcessMembers: 2,
      maxConnections: 64,
      k: K,
      hopsP50: quantile(hops, 0.5),
      hopsP95: quantile(hops, 0.95),
      lookups: L,
      lookupTrueK: trueK / L,
      lookupLatencyP50Ms: quantile(lookupMs, 0.5),
      getSuccess: remote.length === 0 ? NaN : ok / remote.length,
      gets: remote.length,
      getFailures: errors.slice(0, 5),
      getLatencyP50Ms: quantile(getMs, 0.5),
      getLatencyP95Ms: quantile(getMs, 0.95),
      putBytes: fileBytes,
      putBlocks: blocks.length,
      putSeconds: round(putSeconds, 3),
      putMBps: round(fileBytes / 1e6 / putSeconds),
      putLookups,
      putShort: rep.blocksShort,
      startSeconds: round(startSeconds, 1),
      startMsPerNode: round(startSeconds * 1000 / M, 0),
      idleCpuPctPerNode: round(mean(cpuPct), 3),
      idleCpuPctMax: round(Math.max(...cpuPct), 3),
      rssMiBPerNode: round(mean(rss), 1),
      rssMiBMax: round(Math.max(...rss), 1),
      connIdleMean: round(mean(conns), 1),
      connIdleMax: Math.max(...conns),
      repair: { stopped: V, blocks: blocks.length, lost, expectedLost: 0, restored: restoreSeconds !== null, restoreSeconds: restoreSeconds === null ? null : round(restoreSeconds, 1), shortAtEnd: short, copiesMoved: copies, bytesMoved, repairIntervalMs: REPAIR_INTERVAL_S * 1000 },
      loadAvg: os.loadavg().map(x => round(x, 2)),
      runSeconds: round((Date.now() - t00) / 1000, 1)
    }
  } finally {
    for (const m of members) await m.stop()
    await Promise.all(procs.map(async p => await p.stop().catch(async () => await p.kill9())))
    for (const p of spawned) p.kill('SIGKILL')
    process.removeListener('exit', onSignal)
    fs.rmSync(base, { recursive: true, force: true })
  }
}
