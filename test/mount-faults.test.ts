// Never a dead mount: an exception inside a FUSE handler, or in the reply it hands the binding,
// becomes EIO for the caller and one "unexpected" line in the daemon's log; an exception nothing
// catches (a timer, a stray promise) is logged too; the daemon keeps serving every other op and
// the data stays intact. Faults come from REEF_TEST_OP_FAULT, which bin/ hands the adapter (mount/adapter/options.ts).
import t, { type Test } from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { describe, errnoOf, reef, skipReason, startMount, tempDir, waitFor, type Mount } from './helpers/mount.js'

const skip = skipReason()
if (skip !== false) {
  t.plan(0, skip)
} else {
  const base = tempDir(t, 'reef-faults-')
  const dataDir = path.join(base, 'data')
  const mnt = path.join(base, 'mnt')
  const p = (...s: string[]): string => path.join(mnt, ...s)
  const MARK = 'boom'
  const content = new Map<string, Buffer>()
  const put = (name: string, size: number): void => {
    const b = crypto.randomBytes(size)
    fs.writeFileSync(p(name), b)
    content.set(name, b)
  }

  // Everything is written by a daemon without the hook and read back by a fresh one with it, so
  // the kernel's page cache is empty and every read reaches the daemon.
  let m: Mount
  t.test('setup: files written without the hook, then a daemon with it', async tt => {
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    for (const op of ['getattr', 'read', 'write']) {
      put(`f.${MARK}.${op}`, 200_000)
      put(`f.${MARK}.${op}.reply`, 200_000)
    }
    put('good.bin', 300_000)
    put(`x.${MARK}.uncaught`, 10)
    for (const d of [`d.${MARK}.readdir`, `d.${MARK}.readdir.reply`]) {
      fs.mkdirSync(p(d))
      put(path.join(d, 'inside'), 1000)
    }
    tt.equal((await m.stop()).code, 0, 'the writing daemon exits cleanly')
    process.env.REEF_TEST_OP_FAULT = MARK
    // No attribute caching in the kernel or the binding: every stat reaches the JS handler.
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600, extraArgs: ['--attr-timeout', '0', '--no-attr-cache'] })
    tt.pass('mounted with REEF_TEST_OP_FAULT')
  })
  t.teardown(() => { delete process.env.REEF_TEST_OP_FAULT })
  const logged = async (what: RegExp): Promise<boolean> => {
    await waitFor(`${String(what)} in the daemon's log`, () => what.test(m.stderr()), 10_000).catch(() => {})
    return what.test(m.stderr())
  }
  /** The daemon still serves: another file reads back and a new one round-trips. */
  const serving = (tt: Test, after: string): void => {
    tt.notOk(m.exited(), `daemon alive after ${after}`)
    tt.ok(fs.readFileSync(p('good.bin')).equals(content.get('good.bin') as Buffer), `another file reads after ${after}`)
    const fresh = crypto.randomBytes(5000)
    fs.writeFileSync(p('fresh.bin'), fresh)
    tt.ok(fs.readFileSync(p('fresh.bin')).equals(fresh), `a new file round-trips after ${after}`)
  }

  t.test('getattr: an exception in the handler, and in its reply', async tt => {
    tt.equal(errnoOf(() => fs.statSync(p(`f.${MARK}.getattr`))), 'EIO', 'stat: EIO')
    tt.ok(await logged(/getattr: unexpected TypeError: REEF_TEST_OP_FAULT: getattr of \/f\.boom\.getattr \| at /), 'one line: getattr: unexpected TypeError')
    tt.equal(errnoOf(() => fs.statSync(p(`f.${MARK}.getattr`))), 'EIO', 'again EIO: nothing half-cached')
    tt.equal(errnoOf(() => fs.statSync(p(`f.${MARK}.getattr.reply`))), 'EIO', 'stat with an unconvertible reply: EIO')
    tt.ok(await logged(/getattr: unexpected exception in the reply: TypeError/), 'one line: the reply\'s exception')
    serving(tt, 'getattr faults')
  })

  t.test('read: an exception in the handler, and in its reply (buffer overrun)', async tt => {
    tt.equal(errnoOf(() => fs.readFileSync(p(`f.${MARK}.read`))), 'EIO', 'read: EIO')
    tt.ok(await logged(/read: unexpected TypeError: REEF_TEST_OP_FAULT: read of/), 'logged')
    tt.equal(errnoOf(() => fs.readFileSync(p(`f.${MARK}.read.reply`))), 'EIO', 'read whose reply throws: EIO')
    tt.ok(await logged(/read: unexpected exception in the reply: RangeError/), 'logged: RangeError from the reply')
    tt.equal(fs.statSync(p(`f.${MARK}.read`)).size, 200_000, 'stat of the same file still works')
    serving(tt, 'read faults')
  })

  t.test('readdir: an exception in the handler, and in its reply', async tt => {
    tt.equal(errnoOf(() => fs.readdirSync(p(`d.${MARK}.readdir`))), 'EIO', 'readdir: EIO')
    tt.ok(await logged(/readdir: unexpected TypeError: REEF_TEST_OP_FAULT: readdir of/), 'logged')
    tt.equal(errnoOf(() => fs.readdirSync(p(`d.${MARK}.readdir.reply`))), 'EIO', 'readdir whose reply cannot be converted: EIO')
    tt.ok(await logged(/readdir: unexpected exception in the reply: TypeError/), 'logged')
    tt.ok(fs.readFileSync(p(`d.${MARK}.readdir`, 'inside')).equals(content.get(`d.${MARK}.readdir/inside`) as Buffer), 'a file inside still reads')
    tt.ok(fs.readdirSync(mnt).includes('good.bin'), 'another directory lists')
    serving(tt, 'readdir faults')
  })

  t.test('write: an exception in a queued write (late EIO), and in a synchronous write\'s reply', async tt => {
    const fd = fs.openSync(p(`f.${MARK}.write`), 'r+')
    fs.writeSync(fd, Buffer.alloc(4096, 7), 0, 4096, 0)
    tt.equal(errnoOf(() => fs.fsyncSync(fd)), 'EIO', 'the queued write fails late: fsync reports EIO')
    fs.closeSync(fd)
    tt.ok(await logged(/write: unexpected TypeError: REEF_TEST_OP_FAULT: write of/), 'logged')
    // The reply of a synchronous write carries the file's stat: an unconvertible one throws inside
    // the binding's callback. The bytes written equal those already there, so either way the data
    // stays what it was.
    const name = `f.${MARK}.write.reply`
    const sd = fs.openSync(p(name), fs.constants.O_RDWR | fs.constants.O_SYNC)
    tt.equal(errnoOf(() => fs.writeSync(sd, content.get(name) as Buffer, 0, 4096, 0)), 'EIO', 'O_SYNC write whose reply throws: EIO')
    fs.closeSync(sd)
    tt.ok(await logged(/write: unexpected exception in the reply: TypeError/), 'logged')
    serving(tt, 'write faults')
  })

  t.test('an uncaught exception and an unhandled rejection are logged, not fatal', async tt => {
    tt.equal(fs.statSync(p(`x.${MARK}.uncaught`)).size, 10, 'the op itself answers')
    tt.ok(await logged(/reef: unexpected uncaught exception, still serving: TypeError: REEF_TEST_OP_FAULT: uncaught \(timer\)/), 'uncaught exception logged')
    tt.ok(await logged(/reef: unexpected unhandled promise rejection, still serving: TypeError: REEF_TEST_OP_FAULT: uncaught \(promise\)/), 'unhandled rejection logged')
    serving(tt, 'uncaught exceptions')
    const st = await reef(dataDir, 'status', '--json')
    tt.equal(st.code, 0, `the control socket answers: ${describe(st)}`)
  })

  t.test('every fault was one log line; the data is intact after a clean unmount', async tt => {
    const lines = m.unexpected()
    tt.ok(lines.length >= 10, `${lines.length} unexpected lines`)
    tt.ok(lines.every(l => l.includes('REEF_TEST_OP_FAULT') || /in the reply/.test(l)), 'each names its fault (stack on the same line)')
    tt.equal((await m.stop()).code, 0, `the daemon exits 0 after all that: ${m.stderr().slice(-400)}`)
    delete process.env.REEF_TEST_OP_FAULT
    m = await startMount(t, { dataDir, mnt, foldInterval: 3600 })
    for (const [name, b] of content) tt.ok(fs.readFileSync(p(name)).equals(b), `${name} intact`)
    tt.same(m.unexpected(), [], 'no unexpected lines without the hook')
  })
}
