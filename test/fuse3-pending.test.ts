// Requests JS holds or drops through reef's own fuse3 addon: a request whose handler never
// settles and is then garbage gets EIO from the request external's finalizer (the caller is not
// left hanging, and the session's count of unanswered requests falls back), and unmounting while
// a LOOKUP waits in JS detaches the mount, answers the LOOKUP late, and ends cleanly.

import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { tempDir, isMounted, waitFor } from './helpers/mount.js'
import { fuse3SkipReason, serveFuse3, unmountFuse3 } from './helpers/fuse3.js'

const reason = fuse3SkipReason()
if (reason) {
  t.plan(0, reason)
} else {
  t.test('a request JS drops is answered EIO when collected', async (t) => {
    const mnt = path.join(tempDir(t, 'reef-fuse3p-'), 'mnt')
    fs.mkdirSync(mnt)
    const served = await serveFuse3(t, mnt, 'rw')
    let result: string | undefined
    void fs.promises.stat(path.join(mnt, 'never')).then(() => { result = 'OK' }, (e: NodeJS.ErrnoException) => { result = e.code })
    for (const deadline = Date.now() + 30_000; result === undefined && Date.now() < deadline;) {
      await served.ask('gc')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    t.equal(result, 'EIO', 'the dropped LOOKUP was answered EIO once JS collected it')
    t.ok(fs.statSync(path.join(mnt, 'hello.txt')).isFile(), 'the mount still serves')
    t.ok((await served.stats()).seen.lookupNames.includes('never'), 'the LOOKUP did reach JS')
    t.equal(await unmountFuse3(served, mnt), 0, 'and unmounts cleanly')
  })

  t.test('unmount while a LOOKUP waits in JS', async (t) => {
    const mnt = path.join(tempDir(t, 'reef-fuse3p-'), 'mnt')
    fs.mkdirSync(mnt)
    const served = await serveFuse3(t, mnt, 'rw')
    await served.ask('park', { name: 'slow' })
    const stat = fs.promises.stat(path.join(mnt, 'slow')).then(() => 'OK', (e: NodeJS.ErrnoException) => e.code)
    let parked = false
    for (const deadline = Date.now() + 30_000; !parked && Date.now() < deadline;) parked = await served.ask('isParked', { name: 'slow' }) as boolean
    t.ok(parked, 'a LOOKUP is held in JS')
    served.child.send('unmount')
    await waitFor('the mount to be detached', () => !isMounted(mnt))
    t.notOk(served.got.includes('ended'), 'the connection lives while the LOOKUP is unanswered')
    await served.ask('release', { name: 'slow' })
    t.equal(await stat, 'ENOENT', 'the LOOKUP got its late answer')
    await waitFor('the connection to end', () => served.got.includes('ended'))
    await waitFor('the fixture to exit', () => served.exited() !== undefined)
    t.equal(served.exited(), 0, 'the server exits cleanly')
  })
}
