// The log writes a write record's data as its own part; the parts must be exactly the
// record's dag-cbor block, or frames would not be blocks and replay would see other bytes.
import t from 'tap'
import crypto from 'node:crypto'
import { encodeRecord, encodeRecordParts, decodeRecord, type LogRecord } from '../src/log/record.js'
import { cidFor, DAG_CBOR } from '../src/block/index.js'

const writer = new Uint8Array(32).fill(7)

t.test('parts concatenate to the record block for every data size class', async t => {
  for (const len of [0, 1, 23, 24, 255, 256, 1023, 1024, 65535, 65536, 131072, 1048576]) {
    const data = crypto.randomBytes(len)
    const r: LogRecord = { writer, n: 42, vv: { aa: 42 }, time: 1_700_000_000_000, op: { op: 'write', ino: 9, offset: 2 ** 40, data, time: 5n } }
    const whole = encodeRecord(r).bytes
    const joined = Buffer.concat(encodeRecordParts(r))
    t.ok(Buffer.compare(joined, whole) === 0, `identical bytes for ${len} data bytes`)
    t.ok(cidFor(joined, DAG_CBOR).equals(encodeRecord(r).cid), 'same BGUID')
    const back = decodeRecord(joined)
    t.same(Buffer.from((back.op as { data: Uint8Array }).data), data)
  }
})

t.test('other records are a single part', async t => {
  const r: LogRecord = { writer, n: 1, vv: {}, time: 1, op: { op: 'truncate', ino: 3, size: 10, time: 1n } }
  t.equal(encodeRecordParts(r).length, 1)
})
