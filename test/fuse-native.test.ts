// End-to-end checks of reef's patched fuse-native (mount/native/fuse-native.patch):
// (a) utimens gets atime and mtime separately, with nanoseconds;
// (b) every op sees the caller's uid/gid/pid;
// (c) st_ino from getattr/readdir is what stat(1) / ls -i show (use_ino).
//
// Handlers run on this (the JS) thread, so every child process touching the
// mount MUST be async (execFile) — a *Sync child would deadlock.

import t from 'tap'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import {
  Fuse,
  isFuseMounted,
  mountFuse,
  unmountFuse,
  type FuseContext,
  type FuseInstance,
  type FuseOps,
  type FuseStat
} from '../mount/fuse.js'

const run = promisify(execFile)

function skipReason (): string | false {
  if (process.platform !== 'linux') return 'FUSE tests need Linux'
  if (!fs.existsSync('/dev/fuse')) return '/dev/fuse is missing'
  if (process.getuid?.() !== 0) return 'needs root (allow_other + setpriv to another uid)'
  return false
}

interface Node {
  ino: bigint
  mode: number
  uid: number
  gid: number
  nlink: number
  data: Buffer
  atimeNs: bigint
  mtimeNs: bigint
  ctimeNs: bigint
}

const nowNs = (): bigint => BigInt(Date.now()) * 1_000_000n

// A flat in-memory file system (root directory only) that records what the
// handlers were given.
function memfs () {
  const files = new Map<string, Node>()
  // Larger than 2^32, so a 32-bit truncation of st_ino would show.
  let nextIno = 0x1_0000_0000n + 100n
  const root: Node = {
    ino: 1n, mode: 0o40777, uid: 0, gid: 0, nlink: 2, data: Buffer.alloc(0),
    atimeNs: nowNs(), mtimeNs: nowNs(), ctimeNs: nowNs()
  }
  const calls: { op: string, path: string, ctx: FuseContext, atime?: bigint | null, mtime?: bigint | null }[] = []
  const stat = (n: Node): FuseStat => ({
    mode: n.mode, uid: n.uid, gid: n.gid, size: n.data.length, nlink: n.nlink, ino: n.ino,
    blksize: 4096, blocks: Math.ceil(n.data.length / 512),
    atimeNs: n.atimeNs, mtimeNs: n.mtimeNs, ctimeNs: n.ctimeNs
  })
  const get = (p: string): Node | undefined => (p === '/' ? root : files.get(p))

  const ops: FuseOps = {
    getattr (p, cb) {
      const n = get(p)
      if (!n) return cb(Fuse.ENOENT)
      cb(0, stat(n))
    },
    readdir (p, cb) {
      if (p !== '/') return cb(Fuse.ENOTDIR)
      const names = ['.', '..', ...[...files.keys()].map((k) => k.slice(1))]
      const stats = [stat(root), stat(root), ...[...files.values()].map(stat)]
      cb(0, names, stats)
    },
    create (p, mode, cb, ctx) {
      calls.push({ op: 'create', path: p, ctx })
      files.set(p, {
        ino: nextIno++, mode, uid: ctx.uid, gid: ctx.gid, nlink: 1, data: Buffer.alloc(0),
        atimeNs: nowNs(), mtimeNs: nowNs(), ctimeNs: nowNs()
      })
      cb(0, 1)
    },
    open (p, _flags, cb) { cb(get(p) ? 0 : Fuse.ENOENT, 1) },
    release (_p, _fd, cb) { cb(0) },
    read (p, _fd, buf, len, pos, cb) {
      const n = get(p)
      if (!n) return cb(Fuse.ENOENT)
      cb(n.data.copy(buf, 0, pos, Math.min(n.data.length, pos + len)))
    },
    write (p, _fd, buf, len, pos, cb) {
      const n = get(p)
      if (!n) return cb(Fuse.ENOENT)
      const end = pos + len
      if (end > n.data.length) n.data = Buffer.concat([n.data, Buffer.alloc(end - n.data.length)])
      buf.copy(n.data, pos, 0, len)
      n.mtimeNs = n.ctimeNs = nowNs()
      cb(len)
    },
    truncate (p, size, cb) {
      const n = get(p)
      if (!n) return cb(Fuse.ENOENT)
      n.data = Buffer.concat([n.data, Buffer.alloc(Math.max(0, size - n.data.length))]).subarray(0, size)
      cb(0)
    },
    utimens (p, atime, mtime, cb, ctx) {
      calls.push({ op: 'utimens', path: p, ctx, atime, mtime })
      const n = get(p)
      if (!n) return cb(Fuse.ENOENT)
      if (atime !== null) n.atimeNs = atime
      if (mtime !== null) n.mtimeNs = mtime
      n.ctimeNs = nowNs()
      cb(0)
    },
    link (src, dest, cb, ctx) {
      calls.push({ op: 'link', path: dest, ctx })
      const n = get(src)
      if (!n) return cb(Fuse.ENOENT)
      if (files.has(dest)) return cb(Fuse.EEXIST)
      n.nlink++
      files.set(dest, n)
      cb(0)
    },
    unlink (p, cb) {
      const n = files.get(p)
      if (!n) return cb(Fuse.ENOENT)
      n.nlink--
      files.delete(p)
      cb(0)
    }
  }
  return { ops, files, calls }
}

async function waitFor (what: string, cond: () => boolean, limitMs = 10_000): Promise<void> {
  const deadline = Date.now() + limitMs
  for (let delay = 5; !cond(); delay = Math.min(delay * 2, 100)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, delay))
  }
}

const reason = skipReason()
t.test('patched fuse-native', { skip: reason }, async (t) => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'reef-fuse-'))
  fs.chmodSync(base, 0o755) // uid 1234 must be able to reach the mount point
  const mnt = path.join(base, 'mnt')
  fs.mkdirSync(mnt)
  const fsys = memfs()
  let fuse: FuseInstance | undefined

  t.teardown(async () => {
    if (fuse) await unmountFuse(fuse).catch(() => {})
    if (isFuseMounted(mnt)) await run('fusermount', ['-u', '-z', mnt]).catch(() => {})
    await waitFor('unmount', () => !isFuseMounted(mnt), 5_000).catch(() => {})
    fs.rmSync(base, { recursive: true, force: true })
  })

  fuse = await mountFuse(mnt, fsys.ops, {
    useIno: true,
    attrTimeout: 0,
    entryTimeout: 0,
    negativeTimeout: 0,
    allowOther: true,
    fsname: 'reef-test',
    subtype: 'reef'
  })
  await waitFor('mount in /proc/mounts', () => isFuseMounted(mnt))

  const env = { ...process.env, TZ: 'UTC', LC_ALL: 'C' }
  const sh = async (cmd: string, ...args: string[]): Promise<string> =>
    (await run(cmd, args, { env })).stdout.trim()

  t.test('timeout options of 0 reach libfuse', async (t) => {
    const opts = (fuse as unknown as { _fuseOptions(): string })._fuseOptions()
    t.match(opts, /(^|,|-o)attr_timeout=0(,|$)/)
    t.match(opts, /(^|,)entry_timeout=0(,|$)/)
    t.match(opts, /(^|,)use_ino(,|$)/)
  })

  t.test('utimens: atime and mtime separately, with nanoseconds', async (t) => {
    const f = path.join(mnt, 'times.txt')
    await sh('touch', f)
    const created = fsys.files.get('/times.txt')
    t.ok(created, 'create reached the handler')
    const atimeBefore = created!.atimeNs

    fsys.calls.length = 0
    await sh('touch', '-m', '-d', '2001-02-03 04:05:06.123456789', f)
    const m = fsys.calls.find((c) => c.op === 'utimens')
    t.ok(m, 'utimens called for touch -m')
    t.equal(m?.atime, null, 'atime omitted (UTIME_OMIT -> null)')
    t.equal(m?.mtime, 981173106_123456789n, 'mtime as bigint ns')
    t.equal(await sh('stat', '-c', '%y', f), '2001-02-03 04:05:06.123456789 +0000', 'mtime via stat')
    t.equal(fsys.files.get('/times.txt')!.atimeNs, atimeBefore, 'atime left alone')

    fsys.calls.length = 0
    await sh('touch', '-a', '-d', '1999-12-31 23:59:58.000000001', f)
    const a = fsys.calls.find((c) => c.op === 'utimens')
    t.equal(a?.atime, 946684798_000000001n, 'atime as bigint ns')
    t.equal(a?.mtime, null, 'mtime omitted')
    t.equal(await sh('stat', '-c', '%x', f), '1999-12-31 23:59:58.000000001 +0000', 'atime via stat')
    t.equal(await sh('stat', '-c', '%y', f), '2001-02-03 04:05:06.123456789 +0000', 'mtime unchanged')

    // Both at once, and a pre-1970 time (negative seconds).
    await sh('touch', '-d', '1969-07-20 20:17:40.5', f)
    t.equal(await sh('stat', '-c', '%x|%y', f),
      '1969-07-20 20:17:40.500000000 +0000|1969-07-20 20:17:40.500000000 +0000')

    // touch with no date: UTIME_NOW (or the kernel's now) -> current time.
    const before = nowNs()
    await sh('touch', f)
    const n = fsys.files.get('/times.txt')!
    t.ok(n.mtimeNs >= before - 2_000_000_000n && n.mtimeNs <= nowNs() + 2_000_000_000n, 'touch without -d sets ~now')
  })

  t.test('caller uid/gid/pid reach the handlers', async (t) => {
    fsys.calls.length = 0
    await sh('setpriv', '--reuid', '1234', '--regid', '1234', '--clear-groups',
      'sh', '-c', `echo hi > ${JSON.stringify(path.join(mnt, 'owned.txt'))}`)
    const c = fsys.calls.find((c) => c.op === 'create' && c.path === '/owned.txt')
    t.ok(c, 'create called')
    t.equal(c?.ctx.uid, 1234)
    t.equal(c?.ctx.gid, 1234)
    t.ok((c?.ctx.pid ?? 0) > 0 && c?.ctx.pid !== process.pid, 'pid is the caller (the shell), not us')
    t.equal(await sh('stat', '-c', '%u:%g:%s', path.join(mnt, 'owned.txt')), '1234:1234:3')
    t.equal(await sh('cat', path.join(mnt, 'owned.txt')), 'hi')

    fsys.calls.length = 0
    await sh('touch', path.join(mnt, 'root.txt'))
    const r = fsys.calls.find((c) => c.op === 'create' && c.path === '/root.txt')
    t.equal(r?.ctx.uid, 0)
    t.equal(r?.ctx.gid, 0)
  })

  t.test('st_ino from getattr/readdir is stable and shared by hard links', async (t) => {
    const a = path.join(mnt, 'a.txt')
    const b = path.join(mnt, 'b.txt')
    await sh('sh', '-c', `echo data > ${JSON.stringify(a)}`)
    await sh('ln', a, b)
    const node = fsys.files.get('/a.txt')!
    t.equal(fsys.files.get('/b.txt'), node, 'link handler shared the node')
    t.ok(node.ino > 0xffffffffn, 'ino needs more than 32 bits')

    const [ia, ib] = (await sh('stat', '-c', '%i', a, b)).split('\n')
    t.equal(ia, String(node.ino), 'stat shows the handler\'s ino')
    t.equal(ib, ia, 'both names have the same inode number')
    t.equal(await sh('stat', '-c', '%h', a), '2', 'nlink carried')
    t.equal(await sh('stat', '-c', '%i', a), ia, 'stable across lookups')

    // ls -i takes d_ino from readdir
    const ls = await sh('ls', '-i', mnt)
    const inoOf = (name: string): string | undefined =>
      ls.split('\n').map((l) => l.trim().split(/\s+/)).find((f) => f[1] === name)?.[0]
    t.equal(inoOf('a.txt'), ia, 'readdir d_ino of a.txt')
    t.equal(inoOf('b.txt'), ia, 'readdir d_ino of b.txt')

    // Node sees the same (bigint stat)
    const st = await fs.promises.stat(b, { bigint: true })
    t.equal(st.ino, node.ino)
    t.equal(st.nlink, 2n)
  })
})
