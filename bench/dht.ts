/**
 * The DHT on a loopback cluster of real `reef node` processes (127.0.0.1 only). Prints a table
 * and, with --json FILE, writes the numbers; judges nothing.
 *   get      latency of one block read through the network (p50/p95/max), from an in-process
 *            member of a 16-node cluster, blocks held by other nodes only
 *   put      throughput of an in-process member storing unique random blocks and waiting until
 *            each has k acknowledged replicas (blocks/s, MB/s)
 *   repl     `reef put FILE --wait-replicated` of unique random data through a node of a 5-node
 *            cluster at k=3 (CLI start-up, chunking and the local write included)
 *   idle     CPU of the 5 nodes at rest (utime+stime from /proc/PID/stat) over a window, and the
 *            CPU of one repair pass (triggered by a node joining), giving repair CPU per hour
 *
 *   node dist/bench/dht.js [--nodes 16] [--get-mib 16] [--put-blocks 1000] [--put-kib 16]
 *     [--repl-nodes 5] [--repl-mib 64] [--idle-s 60] [--k 3] [--json FILE] [--skip get,put,repl,idle]
 * Each flag also reads REEF_BENCH_<NAME> (e.g. REEF_BENCH_REPL_MIB=16).
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { cidFromKey, makeBlock, RAW } from '../src/block/index.js'
import { ReefNode } from '../src/node.js'
import { cpuTicks, rmTree, startCluster, startNode, storeKeys, waitFor, type Cluster } from '../test/helpers/cluster.js'

const args = process.argv.slice(2)
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`)
  if (i >= 0 && i + 1 < args.length) return args[i + 1]
  return process.env[`REEF_BENCH_${name.toUpperCase().replace(/-/g, '_')}`] ?? dflt
}
const num = (name: string, dflt: number): number => {
  const v = Number(opt(name, String(dflt)))
  if (!Number.isFinite(v) || v < 0) throw new Error(`bad --${name}`)
  return v
}
const NODES = num('nodes', 16)
const K = num('k', 3)
const GET_MIB = num('get-mib', 16)
const PUT_BLOCKS = num('put-blocks', 1000)
const PUT_KIB = num('put-kib', 16)
const REPL_NODES = num('repl-nodes', 5)
const REPL_MIB = num('repl-mib', 64)
const IDLE_S = num('idle-s', 60)
const SKIP = new Set(opt('skip', '').split(',').filter(s => s !== ''))
const JSON_OUT = opt('json', '')
const CLK_TCK = 100

/** Teardown registry standing in for tap's. */
const teardowns: Array<() => void | Promise<void>> = []
const scope = { teardown: (fn: () => void | Promise<void>) => { teardowns.push(fn) } }
async function cleanup (): Promise<void> {
  for (const fn of teardowns.splice(0).reverse()) { try { await fn() } catch {} }
}
process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)) })

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]
}
const log = (s: string): void => { process.stderr.write(`bench: ${s}\n`) }

function randomFile (file: string, mib: number): void {
  const fd = fs.openSync(file, 'w')
  const buf = Buffer.allocUnsafe(1024 * 1024)
  for (let i = 0; i < mib; i++) { crypto.randomFillSync(buf); fs.writeSync(fd, buf) }
  fs.closeSync(fd)
}

interface Results { [k: string]: unknown }
const results: Results = { cores: os.cpus().length, node: process.version, k: K }

async function inProcessMember (c: Cluster, dir: string): Promise<ReefNode> {
  ReefNode.init(dir)
  const node = await ReefNode.open(dir, { network: { listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [c.nodes[0].addr], k: K } })
  scope.teardown(async () => { await node.close() })
  const want = c.nodes.length + 1
  await waitFor('the in-process member to see the cluster', () => node.dht?.members.size === want, 60_000, 100)
  await waitFor('the cluster to see the in-process member', async () =>
    (await Promise.all(c.nodes.map(async nd => (await nd.network()).members as number))).every(m => m === want), 60_000, 200)
  return node
}

async function benchGetPut (base: string): Promise<void> {
  const n = NODES - 1 // plus the in-process member
  log(`starting a ${NODES}-node cluster (${n} processes + this one), k=${K}`)
  const t0 = Date.now()
  const c = await startCluster(scope, n, { k: K })
  const me = await inProcessMember(c, path.join(base, 'me'))
  results.clusterStartS = (Date.now() - t0) / 1000

  if (!SKIP.has('get')) {
    const file = path.join(base, 'get.bin')
    randomFile(file, GET_MIB)
    const pub = c.nodes[1]
    const before = new Set(await storeKeys(pub.dataDir))
    const r = await c.reef(pub, 'put', file, '--wait-replicated', '--timeout', '300')
    if (r.code !== 0) throw new Error(`put for the get benchmark: ${r.stderr}`)
    const keys = (await storeKeys(pub.dataDir)).filter(k => !before.has(k)).map(k => Buffer.from(k, 'hex'))
    const remote = keys.filter(k => !me.local.hasSync(cidFromKey(k)))
    log(`get: ${remote.length} blocks held by other nodes`)
    const lat: number[] = []
    let bytes = 0
    for (const k of remote) {
      const s = process.hrtime.bigint()
      const d = await (me.store.get(cidFromKey(k)))
      lat.push(Number(process.hrtime.bigint() - s) / 1e6)
      bytes += d.length
    }
    const stats = me.dht?.store.stats
    results.get = { blocks: lat.length, avgKiB: bytes / lat.length / 1024, p50ms: pct(lat, 50), p95ms: pct(lat, 95), maxMs: Math.max(...lat), meanMs: lat.reduce((a, b) => a + b, 0) / lat.length, fetch: stats }
  }

  if (!SKIP.has('put')) {
    const blocks = Array.from({ length: PUT_BLOCKS }, () => makeBlock(crypto.randomBytes(PUT_KIB * 1024), RAW))
    const keys = blocks.map(b => b.cid.multihash.digest)
    const s = process.hrtime.bigint()
    await me.store.putMany(blocks)
    const res = await me.dht?.replicator.waitReplicated(keys, 600_000)
    const secs = Number(process.hrtime.bigint() - s) / 1e9
    const mb = PUT_BLOCKS * PUT_KIB * 1024 / 1e6
    results.put = { blocks: PUT_BLOCKS, blockKiB: PUT_KIB, seconds: secs, blocksPerS: PUT_BLOCKS / secs, MBps: mb / secs, replicaMBps: mb * K / secs, short: res?.blocksShort }
  }
  await cleanup()
}

async function benchReplIdle (base: string): Promise<void> {
  log(`starting a ${REPL_NODES}-node cluster, k=${K}`)
  const c = await startCluster(scope, REPL_NODES, { k: K })
  if (!SKIP.has('repl')) {
    const file = path.join(base, 'repl.bin')
    randomFile(file, REPL_MIB)
    const pub = c.nodes[0]
    const r = await c.reef(pub, 'put', file, '--wait-replicated', '--timeout', '600')
    if (r.code !== 0) throw new Error(`put --wait-replicated: ${r.stderr}`)
    const st = await pub.network()
    results.repl = { nodes: REPL_NODES, MiB: REPL_MIB, seconds: r.ms / 1000, MBps: REPL_MIB * 1.048576 / (r.ms / 1000), pushed: st.replication.pushed }
    const quiet = async (): Promise<void> => await waitFor('replication queues empty', async () => (await Promise.all(c.nodes.map(async nd => (await nd.network()).replication.pending))).every(p => p === 0), 120_000, 500)
    await quiet()
  }
  if (!SKIP.has('idle')) {
    // Let joins, lookups and first repair passes settle, then measure a window at rest.
    await new Promise(resolve => setTimeout(resolve, 5000))
    const passes0 = await Promise.all(c.nodes.map(async nd => (await nd.network()).replication.repairPasses as number))
    const cpu0 = c.nodes.map(nd => cpuTicks(nd.pid))
    const w0 = Date.now()
    await new Promise(resolve => setTimeout(resolve, IDLE_S * 1000))
    const cpu1 = c.nodes.map(nd => cpuTicks(nd.pid))
    const windowS = (Date.now() - w0) / 1000
    const passes1 = await Promise.all(c.nodes.map(async nd => (await nd.network()).replication.repairPasses as number))
    const perNodeS = cpu1.map((v, i) => (v - cpu0[i]) / CLK_TCK)
    const idleSPerHour = perNodeS.reduce((a, b) => a + b, 0) / perNodeS.length * 3600 / windowS

    // One repair pass on every node: a node joining triggers it. CPU over the pass minus the idle rate.
    const blocksHeld = await Promise.all(c.nodes.map(async nd => (await storeKeys(nd.dataDir)).length))
    const p0 = await Promise.all(c.nodes.map(async nd => (await nd.network()).replication.repairPasses as number))
    const rc0 = c.nodes.map(nd => cpuTicks(nd.pid))
    const r0 = Date.now()
    const extra = await startNode(scope, path.join(c.base, 'extra'), REPL_NODES, { k: K, bootstrap: c.nodes[0].addr })
    await waitFor('a repair pass on every node', async () => {
      const p = await Promise.all(c.nodes.map(async nd => (await nd.network()).replication as { repairPasses: number, repairing: boolean }))
      return p.every((x, i) => x.repairPasses > p0[i] && !x.repairing)
    }, 120_000, 200)
    const passS = (Date.now() - r0) / 1000
    const rc1 = c.nodes.map(nd => cpuTicks(nd.pid))
    const passCpu = rc1.map((v, i) => (v - rc0[i]) / CLK_TCK - perNodeS[i] / windowS * passS)
    const perPass = Math.max(0, passCpu.reduce((a, b) => a + b, 0) / passCpu.length)
    await extra.stop()
    const avgBlocks = blocksHeld.reduce((a, b) => a + b, 0) / blocksHeld.length
    results.idle = {
      windowS,
      cpuSecondsPerNode: perNodeS,
      repairPassesInWindow: passes1.map((p, i) => p - passes0[i]),
      idleCpuSecondsPerHour: idleSPerHour,
      idleCpuPercent: idleSPerHour / 36,
      blocksPerNode: avgBlocks,
      repairPassCpuSeconds: perPass,
      repairPassCpuSecondsPer1000Blocks: perPass / Math.max(1, avgBlocks) * 1000,
      // The default repair interval is 600 s: 6 passes an hour.
      atRestCpuSecondsPerHourDefault: idleSPerHour + 6 * perPass
    }
  }
  await cleanup()
}

async function main (): Promise<void> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-bench-dht-'))
  try {
    if (!SKIP.has('get') || !SKIP.has('put')) await benchGetPut(base)
    if (!SKIP.has('repl') || !SKIP.has('idle')) await benchReplIdle(base)
  } finally {
    await cleanup()
    rmTree(base)
  }
  const f = (x: unknown, d = 1): string => typeof x === 'number' ? x.toFixed(d) : '-'
  const g = results.get as Record<string, number> | undefined
  const p = results.put as Record<string, number> | undefined
  const r = results.repl as Record<string, number> | undefined
  const i = results.idle as Record<string, number> | undefined
  const rows: Array<[string, string, string]> = [
    ['get latency p50', `${f(g?.p50ms, 2)} ms`, `${NODES} nodes, ${g?.blocks ?? 0} blocks of ~${f(g?.avgKiB, 0)} KiB, target <= 10 ms`],
    ['get latency p95', `${f(g?.p95ms, 2)} ms`, `max ${f(g?.maxMs, 1)} ms`],
    ['put throughput', `${f(p?.blocksPerS, 0)} blocks/s`, `${p?.blocks ?? 0} x ${PUT_KIB} KiB, k=${K} acknowledged`],
    ['put throughput', `${f(p?.MBps, 1)} MB/s`, `${f(p?.replicaMBps, 1)} MB/s of replicas written`],
    ['replication', `${f(r?.MBps, 1)} MB/s`, `put --wait-replicated of ${REPL_MIB} MiB on ${REPL_NODES} nodes in ${f(r?.seconds, 2)} s, target >= 30 MB/s`],
    ['idle CPU at rest', `${f(i?.idleCpuSecondsPerHour, 1)} s/h`, `${f(i?.idleCpuPercent, 2)} % of a core, ${f(i?.windowS, 0)} s window, per node`],
    ['repair pass CPU', `${f(i?.repairPassCpuSeconds, 2)} s`, `${f(i?.blocksPerNode, 0)} blocks per node`],
    ['repair CPU at rest', `${f(i?.atRestCpuSecondsPerHourDefault, 1)} s/h`, 'idle + 6 passes/h (default interval 600 s)']
  ]
  console.log(`reef DHT on 127.0.0.1: ${os.cpus().length} cores, node ${process.version}, k=${K}`)
  console.log('measure              value            notes')
  for (const [a, b, c] of rows) console.log(`${a.padEnd(20)} ${b.padEnd(16)} ${c}`)
  if (JSON_OUT !== '') fs.writeFileSync(JSON_OUT, JSON.stringify(results, null, 2) + '\n')
}

await main()
