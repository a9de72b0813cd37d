/**
 * reef view benchmark, propagation part (issue 12 item 8): how long a change made on one
 * writer's mount takes to show on another writer's mount. Two `reef mount --view` processes on
 * loopback (A owns the view, B is its second writer), default options. Each sample writes a new
 * file on A and fsyncs it, then polls B's mount (every 5 ms, bounded) until the file is there
 * with its bytes. Samples are spaced by a random 0-300 ms so that they do not ride one phase of
 * the fold and poll timers. Reports p50, p95 and max, and JSON; judges nothing.
 *
 *   node dist/bench/views/propagation.js [--samples 40] [--json FILE] [-- extra reef mount options]
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { cleanupAll, forceUnmount, isFuseMounted, onCleanup, reefJson, runMain, sleep, startReef, trackMount, waitFor, type Daemon } from '../phases/proc.js'
import { commandLine, machine, printMachine, table } from '../phases/report.js'

const args = process.argv.slice(2)
const dash = args.indexOf('--')
const extra = dash >= 0 ? args.slice(dash + 1) : []
const own = dash >= 0 ? args.slice(0, dash) : args
const opt = (name: string, dflt: string): string => {
  const i = own.indexOf(name)
  return i >= 0 && i + 1 < own.length ? own[i + 1] : dflt
}
const SAMPLES = Number(opt('--samples', '40'))
const jsonOut = opt('--json', '')
if (!(Number.isInteger(SAMPLES) && SAMPLES > 0 && SAMPLES <= 10_000)) throw new Error(`bad --samples ${SAMPLES}`)
const LOOPBACK = '/ip4/127.0.0.1/tcp/0'
const out = (s: string): void => { process.stdout.write(s + '\n') }
const log = (s: string): void => { process.stderr.write(`bench views: ${s}\n`) }

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p / 100 * s.length) - 1))]
}

async function mount (name: string, dataDir: string, mnt: string, logDir: string, more: string[]): Promise<Daemon> {
  const d = startReef(name, dataDir, ['mount', mnt, ...more, ...extra], logDir)
  trackMount(mnt)
  onCleanup(async () => { await d.stop(); forceUnmount(mnt) })
  await waitFor(`"reef: mounted" on ${mnt}`, () => {
    if (d.exited()) throw new Error(`reef mount exited before mounting:\n${d.stderr().slice(-2000)}`)
    return /^reef: mounted /m.test(d.stderr()) && isFuseMounted(mnt)
  }, 60_000)
  return d
}

async function main (): Promise<void> {
  printMachine(machine(os.tmpdir()), commandLine(), out)
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-bench-views-'))
  onCleanup(async () => { fs.rmSync(base, { recursive: true, force: true }) })
  const [a, b] = ['a', 'b'].map(n => path.join(base, n))
  const logs = path.join(base, 'logs')
  for (const d of [a, b]) await reefJson(d, ['init'], 60_000)
  const view = (await reefJson<{ view: string }>(a, ['view', 'create', 'bench'], 60_000)).view
  await reefJson(a, ['view', 'add', view, (await reefJson<{ key: string }>(b, ['id'], 60_000)).key], 60_000)
  const mntA = path.join(base, 'mnt-a')
  const mntB = path.join(base, 'mnt-b')
  await mount('a', a, mntA, logs, ['--view', view, '--listen', LOOPBACK])
  const st = await reefJson<{ network?: { addrs?: string[] } }>(a, ['status'], 30_000)
  await waitFor('A to publish the view', async () => ((await reefJson<{ view?: { rounds?: number } }>(a, ['status'], 30_000)).view?.rounds ?? 0) >= 1, 60_000, 100)
  const dB = await mount('b', b, mntB, logs, ['--view', view, '--listen', LOOPBACK, '--bootstrap', st.network?.addrs?.[0] ?? ''])
  // B has merged A's start (a first version) before the samples begin.
  fs.writeFileSync(path.join(mntA, 'hello'), 'hello\n')
  await waitFor('B to see A\'s first file', () => fs.existsSync(path.join(mntB, 'hello')), 60_000, 20)

  const ms: number[] = []
  let missed = 0
  for (let i = 0; i < SAMPLES; i++) {
    await sleep(Math.floor(Math.random() * 300))
    const name = `p-${i}`
    const bytes = crypto.randomBytes(4096)
    const fd = fs.openSync(path.join(mntA, name), 'w')
    fs.writeSync(fd, bytes)
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    const t0 = process.hrtime.bigint()
    const there = path.join(mntB, name)
    try {
      await waitFor(`${name} on B`, () => fs.existsSync(there) && fs.readFileSync(there).equals(bytes), 30_000, 5)
      ms.push(Number(process.hrtime.bigint() - t0) / 1e6)
    } catch {
      missed++
    }
  }
  const sb = await reefJson<{ view?: { merges?: number, lastMergeMs?: number } }>(b, ['status'], 30_000)
  const res = {
    samples: SAMPLES,
    missed,
    p50Ms: pct(ms, 50),
    p95Ms: pct(ms, 95),
    maxMs: Math.max(...ms),
    mergesOnB: sb.view?.merges,
    lastMergeMsOnB: sb.view?.lastMergeMs,
    mountOptions: extra,
    daemonRssMiB: rss(dB.proc.pid)
  }
  out('')
  out(table(['write + fsync on A, visible on B', 'ms'], [
    ['p50', res.p50Ms.toFixed(0)],
    ['p95', res.p95Ms.toFixed(0)],
    ['max', res.maxMs.toFixed(0)],
    ['samples (missed after 30 s)', `${SAMPLES} (${missed})`],
    ['merges on B', String(res.mergesOnB)]
  ]))
  out('defaults: a view mount folds at every fsync (else once writes pause for 2 s), publishes the fold as its head, and a peer holding that head merges at once (else within 0.5 s, or 5 s for a head it must look up) (README: "Shared file systems")')
  if (jsonOut !== '') {
    fs.mkdirSync(path.dirname(path.resolve(jsonOut)), { recursive: true })
    fs.writeFileSync(jsonOut, JSON.stringify({ command: commandLine(), machine: machine(os.tmpdir()), propagation: res }, null, 2) + '\n')
    log(`wrote ${jsonOut}`)
  }
  await cleanupAll()
}

function rss (pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? undefined : Math.round(Number(m[1]) / 1024)
  } catch {
    return undefined
  }
}

runMain(main, log)
