// Shared file systems through real mounts (issue 12): three `reef mount --view` processes on
// loopback, two writers (A owns the view, B is added) and a reader C (not a writer).
//   convergence   concurrent edits to disjoint files on A and B: all three mounts end with the
//                 same tree (every path's kind, mode, size and content hash), and C refuses
//                 writes with EROFS
//   cases         every conflict case of issue 12 item 5, made on both writers while they are cut
//                 off from each other (REEF_TEST_VIEW_HOLD), then merged: what each side sees
//   stop          a writer frozen with SIGSTOP while the other writes catches up when resumed
import tap from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { errnoOf, skipReason, tempDir } from './helpers/mount.js'
import { describe, reefCli, startNetMount, waitFor, type NetMount } from './helpers/cluster.js'
import { statusOf, treeDigest } from './helpers/views.js'

const skip = skipReason()


const keyOf = async (dataDir: string): Promise<string> => (await reefCli(dataDir, ['id'])).stdout.trim()

interface ViewNet { view: string, A: NetMount, B: NetMount, C: NetMount, hold: (m: NetMount) => string }

/**
 * A owns view "team" with B as second writer; A, B and C mount it (C: read-only). Each mount
 * stops its view rounds while `hold(m)` exists (REEF_TEST_VIEW_HOLD): cut off from the others.
 */
async function viewNet (t: Tap.Test, base: string): Promise<ViewNet> {
  const dirs = ['a', 'b', 'c'].map(n => path.join(base, n))
  for (const d of dirs) {
    const r = await reefCli(d, ['init'])
    t.equal(r.code, 0, describe(r))
  }
  const created = await reefCli(dirs[0], ['view', 'create', 'team'])
  t.equal(created.code, 0, describe(created))
  const view = created.stdout.trim().split('\n').pop() as string
  const added = await reefCli(dirs[0], ['view', 'add', view, await keyOf(dirs[1])])
  t.equal(added.code, 0, describe(added))
  const common = ['--view', view, '--fold-interval', '0.2', '--view-interval', '0.2', '--attr-timeout', '3600']
  const holdFile = (d: string): string => `${d}.hold`
  const env = (d: string): NodeJS.ProcessEnv => ({ REEF_TEST_VIEW_HOLD: holdFile(d) })
  const A = await startNetMount(t, dirs[0], path.join(base, 'mnt-a'), common, env(dirs[0]))
  // A puts the view's list on the network at its first round; B and C find it there.
  await waitFor('A to publish the view', async () => JSON.parse((await reefCli(dirs[0], ['status', '--json'])).stdout).view?.rounds >= 1, 60_000)
  const B = await startNetMount(t, dirs[1], path.join(base, 'mnt-b'), [...common, '--bootstrap', A.addr], env(dirs[1]))
  const C = await startNetMount(t, dirs[2], path.join(base, 'mnt-c'), [...common, '--bootstrap', A.addr], env(dirs[2]))
  return { view, A, B, C, hold: m => holdFile(m.dataDir) }
}

/** Cuts mounts off from each other (their view rounds stop) and waits until each has noticed. */
async function partition (net: ViewNet, ms: NetMount[]): Promise<void> {
  for (const m of ms) fs.writeFileSync(net.hold(m), '')
  await waitFor('the held mounts to stop their rounds', async () => {
    for (const m of ms) if ((await statusOf(m)).view?.held !== true) return false
    return true
  }, 60_000, 100)
}

/** Folds each mount's writes (reef sync), then lets them all meet again. */
async function heal (net: ViewNet, ms: NetMount[]): Promise<void> {
  for (const m of ms) {
    const r = await reefCli(m.dataDir, ['sync'])
    if (r.code !== 0) throw new Error(`reef sync: ${describe(r)}`)
  }
  for (const m of ms) fs.rmSync(net.hold(m), { force: true })
}

/** Waits until every mount shows the same tree, and returns it. */
async function converged (t: Tap.Test, ms: NetMount[], what: string, also: (d: string) => boolean = () => true): Promise<string> {
  await waitFor(what, () => {
    const d = ms.map(m => treeDigest(m.mnt))
    return d.every(x => x === d[0]) && also(d[0])
  }, 90_000, 200).catch(err => { t.fail((err as Error).message) })
  const d = ms.map(m => treeDigest(m.mnt))
  for (let i = 1; i < d.length; i++) t.equal(d[i], d[0], `mount ${i} has the same tree as mount 0`)
  return d[0]
}

tap.test('two writers and a reader converge on one tree; the reader cannot write', { skip }, async t => {
  const base = tempDir(t, 'reef-view-mount-')
  const { A, B, C } = await viewNet(t, base)
  t.match(C.stderr(), /read-only: this node is not one of its writers/, 'C mounts read-only')
  t.equal(errnoOf(() => fs.writeFileSync(path.join(C.mnt, 'nope.txt'), 'x')), 'EROFS', 'C refuses a write')

  // Concurrent edits to disjoint files, in rounds, each writer in its own directory.
  const big = crypto.randomBytes(300 * 1024)
  for (const [m, who] of [[A, 'a'], [B, 'b']] as const) fs.mkdirSync(path.join(m.mnt, who))
  for (let round = 0; round < 3; round++) {
    for (const [m, who] of [[A, 'a'], [B, 'b']] as const) {
      fs.writeFileSync(path.join(m.mnt, who, `f${round}.txt`), `${who} round ${round}\n`)
      fs.appendFileSync(path.join(m.mnt, who, 'log.txt'), `${who} ${round}\n`)
    }
  }
  fs.writeFileSync(path.join(A.mnt, 'a', 'big.bin'), big)
  fs.chmodSync(path.join(B.mnt, 'b', 'f1.txt'), 0o600)
  fs.renameSync(path.join(B.mnt, 'b', 'f2.txt'), path.join(B.mnt, 'b', 'renamed.txt'))
  fs.unlinkSync(path.join(A.mnt, 'a', 'f0.txt'))

  t.match(treeDigest(A.mnt), /\/a\/big\.bin file 644 307200/, 'A has its big file')
  await converged(t, [A, B, C], 'A, B and C to show the same tree with both writers\' files', d => d.includes('/b/renamed.txt') && d.includes('/a/big.bin'))
  t.same(fs.readFileSync(path.join(C.mnt, 'a', 'big.bin')), big, 'the reader reads the writer\'s bytes')
  t.equal(fs.readFileSync(path.join(A.mnt, 'b', 'log.txt'), 'utf8'), 'b 0\nb 1\nb 2\n', 'A reads B\'s appends')
  t.equal(fs.statSync(path.join(A.mnt, 'b', 'f1.txt')).mode & 0o777, 0o600, 'A sees B\'s chmod')
  t.notOk(fs.existsSync(path.join(B.mnt, 'a', 'f0.txt')), 'B sees A\'s unlink')
  t.equal(errnoOf(() => fs.mkdirSync(path.join(C.mnt, 'c'))), 'EROFS', 'C still refuses writes')
  const s = await statusOf(B)
  t.ok(s.view.merges >= 1, `B merged (${s.view.merges} merges, last ${s.view.lastMergeMs} ms)`)
  t.equal(s.view.writer, true)
  t.equal((await statusOf(C)).view.writer, false)
})

const conflictName = (stem: string, ext: string): RegExp => new RegExp(`^${stem}\\.sync-conflict-\\d{8}-\\d{6}-[0-9a-f]{8}(-\\d+)?${ext.replace('.', '\\.')}$`)
const named = (dir: string, re: RegExp): string[] => fs.readdirSync(dir).filter(n => re.test(n))
const read = (p: string): string => fs.readFileSync(p, 'utf8')

tap.test('every conflict case, through the mounts: each side ends with the same tree and nothing is lost', { skip }, async t => {
  const base = tempDir(t, 'reef-view-cases-')
  const net = await viewNet(t, base)
  const { A, B, C } = net
  // The base both writers start from, made on A and seen by B.
  const a = (p: string): string => path.join(A.mnt, p)
  const b = (p: string): string => path.join(B.mnt, p)
  fs.writeFileSync(a('notes.txt'), 'base\n')
  fs.writeFileSync(a('doomed.txt'), 'base\n')
  fs.writeFileSync(a('moving.txt'), 'moving\n')
  fs.mkdirSync(a('empty'))
  fs.mkdirSync(a('p'))
  fs.writeFileSync(a('p/in-p.txt'), 'p\n')
  fs.mkdirSync(a('q'))
  fs.writeFileSync(a('q/in-q.txt'), 'q\n')
  fs.writeFileSync(a('modes.txt'), 'modes\n')
  await converged(t, [A, B], 'B to see the base', d => d.includes('/q/in-q.txt'))

  await partition(net, [A, B])
  // 1. both change one file's content
  fs.writeFileSync(a('notes.txt'), 'from A\n')
  fs.writeFileSync(b('notes.txt'), 'from B\n')
  // 2. both create one name
  fs.writeFileSync(a('new.txt'), 'new on A\n')
  fs.writeFileSync(b('new.txt'), 'new on B\n')
  // 3. one deletes a file the other modifies
  fs.unlinkSync(a('doomed.txt'))
  fs.appendFileSync(b('doomed.txt'), 'kept by B\n')
  // 4. both rename one file to different names
  fs.renameSync(a('moving.txt'), a('moved-by-a.txt'))
  fs.renameSync(b('moving.txt'), b('moved-by-b.txt'))
  // 5. a directory and a file under one name
  fs.mkdirSync(a('thing'))
  fs.writeFileSync(a('thing/inside.txt'), 'in the directory\n')
  fs.writeFileSync(b('thing'), 'the file\n')
  // 6. rmdir races a create inside the directory
  fs.rmdirSync(a('empty'))
  fs.writeFileSync(b('empty/born.txt'), 'born\n')
  // 7. renames that would make a cycle
  fs.renameSync(a('p'), a('q/p'))
  fs.renameSync(b('q'), b('p/q'))
  // 8. concurrent chmod and utimes: ordered, not a conflict
  fs.chmodSync(a('modes.txt'), 0o600)
  fs.chmodSync(b('modes.txt'), 0o640)
  fs.utimesSync(a('modes.txt'), 1_000_000, 1_000_000)
  fs.utimesSync(b('modes.txt'), 2_000_000, 2_000_000)
  await heal(net, [A, B])
  const tree = await converged(t, [A, B, C], 'A, B and C to agree after the merge', d => d.includes('/empty/born.txt') && d.includes('moved-by'))
  t.comment(tree)

  // 1. One version at the name, the other beside it.
  const copies = named(A.mnt, conflictName('notes', '.txt'))
  t.equal(copies.length, 1, `one conflict copy of notes.txt: ${copies.join(', ')}`)
  t.same([read(a('notes.txt')), read(a(copies[0]))].sort(), ['from A\n', 'from B\n'], 'both contents of notes.txt survive')
  // 2. The same for two creates of one name.
  const news = named(A.mnt, conflictName('new', '.txt'))
  t.equal(news.length, 1, 'one conflict copy of new.txt')
  t.same([read(a('new.txt')), read(a(news[0]))].sort(), ['new on A\n', 'new on B\n'], 'both new.txt survive')
  // 3. The modification survives the delete.
  t.equal(read(a('doomed.txt')), 'base\nkept by B\n', 'a file deleted on A and modified on B stays, with B\'s change')
  // 4. One rename stands; the content is there once; the old name is gone.
  const moved = ['moved-by-a.txt', 'moved-by-b.txt'].filter(n => fs.existsSync(a(n)))
  t.equal(moved.length, 1, `one of the two renames stands: ${moved.join(', ')}`)
  t.equal(read(a(moved[0])), 'moving\n', 'the renamed file keeps its content')
  t.notOk(fs.existsSync(a('moving.txt')), 'the old name is gone')
  // 5. The directory and the file both survive, one under a conflict name.
  const things = fs.readdirSync(A.mnt).filter(n => n === 'thing' || conflictName('thing', '').test(n))
  t.equal(things.length, 2, `the directory and the file both survive: ${things.join(', ')}`)
  const kinds = things.map(n => fs.lstatSync(a(n)).isDirectory() ? 'dir' : 'file').sort()
  t.same(kinds, ['dir', 'file'])
  const dir = things.find(n => fs.lstatSync(a(n)).isDirectory()) as string
  const file = things.find(n => fs.lstatSync(a(n)).isFile()) as string
  t.equal(read(a(`${dir}/inside.txt`)), 'in the directory\n', 'the directory keeps its file')
  t.equal(read(a(file)), 'the file\n', 'the file keeps its content')
  // 6. The directory stays, with what was created in it.
  t.equal(read(a('empty/born.txt')), 'born\n', 'rmdir is not applied over a create inside')
  // 7. No loop, nothing lost: one rename applied, both files reachable.
  const pPath = ['p/in-p.txt', 'q/p/in-p.txt'].find(x => fs.existsSync(a(x)))
  const qPath = ['q/in-q.txt', 'p/q/in-q.txt'].find(x => fs.existsSync(a(x)))
  t.ok(pPath !== undefined && qPath !== undefined, `both directories are reachable: ${String(pPath)} and ${String(qPath)}`)
  t.ok(!(pPath?.startsWith('q/') === true && qPath?.startsWith('p/') === true), 'they are not inside each other')
  // 8. One mode and one time, the same everywhere, and no copy.
  const st = fs.statSync(a('modes.txt'))
  t.ok([0o600, 0o640].includes(st.mode & 0o777), `one of the two modes: ${(st.mode & 0o777).toString(8)}`)
  t.ok([1_000_000, 2_000_000].includes(Math.round(st.mtimeMs / 1000)), 'one of the two times')
  t.equal(named(A.mnt, conflictName('modes', '.txt')).length, 0, 'no conflict copy for attributes')
  for (const m of [B, C]) {
    const s2 = fs.statSync(path.join(m.mnt, 'modes.txt'))
    t.equal(s2.mode, st.mode, 'the same mode on every mount')
    t.equal(s2.mtimeMs, st.mtimeMs, 'the same time on every mount')
  }
  // The open conflicts, listed by `reef conflicts --view`, and one resolved by deleting its copy.
  const listed = await reefCli(A.dataDir, ['conflicts', '--view', net.view, '--json'])
  t.equal(listed.code, 0, describe(listed))
  const paths = (JSON.parse(listed.stdout).conflicts as Array<{ path: string }>).map(c => c.path)
  t.ok(paths.includes('/' + copies[0]), `reef conflicts lists ${copies[0]}: ${paths.join(', ')}`)
  fs.unlinkSync(a(copies[0]))
  await waitFor('the conflict to leave the list', async () => {
    await reefCli(A.dataDir, ['sync'])
    const r = await reefCli(A.dataDir, ['conflicts', '--view', net.view, '--json'])
    return !(JSON.parse(r.stdout).conflicts as Array<{ path: string }>).some(c => c.path === '/' + copies[0])
  }, 30_000, 200)
  t.pass('deleting the copy resolves the conflict')
})

tap.test('a writer stopped (SIGSTOP) while the other writes catches up when it resumes', { skip }, async t => {
  const base = tempDir(t, 'reef-view-stop-')
  const net = await viewNet(t, base)
  const { A, B, C } = net
  fs.writeFileSync(path.join(A.mnt, 'before.txt'), 'before\n')
  await converged(t, [A, B, C], 'everyone to see before.txt', d => d.includes('/before.txt'))
  process.kill(B.pid, 'SIGSTOP')
  try {
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(A.mnt, `while-b-stopped-${i}.txt`), `${i}\n`)
    await converged(t, [A, C], 'C to see A\'s writes while B is stopped', d => d.includes('/while-b-stopped-19.txt'))
  } finally {
    process.kill(B.pid, 'SIGCONT')
  }
  fs.writeFileSync(path.join(B.mnt, 'after.txt'), 'after\n')
  const tree = await converged(t, [A, B, C], 'B to catch up and its write to reach the others', d => d.includes('/after.txt') && d.includes('/while-b-stopped-19.txt'))
  t.equal(tree.split('\n').filter(l => l.includes('/while-b-stopped-')).length, 20, 'all 20 of A\'s files')
})

tap.test('membership: a removed writer\'s later changes reach nobody, earlier ones stay', { skip }, async t => {
  const base = tempDir(t, 'reef-view-members-')
  const net = await viewNet(t, base)
  const { A, B, C } = net
  fs.writeFileSync(path.join(B.mnt, 'b-before.txt'), 'before removal\n')
  await converged(t, [A, B, C], 'everyone to see B\'s first file', d => d.includes('/b-before.txt'))
  const removed = await reefCli(A.dataDir, ['view', 'remove', net.view, await keyOf(B.dataDir)])
  t.equal(removed.code, 0, describe(removed))
  fs.writeFileSync(path.join(B.mnt, 'b-after.txt'), 'after removal\n')
  t.equal((await reefCli(B.dataDir, ['sync'])).code, 0)
  await waitFor('B to learn it was removed', async () => /VIEW_REMOVED/.test(String((await statusOf(B)).view?.lastError)), 60_000, 200)
  // A keeps writing, and C keeps following A: B's later file never arrives.
  fs.writeFileSync(path.join(A.mnt, 'a-after.txt'), 'A after the removal\n')
  await converged(t, [A, C], 'C to see A\'s later file', d => d.includes('/a-after.txt'))
  for (const m of [A, C]) {
    t.equal(read(path.join(m.mnt, 'b-before.txt')), 'before removal\n', 'B\'s change from before its removal stays')
    t.notOk(fs.existsSync(path.join(m.mnt, 'b-after.txt')), 'B\'s change from after its removal does not appear')
  }
  t.equal(read(path.join(B.mnt, 'b-after.txt')), 'after removal\n', 'B still has its own change locally')
  const heads = JSON.parse((await reefCli(C.dataDir, ['view', 'heads', net.view, '--json'])).stdout)
  t.same(heads.writers.map((w: { state: string }) => w.state).sort(), ['removed', 'writer'], 'the list has A as writer and B as removed')
})
