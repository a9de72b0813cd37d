// Small clusters of real `reef node` processes on 127.0.0.1:
//   2 nodes at k=3  put --wait-replicated cannot reach k replicas: it fails with NOT_REPLICATED
//                   and exact counts; a bad --timeout is a usage error; a node's peer id is the
//                   one its ed25519 identity key gives, before and after a restart
//   4 nodes at k=2  each block lives on exactly its 2 closest nodes (and its publisher)
//   3 nodes at k=2  with repair passes every 0.3 s, a put is pushed once per replica: repair
//                   never pushes blocks the replication queue holds
import tap from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { publicKeyFromRaw } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { CID } from 'multiformats/cid'
import { keyPairFromSeed } from '../src/crypto/sign.js'
import { aguidFor } from '../src/naming/index.js'
import { describe, holdings, rankFor, startCluster, startNode, storeKeys, waitFor, type NodeHandle } from './helpers/cluster.js'

function makeTree (root: string, files: number): void {
  fs.mkdirSync(path.join(root, 'sub'), { recursive: true })
  fs.writeFileSync(path.join(root, 'big.bin'), crypto.randomBytes(600 * 1024))
  for (let i = 0; i < files; i++) fs.writeFileSync(path.join(root, 'sub', `f${i}.txt`), crypto.randomBytes(200 + i * 300).toString('hex'))
}

/** The libp2p peer id of a data directory, computed from its identity key alone. */
function expectedPeerId (dataDir: string): { peerId: string, publicKey: Uint8Array } {
  const seed = new Uint8Array(fs.readFileSync(path.join(dataDir, 'identity.key')))
  const { publicKey } = keyPairFromSeed(seed)
  return { peerId: peerIdFromPublicKey(publicKeyFromRaw(publicKey)).toString(), publicKey }
}

tap.test('2 nodes at k=3', async t => {
  const K = 3
  const c = await startCluster(t, 2, { k: K, repairInterval: 3600 })
  const [P, Q] = c.nodes
  const src = path.join(c.base, 'tree')
  makeTree(src, 12)

  t.test('put --wait-replicated fails with NOT_REPLICATED and says how many replicas are missing', async t => {
    const before = new Set(await storeKeys(P.dataDir))
    const put = await c.reef(P, 'put', src, '--wait-replicated', '--timeout', '30', '--json')
    const keys = (await storeKeys(P.dataDir)).filter(k => !before.has(k))
    t.ok(keys.length >= 15, `the put made ${keys.length} blocks`)
    t.equal(put.code, 1, `exit 1: ${describe(put)}`)
    t.match(put.stderr, /\[NOT_REPLICATED\]\n$/, 'the error names NOT_REPLICATED')
    // Each block can have 2 of its 3 replicas in a network of 2: one missing per block.
    const n = keys.length
    t.match(put.stderr, new RegExp(`: ${n} of ${n} blocks lack replicas \\(${n} replicas missing for k=3\\)`), 'the message has the counts')
    const res = JSON.parse(put.stdout)
    t.same(res.replication, { k: K, blocks: n, blocksShort: n, missingReplicas: n }, 'and so has --json')
    t.ok(put.ms < 30_000, `it did not wait for its timeout once both nodes held every block (${put.ms} ms)`)
    t.same(await Q.localHas(keys), keys.map(() => true), 'the other node holds every block')
  })

  t.test('a bad --timeout is a usage error (exit 2), before anything is stored', async t => {
    const before = await storeKeys(P.dataDir)
    // NaN made the wait unbounded; 0 and Infinity are no deadline either.
    for (const bad of ['NaN', '0', 'Infinity']) {
      const r = await c.reef(P, 'put', src, '--wait-replicated', '--timeout', bad)
      t.equal(r.code, 2, `--timeout ${JSON.stringify(bad)}: exit 2 (${describe(r)})`)
      t.match(r.stderr, /--timeout.*\[BAD_INPUT\]\n$/, 'one line naming the option')
    }
    t.same(await storeKeys(P.dataDir), before, 'nothing stored')
  })

  t.test('the peer id is the ed25519 identity key\'s, and survives a restart', async t => {
    for (const nd of [P, Q]) {
      const { peerId, publicKey } = expectedPeerId(nd.dataDir)
      t.equal(nd.peerId, peerId, `node ${nd.i} printed /p2p/${nd.peerId}, the id of its identity key`)
      const cfg = JSON.parse(fs.readFileSync(path.join(nd.dataDir, 'config.json'), 'utf8')) as { name: string, aguid: string }
      t.ok(aguidFor(publicKey, cfg.name).equals(CID.parse(cfg.aguid)), 'the same key owns the node\'s AGUID')
      t.equal((await nd.network()).peerId, peerId, 'and reports it in its status')
    }
    const keyBefore = fs.readFileSync(path.join(Q.dataDir, 'identity.key'))
    const st = await Q.stop()
    t.equal(st.code, 0, 'node stopped cleanly')
    const Q2 = await startNode(t, Q.dataDir, Q.i, { k: K, bootstrap: P.addr, logDir: c.base })
    t.equal(Q2.peerId, Q.peerId, `same peer id after a restart (${Q2.peerId})`)
    t.ok(fs.readFileSync(path.join(Q.dataDir, 'identity.key')).equals(keyBefore), 'identity key unchanged')
    t.not(Q2.addr, Q.addr, 'on a new port (tcp/0), so the id did not come from the address')
    await Q2.stop()
  })
})

tap.test('4 nodes at k=2: every block on exactly its 2 closest nodes', async t => {
  const K = 2
  const c = await startCluster(t, 4, { k: K, repairInterval: 3600 })
  const P = c.nodes[1]
  const src = path.join(c.base, 'tree')
  makeTree(src, 12)
  const before = new Set(await storeKeys(P.dataDir))
  const put = await c.reef(P, 'put', src, '--wait-replicated', '--timeout', '60', '--json')
  t.equal(put.code, 0, `put --wait-replicated: ${describe(put)}`)
  const keys = (await storeKeys(P.dataDir)).filter(k => !before.has(k))
  t.same(JSON.parse(put.stdout).replication, { k: K, blocks: keys.length, blocksShort: 0, missingReplicas: 0 }, `${keys.length} blocks, none short`)
  const h = await holdings(c.nodes, keys)
  const wrong: string[] = []
  let notPublisher = 0
  keys.forEach((key, j) => {
    const want = new Set<NodeHandle>(rankFor(key, c.nodes).slice(0, K))
    if (!want.has(P)) notPublisher++
    want.add(P) // the publisher keeps what it stored
    const have = c.nodes.filter(nd => (h.get(nd) as boolean[])[j])
    if (have.length !== want.size || !have.every(nd => want.has(nd))) {
      wrong.push(`${key.slice(0, 12)} on ${have.map(nd => nd.i).join(',')}, expected ${[...want].map(nd => nd.i).join(',')}`)
    }
  })
  t.same(wrong, [], 'each block is on its 2 closest nodes and the publisher, and on no other node')
  t.ok(notPublisher > 0 && notPublisher < keys.length, `${notPublisher} of ${keys.length} blocks have two replicas besides the publisher`)
})

tap.test('3 nodes at k=2, repair passes every 0.3 s: a put is pushed once per replica, never again by repair', async t => {
  const K = 2
  const c = await startCluster(t, 3, { k: K, repairInterval: 0.3 })
  const P = c.nodes[0]
  type Repl = { pushed: number, repaired: number, repairPasses: number }
  const repl = async (): Promise<Repl> => (await P.network()).replication as Repl
  // The passes that joins started are over: from here on, a pass finds nothing to do until the put.
  let r0 = await repl()
  await waitFor('two quiet repair passes on the publisher', async () => {
    const r = await repl()
    const quiet = r.repaired === r0.repaired && r.repairPasses >= r0.repairPasses + 2
    if (!quiet && r.repaired !== r0.repaired) r0 = r
    return quiet
  }, 60_000, 100)
  const file = path.join(c.base, 'big.bin')
  fs.writeFileSync(file, crypto.randomBytes(24 * 1024 * 1024))
  const before = new Set(await storeKeys(P.dataDir))
  const put = await c.reef(P, 'put', file, '--wait-replicated', '--timeout', '60')
  t.equal(put.code, 0, `put --wait-replicated: ${describe(put)}`)
  const keys = (await storeKeys(P.dataDir)).filter(k => !before.has(k))
  const r1 = await repl()
  t.ok(r1.repairPasses > r0.repairPasses, `repair passes ran meanwhile (${r1.repairPasses - r0.repairPasses})`)
  const expected = keys.reduce((n, key) => n + rankFor(key, c.nodes).slice(0, K).filter(nd => nd !== P).length, 0)
  t.equal(r1.pushed - r0.pushed, expected, `${keys.length} blocks: one acknowledged push per remote replica, ${expected} in all`)
  t.equal(r1.repaired - r0.repaired, 0, 'repair pushed none of the blocks the put had queued')
})
