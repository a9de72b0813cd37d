// Shared file systems through real mounts (issue 12): three `reef mount --view` processes on
// loopback, two writers (A owns the view, B is added) and a reader C (not a writer).
//   convergence   concurrent edits to disjoint files on A and B: all three mounts end with the
//                 same tree (every path's kind, mode, size and content hash), and C refuses
//                 writes with EROFS
//   conflict      both writers change one file at once: both versions survive on every mount,
//                 one at the name and one as a `.sync-conflict-` copy, and `reef status` counts it
import tap from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { errnoOf, skipReason, tempDir } from './helpers/mount.js'
import { describe, reefCli, startNetMount, waitFor, type NetMount } from './helpers/cluster.js'

const skip = skipReason()

/** Every path under `dir` (but /.reef, each mount's own history) with kind, mode, size and content hash (files), sorted: one string. */
function treeDigest (dir: string): string {
  const lines: string[] = []
  const walk = (p: string, rel: string): void => {
    for (const name of fs.readdirSync(p).sort()) {
      if (rel === '' && name === '.reef') continue
      const q = path.join(p, name)
      const st = fs.lstatSync(q)
      const r = `${rel}/${name}`
      if (st.isDirectory()) {
        lines.push(`${r}/ dir ${(st.mode & 0o7777).toString(8)}`)
        walk(q, r)
      } else if (st.isFile()) {
        lines.push(`${r} file ${(st.mode & 0o7777).toString(8)} ${st.size} ${crypto.createHash('sha256').update(fs.readFileSync(q)).digest('hex').slice(0, 16)}`)
      } else {
        lines.push(`${r} ${st.isSymbolicLink() ? `symlink ${fs.readlinkSync(q)}` : 'other'}`)
      }
    }
  }
  walk(dir, '')
  return lines.join('\n')
}

const keyOf = async (dataDir: string): Promise<string> => (await reefCli(dataDir, ['id'])).stdout.trim()

interface ViewNet { view: string, A: NetMount, B: NetMount, C: NetMount }

/** A owns view "team" with B as second writer; A, B and C mount it (C: read-only). */
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
  const A = await startNetMount(t, dirs[0], path.join(base, 'mnt-a'), common)
  // A puts the view's list on the network at its first round; B and C find it there.
  await waitFor('A to publish the view', async () => JSON.parse((await reefCli(dirs[0], ['status', '--json'])).stdout).view?.rounds >= 1, 60_000)
  const B = await startNetMount(t, dirs[1], path.join(base, 'mnt-b'), [...common, '--bootstrap', A.addr])
  const C = await startNetMount(t, dirs[2], path.join(base, 'mnt-c'), [...common, '--bootstrap', A.addr])
  return { view, A, B, C }
}

const statusOf = async (m: NetMount): Promise<any> => JSON.parse((await reefCli(m.dataDir, ['status', '--json'])).stdout)

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

  const expected = treeDigest(path.join(A.mnt)) // A's view of its own part is complete already
  t.match(expected, /\/a\/big\.bin file 644 307200/, 'A has its big file')
  await waitFor('A, B and C to show the same tree with both writers\' files', () => {
    const d = [A, B, C].map(m => treeDigest(m.mnt))
    return d[0] === d[1] && d[1] === d[2] && d[0].includes('/b/renamed.txt') && d[0].includes('/a/big.bin')
  }, 90_000, 200).catch(err => { t.fail((err as Error).message) })
  const final = treeDigest(A.mnt)
  t.equal(treeDigest(B.mnt), final, 'B has the same tree as A')
  t.equal(treeDigest(C.mnt), final, 'C has the same tree as A')
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

tap.test('both writers change one file: both versions survive on every mount', { skip }, async t => {
  const base = tempDir(t, 'reef-view-conflict-')
  const { A, B, C } = await viewNet(t, base)
  fs.writeFileSync(path.join(A.mnt, 'notes.txt'), 'base\n')
  await waitFor('B and C to see notes.txt', () => [B, C].every(m => fs.existsSync(path.join(m.mnt, 'notes.txt'))), 60_000, 100)
  // Both change it before either sees the other's change: B is stopped while A writes.
  process.kill(B.pid, 'SIGSTOP')
  try {
    fs.writeFileSync(path.join(A.mnt, 'notes.txt'), 'from A\n')
    await waitFor('A to fold and publish its change', async () => {
      const s = await statusOf(A)
      return s.view.published !== undefined && s.view.published === s.view.ownHead && s.pendingRecords === 0
    }, 60_000, 100)
  } finally {
    process.kill(B.pid, 'SIGCONT')
  }
  // B writes at once on resume: its first ops run before its next merge round looks.
  fs.writeFileSync(path.join(B.mnt, 'notes.txt'), 'from B\n')
  const conflictOf = (m: NetMount): string | undefined => fs.readdirSync(m.mnt).find(n => /^notes\.sync-conflict-\d{8}-\d{6}-[0-9a-f]{8}(-\d+)?\.txt$/.test(n))
  await waitFor('a conflict copy on every mount', () => [A, B, C].every(m => conflictOf(m) !== undefined), 90_000, 200)
  await waitFor('one tree on every mount', () => {
    const d = [A, B, C].map(m => treeDigest(m.mnt))
    return d[0] === d[1] && d[1] === d[2]
  }, 60_000, 200)
  const copy = conflictOf(A) as string
  const both = [fs.readFileSync(path.join(A.mnt, 'notes.txt'), 'utf8'), fs.readFileSync(path.join(A.mnt, copy), 'utf8')].sort()
  t.same(both, ['from A\n', 'from B\n'], `both versions survive: notes.txt and ${copy}`)
  for (const m of [B, C]) {
    t.equal(conflictOf(m), copy, 'the same conflict name everywhere')
    t.equal(fs.readFileSync(path.join(m.mnt, 'notes.txt'), 'utf8'), fs.readFileSync(path.join(A.mnt, 'notes.txt'), 'utf8'), 'the same winner everywhere')
  }
  await waitFor('A to count the open conflict', async () => (await statusOf(A)).view.conflicts === 1, 30_000, 100)
})
