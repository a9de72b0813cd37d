// Damage stays local: with blocks of the local store corrupted or deleted (a directory leaf, a
// leaf under an interior directory node, the link table, a file chunk, the root directory, the
// version root), the mount starts, the damaged subtree answers EIO with one log line naming its
// path and GUID, the rest is served, a fold keeps the damaged links as they were, a replay after
// kill -9 says what it skipped, and `mount --from` gets back to a good version.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { ReefNode } from '../src/node.js'
import { describe, errnoOf, reef, skipReason, startMount, tempDir, waitFor } from './helpers/mount.js'
import { buildFixture, corruptBlock, deleteBlock } from './helpers/damage.js'

interface Problem { guid: string, problem: string, paths: string[] }

async function status (dataDir: string): Promise<Record<string, unknown> & { seq: string, vguid: string, replaySkipped: number, pendingRecords: number, damagedDirs: Array<{ path: string, guid: string }>, controlRequests: Record<string, number> }> {
  const r = await reef(dataDir, 'status', '--json')
  if (r.code !== 0) throw new Error(describe(r))
  return JSON.parse(r.stdout)
}

/** The current version's seq, VGUID and first parent, read from the store (no daemon running). */
async function head (dataDir: string): Promise<{ seq: bigint, vguid: string, parent?: string, message?: string }> {
  const node = await ReefNode.open(dataDir)
  try {
    const v = await node.currentVersion()
    if (v === undefined) throw new Error('no version')
    return { seq: v.root.seq, vguid: v.vguid.toString(), parent: v.root.parents[0]?.toString(), message: v.root.message }
  } finally {
    await node.close()
  }
}

const damageLines = (log: string): string[] => log.split('\n').filter(l => l.includes('damaged directory'))

const skip = skipReason()
if (skip !== false) {
  t.plan(0, skip)
} else {
  t.test('a damaged store mounts: the damage answers EIO, the rest is served, a fold keeps the damaged links', async t => {
    const base = tempDir(t)
    const dataDir = path.join(base, 'data')
    const mnt = path.join(base, 'mnt')
    const fx = await buildFixture(dataDir)
    await corruptBlock(dataDir, fx.dirs['/docs/sub'])
    await deleteBlock(dataDir, fx.bigLeaves[2])
    await corruptBlock(dataDir, fx.links)
    await deleteBlock(dataDir, fx.blobChunks[1])
    const m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    const p = (rel: string): string => path.join(mnt, rel)

    for (let i = 0; i < 3; i++) t.equal(errnoOf(() => fs.readdirSync(p('docs/sub'))), 'EIO', 'a corrupt directory leaf: EIO, every time')
    t.equal(errnoOf(() => fs.statSync(p('docs/sub/b.txt'))), 'EIO', 'and a path below it')
    t.equal(errnoOf(() => fs.readdirSync(p('big'))), 'EIO', 'a missing leaf under an interior node')
    t.equal(errnoOf(() => fs.statSync(p('big/f000'))), 'EIO')
    t.equal(errnoOf(() => fs.readdirSync(p('links'))), 'EIO', 'a corrupt link table: the directory of its names')
    t.equal(errnoOf(() => fs.readFileSync(p('data/blob'))), 'EIO', 'a missing chunk: its file')

    t.same(fs.readdirSync(mnt).sort(), ['.reef', 'big', 'data', 'docs', 'links', 'other'], 'the root lists')
    t.same(fs.readdirSync(p('docs')).sort(), ['a.txt', 'sub'], 'the damaged directory\'s parent lists')
    t.equal(fs.readFileSync(p('docs/a.txt'), 'utf8'), 'alpha\n', 'a sibling reads')
    t.equal(fs.readFileSync(p('data/small'), 'utf8'), 'small\n', 'the damaged file\'s sibling reads')
    t.equal(fs.readFileSync(p('other/x'), 'utf8'), 'x\n', 'another subtree reads')
    t.ok(fs.statSync(p('docs/sub')).isDirectory(), 'the damaged directory itself stats')

    const expected: Record<string, string> = { '/docs/sub': fx.dirs['/docs/sub'], '/big': fx.bigLeaves[2], '/links': fx.links }
    await waitFor('three damage lines', () => damageLines(m.stderr()).length >= 3)
    const lines = damageLines(m.stderr())
    t.equal(lines.length, 3, `one line per damaged block, however often it is read:\n${lines.join('\n')}`)
    for (const [dir, guid] of Object.entries(expected)) {
      t.equal(lines.filter(l => l.includes(`damaged directory ${dir}: block ${guid} `)).length, 1, `${dir}: its path and GUID`)
    }
    t.notMatch(m.stderr(), /(readdir|lookup|getattr): DAMAGED/, 'readers of known damage are not logged again')
    t.same(m.unexpected(), [], 'nothing unexpected')

    // Writes elsewhere, and a change of the damaged directory's own attributes, fold.
    fs.writeFileSync(p('other/new.txt'), 'new\n')
    fs.mkdirSync(p('docs/more'))
    fs.chmodSync(p('docs/sub'), 0o700)
    const sync = await reef(dataDir, 'sync')
    t.equal(sync.code, 0, describe(sync))
    const st = await status(dataDir)
    t.equal(BigInt(st.seq), fx.seq + 1n, 'a new version')
    t.same(st.damagedDirs.map(d => d.path).sort(), ['/big', '/docs/sub', '/links'])
    t.equal((fs.statSync(p('docs/sub')).mode & 0o777), 0o700)

    // The new version still links the damaged blocks, at the same paths: nothing was rewritten.
    const before = st.controlRequests.run ?? 0
    const r = await reef(dataDir, 'fsck', '--json')
    t.equal(r.code, 3, describe(r))
    const report = JSON.parse(r.stdout) as { seq: string, problems: Problem[] }
    t.equal(report.seq, st.seq, 'fsck checked the new version')
    const byGuid = Object.fromEntries(report.problems.map(q => [q.guid, q]))
    t.same(Object.keys(byGuid).sort(), [...Object.values(expected), fx.blobChunks[1]].sort(), 'the same damaged blocks, no others')
    t.same(byGuid[fx.dirs['/docs/sub']].paths, ['/docs/sub/'], 'the damaged leaf is still /docs/sub\'s tree')
    t.same(byGuid[fx.bigLeaves[2]].paths, ['/big/'])
    t.same(byGuid[fx.blobChunks[1]].paths, ['/data/blob'])
    t.equal((await status(dataDir)).controlRequests.run, before + 1, 'fsck ran inside the daemon')
    t.equal(fs.readFileSync(p('other/new.txt'), 'utf8'), 'new\n')

    // The block arriving later (here: the flipped byte flipped back) heals its directory.
    await corruptBlock(dataDir, fx.dirs['/docs/sub'])
    t.same(fs.readdirSync(p('docs/sub')), ['b.txt'], 'readable again')
    t.equal(fs.readFileSync(p('docs/sub/b.txt'), 'utf8'), 'beta\n')
    t.notOk((await status(dataDir)).damagedDirs.some(d => d.path === '/docs/sub'), 'no longer damaged')
    t.equal((await m.stop()).code, 0)
  })

  t.test('after a kill -9, replay skips only the records inside the damage, and says so', async t => {
    const base = tempDir(t)
    const dataDir = path.join(base, 'data')
    const mnt = path.join(base, 'mnt')
    const fx = await buildFixture(dataDir)
    let m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    fs.writeFileSync(path.join(mnt, 'docs/sub/new.txt'), 'lost with its directory\n')
    fs.writeFileSync(path.join(mnt, 'other/y'), 'y\n')
    fs.mkdirSync(path.join(mnt, 'other/z'))
    t.ok((await status(dataDir)).pendingRecords >= 4, 'the writes are only in the log')
    await m.kill9()
    await corruptBlock(dataDir, fx.dirs['/docs/sub'])

    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    const skipped = m.stderr().split('\n').filter(l => l.includes('log replay: skipped record'))
    const st = await status(dataDir)
    t.ok(st.replaySkipped >= 2, `records skipped: ${st.replaySkipped}`)
    t.equal(skipped.length, st.replaySkipped, `one line per skipped record:\n${skipped.join('\n')}`)
    t.match(skipped[0], /skipped record \d+ \(create inode \d+ in directory inode \d+ "new\.txt"\): directory \/docs\/sub is damaged: block \S+ is corrupt/, 'the create, and why')
    for (const l of skipped.slice(1)) t.match(l, /inode \d+ is not in the tree \(removed before the crash, or inside a damaged directory: 1 found\)/, 'what followed it, and why')
    t.match(m.stderr(), new RegExp(`log replay: ${st.replaySkipped} records skipped, \\d+ applied`))
    t.equal(fs.readFileSync(path.join(mnt, 'other/y'), 'utf8'), 'y\n', 'the records outside the damage applied')
    t.ok(fs.statSync(path.join(mnt, 'other/z')).isDirectory())
    t.equal(errnoOf(() => fs.readdirSync(path.join(mnt, 'docs/sub'))), 'EIO')
    t.same(m.unexpected(), [])
  })

  t.test('a damaged root directory still mounts, and .reef/versions lists the versions', async t => {
    const base = tempDir(t)
    const dataDir = path.join(base, 'data')
    const mnt = path.join(base, 'mnt')
    const fx = await buildFixture(dataDir)
    await corruptBlock(dataDir, fx.dirs['/'])
    const m = await startMount(t, { dataDir, mnt })
    t.equal(errnoOf(() => fs.readdirSync(mnt)), 'EIO', 'the root answers EIO')
    t.equal(errnoOf(() => fs.statSync(path.join(mnt, 'docs'))), 'EIO')
    const versions = fs.readdirSync(path.join(mnt, '.reef', 'versions'))
    t.ok(versions.includes(String(fx.seq)) && versions.includes(String(fx.older.seq)), `versions listed: ${versions.join(' ')}`)
    t.same(fs.readdirSync(path.join(mnt, '.reef', 'versions', String(fx.older.seq))), [], 'the older (empty) version reads')
    await waitFor('the damage line', () => damageLines(m.stderr()).length > 0)
    t.match(damageLines(m.stderr())[0], new RegExp(`damaged directory /: block ${fx.dirs['/']} is corrupt`))
  })

  t.test('an unreadable version root: mount refuses and names the way back; --from continues from a good version', async t => {
    const base = tempDir(t)
    const dataDir = path.join(base, 'data')
    const mnt = path.join(base, 'mnt')
    const fx = await buildFixture(dataDir)
    let m = await startMount(t, { dataDir, mnt })
    fs.writeFileSync(path.join(mnt, 'other/late'), 'late\n')
    await m.stop()
    const v3 = await head(dataDir)
    t.equal(v3.seq, fx.seq + 1n)
    await deleteBlock(dataDir, v3.vguid)

    const refused = await reef(dataDir, 'mount', mnt)
    t.not(refused.code, 0, 'mount refuses')
    t.match(refused.stderr, new RegExp(`version root of version ${v3.seq} \\(${v3.vguid}\\) cannot be read.*reef fsck.*reef mount DIR --from VERSION.*\\[NOT_FOUND\\]`), describe(refused))

    m = await startMount(t, { dataDir, mnt, extraArgs: ['--from', String(fx.seq)] })
    t.equal(fs.readFileSync(path.join(mnt, 'docs/a.txt'), 'utf8'), 'alpha\n', 'the tree of the chosen version')
    t.equal(errnoOf(() => fs.statSync(path.join(mnt, 'other/late'))), 'ENOENT', 'without what only the lost version had')
    fs.writeFileSync(path.join(mnt, 'other/after'), 'after\n')
    await m.stop()
    const now = await head(dataDir)
    t.equal(now.seq, v3.seq + 2n, 'the version continued from, then the write')
    const node = await ReefNode.open(dataDir)
    try {
      const cur = await node.currentVersion()
      if (cur?.root.parents[0] === undefined) throw new Error('no parent')
      const first = await node.version(cur.root.parents[0])
      t.equal(first.root.seq, v3.seq + 1n)
      t.equal(first.root.message, `from version ${fx.seq}`)
      t.equal(first.root.parents[0]?.toString(), v3.vguid, 'its parent is the head it follows, even unreadable')
      t.equal(first.root.parents[1]?.toString(), fx.vguid, 'and its second parent the version it started from')
    } finally {
      await node.close()
    }
    const hist = await reef(dataDir, 'history', '--json')
    t.equal(hist.code, 0, describe(hist))
    const seqs = (JSON.parse(hist.stdout) as { versions: Array<{ seq: string }> }).versions.map(v => v.seq)
    t.same(seqs.slice(-4), [String(v3.seq + 2n), String(v3.seq + 1n), String(fx.seq), String(fx.older.seq)], 'history goes on past the unreadable head, through the version started from')
    const clean = await reef(dataDir, 'fsck')
    t.equal(clean.code, 0, `the new head is clean: ${describe(clean)}`)
  })

  t.test('--from an older version: head + 1 with that tree, unfolded records replayed where they apply', async t => {
    const base = tempDir(t)
    const dataDir = path.join(base, 'data')
    const mnt = path.join(base, 'mnt')
    const fx = await buildFixture(dataDir)
    let m = await startMount(t, { dataDir, mnt })
    fs.rmSync(path.join(mnt, 'docs/a.txt'))
    fs.writeFileSync(path.join(mnt, 'other/late'), 'late\n')
    await m.stop()
    const v3 = await head(dataDir)
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    fs.appendFileSync(path.join(mnt, 'other/late'), 'more\n')
    fs.writeFileSync(path.join(mnt, 'other/pending'), 'pending\n')
    await m.kill9()

    m = await startMount(t, { dataDir, mnt, extraArgs: ['--from', fx.vguid] })
    t.match(m.stderr(), new RegExp(`continuing from version ${fx.seq} \\(${fx.vguid}\\)`))
    t.equal(fs.readFileSync(path.join(mnt, 'docs/a.txt'), 'utf8'), 'alpha\n', 'what the chosen version had is back')
    t.equal(errnoOf(() => fs.statSync(path.join(mnt, 'other/late'))), 'ENOENT', 'what it did not have is not')
    t.equal(fs.readFileSync(path.join(mnt, 'other/pending'), 'utf8'), 'pending\n', 'an unfolded record that applies to it is replayed')
    const skipped = m.stderr().split('\n').filter(l => l.includes('log replay: skipped record'))
    t.ok(skipped.length >= 1 && skipped.every(l => /\((write|setattr|truncate) inode (\d+)\): inode \2 is not in the tree/.test(l)), `the write to a file it lacks is skipped and reported:\n${skipped.join('\n')}`)
    const st = await status(dataDir)
    t.equal(BigInt(st.seq), v3.seq + 1n, 'recorded at once as head + 1')
    await m.stop()
    const now = await head(dataDir)
    const node = await ReefNode.open(dataDir)
    try {
      let v = await node.currentVersion()
      while (v !== undefined && v.root.seq > v3.seq + 1n) v = await node.version(v.root.parents[0])
      t.equal(v?.root.parents[0]?.toString(), v3.vguid, 'its parent is the head')
      t.equal(v?.root.parents[1]?.toString(), fx.vguid, 'its second parent the version it started from')
      t.equal(v?.root.message, `from version ${fx.seq}`)
    } finally {
      await node.close()
    }
    const hist = await reef(dataDir, 'history', '--json')
    const seqs = (JSON.parse(hist.stdout) as { versions: Array<{ seq: string }> }).versions.map(v => v.seq)
    t.same(seqs.slice(-3), [String(v3.seq), String(fx.seq), String(fx.older.seq)], 'history keeps every version')
    t.ok(now.seq >= v3.seq + 1n)
  })
}
