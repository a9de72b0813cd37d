// reef's own fuse3 addon passes names and symlink targets as raw bytes: a name that is not UTF-8
// (b'\xff\xfe.txt') must round-trip through create, readdir, stat, rename and unlink without
// colliding with the U+FFFD replacement a UTF-8 decode would make of it. Node's fs cannot name
// such a file, so python3 drives the syscalls with bytes paths.

import t from 'tap'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { tempDir } from './helpers/mount.js'
import { fuse3SkipReason, serveFuse3, unmountFuse3 } from './helpers/fuse3.js'

const exec = promisify(execFile)

// Each step prints one JSON line; names are reported as hex of their bytes.
const PY = `
import json, os, sys
mnt = sys.argv[1].encode()
odd = b'\\xff\\xfe.txt'
odd2 = b'\\xfe\\xff-renamed'
target = b'\\x80\\x81 nowhere'
replaced = '\\ufffd\\ufffd.txt'.encode()
out = {}
def p(*names): return os.path.join(mnt, *names)
fd = os.open(p(odd), os.O_CREAT | os.O_WRONLY, 0o644)
os.write(fd, b'odd bytes')
os.close(fd)
out['listed'] = sorted(n.hex() for n in os.listdir(mnt))
out['size'] = os.stat(p(odd)).st_size
out['read'] = open(p(odd), 'rb').read().decode()
out['replacedExists'] = os.path.exists(p(replaced))
open(p(replaced), 'wb').write(b'the replacement name')
out['bothSizes'] = [os.stat(p(odd)).st_size, os.stat(p(replaced)).st_size]
os.symlink(target, p(b'ln'))
out['readlink'] = os.readlink(p(b'ln')).hex()
out['lnSize'] = os.lstat(p(b'ln')).st_size
os.rename(p(odd), p(odd2))
out['afterRename'] = sorted(n.hex() for n in os.listdir(mnt))
out['renamedRead'] = open(p(odd2), 'rb').read().decode()
out['oldGone'] = not os.path.lexists(p(odd))
os.unlink(p(odd2))
out['afterUnlink'] = sorted(n.hex() for n in os.listdir(mnt))
print(json.dumps(out))
`

const hex = (s: string): string => Buffer.from(s, 'latin1').toString('hex')

const reason = fuse3SkipReason()
if (reason) {
  t.plan(0, reason)
} else {
  t.test('a name that is not UTF-8 round-trips as bytes', async (t) => {
    const mnt = path.join(tempDir(t, 'reef-fuse3n-'), 'mnt')
    fs.mkdirSync(mnt)
    const served = await serveFuse3(t, mnt, 'rw')
    const out = JSON.parse((await exec('python3', ['-c', PY, mnt])).stdout)
    const odd = hex('\xff\xfe.txt')
    const odd2 = hex('\xfe\xff-renamed')
    const replaced = Buffer.from('\ufffd\ufffd.txt').toString('hex')
    const base = [hex('hello.txt'), hex('sub')]
    t.same(out.listed, [...base, odd].sort(), 'readdir lists the exact bytes')
    t.equal(out.size, 9, 'stat by the odd name')
    t.equal(out.read, 'odd bytes', 'read by the odd name')
    t.equal(out.replacedExists, false, 'its UTF-8-decoded twin (U+FFFD U+FFFD) does not exist')
    t.same(out.bothSizes, [9, 20], 'the twin is a second, distinct file')
    t.equal(out.readlink, hex('\x80\x81 nowhere'), 'a symlink target that is not UTF-8, byte for byte')
    t.equal(out.lnSize, 10, "the link's size is its target's byte count")
    t.same(out.afterRename, [...base, hex('ln'), odd2, replaced].sort(), 'rename from and to odd names')
    t.equal(out.renamedRead, 'odd bytes', 'the renamed file keeps its bytes')
    t.equal(out.oldGone, true, 'the old odd name is gone')
    t.same(out.afterUnlink, [...base, hex('ln'), replaced].sort(), 'unlink by an odd name')
    const { renames } = await served.stats()
    t.ok(renames.some(([a, b]) => hex(a) === odd && hex(b) === odd2), 'JS saw both names as their bytes')
    t.equal(await unmountFuse3(served, mnt), 0, 'the server exits cleanly')
  })
}
