/**
 * `reef put` / `reef get` throughput on one large random file next to `cp` on the same disk,
 * in one run. Reports a table and JSON; judges nothing.
 *   node dist/bench/putget.js [--size-mib 1024] [--dir /var/tmp] [--json FILE]
 */
import { execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const args = process.argv.slice(2)
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(name)
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt
}
const sizeMiB = Number(opt('--size-mib', process.env.REEF_BENCH_SIZE_MIB ?? '1024'))
const base = fs.mkdtempSync(path.join(opt('--dir', os.tmpdir()), 'reef-putget-'))
const jsonOut = opt('--json', '')
const reef = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'reef.js')

function time (fn: () => void): number {
  const t0 = process.hrtime.bigint()
  fn()
  return Number(process.hrtime.bigint() - t0) / 1e9
}
const dropCaches = (): void => {
  try { execFileSync('sync'); fs.writeFileSync('/proc/sys/vm/drop_caches', '3') } catch {}
}

try {
  const src = path.join(base, 'input.bin')
  const fd = fs.openSync(src, 'w')
  const buf = Buffer.allocUnsafe(8 * 2 ** 20)
  for (let i = 0; i < sizeMiB / 8; i++) { crypto.randomFillSync(buf); fs.writeSync(fd, buf) }
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  const data = path.join(base, 'data')
  execFileSync(process.execPath, [reef, '--data-dir', data, 'init'], { stdio: 'ignore' })
  const bytes = sizeMiB * 2 ** 20
  dropCaches()
  const cp = time(() => execFileSync('sh', ['-c', `cp ${src} ${path.join(base, 'copy.bin')} && sync`]))
  dropCaches()
  let guid = ''
  const put = time(() => {
    const outp = execFileSync(process.execPath, [reef, '--data-dir', data, 'put', src]).toString().trim().split(/\s+/)
    guid = outp[outp.length - 1]
  })
  dropCaches()
  const get = time(() => execFileSync('sh', ['-c', `${JSON.stringify(process.execPath)} ${reef} --data-dir ${data} get ${guid} -o ${path.join(base, 'restored.bin')} && sync`]))
  execFileSync('cmp', [src, path.join(base, 'restored.bin')])
  const rows = [
    { op: 'cp', seconds: cp, mbps: bytes / 1e6 / cp },
    { op: 'reef put', seconds: put, mbps: bytes / 1e6 / put },
    { op: 'reef get', seconds: get, mbps: bytes / 1e6 / get }
  ]
  console.log(`file: ${sizeMiB} MiB random, disk of ${base}, ${os.cpus().length} cores, node ${process.version}`)
  console.log('op          seconds     MB/s   vs cp')
  for (const r of rows) console.log(`${r.op.padEnd(10)} ${r.seconds.toFixed(2).padStart(8)} ${r.mbps.toFixed(0).padStart(8)} ${(r.seconds / cp).toFixed(2).padStart(7)}x`)
  if (jsonOut !== '') fs.writeFileSync(jsonOut, JSON.stringify({ sizeMiB, rows, date: new Date().toISOString() }, null, 2) + '\n')
} finally {
  fs.rmSync(base, { recursive: true, force: true })
}
