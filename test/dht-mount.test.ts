// Across mounts: node A mounts its own file system as a network node on 127.0.0.1; node B
// mounts A's AGUID read-only, bootstrapped from A. A file written through A's mount and synced
// shows up in B's mount with the same bytes (B follows A's signed head through the DHT; the
// blocks reach B by replication or by fetching); writing in B's mount fails with EROFS.
// Two nodes cannot hold k=3 replicas: `reef sync` says how many are missing, until a third
// node joins. Last, a read in B's mount whose block B lacks and whose every holder is dead or
// frozen ends with EIO within B's fetch deadline, and B keeps serving.
import tap from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { open } from 'lmdb'
import { errnoOf, isMounted, run, skipReason, tempDir } from './helpers/mount.js'
import { describe, reefCli, startNetMount, startNode, storeKeys, waitFor } from './helpers/cluster.js'

const skip = skipReason()

/** Block bytes by hex key, read from a data directory's store (safe while its node runs). */
async function readBlocks (dataDir: string, keys: string[]): Promise<Map<string, Buffer>> {
  const env = open({ path: path.join(dataDir, 'store'), compression: false, maxDbs: 8, readOnly: true })
  try {
    const blocks = env.openDB<Buffer, Buffer>({ name: 'blocks', keyEncoding: 'binary', encoding: 'binary' })
    const out = new Map<string, Buffer>()
    for (const k of keys) {
      const v = blocks.getBinary(Buffer.from(k, 'hex'))
      if (v !== undefined) out.set(k, Buffer.from(v))
    }
    return out
  } finally {
    await env.close()
  }
}

/** Removes blocks from a data directory's store behind its running node's back. */
async function dropBlocks (dataDir: string, keys: string[]): Promise<number> {
  const env = open({ path: path.join(dataDir, 'store'), compression: false, maxDbs: 8 })
  try {
    const blocks = env.openDB<Buffer, Buffer>({ name: 'blocks', keyEncoding: 'binary', encoding: 'binary' })
    let n = 0
    for (const k of keys) if (await blocks.remove(Buffer.from(k, 'hex'))) n++
    return n
  } finally {
    await env.close()
  }
}

/** B's fetch deadline here: below the block service's 5 s request deadline, so only it can end the read. */
const FETCH_DEADLINE_MS = 1000

tap.test('a file written through one mount shows up in a follower mount on another node', { skip }, async t => {
  const base = tempDir(t, 'reef-dht-mount-')
  const dirA = path.join(base, 'a')
  const dirB = path.join(base, 'b')
  const init = await reefCli(dirA, ['init', '--json'])
  t.equal(init.code, 0, describe(init))
  const aguid = JSON.parse(init.stdout).aguid as string

  // A folds only when asked (sync), so what B sees comes from that sync.
  const A = await startNetMount(t, dirA, path.join(base, 'mnt-a'), ['--fold-interval', '3600'])
  // B's kernel may keep attributes for an hour: only the daemon's invalidations, sent when a new
  // version arrives, can show it a change.
  const B = await startNetMount(t, dirB, path.join(base, 'mnt-b'), ['--aguid', aguid, '--bootstrap', A.addr, '--fetch-deadline', String(FETCH_DEADLINE_MS / 1000), '--attr-timeout', '3600'])
  t.notOk(fs.existsSync(path.join(B.mnt, 'hello.bin')), 'B starts without the file')

  const bytes = crypto.randomBytes(1536 * 1024 + 77)
  const before = new Set(await storeKeys(dirA))
  fs.mkdirSync(path.join(A.mnt, 'docs'))
  fs.writeFileSync(path.join(A.mnt, 'docs', 'hello.bin'), bytes)
  fs.writeFileSync(path.join(A.mnt, 'note.txt'), 'written on A\n')
  const sync = await reefCli(dirA, ['sync', '--json'])
  t.equal(sync.code, 0, `reef sync on A: ${describe(sync)}`)
  // Two nodes hold two of each block's three replicas: the sync's blocks are each one short.
  const folded = (await storeKeys(dirA)).filter(k => !before.has(k))
  const n = folded.length
  t.ok(n >= 20, `the sync folded ${n} blocks`)
  const s1 = JSON.parse(sync.stdout)
  t.equal(s1.notReplicated, n, 'sync reports every block of the fold short of k replicas')
  t.same(s1.replicated, { k: 3, blocks: n, blocksShort: n, missingReplicas: n, untracked: 0 }, 'one replica missing per block')
  const again = await reefCli(dirA, ['sync'])
  t.equal(again.code, 0, describe(again))
  t.match(again.stdout, new RegExp(`\n${n} of ${n} blocks short of k=3 replicas \\(${n} replicas missing\\)\n$`), 'a later sync still reports them, in words')

  const t0 = Date.now()
  await waitFor('the file in B\'s mount with the same bytes', () => {
    try {
      return fs.readFileSync(path.join(B.mnt, 'docs', 'hello.bin')).equals(bytes)
    } catch {
      return false
    }
  }, 60_000, 200).catch(err => { t.fail(`${(err as Error).message}\nB stderr: ${B.stderr().slice(-2000)}`) })
  t.pass(`B shows the file after ${Date.now() - t0} ms`)
  t.equal(fs.readFileSync(path.join(B.mnt, 'note.txt'), 'utf8'), 'written on A\n', 'and the other file')

  t.equal(errnoOf(() => fs.writeFileSync(path.join(B.mnt, 'new.txt'), 'x')), 'EROFS', 'creating a file in B\'s mount: EROFS')
  t.equal(errnoOf(() => fs.appendFileSync(path.join(B.mnt, 'note.txt'), 'x')), 'EROFS', 'writing to a file in B\'s mount: EROFS')
  t.equal(errnoOf(() => fs.mkdirSync(path.join(B.mnt, 'dir'))), 'EROFS', 'mkdir in B\'s mount: EROFS')
  t.equal(errnoOf(() => fs.unlinkSync(path.join(B.mnt, 'note.txt'))), 'EROFS', 'unlink in B\'s mount: EROFS')
  t.equal(fs.readFileSync(path.join(A.mnt, 'note.txt'), 'utf8'), 'written on A\n', 'A unchanged')

  // A file B has stat'ed and read (its attributes and pages in B's kernel) changes on A.
  const edit = path.join(B.mnt, 'docs', 'edit.txt')
  fs.writeFileSync(path.join(A.mnt, 'docs', 'edit.txt'), 'first')
  fs.writeFileSync(path.join(A.mnt, 'docs', 'gone.txt'), 'short-lived')
  t.equal((await reefCli(dirA, ['sync'])).code, 0, 'A folds edit.txt')
  await waitFor('edit.txt in B\'s mount', () => { try { return fs.readFileSync(edit, 'utf8') === 'first' } catch { return false } }, 60_000, 200)
  t.equal(fs.statSync(edit).size, 5, 'B stats it')
  // An open descriptor asks no lookup: only an invalidation refreshes what fstat sees.
  const fdB = fs.openSync(edit, 'r')
  t.teardown(() => { try { fs.closeSync(fdB) } catch {} })
  fs.writeFileSync(path.join(A.mnt, 'docs', 'edit.txt'), 'the second, longer version')
  fs.unlinkSync(path.join(A.mnt, 'docs', 'gone.txt'))
  t.equal((await reefCli(dirA, ['sync'])).code, 0, 'A folds the change')
  // Nothing on B looks the name up meanwhile (a lookup would refresh the attributes too).
  await waitFor('fstat of the open descriptor on B to see the new size', () => fs.fstatSync(fdB).size === 26, 60_000, 200)
    .catch(err => { t.fail(`${(err as Error).message}: ${fs.fstatSync(fdB).size}`) })
  t.equal(fs.fstatSync(fdB).size, 26, 'B\'s kernel has the new size (its cached attributes were dropped)')
  t.equal(fs.readFileSync(edit, 'utf8'), 'the second, longer version', 'and B reads the new content')
  await waitFor('gone.txt gone from B\'s mount', () => !fs.existsSync(path.join(B.mnt, 'docs', 'gone.txt')), 30_000, 200)
  t.pass('a file removed on A is gone from B')

  const st = JSON.parse((await reefCli(dirB, ['status', '--json'])).stdout)
  t.equal(st.readOnly, true, 'B\'s mount reports read-only')
  t.equal(st.aguid, aguid, 'B follows A\'s AGUID')
  t.ok(st.network?.fetch?.remote > 0, `B fetched blocks from the network (${JSON.stringify(st.network?.fetch)})`)

  // A third node: each block can now have its k=3 replicas, and sync says so once they do.
  const N = await startNode(t, path.join(base, 'n'), 2, { bootstrap: A.addr })
  let last: any
  await waitFor('a sync on A reporting no block short of k', async () => {
    const r = await reefCli(dirA, ['sync', '--json'])
    last = r.code === 0 ? JSON.parse(r.stdout) : r.stderr
    return last.notReplicated === 0
  }, 30_000, 200).catch(err => { t.fail(`${(err as Error).message}: ${JSON.stringify(last)}`) })
  t.same(await N.localHas(folded), folded.map(() => true), 'the third node holds every block of the fold')
  const zero = await reefCli(dirA, ['sync'])
  t.match(zero.stdout, /\nall blocks on k=3 replicas\n$/, `in words: ${zero.stdout.trim()}`)

  t.test('a read whose block every holder lost or froze ends with EIO in bounded time; B keeps serving', async t => {
    // A second file reaches all three nodes; B then loses its data chunks (the blocks whose
    // bytes are pieces of the file; its tree and directory blocks stay, so it can be opened).
    const data = crypto.randomBytes(1024 * 1024 + 11)
    const known = new Set(await storeKeys(dirA))
    fs.writeFileSync(path.join(A.mnt, 'docs', 'later.bin'), data)
    const s2 = await reefCli(dirA, ['sync', '--json'])
    t.equal(JSON.parse(s2.stdout).notReplicated, 0, `the second file is on k replicas: ${describe(s2)}`)
    const fresh = (await storeKeys(dirA)).filter(k => !known.has(k))
    const chunks = [...(await readBlocks(dirA, fresh)).entries()].filter(([, b]) => b.length > 0 && data.includes(b)).map(([k]) => k)
    t.ok(chunks.length >= 4, `${chunks.length} data chunks`)
    await waitFor('later.bin listed in B\'s mount', () => fs.existsSync(path.join(B.mnt, 'docs', 'later.bin')), 30_000, 100)
    t.same(await N.localHas(chunks), chunks.map(() => true), 'the third node holds them')
    t.equal(await dropBlocks(dirB, chunks), chunks.length, 'B lost its copies')

    // The holders: A dies, N freezes (the worse case: connected, silent, still a member).
    process.kill(A.pid, 'SIGKILL')
    await waitFor('A gone', () => !A.alive(), 10_000, 20)
    await run('fusermount', ['-uz', A.mnt])
    process.kill(N.pid, 'SIGSTOP')
    try {
      const f0 = (await reefCli(dirB, ['status', '--json']).then(r => JSON.parse(r.stdout))).network.fetch
      const r = await run('cat', [path.join(B.mnt, 'docs', 'later.bin')], { timeoutMs: 60_000 })
      t.not(r.code, 0, 'the read fails')
      t.match(r.stderr, /Input\/output error/, `with EIO: ${describe(r)}`)
      t.ok(r.ms < 4500, `within the fetch deadline, before even one request deadline (${r.ms} ms)`)
      const st2 = await reefCli(dirB, ['status', '--json'])
      t.equal(st2.code, 0, 'B\'s daemon answers')
      const f1 = JSON.parse(st2.stdout).network.fetch
      t.ok(f1.deadlines > f0.deadlines && f1.misses > f0.misses, `the fetch deadline ended it (${JSON.stringify(f1)})`)
      t.ok(B.alive() && isMounted(B.mnt), 'B still runs and is mounted')
      t.ok(fs.readFileSync(path.join(B.mnt, 'docs', 'hello.bin')).equals(bytes), 'and still serves what it holds')
    } finally {
      process.kill(N.pid, 'SIGCONT')
    }
    // The holder is back: the same read now succeeds (nothing in B stayed stuck).
    const t0 = Date.now()
    await waitFor('later.bin readable through B from the third node', async () => {
      const r = await run('cat', [path.join(B.mnt, 'docs', 'later.bin')], { timeoutMs: 30_000 })
      return r.code === 0 && r.out.equals(data)
    }, 30_000, 500).catch(err => { t.fail(`${(err as Error).message}\nB stderr: ${B.stderr().slice(-2000)}`) })
    t.pass(`readable again ${Date.now() - t0} ms after the third node resumed`)
  })
})
