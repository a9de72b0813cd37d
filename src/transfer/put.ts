/**
 * `reef put`: stores a local file or tree as blocks and returns an entry block naming it, so
 * the top item keeps its name, mode and mtime. Names are read as bytes (any legal name), mtimes
 * at nanosecond precision (atime and ctime are not recorded, see baseEntry); symlinks are
 * stored, not followed. FIFOs, sockets and device nodes are stored as entries of their kind
 * (devices with their rdev), never opened: opening a FIFO blocks, and a device's bytes are not
 * the tree's. Hard links inside the tree become separate entries (files share their chunks:
 * content addressing stores the data once; a hard-linked FIFO or device is restored as two).
 */
import fs from 'node:fs'
import type { CID } from 'multiformats/cid'
import type { Block } from '../block/index.js'
import { ReefError } from '../errors.js'
import { buildDir, encodeEntryBlock, type Entry, isDevice, type Kind } from '../object/dir.js'
import { FileBuilder } from '../object/file.js'
import type { BlockStore } from '../store/types.js'
import { baseBytes, resolveBytes } from './paths.js'

export interface PutResult {
  cid: CID
  entry: Entry
  files: number
  dirs: number
  symlinks: number
  /** FIFOs, sockets and device nodes. */
  specials: number
  bytes: number
  skipped: string[]
}

export interface PutOptions {
  /** Called with the number of file bytes just stored (for progress bars). */
  onBytes?: (n: number) => void
}

const READ_SIZE = 1024 * 1024
const MAX_IN_FLIGHT = 16

/** Keeps a bounded number of store batches in flight instead of waiting for each commit. */
class Writer {
  private readonly inFlight = new Set<Promise<void>>()
  private failed: unknown
  constructor (private readonly store: BlockStore) {}

  put = async (blocks: Block[]): Promise<void> => {
    if (this.failed !== undefined) throw this.failed
    const p: Promise<void> = this.store.putMany(blocks).then(() => { this.inFlight.delete(p) }, err => { this.failed = err; this.inFlight.delete(p) })
    this.inFlight.add(p)
    if (this.inFlight.size >= MAX_IN_FLIGHT) await Promise.race(this.inFlight)
  }

  async drain (): Promise<void> {
    await Promise.all(this.inFlight)
    if (this.failed !== undefined) throw this.failed
  }
}

/**
 * atime and ctime are recorded as the mtime: they are not part of what a tree is. Reading the
 * tree to store it moves atime (relatime updates it on the first read after a write), and ctime
 * moves on any chmod/touch and can never be restored; recording either would give the same tree
 * a new GUID on every put, and a restored tree a different GUID from its original.
 */
function baseEntry (name: Uint8Array, st: fs.BigIntStats): Omit<Entry, 'kind' | 'size'> {
  return {
    name,
    mode: Number(st.mode) & 0o7777,
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtime: st.mtimeNs,
    atime: st.mtimeNs,
    ctime: st.mtimeNs
  }
}

/** Errors of the input itself (a name that went away, no permission) versus of the device. */
const INPUT_ERRORS = new Set(['ENOENT', 'ENOTDIR', 'EACCES', 'EPERM', 'ELOOP', 'ENAMETOOLONG'])

/**
 * Runs one read of the input, turning a file-system error into a ReefError that names the path:
 * BAD_INPUT for what is wrong with the input, IO for a failing device (EIO and the like).
 */
async function reading<T> (p: Buffer, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (err instanceof ReefError || typeof code !== 'string') throw err
    throw new ReefError(INPUT_ERRORS.has(code) ? 'BAD_INPUT' : 'IO', `cannot read ${p.toString()}: ${code} (${(err as NodeJS.ErrnoException).syscall ?? 'read'})`, err)
  }
}

/**
 * Stores `target` (a string, or a Buffer for a name that is not UTF-8). Blocks are written as the
 * tree is read, so a put that fails part-way leaves the blocks of what it had read: unreferenced,
 * content-addressed and harmless, but not removed, since a concurrent put of the same content may
 * already rely on them. Nothing else changes: a put never touches heads.
 */
export async function putPath (store: BlockStore, target: string | Buffer, opts: PutOptions = {}): Promise<PutResult> {
  const abs = resolveBytes(target)
  const st = await reading(abs, async () => await fs.promises.lstat(abs, { bigint: true }))
  const w = new Writer(store)
  const res = { files: 0, dirs: 0, symlinks: 0, specials: 0, bytes: 0, skipped: [] as string[] }
  const entry = await putAny(abs, new Uint8Array(baseBytes(abs)), st, w, res, opts)
  if (entry === undefined) throw ReefError.badInput(`${target.toString()} is of a file type reef cannot store`)
  const block = encodeEntryBlock(entry)
  await w.put([block])
  await w.drain()
  return { cid: block.cid, entry, ...res }
}

async function putAny (p: Buffer, name: Uint8Array, st: fs.BigIntStats, w: Writer, res: Omit<PutResult, 'cid' | 'entry'>, opts: PutOptions): Promise<Entry | undefined> {
  if (st.isSymbolicLink()) {
    const target = new Uint8Array(await reading(p, async () => await fs.promises.readlink(p, { encoding: 'buffer' })))
    res.symlinks++
    return { ...baseEntry(name, st), kind: 'symlink', size: target.length, target }
  }
  if (st.isFile()) {
    const fb = new FileBuilder(w.put)
    const fh = await reading(p, async () => await fs.promises.open(p, 'r'))
    try {
      const buf = Buffer.allocUnsafe(READ_SIZE)
      for (;;) {
        const { bytesRead } = await reading(p, async () => await fh.read(buf, 0, READ_SIZE, null))
        if (bytesRead === 0) break
        await fb.write(buf.subarray(0, bytesRead))
        opts.onBytes?.(bytesRead)
      }
    } finally {
      await fh.close()
    }
    const root = await fb.finish()
    res.files++
    res.bytes += root.size
    return { ...baseEntry(name, st), kind: 'file', size: root.size, cid: root.cid }
  }
  if (st.isDirectory()) {
    const names = await reading(p, async () => await fs.promises.readdir(p, { encoding: 'buffer' }))
    const entries: Entry[] = []
    let subdirs = 0
    for (const n of names) {
      const child = Buffer.concat([p, Buffer.from('/'), n])
      const cst = await reading(child, async () => await fs.promises.lstat(child, { bigint: true }))
      const e = await putAny(child, new Uint8Array(n), cst, w, res, opts)
      if (e === undefined) {
        res.skipped.push(child.toString())
        continue
      }
      if (e.kind === 'dir') subdirs++
      entries.push(e)
    }
    const emitted: Block[] = []
    const { cid, count } = buildDir(entries, b => emitted.push(b))
    await w.put(emitted)
    res.dirs++
    return { ...baseEntry(name, st), kind: 'dir', size: count, cid, nlink: 2 + subdirs }
  }
  const kind = specialKind(st)
  if (kind === undefined) return undefined
  res.specials++
  const e: Entry = { ...baseEntry(name, st), kind, size: 0 }
  if (isDevice(kind)) {
    if (st.rdev > BigInt(Number.MAX_SAFE_INTEGER)) throw ReefError.badInput(`${p.toString()}: device number ${st.rdev} out of range`)
    e.rdev = Number(st.rdev)
  }
  return e
}

function specialKind (st: fs.BigIntStats): Kind | undefined {
  if (st.isFIFO()) return 'fifo'
  if (st.isSocket()) return 'socket'
  if (st.isCharacterDevice()) return 'chr'
  if (st.isBlockDevice()) return 'blk'
  return undefined
}
