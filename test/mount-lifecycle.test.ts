// The life of a mount around its data: `reef unmount` of a read-write mount returns once the
// daemon has folded and exited (so the next `reef mount` starts at once) and names the final
// version; it also cleans up what a kill -9 left; --fold-interval folds on its own; other CLI
// commands go through the daemon's control socket while it serves; allow_other only where
// fusermount allows it.
import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { CID } from 'multiformats/cid'
import { allowOtherFor } from '../mount/daemon.js'
import { describe, errnoOf, isMounted, reef, skipReason, startMount, tempDir, waitFor, type Mount } from './helpers/mount.js'

const DEBIAN_FUSE_CONF = '# Allow non-root users to specify the allow_other or allow_root mount options.\n#user_allow_other\n'

t.test('allow_other: root always; others only with user_allow_other in /etc/fuse.conf', async tt => {
  tt.equal(allowOtherFor(0, undefined), true, 'root, no fuse.conf')
  tt.equal(allowOtherFor(1000, DEBIAN_FUSE_CONF), false, 'Debian\'s default (commented out)')
  tt.equal(allowOtherFor(1000, undefined), false, 'no fuse.conf')
  tt.equal(allowOtherFor(1000, 'mount_max = 1000\n  user_allow_other  # enabled\n'), true, 'enabled (with spaces and a comment)')
  tt.equal(allowOtherFor(1000, 'user_allow_other_not\n'), false, 'another word')
})

const skip = skipReason()
if (skip !== false) {
  t.test('mounts', async tt => { tt.plan(0, skip) })
} else {
  const json = async (dataDir: string, ...args: string[]): Promise<Record<string, any>> => { // eslint-disable-line @typescript-eslint/no-explicit-any
    const r = await reef(dataDir, ...args, '--json')
    if (r.code !== 0) throw new Error(`reef ${args.join(' ')}: ${describe(r)}`)
    return JSON.parse(r.stdout)
  }

  /** A new data directory mounted on a new directory, folding only when told to. */
  const freshMount = async (): Promise<{ dataDir: string, mnt: string, m: Mount }> => {
    const base = tempDir(t, 'reef-life-')
    const dataDir = path.join(base, 'data')
    const mnt = path.join(base, 'mnt')
    return { dataDir, mnt, m: await startMount(t, { dataDir, mnt, foldInterval: 3600 }) }
  }

  t.test('reef unmount of a read-write mount: folds, waits for the daemon, names the version', async tt => {
    const { dataDir, mnt, m } = await freshMount()
    const opts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').find(l => l.split(' ')[1] === mnt) ?? ''
    tt.match(opts, /\ballow_other\b/, 'root mounts with allow_other')
    const before = await json(dataDir, 'status')
    const data = crypto.randomBytes(1_500_000)
    fs.writeFileSync(path.join(mnt, 'kept.bin'), data)
    fs.writeFileSync(path.join(mnt, 'note'), 'unmounted from elsewhere')
    const st = await json(dataDir, 'status')
    tt.ok(st.pendingRecords > 0, 'the writes wait in the log, not yet folded')
    const u = await json(dataDir, 'unmount', mnt)
    tt.equal(u.unmounted, true, 'reef unmount says unmounted')
    tt.ok(BigInt(u.seq) > BigInt(before.seq), `it names a new version (${before.seq as string} -> ${u.seq as string})`)
    // Returned only once the daemon was gone: no mount, no control socket, the process exited.
    tt.notOk(isMounted(mnt), 'not mounted')
    tt.notOk(fs.existsSync(path.join(dataDir, 'control.sock')), 'the control socket is gone')
    await waitFor('the daemon process to be reaped', () => m.exited(), 10_000)
    tt.equal(m.proc.exitCode, 0, 'the daemon exited 0')
    const versions = (await json(dataDir, 'history')).versions as Array<{ seq: string, vguid: string }>
    tt.equal(versions[0].seq, u.seq, 'the newest version in history is the one reef unmount named')
    tt.equal(versions[0].vguid, u.vguid, 'same VGUID')
    // Right away, from this process: no "another reef daemon already serves".
    const again = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    tt.ok(fs.readFileSync(path.join(mnt, 'kept.bin')).equals(data), 'content there after an immediate remount')
    tt.equal(fs.readFileSync(path.join(mnt, '.reef', 'versions', u.seq, 'note'), 'utf8'), 'unmounted from elsewhere', 'and in the version reef unmount named')
    tt.same(again.unexpected(), [], 'no unexpected errors')
  })

  t.test('Ctrl-C (SIGINT) folds pending writes and unmounts, like SIGTERM', async tt => {
    const { dataDir, mnt, m } = await freshMount()
    const before = await json(dataDir, 'status')
    fs.writeFileSync(path.join(mnt, 'interrupted'), 'folded at Ctrl-C')
    tt.ok((await json(dataDir, 'status')).pendingRecords > 0, 'the write waits in the log')
    m.proc.kill('SIGINT')
    await waitFor('the daemon to exit after SIGINT', () => m.exited(), 60_000)
    tt.equal(m.proc.exitCode, 0, 'the daemon exited 0')
    tt.notOk(isMounted(mnt), 'not mounted')
    const versions = (await json(dataDir, 'history')).versions as Array<{ seq: string }>
    tt.ok(BigInt(versions[0].seq) > BigInt(before.seq), `a new version was folded (${before.seq as string} -> ${versions[0].seq})`)
    const again = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    tt.equal((await json(dataDir, 'status')).pendingRecords, 0, 'nothing left to replay')
    tt.equal(fs.readFileSync(path.join(mnt, '.reef', 'versions', versions[0].seq, 'interrupted'), 'utf8'), 'folded at Ctrl-C', 'the write is in that version')
    tt.same(again.unexpected(), [], 'no unexpected errors')
  })

  t.test('reef unmount of what a kill -9 left behind', async tt => {
    const { dataDir, mnt, m } = await freshMount()
    fs.writeFileSync(path.join(mnt, 'synced'), 'durable')
    const fd = fs.openSync(path.join(mnt, 'synced'), 'r')
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    await m.kill9()
    tt.equal(errnoOf(() => fs.statSync(mnt)), 'ENOTCONN', 'a stale mount')
    const r = await reef(dataDir, 'unmount', mnt)
    tt.equal(r.code, 0, describe(r))
    tt.match(r.stdout, /cleaned up a stale mount/, 'reef unmount says it cleaned up')
    tt.notOk(isMounted(mnt), 'no longer mounted')
    tt.equal(errnoOf(() => fs.statSync(mnt)), 'OK', 'the directory is usable again')
    const again = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    tt.notMatch(again.stderr(), /cleaned up a stale mount/, 'nothing left for the next mount to clean')
    tt.equal(fs.readFileSync(path.join(mnt, 'synced'), 'utf8'), 'durable', 'the fsync\'d write survived')
  })

  t.test('--fold-interval 1 folds on its own', async tt => {
    const m = await startMount(t, { foldInterval: 1 })
    const before = await json(m.dataDir, 'status')
    fs.writeFileSync(path.join(m.mnt, 'periodic'), 'folded by the timer')
    let st = before
    const deadline = Date.now() + 30_000
    while (Date.now() < deadline) {
      st = await json(m.dataDir, 'status')
      if (BigInt(st.seq) > BigInt(before.seq) && st.pendingRecords === 0) break
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    tt.ok(BigInt(st.seq) > BigInt(before.seq), `the version advanced without reef sync (${before.seq as string} -> ${st.seq as string})`)
    tt.equal(st.pendingRecords, 0, 'nothing pending')
    tt.ok(st.folds >= 1, 'counted as a fold')
    tt.equal(fs.readFileSync(path.join(m.mnt, '.reef', 'versions', st.seq, 'periodic'), 'utf8'), 'folded by the timer', 'the write is in that version')
  })

  t.test('while mounted, other commands are answered by the daemon', async tt => {
    const m = await startMount(t, { foldInterval: 3600 })
    fs.writeFileSync(path.join(m.mnt, 'shown'), 'through the socket')
    const synced = await json(m.dataDir, 'sync')
    const served = async (): Promise<Record<string, number>> => (await json(m.dataDir, 'status')).controlRequests
    const c0 = await served()
    const show = await reef(m.dataDir, 'show', synced.seq)
    tt.equal(show.code, 0, describe(show))
    tt.match(show.stdout, /\/shown\b/, 'reef show lists the file')
    const shown = await json(m.dataDir, 'show', synced.seq)
    const fileGuid = (shown.entries as Array<{ path: string, guid: string }>).find(e => e.path === '/shown')?.guid
    tt.ok(fileGuid, `reef show --json gives the file's GUID (${String(fileGuid)})`)
    const block = await reef(m.dataDir, 'block', 'get', fileGuid as string)
    tt.equal(block.code, 0, `reef block get: ${block.stderr}`)
    tt.equal(crypto.createHash('sha256').update(block.out).digest('hex'), Buffer.from(CID.parse(fileGuid as string).multihash.digest).toString('hex'), 'reef block get returns the block (its bytes hash to the GUID)')
    const c1 = await served()
    tt.equal((c1.run ?? 0) - (c0.run ?? 0), 3, 'show, show --json and block get each ran inside the daemon')
  })
}
