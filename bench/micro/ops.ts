/**
 * The micro scenarios, each a function of a directory on the target. They use synchronous fs
 * calls on purpose: the benchmark process never serves the mount (the reef daemon is a separate
 * child process), and sync calls time one operation at a time, like a simple tool would issue
 * them. `find` runs as a separate process, as a user would run it.
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { sh } from '../phases/proc.js'

const now = (): number => Number(process.hrtime.bigint()) / 1e9

/** Creates `n` empty files in `dir` (untimed set-up), spread over subdirectories of `perDir`. */
export function populate (dir: string, n: number, perDir: number, size = 0): string[] {
  const paths: string[] = []
  const data = Buffer.alloc(size, 0x61)
  for (let i = 0; i < n; i++) {
    const d = path.join(dir, `d${Math.floor(i / perDir)}`)
    if (i % perDir === 0) fs.mkdirSync(d, { recursive: true })
    const p = path.join(d, `f${i}`)
    fs.writeFileSync(p, data)
    paths.push(p)
  }
  return paths
}

/** stat(2) calls per second over `files`, round robin, `total` calls in all (files exist). */
export function statRate (files: string[], total: number): number {
  for (const f of files) fs.statSync(f) // one warm-up pass
  const t0 = now()
  for (let i = 0; i < total; i++) fs.statSync(files[i % files.length])
  return total / (now() - t0)
}

/** open(O_CREAT) + one 4 KiB write + close, per second, for `n` new files in `dir`. */
export function createRate (dir: string, n: number): number {
  fs.mkdirSync(dir, { recursive: true })
  const block = crypto.randomBytes(4096)
  const t0 = now()
  for (let i = 0; i < n; i++) {
    const fd = fs.openSync(path.join(dir, `c${i}`), 'w')
    fs.writeSync(fd, block, 0, block.length, 0)
    fs.closeSync(fd)
  }
  return n / (now() - t0)
}

/** Random bytes for one sequential file (fresh per file, so reef cannot deduplicate chunks). */
export const payload = (bytes: number): Buffer => crypto.randomFillSync(Buffer.allocUnsafe(bytes))

/** Writes `data` to a new file in `blockSize` writes, fsync, close; MB/s (10^6 bytes). */
export function seqWrite (file: string, data: Buffer, blockSize: number): number {
  const t0 = now()
  const fd = fs.openSync(file, 'w')
  for (let off = 0; off < data.length; off += blockSize) fs.writeSync(fd, data, off, Math.min(blockSize, data.length - off), off)
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  return data.length / 1e6 / (now() - t0)
}

/** Reads `file` start to end in `blockSize` reads; MB/s. Throws if fewer than `expect` bytes came. */
export function seqRead (file: string, blockSize: number, expect: number): number {
  const buf = Buffer.allocUnsafe(blockSize)
  const t0 = now()
  const fd = fs.openSync(file, 'r')
  let total = 0
  for (;;) {
    const n = fs.readSync(fd, buf, 0, blockSize, total)
    if (n === 0) break
    total += n
  }
  fs.closeSync(fd)
  const s = now() - t0
  if (total !== expect) throw new Error(`read ${total} of ${expect} bytes from ${file}`)
  return total / 1e6 / s
}

/** Seconds for `find DIR -type f | wc -l` (a separate process); checks the count. */
export async function findSeconds (dir: string, expect: number): Promise<number> {
  const r = await sh('find . -type f | wc -l', dir)
  const n = Number(r.stdout.trim())
  if (n !== expect) throw new Error(`find saw ${n} files in ${dir}, expected ${expect}`)
  return r.seconds
}

/**
 * Random 4 KiB writes into an existing file of `fileBytes`, with an fsync every `syncEvery`
 * writes (the way a database or a disk image on a loop device writes); writes per second.
 * Offsets are 4 KiB-aligned, drawn from a fixed seed so every target gets the same ones.
 */
export function randomWrites (file: string, fileBytes: number, writes: number, syncEvery: number): number {
  const block = crypto.randomBytes(4096)
  const pages = Math.floor(fileBytes / 4096)
  let x = 0x2545f491
  const next = (): number => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) % pages }
  const fd = fs.openSync(file, 'r+')
  const t0 = now()
  for (let i = 1; i <= writes; i++) {
    fs.writeSync(fd, block, 0, 4096, next() * 4096)
    if (i % syncEvery === 0) fs.fsyncSync(fd)
  }
  fs.fsyncSync(fd)
  const s = now() - t0
  fs.closeSync(fd)
  return writes / s
}
