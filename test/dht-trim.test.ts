// A trim is not a departure: when a node closes an idle connection to stay under its bound, it
// says so in yamux's GoAway (TRIM_GOAWAY), and the peer does not ping it back to see whether it
// left. A stop (GoAway 0) still is checked, and found gone. Real libp2p nodes on the in-memory
// transport; every wait is bounded polling.
import t from 'tap'
import { startMemNet } from './helpers/memnet.js'

async function until (what: string, ms: number, cond: () => boolean): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}

t.test('a peer that trims its connection is not checked; a peer that stops is checked and found gone', async t => {
  const { nodes } = await startMemNet(t, 4, { topology: 'star' })
  const [a, b, c] = nodes
  const key = (n: typeof a): string => n.node.peerId
  const connected = (x: typeof a, y: typeof a): boolean => x.node.libp2p.getConnections().some(conn => conn.remotePeer.toString() === key(y))
  // Every node meets every other (the join looks itself up); b must know a and c in its table.
  await until('b to have a and c in its routing table, connected', 30_000, () =>
    b.node.router.table.has(key(a)) && b.node.router.table.has(key(c)) && connected(a, b) && connected(b, c))

  const before = { ...b.node.leaveStat }
  for (const conn of a.node.libp2p.getConnections().filter(x => x.remotePeer.toString() === key(b))) {
    await a.node.connections.close(conn)
  }
  await until('b to see a\'s close as a trim', 10_000, () => b.node.leaveStat.trims > before.trims)
  t.notOk(connected(b, a), 'the connection is gone on b\'s side')
  t.equal(b.node.leaveStat.checks, before.checks, 'b did not ping a back after a trim')
  t.equal(b.node.leaveStat.left, before.left, 'a is not taken for gone')
  t.ok(b.node.router.table.has(key(a)), 'a stays in b\'s routing table')

  await c.stop()
  await until('b to check on c and find it gone', 30_000, () => b.node.leaveStat.left > before.left)
  t.ok(b.node.leaveStat.checks > before.checks, 'a stop (GoAway 0) is checked')
  t.equal(b.node.leaveStat.trims, before.trims + 1, 'and is not counted as a trim')
  t.notOk(b.node.router.table.has(key(c)), 'c left b\'s routing table')
})

t.test('crossed dials: both ends keep the same one of two connections, and the pair stays connected', async t => {
  // At 4 connections a node keeps 2 neighbours; a and b hold 3 connections to each other (dials
  // crossing). Each end trims the idle extra ones; had each kept a different one, both would go.
  const { nodes } = await startMemNet(t, 2, { maxConnections: 4 })
  const [a, b] = nodes
  const between = (x: typeof a, y: typeof a): number => x.node.libp2p.getConnections().filter(c => c.remotePeer.toString() === y.node.peerId && c.status === 'open').length
  await until('a and b connected', 30_000, () => between(a, b) > 0)
  await a.node.libp2p.dial(b.node.libp2p.peerId, { force: true } as never)
  await b.node.libp2p.dial(a.node.libp2p.peerId, { force: true } as never)
  await until('three connections on both ends', 10_000, () => between(a, b) === 3 && between(b, a) === 3)
  await until('the extra connections trimmed', 30_000, () => between(a, b) <= 1 && between(b, a) <= 1)
  t.equal(between(a, b), 1, 'a keeps one connection to b')
  t.equal(between(b, a), 1, 'b keeps one connection to a')
  t.equal(a.node.members.size, 2, 'b is still a member on a')
  // Closing a duplicate is not closing the peer: a later drop of the kept connection is checked.
  t.notOk(a.node.connections.closedByUs(b.node.peerId) || b.node.connections.closedByUs(a.node.peerId), 'trimming a duplicate does not mark the peer as closed by this node')
})
