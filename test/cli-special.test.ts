// FIFOs, Unix sockets and character and block devices through `reef put`, `reef get` and `reef
// show`: stored as entries of their kind (never opened), restored as tar does (devices only by
// root; an unprivileged get skips each device with one warning and restores the rest), shown
// with their kind and major,minor. Runs the real CLI; the unprivileged runs use setpriv.
import tap from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { ReefNode } from '../src/node.js'
import { ROOT_INO, S_IFCHR, S_IFIFO } from '../src/fs/inode.js'
import { makeDev } from '../src/object/devnum.js'
import { compareTrees, countTree, kindOf, lastWord, makeNodes, reef, show, tempDir, utimeArg } from './helpers/cli.js'
import { describe, run, REEF_BIN } from './helpers/mount.js'

const t = tap
const IS_ROOT = process.getuid?.() === 0
const NOBODY = 65534
const base = tempDir(t, 'reef-special-')
fs.chmodSync(base, 0o755) // the unprivileged runs reach their directories through it
const data = path.join(base, 'data')

const json = (r: { out: string }): any => JSON.parse(r.out)
const T2001 = 981_173_106_123_456_000n
const NONUTF8 = Buffer.concat([Buffer.from('fifo-'), Buffer.from([0xff, 0xfe])])

/** Runs the CLI as an unprivileged uid (data directory and target must be its own). */
async function reefAs (uid: number, dataDir: string, ...args: string[]): ReturnType<typeof run> {
  // Without tap's loader (its spawn hook puts it in NODE_OPTIONS), which would write its records
  // where this uid cannot.
  return await run('env', ['-u', 'NODE_OPTIONS', process.execPath, REEF_BIN, '--data-dir', dataDir, ...args], { uid })
}

/**
 * A tree with one of each kind (devices only as root) beside a file, with explicit modes, times
 * (whole microseconds, so a restored copy puts to the same GUID) and, for the FIFO, an owner that
 * is not the creator's.
 */
function buildTree (dir: string): void {
  fs.mkdirSync(path.join(dir, 'sub'), { recursive: true })
  fs.writeFileSync(path.join(dir, 'file'), 'data')
  const nodes: Parameters<typeof makeNodes>[0] = [
    { path: path.join(dir, 'fifo'), kind: 'fifo', mode: 0o640 },
    { path: Buffer.concat([Buffer.from(path.join(dir, 'sub') + '/'), NONUTF8]), kind: 'fifo', mode: 0o600 },
    { path: path.join(dir, 'sock'), kind: 'socket', mode: 0o755 },
    { path: path.join(dir, 'sub', 's'.repeat(255)), kind: 'socket', mode: 0o700 } // a path far beyond sun_path's 108 bytes
  ]
  if (IS_ROOT) {
    nodes.push({ path: path.join(dir, 'null'), kind: 'chr', mode: 0o666, major: 1, minor: 3 })
    nodes.push({ path: path.join(dir, 'sub', 'disk'), kind: 'blk', mode: 0o660, major: 259, minor: 70000 })
  }
  makeNodes(nodes)
  if (IS_ROOT) fs.chownSync(path.join(dir, 'fifo'), 1234, 5678)
  for (const n of ['fifo', 'sock', ...(IS_ROOT ? ['null'] : [])]) fs.utimesSync(path.join(dir, n), utimeArg(T2001), utimeArg(T2001))
  const later = utimeArg(T2001 + 1_000_000_000n)
  for (const n of [...nodes.map(n => n.path).filter(p => !['fifo', 'sock', 'null'].includes(path.basename(p.toString()))), path.join(dir, 'file'), path.join(dir, 'sub'), dir]) {
    fs.utimesSync(n, later, later)
  }
}

t.before(async () => {
  const r = await reef(data, ['init'])
  if (r.code !== 0) throw new Error(show(r))
})

t.test('put stores each special file as its kind; get restores kind, mode, owner, times and rdev', async t => {
  const src = path.join(base, 'tree1')
  buildTree(src)
  const p = await reef(data, ['put', src, '--json'])
  t.equal(p.code, 0, show(p))
  const pj = json(p)
  const specials = IS_ROOT ? 6 : 4
  t.equal(pj.specials, specials, 'put counts the special files')
  t.same(pj.skipped, [], 'nothing skipped')
  t.equal(p.stderr, '', 'no warning')
  const text = await reef(data, ['put', src])
  t.match(text.out, new RegExp(`^dir 1 files 2 dirs 0 symlinks ${specials} special 4 bytes$`, 'm'))
  t.equal(lastWord(text), pj.guid, 'text and JSON put give the same GUID')

  fs.mkdirSync(path.join(base, 'out1'))
  const out = path.join(base, 'out1', 'tree1') // the same name: a restored copy can put to the same GUID
  const g = await reef(data, ['get', pj.guid, '-o', out])
  t.equal(g.code, 0, show(g))
  t.equal(g.stderr, '', 'as root nothing is skipped')
  t.match(g.out, `${specials} special`)
  t.same(compareTrees(src, out), [], 'restored tree equals the original (kinds, modes, owners, mtimes, rdev)')
  t.same(countTree(out), { files: 1, dirs: 2, symlinks: 0, specials })
  t.equal(kindOf(fs.lstatSync(path.join(out, 'fifo'))), 'fifo')
  t.equal(kindOf(fs.lstatSync(path.join(out, 'sock'))), 'socket')
  t.equal(kindOf(fs.lstatSync(Buffer.concat([Buffer.from(path.join(out, 'sub') + '/'), NONUTF8]))), 'fifo', 'a FIFO with a non-UTF-8 name')
  t.equal(fs.lstatSync(path.join(out, 'fifo'), { bigint: true }).mtimeNs, T2001, 'FIFO mtime exact')
  if (IS_ROOT) {
    const st = fs.lstatSync(path.join(out, 'null'))
    t.ok(st.isCharacterDevice(), 'character device')
    t.equal(st.rdev, makeDev(1, 3), 'rdev 1,3')
    t.ok(fs.lstatSync(path.join(out, 'sub', 'disk')).isBlockDevice(), 'block device')
    t.equal(fs.lstatSync(path.join(out, 'sub', 'disk')).rdev, makeDev(259, 70000), 'rdev 259,70000')
    t.same([fs.lstatSync(path.join(out, 'fifo')).uid, fs.lstatSync(path.join(out, 'fifo')).gid], [1234, 5678], 'owner restored as root')
  }
  const rp = await reef(data, ['put', out])
  t.equal(lastWord(rp), pj.guid, 'the restored tree puts to the same GUID')
})

t.test('show lists special files with their kind, and devices as major,minor', async t => {
  const src = path.join(base, 'tree2')
  buildTree(src)
  const guid = lastWord(await reef(data, ['put', src]))
  const s = await reef(data, ['show', guid])
  t.equal(s.code, 0, show(s))
  t.match(s.out, /^fifo {4}0640 {10}0 2001-02-03T04:05:06\.123Z \/fifo$/m, 'a FIFO row')
  t.match(s.out, /^socket {2}0755 {10}0 2001-02-03T04:05:06\.123Z \/sock$/m, 'a socket row')
  const sj = await reef(data, ['show', guid, '--json'])
  t.equal(sj.code, 0, show(sj))
  const rows = new Map<string, any>(json(sj).entries.map((e: any) => [e.path, e]))
  t.match(rows.get('/fifo'), { kind: 'fifo', mode: '0640', size: 0, mtimeNs: T2001.toString() })
  t.notOk('rdev' in rows.get('/fifo'), 'no rdev on a FIFO')
  t.match(rows.get('/sock'), { kind: 'socket', mode: '0755' })
  const odd = Buffer.concat([Buffer.from('/sub/'), NONUTF8])
  t.match(rows.get(odd.toString()), { kind: 'fifo', pathBase64: odd.toString('base64') }, 'a FIFO with a non-UTF-8 name, its bytes exact')
  if (IS_ROOT) {
    t.match(s.out, /^chr {5}0666 {8}1,3 2001-02-03T04:05:06\.123Z \/null$/m, 'a character device row shows 1,3')
    t.match(s.out, /^blk {5}0660 {2}259,70000 \S+ \/sub\/disk$/m, 'a block device row shows 259,70000')
    t.match(rows.get('/null'), { kind: 'chr', rdev: makeDev(1, 3), major: 1, minor: 3, size: 0 })
    t.match(rows.get('/sub/disk'), { kind: 'blk', rdev: makeDev(259, 70000), major: 259, minor: 70000 })
  }
})

t.test('one special file on its own: put, show and get', async t => {
  const dir = path.join(base, 'single')
  fs.mkdirSync(dir)
  makeNodes([{ path: path.join(dir, 'p'), kind: 'fifo', mode: 0o620 }])
  fs.utimesSync(path.join(dir, 'p'), utimeArg(T2001), utimeArg(T2001))
  const p = await reef(data, ['put', path.join(dir, 'p'), '--json'])
  t.equal(p.code, 0, show(p))
  t.match(json(p), { kind: 'fifo', specials: 1, files: 0 })
  t.match((await reef(data, ['show', json(p).guid])).out, /^fifo {4}0620 {10}0 \S+ p$/m)
  const out = path.join(dir, 'p-restored')
  const g = await reef(data, ['get', json(p).guid, '-o', out])
  t.equal(g.code, 0, show(g))
  const st = fs.lstatSync(out, { bigint: true })
  t.ok(st.isFIFO(), 'a FIFO at the target')
  t.equal(st.mode & 0o7777n, 0o620n)
  t.equal(st.mtimeNs, T2001)
  t.same(fs.readdirSync(dir).sort(), ['p', 'p-restored'], 'no temporary left behind')
  if (!IS_ROOT) return
  makeNodes([{ path: path.join(dir, 'b'), kind: 'blk', mode: 0o600, major: 7, minor: 1 }])
  const pb = await reef(data, ['put', path.join(dir, 'b'), '--json'])
  t.match(json(pb), { kind: 'blk', specials: 1 })
  const gb = await reef(data, ['get', json(pb).guid, '-o', path.join(dir, 'b-restored')])
  t.equal(gb.code, 0, show(gb))
  const sb = fs.lstatSync(path.join(dir, 'b-restored'))
  t.ok(sb.isBlockDevice() && sb.rdev === makeDev(7, 1), 'a block device 7,1 at the target, as root')
})

t.test('as an unprivileged uid: devices skipped with one warning each, the rest restored, exit 0', { skip: !IS_ROOT && 'needs root (devices, setpriv)' }, async t => {
  const src = path.join(base, 'tree3')
  buildTree(src)
  const mine = path.join(base, 'nobody')
  fs.mkdirSync(mine)
  fs.chownSync(mine, NOBODY, NOBODY)
  const dataU = path.join(mine, 'data')
  const init = await reefAs(NOBODY, dataU, 'init')
  t.equal(init.code, 0, describe(init))
  // put needs no privilege: it only lstat()s special files.
  const p = await reefAs(NOBODY, dataU, 'put', src)
  t.equal(p.code, 0, describe(p))
  const guid = p.stdout.trim().split(/\s+/).at(-1) as string
  const out = path.join(mine, 'out')
  const g = await reefAs(NOBODY, dataU, 'get', guid, '-o', out)
  t.equal(g.code, 0, `skipped devices are expected, not an error: ${describe(g)}`)
  const warnings = g.stderr.split('\n').filter(l => l !== '')
  t.same(warnings.sort(), [
    `reef: skipped device ${path.join(out, 'null')}: making device nodes needs root (CAP_MKNOD)`,
    `reef: skipped device ${path.join(out, 'sub', 'disk')}: making device nodes needs root (CAP_MKNOD)`
  ], 'one warning line per device, naming its path')
  t.notOk(fs.existsSync(path.join(out, 'null')), 'no character device')
  t.notOk(fs.existsSync(path.join(out, 'sub', 'disk')), 'no block device')
  t.same(countTree(out), { files: 1, dirs: 2, symlinks: 0, specials: 4 }, 'FIFOs and sockets restored')
  const diffs = compareTrees(src, out).filter(d => !d.includes('owner'))
  t.same(diffs.sort(), ['"./null": missing in restored tree', '"./sub/disk": missing in restored tree'], 'only the devices differ (owners aside)')
  t.equal(fs.lstatSync(path.join(out, 'fifo')).uid, NOBODY, 'owned by who restored it')

  const gj = await reefAs(NOBODY, dataU, 'get', guid, '-o', path.join(mine, 'out-json'), '--json')
  t.equal(gj.code, 0, describe(gj))
  t.same(JSON.parse(gj.stdout).skipped.length, 2, '--json lists the skipped devices')
  t.equal(JSON.parse(gj.stdout).specials, 4)

  // A device on its own: nothing would be restored, so that is an error, and nothing is left.
  const one = await reefAs(NOBODY, dataU, 'put', path.join(src, 'null'), '--json')
  t.equal(one.code, 0, describe(one))
  const lone = path.join(mine, 'lone')
  const gl = await reefAs(NOBODY, dataU, 'get', JSON.parse(one.stdout).guid, '-o', lone)
  t.equal(gl.code, 1, describe(gl))
  t.match(gl.stderr, /cannot restore the character device .*lone: making device nodes needs root \(CAP_MKNOD\) \[EPERM\]/)
  t.same(fs.readdirSync(mine).filter(n => n.startsWith('.reef') || n === 'lone'), [], 'no target, no temporary')
})

t.test('a version with hard-linked FIFOs and devices restores the links; unprivileged, both names of a device are skipped', { skip: !IS_ROOT && 'needs root (devices, setpriv)' }, async t => {
  const dir = path.join(base, 'linked')
  fs.mkdirSync(dir)
  fs.chownSync(dir, NOBODY, NOBODY)
  const dataL = path.join(dir, 'data')
  ReefNode.init(dataL)
  const node = await ReefNode.open(dataL, { noSync: true })
  const enc = (s: string): Uint8Array => Buffer.from(s)
  const cred = { uid: NOBODY, gid: NOBODY }
  let vguid: string
  try {
    const rfs = await node.openFs()
    const d = await rfs.mkdir(ROOT_INO, enc('d'), 0o755, cred)
    const fifo = await rfs.mknod(d.ino, enc('fifo'), S_IFIFO | 0o640, 0, cred)
    const chr = await rfs.mknod(d.ino, enc('null'), S_IFCHR | 0o666, makeDev(1, 3), cred)
    await rfs.link(fifo.ino, d.ino, enc('fifo.l'))
    await rfs.link(chr.ino, d.ino, enc('null.l'))
    const v = await rfs.fold('links')
    vguid = v?.vguid.toString() as string
    rfs.log?.close()
  } finally {
    await node.close()
  }
  await run('chown', ['-R', `${NOBODY}:${NOBODY}`, dataL])

  const sj = await reef(dataL, ['show', vguid, '--json'])
  const rows = new Map<string, any>(json(sj).entries.map((e: any) => [e.path, e]))
  t.match(rows.get('/d/null.l'), { kind: 'chr', major: 1, minor: 3 }, 'show reads a linked device through the link table')
  t.match(rows.get('/d/fifo.l'), { kind: 'fifo', mode: '0640' })

  const out = path.join(base, 'linked-root')
  const g = await reef(dataL, ['get', vguid, '-o', out])
  t.equal(g.code, 0, show(g))
  const [a, b] = ['fifo', 'fifo.l'].map(n => fs.lstatSync(path.join(out, 'd', n)))
  t.ok(a.isFIFO() && b.isFIFO() && a.ino === b.ino && a.nlink === 2, 'the FIFO is one inode with two names')
  const [c, e] = ['null', 'null.l'].map(n => fs.lstatSync(path.join(out, 'd', n)))
  t.ok(c.isCharacterDevice() && c.ino === e.ino && c.rdev === makeDev(1, 3), 'the device is one inode with two names')

  const outU = path.join(dir, 'out')
  const gu = await reefAs(NOBODY, dataL, 'get', vguid, '-o', outU)
  t.equal(gu.code, 0, describe(gu))
  t.equal(gu.stderr.split('\n').filter(l => l.includes('skipped device')).length, 2, 'both names of the device are skipped, each with a warning')
  t.same(fs.readdirSync(path.join(outU, 'd')).sort(), ['fifo', 'fifo.l'])
  t.equal(fs.lstatSync(path.join(outU, 'd', 'fifo')).nlink, 2, 'the FIFO is still hard-linked')
})
