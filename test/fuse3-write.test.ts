// reef's own fuse3 addon, read-write: test/fixtures/fuse3-tree.mjs in 'rw' mode is a small
// in-memory file system on mount/fuse3.ts, and every mutating op is checked here through the
// kernel: create/write/read, mkdir/rmdir, symlink/readlink, link, unlink, setattr (chmod, chown,
// truncate, utimens with UTIME_NOW/UTIME_OMIT), xattrs, access, renameat2's RENAME_NOREPLACE and
// RENAME_EXCHANGE (which fuse-native cannot pass on), and READDIRPLUS's lookup counts coming back
// as FORGETs.

import t from 'tap'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { tempDir, errnoOf } from './helpers/mount.js'
import { fuse3SkipReason, serveFuse3, unmountFuse3 } from './helpers/fuse3.js'

const exec = promisify(execFile)
const RENAME_NOREPLACE = 1
const RENAME_EXCHANGE = 2

// renameat2 and raw getxattr (size probe, ERANGE) through libc: Node has neither.
const PY = `
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def err(r):
    return 0 if r >= 0 else errno.errorcode[ctypes.get_errno()]
op, a = sys.argv[1], sys.argv[2].encode()
if op == 'renameat2':
    print(err(libc.renameat2(-100, a, -100, sys.argv[3].encode(), int(sys.argv[4]))))
elif op == 'getxattr':
    size = int(sys.argv[4])
    buf = ctypes.create_string_buffer(max(size, 1))
    r = libc.getxattr(a, sys.argv[3].encode(), buf if size else None, ctypes.c_size_t(size))
    print(r if r >= 0 else err(r))
elif op == 'setxattr':
    v = sys.argv[4].encode()
    print(err(libc.setxattr(a, sys.argv[3].encode(), v, ctypes.c_size_t(len(v)), int(sys.argv[5]))))
`
async function py (...args: string[]): Promise<string> {
  return (await exec('python3', ['-c', PY, ...args])).stdout.trim()
}

const reason = fuse3SkipReason()
if (reason) {
  t.plan(0, reason)
} else {
  t.test('a read-write file system on the low-level API', async (t) => {
    const mnt = path.join(tempDir(t, 'reef-fuse3w-'), 'mnt')
    fs.mkdirSync(mnt)
    const served = await serveFuse3(t, mnt, 'rw')
    const p = (...names: string[]): string => path.join(mnt, ...names)

    t.test('create, write, read back', async (t) => {
      fs.writeFileSync(p('new.txt'), 'written through libfuse3\n')
      t.equal(fs.readFileSync(p('new.txt'), 'utf8'), 'written through libfuse3\n', 'the bytes come back')
      const st = fs.statSync(p('new.txt'))
      t.ok(st.ino >= 2000, `an inode number JS made up (${st.ino})`)
      t.equal(st.mode & 0o170000, 0o100000, 'a regular file')
      const fd = fs.openSync(p('new.txt'), 'r+')
      fs.writeSync(fd, 'WRITTEN', 0)
      fs.writeSync(fd, Buffer.from('tail'), 0, 4, 100_000)
      fs.fsyncSync(fd)
      fs.closeSync(fd)
      const data = fs.readFileSync(p('new.txt'))
      t.equal(data.length, 100_004, 'a write past the end grows the file')
      t.equal(data.subarray(0, 25).toString(), 'WRITTEN through libfuse3\n', 'an overwrite at offset 0')
      t.equal(data.subarray(100_000).toString(), 'tail', 'a write at an offset')
      t.ok(data.subarray(25, 100_000).every((b) => b === 0), 'the gap reads as zeros')
      const big = Buffer.alloc(300_000)
      for (let i = 0; i < big.length; i++) big[i] = (i * 13 + 5) & 0xff
      fs.writeFileSync(p('big.bin'), big)
      t.ok(fs.readFileSync(p('big.bin')).equals(big), '300,000 bytes in many WRITEs, read back')
      const { seen } = await served.stats()
      t.ok(seen.fsync > 0, 'fsync reached JS')
      t.ok(seen.flush > 0, 'close flushed through JS')
    })

    t.test('mkdir and rmdir', async (t) => {
      fs.mkdirSync(p('d'), { mode: 0o750 })
      const st = fs.statSync(p('d'))
      t.ok(st.isDirectory(), 'a directory')
      t.equal(st.mode & 0o777, 0o750 & ~process.umask(), 'its mode, umask applied by the kernel')
      fs.writeFileSync(p('d', 'f'), 'x')
      t.same(fs.readdirSync(p('d')), ['f'], 'a file inside')
      t.equal(errnoOf(() => fs.rmdirSync(p('d'))), 'ENOTEMPTY', 'rmdir of a non-empty dir')
      fs.unlinkSync(p('d', 'f'))
      fs.rmdirSync(p('d'))
      t.equal(errnoOf(() => fs.statSync(p('d'))), 'ENOENT', 'gone after rmdir')
      t.notOk(fs.readdirSync(mnt).includes('d'), 'and from the listing')
    })

    t.test('symlink and readlink', async (t) => {
      fs.symlinkSync('hello.txt', p('ln'))
      t.equal(fs.readlinkSync(p('ln')), 'hello.txt', 'readlink')
      t.ok(fs.lstatSync(p('ln')).isSymbolicLink(), 'lstat: a symlink')
      t.equal(fs.readFileSync(p('ln'), 'utf8'), 'hello from reef over libfuse3\n', 'followed')
      t.equal(errnoOf(() => fs.readlinkSync(p('hello.txt'))), 'EINVAL', 'readlink of a file')
    })

    t.test('link and unlink', async (t) => {
      fs.writeFileSync(p('a'), 'shared')
      fs.linkSync(p('a'), p('sub', 'a2'))
      const a = fs.statSync(p('a'))
      const a2 = fs.statSync(p('sub', 'a2'))
      t.equal(a2.ino, a.ino, 'the same inode')
      t.equal(a.nlink, 2, 'nlink 2')
      t.equal(fs.readFileSync(p('sub', 'a2'), 'utf8'), 'shared', 'the same bytes')
      t.equal(errnoOf(() => fs.linkSync(p('a'), p('hello.txt'))), 'EEXIST', 'link onto a name in use')
      fs.unlinkSync(p('a'))
      t.equal(errnoOf(() => fs.statSync(p('a'))), 'ENOENT', 'unlinked')
      t.equal(fs.statSync(p('sub', 'a2')).nlink, 1, 'the other name: nlink 1')
      t.equal(fs.readFileSync(p('sub', 'a2'), 'utf8'), 'shared', 'and still its bytes')
      t.equal(errnoOf(() => fs.unlinkSync(p('sub'))), 'EISDIR', 'unlink of a directory')
    })

    t.test('setattr: chmod, chown, truncate, utimens', async (t) => {
      fs.writeFileSync(p('s.txt'), 'abcdefgh')
      fs.chmodSync(p('s.txt'), 0o600)
      t.equal(fs.statSync(p('s.txt')).mode & 0o7777, 0o600, 'chmod')
      t.ok(fs.statSync(p('s.txt')).isFile(), 'chmod keeps the file type')
      fs.chownSync(p('s.txt'), 1234, 5678)
      const owned = fs.statSync(p('s.txt'))
      t.same([owned.uid, owned.gid], [1234, 5678], 'chown')
      fs.chownSync(p('s.txt'), -1, 42)
      const regrouped = fs.statSync(p('s.txt'))
      t.same([regrouped.uid, regrouped.gid], [1234, 42], 'chown of the group only keeps the owner')
      fs.truncateSync(p('s.txt'), 3)
      t.equal(fs.statSync(p('s.txt')).size, 3, 'truncate: size')
      t.equal(fs.readFileSync(p('s.txt'), 'utf8'), 'abc', 'truncate: bytes')
      const fd = fs.openSync(p('s.txt'), 'r+')
      fs.ftruncateSync(fd, 6)
      fs.closeSync(fd)
      t.same([...fs.readFileSync(p('s.txt'))], [97, 98, 99, 0, 0, 0], 'ftruncate grows with zeros')
      fs.utimesSync(p('s.txt'), 1000, 2000)
      const times = fs.statSync(p('s.txt'))
      t.same([times.atimeMs, times.mtimeMs], [1_000_000, 2_000_000], 'utimens with explicit times')
      await exec('touch', ['-m', '-d', '@5000', p('s.txt')])
      const omit = fs.statSync(p('s.txt'))
      t.same([omit.atimeMs, omit.mtimeMs], [1_000_000, 5_000_000], 'touch -m: atime left out (UTIME_OMIT)')
      await exec('touch', [p('s.txt')])
      const now = fs.statSync(p('s.txt'))
      t.ok(now.atimeMs > 1_600_000_000_000 && now.mtimeMs > 1_600_000_000_000, `touch: both times now (UTIME_NOW): ${now.atimeMs} ${now.mtimeMs}`)
    })

    t.test('xattrs', async (t) => {
      fs.writeFileSync(p('x.txt'), 'x')
      t.equal(await py('setxattr', p('x.txt'), 'user.color', 'blue-green', '0'), '0', 'setxattr')
      t.equal(await py('getxattr', p('x.txt'), 'user.color', '0'), '10', 'size 0 asks for the length')
      t.equal(await py('getxattr', p('x.txt'), 'user.color', '4'), 'ERANGE', 'a buffer too small')
      t.equal(await py('getxattr', p('x.txt'), 'user.color', '64'), '10', 'the value read into a buffer')
      const got = await exec('python3', ['-c', 'import os,sys; print(os.getxattr(sys.argv[1], "user.color").decode())', p('x.txt')])
      t.equal(got.stdout.trim(), 'blue-green', 'the value')
      t.equal(await py('setxattr', p('x.txt'), 'user.color', 'red', '1'), 'EEXIST', 'XATTR_CREATE on an existing name')
      t.equal(await py('setxattr', p('x.txt'), 'user.size', 'L', '2'), 'ENODATA', 'XATTR_REPLACE on a missing name')
      t.equal(await py('setxattr', p('x.txt'), 'user.size', 'L', '0'), '0', 'a second name')
      const list = await exec('python3', ['-c', 'import os,sys; print(",".join(sorted(os.listxattr(sys.argv[1]))))', p('x.txt')])
      t.equal(list.stdout.trim(), 'user.color,user.size', 'listxattr')
      await exec('python3', ['-c', 'import os,sys; os.removexattr(sys.argv[1], "user.color")', p('x.txt')])
      t.equal(await py('getxattr', p('x.txt'), 'user.color', '0'), 'ENODATA', 'removexattr')
      const left = await exec('python3', ['-c', 'import os,sys; print(",".join(os.listxattr(sys.argv[1])))', p('x.txt')])
      t.equal(left.stdout.trim(), 'user.size', 'the other name stays')
    })

    t.test('access is asked of JS', async (t) => {
      fs.writeFileSync(p('ro.txt'), 'r')
      fs.chmodSync(p('ro.txt'), 0o444)
      t.equal(errnoOf(() => fs.accessSync(p('ro.txt'), fs.constants.W_OK)), 'EACCES', 'even root is refused: the handler said so')
      t.equal(errnoOf(() => fs.accessSync(p('ro.txt'), fs.constants.R_OK)), 'OK', 'reading is allowed')
      t.ok((await served.stats()).seen.access >= 2, 'both reached JS')
    })

    t.test('renameat2: RENAME_NOREPLACE and RENAME_EXCHANGE', async (t) => {
      fs.writeFileSync(p('r1'), 'one')
      fs.writeFileSync(p('r2'), 'two')
      t.equal(await py('renameat2', p('r1'), p('r2'), String(RENAME_NOREPLACE)), 'EEXIST', 'NOREPLACE onto an existing name')
      t.equal(fs.readFileSync(p('r2'), 'utf8'), 'two', 'the target is untouched')
      t.equal(fs.readFileSync(p('r1'), 'utf8'), 'one', 'the source stays')
      t.equal(await py('renameat2', p('r1'), p('r3'), String(RENAME_NOREPLACE)), '0', 'NOREPLACE onto a free name')
      t.equal(fs.readFileSync(p('r3'), 'utf8'), 'one', 'moved')
      t.equal(errnoOf(() => fs.statSync(p('r1'))), 'ENOENT', 'the old name is gone')

      const i3 = fs.statSync(p('r3')).ino
      const i2 = fs.statSync(p('r2')).ino
      t.equal(await py('renameat2', p('r3'), p('r2'), String(RENAME_EXCHANGE)), '0', 'EXCHANGE')
      t.equal(fs.readFileSync(p('r3'), 'utf8'), 'two', 'the first name has the second file')
      t.equal(fs.readFileSync(p('r2'), 'utf8'), 'one', 'the second name has the first file')
      t.same([fs.statSync(p('r3')).ino, fs.statSync(p('r2')).ino], [i2, i3], 'inode numbers swapped')
      fs.mkdirSync(p('xd'))
      t.equal(await py('renameat2', p('r2'), p('xd'), String(RENAME_EXCHANGE)), '0', 'EXCHANGE of a file and a directory')
      t.ok(fs.statSync(p('r2')).isDirectory() && fs.statSync(p('xd')).isFile(), 'swapped kinds')
      t.equal(await py('renameat2', p('r2'), p('nothere'), String(RENAME_EXCHANGE)), 'ENOENT', 'EXCHANGE needs both names')

      fs.renameSync(p('r3'), p('sub', 'moved'))
      t.equal(fs.readFileSync(p('sub', 'moved'), 'utf8'), 'two', 'a plain rename across directories')
      const { renames } = await served.stats()
      t.ok(renames.some(([a, b, f]) => a === 'r1' && b === 'r3' && f === RENAME_NOREPLACE), 'JS got RENAME_NOREPLACE')
      t.ok(renames.some(([a, b, f]) => a === 'r3' && b === 'r2' && f === RENAME_EXCHANGE), 'JS got RENAME_EXCHANGE')
      t.ok(renames.some(([a, b, f]) => a === 'r3' && b === 'moved' && f === 0), 'and 0 for rename(2)')
    })

    t.test('READDIRPLUS entries count as lookups, and come back as FORGETs', async (t) => {
      fs.mkdirSync(p('plus'))
      for (const n of ['p1', 'p2', 'p3']) fs.writeFileSync(p('plus', n), n)
      // Let the kernel forget everything first, so the listing below is what hands the files out.
      const settled = async (inos: number[]): Promise<boolean> => {
        const s = await served.stats()
        const looked = new Map(s.lookups)
        const gone = new Map(s.forgotten)
        return inos.every((ino) => (looked.get(ino) ?? 0) === (gone.get(ino) ?? 0))
      }
      const dirIno = fs.statSync(p('plus')).ino
      const files = ['p1', 'p2', 'p3'].map((n) => fs.statSync(p('plus', n)).ino)
      // The directory too: counting its '.' entry would leave it a lookup FORGET never returns.
      const inos = [dirIno, ...files]
      const dropUntilSettled = async (what: string): Promise<void> => {
        let ok = false
        for (const deadline = Date.now() + 60_000; !ok && Date.now() < deadline;) {
          fs.writeFileSync('/proc/sys/vm/drop_caches', '2')
          ok = await settled(inos)
        }
        t.ok(ok, what)
      }
      await dropUntilSettled('the created files are forgotten: FORGETs equal lookups')

      const before = await served.stats()
      const plusBefore = new Map(before.viaPlus)
      const listed = fs.readdirSync(p('plus'), { withFileTypes: true })
      t.same(listed.map((d) => `${d.name}:${d.isFile() ? 'f' : '?'}`).sort(), ['p1:f', 'p2:f', 'p3:f'], 'the listing, with types')
      const mid = await served.stats()
      t.ok(mid.seen.readdirplus > before.seen.readdirplus, 'the kernel listed with READDIRPLUS')
      const plusMid = new Map(mid.viaPlus)
      t.ok(files.every((ino) => (plusMid.get(ino) ?? 0) > (plusBefore.get(ino) ?? 0)), 'each file counted as a lookup by the listing')
      t.equal(plusMid.get(dirIno) ?? 0, plusBefore.get(dirIno) ?? 0, "'.' does not count")
      t.notOk(plusMid.has(1), "'..' (the root) does not count")

      await dropUntilSettled('after the listing, FORGETs again equal lookups (readdirplus ones included)')
    })

    t.test('unmount', async (t) => {
      t.equal(await unmountFuse3(served, mnt), 0, 'the server exits cleanly')
    })
  })
}
