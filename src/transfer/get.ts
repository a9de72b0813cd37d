/**
 * `reef get`: restores an entry block, a version, a directory or file tree, or a raw block to a
 * local path, byte-identical, with modes, times and symlinks. Hard links recorded in a version's
 * link table are restored as hard links. The target must not exist yet: get never overwrites.
 *
 * FIFOs and sockets are recreated (special.ts); device nodes only by a process that may make
 * them (root, or CAP_MKNOD). Otherwise each device is skipped and named in `skipped`, and the
 * rest is restored, as tar does; a get of one device alone fails with EPERM, having nothing to
 * restore.
 *
 * Atomicity: everything is restored under a hidden temporary sibling of the target, which is
 * renamed onto the target only once complete; on any error (a corrupt block, a full disk) the
 * temporary is removed, so a failed get leaves no partial target behind.
 *
 * Time precision: the stored times are nanoseconds, but Node 20 can only set times through a
 * double of seconds, which libuv truncates to whole microseconds. `utimeArg` makes the result
 * exact to the microsecond (truncated toward zero) for |t| < 2^33 s (years 1698..2242); beyond
 * that a double cannot resolve a microsecond and the error is at most about 2 µs.
 */
import fs from 'node:fs'
import { randomBytes } from 'node:crypto'
import type { CID } from 'multiformats/cid'
import { RAW, DAG_CBOR } from '../block/index.js'
import { ReefError } from '../errors.js'
import { decodeEntryBlock, DirReader, type Entry, isDevice, linkTableKey, SPECIAL_KINDS } from '../object/dir.js'
import { FileReader } from '../object/file.js'
import { decodeVersion, objectKind } from '../object/version.js'
import type { BlockGetter } from '../store/types.js'
import { parentBytes, resolveBytes } from './paths.js'
import { makeSpecial, mayMakeDevices } from './special.js'

export interface GetResult {
  kind: string
  files: number
  dirs: number
  symlinks: number
  /** FIFOs, sockets and device nodes restored. */
  specials: number
  bytes: number
  /** Device nodes not restored (no right to make them), by restored path. */
  skipped: string[]
}

export interface GetOptions { onBytes?: (n: number) => void }


function targetFree (out: Buffer): void {
  try {
    fs.lstatSync(out)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'ENOENT') throw ReefError.badInput(`cannot use ${out.toString()}: ${code}`)
    let parent: fs.Stats
    try {
      parent = fs.statSync(parentBytes(out))
    } catch (err) {
      throw ReefError.badInput(`cannot use ${out.toString()}: its parent directory: ${(err as NodeJS.ErrnoException).code}`)
    }
    if (!parent.isDirectory()) throw ReefError.badInput(`cannot use ${out.toString()}: its parent is not a directory (ENOTDIR)`)
    return
  }
  throw ReefError.badInput(`${out.toString()} already exists; reef get never overwrites`)
}

/**
 * A time argument for fs.utimes/lutimes that sets `ns` to the microsecond. Node 20 turns a
 * negative number into "now" (so a pre-1970 time would be silently lost) but passes a numeric
 * string through, and libuv truncates the double toward zero to whole microseconds; aiming at
 * the middle of the wanted microsecond keeps the double's rounding from landing one below it.
 */
export function utimeArg (ns: bigint): string {
  const us = ns / 1000n // truncates toward zero, like libuv
  const aim = us * 1000n + (ns < 0n ? -500n : 500n)
  const neg = aim < 0n
  const abs = neg ? -aim : aim
  return `${neg ? '-' : ''}${abs / 1_000_000_000n}.${(abs % 1_000_000_000n).toString().padStart(9, '0')}`
}

/** Removes a partial restore, making its directories writable first (they may be 0555). */
async function removeTree (p: Buffer): Promise<void> {
  const walk = async (q: Buffer): Promise<void> => {
    const st = await fs.promises.lstat(q).catch(() => undefined)
    if (st?.isDirectory() !== true) return
    await fs.promises.chmod(q, 0o700).catch(() => {})
    const names = await fs.promises.readdir(q, { encoding: 'buffer' }).catch(() => [] as Buffer[])
    for (const n of names) await walk(Buffer.concat([q, Buffer.from('/'), n]))
  }
  await walk(p)
  await fs.promises.rm(p, { recursive: true, force: true })
}

/** Restores `cid` to `target` (a string, or a Buffer for a name that is not UTF-8). */
export async function getTo (store: BlockGetter, cid: CID, target: string | Buffer, opts: GetOptions = {}): Promise<GetResult> {
  const out = resolveBytes(target)
  targetFree(out)
  const res: GetResult = { kind: 'raw', files: 0, dirs: 0, symlinks: 0, specials: 0, bytes: 0, skipped: [] }
  const bytes = await store.get(cid)
  const kind = cid.code === RAW ? 'raw' : cid.code === DAG_CBOR ? objectKind(cid, bytes) : 'raw'
  res.kind = kind
  if (kind === 'log') throw ReefError.badInput(`${cid.toString()} is a log record, not a file or tree (use reef block get)`)
  const tmp = Buffer.concat([parentBytes(out), Buffer.from(`/.reef-get-${randomBytes(6).toString('hex')}.tmp`)])
  // Messages name where a node was meant to go, not the temporary it was restored under.
  const r = new Restorer(store, res, opts, p => Buffer.concat([out, p.subarray(tmp.length)]).toString())
  try {
    switch (kind) {
      case 'entry': {
        const e = decodeEntryBlock(bytes)
        await r.entry(tmp, e)
        if (res.skipped.length > 0 && isDevice(e.kind)) {
          res.skipped = []
          throw ReefError.posix('EPERM', `cannot restore the ${e.kind === 'chr' ? 'character' : 'block'} device ${out.toString()}: making device nodes needs root (CAP_MKNOD)`)
        }
        break
      }
      case 'version': {
        const v = decodeVersion(bytes)
        r.table = v.links
        const rootEntry: Entry = v.rootAttrs ?? { name: new Uint8Array(0), kind: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0n, atime: 0n, ctime: 0n }
        await r.entry(tmp, { ...rootEntry, cid: v.root, kind: 'dir' })
        break
      }
      case 'dir':
        await r.dir(tmp, cid)
        break
      case 'file':
        await r.file(tmp, cid)
        break
      default:
        await fs.promises.writeFile(tmp, bytes, { flag: 'wx', mode: 0o600 })
        res.files++
        res.bytes += bytes.length
    }
    // rename(2) would replace a file or an empty directory created meanwhile: check once more.
    targetFree(out)
    await fs.promises.rename(tmp, out)
  } catch (err) {
    await removeTree(tmp).catch(() => {})
    const code = (err as NodeJS.ErrnoException).code
    if (err instanceof ReefError || code === undefined) throw err
    throw new ReefError('IO', `cannot write ${out.toString()}: ${code} (${(err as Error).message})`, err)
  }
  return res
}

class Restorer {
  table?: CID
  private readonly linked = new Map<number, string | Buffer>()
  /** Link-table inodes of devices that were skipped: their other names are skipped too. */
  private readonly skippedIno = new Set<number>()
  private tableReader?: DirReader
  isRoot = process.getuid?.() === 0
  private devices?: boolean

  constructor (private readonly store: BlockGetter, private readonly res: GetResult, private readonly opts: GetOptions, private readonly shown: (p: Buffer) => string) {}

  async entry (out: Buffer, e: Entry): Promise<void> {
    const ino = e.linked === true ? e.ino : undefined
    if (e.linked === true && e.ino !== undefined) {
      if (this.skippedIno.has(e.ino)) {
        this.res.skipped.push(this.shown(out))
        return
      }
      const first = this.linked.get(e.ino)
      if (first !== undefined) {
        await fs.promises.link(first, out)
        return
      }
      if (this.table === undefined) throw ReefError.badEncoding('linked entry without a link table')
      this.tableReader ??= new DirReader(this.table, this.store)
      const t = await this.tableReader.lookup(linkTableKey(e.ino))
      if (t === undefined) throw ReefError.badEncoding(`link table lacks inode ${e.ino}`)
      this.linked.set(e.ino, out)
      e = { ...t, name: e.name }
    }
    if (e.kind === 'symlink') {
      await fs.promises.symlink(Buffer.from(e.target as Uint8Array), out)
      this.res.symlinks++
      if (this.isRoot) await fs.promises.lchown(out, e.uid, e.gid).catch(() => {})
      await fs.promises.lutimes(out, utimeArg(e.atime), utimeArg(e.mtime))
      return
    }
    if (SPECIAL_KINDS.has(e.kind)) {
      if (!await this.special(out, e)) {
        if (ino !== undefined) {
          this.skippedIno.add(ino)
          this.linked.delete(ino)
        }
        return
      }
      if (this.isRoot) await fs.promises.chown(out, e.uid, e.gid).catch(() => {})
      await fs.promises.chmod(out, e.mode)
      // By path, never through a descriptor: opening a FIFO would wait for a writer.
      await fs.promises.lutimes(out, utimeArg(e.atime), utimeArg(e.mtime))
      return
    }
    if (e.kind === 'file') await this.file(out, e.cid as CID)
    else await this.dir(out, e.cid as CID)
    if (this.isRoot) await fs.promises.chown(out, e.uid, e.gid).catch(() => {})
    await fs.promises.chmod(out, e.mode)
    await fs.promises.utimes(out, utimeArg(e.atime), utimeArg(e.mtime))
  }

  /** Makes a FIFO, socket or device node; false when a device was skipped (no right to make it). */
  private async special (out: Buffer, e: Entry): Promise<boolean> {
    const device = isDevice(e.kind)
    this.devices ??= mayMakeDevices()
    if (device && !this.devices) {
      this.res.skipped.push(this.shown(out))
      return false
    }
    try {
      await makeSpecial(out, e.kind, e.rdev, this.shown(out))
    } catch (err) {
      // Root without the right (a user namespace, a container without CAP_MKNOD): skipped alike.
      if (!device || !(err instanceof ReefError && err.code === 'EPERM')) throw err
      this.devices = false
      this.res.skipped.push(this.shown(out))
      return false
    }
    this.res.specials++
    return true
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
