// kill -9 a process in the middle of writing blocks into an LMDB store, reopen the store, and
// check that every acknowledged block is there and verifies, and that no half-written block is
// left behind (every key present reads back as bytes that hash to it).
import t from 'tap'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { cidFromKey, parseGuid } from '../src/block/index.js'
import { LmdbBlockStore, LmdbStore } from '../src/store/lmdb.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const script = path.join(here, 'helpers', 'crash-writer.mjs')
const distLmdb = path.join(here, '..', 'dist', 'src', 'store', 'lmdb.js')

interface Run { acked: string[], signal: NodeJS.Signals | null }

/** Starts the writer, waits (bounded) for `acks` acknowledgements, then kill -9s it. */
async function crashAfter (dir: string, acks: number, timeoutMs: number): Promise<Run> {
  const child = spawn(process.execPath, [script, dir, '4'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const acked: string[] = []
  let pending = ''
  let stderr = ''
  let ready = false
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<NodeJS.Signals | null>(resolve => child.on('exit', (_code, signal) => resolve(signal)))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`writer gave ${acked.length} of ${acks} acks in ${timeoutMs} ms; stderr: ${stderr}`))
    }, timeoutMs)
    child.on('exit', () => { clearTimeout(timer); reject(new Error(`writer exited early; stderr: ${stderr}`)) })
    child.stdout.on('data', (d: Buffer) => {
      pending += d.toString()
      const lines = pending.split('\n')
      pending = lines.pop() ?? ''
      for (const line of lines) {
        if (line === 'ready') { ready = true; continue }
        acked.push(line)
      }
      if (ready && acked.length >= acks) {
        clearTimeout(timer)
        child.kill('SIGKILL') // puts are still in flight: the kill lands mid-write
        resolve()
      }
    })
  })
  return { acked, signal: await exited }
}

t.test('kill -9 while writing: acknowledged blocks survive, nothing half-written', async t => {
  if (!fs.existsSync(distLmdb)) {
    t.fail(`${distLmdb} is missing: run tsc first (npm test does)`)
    return
  }
  const dir = path.join(t.testdir(), 'store')
  const allAcked = new Set<string>()
  const rounds = 4
  for (let round = 0; round < rounds; round++) {
    const want = 40 + Math.floor(Math.random() * 80)
    const run = await crashAfter(dir, want, 60_000)
    t.equal(run.signal, 'SIGKILL', `round ${round}: the writer was killed, not finished`)
    for (const g of run.acked) allAcked.add(g)

    const db = new LmdbStore({ path: dir })
    const store = new LmdbBlockStore(db)
    try {
      let missing = 0
      let corruptAcked = 0
      for (const g of allAcked) {
        const cid = parseGuid(g)
        try {
          await store.get(cid)
        } catch (err) {
          if ((err as { code?: string }).code === 'NOT_FOUND') missing++
          else corruptAcked++
        }
      }
      t.equal(missing, 0, `round ${round}: every one of ${allAcked.size} acknowledged blocks is present`)
      t.equal(corruptAcked, 0, `round ${round}: every acknowledged block verifies`)

      let present = 0
      let bad = 0
      for await (const key of store.keys()) {
        present++
        try { await store.get(cidFromKey(key)) } catch { bad++ }
      }
      t.ok(present >= allAcked.size, `round ${round}: ${present} blocks on disk, ${allAcked.size} acknowledged`)
      t.equal(bad, 0, `round ${round}: every stored block verifies (no half-written block)`)
      t.comment(`round ${round}: killed after ${run.acked.length} acks; ${present - allAcked.size} unacknowledged blocks also landed`)
    } finally {
      await db.close()
    }
  }
})
