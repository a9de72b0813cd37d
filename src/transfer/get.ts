/**
 * `reef get`: restores an entry block, a version, a directory or file tree, or a raw block to a
 * local path, byte-identical, with modes, times (nanoseconds) and symlinks. Hard links recorded
 * in a version's link table are restored as hard links. The target must not exist yet: get
 * never overwrites.
 */
import fs from 'node:fs'
import type { CID } from 'multiformats/cid'
import { RAW, DAG_CBOR } from '../block/index.js'
import { ReefError } from '../errors.js'
import { decodeEntryBlock, DirReader, type Entry } from '../object/dir.js'
import { FileReader } from '../object/file.js'
import { decodeVersion, objectKind } from '../object/version.js'
import type { BlockGetter } from '../store/types.js'

export interface GetResult { kind: string, files: number, dirs: number, symlinks: number, bytes: number }

export interface GetOptions { onBytes?: (n: number) => void }

const inoKey = (ino: number): Uint8Array => {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, BigInt(ino))
  return b
}

function targetFree (out: string): void {
  try {
    fs.lstatSync(out)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw ReefError.badInput(`cannot use ${out}: ${(err as NodeJS.ErrnoException).code}`)
  }
  throw ReefError.badInput(`${out} already exists; reef get never overwrites`)
}

const toDate = (ns: bigint): number => Number(ns) / 1e9

export async function getTo (store: BlockGetter, cid: CID, out: string, opts: GetOptions = {}): Promise<GetResult> {
  targetFree(out)
  const res: GetResult = { kind: 'raw', files: 0, dirs: 0, symlinks: 0, bytes: 0 }
  const bytes = await store.get(cid)
  const kind = cid.code === RAW ? 'raw' : cid.code === DAG_CBOR ? objectKind(cid, bytes) : 'raw'
  res.kind = kind
  const r = new Restorer(store, res, opts)
  try {
    switch (kind) {
      case 'entry':
        await r.entry(out, decodeEntryBlock(bytes))
        break
      case 'version': {
        const v = decodeVersion(bytes)
        r.table = v.links
        const rootEntry: Entry = v.rootAttrs ?? { name: new Uint8Array(0), kind: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0n, atime: 0n, ctime: 0n }
        await r.entry(out, { ...rootEntry, cid: v.root, kind: 'dir' })
        break
      }
      case 'dir':
        await r.dir(out, cid)
        break
      case 'file':
        await r.file(out, cid)
        break
      case 'log':
        throw ReefError.badInput(`${cid.toString()} is a log record, not a file or tree (use reef block get)`)
      default:
        await fs.promises.writeFile(out, bytes, { flag: 'wx' })
        res.files++
        res.bytes += bytes.length
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (err instanceof ReefError || code === undefined) throw err
    throw new ReefError('IO', `cannot write ${out}: ${code} (${(err as Error).message})`, err)
  }
  return res
}

class Restorer {
  table?: CID
  private readonly linked = new Map<number, string>()
  private tableReader?: DirReader
  isRoot = process.getuid?.() === 0

  constructor (private readonly store: BlockGetter, private readonly res: GetResult, private readonly opts: GetOptions) {}

  async entry (out: string | Buffer, e: Entry): Promise<void> {
    if (e.linked === true && e.ino !== undefined) {
      const first = this.linked.get(e.ino)
      if (first !== undefined) {
        await fs.promises.link(first, out)
        return
      }
      if (this.table === undefined) throw ReefError.badEncoding('linked entry without a link table')
      this.tableReader ??= new DirReader(this.table, this.store)
      const t = await this.tableReader.lookup(inoKey(e.ino))
      if (t === undefined) throw ReefError.badEncoding(`link table lacks inode ${e.ino}`)
      this.linked.set(e.ino, out.toString())
      e = { ...t, name: e.name }
    }
    if (e.kind === 'symlink') {
      await fs.promises.symlink(Buffer.from(e.target as Uint8Array), out)
      this.res.symlinks++
      if (this.isRoot) await fs.promises.lchown(out, e.uid, e.gid).catch(() => {})
      await fs.promises.lutimes(out, toDate(e.atime), toDate(e.mtime))
      return
    }
    if (e.kind === 'file') await this.file(out, e.cid as CID)
    else await this.dir(out, e.cid as CID)
    if (this.isRoot) await fs.promises.chown(out, e.uid, e.gid).catch(() => {})
    await fs.promises.chmod(out, e.mode)
    await fs.promises.utimes(out, toDate(e.atime), toDate(e.mtime))
  }

  async file (out: string | Buffer, cid: CID): Promise<void> {
    const fh = await fs.promises.open(out, 'wx', 0o600)
    try {
      for await (const chunk of new FileReader(cid, this.store).stream()) {
        await fh.write(chunk)
        this.res.bytes += chunk.length
        this.opts.onBytes?.(chunk.length)
      }
    } finally {
      await fh.close()
    }
    this.res.files++
  }

  async dir (out: string | Buffer, cid: CID): Promise<void> {
    await fs.promises.mkdir(out, { mode: 0o700 })
    this.res.dirs++
    const base = Buffer.isBuffer(out) ? out : Buffer.from(out)
    for await (const e of new DirReader(cid, this.store).entries()) {
      await this.entry(Buffer.concat([base, Buffer.from('/'), Buffer.from(e.name)]), e)
    }
  }
}
