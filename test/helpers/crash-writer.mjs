// Child process for test/store-crash.test.ts: writes random blocks (1 B..1 MiB) into an LMDB
// store forever, a few puts in flight at once, and prints each block's BGUID on stdout only
// after its put has resolved (an acknowledgement). The parent kill -9s it at a random moment.
import { randomBytes, randomInt } from 'node:crypto'
import { makeBlock } from '../../dist/src/block/index.js'
import { LmdbBlockStore, LmdbStore } from '../../dist/src/store/lmdb.js'

const dir = process.argv[2]
const inFlight = Number(process.argv[3] ?? 4)
const store = new LmdbBlockStore(new LmdbStore({ path: dir }))

function randomSize () {
  // Log-uniform over 1 B..1 MiB: many small blocks, a steady share of large ones.
  return Math.max(1, Math.min(1 << 20, Math.round(2 ** (Math.random() * 20))) + randomInt(0, 2))
}

async function writer () {
  for (;;) {
    const block = makeBlock(new Uint8Array(randomBytes(Math.min(randomSize(), 1 << 20))))
    await store.put(block)
    process.stdout.write(`${block.cid.toString()}\n`)
  }
}

process.stdout.write('ready\n')
await Promise.all(Array.from({ length: inFlight }, writer))
