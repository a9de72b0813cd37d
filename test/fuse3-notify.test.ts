// Kernel notifications from JS through reef's own fuse3 addon. The fixture serves with hour-long
// attribute and entry timeouts and keep_cache opens, so the kernel trusts what it cached; the
// fixture then changes its tree behind the kernel's back (stale reads and stats prove the cache
// holds), and invalInode / invalEntry / deleteEntry make the change show. The last case is the
// deadlock the notify thread exists for: an inval_entry while a LOOKUP in the same directory
// waits for JS (the kernel holds the directory's lock for both).

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { tempDir, errnoOf } from './helpers/mount.js'
import { fuse3SkipReason, serveFuse3, unmountFuse3 } from './helpers/fuse3.js'

const HELLO = 1001
const SUB = 1002
const DEEP = 1003
const BIG = 1005

const reason = fuse3SkipReason()
if (reason) {
  t.plan(0, reason)
} else {
  t.test('invalidations sent from JS', async (t) => {
    const mnt = path.join(tempDir(t, 'reef-fuse3i-'), 'mnt')
    fs.mkdirSync(mnt)
    const served = await serveFuse3(t, mnt, 'rw', { ttl: 3600, open: 'keep' })
    const p = (...names: string[]): string => path.join(mnt, ...names)

    t.test('invalInode drops cached pages, then attributes', async (t) => {
      const before = 'hello from reef over libfuse3\n'
      t.equal(fs.readFileSync(p('hello.txt'), 'utf8'), before, 'read once: pages cached')
      const same = before.toUpperCase()
      await served.ask('setData', { ino: HELLO, data: same })
      t.equal(fs.readFileSync(p('hello.txt'), 'utf8'), before, 'changed behind the kernel: the cached pages are stale')
      await served.ask('invalInode', { ino: HELLO, off: 0, len: 0 })
      t.equal(fs.readFileSync(p('hello.txt'), 'utf8'), same, 'after invalInode(ino): the new bytes')

      // A read marks the cached atime stale (the next stat asks again); stat once to settle it.
      t.equal(fs.statSync(p('hello.txt')).size, before.length, 'the attributes, asked once more after the read')
      const longer = 'a longer content, forty-two bytes long..\n'
      await served.ask('setData', { ino: HELLO, data: longer })
      t.equal(fs.statSync(p('hello.txt')).size, before.length, 'the cached size is stale')
      await served.ask('invalInode', { ino: HELLO, off: -1, len: 0 })
      t.equal(fs.statSync(p('hello.txt')).size, longer.length, 'after invalInode(ino, -1): the new size')
    })

    t.test('invalEntry drops a cached name', async (t) => {
      const old = fs.statSync(p('sub', 'b.txt')).ino
      const fresh = await served.ask('replaceBehind', { parent: SUB, name: 'b.txt', data: 'replaced' }) as number
      t.equal(fs.statSync(p('sub', 'b.txt')).ino, old, 'the name still resolves to the cached inode')
      await served.ask('invalEntry', { parent: SUB, name: 'b.txt' })
      t.equal(fs.statSync(p('sub', 'b.txt')).ino, fresh, 'after invalEntry: looked up again, the new inode')
      t.equal(fs.readFileSync(p('sub', 'b.txt'), 'utf8'), 'replaced', 'and its bytes')
    })

    t.test('deleteEntry makes a cached name disappear', async (t) => {
      t.equal(fs.statSync(p('sub', 'deep', 'big.bin')).ino, BIG, 'cached')
      t.equal(await served.ask('unlinkBehind', { parent: DEEP, name: 'big.bin' }), BIG, 'removed behind the kernel')
      t.equal(fs.statSync(p('sub', 'deep', 'big.bin')).ino, BIG, 'the kernel still shows it')
      await served.ask('deleteEntry', { parent: DEEP, child: BIG, name: 'big.bin' })
      t.equal(errnoOf(() => fs.statSync(p('sub', 'deep', 'big.bin'))), 'ENOENT', 'after deleteEntry: gone')
    })

    t.test('an inval_entry while a LOOKUP in the same directory waits for JS', async (t) => {
      await served.ask('park', { name: 'slow' })
      const stat = fs.promises.stat(p('slow')).then(() => 'OK', (e: NodeJS.ErrnoException) => e.code)
      let parked = false
      for (const deadline = Date.now() + 30_000; !parked && Date.now() < deadline;) {
        parked = await served.ask('isParked', { name: 'slow' }) as boolean
      }
      t.ok(parked, 'a LOOKUP in / is waiting for JS')
      t.equal(await served.ask('invalWhileParked', { name: 'slow', parent: 1, other: 'hello.txt' }), true,
        'invalEntry(/, hello.txt) returned at once, the LOOKUP was answered, then the kernel processed the notification')
      t.equal(await stat, 'ENOENT', 'the held LOOKUP got its answer')
      t.ok(fs.statSync(p('hello.txt')).isFile(), 'the mount still serves')
    })

    t.test('unmount', async (t) => {
      t.equal(await unmountFuse3(served, mnt), 0, 'the server exits cleanly')
    })
  })
}
