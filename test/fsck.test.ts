// `reef fsck`: exit 0 on a clean version; on a damaged store, exactly the damaged blocks (missing,
// corrupt, malformed), each with the paths that reach it, and exit 3; the --json shape; an
// unreadable version root lists the versions still stored.
import t from 'tap'
import path from 'node:path'
import { reef, show, tempDir } from './helpers/cli.js'
import { buildFixture, commitMalformedDir, corruptBlock, deleteBlock, type Fixture } from './helpers/damage.js'

interface Problem { guid: string, problem: string, role: string, code: string, message: string, paths: string[], morePaths: number }
interface Report { vguid: string, seq?: string, blocks: number, problems: Problem[], clean: boolean, storedVersions?: Array<{ seq: string, vguid: string }> }

async function fsckJson (t: Tap.Test, data: string, ...args: string[]): Promise<{ code: number | null, report: Report }> {
  const r = await reef(data, ['fsck', '--json', ...args])
  t.equal(r.stderr, '', `nothing on stderr: ${show(r)}`)
  return { code: r.code, report: JSON.parse(r.out) as Report }
}

t.test('a clean version: exit 0, every block checked, no problems', async t => {
  const data = path.join(tempDir(t), 'data')
  const fx = await buildFixture(data)
  const r = await reef(data, ['fsck'])
  t.equal(r.code, 0, show(r))
  t.match(r.out, new RegExp(`^version ${fx.seq} ${fx.vguid}: \\d+ blocks checked, no problems\\n$`))
  const { code, report } = await fsckJson(t, data)
  t.equal(code, 0)
  t.same(Object.keys(report), ['vguid', 'seq', 'blocks', 'problems', 'clean'], 'the JSON keys, in order')
  t.equal(report.vguid, fx.vguid)
  t.equal(report.seq, String(fx.seq))
  t.same(report.problems, [])
  t.equal(report.clean, true)
  // Directories, the link table, /blob's chunks and the 600-entry /big are all read.
  t.ok(report.blocks >= Object.keys(fx.dirs).length + fx.bigLeaves.length + fx.blobChunks.length + 1, `blocks ${report.blocks}`)
  const older = await reef(data, ['fsck', String(fx.older.seq)])
  t.equal(older.code, 0, `an older version by seq: ${show(older)}`)
  t.match(older.out, `version ${fx.older.seq} ${fx.older.vguid}:`)
})

t.test('a damaged store: exactly the damaged blocks, with their paths, and exit 3', async t => {
  const data = path.join(tempDir(t), 'data')
  const fx = await buildFixture(data)
  t.ok(fx.bigLeaves.length >= 3, `/big has an interior node over ${fx.bigLeaves.length - 1} leaves`)
  t.ok(fx.blobChunks.length >= 2, `/data/blob has ${fx.blobChunks.length} chunks`)
  await corruptBlock(data, fx.dirs['/docs/sub']) // a directory leaf
  await deleteBlock(data, fx.bigLeaves[2]) // one leaf under /big's interior node
  await corruptBlock(data, fx.links) // the link table (one leaf)
  await deleteBlock(data, fx.blobChunks[1]) // a file chunk
  const bad = await commitMalformedDir(data) // /bad: a directory that does not decode

  const human = await reef(data, ['fsck'])
  t.equal(human.code, 3, show(human))
  t.equal(human.stderr, '')
  const lines = human.out.trimEnd().split('\n')
  t.equal(lines.length, 6, `one line per problem and a summary:\n${human.out}`)
  t.match(lines[5], new RegExp(`^version ${bad.seq} ${bad.vguid}: \\d+ blocks checked, 5 problems$`))

  const { code, report } = await fsckJson(t, data)
  t.equal(code, 3)
  t.equal(report.clean, false)
  const byGuid = Object.fromEntries(report.problems.map(p => [p.guid, p]))
  t.same(Object.keys(byGuid).sort(), [fx.dirs['/docs/sub'], fx.bigLeaves[2], fx.links, fx.blobChunks[1], bad.bad].sort(), 'exactly the damaged blocks')
  t.match(byGuid[fx.dirs['/docs/sub']], { problem: 'corrupt', role: 'directory node', code: 'BLOCK_CORRUPT', paths: ['/docs/sub/'] })
  t.match(byGuid[fx.bigLeaves[2]], { problem: 'missing', role: 'directory node', code: 'NOT_FOUND', paths: ['/big/'] })
  t.match(byGuid[fx.blobChunks[1]], { problem: 'missing', role: 'chunk', code: 'NOT_FOUND', paths: ['/data/blob'] })
  t.match(byGuid[bad.bad], { problem: 'malformed', role: 'directory node', code: 'BAD_ENCODING', paths: ['/bad/'] })
  t.match(byGuid[fx.links], { problem: 'corrupt', role: 'link table node', code: 'BLOCK_CORRUPT' })
  t.same(byGuid[fx.links].paths.sort(), ['(link table)', '/links/h1', '/links/orig'], 'the link table with both names that reach it')
  for (const p of report.problems) {
    t.same(Object.keys(p), ['guid', 'problem', 'role', 'code', 'message', 'paths', 'morePaths'], 'the keys of a problem')
    const line = lines.find(l => l.includes(p.guid))
    t.ok(line?.startsWith(p.problem) === true && line.includes(p.paths[0]) && line.endsWith(`[${p.code}]`), `its line: ${line}`)
  }

  // The version before the malformed one has the other four problems, not /bad.
  const prev = await fsckJson(t, data, String(fx.seq))
  t.equal(prev.code, 3)
  t.equal(prev.report.problems.length, 4)
  t.notOk(prev.report.problems.some(p => p.guid === bad.bad))
  // The empty first version shares none of the damaged blocks.
  const first = await reef(data, ['fsck', fx.older.vguid])
  t.equal(first.code, 0, `a VGUID argument, clean: ${show(first)}`)
})

t.test('an unreadable version root: reported, with the versions still stored', async t => {
  const data = path.join(tempDir(t), 'data')
  const fx: Fixture = await buildFixture(data)
  await deleteBlock(data, fx.vguid)
  const human = await reef(data, ['fsck'])
  t.equal(human.code, 3, show(human))
  t.match(human.out, new RegExp(`^missing +version root +${fx.vguid} +\\(version root\\) +\\[NOT_FOUND\\]$`, 'm'))
  t.match(human.out, `version ${fx.seq} ${fx.vguid}: 1 block checked, 1 problem`)
  t.match(human.out, /reef mount DIR --from SEQ/)
  t.match(human.out, new RegExp(`^ +${fx.older.seq} +\\S+ +${fx.older.vguid} +empty$`, 'm'), 'the older version, stored')
  const { code, report } = await fsckJson(t, data)
  t.equal(code, 3)
  t.same(report.storedVersions?.map(v => [v.seq, v.vguid]), [[String(fx.older.seq), fx.older.vguid]], 'the one other version')
  // A seq argument still finds that older version without the head's chain of parents.
  const older = await reef(data, ['fsck', String(fx.older.seq)])
  t.equal(older.code, 0, show(older))
})
