// reef conflicts: the open conflicts a merge of two writers left in a data directory's current
// version, as JSON and as text; deleting the conflict copy (a new version) takes it off the list.
import t from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ReefNode } from '../src/node.js'
import { ROOT_INO } from '../src/fs/inode.js'
import type { VersionInfo } from '../src/fs/fs.js'
import { isConflictName, merge } from '../src/merge/index.js'
import { reef } from './helpers/cli.js'
import { cred, enc, hex, writers } from './helpers/writers.js'

t.test('reef conflicts lists what a merge left open, and deleting the copy resolves it', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-conflicts-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  ReefNode.init(dir)
  let node = await ReefNode.open(dir)
  const ws = await writers(t, async s => {
    const f = await s.fs.create(ROOT_INO, enc('notes.txt'), 0o644, cred)
    await s.fs.write(f.ino, 0, enc('base text'))
  }, node.store)
  const [a, b] = [await ws.writer('a'), await ws.writer('b')]
  for (const w of [a, b]) {
    const n = await w.fs.resolve('/notes.txt')
    await w.fs.truncate(n.ino, 0)
    await w.fs.write(n.ino, 0, enc(`version of ${w.label}`))
  }
  const out = await merge({ store: ws.store, base: ws.base, writers: [await ws.input(a), await ws.input(b)] })
  await node.adopt(out.version)
  await node.close()

  const json = await reef(dir, ['conflicts', '--json'])
  t.equal(json.code, 0, `exit 0: ${json.stderr}`)
  const got = JSON.parse(json.stdout) as { vguid: string, conflicts: Array<{ path: string, kind: string, original: string, writers: string[], versions: string[] }> }
  t.equal(got.vguid, out.version.vguid.toString(), 'the current version')
  t.equal(got.conflicts.length, 1, 'one open conflict')
  const c = got.conflicts[0]
  t.ok(isConflictName(enc(path.basename(c.path))) && c.path.startsWith('/notes.sync-conflict-'), `a conflict copy beside the original: ${c.path}`)
  t.same([c.kind, c.original, [...c.writers].sort()], ['content', '/notes.txt', [hex(a.key), hex(b.key)].sort()], 'kind, original and both writers')
  t.equal(c.versions.length, 2, 'both writers\' head versions')
  const text = await reef(dir, ['conflicts'])
  t.match(text.stdout, new RegExp(`^content +${c.path.replace(/[.]/g, '\\.')} +\\(beside /notes\\.txt\\) +writers [0-9a-f]{8}, [0-9a-f]{8}\\n?$`), `text: ${text.stdout}`)

  // A writer carrying on from the merge deletes the copy: the next version has no open conflict.
  node = await ReefNode.open(dir)
  const r = await (await writers(t, undefined, node.store)).writer('c', out.version)
  await r.fs.unlink(ROOT_INO, enc(c.path.slice(1)))
  await node.adopt(await r.fs.fold() as VersionInfo)
  await node.close()
  const after = await reef(dir, ['conflicts', '--json'])
  t.same(JSON.parse(after.stdout).conflicts, [], 'deleting the copy resolved it')
  t.equal(String((await reef(dir, ['conflicts'])).stdout).trim(), 'no open conflicts')
  t.equal((await reef(dir, ['conflicts', String(out.version.root.seq)])).code, 0, 'an older version by its seq still lists')
})
