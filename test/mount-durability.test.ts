// Durability of `reef mount`: kill -9 after an fsync'd write (before any fold) loses nothing and
// the next mount cleans up the stale mount itself; unmount + remount gives the same tree; old
// versions stay readable (and read-only) under .reef/versions and through `reef checkout`;
// user.reef.guid names real blocks; a corrupt block reads as EIO while the daemon keeps serving.
import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { open } from 'lmdb'
import { describe, errnoOf, isMounted, reef, run, skipReason, startMount, tempDir, type Mount } from './helpers/mount.js'

const sha = (b: Uint8Array): string => crypto.createHash('sha256').update(b).digest('hex')

/** path, mode, size, mtime (ns), content hash of every entry under `root` (not .reef). */
function listing (root: string): string {
  const rows: string[] = []
  const walk = (rel: string): void => {
    for (const n of fs.readdirSync(path.join(root, rel)).sort()) {
      if (rel === '' && n === '.reef') continue
      const q = path.join(rel, n)
      const s = fs.lstatSync(path.join(root, q), { bigint: true })
      const what = s.isFile() ? sha(fs.readFileSync(path.join(root, q))) : s.isSymbolicLink() ? fs.readlinkSync(path.join(root, q)) : ''
      rows.push(`${q} ${s.mode.toString(8)} ${s.uid}:${s.gid} ${s.isDirectory() ? '-' : s.size} ${s.mtimeNs} ${what}`)
      if (s.isDirectory()) walk(q)
    }
  }
  walk('')
  return rows.join('\n')
}

const skip = skipReason()
if (skip !== false) {
  t.plan(0, skip)
} else {
  const base = tempDir(t, 'reef-durable-')
  const dataDir = path.join(base, 'data')
  const mnt = path.join(base, 'mnt')
  let m: Mount = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
  const p = (...s: string[]): string => path.join(mnt, ...s)

  t.test('kill -9 right after an fsync\'d write: remount has every byte', async tt => {
    const data = crypto.randomBytes(777_777)
    fs.mkdirSync(p('crash'))
    const fd = fs.openSync(p('crash', 'data.bin'), 'w')
    fs.writeSync(fd, data, 0, 500_000, 0)
    fs.writeSync(fd, data, 500_000, data.length - 500_000, 500_000)
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    fs.writeFileSync(p('crash', 'small'), 'tiny')
    fs.fsyncSync(fs.openSync(p('crash', 'small'), 'r'))
    const st = await reef(dataDir, 'status', '--json')
    tt.equal(st.code, 0, describe(st))
    tt.ok(JSON.parse(st.stdout).pendingRecords > 0, 'the writes are not folded yet (only in the log)')
    await m.kill9()
    tt.ok(isMounted(mnt), 'a stale mount is left behind')
    tt.equal(errnoOf(() => fs.statSync(mnt)), 'ENOTCONN', 'stale mount: Transport endpoint is not connected')
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    tt.match(m.stderr(), /cleaned up a stale mount/, 'reef mount cleaned up the stale mount itself')
    tt.ok(fs.readFileSync(p('crash', 'data.bin')).equals(data), 'fsync\'d data is there byte for byte')
    tt.equal(fs.readFileSync(p('crash', 'small'), 'utf8'), 'tiny', 'second file too')
  })

  let oldSeq = ''
  let before = ''
  t.test('unmount and remount: the same tree', async tt => {
    fs.mkdirSync(p('tree', 'deep', 'er'), { recursive: true })
    for (let i = 0; i < 25; i++) fs.writeFileSync(p('tree', i % 2 === 0 ? 'deep' : 'deep/er', `f${i}`), crypto.randomBytes(i * 4099), { mode: 0o600 + (i % 8) })
    fs.symlinkSync('deep/f0', p('tree', 'sym'))
    fs.writeFileSync(p('tree', 'big'), crypto.randomBytes(3_000_000))
    fs.utimesSync(p('tree', 'deep', 'f0'), 1e9, 1.5e9)
    fs.chownSync(p('tree', 'deep', 'f2'), 1234, 4321)
    fs.chmodSync(p('tree', 'deep'), 0o711)
    before = listing(mnt)
    tt.ok(before.split('\n').length > 25, 'listing covers the tree')
    const st = await m.stop()
    tt.equal(st.code, 0, `clean exit: ${m.stderr()}`)
    tt.notOk(isMounted(mnt), 'unmounted')
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    tt.equal(listing(mnt), before, 'same paths, modes, owners, sizes, mtimes and content after remount')
    const r = await reef(dataDir, 'sync', '--json')
    tt.equal(r.code, 0, describe(r))
    oldSeq = JSON.parse(r.stdout).seq
  })

  t.test('old versions under .reef/versions are readable and read-only', async tt => {
    const oldBig = fs.readFileSync(p('tree', 'big'))
    const fd = fs.openSync(p('tree', 'big'), 'r+')
    fs.writeSync(fd, Buffer.from('OVERWRITTEN'), 0, 11, 1_000_000)
    fs.closeSync(fd)
    fs.unlinkSync(p('tree', 'deep', 'f4'))
    fs.writeFileSync(p('tree', 'new'), 'new file')
    const r = await reef(dataDir, 'sync', '--json')
    tt.equal(r.code, 0, describe(r))
    const newSeq = JSON.parse(r.stdout).seq as string
    tt.ok(BigInt(newSeq) > BigInt(oldSeq), 'sync advanced the version')
    tt.ok(fs.readdirSync(p('.reef', 'versions')).includes(newSeq), 'new version listed')
    const v = (...s: string[]): string => p('.reef', 'versions', oldSeq, ...s)
    tt.ok(fs.readFileSync(v('tree', 'big')).equals(oldBig), 'old content of a changed file')
    tt.ok(fs.existsSync(v('tree', 'deep', 'f4')), 'a since-deleted file is in the old version')
    tt.notOk(fs.existsSync(v('tree', 'new')), 'a newer file is not')
    tt.equal(listing(p('.reef', 'versions', oldSeq)), before, 'the old version is the whole old tree (modes, owners, mtimes, content)')
    tt.equal(errnoOf(() => fs.writeFileSync(v('tree', 'big'), 'x')), 'EROFS', 'write to an old file: EROFS')
    tt.equal(errnoOf(() => fs.openSync(v('tree', 'big'), 'r+')), 'EROFS', 'open O_RDWR: EROFS')
    tt.equal(errnoOf(() => fs.writeFileSync(v('tree', 'created'), 'x')), 'EROFS', 'create in an old version: EROFS')
    tt.equal(errnoOf(() => fs.unlinkSync(v('tree', 'big'))), 'EROFS', 'unlink: EROFS')
    tt.equal(errnoOf(() => fs.mkdirSync(v('tree', 'newdir'))), 'EROFS', 'mkdir: EROFS')
    tt.equal(errnoOf(() => fs.truncateSync(v('tree', 'big'), 0)), 'EROFS', 'truncate: EROFS')
    tt.equal(errnoOf(() => fs.chmodSync(v('tree', 'big'), 0o777)), 'EROFS', 'chmod: EROFS')
    tt.equal(errnoOf(() => fs.renameSync(v('tree', 'big'), p('stolen'))), 'EROFS', 'rename out of an old version: EROFS')
    tt.equal(errnoOf(() => fs.mkdirSync(p('.reef', 'versions', '999999'))), 'EROFS', 'mkdir under .reef/versions: EROFS')
    tt.equal(errnoOf(() => fs.statSync(p('.reef', 'versions', '999999'))), 'ENOENT', 'a missing version: ENOENT')
    tt.ok(fs.readFileSync(p('tree', 'big')).subarray(1_000_000, 1_000_011).equals(Buffer.from('OVERWRITTEN')), 'live tree has the new content')
  })

  t.test('reef checkout SEQ DIR2: the old version, read-only; reef unmount ends it', async tt => {
    const dir2 = path.join(base, 'old')
    const c = await startMount(t, { dataDir, mnt: dir2, checkout: oldSeq })
    tt.equal(listing(dir2), before, 'checkout shows the old tree')
    tt.equal(errnoOf(() => fs.writeFileSync(path.join(dir2, 'tree', 'big'), 'x')), 'EROFS', 'write: EROFS')
    tt.equal(errnoOf(() => fs.writeFileSync(path.join(dir2, 'x'), 'x')), 'EROFS', 'create: EROFS')
    tt.equal(errnoOf(() => fs.rmSync(path.join(dir2, 'tree', 'sym'))), 'EROFS', 'unlink: EROFS')
    const r = await reef(dataDir, 'unmount', dir2)
    tt.equal(r.code, 0, `reef unmount: ${describe(r)}`)
    tt.notOk(isMounted(dir2), 'checkout unmounted')
    const deadline = Date.now() + 30_000
    while (!c.exited() && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 25))
    tt.ok(c.exited(), 'checkout process exited')
    tt.ok(isMounted(mnt) && fs.existsSync(p('tree')), 'the live mount is untouched')
  })

  t.test('reef checkout VGUID DIR: the same old version, named by its VGUID', async tt => {
    const versions = JSON.parse((await reef(dataDir, 'history', '--json')).stdout).versions as Array<{ seq: string, vguid: string }>
    const vguid = versions.find(v => v.seq === oldSeq)?.vguid
    tt.match(vguid, /^b[a-z2-7]+$/, `history names version ${oldSeq} by its VGUID`)
    const dir3 = path.join(base, 'old-by-vguid')
    const c = await startMount(t, { dataDir, mnt: dir3, checkout: vguid as string })
    tt.match(c.stderr(), new RegExp(`mounted version ${oldSeq} \\(read-only\\)`), 'the daemon says which version it mounted')
    tt.equal(listing(dir3), before, 'checkout by VGUID shows the old tree')
    tt.equal(errnoOf(() => fs.writeFileSync(path.join(dir3, 'x'), 'x')), 'EROFS', 'read-only')
    const r = await reef(dataDir, 'unmount', dir3)
    tt.equal(r.code, 0, `reef unmount: ${describe(r)}`)
    tt.notOk(isMounted(dir3), 'unmounted')
  })

  t.test('user.reef.guid names blocks that reef block get / reef show accept', async tt => {
    const fileGuid = (await run('getfattr', ['--only-values', '-n', 'user.reef.guid', p('tree', 'deep', 'f2')])).stdout.trim()
    tt.match(fileGuid, /^b[a-z2-7]+$/, 'a CID string on a file')
    let r = await reef(dataDir, 'block', 'get', fileGuid)
    tt.equal(r.code, 0, `block get accepts the file GUID: ${describe(r)}`)
    tt.equal(sha(r.out), Buffer.from(CID.parse(fileGuid).multihash.digest).toString('hex'), 'block bytes hash to the GUID')
    const dirGuid = (await run('getfattr', ['--only-values', '-n', 'user.reef.guid', p('tree', 'deep')])).stdout.trim()
    r = await reef(dataDir, 'show', dirGuid)
    tt.equal(r.code, 0, `show accepts a directory GUID: ${describe(r)}`)
    tt.match(r.stdout, /\/f2\b/, 'show lists the directory')
    const rootGuid = (await run('getfattr', ['--only-values', '-n', 'user.reef.guid', mnt])).stdout.trim()
    r = await reef(dataDir, 'show', rootGuid)
    tt.equal(r.code, 0, `show accepts the root's VGUID: ${describe(r)}`)
    tt.match(r.stdout, /\/tree\/deep\/f2\b/, 'show lists the whole version')
    const st = await reef(dataDir, 'status', '--json')
    tt.equal(JSON.parse(st.stdout).vguid, rootGuid, 'the root GUID is the current VGUID')
    const oldRoot = (await run('getfattr', ['--only-values', '-n', 'user.reef.guid', p('.reef', 'versions', oldSeq)])).stdout.trim()
    r = await reef(dataDir, 'show', '--json', oldRoot)
    tt.equal(r.code, 0, `show accepts an old version's root GUID: ${describe(r)}`)
    tt.not(oldRoot, rootGuid, 'old and new versions differ')
  })

  t.test('corrupt block: EIO for that file, the daemon serves the rest', async tt => {
    const victim = crypto.randomBytes(50_000)
    fs.writeFileSync(p('victim'), victim)
    fs.writeFileSync(p('bystander'), 'still fine')
    const guid = (await run('getfattr', ['--only-values', '-n', 'user.reef.guid', p('victim')])).stdout.trim()
    let r = await reef(dataDir, 'sync')
    tt.equal(r.code, 0, describe(r))
    // The file GUID is its tree root; its links name the raw chunks.
    r = await reef(dataDir, 'block', 'get', guid)
    const chunks: CID[] = []
    const visit = (v: unknown): void => {
      const c = CID.asCID(v)
      if (c !== null) { chunks.push(c); return }
      if (Array.isArray(v)) v.forEach(visit)
      else if (v !== null && typeof v === 'object') Object.values(v).forEach(visit)
    }
    visit(dagCbor.decode(r.out))
    tt.ok(chunks.length >= 1, `file root links ${chunks.length} chunk(s)`)
    const st = await m.stop()
    tt.equal(st.code, 0, m.stderr())
    const env = open({ path: path.join(dataDir, 'store'), compression: false, maxDbs: 8 })
    const blocks = env.openDB<Buffer, Buffer>({ name: 'blocks', keyEncoding: 'binary', encoding: 'binary' })
    const key = Buffer.from(chunks[0].multihash.digest)
    const old = blocks.getBinary(key)
    tt.ok(old !== undefined, 'chunk found in the LMDB store under its sha256 digest')
    const bad = Buffer.from(old as Buffer)
    bad[Math.floor(bad.length / 2)] ^= 0xff
    await blocks.put(key, bad)
    await env.close()
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    tt.equal(errnoOf(() => fs.readFileSync(p('victim'))), 'EIO', 'reading the corrupt file: EIO')
    tt.equal(fs.readFileSync(p('bystander'), 'utf8'), 'still fine', 'another file still reads')
    fs.writeFileSync(p('after-eio'), 'write ok')
    tt.equal(fs.readFileSync(p('after-eio'), 'utf8'), 'write ok', 'writes still work')
    tt.equal(errnoOf(() => fs.readFileSync(p('victim'))), 'EIO', 'still EIO on a second read (no bad data cached)')
    tt.notOk(m.exited(), 'daemon alive')
    tt.match(m.stderr(), /BLOCK_CORRUPT/, 'the corruption is logged')
    // Overwriting the damaged file entirely repairs it.
    fs.writeFileSync(p('victim'), 'replaced')
    tt.equal(fs.readFileSync(p('victim'), 'utf8'), 'replaced', 'a rewritten file reads again')
  })

  t.test('no unexpected errors in the daemon log', async tt => {
    tt.same(m.unexpected(), [], 'no unexpected lines')
    const st = await m.stop()
    tt.equal(st.code, 0, m.stderr())
  })
}
