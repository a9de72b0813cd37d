// `reef mount` as a POSIX file system: every operation through a real FUSE mount served by a
// real daemon process, with the errnos a program sees. Also absurd inputs (the daemon answers
// with an errno and keeps serving) and hard links surviving a remount.
import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { describe, errnoOf, reef, run, sh, skipReason, startMount, tempDir, type Mount } from './helpers/mount.js'
import { PYTHON } from './helpers/posix.js'

/** rn(old, new, flags): renameat2 through libc, 'OK' or the errno's name. */
const RENAMEAT2_PY = `
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
NOREPLACE, EXCHANGE = 1, 2
def rn(a, b, flags):
    if libc.renameat2(-100, a.encode(), -100, b.encode(), flags) == 0:
        return 'OK'
    return errno.errorcode[ctypes.get_errno()]
`

interface Asserts { ok: (v: unknown, msg: string) => unknown, notOk: (v: unknown, msg: string) => unknown }

const skip = skipReason()
if (skip !== false) {
  t.plan(0, skip)
} else {
  const base = tempDir(t, 'reef-posix-')
  const dataDir = path.join(base, 'data')
  const mntDir = path.join(base, 'mnt')
  let m: Mount = await startMount(t, { dataDir, mnt: mntDir, foldInterval: 3600 })
  const p = (...s: string[]): string => path.join(mntDir, ...s)
  const U = 1234
  const UTC = { TZ: 'UTC' }

  /** The daemon still serves: a fresh file round-trips. */
  let probe = 0
  const alive = (tt: Asserts, after: string): void => {
    const f = p(`alive-${++probe}`)
    const data = crypto.randomBytes(3000)
    fs.writeFileSync(f, data)
    tt.ok(fs.readFileSync(f).equals(data), `daemon still serves after ${after}`)
    tt.notOk(m.exited(), `daemon process alive after ${after}`)
  }

  t.test('create, open, read and write at any offset', async tt => {
    const f = p('rw.bin')
    const model = Buffer.alloc(300_000)
    const fd = fs.openSync(f, 'w+', 0o640)
    // Writes that straddle 64 KiB pages, overlap each other and extend the file.
    const writes: Array<[number, number]> = [[0, 1000], [65_000, 2000], [131_070, 70_000], [500, 100], [299_000, 1000], [65_536, 1]]
    for (const [off, len] of writes) {
      const chunk = crypto.randomBytes(len)
      tt.equal(fs.writeSync(fd, chunk, 0, len, off), len, `pwrite ${len} at ${off}`)
      chunk.copy(model, off)
    }
    const st = fs.fstatSync(fd)
    tt.equal(st.size, 300_000, 'size is the furthest write')
    tt.equal(st.mode & 0o7777, 0o640, 'mode from create')
    tt.ok(st.isFile(), 'getattr: regular file')
    // pread at odd offsets and lengths, including past the end.
    for (const [off, len] of [[0, 300_000], [64_000, 3000], [131_000, 100_000], [299_990, 100]] as const) {
      const b = Buffer.alloc(len)
      const n = fs.readSync(fd, b, 0, len, off)
      tt.equal(n, Math.min(len, 300_000 - off), `pread ${len} at ${off}: count`)
      tt.ok(b.subarray(0, n).equals(model.subarray(off, off + n)), `pread ${len} at ${off}: bytes`)
    }
    tt.equal(fs.readSync(fd, Buffer.alloc(10), 0, 10, 400_000), 0, 'pread past EOF returns 0')
    fs.closeSync(fd)
    tt.ok(fs.readFileSync(f).equals(model), 'whole file after close')
    // O_APPEND goes to the end.
    fs.appendFileSync(f, 'tail')
    tt.equal(fs.readFileSync(f).subarray(300_000).toString(), 'tail', 'O_APPEND writes at EOF')
    tt.equal(errnoOf(() => fs.openSync(f, 'wx')), 'EEXIST', 'O_CREAT|O_EXCL on an existing file: EEXIST')
    tt.equal(errnoOf(() => fs.openSync(p('nope', 'x'), 'r')), 'ENOENT', 'open under a missing dir: ENOENT')
    tt.equal(errnoOf(() => fs.openSync(p('rw.bin', 'x'), 'w')), 'ENOTDIR', 'create under a file: ENOTDIR')
  })

  t.test('sparse file: write at 1 GiB, holes read as zeros', async tt => {
    const f = p('sparse')
    const fd = fs.openSync(f, 'w+')
    fs.writeSync(fd, Buffer.from('X'), 0, 1, 2 ** 30)
    tt.equal(fs.fstatSync(fd).size, 2 ** 30 + 1, 'size is 1 GiB + 1')
    for (const off of [0, 4096, 2 ** 29 + 12_345, 2 ** 30 - 70_000]) {
      const b = Buffer.alloc(70_000, 0xff)
      tt.equal(fs.readSync(fd, b, 0, b.length, off), b.length, `hole read at ${off}`)
      tt.ok(b.every(x => x === 0), `hole at ${off} reads as zeros`)
    }
    const last = Buffer.alloc(10)
    tt.equal(fs.readSync(fd, last, 0, 10, 2 ** 30 - 9), 10)
    tt.same([...last], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0x58], 'the written byte ends the file')
    fs.closeSync(fd)
  })

  t.test('truncate and ftruncate grow and shrink', async tt => {
    const f = p('trunc')
    const data = crypto.randomBytes(200_000)
    fs.writeFileSync(f, data)
    fs.truncateSync(f, 70_000)
    tt.equal(fs.statSync(f).size, 70_000, 'truncate shrinks')
    tt.ok(fs.readFileSync(f).equals(data.subarray(0, 70_000)), 'shrunk content is the prefix')
    fs.truncateSync(f, 150_000)
    const grown = fs.readFileSync(f)
    tt.equal(grown.length, 150_000, 'truncate grows')
    tt.ok(grown.subarray(70_000).every(x => x === 0), 'grown part reads as zeros, not old bytes')
    // Same through a handle, and across a fold (the base tree, not dirty pages).
    const s = await reef(dataDir, 'sync')
    tt.equal(s.code, 0, `reef sync: ${describe(s)}`)
    const fd = fs.openSync(f, 'r+')
    fs.ftruncateSync(fd, 10)
    tt.equal(fs.fstatSync(fd).size, 10, 'ftruncate shrinks')
    fs.ftruncateSync(fd, 100_000)
    tt.equal(fs.fstatSync(fd).size, 100_000, 'ftruncate grows')
    const b = Buffer.alloc(100_000, 0xff)
    fs.readSync(fd, b, 0, b.length, 0)
    tt.ok(b.subarray(0, 10).equals(data.subarray(0, 10)), 'prefix kept')
    tt.ok(b.subarray(10).every(x => x === 0), 'regrown part of a folded file reads as zeros')
    fs.closeSync(fd)
    tt.equal(errnoOf(() => fs.truncateSync(p('missing-file'), 1)), 'ENOENT', 'truncate of a missing file: ENOENT')
  })

  t.test('fsync and fdatasync of files and directories', async tt => {
    const fd = fs.openSync(p('synced'), 'w')
    fs.writeSync(fd, 'durable')
    tt.equal(errnoOf(() => fs.fsyncSync(fd)), 'OK', 'fsync')
    tt.equal(errnoOf(() => fs.fdatasyncSync(fd)), 'OK', 'fdatasync')
    fs.closeSync(fd)
    const dfd = fs.openSync(mntDir, 'r')
    tt.equal(errnoOf(() => fs.fsyncSync(dfd)), 'OK', 'fsync of a directory')
    fs.closeSync(dfd)
  })

  t.test('mkdir, readdir, rmdir, unlink and their errnos', async tt => {
    fs.mkdirSync(p('d1'), 0o750)
    fs.mkdirSync(p('d1', 'sub'))
    fs.writeFileSync(p('d1', 'f'), 'x')
    const st = fs.statSync(p('d1'))
    tt.ok(st.isDirectory(), 'getattr: directory')
    tt.equal(st.mode & 0o7777, 0o750, 'mkdir mode')
    tt.equal(st.nlink, 3, 'dir nlink is 2 + subdirs')
    tt.same(fs.readdirSync(p('d1')).sort(), ['f', 'sub'], 'readdir lists exactly the entries')
    tt.ok(fs.readdirSync(mntDir).includes('.reef'), 'root lists .reef')
    tt.notOk(fs.readdirSync(p('d1')).includes('.reef'), 'subdirs do not list .reef')
    tt.equal(errnoOf(() => fs.mkdirSync(p('d1'))), 'EEXIST', 'mkdir existing: EEXIST')
    tt.equal(errnoOf(() => fs.mkdirSync(p('.reef'))), 'EEXIST', 'mkdir .reef: EEXIST')
    tt.equal(errnoOf(() => fs.rmdirSync(p('d1'))), 'ENOTEMPTY', 'rmdir non-empty: ENOTEMPTY')
    tt.equal(errnoOf(() => fs.rmdirSync(p('d1', 'f'))), 'ENOTDIR', 'rmdir of a file: ENOTDIR')
    tt.equal(errnoOf(() => fs.rmdirSync(p('nodir'))), 'ENOENT', 'rmdir missing: ENOENT')
    tt.equal(errnoOf(() => fs.unlinkSync(p('nofile'))), 'ENOENT', 'unlink missing: ENOENT')
    tt.equal(errnoOf(() => fs.unlinkSync(p('d1', 'sub'))), 'EISDIR', 'unlink of a directory: EISDIR')
    tt.equal(errnoOf(() => fs.openSync(p('d1'), 'r+')), 'EISDIR', 'open a directory for writing: EISDIR')
    tt.equal(errnoOf(() => fs.readdirSync(p('d1', 'f'))), 'ENOTDIR', 'readdir of a file: ENOTDIR')
    tt.equal(errnoOf(() => fs.statSync(p('d1', 'f', 'x'))), 'ENOTDIR', 'path through a file: ENOTDIR')
    tt.equal(errnoOf(() => fs.statSync(p('d1', 'missing'))), 'ENOENT', 'stat missing: ENOENT')
    fs.unlinkSync(p('d1', 'f'))
    tt.equal(errnoOf(() => fs.statSync(p('d1', 'f'))), 'ENOENT', 'unlinked file is gone')
    fs.rmdirSync(p('d1', 'sub'))
    tt.equal(fs.statSync(p('d1')).nlink, 2, 'nlink drops with rmdir')
    fs.rmdirSync(p('d1'))
    tt.notOk(fs.existsSync(p('d1')), 'rmdir removed it')
    // An open, unlinked file stays readable until closed.
    fs.writeFileSync(p('ghost'), 'boo')
    const fd = fs.openSync(p('ghost'), 'r')
    fs.unlinkSync(p('ghost'))
    const b = Buffer.alloc(3)
    fs.readSync(fd, b, 0, 3, 0)
    tt.equal(b.toString(), 'boo', 'unlinked open file still reads')
    fs.closeSync(fd)
  })

  t.test('names: 255 bytes fine, 256 bytes ENAMETOOLONG', async tt => {
    const ok = 'n'.repeat(255)
    fs.writeFileSync(p(ok), 'long')
    tt.ok(fs.readdirSync(mntDir).includes(ok), '255-byte name created and listed')
    const bad = 'n'.repeat(256)
    tt.equal(errnoOf(() => fs.writeFileSync(p(bad), 'x')), 'ENAMETOOLONG', 'create 256-byte name')
    alive(tt, 'create of a 256-byte name')
    tt.equal(errnoOf(() => fs.mkdirSync(p(bad))), 'ENAMETOOLONG', 'mkdir 256-byte name')
    tt.equal(errnoOf(() => fs.renameSync(p(ok), p(bad))), 'ENAMETOOLONG', 'rename to a 256-byte name')
    tt.ok(fs.existsSync(p(ok)), 'failed rename left the source')
    alive(tt, 'mkdir/rename of a 256-byte name')
    // Multibyte: 128 × 'é' is 256 bytes.
    tt.equal(errnoOf(() => fs.writeFileSync(p('é'.repeat(128)), 'x')), 'ENAMETOOLONG', '256 UTF-8 bytes')
  })

  t.test('renameat2: NOREPLACE and EXCHANGE on files, directories, across directories and hard links; atomic for a reader; kept by a fold and a remount', async tt => {
    const py = (script: string): unknown => {
      const r = spawnSync(PYTHON, ['-c', RENAMEAT2_PY + script], { cwd: mntDir, encoding: 'utf8' })
      if (r.status !== 0) throw new Error(`python: ${r.stderr}`)
      return JSON.parse(r.stdout)
    }
    fs.mkdirSync(p('r2'))
    const q = (...s: string[]): string => p('r2', ...s)
    fs.writeFileSync(q('x'), 'X')
    fs.writeFileSync(q('y'), 'Y')
    tt.same(py("print(json.dumps([rn('r2/x', 'r2/y', NOREPLACE), rn('r2/x', 'r2/z', NOREPLACE), rn('r2/z', 'r2/y', EXCHANGE), rn('r2/z', 'r2/none', EXCHANGE), rn('r2/z', 'r2/y', 3)]))"),
      ['EEXIST', 'OK', 'OK', 'ENOENT', 'EINVAL'], 'NOREPLACE onto a name: EEXIST; onto a free one: done; EXCHANGE; with a missing name: ENOENT; both flags: EINVAL')
    tt.same([fs.readFileSync(q('z'), 'utf8'), fs.readFileSync(q('y'), 'utf8'), fs.existsSync(q('x'))], ['Y', 'X', false], 'z and y swapped contents')
    fs.mkdirSync(q('d1'))
    fs.mkdirSync(q('d2'))
    fs.writeFileSync(q('d1', 'a'), 'in d1')
    fs.writeFileSync(q('d2', 'b'), 'in d2')
    tt.same(py("print(json.dumps([rn('r2/d1', 'r2/d2', EXCHANGE), rn('r2/d1/b', 'r2/y', EXCHANGE), rn('r2/d1', 'r2/d1/b2', EXCHANGE)]))"),
      ['OK', 'OK', 'ENOENT'], 'EXCHANGE of two directories, then of a file inside one with a file beside them')
    tt.same([fs.readFileSync(q('d2', 'a'), 'utf8'), fs.readFileSync(q('d1', 'b'), 'utf8'), fs.readFileSync(q('y'), 'utf8')], ['in d1', 'X', 'in d2'], 'every name leads where the swaps put it')
    fs.mkdirSync(q('d2', 'sub'))
    tt.same(py("print(json.dumps([rn('r2/d2', 'r2/d2/sub', EXCHANGE)]))"), ['EINVAL'], 'EXCHANGE of a directory with one inside it: EINVAL')
    fs.writeFileSync(q('h1'), 'linked')
    fs.linkSync(q('h1'), q('h2'))
    tt.same(py("print(json.dumps([rn('r2/h1', 'r2/h2', NOREPLACE), rn('r2/h1', 'r2/h2', EXCHANGE), rn('r2/h1', 'r2/z', EXCHANGE)]))"),
      ['EEXIST', 'OK', 'OK'], 'onto another name of the same file: NOREPLACE EEXIST, EXCHANGE does nothing; EXCHANGE of a hard link with another file')
    tt.same([fs.readFileSync(q('h1'), 'utf8'), fs.readFileSync(q('h2'), 'utf8'), fs.readFileSync(q('z'), 'utf8')], ['Y', 'linked', 'linked'], 'h1 is the other file now, z and h2 one file')
    tt.same([fs.statSync(q('z')).nlink, fs.statSync(q('z')).ino === fs.statSync(q('h2')).ino, fs.statSync(q('h1')).nlink], [2, true, 1], 'link counts follow the inodes')
    // A reader in another process sees P or Q at each name, never an error, while the two swap.
    fs.writeFileSync(q('p'), 'P')
    fs.writeFileSync(q('qq'), 'Q')
    const reader = sh('bad=0; n=0; while [ $n -lt 300 ]; do n=$((n+1)); c=$(cat r2/p 2>&1); if [ "$c" != P ] && [ "$c" != Q ]; then bad=$((bad+1)); echo "$c" >&2; fi; done; touch r2/done; echo "$n $bad"', { cwd: mntDir })
    const [results, swaps] = py("r, i = set(), 0\nwhile not os.path.exists('r2/done') and i < 1000000:\n    r.add(rn('r2/p', 'r2/qq', EXCHANGE)); i += 1\nif i % 2:\n    r.add(rn('r2/p', 'r2/qq', EXCHANGE)); i += 1\nprint(json.dumps([sorted(r), i]))") as [string[], number]
    tt.same(results, ['OK'], `${swaps} exchanges while the reader read`)
    const rr = await reader
    const [n, bad] = rr.stdout.trim().split(' ').map(Number)
    tt.ok(n === 300 && bad === 0 && swaps >= 2, `the reader saw P or Q in every one of ${n} reads, during ${swaps} exchanges ${rr.stderr.slice(0, 300)}`)
    tt.equal(fs.readFileSync(q('p'), 'utf8'), 'P', 'an even number of exchanges: back where they were')
    const tree = async (): Promise<string> => (await run('find', [q(), '-printf', '%P %s %n\\n'])).stdout.split('\n').sort().join('\n')
    const before = await tree()
    tt.equal((await reef(dataDir, 'sync')).code, 0, 'folded')
    tt.equal((await m.stop()).code, 0, 'unmounted')
    m = await startMount(t, { dataDir, mnt: mntDir, foldInterval: 3600 })
    tt.equal(await tree(), before, 'the same tree after the fold and a remount')
  })

  t.test('rename: atomic replace, directories, and refusals', async tt => {
    fs.writeFileSync(p('target'), 'old')
    fs.writeFileSync(p('src'), 'new')
    const oldIno = fs.statSync(p('target')).ino
    fs.renameSync(p('src'), p('target'))
    tt.equal(fs.readFileSync(p('target'), 'utf8'), 'new', 'rename over an existing file replaces it')
    tt.notOk(fs.existsSync(p('src')), 'source name gone')
    tt.not(fs.statSync(p('target')).ino, oldIno, 'target is the renamed inode')

    // Atomicity: a reader in another process sees the old or the new file, whole, never a mix,
    // an empty file or an error. Each rename waits until the reader has read twice since the
    // last one, so reads race every rename but no read spans two renames.
    // On libfuse2's path API a read whose kernel dentry still pointed at the replaced inode got
    // ENOENT (13 of 56 opens here); inode-addressed, the replaced inode lives until FORGET.
    fs.writeFileSync(p('atom'), 'A')
    const progress = path.join(tempDir(tt), 'reads')
    fs.writeFileSync(progress, '0')
    const reader = sh(`n=0; ok=0; bad=0; while [ ! -e stop ] && [ $n -lt 100000 ]; do n=$((n+1)); if c=$(cat atom 2>&1); then if [ "$c" = A ] || [ "$c" = B ]; then ok=$((ok+1)); else bad=$((bad+1)); echo "read: $c" >&2; fi; else bad=$((bad+1)); echo "$c" >&2; fi; echo $n > ${progress}; done; echo "$ok $bad"`, { cwd: mntDir })
    // The reader rewrites the file with O_TRUNC: a read between its truncation and its write
    // sees nothing, so the count kept is the highest seen (an underestimated `before` let a
    // rename pass with fewer than two reads after it: 299 reads for 150 paced renames).
    let seen = 0
    const reads = (): number => (seen = Math.max(seen, Number(fs.readFileSync(progress, 'utf8').trim() || '0')))
    let paced = 0
    for (let i = 0; i < 150; i++) {
      fs.writeFileSync(p('atom.tmp'), i % 2 === 0 ? 'B' : 'A')
      const before = reads()
      fs.renameSync(p('atom.tmp'), p('atom'))
      const until = Date.now() + 5000
      while (reads() < before + 2 && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 1))
      if (reads() >= before + 2) paced++
    }
    fs.writeFileSync(p('stop'), '')
    const r = await reader
    const [good, bad] = r.stdout.trim().split(' ').map(Number)
    tt.ok(good >= 300, `the reader read (${good} reads, ${paced} of 150 renames paced)`)
    tt.equal(bad, 0, `no read saw a torn or empty target, or any error (ENOENT, ESTALE) ${r.stderr.trim().slice(0, 400)}`)
    fs.unlinkSync(p('stop'))

    fs.mkdirSync(p('ra', 'inner'), { recursive: true })
    fs.writeFileSync(p('ra', 'inner', 'f'), 'deep')
    fs.renameSync(p('ra'), p('rb'))
    tt.equal(fs.readFileSync(p('rb', 'inner', 'f'), 'utf8'), 'deep', 'rename of a directory moves its subtree')
    tt.equal(errnoOf(() => fs.renameSync(p('rb'), p('rb', 'inner', 'x'))), 'EINVAL', 'dir into its own subdir: EINVAL')
    fs.mkdirSync(p('full'))
    fs.writeFileSync(p('full', 'x'), '')
    tt.equal(errnoOf(() => fs.renameSync(p('rb'), p('full'))), 'ENOTEMPTY', 'dir over non-empty dir: ENOTEMPTY')
    fs.mkdirSync(p('empty'))
    fs.renameSync(p('rb'), p('empty'))
    tt.equal(fs.readFileSync(p('empty', 'inner', 'f'), 'utf8'), 'deep', 'dir over empty dir replaces it')
    tt.equal(errnoOf(() => fs.renameSync(p('target'), p('empty'))), 'EISDIR', 'file over dir: EISDIR')
    tt.equal(errnoOf(() => fs.renameSync(p('empty'), p('target'))), 'ENOTDIR', 'dir over file: ENOTDIR')
    tt.equal(errnoOf(() => fs.renameSync(p('nothere'), p('x'))), 'ENOENT', 'rename missing: ENOENT')
    tt.equal(errnoOf(() => fs.renameSync(p('target'), p('.reef'))), 'EISDIR', 'rename of a file onto .reef: EISDIR')
    tt.equal(errnoOf(() => fs.renameSync(p('full'), p('.reef'))), 'EEXIST', 'rename of a dir onto .reef: EEXIST (reserved)')
    tt.not(errnoOf(() => fs.renameSync(p('.reef'), p('other'))), 'OK', 'rename of .reef refused')
    tt.ok(fs.readdirSync(p('.reef')).includes('versions'), '.reef intact')
    // Into another directory, and to the same name (no-op).
    fs.renameSync(p('target'), p('empty', 'moved'))
    tt.equal(fs.readFileSync(p('empty', 'moved'), 'utf8'), 'new', 'rename across directories')
    fs.renameSync(p('empty', 'moved'), p('empty', 'moved'))
    tt.equal(fs.readFileSync(p('empty', 'moved'), 'utf8'), 'new', 'rename onto itself is a no-op')
  })

  t.test('symlink and readlink', async tt => {
    fs.writeFileSync(p('real'), 'through the link')
    fs.symlinkSync('real', p('ln'))
    fs.symlinkSync('/nonexistent/target', p('dangling'))
    tt.equal(fs.readlinkSync(p('ln')), 'real', 'readlink')
    tt.ok(fs.lstatSync(p('ln')).isSymbolicLink(), 'lstat: symlink')
    tt.equal(fs.lstatSync(p('ln')).size, 4, 'symlink size is the target length')
    tt.equal(fs.readFileSync(p('ln'), 'utf8'), 'through the link', 'open follows the link')
    tt.equal(fs.readlinkSync(p('dangling')), '/nonexistent/target', 'dangling target kept')
    tt.equal(errnoOf(() => fs.statSync(p('dangling'))), 'ENOENT', 'stat through a dangling link: ENOENT')
    tt.equal(errnoOf(() => fs.readlinkSync(p('real'))), 'EINVAL', 'readlink of a file: EINVAL')
    tt.equal(errnoOf(() => fs.symlinkSync('x', p('real'))), 'EEXIST', 'symlink over existing: EEXIST')
  })

  t.test('hard links: one inode, shared content, nlink', async tt => {
    fs.writeFileSync(p('h1'), 'one')
    fs.linkSync(p('h1'), p('h2'))
    const a = fs.statSync(p('h1'))
    const b = fs.statSync(p('h2'))
    tt.equal(a.ino, b.ino, 'same inode number')
    tt.equal(a.nlink, 2, 'nlink 2 (first name)')
    tt.equal(b.nlink, 2, 'nlink 2 (second name)')
    // Same-size overwrite through one name: the other name sees it (no stale page cache).
    tt.equal(fs.readFileSync(p('h2'), 'utf8'), 'one')
    const fd = fs.openSync(p('h1'), 'r+')
    fs.writeSync(fd, 'ONE', 0)
    fs.closeSync(fd)
    tt.equal(fs.readFileSync(p('h2'), 'utf8'), 'ONE', 'write through one name, read through the other')
    fs.appendFileSync(p('h2'), '+two')
    tt.equal(fs.readFileSync(p('h1'), 'utf8'), 'ONE+two', 'append through the other name')
    tt.equal(errnoOf(() => fs.linkSync(p('h1'), p('h2'))), 'EEXIST', 'link over existing: EEXIST')
    tt.equal(errnoOf(() => fs.linkSync(p('empty'), p('dirlink'))), 'EPERM', 'link to a directory: EPERM')
    fs.linkSync(p('h1'), p('h3'))
    tt.equal(fs.statSync(p('h2')).nlink, 3, 'nlink 3')
    fs.unlinkSync(p('h3'))
    tt.equal(fs.statSync(p('h1')).nlink, 2, 'nlink back to 2 after unlink')
    fs.writeFileSync(p('k1'), 'kept')
    fs.linkSync(p('k1'), p('k2'))
    fs.unlinkSync(p('k1'))
    tt.equal(fs.statSync(p('k2')).nlink, 1, 'nlink 1 after unlinking the other name')
    tt.equal(fs.readFileSync(p('k2'), 'utf8'), 'kept', 'content kept')
  })

  t.test('chmod, chown, utimens with nanoseconds', async tt => {
    const f = p('meta')
    fs.writeFileSync(f, 'm')
    fs.chmodSync(f, 0o4751)
    tt.equal(fs.statSync(f).mode & 0o7777, 0o4751, 'chmod incl. setuid bit')
    fs.chownSync(f, U, U + 1)
    const st = fs.statSync(f)
    tt.equal(st.uid, U, 'chown uid')
    tt.equal(st.gid, U + 1, 'chown gid')
    fs.chownSync(f, -1, 0)
    tt.equal(fs.statSync(f).uid, U, 'chown -1 keeps the uid')
    tt.equal(fs.statSync(f).gid, 0, 'chown gid only')

    const r1 = await run('touch', ['-d', '2001-02-03 04:05:06.123456789', f], { env: UTC })
    tt.equal(r1.code, 0, describe(r1))
    let s = fs.statSync(f, { bigint: true })
    const t1 = 981173106n * 1_000_000_000n + 123456789n
    tt.equal(s.mtimeNs, t1, 'mtime to the nanosecond')
    tt.equal(s.atimeNs, t1, 'atime to the nanosecond')
    const r2 = await run('touch', ['-m', '-d', '1999-12-31 23:59:59.000000001', f], { env: UTC })
    tt.equal(r2.code, 0, describe(r2))
    s = fs.statSync(f, { bigint: true })
    tt.equal(s.mtimeNs, 946684799n * 1_000_000_000n + 1n, 'touch -m sets mtime')
    tt.equal(s.atimeNs, t1, 'touch -m keeps atime')
    const r3 = await run('touch', ['-a', '-d', '1960-06-01 00:00:00.5', f], { env: UTC })
    tt.equal(r3.code, 0, describe(r3))
    s = fs.statSync(f, { bigint: true })
    tt.equal(s.atimeNs, -302486400n * 1_000_000_000n + 500_000_000n, 'touch -a sets a pre-1970 atime')
    tt.equal(s.mtimeNs, 946684799n * 1_000_000_000n + 1n, 'touch -a keeps mtime')
    const st2 = await run('stat', ['-c', '%x|%y', f], { env: UTC })
    tt.equal(st2.stdout.trim(), '1960-06-01 00:00:00.500000000 +0000|1999-12-31 23:59:59.000000001 +0000', 'stat(1) %x %y')
    const before = fs.statSync(f, { bigint: true }).ctimeNs
    fs.chmodSync(f, 0o644)
    tt.ok(fs.statSync(f, { bigint: true }).ctimeNs >= before, 'ctime moves forward on chmod')
  })

  t.test('statfs: df works', async tt => {
    const r = await run('df', ['-P', mntDir])
    tt.equal(r.code, 0, describe(r))
    tt.match(r.stdout, /reef/, 'df names the reef file system')
    const s = fs.statfsSync(mntDir)
    tt.ok(s.bsize > 0 && s.blocks > 0, 'statfs reports a size')
    tt.ok(s.bavail <= s.blocks, 'bavail within blocks')
    const l = await run('stat', ['-f', '-c', '%l', mntDir])
    tt.equal(l.stdout.trim(), '255', 'statfs namemax: 255 bytes per name')
  })

  t.test('user.* xattrs; other namespaces ENOTSUP', async tt => {
    const f = p('xa')
    fs.writeFileSync(f, 'x')
    let r = await run('setfattr', ['-n', 'user.color', '-v', 'blue', f])
    tt.equal(r.code, 0, describe(r))
    r = await run('setfattr', ['-n', 'user.empty', f])
    tt.equal(r.code, 0, describe(r))
    r = await run('getfattr', ['--only-values', '-n', 'user.color', f])
    tt.equal(r.stdout, 'blue', 'getxattr')
    r = await run('getfattr', ['-d', '--absolute-names', f])
    tt.match(r.stdout, /user\.color="blue"/, 'listxattr shows user.color')
    tt.match(r.stdout, /user\.empty/, 'listxattr shows an empty-valued attribute')
    r = await run('setfattr', ['-n', 'user.color', '-v', 'green', f])
    r = await run('getfattr', ['--only-values', '-n', 'user.color', f])
    tt.equal(r.stdout, 'green', 'setxattr replaces')
    r = await run('setfattr', ['-x', 'user.color', f])
    tt.equal(r.code, 0, describe(r))
    r = await run('getfattr', ['-n', 'user.color', f])
    tt.not(r.code, 0, 'removed attribute is gone')
    tt.match(r.stderr, /No such attribute/, 'ENODATA after removexattr')
    r = await run('setfattr', ['-x', 'user.never', f])
    tt.match(r.stderr, /No such attribute/, 'removexattr of a missing name: ENODATA')
    for (const ns of ['trusted.x', 'security.x']) {
      r = await run('setfattr', ['-n', ns, '-v', '1', f])
      tt.not(r.code, 0, `${ns} refused`)
      tt.match(r.stderr, /Operation not supported/, `${ns}: ENOTSUP/EOPNOTSUPP`)
    }
    r = await run('setfattr', ['-n', 'user.reef.guid', '-v', 'forged', f])
    tt.not(r.code, 0, 'user.reef.guid is read-only')
    alive(tt, 'xattr refusals')
  })

  t.test('access and EACCES as another uid (default_permissions)', async tt => {
    fs.mkdirSync(p('priv'), 0o700)
    fs.writeFileSync(p('priv', 'secret'), 's')
    fs.mkdirSync(p('pub'), 0o777)
    fs.chmodSync(p('pub'), 0o777)
    fs.writeFileSync(p('pub', 'readable'), 'r', { mode: 0o644 })
    tt.equal(errnoOf(() => fs.accessSync(p('pub', 'readable'), fs.constants.R_OK | fs.constants.W_OK)), 'OK', 'access R_OK|W_OK as root')
    tt.equal(errnoOf(() => fs.accessSync(p('nope'))), 'ENOENT', 'access of a missing file: ENOENT')
    let r = await run('ls', [p('priv')], { uid: U })
    tt.not(r.code, 0, 'uid 1234 cannot list a 0700 root dir')
    tt.match(r.stderr, /Permission denied/, 'EACCES on readdir')
    r = await run('cat', [p('priv', 'secret')], { uid: U })
    tt.match(r.stderr, /Permission denied/, 'EACCES on open inside')
    r = await run('touch', [p('priv', 'new')], { uid: U })
    tt.match(r.stderr, /Permission denied/, 'EACCES on create inside')
    tt.notOk(fs.existsSync(p('priv', 'new')), 'nothing created')
    r = await run('bash', ['-c', `echo more >> ${JSON.stringify(p('pub', 'readable'))}`], { uid: U })
    tt.match(r.stderr, /Permission denied/, 'EACCES writing a 0644 root file')
    r = await run('test', ['-w', p('pub', 'readable')], { uid: U })
    tt.equal(r.code, 1, 'access(W_OK) false for uid 1234')
    r = await run('cat', [p('pub', 'readable')], { uid: U })
    tt.equal(r.stdout, 'r', 'uid 1234 reads a 0644 file')
    r = await run('bash', ['-c', `echo mine > ${JSON.stringify(p('pub', 'mine'))}`], { uid: U })
    tt.equal(r.code, 0, describe(r))
    const st = fs.statSync(p('pub', 'mine'))
    tt.equal(st.uid, U, 'new file owned by the caller uid')
    tt.equal(st.gid, U, 'new file owned by the caller gid')
    r = await run('chmod', ['600', p('pub', 'readable')], { uid: U })
    tt.match(r.stderr, /Operation not permitted/, 'chmod of another user\'s file: EPERM')
  })

  t.test('absurd inputs: errno back, daemon keeps serving', async tt => {
    const f = p('absurd')
    fs.writeFileSync(f, 'abc')
    tt.equal(errnoOf(() => fs.truncateSync(f, 2 ** 50)), 'EFBIG', 'truncate to 2^50: EFBIG')
    alive(tt, 'truncate to 2^50')
    const fd = fs.openSync(f, 'r+')
    tt.equal(errnoOf(() => fs.ftruncateSync(fd, 2 ** 50)), 'EFBIG', 'ftruncate to 2^50: EFBIG')
    tt.equal(errnoOf(() => fs.writeSync(fd, Buffer.from('z'), 0, 1, 2 ** 50)), 'EFBIG', 'pwrite at 2^50: EFBIG')
    alive(tt, 'pwrite at 2^50')
    tt.equal(errnoOf(() => fs.writeSync(fd, Buffer.from('z'), 0, 1, 2 ** 44)), 'EFBIG', 'write at the maximum file size (2^44): EFBIG')
    fs.closeSync(fd)
    tt.equal(fs.readFileSync(f, 'utf8'), 'abc', 'refused writes changed nothing')
    tt.equal(fs.statSync(f).size, 3, 'size unchanged')
    // A write that straddles the maximum writes what fits and returns that short count, as Linux
    // does at a file system's s_maxbytes. Write-behind hands it to the synchronous path (the
    // queue could only acknowledge all of it); an O_SYNC write takes that path anyway. Whole pages:
    // the kernel splits a write at a partly written page, so `pwrite(2 bytes, 2^44 - 1)` would
    // reach the daemon as two requests, neither of them straddling. (libuv tries the remainder
    // itself, gets EFBIG and returns the count written.)
    const M = 2 ** 44
    const wb = async (): Promise<{ synchronous: number, deferred: number }> => {
      const r = await reef(dataDir, 'status', '--json')
      if (r.code !== 0) throw new Error(`reef status: ${describe(r)}`)
      return JSON.parse(r.stdout).writeBehind
    }
    for (const [how, flags] of [['write-behind', fs.constants.O_RDWR], ['O_SYNC', fs.constants.O_RDWR | fs.constants.O_SYNC]] as const) {
      const g = p(`straddle-${how}`)
      fs.writeFileSync(g, 'abc')
      const data = crypto.randomBytes(8192)
      const sync0 = await wb()
      const gd = fs.openSync(g, flags)
      tt.equal(fs.writeSync(gd, data, 0, 8192, M - 4096), 4096, `${how}: 8 KiB at 2^44 - 4 KiB write 4 KiB`)
      const sync1 = await wb()
      tt.equal(sync1.deferred, sync0.deferred, `${how}: not acknowledged from the write-behind queue`)
      tt.ok(sync1.synchronous > sync0.synchronous, `${how}: but applied the synchronous way`)
      tt.equal(errnoOf(() => fs.writeSync(gd, data, 4096, 4096, M)), 'EFBIG', `${how}: the rest, at 2^44: EFBIG`)
      tt.equal(fs.fstatSync(gd).size, M, `${how}: the file ends at the maximum`)
      const last = Buffer.alloc(8192)
      tt.equal(fs.readSync(gd, last, 0, 8192, M - 4096), 4096, `${how}: 4 KiB to read before the maximum`)
      tt.ok(last.subarray(0, 4096).equals(data.subarray(0, 4096)), `${how}: they are the first 4 KiB written`)
      // Back to 3 bytes before any fold, so no 16 TiB version is made.
      fs.ftruncateSync(gd, 3)
      fs.closeSync(gd)
      tt.equal(fs.readFileSync(g, 'utf8'), 'abc', `${how}: content intact below the maximum`)
    }
    alive(tt, 'straddling writes')
    const r = await run('mkfifo', ['-m', '0640', p('fifo')])
    tt.equal(r.code, 0, `mkfifo: ${r.stderr}`)
    tt.ok(fs.lstatSync(p('fifo')).isFIFO(), 'a FIFO')
    tt.equal(fs.lstatSync(p('fifo')).mode & 0o7777, 0o640, 'with its mode')
    // A writer and a reader, two processes, meet through it: the kernel carries the data.
    const [reader, writer] = await Promise.all([
      run('cat', [p('fifo')], { timeoutMs: 60_000 }),
      run('sh', ['-c', 'printf "through the fifo" > "$1"', 'sh', p('fifo')], { timeoutMs: 60_000 })
    ])
    tt.equal(writer.code, 0, `the writer: ${writer.stderr}`)
    tt.equal(reader.stdout, 'through the fifo', 'the reader gets what the writer wrote')
    // Folded, it is an entry of the version, and .reef/versions/ shows it as a FIFO.
    const synced = await reef(dataDir, 'sync', '--json')
    tt.equal(synced.code, 0, describe(synced))
    const seq = JSON.parse(synced.stdout).seq as string
    const old = fs.lstatSync(p('.reef', 'versions', seq, 'fifo'))
    tt.ok(old.isFIFO(), `.reef/versions/${seq}/fifo is a FIFO`)
    tt.equal(old.mode & 0o7777, 0o640, 'with its mode')
    alive(tt, 'a fifo')
    tt.same(m.unexpected(), [], 'no unexpected errors logged by the daemon')
  })

  t.test('remount: hard links and everything else survive', async tt => {
    const listing = (): string => {
      const rows: string[] = []
      const walk = (rel: string): void => {
        for (const n of fs.readdirSync(p(rel)).sort()) {
          if (rel === '' && n === '.reef') continue
          const q = path.join(rel, n)
          const s = fs.lstatSync(p(q), { bigint: true })
          const h = s.isFile() && s.size < 10_000_000n ? crypto.createHash('sha256').update(fs.readFileSync(p(q))).digest('hex') : ''
          rows.push(`${q} ${s.mode.toString(8)} ${s.nlink} ${s.uid}:${s.gid} ${s.size} ${s.mtimeNs} ${s.ino} ${h}`)
          if (s.isDirectory()) walk(q)
        }
      }
      walk('')
      return rows.join('\n')
    }
    const before = listing()
    tt.same(m.unexpected(), [], 'no unexpected errors before remount')
    const stopped = await m.stop()
    tt.equal(stopped.code, 0, `daemon exits 0 on SIGTERM: ${m.stderr()}`)
    m = await startMount(t, { dataDir, mnt: mntDir, foldInterval: 3600 })
    const after = listing()
    tt.equal(after, before, 'same tree (modes, nlink, owners, sizes, mtimes, inos, content) after remount')
    tt.equal(fs.statSync(p('h1')).ino, fs.statSync(p('h2')).ino, 'still one inode after remount')
    tt.equal(fs.statSync(p('h2')).nlink, 2, 'nlink 2 after remount')
    fs.unlinkSync(p('h1'))
    tt.equal(fs.statSync(p('h2')).nlink, 1, 'nlink 1 after unlink post-remount')
    tt.equal(fs.readFileSync(p('h2'), 'utf8'), 'ONE+two', 'content intact')
    tt.same(m.unexpected(), [], 'no unexpected errors after remount')
  })
}
