// reef's own fuse3 addon (mount/fuse3.ts over mount/native/fuse3): a read-only in-memory tree
// served from JS in a child (test/fixtures/fuse3-tree.mjs), seen through the kernel from here.
// The inode numbers the tree hands out must be the ones stat shows, and the kernel must give
// them back as FORGETs once it drops its caches.

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { tempDir, isMounted } from './helpers/mount.js'
import { fuse3SkipReason, serveFuse3, unmountFuse3 } from './helpers/fuse3.js'

const reason = fuse3SkipReason()
if (reason) {
  t.plan(0, reason)
} else {
  t.test('a tree served over the low-level API, inode-addressed', async (t) => {
    const mnt = path.join(tempDir(t, 'reef-fuse3-'), 'mnt')
    fs.mkdirSync(mnt)
    const served = await serveFuse3(t, mnt)
    const { stats } = served
    t.ok(isMounted(mnt), 'mounted')

    t.same(fs.readdirSync(mnt).sort(), ['hello.txt', 'sub'], 'ls of the root')
    const hello = fs.statSync(path.join(mnt, 'hello.txt'))
    t.equal(hello.ino, 1001, 'stat shows the inode number JS gave')
    t.ok(hello.isFile(), 'a regular file')
    t.equal(hello.mode & 0o777, 0o444, 'its mode')
    t.equal(fs.statSync(path.join(mnt, 'sub')).ino, 1002, 'a directory\'s inode number')
    t.equal(fs.readFileSync(path.join(mnt, 'hello.txt'), 'utf8'), 'hello from reef over libfuse3\n', 'file bytes')

    const sub = fs.readdirSync(path.join(mnt, 'sub'), { withFileTypes: true })
      .map((d) => `${d.name}:${d.isDirectory() ? 'd' : 'f'}`).sort()
    t.same(sub, ['b.txt:f', 'deep:d'], 'readdir of a nested dir, with types')
    t.same(fs.readdirSync(path.join(mnt, 'sub', 'deep')), ['big.bin'], 'readdir two levels down')
    const big = fs.readFileSync(path.join(mnt, 'sub', 'deep', 'big.bin'))
    const want = Buffer.alloc(200_000)
    for (let i = 0; i < want.length; i++) want[i] = (i * 31 + 7) & 0xff
    t.ok(big.equals(want), '200,000 bytes read in many requests, at their offsets')
    t.equal(fs.statSync(path.join(mnt, 'sub', 'deep', 'big.bin')).ino, 1005, 'a nested file\'s inode')

    t.throws(() => fs.statSync(path.join(mnt, 'missing')), { code: 'ENOENT' }, 'a missing name')
    t.throws(() => fs.statSync(path.join(mnt, 'sub', 'nope')), { code: 'ENOENT' }, 'a missing nested name')
    t.equal(fs.statfsSync(mnt).files, 6, 'statfs answered from JS')
    t.throws(() => fs.statSync(path.join(mnt, 'boom')), { code: 'EIO' }, 'a throwing handler answers EIO')
    t.equal(fs.statSync(path.join(mnt, 'hello.txt')).ino, 1001, 'and the mount still serves')

    const before = await stats()
    // b.txt was only listed (READDIR, not READDIRPLUS), never looked up.
    t.same(before.lookups.map(([ino]) => ino).sort(), [1001, 1002, 1003, 1005], 'the inodes JS handed out through lookup')
    t.ok(before.uids.includes(0), 'requests carry the caller\'s uid')

    // The kernel gives back what it no longer holds: dentries and inodes dropped, FORGETs sent.
    let after = before
    for (const deadline = Date.now() + 30_000; after.forgotten.length === 0 && Date.now() < deadline;) {
      fs.writeFileSync('/proc/sys/vm/drop_caches', '2')
      after = await stats()
    }
    const handedOut = new Set(before.lookups.map(([ino]) => ino))
    t.ok(after.forgotten.length > 0, `FORGET for ${after.forgotten.length} inodes`)
    t.ok(after.forgotten.every(([ino]) => handedOut.has(ino)), 'only for inodes JS handed out')
    const looked = new Map(after.lookups)
    t.ok(after.forgotten.every(([ino, n]) => n === looked.get(ino)), 'each FORGET gives back all of that inode\'s lookups')

    t.equal(await unmountFuse3(served, mnt), 0, 'the server exits cleanly')
    t.notOk(isMounted(mnt), 'unmounted')
  })
}
