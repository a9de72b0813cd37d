// The scale simulator (bench/scale/sim.ts) on a small seeded network, and the shared repair
// decision (src/dht/repair-plan.ts). No timed assertions: every figure is simulated, and a seed
// gives the same run every time.
//
// The day of churn runs in a child process: tap's async-hook domains watch every promise, and
// the simulator makes millions (one per request), which made it 4x slower in-process.
import t from 'tap'
import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { RoutingTable, keyInBucket } from '../src/dht/kademlia.js'
import { planRepair } from '../src/dht/repair-plan.js'
import { EventQueue, SimTable, prng, runHops, type AvailabilityResult } from '../bench/scale/sim.js'
import { availability, downWithin, HOUR, ipfsChurn, IPFS_SESSION, weibullSurvival } from '../bench/scale/churn.js'

const key = (n: number): Uint8Array => Uint8Array.of(n)
const peer = (k: string, self = false): { key: string, self: boolean } => ({ key: k, self })

t.test('planRepair: who other than self should hold which keys, grouped by peer in first-seen order', async t => {
  const [a, b, c, me] = [peer('a'), peer('b'), peer('c'), peer('me', true)]
  const keys = [key(1), key(2), key(3)]
  const plan = planRepair(keys, [[me, a, b], [b, c, me], [a, c]])
  t.same(plan.map(p => p.peer.key), ['a', 'b', 'c'], 'peers in the order first met; self never a target')
  t.same(plan.map(p => p.keys.map(k => k[0])), [[1, 3], [1, 2], [2, 3]], 'each peer\'s keys in key order')
  t.equal(plan[0].peer, a, 'the placement\'s own peer object is returned')

  const skipped = planRepair(keys, [[a], [b], [a]], k => k[0] === 1)
  t.same(skipped.map(p => [p.peer.key, p.keys.map(k => k[0])]), [['b', [2]], ['a', [3]]], 'skip leaves a key out (and b is now met first)')

  t.same(planRepair(keys, [[a, a], [], [me]]).map(p => [p.peer.key, p.keys.length]), [['a', 1]], 'a peer named twice for one key counts once; self alone plans nothing')
  t.same(planRepair([], []), [], 'no keys, no targets')
  t.throws(() => planRepair(keys, [[a]]), /3 keys but 1 placements/)
})

t.test('SimTable answers closest() exactly as RoutingTable does', async t => {
  const rand = prng(7)
  const bytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => Math.floor(rand() * 256))
  const self = { key: 'self', kad: bytes(32) }
  const fast = new SimTable(self, 20)
  const plain = new RoutingTable(self, 20)
  const contacts = Array.from({ length: 3000 }, (_v, i) => ({ key: `c${i}`, kad: i % 3 === 0 ? keyInBucket(self.kad, i % 14, bytes) : bytes(32) }))
  let agree = 0
  for (const c of contacts) if (fast.add(c) === plain.add(c)) agree++
  const gone = contacts.filter((_c, i) => i % 7 === 0)
  for (const c of gone) if (fast.remove(c.key) === plain.remove(c.key)) agree++
  t.equal(agree, contacts.length + gone.length, 'add and remove answer alike')
  t.equal(fast.size, plain.size)
  let same = 0
  for (let i = 0; i < 500; i++) {
    const target = i % 5 === 0 ? keyInBucket(self.kad, i % 12, bytes) : bytes(32)
    const n = [1, 3, 20, 21, 400][i % 5]
    if (fast.closest(target, n).map(c => c.key).join() === plain.closest(target, n).map(c => c.key).join()) same++
  }
  t.equal(same, 500, 'the same contacts in the same order for every target')
})

t.test('event queue: time order, then insertion order', async t => {
  const q = new EventQueue()
  const seen: string[] = []
  for (const [at, name] of [[5, 'e'], [1, 'a'], [3, 'c1'], [3, 'c2'], [2, 'b'], [3, 'c3'], [9, 'z']] as const) q.push(at, () => seen.push(name))
  for (let e = q.pop(); e !== undefined; e = q.pop()) e.fn()
  t.same(seen, ['a', 'b', 'c1', 'c2', 'c3', 'e', 'z'])
})

t.test('churn model: the session fit passes through its published quantiles', async t => {
  t.ok(Math.abs(1 - weibullSurvival(IPFS_SESSION, 2 * HOUR) - 0.5) < 1e-9, 'F(2 h) = 0.5')
  t.ok(Math.abs(1 - weibullSurvival(IPFS_SESSION, 8 * HOUR) - 0.8) < 1e-9, 'F(8 h) = 0.8')
  const m = ipfsChurn()
  t.ok(availability(m) > 0.55 && availability(m) < 0.62, `mean availability ${availability(m).toFixed(3)}`)
  const p = downWithin(m, HOUR)
  t.ok(p > 0.05 && p < 0.2, `P(an up node goes down within an hour) ${p.toFixed(3)}`)
})

t.test('hops on a 2,000-node network: p50 <= 4, every lookup finds the true 3 closest, runs repeat', async t => {
  const r = await runHops({ n: 2000, lookups: 200, seed: 11 })
  t.ok(r.hopsP50 <= 4, `hops p50 ${r.hopsP50}, p95 ${r.hopsP95}, max ${r.hopsMax} (estimate ${r.estimate.toFixed(2)})`)
  t.equal(r.getSuccess, 1, 'every lookup returned the true 3 closest')
  t.ok(r.exactWalk >= 0.99, `true 20 closest, in order: ${(r.exactWalk * 100).toFixed(1)}%`)
  t.ok(r.queriesMean < 60, `${r.queriesMean.toFixed(1)} queries a lookup`)
  const walk10 = await runHops({ n: 2000, lookups: 200, seed: 12, walkSize: 10 })
  t.equal(walk10.getSuccess, 1, `walks to the 10 closest (src/dht/router.ts) find the true 3 closest too (hops p50 ${walk10.hopsP50}, ${walk10.queriesMean.toFixed(1)} queries)`)
  const again = await runHops({ n: 2000, lookups: 200, seed: 11 })
  t.same([again.hopsMean, again.queriesMean, again.latencyP50Ms], [r.hopsMean, r.queriesMean, r.latencyP50Ms], 'the same seed gives the same run')
})

/** The TypeScript loader this test runs under (if any), for a child that imports the same sources. */
function loaderArgs (): string[] {
  const out: string[] = []
  const a = process.execArgv
  for (let i = 0; i < a.length; i++) {
    const isTs = (s: string | undefined): boolean => s !== undefined && /@tapjs[\\/]typescript|tsimp|ts-node/.test(s)
    if (/^--(import|loader|experimental-loader|require)$/.test(a[i]) && isTs(a[i + 1])) out.push(a[i], a[++i])
    else if (a[i].startsWith('--') && isTs(a[i])) out.push(a[i])
  }
  return out
}

/** Runs `runAvailability(opts)` in a child process (no tap hooks), resolving to its result. */
async function availabilityInChild (opts: Record<string, number>): Promise<AvailabilityResult> {
  const sim = new URL('../bench/scale/sim.js', import.meta.url).href
  const code = `const { runAvailability } = await import(${JSON.stringify(sim)}); ` +
    `const r = await runAvailability(${JSON.stringify(opts)}); process.stdout.write(JSON.stringify(r))`
  const child = spawn(process.execPath, [...loaderArgs(), '--input-type=module', '-e', code], {
    cwd: path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..'),
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code2 = await new Promise<number | null>(resolve => child.on('close', resolve))
  if (code2 !== 0) throw new Error(`simulator child exited ${String(code2)}: ${stderr.slice(-2000)}`)
  return JSON.parse(stdout) as AvailabilityResult
}

t.test('one simulated day of churn at k = 3 with repair: availability at least the bound, nothing lost', async t => {
  const r = await availabilityInChild({ n: 2000, blocks: 200, k: 3, days: 1, seed: 5 })
  const bound = 1 - r.analytic.unreadableWithRepair
  t.ok(r.readableMean >= bound, `readable ${(r.readableMean * 100).toFixed(4)}% (mean over the day) >= 1 - p^k = ${(bound * 100).toFixed(4)}%`)
  t.ok(r.readableMean > 1 - r.analytic.unreadableNoRepair, 'and above what k fixed replicas would give without repair')
  t.ok(r.readableMin >= 0.99, `lowest readable fraction ${(r.readableMin * 100).toFixed(2)}%`)
  t.equal(r.lost, 0, `no block lost (expected ${r.analytic.expectedLost.toExponential(1)})`)
  t.ok(r.repair.pushedBlocks > 0 && r.repair.passes > 0, `repair ran: ${r.repair.passes} passes pushed ${r.repair.pushedBlocks} blocks`)
  t.ok(r.churnEvents.downs > 100 && r.churnEvents.ups > 100, `churn happened: ${r.churnEvents.downs} downs, ${r.churnEvents.ups} ups, ${r.churnEvents.departures} departures`)
  t.ok(r.put.lookups < 200 / 2, `the put placed 200 blocks with ${r.put.lookups} lookups (regions)`)
})
