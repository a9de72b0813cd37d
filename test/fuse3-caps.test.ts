// Init capabilities chosen from JS (mountLowLevel's `caps`), each checked by what INIT granted
// and by one effect seen through the kernel: request sizes (maxWrite, maxRead), zero-message
// opens (noOpen, noOpendir), the writeback cache coalescing small writes, splice keeping bytes
// intact, and security.* getxattr answered in C (noSecurityXattrs). A mount with the defaults is the control for each effect.

import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { tempDir } from './helpers/mount.js'
import { fuse3SkipReason, serveFuse3, unmountFuse3, type Fuse3Child, type Fuse3Config } from './helpers/fuse3.js'

const exec = promisify(execFile)
const MiB = 1 << 20

// Writes `count` chunks of `size` bytes to a new file with one write(2) each, through one fd.
async function writeChunks (file: string, count: number, size: number): Promise<void> {
  await exec('python3', ['-c', `
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
for i in range(int(sys.argv[2])):
    assert os.write(fd, bytes([i % 251]) * int(sys.argv[3])) == int(sys.argv[3])
os.close(fd)
`, file, String(count), String(size)])
}

interface Granted { writebackCache: boolean, noOpen: boolean, noOpendir: boolean, parallelDirops: boolean, splice: boolean, maxWrite: number, maxRead: number, maxBackground: number, congestionThreshold: number }

async function serve (t: Test, cfg: Fuse3Config): Promise<{ served: Fuse3Child, mnt: string, granted: Granted }> {
  const mnt = path.join(tempDir(t, 'reef-fuse3c-'), 'mnt')
  fs.mkdirSync(mnt)
  const served = await serveFuse3(t, mnt, 'rw', cfg)
  return { served, mnt, granted: await served.ask('granted') as Granted }
}

// The WRITE sizes JS saw while `fn` ran.
async function writesDuring (served: Fuse3Child, fn: () => Promise<void>): Promise<number[]> {
  const before = (await served.stats()).seen.writes.length
  await fn()
  return (await served.stats()).seen.writes.slice(before)
}

const reason = fuse3SkipReason()
if (reason) {
  t.plan(0, reason)
} else {
  t.test('the defaults (the control mount)', async (t) => {
    const { served, mnt, granted } = await serve(t, {})
    t.equal(granted.writebackCache, false, 'no writeback cache unless asked')
    t.equal(granted.noOpen, false, 'no zero-message opens unless asked')
    t.equal(granted.maxWrite, MiB, 'maxWrite: 1 MiB, libfuse\'s buffer')
    const big = await writesDuring(served, async () => await writeChunks(path.join(mnt, 'w1'), 1, MiB))
    t.same(big, [MiB], 'a 1 MiB write(2) arrives as one WRITE')
    const small = await writesDuring(served, async () => await writeChunks(path.join(mnt, 'w2'), 64, 1024))
    t.equal(small.length, 64, 'without the writeback cache, 64 writes of 1 KiB are 64 WRITEs')
    const xattrs = (await served.stats()).seen.getxattr
    t.ok(xattrs.includes('security.capability'), 'the kernel asked JS for security.capability around the writes')

    t.equal(await unmountFuse3(served, mnt), 0, 'unmounted')
  })

  t.test('zero-message opens, request sizes, security xattrs in C', async (t) => {
    const caps = { noOpen: true, noOpendir: true, maxWrite: 131072, maxRead: 16384, noSecurityXattrs: true, maxBackground: 20, congestionThreshold: 15 }
    const { served, mnt, granted } = await serve(t, { caps, open: 'enosys' })
    t.same(granted, { ...granted, noOpen: true, noOpendir: true, maxWrite: 131072, maxRead: 16384, maxBackground: 20, congestionThreshold: 15 }, 'granted as asked')

    for (let i = 0; i < 3; i++) t.equal(fs.readFileSync(path.join(mnt, 'hello.txt'), 'utf8'), 'hello from reef over libfuse3\n', `read ${i + 1}`)
    for (let i = 0; i < 3; i++) t.same(fs.readdirSync(path.join(mnt, 'sub')).sort(), ['b.txt', 'deep'], `listing ${i + 1}`)
    const { seen } = await served.stats()
    t.equal(seen.open, 1, 'only the first OPEN reached JS (it answered ENOSYS)')
    t.equal(seen.opendir, 1, 'only the first OPENDIR reached JS')

    const big = await writesDuring(served, async () => await writeChunks(path.join(mnt, 'w1'), 1, MiB))
    t.same(big, Array(8).fill(131072), 'with maxWrite 131072 a 1 MiB write(2) arrives as 8 WRITEs')
    const readsBefore = (await served.stats()).seen.reads.length
    t.equal(fs.readFileSync(path.join(mnt, 'w1')).length, MiB, 'read back')
    const reads = (await served.stats()).seen.reads.slice(readsBefore)
    t.ok(reads.length >= MiB / 16384 && reads.every((n) => n <= 16384), `with maxRead 16384 no READ is bigger (${reads.length} READs)`)
    t.notOk((await served.stats()).seen.getxattr.some((n) => n.startsWith('security.')), 'no security.* getxattr reached JS')
    const cap = await exec('python3', ['-c', 'import os,sys\ntry:\n  os.getxattr(sys.argv[1], "security.capability")\nexcept OSError as e:\n  print(e.errno)', path.join(mnt, 'w1')])
    t.equal(cap.stdout.trim(), '61', 'security.capability answers ENODATA')
    t.equal(await unmountFuse3(served, mnt), 0, 'unmounted')
  })

  t.test('writeback cache and splice', async (t) => {
    const { served, mnt, granted } = await serve(t, { caps: { writebackCache: true, splice: true, parallelDirops: false } })
    t.equal(granted.writebackCache, true, 'writeback cache granted')
    t.equal(granted.splice, true, 'splice granted')
    t.equal(granted.parallelDirops, false, 'parallel dirops turned off')
    const small = await writesDuring(served, async () => await writeChunks(path.join(mnt, 'w2'), 64, 1024))
    t.ok(small.length < 64 && small.reduce((a, b) => a + b, 0) >= 65536, `64 writes of 1 KiB coalesced into ${small.length} WRITEs`)
    const data = fs.readFileSync(path.join(mnt, 'w2'))
    t.equal(data.length, 65536, 'the size')
    t.ok(data.every((b, i) => b === Math.floor(i / 1024) % 251), 'every byte, through the cache and splice')
    t.equal(await unmountFuse3(served, mnt), 0, 'unmounted')
  })
}
