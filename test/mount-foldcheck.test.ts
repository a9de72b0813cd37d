// A fold never commits a version reef cannot read back: with an encoder fault injected into the
// daemon (REEF_TEST_ENCODE_FAULT), its folds fail with one log line each, the head stays, the
// mount keeps serving, and the writes wait in the log until a daemon without the fault folds them.
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { describe, reef, skipReason, startMount, tempDir, waitFor } from './helpers/mount.js'

const skip = skipReason()
if (skip !== false) {
  t.plan(0, skip)
} else {
  t.test('an encoder fault fails the fold, loses nothing, and says why in one line', async t => {
    const base = tempDir(t)
    const dataDir = path.join(base, 'data')
    const mnt = path.join(base, 'mnt')
    let m = await startMount(t, { dataDir, mnt })
    fs.mkdirSync(path.join(mnt, 'd'))
    fs.writeFileSync(path.join(mnt, 'd', 'good.txt'), 'good')
    await m.stop()
    const status = async (): Promise<{ seq: string, vguid: string, pendingRecords: number, lastError?: string }> => {
      const r = await reef(dataDir, 'status', '--json')
      if (r.code !== 0) throw new Error(describe(r))
      return JSON.parse(r.stdout)
    }

    m = await startMount(t, { dataDir, mnt, foldInterval: 1, env: { REEF_TEST_ENCODE_FAULT: 'bad.txt' } })
    const seq = (await status()).seq
    fs.writeFileSync(path.join(mnt, 'd', 'bad.txt'), 'kept in the log')
    fs.symlinkSync('good.txt', path.join(mnt, 'd', 'link'))
    const failed = (): string[] => m.stderr().split('\n').filter(l => l.includes('fold failed'))
    await waitFor('a failed fold in the daemon log', () => failed().length > 0, 60_000)
    const line = failed()[0]
    t.match(line, /^reef: fold failed, head stays at version \d+: fold refused, directory \/d\/: directory node \S+ does not read back: entry "bad\.txt" \(6261642e747874\) reads back with another mode \[BAD_ENCODING\]$/, 'one line says which directory, which block and why')
    t.notOk(line.includes('    at '), 'no stack trace')
    const st = await status()
    t.equal(st.seq, seq, 'the head did not move')
    t.ok(st.pendingRecords >= 2, `the writes are pending in the log (${st.pendingRecords})`)
    t.match(st.lastError ?? '', /does not read back/, 'status reports the last fold error')
    const sync = await reef(dataDir, 'sync')
    t.not(sync.code, 0, 'reef sync fails too')
    t.match(sync.stderr, /does not read back.*\[BAD_ENCODING\]/, describe(sync))
    t.equal(fs.readFileSync(path.join(mnt, 'd', 'bad.txt'), 'utf8'), 'kept in the log', 'the mount keeps serving the file')
    t.equal(fs.readFileSync(path.join(mnt, 'd', 'good.txt'), 'utf8'), 'good')
    await m.stop()

    m = await startMount(t, { dataDir, mnt })
    t.equal(fs.readFileSync(path.join(mnt, 'd', 'bad.txt'), 'utf8'), 'kept in the log', 'replayed from the log by a daemon without the fault')
    t.equal(fs.readlinkSync(path.join(mnt, 'd', 'link')), 'good.txt')
    const ok = await reef(dataDir, 'sync')
    t.equal(ok.code, 0, describe(ok))
    const after = await status()
    t.equal(after.pendingRecords, 0, 'now folded')
    t.ok(BigInt(after.seq) > BigInt(seq), `into a new version (${seq} -> ${after.seq})`)
    await m.stop()
    const out = path.join(base, 'out')
    const got = await reef(dataDir, 'get', after.vguid, '-o', out)
    t.equal(got.code, 0, describe(got))
    t.equal(fs.readFileSync(path.join(out, 'd', 'bad.txt'), 'utf8'), 'kept in the log', 'the committed version reads back')
    t.equal(fs.readlinkSync(path.join(out, 'd', 'link')), 'good.txt')
  })
}
