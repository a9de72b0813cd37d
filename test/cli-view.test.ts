// `reef id` and `reef view` through real CLI processes:
//   offline      one data directory, no daemon: create, add, remove, show --json, and each
//                refusal with its code and a non-zero exit
//   3 nodes      real `reef node` processes on loopback: the owner's changes reach the others,
//                a non-owner's `view add` is refused, writer heads are published and read back
//                checked, a removed writer's later heads do not count, and forged or replayed
//                view records pushed straight into the DHT are refused by the nodes
import tap from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { keyPairFromSeed } from '../src/crypto/sign.js'
import { keyHex, viewIdFor, writerSlotFor } from '../src/view/ids.js'
import { recordKeyFor } from '../src/view/dht.js'
import { encodeViewRecord, encodeWriterHead, signViewRecord, signWriterHead } from '../src/view/record.js'
import { errorCode, lastWord, reef, show, tempDir } from './helpers/cli.js'
import { describe, reefCli, startClient, startNode, waitFor, type NodeHandle, type RunResult } from './helpers/cluster.js'

const keyOf = (dataDir: string): Uint8Array => keyPairFromSeed(new Uint8Array(fs.readFileSync(path.join(dataDir, 'identity.key')))).publicKey
const codeOf = (r: RunResult): string | undefined => /\[([A-Z0-9_]+)\]\s*$/.exec(r.stderr)?.[1]

tap.test('offline: one data directory', async t => {
  const base = tempDir(t, 'reef-view-')
  const A = path.join(base, 'a')
  const B = path.join(base, 'b')
  for (const d of [A, B]) t.equal((await reef(d, ['init'])).code, 0)
  const aKey = keyHex(keyOf(A))
  const bKey = keyHex(keyOf(B))

  const id = await reef(A, ['id'])
  t.equal(id.code, 0, show(id))
  t.equal(id.out, aKey + '\n', 'reef id prints the key and nothing else')
  const idj = JSON.parse((await reef(A, ['id', '--json'])).out)
  t.equal(idj.key, aKey)
  t.match(idj.aguid, /^b/)

  const created = await reef(A, ['view', 'create', 'team'])
  t.equal(created.code, 0, show(created))
  const view = lastWord(created)
  t.equal(view, viewIdFor(keyOf(A), 'team').toString(), 'the view id is the owner\'s and the name\'s')
  const again = JSON.parse((await reef(A, ['view', 'create', 'team', '--json'])).out)
  t.equal(again.created, false, 'create again leaves the view as it is')
  t.equal(again.seq, '1')

  const added = await reef(A, ['view', 'add', view, bKey])
  t.equal(added.code, 0, show(added))
  const dup = await reef(A, ['view', 'add', view, bKey.toUpperCase()])
  t.equal(dup.code, 1)
  t.equal(errorCode(dup), 'VIEW_ALREADY_WRITER', show(dup))
  for (const bad of ['zz', bKey.slice(1), bKey + '0']) {
    const r = await reef(A, ['view', 'add', view, bad])
    t.equal(r.code, 1)
    t.equal(errorCode(r), 'VIEW_BAD_KEY', `${bad}: ${show(r)}`)
  }
  const notView = await reef(A, ['view', 'show', idj.aguid])
  t.equal(errorCode(notView), 'BAD_GUID', 'an AGUID is not a view id')
  const unknown = await reef(B, ['view', 'show', view])
  t.equal(unknown.code, 1)
  t.equal(errorCode(unknown), 'NOT_FOUND', 'a node without a network knows only its own views')

  const notWriter = await reef(A, ['view', 'remove', view, keyHex(new Uint8Array(32).fill(7))])
  t.equal(notWriter.code, 1)
  t.equal(errorCode(notWriter), 'VIEW_NOT_WRITER', show(notWriter))
  const removed = await reef(A, ['view', 'remove', view, bKey])
  t.equal(removed.code, 0, show(removed))
  const again2 = await reef(A, ['view', 'remove', view, bKey])
  t.equal(errorCode(again2), 'VIEW_NOT_WRITER', 'removed twice')
  const back = await reef(A, ['view', 'add', view, bKey])
  t.equal(errorCode(back), 'VIEW_REMOVED', 'a removed key is not added again')

  const j = JSON.parse((await reef(A, ['view', 'show', view, '--json'])).out)
  t.same({ view: j.view, name: j.name, owner: j.owner, seq: j.seq, writers: j.writers }, { view, name: 'team', owner: aKey, seq: '3', writers: [{ key: aKey, added: '1' }] })
  t.equal(j.removed.length, 1)
  t.same({ key: j.removed[0].key, added: j.removed[0].added, removed: j.removed[0].removed }, { key: bKey, added: '2', removed: '3' })
  const txt = await reef(A, ['view', 'show', view])
  t.match(txt.out, new RegExp(`owner +${aKey}`))
  t.match(txt.out, new RegExp(`${bKey} +added at 2, removed at 3`))
})

tap.test('3 nodes on loopback', async t => {
  // Data directories made by `reef init` (a plain `reef node` has no version of its own file
  // system yet, and a writer head names one).
  const base = tempDir(t, 'reef-view-net-')
  const dirs = ['a', 'b', 'c'].map(n => path.join(base, n))
  for (const d of dirs) t.equal((await reef(d, ['init'])).code, 0)
  const A = await startNode(t, dirs[0], 0, { k: 3, repairInterval: 3600 })
  const B = await startNode(t, dirs[1], 1, { k: 3, repairInterval: 3600, bootstrap: A.addr })
  const C = await startNode(t, dirs[2], 2, { k: 3, repairInterval: 3600, bootstrap: A.addr })
  const nodes = [A, B, C]
  await waitFor('3 members on every node', async () => (await Promise.all(nodes.map(async nd => (await nd.network()).members as number))).every(m => m >= 2), 60_000, 250)
  const c = { nodes, reef: async (nd: NodeHandle, ...args: string[]): Promise<RunResult> => await reefCli(nd.dataDir, args, { timeoutMs: 120_000 }) }
  const keyText = (nd: NodeHandle): string => keyHex(keyOf(nd.dataDir))
  const ok = (r: RunResult, what: string): RunResult => { if (r.code !== 0) throw new Error(`${what}: ${describe(r)}`); return r }
  const showJson = async (nd: NodeHandle, view: string): Promise<any> => {
    const r = await c.reef(nd, 'view', 'show', view, '--json')
    return r.code === 0 ? JSON.parse(r.stdout) : undefined
  }

  const idB = ok(await c.reef(B, 'id', '--json'), 'id')
  t.equal(JSON.parse(idB.stdout).key, keyText(B))
  t.equal(JSON.parse(idB.stdout).peerId, B.peerId, 'a node answers with its peer id too')

  const created = JSON.parse(ok(await c.reef(A, 'view', 'create', 'shared', '--json'), 'create').stdout)
  const view: string = created.view
  t.ok(created.acks > 0, `the view record reached peers (${String(created.acks)} acks)`)
  await waitFor('B to see the view', async () => (await showJson(B, view))?.seq === '1', 60_000, 250)

  const add = JSON.parse(ok(await c.reef(A, 'view', 'add', view, keyText(B), '--json'), 'add').stdout)
  t.equal(add.seq, '2')
  await waitFor('B and C to see list 2', async () => (await showJson(B, view))?.seq === '2' && (await showJson(C, view))?.seq === '2', 60_000, 250)
  t.same((await showJson(C, view)).writers.map((w: { key: string }) => w.key).sort(), [keyText(A), keyText(B)].sort(), 'C sees both writers')

  t.test('a non-owner cannot change the list', async t => {
    for (const nd of [B, C]) {
      const r = await c.reef(nd, 'view', 'add', view, keyText(C))
      t.equal(r.code, 1, describe(r))
      t.equal(codeOf(r), 'VIEW_NOT_OWNER')
    }
    const r = await c.reef(B, 'view', 'remove', view, keyText(A))
    t.equal(codeOf(r), 'VIEW_NOT_OWNER')
    t.equal((await showJson(A, view)).seq, '2', 'the list did not change')
  })

  t.test('writer heads: published, read back checked, a non-writer refused', async t => {
    const pubC = await c.reef(C, 'view', 'publish', view)
    t.equal(pubC.code, 1)
    t.equal(codeOf(pubC), 'VIEW_NOT_WRITER', describe(pubC))
    const pub = JSON.parse(ok(await c.reef(B, 'view', 'publish', view, '--json'), 'publish').stdout)
    t.equal(pub.seq, '1')
    t.equal(pub.listSeq, '2')
    t.ok(pub.acks > 0)
    // The head names B's tree of the view (made here, empty, since B never mounted it), not B's
    // private file system.
    const inView = JSON.parse(ok(await c.reef(B, 'history', '--view', view, '--json'), 'history --view').stdout)
    const own = JSON.parse(ok(await c.reef(B, 'history', '--json'), 'history').stdout)
    t.equal(inView.versions[0].vguid, pub.vguid, 'the head is B\'s version in the view')
    t.not(own.versions[0].vguid, pub.vguid, 'not its private file system\'s')
    const headOf = async (nd: NodeHandle, key: string): Promise<any> => {
      const r = await c.reef(nd, 'view', 'heads', view, '--json')
      return r.code === 0 ? JSON.parse(r.stdout).writers.find((w: { key: string }) => w.key === key) : undefined
    }
    await waitFor('A and C to read B\'s head', async () => (await headOf(A, keyText(B)))?.vguid === pub.vguid && (await headOf(C, keyText(B)))?.vguid === pub.vguid, 60_000, 250)
    const second = JSON.parse(ok(await c.reef(B, 'view', 'publish', view, '--json'), 'publish 2').stdout)
    t.equal(second.seq, '2', 'each head has the next seq')
    await waitFor('C to read head 2', async () => (await headOf(C, keyText(B)))?.seq === '2', 60_000, 250)

    // Removing B pins its newest head; what B signs afterwards does not count.
    const rm = JSON.parse(ok(await c.reef(A, 'view', 'remove', view, keyText(B), '--json'), 'remove').stdout)
    t.same({ seq: rm.removed[0].cut.seq, vguid: rm.removed[0].cut.vguid }, { seq: '2', vguid: pub.vguid }, 'cut at B\'s head 2')
    await waitFor('B to see list 3', async () => (await showJson(B, view))?.seq === '3', 60_000, 250)
    const late = await c.reef(B, 'view', 'publish', view)
    t.equal(late.code, 1)
    t.equal(codeOf(late), 'VIEW_REMOVED', describe(late))
    const atC = await headOf(C, keyText(B))
    t.same({ state: atC.state, removed: atC.removed, seq: atC.seq }, { state: 'removed', removed: '3', seq: '2' }, 'C takes B\'s position from the cut')
  })

  t.test('forged and replayed view records pushed into the DHT are refused', async t => {
    const client = await startClient(t)
    await Promise.all(c.nodes.map(async nd => await client.dial(multiaddr(nd.addr), { signal: AbortSignal.timeout(10_000) })))
    await waitFor('every node in the client\'s routing table', () => client.services.dht.routingTable.size === 3, 20_000, 50)
    const owner = keyPairFromSeed(new Uint8Array(fs.readFileSync(path.join(A.dataDir, 'identity.key'))))
    const mallory = keyPairFromSeed(new Uint8Array(fs.readFileSync(path.join(C.dataDir, 'identity.key'))))
    const cur = await showJson(A, view)
    const key = recordKeyFor(viewIdFor(owner.publicKey, 'shared')) as Uint8Array
    const push = async (value: Uint8Array, to = key): Promise<{ acks: number, errors: number }> => {
      let acks = 0
      let errors = 0
      try {
        for await (const e of client.services.dht.put(to, value, { signal: AbortSignal.timeout(20_000) })) {
          if (e.name === 'PEER_RESPONSE' && e.messageName === 'PUT_VALUE') acks++
          if (e.name === 'QUERY_ERROR') errors++
        }
      } catch {}
      return { acks, errors }
    }
    const refusedBefore = await Promise.all(c.nodes.map(async nd => (await nd.network()).headsRefused as number))
    const name = new TextEncoder().encode('shared')
    // Forged: a higher seq, naming the owner, signed by another key.
    const forged = encodeViewRecord({ ...signViewRecord(mallory, name, CID.parse(cur.list), 9n), view: viewIdFor(owner.publicKey, name), owner: owner.publicKey })
    t.equal((await push(forged)).acks, 0, 'no node stores a forged record')
    // Replayed: the owner's own genesis record again (an older seq, validly signed).
    const again = JSON.parse(ok(await c.reef(A, 'view', 'create', 'shared', '--json'), 'create').stdout)
    t.equal(again.seq, '3')
    const replay = encodeViewRecord(signViewRecord(owner, name, CID.parse(cur.list), 1n))
    t.equal((await push(replay)).acks, 0, 'no node stores a rolled-back record')
    const refusedAfter = await Promise.all(c.nodes.map(async nd => (await nd.network()).headsRefused as number))
    t.ok(refusedAfter.some((n, i) => n > refusedBefore[i]), `the nodes' guards refused the replay (${refusedBefore.join(',')} -> ${refusedAfter.join(',')})`)
    for (const nd of c.nodes) t.equal((await showJson(nd, view)).seq, '3', `node ${nd.i} still serves list 3`)

    // Writer heads in B's slot: one signed by C claiming to be B's, and a replay of B's head 1
    // (B's key, seq below the held 2).
    const bKeys = keyPairFromSeed(new Uint8Array(fs.readFileSync(path.join(B.dataDir, 'identity.key'))))
    const vid = viewIdFor(owner.publicKey, name)
    const slotKey = recordKeyFor(writerSlotFor(vid, bKeys.publicKey)) as Uint8Array
    const someVersion = CID.parse(cur.list)
    const forgedHead = encodeWriterHead({ ...signWriterHead(mallory, { view: vid, vguid: someVersion, n: 0n, listSeq: 2n, seq: 9n }), writer: bKeys.publicKey })
    t.equal((await push(forgedHead, slotKey)).acks, 0, 'no node stores a forged writer head')
    const before = await Promise.all(c.nodes.map(async nd => (await nd.network()).headsRefused as number))
    const oldHead = encodeWriterHead(signWriterHead(bKeys, { view: vid, vguid: someVersion, n: 0n, listSeq: 2n, seq: 1n }))
    t.equal((await push(oldHead, slotKey)).acks, 0, 'no node stores a replayed writer head')
    const after = await Promise.all(c.nodes.map(async nd => (await nd.network()).headsRefused as number))
    t.ok(after.some((n, i) => n > before[i]), `the nodes' guards refused it (${before.join(',')} -> ${after.join(',')})`)
  })
})
