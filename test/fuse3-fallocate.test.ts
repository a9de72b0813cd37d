// FALLOCATE through reef's own fuse3 addon: posix_fallocate and fallocate(2) with
// FALLOC_FL_KEEP_SIZE and FALLOC_FL_PUNCH_HOLE reach the fixture's `fallocate(ino, fh, mode, off,
// length)` with the caller's mode, and a mode the handler refuses comes back as its errno; lseek's
// SEEK_DATA/SEEK_HOLE are answered by the fixture's `lseek` (it knows the punched hole).

import t from 'tap'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { tempDir } from './helpers/mount.js'
import { fuse3SkipReason, serveFuse3, unmountFuse3 } from './helpers/fuse3.js'

const exec = promisify(execFile)
const KEEP_SIZE = 1
const PUNCH_HOLE = 2
const ZERO_RANGE = 0x10

// fallocate(fd, mode, off, len) through libc, printing 0 or the errno's name.
const PY = `
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
path, mode, off, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_RDWR)
if mode < 0:
    try:
        os.posix_fallocate(fd, off, length)
        print(0)
    except OSError as e:
        print(errno.errorcode[e.errno])
else:
    r = libc.fallocate(fd, mode, ctypes.c_long(off), ctypes.c_long(length))
    print(0 if r == 0 else errno.errorcode[ctypes.get_errno()])
os.close(fd)
`
async function fallocate (file: string, mode: number, off: number, length: number): Promise<string> {
  return (await exec('python3', ['-c', PY, file, String(mode), String(off), String(length)])).stdout.trim()
}

const reason = fuse3SkipReason()
if (reason) {
  t.plan(0, reason)
} else {
  t.test('fallocate reaches JS with its mode', async (t) => {
    const mnt = path.join(tempDir(t, 'reef-fuse3f-'), 'mnt')
    fs.mkdirSync(mnt)
    const served = await serveFuse3(t, mnt, 'rw')
    const f = path.join(mnt, 'f.bin')
    fs.writeFileSync(f, Buffer.alloc(8192, 0x61))

    t.equal(await fallocate(f, -1, 0, 1 << 20), '0', 'posix_fallocate of 1 MiB')
    t.equal(fs.statSync(f).size, 1 << 20, 'the file grew to 1 MiB')
    let seen = (await served.stats()).seen.fallocate
    t.same(seen.at(-1), [0, 0, 1 << 20], 'JS got mode 0, offset 0, length 1 MiB (not a glibc emulation by writes)')

    t.equal(await fallocate(f, KEEP_SIZE, 0, 4 << 20), '0', 'FALLOC_FL_KEEP_SIZE past the end')
    t.equal(fs.statSync(f).size, 1 << 20, 'the size stays')
    t.equal(await fallocate(f, KEEP_SIZE | PUNCH_HOLE, 4096, 4096), '0', 'PUNCH_HOLE of the second 4 KiB')
    const data = fs.readFileSync(f)
    t.ok(data.subarray(0, 4096).every((b) => b === 0x61), 'the first 4 KiB keep their bytes')
    t.ok(data.subarray(4096, 8192).every((b) => b === 0), 'the punched range reads as zeros')
    t.match(await fallocate(f, ZERO_RANGE, 0, 4096), /^(EOPNOTSUPP|ENOTSUP)$/, "a mode the handler refuses answers the handler's errno")
    seen = (await served.stats()).seen.fallocate
    t.same(seen.slice(-3), [[KEEP_SIZE, 0, 4 << 20], [KEEP_SIZE | PUNCH_HOLE, 4096, 4096], [ZERO_RANGE, 0, 4096]], 'each mode as the caller gave it')
    const seek = async (off: number, whence: string): Promise<string> => (await exec('python3', ['-c', `
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    print(os.lseek(fd, int(sys.argv[2]), getattr(os, sys.argv[3])))
except OSError as e:
    print(errno.errorcode[e.errno])
`, f, String(off), whence])).stdout.trim()
    t.equal(await seek(0, 'SEEK_HOLE'), '4096', 'lseek SEEK_HOLE from 0 finds the punched hole (the kernel alone says the end)')
    t.equal(await seek(0, 'SEEK_DATA'), '0', 'SEEK_DATA from 0')
    t.equal(await seek(4096, 'SEEK_DATA'), 'ENXIO', 'no data after the hole (the rest is zeros)')
    t.equal(await seek(2 << 20, 'SEEK_DATA'), 'ENXIO', 'past the end')
    t.equal(await unmountFuse3(served, mnt), 0, 'the server exits cleanly')
  })

}
