// The reef CLI end to end, as a real child process (node dist/bin/reef.js) against a temp data
// directory: init, put/get of files and trees (bytes, modes, mtimes, symlinks), block put/get,
// history, show, --json on every data command and --help on every command.
import tap, { type Test } from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { CID } from 'multiformats/cid'
import { decodeEntryBlock } from '../src/object/dir.js'
import {
  compareTrees, countTree, errorCode, expectedMtime, lastWord, reef, reefPty, reefShell, SCRIPT_BIN, show, startDaemon, tempDir, utimeArg,
  waitUntil
} from './helpers/cli.js'
import { skipReason as mountSkipReason } from './helpers/mount.js'
import { RUNS_IN } from '../bin/commands.js'
import { startNode } from './helpers/cluster.js'

const sha256 = (b: Uint8Array): Buffer => crypto.createHash('sha256').update(b).digest()

/** Parses --json output: exactly one JSON document on stdout. */
function json (t: Pick<typeof tap, 'equal' | 'fail'>, r: Awaited<ReturnType<typeof reef>>): any {
  t.equal(r.code, 0, `exit 0: ${show(r)}`)
  try {
    return JSON.parse(r.out)
  } catch (err) {
    t.fail(`stdout is not JSON: ${r.out.slice(0, 200)}`)
    return {}
  }
}

const t = tap
const base = tempDir(t)
const data = path.join(base, 'data', 'nested') // init creates missing parents

/**
 * Runs `check` against a fresh data directory, then against one a `reef node` serves, and asserts
 * that the daemon ran `forwarded` of the commands (they went through its control socket).
 */
async function directAndThroughDaemon (t: Test, dir: string, check: (data: string, how: string) => Promise<void>, forwarded: number, what: string): Promise<void> {
  const direct = path.join(dir, 'data-direct')
  t.equal((await reef(direct, ['init'])).code, 0)
  await check(direct, 'direct')
  const served = path.join(dir, 'data-daemon')
  const node = await startNode(t, served, 0)
  const runs = async (): Promise<number> => (await node.control('status')).controlRequests?.run ?? 0
  const before = await runs()
  await check(served, 'daemon')
  t.equal(await runs(), before + forwarded, `the daemon ran ${what} (forwarded)`)
  await node.stop()
}

t.test('init creates the identity and is idempotent', async t => {
  const r1 = await reef(data, ['init'])
  t.equal(r1.code, 0, show(r1))
  const key = path.join(data, 'identity.key')
  const st1 = fs.statSync(key, { bigint: true })
  t.equal(st1.mode & 0o777n, 0o600n, 'key file is 0600')
  t.equal(st1.size, 32n, 'key file holds a 32-byte seed')
  t.ok(fs.statSync(path.join(data, 'store')).isDirectory(), 'store created')
  const keyBytes = fs.readFileSync(key)
  t.match(r1.out, /AGUID \S+/)
  const aguid1 = /AGUID (\S+)/.exec(r1.out)?.[1]

  const r2 = await reef(data, ['init', '--json'])
  const j = json(t, r2)
  t.equal(j.created, false, 'second init reports it created nothing')
  t.equal(j.aguid, aguid1, 'same AGUID')
  t.equal(path.resolve(j.dataDir), path.resolve(data))
  t.type(j.vguid, 'string')
  t.ok(fs.readFileSync(key).equals(keyBytes), 'key bytes unchanged')
  const st2 = fs.statSync(key, { bigint: true })
  t.equal(st2.mtimeNs, st1.mtimeNs, 'key file not rewritten')
  t.equal(st2.ino, st1.ino, 'key file not replaced')
  t.equal(st2.mode & 0o777n, 0o600n, 'key file still 0600')

  // A third data dir with the same key gives a different AGUID only if the name differs.
  const other = path.join(base, 'other')
  const r3 = await reef(other, ['init', '--json'])
  const j3 = json(t, r3)
  t.equal(j3.created, true)
  t.not(j3.aguid, j.aguid, 'a different identity has a different AGUID')
})

t.test('--help on every command, and --json on every command that prints', async t => {
  const cmds = [[], ['init'], ['put'], ['get'], ['block'], ['block', 'put'], ['block', 'get'], ['history'], ['show'],
    ['fsck'], ['conflicts'], ['status'], ['sync'], ['mount'], ['node'], ['checkout'], ['unmount'],
    ['id'], ['view'], ['view', 'create'], ['view', 'add'], ['view', 'remove'], ['view', 'show'], ['view', 'publish'], ['view', 'heads']]
  const printsData = new Set(['init', 'put', 'get', 'block put', 'block get', 'history', 'show', 'fsck', 'conflicts', 'status', 'sync', 'mount', 'node', 'checkout', 'unmount',
    'id', 'view create', 'view add', 'view remove', 'view show', 'view publish', 'view heads'])
  // The top-level help lists every command; each of them must be in the list above.
  const top = await reef(data, ['--help'])
  const listed = [...top.out.matchAll(/^ {2}(\w+)(?: \[options\])?/gm)].map(m => m[1]).filter(c => c !== 'help')
  t.same(listed.filter(c => !cmds.some(x => x[0] === c)), [], 'every command of `reef --help` is checked here')
  t.same(listed.filter(c => RUNS_IN[c] === undefined), [], 'every command says where it runs (bin/commands.ts)')
  t.same(Object.keys(RUNS_IN).filter(c => !listed.includes(c)), [], 'and the table names no command that is gone')
  await Promise.all(cmds.map(async c => {
    const r = await reef(data, [...c, '--help'])
    t.equal(r.code, 0, `${c.join(' ')} --help exits 0: ${show(r)}`)
    t.match(r.out, new RegExp(`Usage: reef ${c.join(' ')}`.trimEnd()), `${c.join(' ')} --help shows its usage`)
    if (printsData.has(c.join(' '))) t.match(r.out, /--json/, `${c.join(' ')} takes --json`)
  }))
})

/** Builds a tree exercising kinds, names, modes and times. Returns the times it set exactly. */
function buildTree (root: string): void {
  fs.mkdirSync(root)
  const p = (...s: string[]): string => path.join(root, ...s)
  fs.mkdirSync(p('sub', 'deeper', 'deepest'), { recursive: true })
  fs.mkdirSync(p('empty-dir'))
  fs.writeFileSync(p('empty-file'), '')
  fs.writeFileSync(p('small.txt'), 'hello reef\n')
  fs.writeFileSync(p('sub', 'binary.bin'), crypto.randomBytes(300_000)) // several chunks
  fs.writeFileSync(p('sub', 'deeper', 'deepest', 'leaf'), 'leaf')
  fs.writeFileSync(p('-starts-with-dash'), 'dash')
  fs.writeFileSync(p('with space and\nnewline'), 'odd name')
  fs.writeFileSync(p('ünïcødé-🐟'), 'unicode')
  fs.writeFileSync(Buffer.from(p('latin1-') + '\xff\xfe', 'latin1'), 'not utf-8') // non-UTF-8 bytes
  fs.writeFileSync(p('x'.repeat(255)), 'long name')
  fs.symlinkSync('small.txt', p('rel-link'))
  fs.symlinkSync('../small.txt', p('sub', 'up-link'))
  fs.symlinkSync('/nonexistent/reef/target', p('abs-dangling'))
  fs.symlinkSync('does-not-exist', p('dangling'))
  fs.symlinkSync('sub/deeper', p('dir-link'))
  fs.chmodSync(p('small.txt'), 0o444)
  fs.chmodSync(p('-starts-with-dash'), 0o755)
  fs.chmodSync(p('empty-file'), 0o600)
  fs.chmodSync(p('sub', 'binary.bin'), 0o700)
  // Explicit times, exact to the microsecond: pre-1970, far future (within 2^33 s), fractional.
  fs.utimesSync(p('empty-file'), utimeArg(-1_234_567_890_123_456_000n), utimeArg(-1_234_567_890_123_456_000n))
  fs.utimesSync(p('small.txt'), utimeArg(7_000_000_000_000_001_000n), utimeArg(7_000_000_000_000_001_000n))
  fs.lutimesSync(p('dangling'), utimeArg(-86_400_000_000_000n), utimeArg(-86_400_000_000_000n))
  fs.chmodSync(p('empty-dir'), 0o555)
  fs.chmodSync(p('sub', 'deeper', 'deepest'), 0o700)
  fs.chmodSync(p('sub', 'deeper'), 0o555)
}

t.test('put and get a tree: bytes, modes, mtimes, symlinks, odd names', async t => {
  const dir = tempDir(t)
  const src = path.join(dir, 'tree')
  buildTree(src)
  const r = await reef(data, ['put', src])
  t.equal(r.code, 0, show(r))
  const guid = lastWord(r)
  t.ok(CID.parse(guid), 'last word of stdout is a GUID')
  t.match(r.out, /9 files/, 'text output counts the files')

  const out = path.join(dir, 'restored')
  const g = await reef(data, ['get', guid, '-o', out])
  t.equal(g.code, 0, show(g))
  t.same(compareTrees(src, out), [], 'restored tree equals the original')
  const c = countTree(out)
  t.same(c, { files: 9, dirs: 5, symlinks: 5, specials: 0 }, 'the comparison covered every entry')

  // The mtime guarantee, checked directly on entries whose original has sub-µs nanoseconds.
  const subUs = ['small.txt', 'sub/binary.bin', 'ünïcødé-🐟', 'sub/deeper/deepest/leaf', 'rel-link']
  for (const f of subUs) {
    const a = fs.lstatSync(path.join(src, f), { bigint: true }).mtimeNs
    const b = fs.lstatSync(path.join(out, f), { bigint: true }).mtimeNs
    t.equal(b, expectedMtime(a), `${f}: mtime restored to the microsecond (${a} -> ${b})`)
  }
  t.equal(fs.lstatSync(path.join(out, 'empty-file'), { bigint: true }).mtimeNs, -1_234_567_890_123_456_000n, 'pre-1970 mtime exact')
  t.equal(fs.lstatSync(path.join(out, 'small.txt'), { bigint: true }).mtimeNs, 7_000_000_000_000_001_000n, 'far-future mtime exact')
  t.equal(fs.lstatSync(path.join(out, 'dangling'), { bigint: true }).mtimeNs, -86_400_000_000_000n, 'symlink mtime exact')
  t.equal(fs.readlinkSync(path.join(out, 'abs-dangling')), '/nonexistent/reef/target', 'dangling absolute link kept verbatim')

  // Determinism: same tree, same GUID; the restored copy (times already whole µs) re-puts to
  // the same GUID once every original time is whole µs too.
  const again = await reef(data, ['put', src])
  t.equal(lastWord(again), guid, 'putting the same tree twice gives the same GUID')

  fs.mkdirSync(path.join(dir, 'r2'))
  const j = json(t, await reef(data, ['get', guid, '-o', path.join(dir, 'r2', 'tree'), '--json']))
  t.equal(j.guid, guid)
  t.equal(j.kind, 'entry')
  t.equal(j.files, 9)
  t.equal(j.symlinks, 5)
  const rt = await reef(data, ['put', path.join(dir, 'r2', 'tree')])
  t.not(lastWord(rt), guid, 'original has sub-µs times the restored copy cannot carry')
  const rt2 = await reef(data, ['put', path.join(dir, 'r2', 'tree'), '--json'])
  const restoredGuid = json(t, rt2).guid
  const r3 = path.join(dir, 'r3')
  fs.mkdirSync(r3)
  t.equal((await reef(data, ['get', restoredGuid, '-o', path.join(r3, 'tree')])).code, 0)
  t.equal(lastWord(await reef(data, ['put', path.join(r3, 'tree')])), restoredGuid,
    'put(get(x)) == x once times are whole µs: the round trip keeps every recorded attribute')
})

t.test('put --json and show of a put GUID', async t => {
  const dir = tempDir(t)
  const src = path.join(dir, 'tree')
  buildTree(src)
  const j = json(t, await reef(data, ['put', src, '--json']))
  t.equal(j.kind, 'dir')
  t.equal(j.files, 9)
  t.equal(j.dirs, 5)
  t.equal(j.symlinks, 5)
  t.same(j.skipped, [])
  t.equal(j.bytes, 300_000 + 11 + 4 + 4 + 8 + 7 + 9 + 9)
  const s = json(t, await reef(data, ['show', j.guid, '--json']))
  const byPath = new Map<string, any>(s.entries.map((e: any) => [e.path, e]))
  t.equal(s.entries.length, 18, 'every entry below the top is listed')
  t.equal(byPath.get('/small.txt')?.mode, '0444')
  t.equal(byPath.get('/small.txt')?.size, 11)
  t.equal(byPath.get('/sub/deeper')?.mode, '0555')
  t.equal(byPath.get('/dangling')?.target, 'does-not-exist')
  t.equal(byPath.get('/empty-file')?.mtime, new Date(-1_234_567_890_124).toISOString())
  t.ok(byPath.has('/with space and\nnewline'), 'odd names listed in JSON exactly')
  // put stores mtimes to the nanosecond (only restoring is limited to microseconds).
  let subUs = 0
  for (const rel of ['small.txt', 'sub/binary.bin', 'ünïcødé-🐟', 'rel-link', 'empty-file', 'sub/deeper']) {
    const ns = fs.lstatSync(path.join(src, rel), { bigint: true }).mtimeNs
    if (ns % 1000n !== 0n) subUs++
    t.equal(byPath.get('/' + rel)?.mtimeNs, ns.toString(), `${rel}: stored mtime is the source's, to the ns`)
  }
  t.ok(subUs >= 2, 'some stored times have sub-microsecond digits (ns really kept)')
  const text = await reef(data, ['show', j.guid])
  t.equal(text.code, 0, show(text))
  t.match(text.out, /\/sub\/deeper\/deepest\/leaf\n/, 'text listing has nested paths')
  t.match(text.out, /\/rel-link -> small\.txt/, 'text listing shows symlink targets')
})

t.test('show --json gives the bytes of names and symlink targets that are not UTF-8', async t => {
  const dir = tempDir(t)
  const src = path.join(dir, 'tree')
  fs.mkdirSync(src)
  const odd = Buffer.from([0x6e, 0xff, 0x2e, 0x74]) // "n\xff.t": not UTF-8
  const srcB = Buffer.from(src)
  fs.mkdirSync(Buffer.concat([srcB, Buffer.from('/d'), odd]))
  fs.writeFileSync(Buffer.concat([srcB, Buffer.from('/d'), odd, Buffer.from('/f')]), 'inside')
  fs.symlinkSync(Buffer.concat([Buffer.from('to-'), odd]), Buffer.concat([srcB, Buffer.from('/link')]))
  fs.writeFileSync(path.join(src, 'plain'), 'x')
  const j = json(t, await reef(data, ['put', src, '--json']))
  const s = json(t, await reef(data, ['show', j.guid, '--json']))
  const bytesOf = (e: any): Buffer => e.pathBase64 !== undefined ? Buffer.from(e.pathBase64, 'base64') : Buffer.from(e.path)
  const paths = s.entries.map(bytesOf)
  t.ok(paths.some((p: Buffer) => p.equals(Buffer.concat([Buffer.from('/d'), odd]))), 'the directory\'s exact bytes')
  t.ok(paths.some((p: Buffer) => p.equals(Buffer.concat([Buffer.from('/d'), odd, Buffer.from('/f')]))), 'a path below it, exact')
  const link = s.entries.find((e: any) => e.path === '/link')
  t.ok(Buffer.from(link?.targetBase64 ?? '', 'base64').equals(Buffer.concat([Buffer.from('to-'), odd])), 'the symlink target\'s exact bytes')
  const plain = s.entries.find((e: any) => e.path === '/plain')
  t.equal(plain?.pathBase64, undefined, 'UTF-8 names carry no base64 copy')
  t.equal(s.entries.filter((e: any) => e.pathBase64 !== undefined).length, 2, 'only the two paths that are not UTF-8 do')
})

t.test('put and get a single file, an empty file and a top-level symlink', async t => {
  const dir = tempDir(t)
  const cases: Array<[string, () => void]> = [
    ['one.bin', () => fs.writeFileSync(path.join(dir, 'one.bin'), crypto.randomBytes(100_000), { mode: 0o640 })],
    ['empty', () => fs.writeFileSync(path.join(dir, 'empty'), '')],
    ['link', () => fs.symlinkSync('../nowhere', path.join(dir, 'link'))]
  ]
  for (const [name, make] of cases) {
    make()
    const r = await reef(data, ['put', path.join(dir, name)])
    t.equal(r.code, 0, show(r))
    const out = path.join(dir, 'out-' + name)
    const g = await reef(data, ['get', lastWord(r), '-o', out])
    t.equal(g.code, 0, show(g))
    t.same(compareTrees(path.join(dir, name), out), [], `${name} restored identically`)
  }
  t.equal(fs.readlinkSync(path.join(dir, 'out-link')), '../nowhere')
})

t.test('block put / block get round-trip binary data', async t => {
  const inputs: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['every byte value', Buffer.from(Array.from({ length: 512 }, (_, i) => i % 256))],
    ['1 MiB random', crypto.randomBytes(1024 * 1024)]
  ]
  for (const [what, bytes] of inputs) {
    const p = await reef(data, ['block', 'put'], { input: bytes })
    t.equal(p.code, 0, show(p))
    const bguid = p.out.trim()
    t.ok(Buffer.from(CID.parse(bguid).multihash.digest).equals(sha256(bytes)), `${what}: BGUID is the sha256 of the bytes`)
    const g = await reef(data, ['block', 'get', bguid])
    t.equal(g.code, 0, show(g))
    t.equal(g.stdout.length, bytes.length, `${what}: length`)
    t.ok(g.stdout.equals(bytes), `${what}: byte-identical`)
    const j = json(t, await reef(data, ['block', 'put', '--json'], { input: bytes }))
    t.equal(j.bguid, bguid, `${what}: --json gives the same BGUID`)
    t.equal(j.size, bytes.length)
    const jg = json(t, await reef(data, ['block', 'get', bguid, '--json']))
    t.equal(jg.bguid, bguid, `${what}: block get --json names the block`)
    t.equal(jg.size, bytes.length)
    t.ok(Buffer.from(jg.base64, 'base64').equals(bytes), `${what}: block get --json carries the bytes (base64)`)
  }
})

t.test('get of a raw block writes its bytes to a file', async t => {
  const dir = tempDir(t)
  const bytes = crypto.randomBytes(5000)
  const bguid = (await reef(data, ['block', 'put'], { input: bytes })).out.trim()
  const g = await reef(data, ['get', bguid, '-o', path.join(dir, 'raw')])
  t.equal(g.code, 0, show(g))
  t.ok(fs.readFileSync(path.join(dir, 'raw')).equals(bytes))
})

t.test('history and show of this file system', async t => {
  const h = await reef(data, ['history'])
  t.equal(h.code, 0, show(h))
  const lines = h.out.trim().split('\n')
  t.equal(lines.length, 1, 'one version after init')
  const [seq, time, vguid, message] = lines[0].trim().split(/\s+/)
  t.equal(seq, '1')
  t.ok(Number.isFinite(Date.parse(time)), 'time is a date')
  t.ok(CID.parse(vguid), 'VGUID parses')
  t.equal(message, 'init')

  const j = json(t, await reef(data, ['history', '--json']))
  const aguid = json(t, await reef(data, ['init', '--json'])).aguid
  t.equal(j.aguid, aguid)
  t.equal(j.versions.length, 1)
  t.equal(j.versions[0].seq, '1')
  t.equal(j.versions[0].vguid, vguid)
  t.equal(j.versions[0].message, 'init')
  t.ok(Math.abs(j.versions[0].time - Date.parse(time)) < 1000)

  const ja = json(t, await reef(data, ['history', aguid, '--json']))
  t.same(ja, j, 'history AGUID == history of this data directory')

  for (const arg of ['1', vguid]) {
    const s = json(t, await reef(data, ['show', arg, '--json']))
    t.equal(s.guid, vguid, `show ${arg} resolves to the VGUID`)
    t.same(s.entries, [], 'the init version is an empty tree')
  }

  // get of the AGUID and of the VGUID restore the (empty) version root.
  const dir = tempDir(t)
  for (const [i, g] of [aguid, vguid].entries()) {
    const r = await reef(data, ['get', g, '-o', path.join(dir, `v${i}`), '--json'])
    const jr = json(t, r)
    t.equal(jr.kind, 'version')
    t.equal(jr.guid, vguid)
    t.same(fs.readdirSync(path.join(dir, `v${i}`)), [])
  }
})

t.test('non-UTF-8 names as put and get arguments, in the CLI and through a daemon', async t => {
  // Node decodes argv as UTF-8 and puts U+FFFD in place of other bytes, so `reef put $'n\xff'`
  // used to look for a file named "n\ufffd" (ENOENT). The shell makes the names (octal escapes);
  // a decoy named by the UTF-8 bytes of U+FFFD catches a put that read the lossy name instead.
  const dir = tempDir(t)
  const at = (...names: string[]): Buffer => Buffer.from(path.join(dir, ...names), 'latin1')
  fs.writeFileSync(at('n\xff'), crypto.randomBytes(70_000))
  fs.mkdirSync(at('d\xfe'))
  fs.writeFileSync(at('d\xfe', 'in\xfa'), 'inside')
  fs.writeFileSync(at('n\xef\xbf\xbd'), 'the decoy: what the lossy name finds')
  const entryName = async (data: string, guid: string): Promise<Buffer> =>
    Buffer.from(decodeEntryBlock(new Uint8Array((await reef(data, ['block', 'get', guid])).stdout)).name)
  // [octal escapes for the shell, the same bytes as latin1]
  const cases = [['n\\377', 'n\xff'], ['d\\376', 'd\xfe']]
  const roundTrip = async (data: string, how: string): Promise<void> => {
    for (const [src, name] of cases) {
      const p = await reefShell(data, `put "$DIR/$(printf '${src}')"`, { env: { DIR: dir } })
      t.equal(p.code, 0, `${how}: put ${src}: ${show(p)}`)
      const guid = lastWord(p)
      t.ok((await entryName(data, guid)).equals(Buffer.from(name, 'latin1')), `${how}: the stored top-level name is the bytes of ${src}`)
      const g = await reefShell(data, `get ${guid} -o "$DIR/$(printf 'o\\375-${src}-${how}')"`, { env: { DIR: dir } })
      t.equal(g.code, 0, `${how}: get -o: ${show(g)}`)
      const restored = at(`o\xfd-${name}-${how}`)
      t.ok(fs.existsSync(restored), `${how}: restored under the exact bytes given to -o`)
      t.same(compareTrees(at(name), restored), [], `${how}: ${src} restored byte-identical`)
      // Relative to the caller's working directory, the same bytes name the same input.
      const rel = await reefShell(data, `put "$(printf '${src}')"`, { cwd: dir })
      t.equal(lastWord(rel), guid, `${how}: a relative non-UTF-8 argument resolves in the caller's directory: ${show(rel)}`)
    }
  }
  // While a daemon serves the data directory, the command line travels as JSON over its control
  // socket: the bytes must travel with it.
  await directAndThroughDaemon(t, dir, roundTrip, 4 * cases.length, 'every put, get and block get')
})

t.test('put shows a progress bar on a terminal, directly and through a daemon, and none on a pipe', async t => {
  if (SCRIPT_BIN === undefined) {
    t.skip('no script(1) (util-linux) to run reef on a pseudo-terminal')
    return
  }
  const dir = tempDir(t)
  const big = path.join(dir, 'big.bin')
  fs.writeFileSync(big, crypto.randomBytes(40 * 1024 * 1024)) // above the 32 MiB threshold
  const small = path.join(dir, 'small.bin')
  fs.writeFileSync(small, crypto.randomBytes(1024 * 1024))
  const BAR = /100% \| 40\/40 MiB \| \d+ MiB\/s/
  const check = async (data: string, how: string): Promise<void> => {
    const tty = await reefPty(data, ['put', big])
    t.equal(tty.code, 0, `${how}, terminal: ${show(tty)}`)
    t.match(tty.out, BAR, `${how}: a terminal sees the bar reach 100%`)
    t.match(tty.out, /file 1 files 0 dirs 0 symlinks 41943040 bytes\r?\n\S+/, `${how}: the result follows the bar`)
    const pipe = await reef(data, ['put', big])
    t.equal(pipe.code, 0, show(pipe))
    t.equal(lastWord(pipe), lastWord({ ...tty, out: tty.out.replace(/\r/g, '') }), `${how}: the same GUID either way`)
    t.equal(pipe.stderr, '', `${how}: no bar when stderr is a pipe`)
    const little = await reefPty(data, ['put', small])
    t.equal(little.code, 0, show(little))
    t.notMatch(little.out, /MiB\/s/, `${how}: no bar for a small input, even on a terminal`)
  }
  // A daemon serving the data directory runs the put; the bar is drawn by the CLI from the
  // progress the daemon streams back over the control socket.
  await directAndThroughDaemon(t, dir, check, 3, 'all three puts')
})

t.test('node, mount and checkout --json print one JSON document; unmount --json too', async t => {
  const dir = tempDir(t)
  const nodeData = path.join(dir, 'data-node')
  const aguid = json(t, await reef(nodeData, ['init', '--json'])).aguid
  const node = startDaemon(t, nodeData, ['node', '--listen', '/ip4/127.0.0.1/tcp/0', '--json'])
  await waitUntil('the node\'s JSON line', () => {
    if (node.exited() !== undefined) throw new Error(`reef node exited: ${node.stderr()}`)
    return node.stdout().endsWith('\n')
  })
  const j = JSON.parse(node.stdout())
  t.equal(node.stdout().trim().split('\n').length, 1, 'one line on stdout')
  t.equal(j.aguid, aguid)
  t.ok(Array.isArray(j.addrs) && j.addrs.length > 0, 'addrs listed')
  for (const a of j.addrs) t.match(a, new RegExp(`^/ip4/127\\.0\\.0\\.1/tcp/\\d+/p2p/${j.peerId}$`), 'a dialable multiaddr of this node')
  const st = json(t, await reef(nodeData, ['status', '--json']))
  t.equal(st.pid, j.pid, 'the node that printed it serves the data directory')
  process.kill(j.pid, 'SIGTERM')
  t.match(await node.waitExit(30_000), { code: 0 }, 'reef node stops on SIGTERM')

  const why = mountSkipReason()
  if (why !== false) {
    t.skip(`mount and checkout: ${why}`)
    return
  }
  // A networked mount: its addresses are in the JSON, not on lines of their own.
  const mntData = path.join(dir, 'data-mount')
  const mnt = path.join(dir, 'mnt')
  const m = startDaemon(t, mntData, ['mount', mnt, '--listen', '/ip4/127.0.0.1/tcp/0', '--json'])
  await waitUntil('the mount\'s JSON line', () => {
    if (m.exited() !== undefined) throw new Error(`reef mount exited: ${m.stderr()}`)
    return m.stdout().endsWith('\n')
  })
  const jm = JSON.parse(m.stdout())
  t.equal(jm.mountpoint, mnt)
  t.equal(jm.readOnly, false)
  t.ok(jm.network?.addrs?.length > 0, 'the network addresses are in the JSON')
  fs.writeFileSync(path.join(mnt, 'f'), 'through the mount')
  // Plain status prints nested values as indented blocks (they printed as [object Object]).
  const plain = await reef(mntData, ['status'])
  t.equal(plain.code, 0, show(plain))
  t.notMatch(plain.out, /\[object Object\]/, 'no value prints as [object Object]')
  t.match(plain.out, /^attrCache:\n(?: {2}.*\n)* {2}getattrs: \d+$/m, 'the attribute cache counters, indented under their name')
  t.match(plain.out, /^network:\n(?: {2}.*\n)* {2}addrs: \/ip4\/127\.0\.0\.1\/tcp\/\d+/m, 'the network block, its addresses on one line')
  const um = json(t, await reef(mntData, ['unmount', mnt, '--json']))
  t.equal(um.unmounted, true)
  t.match(await m.waitExit(60_000), { code: 0 }, 'the mount daemon exits after unmount')
  const seq = json(t, await reef(mntData, ['status', '--json'])).seq

  const co = path.join(dir, 'checkout')
  const c = startDaemon(t, mntData, ['checkout', '1', co, '--json'])
  await waitUntil('the checkout\'s JSON line', () => {
    if (c.exited() !== undefined) throw new Error(`reef checkout exited: ${c.stderr()}`)
    return c.stdout().endsWith('\n')
  })
  const jc = JSON.parse(c.stdout())
  t.equal(c.stdout().trim().split('\n').length, 1, 'one line on stdout')
  t.equal(jc.mountpoint, co)
  t.equal(jc.readOnly, true)
  t.equal(jc.seq, '1', 'version 1 is mounted')
  t.not(jc.seq, seq, 'not the current version')
  t.notOk(fs.readdirSync(co).includes('f'), 'version 1 is from before the file was written')
  const uc = json(t, await reef(mntData, ['unmount', co, '--json']))
  t.same({ unmounted: uc.unmounted, mountpoint: uc.mountpoint }, { unmounted: true, mountpoint: co })
  t.match(await c.waitExit(60_000), { code: 0 }, 'the checkout daemon exits after unmount')
})
