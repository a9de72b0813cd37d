// Joining is never over. A networked mount whose only bootstrap node is down mounts at once,
// takes writes, and joins by itself when that node comes up: its blocks reach k replicas and
// another node reads its head and file, with no restart and no user command on the mount. A
// node remembers the peers it met (peers.json): restarted with no bootstrap list it rejoins
// through them, and after losing every connection it finds a peer that comes back.
import tap from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { skipReason, tempDir } from './helpers/mount.js'
import { describe, reefCli, startCluster, startNetMount, startNode, storeKeys, waitFor } from './helpers/cluster.js'

const skip = skipReason()

/**
 * A TCP port on 127.0.0.1 that nothing listens on, below the kernel's ephemeral range, so that
 * no outgoing connection or port-0 listener (every other node here) is given it meanwhile.
 */
async function reservePort (): Promise<number> {
  const low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
  for (let i = 0; i < 100; i++) {
    const port = 10_000 + crypto.randomInt(Math.max(1, low - 10_000))
    const free = await new Promise<boolean>(resolve => {
      const srv = net.createServer()
      srv.once('error', () => resolve(false))
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)))
    })
    if (free) return port
  }
  throw new Error('no free port below the ephemeral range')
}

/** The peer id a data directory's node will have (it derives from identity.key). */
async function peerIdOf (dataDir: string): Promise<string> {
  const seed = new Uint8Array(fs.readFileSync(path.join(dataDir, 'identity.key')))
  return peerIdFromPrivateKey(await generateKeyPairFromSeed('Ed25519', seed)).toString()
}

const remembered = (dataDir: string): string[] => {
  try {
    return (JSON.parse(fs.readFileSync(path.join(dataDir, 'peers.json'), 'utf8')).peers as Array<{ id: string }>).map(p => p.id)
  } catch {
    return []
  }
}

tap.test('a mount started while its bootstrap node is down joins when it comes up', { skip }, async t => {
  const base = tempDir(t, 'reef-dht-join-')
  const dirM = path.join(base, 'm')
  const dirBoot = path.join(base, 'boot')
  const init = await reefCli(dirM, ['init', '--json'])
  t.equal(init.code, 0, describe(init))
  const aguid = JSON.parse(init.stdout).aguid as string
  const initBoot = await reefCli(dirBoot, ['init'])
  t.equal(initBoot.code, 0, describe(initBoot))
  const port = await reservePort()
  const bootAddr = `/ip4/127.0.0.1/tcp/${port}/p2p/${await peerIdOf(dirBoot)}`

  const t0 = Date.now()
  const M = await startNetMount(t, dirM, path.join(base, 'mnt'), ['--bootstrap', bootAddr, '--fold-interval', '3600'])
  t.comment(`mounted in ${Date.now() - t0} ms with its bootstrap node down`)
  const st0 = JSON.parse((await reefCli(dirM, ['status', '--json'])).stdout).network
  t.equal(st0.members, 1, 'alone at first')
  t.equal(st0.join?.joined, false, `not joined (${JSON.stringify(st0.join)})`)

  const bytes = crypto.randomBytes(700 * 1024 + 5)
  fs.writeFileSync(path.join(M.mnt, 'offline.bin'), bytes)
  const sync = await reefCli(dirM, ['sync', '--json'])
  t.equal(sync.code, 0, describe(sync))
  const s1 = JSON.parse(sync.stdout)
  const keys = await storeKeys(dirM)
  t.ok(s1.notReplicated > 0 && s1.notReplicated <= keys.length, `offline, the sync reports ${s1.notReplicated} blocks short of k`)

  // The bootstrap node comes up on the address the mount was given, and a third node joins it,
  // so that k=3 replicas can exist. Nothing is asked of the mount from here on.
  const N0 = await startNode(t, dirBoot, 0, { extraArgs: ['--listen', `/ip4/127.0.0.1/tcp/${port}`] })
  const N1 = await startNode(t, path.join(base, 'n1'), 1, { bootstrap: N0.addr })
  const t1 = Date.now()
  let have: boolean[][] = []
  await waitFor('every block of the mount on both other nodes', async () => {
    have = await Promise.all([N0, N1].map(async nd => await nd.localHas(keys)))
    return have.every(h => h.every(Boolean))
  }, 150_000, 500).then(() => {
    t.comment(`the mount's ${keys.length} blocks reached k=3 replicas ${Date.now() - t1} ms after the bootstrap node came up`)
  }, err => {
    t.fail(`${(err as Error).message}: held ${have.map(h => h.filter(Boolean).length).join(', ')} of ${keys.length}\nmount stderr: ${M.stderr().slice(-2000)}`)
  })

  let head: unknown
  await waitFor('the mount\'s head on the third node', async () => {
    head = await N1.control('head', { aguid })
    return (head as { seq?: string } | null)?.seq === s1.seq
  }, 60_000, 500).catch(err => { t.fail(`${(err as Error).message}: ${JSON.stringify(head)}`) })
  const out = path.join(base, 'got')
  const got = await reefCli(N1.dataDir, ['get', aguid, '-o', out])
  t.equal(got.code, 0, `reef get on the third node: ${describe(got)}`)
  t.ok(fs.readFileSync(path.join(out, 'offline.bin')).equals(bytes), 'the third node reads the file written offline')

  const st = JSON.parse((await reefCli(dirM, ['status', '--json'])).stdout).network
  t.equal(st.members, 3, 'the mount sees both nodes')
  t.ok(st.join.joins >= 1, `it joined in the background (${JSON.stringify(st.join)})`)
  const s2 = await reefCli(dirM, ['sync', '--json'])
  t.equal(JSON.parse(s2.stdout).notReplicated, 0, `sync now reports no block short of k: ${describe(s2)}`)
  await waitFor('peers.json naming both nodes', () => [N0.peerId, N1.peerId].every(id => remembered(dirM).includes(id)), 10_000, 200)
    .catch(err => { t.fail(`${(err as Error).message}: ${JSON.stringify(remembered(dirM))}`) })
})

tap.test('a node rejoins through the peers it remembers', { skip }, async t => {
  const c = await startCluster(t, 3)
  const [A, B, C] = c.nodes
  const stopped = await C.stop()
  t.equal(stopped.code, 0, `node 2 stops cleanly (${JSON.stringify(stopped)})`)
  t.same(remembered(C.dataDir).sort(), [A.peerId, B.peerId].sort(), 'its peers.json names the two others')

  // Restarted with no bootstrap list, on a new port: it dials the peers it remembers.
  const t0 = Date.now()
  const C2 = await startNode(t, C.dataDir, 2, {})
  let seen: number[] = []
  await waitFor('all three nodes to see each other again', async () => {
    seen = await Promise.all([A, B, C2].map(async nd => (await nd.network()).members as number))
    return seen.every(m => m === 3)
  }, 60_000, 200).then(() => { t.comment(`rejoined ${Date.now() - t0} ms after the restart began`) },
    err => { t.fail(`${(err as Error).message}: members ${seen.join(',')}\n${C2.stderr().slice(-2000)}`) })

  // It loses every connection; one peer comes back at its old address, knowing nobody (no
  // peers.json, no bootstrap): only the lone node's own background joining can reconnect them.
  const oldPort = /\/tcp\/(\d+)\//.exec(A.addr)?.[1] as string
  await Promise.all([A.stop(), B.stop()])
  await waitFor('node 2 alone', async () => (await C2.network()).members === 1, 30_000, 200)
  fs.rmSync(path.join(A.dataDir, 'peers.json'), { force: true })
  const t1 = Date.now()
  const A2 = await startNode(t, A.dataDir, 0, { extraArgs: ['--listen', `/ip4/127.0.0.1/tcp/${oldPort}`] })
  await waitFor('node 2 and the returning node together again', async () => {
    seen = await Promise.all([A2, C2].map(async nd => (await nd.network()).members as number))
    return seen.every(m => m === 2)
  }, 90_000, 200).then(() => { t.comment(`reconnected ${Date.now() - t1} ms after the peer came back`) },
    err => { t.fail(`${(err as Error).message}: members ${seen.join(',')}\n${C2.stderr().slice(-2000)}`) })
  t.ok((await C2.network()).join.joins >= 1, 'through node 2\'s background joining')
})
