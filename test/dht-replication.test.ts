// Replication, failure and repair on a 10-node cluster of real `reef node` processes on
// 127.0.0.1 (k = 3). A tree of several MiB is put through one node with --wait-replicated; it
// then sits on exactly each block's k closest nodes and nowhere else (no other node has read
// it). The publisher and the replica holding the most blocks are killed at once: the tree is
// read back through a node that never read it (so every byte comes from a surviving original
// replica), and repair (triggered by the peers leaving: the periodic pass is an hour away
// here) puts every block back on its k closest live nodes. The survivors republish heads when
// peers leave, and a node joining afterwards gets the dead publisher's head. Last, reads never
// hang: a block whose every holder is dead fails with NOT_FOUND in bounded time.
import tap from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { cidFor, cidFromKey } from '../src/block/index.js'
import { keyPairFromSeed } from '../src/crypto/sign.js'
import { headKey } from '../src/dht/heads.js'
import { encodeHead, signHead } from '../src/naming/index.js'
import { compareTrees, countTree } from './helpers/cli.js'
import { describe, misplaced, holdings, rankFor, startClient, startCluster, startNode, storeKeys, waitFor, type NodeHandle } from './helpers/cluster.js'

const K = 3
const MiB = 1024 * 1024

function makeTree (root: string): void {
  fs.mkdirSync(path.join(root, 'sub', 'deeper'), { recursive: true })
  fs.writeFileSync(path.join(root, 'big.bin'), crypto.randomBytes(4 * MiB))
  fs.writeFileSync(path.join(root, 'sub', 'mid.bin'), crypto.randomBytes(1536 * 1024))
  for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(root, 'sub', 'deeper', `small-${i}.txt`), crypto.randomBytes(100 + i * 997).toString('base64'))
  fs.symlinkSync('../big.bin', path.join(root, 'sub', 'link'))
}

tap.test('10 nodes, k=3: put --wait-replicated, read anywhere, survive two kills, repair to k replicas', async t => {
  const c = await startCluster(t, 10, { k: K, repairInterval: 3600 })
  const [, A, , C] = c.nodes
  const work = path.join(c.base, 'work')
  const src = path.join(work, 'tree')
  makeTree(src)

  const before = await storeKeys(A.dataDir)
  const put = await c.reef(A, 'put', src, '--wait-replicated', '--timeout', '60', '--json')
  t.equal(put.code, 0, `put --wait-replicated exits 0: ${describe(put)}`)
  const res = JSON.parse(put.stdout)
  t.equal(res.replication?.blocksShort, 0, 'no block short of k replicas')
  const guid = res.guid as string
  const keys = (await storeKeys(A.dataDir)).filter(k => !before.includes(k))
  t.ok(keys.length >= 60, `the put made many blocks (${keys.length})`)
  t.equal(res.replication?.blocks, keys.length, 'put waited for every block it wrote')

  // A signed head of the publisher's file system, pushed to every node (a `reef node` does not
  // fold versions of its own): it must outlive its owner below.
  const client = await startClient(t)
  await Promise.all(c.nodes.map(async nd => await client.dial(multiaddr(nd.addr), { signal: AbortSignal.timeout(10_000) })))
  await waitFor('every node in the client\'s routing table', () => client.services.dht.routingTable.size === c.nodes.length, 20_000, 50)
  const cfg = JSON.parse(fs.readFileSync(path.join(A.dataDir, 'config.json'), 'utf8')) as { name: string, aguid: string }
  const head = signHead(keyPairFromSeed(new Uint8Array(fs.readFileSync(path.join(A.dataDir, 'identity.key')))), cfg.name, cidFor(crypto.randomBytes(32)), 5n)
  const headOf = async (nd: NodeHandle): Promise<string | undefined> => (await nd.control('head', { aguid: cfg.aguid }) as { seq: string } | null)?.seq
  for await (const _ of client.services.dht.put(headKey(CID.parse(cfg.aguid)), encodeHead(head), { signal: AbortSignal.timeout(20_000) })) { /* to every node */ }
  let seqs: Array<string | undefined> = []
  await waitFor('the head on every node', async () => (seqs = await Promise.all(c.nodes.map(headOf))).every(s => s === '5'), 20_000, 100)
    .catch(err => { throw new Error(`${(err as Error).message}: ${JSON.stringify(seqs)}`) })

  // Placement: right after --wait-replicated, and before any other node read anything, every
  // block is on exactly its k closest nodes (and the publisher), and on no other node.
  const h = await holdings(c.nodes, keys)
  const placement: string[] = []
  keys.forEach((key, j) => {
    const want = new Set<NodeHandle>([...rankFor(key, c.nodes).slice(0, K), A])
    const have = c.nodes.filter(nd => (h.get(nd) as boolean[])[j])
    if (have.length !== want.size || !have.every(nd => want.has(nd))) placement.push(`${key.slice(0, 12)} on ${have.map(nd => nd.i).join(',')}, expected ${[...want].map(nd => nd.i).join(',')}`)
  })
  t.same(placement, [], 'every block is on exactly its k closest nodes (and its publisher)')

  // Kill the publisher and the replica (not a reader) holding the most blocks, at once.
  const candidates = c.nodes.filter(nd => nd !== A && nd !== C)
  const count = (nd: NodeHandle): number => (h.get(nd) as boolean[]).filter(Boolean).length
  const R = candidates.sort((x, y) => count(y) - count(x))[0]
  const both = keys.filter((_k, j) => (h.get(R) as boolean[])[j])
  t.ok(both.length >= keys.length / 5, `replica node ${R.i} holds ${both.length}/${keys.length} blocks`)
  const leavesBefore = new Map(await Promise.all(c.nodes.filter(nd => nd !== A && nd !== R).map(async nd => [nd, (await nd.network()).republish] as const)))
  await Promise.all([A.kill9(), R.kill9()])
  t.notOk(A.alive() || R.alive(), 'both killed')
  // Only original replicas hold blocks now (placement above was exact), and each block kept one.
  const orphans = keys.filter((_k, j) => !c.live().some(nd => (h.get(nd) as boolean[])[j]))
  t.same(orphans, [], 'every block has a surviving original replica')
  await c.waitMembers(30_000)

  // Every block is still readable, through a node that never read it before: what it lacked
  // came from the surviving original replicas (or from repair copies made from them).
  const lackedByC = (h.get(C) as boolean[]).filter(held => !held).length
  const out2 = path.join(work, 'out-c')
  const g2 = await c.reef(C, 'get', guid, '-o', out2)
  t.equal(g2.code, 0, `get through C after the kills: ${describe(g2)}`)
  t.same(compareTrees(src, out2), [], 'byte-identical through C after two kills')
  t.ok(countTree(out2).files >= 22)
  const cStats = (await C.network()).fetch
  t.equal(cStats.misses, 0, 'C missed no block')
  t.equal(cStats.corruptReplicas, 0)
  // (Repair, already under way, may have brought C some of what it lacked at the kill.)
  t.ok(cStats.remote > 0 && cStats.remote <= lackedByC, `C fetched ${cStats.remote} of the ${lackedByC} blocks it did not hold at the kill (${JSON.stringify(cStats)})`)

  // The survivors republished heads when the two left: once each for the pair (debounced).
  const survivors = [...leavesBefore.keys()]
  let leaves: number[] = []
  await waitFor('every survivor republished its heads on the leave', async () => {
    leaves = await Promise.all(survivors.map(async nd => (await nd.network()).republish.leave - (leavesBefore.get(nd)?.leave as number)))
    return leaves.every(n => n >= 1)
  }, 15_000, 200).catch(err => { t.fail(`${(err as Error).message}: ${leaves.join(',')}`) })
  t.ok(leaves.every(n => n <= 2), `at most two passes for two leaves at once (${leaves.join(',')})`)

  // Repair: each block back on its k closest live nodes. The periodic pass is an hour away,
  // so this is the repair the leaving peers triggered.
  const live = c.live()
  let left: string[] = []
  const t0 = Date.now()
  await waitFor('every block on its k closest live nodes', async () => {
    left = await misplaced(live, keys, K)
    return left.length === 0
  }, 60_000, 500).catch(err => { t.fail(`${(err as Error).message}: ${left.length} blocks misplaced, e.g. ${left.slice(0, 5).join('; ')}`) })
  t.same(left, [], `repaired in ${Date.now() - t0} ms`)
  const hs = await holdings(live, keys)
  keys.forEach((key, j) => {
    const n = live.filter(nd => (hs.get(nd) as boolean[])[j]).length
    if (n < K) t.fail(`block ${key} has ${n} live replicas`)
  })
  const stats = await Promise.all(live.map(async nd => (await nd.network()).replication))
  t.ok(stats.reduce((s, r) => s + r.repaired, 0) > 0, 'some node reports repaired blocks')
  t.ok(stats.every(r => r.repairPasses < 100), 'no runaway repair passes')

  // A node joining now gets the dead publisher's head from the survivors' republish.
  const J = await startNode(t, path.join(c.base, 'n-late'), c.nodes.length, { k: K, repairInterval: 3600, bootstrap: C.addr })
  c.nodes.push(J)
  const j0 = Date.now()
  await waitFor('the dead publisher\'s head on the new node', async () => await headOf(J) === '5', 20_000, 100)
    .catch(err => { t.fail((err as Error).message) })
  t.pass(`the new node holds head seq 5 of node ${A.i} after ${Date.now() - j0} ms`)
  await c.waitMembers(30_000)

  /**
   * A block of `size` random bytes put through a live node other than C (the reader of the
   * tree), once it sits on its k closest live nodes; `holds` tells who has it then.
   */
  const placedBlock = async (t: { equal: (a: unknown, b: unknown, msg: string) => unknown }, size: number) => {
    const bytes = crypto.randomBytes(size)
    const key = crypto.createHash('sha256').update(bytes).digest('hex')
    const writer = c.live().find(nd => nd !== C) as NodeHandle
    const bp = await c.reefIn(writer, bytes, 'block', 'put')
    t.equal(bp.code, 0, describe(bp))
    await waitFor('the block on its k closest nodes', async () => (await misplaced(c.live(), [key], K)).length === 0, 30_000, 200)
    const hs = await holdings(c.live(), [key])
    return { bytes, key, bguid: bp.stdout.trim(), writer, holds: (nd: NodeHandle): boolean => (hs.get(nd) as boolean[])[0] }
  }

  t.test('a frozen replica (SIGSTOP) costs one request deadline, not a hang', async t => {
    const { bytes, key, bguid, holds } = await placedBlock(t, 7000)
    const reader = c.live().find(nd => !holds(nd)) as NodeHandle
    const first = rankFor(key, c.live().filter(nd => nd !== reader)).find(holds) as NodeHandle
    process.kill(first.pid, 'SIGSTOP')
    try {
      const before = (await reader.network()).fetch.failedPeers
      const g = await c.reef(reader, 'block', 'get', bguid)
      t.equal(g.code, 0, `read with the first replica frozen: ${describe(g)}`)
      t.ok(g.out.equals(bytes), 'the right bytes')
      t.ok(g.ms < 20_000, `returned in ${g.ms} ms`)
      t.ok((await reader.network()).fetch.failedPeers > before, 'the frozen replica counted as a failed peer')
    } finally {
      process.kill(first.pid, 'SIGCONT')
    }
  })

  t.test('reads never hang: a block whose every holder is dead fails with NOT_FOUND in bounded time', async t => {
    await c.waitMembers(30_000)
    const { bguid, writer, holds } = await placedBlock(t, 5000)
    const holders = c.live().filter(holds)
    t.ok(holders.length >= K && holders.includes(writer), `held by ${holders.length} nodes`)
    await Promise.all(holders.map(async nd => await nd.kill9()))
    const survivors = c.live()
    t.ok(survivors.length >= 2, `${survivors.length} nodes survive`)
    const reader = survivors[survivors.length - 1]
    const g = await c.reef(reader, 'block', 'get', bguid)
    t.not(g.code, 0, 'block get fails')
    t.match(g.stderr, /\[NOT_FOUND\]/, `a clear NOT_FOUND: ${describe(g)}`)
    t.ok(g.ms < 30_000, `returned in ${g.ms} ms`)
    const out = path.join(work, 'gone')
    const g2 = await c.reef(survivors[0], 'get', bguid, '-o', out)
    t.not(g2.code, 0, 'get fails')
    t.match(g2.stderr, /\[NOT_FOUND\]/, describe(g2))
    t.ok(g2.ms < 30_000, `returned in ${g2.ms} ms`)
    t.notOk(fs.existsSync(out), 'no partial output left')
    // The survivors keep serving what they hold: a block of the tree that the reader lacks and
    // another survivor holds (which blocks of the tree survive depends on placement, so the whole
    // tree is not asked for: all k replicas of some block may have been among the killed).
    const hk = await holdings(survivors, keys)
    const has = (nd: NodeHandle, j: number): boolean => (hk.get(nd) as boolean[])[j]
    let served: { rd: NodeHandle, key: string } | undefined
    for (const rd of survivors) {
      const j = keys.findIndex((_k, jj) => !has(rd, jj) && survivors.some(nd => nd !== rd && has(nd, jj)))
      if (j >= 0) { served = { rd, key: keys[j] }; break }
    }
    if (served === undefined) {
      t.pass('every survivor holds every surviving block of the tree itself')
    } else {
      const g3 = await c.reef(served.rd, 'block', 'get', cidFromKey(Buffer.from(served.key, 'hex')).toString())
      t.equal(g3.code, 0, `node ${served.rd.i} reads a block another survivor holds: exit ${String(g3.code)}, stderr ${g3.stderr}`)
      t.equal(crypto.createHash('sha256').update(g3.out).digest('hex'), served.key, 'the right bytes')
    }
  })
})
