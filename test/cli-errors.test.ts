// The reef CLI on bad input: every failure exits non-zero with one short line on stderr ending
// in a bracketed error code, prints nothing on stdout, leaves no partial target behind, and
// changes nothing stored (every block key and every head record compared before and after).
import tap from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { exitCodeFor } from '../bin/program.js'
import {
  type CliResult, dirDigest, errorCode, lastWord, overwriteBlock, reef, show, storeSnapshot, tempDir
} from './helpers/cli.js'

const t = tap
const base = tempDir(t)
const data = path.join(base, 'data')
const work = path.join(base, 'work')
fs.mkdirSync(work)

/** A well-formed GUID of the same codec as `like` whose block exists nowhere. */
function absent (codec: number): string {
  return CID.createV1(codec, Digest.create(0x12, crypto.randomBytes(32))).toString()
}

type Test = typeof tap

/** Asserts the failure shape every bad command must have (`code`: the one expected, or any of several). */
function failed (t: Test, r: CliResult, code: string | string[], exit = 1): void {
  t.equal(r.code, exit, `exit ${exit}: ${show(r)}`)
  if (Array.isArray(code)) t.ok(code.includes(errorCode(r) ?? ''), `error code one of [${code.join('], [')}]: ${show(r)}`)
  else t.equal(errorCode(r), code, `error code [${code}]: ${show(r)}`)
  t.equal(r.stdout.length, 0, 'nothing on stdout')
  const lines = r.stderr.trim().split('\n')
  t.equal(lines.length, 1, `one line on stderr: ${r.stderr}`)
  t.ok(lines[0].length < 300, 'a short message')
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
}

t.test('commands need an initialized data directory', async t => {
  const none = path.join(base, 'never-initialized')
  for (const args of [['put', work], ['get', absent(0x71), '-o', path.join(base, 'x')], ['history'], ['show', '1'], ['block', 'get', absent(0x55)]]) {
    failed(t, await reef(none, args), 'NO_IDENTITY')
  }
  t.notOk(fs.existsSync(path.join(base, 'x')))
})

let guid = '' // a stored tree whose last file spans several chunks
let fileGuid = ''
let entryDigest: Uint8Array
let before: Awaited<ReturnType<typeof storeSnapshot>>

t.test('setup: init and put a tree', async t => {
  t.equal((await reef(data, ['init'])).code, 0)
  const src = path.join(work, 'tree')
  fs.mkdirSync(path.join(src, 'b-dir'), { recursive: true })
  fs.writeFileSync(path.join(src, 'a-first'), 'restored before the corrupt file')
  fs.writeFileSync(path.join(src, 'b-dir', 'inner'), 'also restored before')
  fs.writeFileSync(path.join(src, 'z-big'), crypto.randomBytes(700_000))
  const r = await reef(data, ['put', src])
  t.equal(r.code, 0, show(r))
  guid = lastWord(r)
  const s = JSON.parse((await reef(data, ['show', guid, '--json'])).out)
  fileGuid = s.entries.find((e: { path: string }) => e.path === '/z-big').guid
  t.ok(fileGuid, 'show --json names the big file\'s tree')
  entryDigest = CID.parse(guid).multihash.digest
  before = await storeSnapshot(data)
  t.ok(before.blocks.length > 5, 'blocks stored')
  t.equal(before.heads.length, 1, 'one head (from init)')
})

const unchanged = async (t: Test, what: string): Promise<void> => {
  t.same(await storeSnapshot(data), before, `${what}: store unchanged (block keys and heads)`)
}

t.test('missing or unreadable path for put', async t => {
  failed(t, await reef(data, ['put', path.join(work, 'does-not-exist')]), 'BAD_INPUT')
  failed(t, await reef(data, ['put', path.join(work, 'tree', 'a-first', 'below-a-file')]), 'BAD_INPUT')
  failed(t, await reef(data, ['put']), 'BAD_INPUT', 2) // usage error
  failed(t, await reef(data, ['put', '--no-such-option', work]), 'BAD_INPUT', 2)
  failed(t, await reef(data, ['no-such-command']), 'BAD_INPUT', 2)
  failed(t, await reef(data, ['get', guid]), 'BAD_INPUT', 2) // -o is required
  await unchanged(t, 'bad put')
})

t.test('put of an input that cannot be read: a coded error naming it, no head changed', async t => {
  // /proc/1/mem cannot be read even by root (open: EACCES without ptrace rights, read: EIO at
  // an unmapped address): nothing is stored at all.
  const r = await reef(data, ['put', '/proc/1/mem'])
  failed(t, r, ['BAD_INPUT', 'IO'])
  t.match(r.stderr, /cannot read \/proc\/1\/mem: E[A-Z]+/, 'the message names the file and the errno')
  await unchanged(t, 'unreadable file')

  // A tree that fails part-way: procfs refuses to read its write-only sysctls (mode 0200) to
  // root too, and /proc/sys/vm lists readable ones before them. Blocks of what was read before
  // the failure may stay (unreferenced; see src/transfer/put.ts); no head may change, no block go.
  const vm = '/proc/sys/vm'
  const names = fs.existsSync(vm) ? fs.readdirSync(vm) : []
  const writeOnly = names.findIndex(n => (fs.statSync(path.join(vm, n)).mode & 0o444) === 0)
  if (writeOnly <= 0) {
    t.skip(`${vm} has no write-only sysctl after a readable one on this kernel`)
    return
  }
  const copy = path.join(tempDir(t), 'data')
  fs.cpSync(data, copy, { recursive: true })
  const was = await storeSnapshot(copy)
  const rt = await reef(copy, ['put', vm])
  failed(t, rt, ['BAD_INPUT', 'IO'])
  t.match(rt.stderr, new RegExp(`cannot read ${vm}/[a-z_]+: E[A-Z]+`), 'the message names the file that failed')
  const now = await storeSnapshot(copy)
  t.same(now.heads, was.heads, 'no head changed')
  t.same(was.blocks.filter(b => !now.blocks.includes(b)), [], 'no block removed')
  // Each small file read before the failure is one chunk and one file-tree node at most.
  t.ok(now.blocks.length - was.blocks.length <= 2 * writeOnly, `only the blocks of the files read before the failure stay (${now.blocks.length - was.blocks.length})`)
})

t.test('malformed GUIDs', async t => {
  const entry = CID.parse(guid)
  const malformed = [
    'zzz',
    '',
    ' ',
    guid.slice(0, -3), // truncated
    guid.slice(0, -1) + (guid.endsWith('a') ? 'b' : 'a') + 'x', // bad length
    'QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG', // CIDv0
    CID.createV1(0x71, Digest.create(0x13, entry.multihash.digest)).toString(), // sha512 code, 32 bytes
    'bafkqaaa', // identity multihash
    '-rf'
  ]
  const commands = (g: string): string[][] => [['get', g, '-o', path.join(work, 'never')], ['block', 'get', g], ['show', g], ['history', g]]
  // Every command with one malformed GUID, then each malformed GUID with one command in turn.
  const cases = [...commands('zzz'), ...malformed.map((g, i) => commands(g)[i % 4])]
  const results = await Promise.all(cases.map(async args => ({ args, r: await reef(data, args) })))
  for (const { args, r } of results) {
    if (args.includes('-rf')) {
      // Looks like an option: a usage error rather than a GUID error; either way it fails.
      t.not(r.code, 0, `${args.join(' ')}: ${show(r)}`)
      t.ok(errorCode(r) === 'BAD_INPUT' || errorCode(r) === 'BAD_GUID', show(r))
      continue
    }
    failed(t, r, 'BAD_GUID')
  }
  // history wants an AGUID, not a block GUID.
  failed(t, await reef(data, ['history', guid]), 'BAD_GUID')
  t.notOk(fs.existsSync(path.join(work, 'never')), 'no target created')
  await unchanged(t, 'malformed GUIDs')
})

t.test('well-formed but unknown GUIDs', async t => {
  const aguid = JSON.parse((await reef(data, ['init', '--json'])).out).aguid as string
  const otherAguid = CID.createV1(CID.parse(aguid).code, Digest.create(0x12, crypto.randomBytes(32))).toString()
  failed(t, await reef(data, ['get', absent(0x71), '-o', path.join(work, 'never')]), 'NOT_FOUND')
  failed(t, await reef(data, ['get', absent(0x55), '-o', path.join(work, 'never')]), 'NOT_FOUND')
  failed(t, await reef(data, ['get', otherAguid, '-o', path.join(work, 'never')]), 'NOT_FOUND')
  failed(t, await reef(data, ['block', 'get', absent(0x55)]), 'NOT_FOUND')
  failed(t, await reef(data, ['show', absent(0x71)]), 'NOT_FOUND')
  failed(t, await reef(data, ['show', '999']), 'NOT_FOUND')
  failed(t, await reef(data, ['history', otherAguid]), 'NOT_FOUND')
  t.notOk(fs.existsSync(path.join(work, 'never')), 'no target created')
  await unchanged(t, 'unknown GUIDs')
})

t.test('unwritable or existing targets', async t => {
  const existing = path.join(work, 'existing')
  fs.writeFileSync(existing, 'keep me')
  const existingDir = path.join(work, 'existing-dir')
  fs.mkdirSync(existingDir)
  const dangling = path.join(work, 'dangling-link')
  fs.symlinkSync('nowhere', dangling)
  failed(t, await reef(data, ['get', guid, '-o', existing]), 'BAD_INPUT')
  t.equal(fs.readFileSync(existing, 'utf8'), 'keep me', 'existing file untouched')
  failed(t, await reef(data, ['get', guid, '-o', existingDir]), 'BAD_INPUT')
  t.same(fs.readdirSync(existingDir), [], 'existing (empty) dir untouched')
  failed(t, await reef(data, ['get', guid, '-o', dangling]), 'BAD_INPUT')
  t.equal(fs.readlinkSync(dangling), 'nowhere', 'a dangling symlink is an existing target too')
  failed(t, await reef(data, ['get', guid, '-o', path.join(existing, 'below-a-file')]), 'BAD_INPUT')
  failed(t, await reef(data, ['get', guid, '-o', path.join(work, 'no', 'such', 'parent')]), 'BAD_INPUT')
  // Targets no one may write, root included: procfs creates no files (ENOENT, with /proc an
  // existing directory), sysfs refuses them (EACCES), and a directory below a file (ENOTDIR).
  for (const [target, code] of [['/proc/reef-cli-test', 'IO'], ['/sys/reef-cli-test', 'IO'], ['/etc/passwd/x', 'BAD_INPUT']] as const) {
    if (!fs.existsSync(path.dirname(target))) continue
    const r = await reef(data, ['get', guid, '-o', target])
    failed(t, r, code)
    t.match(r.stderr, target, `the message names ${target}`)
    t.notOk(fs.existsSync(target), `${target} not created`)
  }
  if (process.getuid?.() !== 0) {
    const ro = path.join(work, 'read-only')
    fs.mkdirSync(ro, { mode: 0o555 })
    failed(t, await reef(data, ['get', guid, '-o', path.join(ro, 'x')]), 'IO')
    fs.chmodSync(ro, 0o755)
    fs.rmdirSync(ro)
  }
  t.same(fs.readdirSync(work).sort(), ['dangling-link', 'existing', 'existing-dir', 'tree'], 'no temp files left in the target\'s parent')
  await unchanged(t, 'bad targets')
})

t.test('an error that is no ReefError still ends in a code', async t => {
  const lines: string[] = []
  const ctx = { err: (s: string) => { lines.push(s) } }
  const errno = Object.assign(new Error('EACCES: permission denied, open \'/x\''), { code: 'EACCES', syscall: 'open' })
  t.equal(exitCodeFor(errno, ctx), 1)
  t.equal(exitCodeFor(new TypeError('undefined is not a function'), ctx), 1)
  t.same(lines, [
    'reef: EACCES: permission denied, open \'/x\' [IO]\n',
    'reef: internal error: undefined is not a function [INTERNAL]\n'
  ])
})

t.test('bad network options of node and mount are refused before anything starts', async t => {
  const mnt = path.join(work, 'never-mounted')
  fs.mkdirSync(mnt, { recursive: true })
  for (const [opt, value] of [['--fetch-deadline', 'abc'], ['--fetch-deadline', '0'], ['--k', '0'], ['--repair-interval', '-1']]) {
    failed(t, await reef(data, ['node', '--listen', '/ip4/127.0.0.1/tcp/0', opt, value]), 'BAD_INPUT')
    failed(t, await reef(data, ['mount', mnt, '--listen', '/ip4/127.0.0.1/tcp/0', opt, value]), 'BAD_INPUT')
  }
  t.equal(fs.readdirSync(mnt).length, 0, 'nothing was mounted')
  fs.rmdirSync(mnt)
  await unchanged(t, 'bad network options')
})

t.test('block put refuses a block over the size limit', async t => {
  failed(t, await reef(data, ['block', 'put'], { input: Buffer.alloc(2 * 1024 * 1024 + 1, 7) }), 'BLOCK_TOO_LARGE')
  await unchanged(t, 'oversized block')
})

t.test('a corrupt block fails get with BLOCK_CORRUPT and leaves no partial target', async t => {
  // Corrupt one data chunk in the middle of the last file restored (z-big sorts last).
  type FileNode = { t: string, h: number, l: Array<[CID, number]> }
  const readNode = async (g: string): Promise<FileNode> => dagCbor.decode(Buffer.from((await reef(data, ['block', 'get', g])).stdout))
  let node = await readNode(fileGuid)
  t.equal(node.t, 'f', 'show --json gave a file tree')
  t.ok(node.h > 0 || node.l.length >= 3, 'a 700 kB file spans several chunks')
  while (node.h > 0) node = await readNode(node.l[Math.floor(node.l.length / 2)][0].toString())
  const chunk = node.l[Math.floor(node.l.length / 2)][0]
  t.equal(chunk.code, 0x55, 'a raw data chunk')
  const ok = await reef(data, ['block', 'get', chunk.toString()])
  t.equal(ok.code, 0, 'the chunk reads before corruption')
  await overwriteBlock(data, chunk.multihash.digest, old => { const b = Buffer.from(old); b[100] ^= 0x01; return b })
  before = await storeSnapshot(data)

  const out = path.join(work, 'restored')
  failed(t, await reef(data, ['get', guid, '-o', out]), 'BLOCK_CORRUPT')
  t.notOk(fs.existsSync(out), 'no partial target')
  t.same(fs.readdirSync(work).sort(), ['dangling-link', 'existing', 'existing-dir', 'tree'], 'no temp files left behind')
  failed(t, await reef(data, ['block', 'get', chunk.toString()]), 'BLOCK_CORRUPT')
  failed(t, await reef(data, ['get', fileGuid, '-o', out]), 'BLOCK_CORRUPT') // the file tree alone
  t.notOk(fs.existsSync(out), 'no partial file either')
  await unchanged(t, 'corrupt chunk')

  // A corrupt root (the entry block itself) fails before anything is written.
  await overwriteBlock(data, entryDigest, old => Buffer.concat([old, Buffer.from([0])]))
  before = await storeSnapshot(data)
  failed(t, await reef(data, ['get', guid, '-o', out]), 'BLOCK_CORRUPT')
  failed(t, await reef(data, ['show', guid]), 'BLOCK_CORRUPT')
  t.notOk(fs.existsSync(out))
  await unchanged(t, 'corrupt entry block')
})

t.test('a corrupt store or data directory is STORE_CORRUPT: no crash, nothing changed', async t => {
  // Each case damages its own copy of the data directory. lmdb's native code trusts its file: a
  // truncated or overwritten data.mdb used to crash reef with SIGSEGV (exit 139), and a 0-byte
  // one was silently taken for a new, empty store.
  const file = path.join(work, 'tree', 'a-first')
  const dataFile = (d: string): string => path.join(d, 'store', 'data.mdb')
  const config = (d: string, edit: (c: { name: string, aguid: string }) => unknown): void => {
    const p = path.join(d, 'config.json')
    fs.writeFileSync(p, JSON.stringify(edit(JSON.parse(fs.readFileSync(p, 'utf8')))))
  }
  const otherAguid = CID.createV1(CID.parse(JSON.parse(fs.readFileSync(path.join(data, 'config.json'), 'utf8')).aguid).code, Digest.create(0x12, crypto.randomBytes(32))).toString()
  const cases: Array<[string, (d: string) => void, RegExp]> = [
    ['data.mdb truncated to 4096 bytes', d => fs.truncateSync(dataFile(d), 4096), /data\.mdb: 4096 bytes, shorter than/],
    ['data.mdb truncated to half its size', d => fs.truncateSync(dataFile(d), Math.floor(fs.statSync(dataFile(d)).size / 2)), /data\.mdb: .*truncated/],
    ['random bytes over data.mdb\'s first 8 KiB', d => {
      const fd = fs.openSync(dataFile(d), 'r+')
      try { fs.writeSync(fd, crypto.randomBytes(8192), 0, 8192, 0) } finally { fs.closeSync(fd) }
    }, /data\.mdb: .*(meta page|magic)/],
    ['data.mdb emptied', d => fs.truncateSync(dataFile(d), 0), /data\.mdb: the file is empty/],
    ['data.mdb deleted', d => fs.rmSync(dataFile(d)), /data\.mdb: the file is missing/],
    ['the store directory deleted', d => fs.rmSync(path.join(d, 'store'), { recursive: true }), /data\.mdb: the file is missing/],
    ['config.json with a malformed AGUID', d => config(d, c => ({ ...c, aguid: 'zzz' })), /config\.json: its AGUID "zzz"/],
    ['config.json naming another AGUID', d => config(d, c => ({ ...c, aguid: otherAguid })), /config\.json: its AGUID/],
    ['config.json not JSON', d => fs.writeFileSync(path.join(d, 'config.json'), '{"name": '), /unreadable .*config\.json/],
    ['identity.key of 31 bytes', d => fs.writeFileSync(path.join(d, 'identity.key'), fs.readFileSync(path.join(d, 'identity.key')).subarray(0, 31)), /identity\.key is not a 32-byte/]
  ]
  const every = (d: string): string[][] => [
    ['history'], ['put', file], ['get', guid, '-o', path.join(d, '..', 'never')], ['block', 'get', fileGuid], ['show', '1'],
    ['block', 'put'], ['status'], ['sync'], ['init'], ['mount', path.join(d, '..', 'never-mounted')]
  ]
  for (const [i, [what, damage, message]] of cases.entries()) {
    const dir = path.join(tempDir(t), 'data')
    fs.cpSync(data, dir, { recursive: true })
    damage(dir)
    const digest = dirDigest(dir)
    // Every command on the first two cases and a config case; three commands on the others.
    const commands = i < 2 || i === 6 ? every(dir) : every(dir).slice(0, 3)
    const results = await Promise.all(commands.map(async args => ({ args, r: await reef(dir, args, { input: 'x' }) })))
    for (const { args, r } of results) {
      t.equal(r.signal, null, `${what}: ${args[0]} is not killed by a signal: ${show(r)}`)
      failed(t, r, 'STORE_CORRUPT')
      t.match(r.stderr, message, `${what}: ${args[0]} names the problem`)
    }
    t.same(dirDigest(dir), digest, `${what}: every file of the data directory unchanged, none created`)
    t.same(fs.readdirSync(path.dirname(dir)), ['data'], `${what}: no get target or mount point created`)
  }
})
