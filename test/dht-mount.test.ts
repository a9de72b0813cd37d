// Across mounts: node A mounts its own file system as a network node on 127.0.0.1; node B
// mounts A's AGUID read-only, bootstrapped from A. A file written through A's mount and synced
// shows up in B's mount with the same bytes (B follows A's signed head through the DHT; the
// blocks reach B by replication or by fetching); writing in B's mount fails with EROFS.
import tap from 'tap'
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { errnoOf, isMounted, REEF_BIN, skipReason, tempDir } from './helpers/mount.js'
import { describe, reefCli, StopWaiting, waitFor } from './helpers/cluster.js'

const skip = skipReason()

interface NetMount { mnt: string, dataDir: string, addr: string, stderr: () => string, stop: () => Promise<void> }

/** `reef mount MNT --listen /ip4/127.0.0.1/tcp/0 ...`: resolves once mounted, with the node's multiaddr. */
async function startNetMount (t: { teardown: (fn: () => Promise<void>) => void }, dataDir: string, mnt: string, extra: string[]): Promise<NetMount> {
  const outFile = path.join(path.dirname(dataDir), `${path.basename(dataDir)}.stdout`)
  const errFile = path.join(path.dirname(dataDir), `${path.basename(dataDir)}.stderr`)
  const ofd = fs.openSync(outFile, 'w')
  const efd = fs.openSync(errFile, 'w')
  const proc = spawn(process.execPath, [REEF_BIN, '--data-dir', dataDir, 'mount', mnt, '--listen', '/ip4/127.0.0.1/tcp/0', ...extra], {
    stdio: ['ignore', ofd, efd],
    env: { ...process.env, NODE_NO_WARNINGS: '1' }
  })
  fs.closeSync(ofd)
  fs.closeSync(efd)
  let exited = false
  const exitP = new Promise<void>(resolve => proc.on('exit', () => { exited = true; resolve() }))
  const read = (f: string) => (): string => { try { return fs.readFileSync(f, 'utf8') } catch { return '' } }
  const stderr = read(errFile)
  const stdout = read(outFile)
  const waitExit = async (ms: number): Promise<void> => {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([exitP, new Promise(resolve => { timer = setTimeout(resolve, ms) })])
    clearTimeout(timer)
  }
  let stopped: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    stopped ??= (async () => {
      if (!exited) {
        proc.kill('SIGTERM')
        await waitExit(30_000)
        if (!exited) { proc.kill('SIGKILL'); await waitExit(10_000) }
      }
      if (isMounted(mnt)) spawn('fusermount', ['-uz', mnt], { stdio: 'ignore' })
    })()
    await stopped
  }
  t.teardown(stop)
  await waitFor(`the mount of ${dataDir} on ${mnt}`, () => {
    if (exited) throw new StopWaiting(`reef mount exited before mounting:\n${stderr()}`)
    return /^reef: mounted /m.test(stderr()) && isMounted(mnt)
  }, 40_000, 50)
  const addr = stdout().split('\n').find(l => /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\S+$/.test(l))
  if (addr === undefined) throw new Error(`no multiaddr on stdout: ${stdout()}`)
  return { mnt, dataDir, addr, stderr, stop }
}

tap.test('a file written through one mount shows up in a follower mount on another node', { skip }, async t => {
  const base = tempDir(t, 'reef-dht-mount-')
  const dirA = path.join(base, 'a')
  const dirB = path.join(base, 'b')
  const init = await reefCli(dirA, ['init', '--json'])
  t.equal(init.code, 0, describe(init))
  const aguid = JSON.parse(init.stdout).aguid as string

  // A folds only when asked (sync), so what B sees comes from that sync.
  const A = await startNetMount(t, dirA, path.join(base, 'mnt-a'), ['--fold-interval', '3600'])
  const B = await startNetMount(t, dirB, path.join(base, 'mnt-b'), ['--aguid', aguid, '--bootstrap', A.addr])
  t.notOk(fs.existsSync(path.join(B.mnt, 'hello.bin')), 'B starts without the file')

  const bytes = crypto.randomBytes(1536 * 1024 + 77)
  fs.mkdirSync(path.join(A.mnt, 'docs'))
  fs.writeFileSync(path.join(A.mnt, 'docs', 'hello.bin'), bytes)
  fs.writeFileSync(path.join(A.mnt, 'note.txt'), 'written on A\n')
  const sync = await reefCli(dirA, ['sync', '--json'])
  t.equal(sync.code, 0, `reef sync on A: ${describe(sync)}`)
  t.equal(JSON.parse(sync.stdout).notReplicated, 0, 'sync reports every block replicated')

  const t0 = Date.now()
  await waitFor('the file in B\'s mount with the same bytes', () => {
    try {
      return fs.readFileSync(path.join(B.mnt, 'docs', 'hello.bin')).equals(bytes)
    } catch {
      return false
    }
  }, 60_000, 200).catch(err => { t.fail(`${(err as Error).message}\nB stderr: ${B.stderr().slice(-2000)}`) })
  t.pass(`B shows the file after ${Date.now() - t0} ms`)
  t.equal(fs.readFileSync(path.join(B.mnt, 'note.txt'), 'utf8'), 'written on A\n', 'and the other file')

  t.equal(errnoOf(() => fs.writeFileSync(path.join(B.mnt, 'new.txt'), 'x')), 'EROFS', 'creating a file in B\'s mount: EROFS')
  t.equal(errnoOf(() => fs.appendFileSync(path.join(B.mnt, 'note.txt'), 'x')), 'EROFS', 'writing to a file in B\'s mount: EROFS')
  t.equal(errnoOf(() => fs.mkdirSync(path.join(B.mnt, 'dir'))), 'EROFS', 'mkdir in B\'s mount: EROFS')
  t.equal(errnoOf(() => fs.unlinkSync(path.join(B.mnt, 'note.txt'))), 'EROFS', 'unlink in B\'s mount: EROFS')
  t.equal(fs.readFileSync(path.join(A.mnt, 'note.txt'), 'utf8'), 'written on A\n', 'A unchanged')

  const st = JSON.parse((await reefCli(dirB, ['status', '--json'])).stdout)
  t.equal(st.readOnly, true, 'B\'s mount reports read-only')
  t.equal(st.aguid, aguid, 'B follows A\'s AGUID')
  t.ok(st.network?.fetch?.remote > 0, `B fetched blocks from the network (${JSON.stringify(st.network?.fetch)})`)
})
