/**
 * Open files and their data: open, create, read, write (with write-behind), flush, fsync,
 * release, fallocate.
 *
 * Write-behind: a write is acknowledged once queued, and applied right after, in order, before
 * any later op runs (every other op waits for the queue; see index.ts). A write that then fails
 * is reported once, by the next write, flush (close) or fsync of its handle, as a kernel page
 * cache reports a failed writeback. O_SYNC, O_DSYNC and O_DIRECT writes, and a write straddling
 * the maximum file size (which must answer a short count), are applied before they are answered.
 */
import { ReefError } from '../../src/errors.js'
import type { Ctx, Entry, LowLevelOps, Opened } from '../fuse3.js'
import { FuseErrno } from '../fuse3.js'
import { toErrno } from '../errno.js'
import type { Adapter, Handle } from './context.js'
import { bytes } from './tree.js'

const posix = ReefError.posix
const O_ACCMODE = 3
const O_DSYNC = 0o10000
const O_DIRECT = 0o40000
const O_TRUNC = 0o1000
const O_APPEND = 0o2000

export function fileOps (a: Adapter): Pick<LowLevelOps, 'open' | 'create' | 'read' | 'write' | 'flush' | 'fsync' | 'release' | 'fallocate'> {
  const { tree } = a
  /**
   * The kernel keeps a file's pages across opens: inode-addressed, every name of a file is one
   * kernel inode, and what changes under it (a follower's new version, a write that failed after
   * it was acknowledged) is invalidated explicitly.
   */
  const opened = (h: Omit<Handle, 'lateError'>): Opened => ({ fh: a.open(h), keepCache: true })
  const syncFlags = (flags: number): boolean => (flags & (O_DSYNC | O_DIRECT)) !== 0
  /**
   * Without writeback cache the kernel sends an O_APPEND write at the size it caches, and a
   * view's merge can change the file between that and the write (a line another writer
   * appended would be overwritten). So reef places the write, at its own end of file, under
   * its lock, as POSIX asks. With writeback cache the kernel owns append and its WRITEs are
   * page flushes: their offsets stand.
   */
  const appendFlag = (flags: number): boolean => (flags & O_APPEND) !== 0 && !a.kernelWriteback

  /** Applies a write; where an append went elsewhere than the kernel thought, the kernel's
   * size and the pages it just filled are dropped (never awaited here: the kernel holds those
   * pages locked until this write is answered). */
  const applyWrite = async (h: Handle, ino: number, off: number, data: Buffer): Promise<number> => {
    // The request's buffer is ours (a copy of the kernel's): its whole pages are kept as they are.
    const r = await a.fs.writeAt(h.node.ino, h.append ? 'end' : off, data, { give: true })
    if (r.offset !== off) {
      a.counters.staleAppends++
      void tree.kernel?.invalInode(ino, 0, 0)
    }
    return r.n
  }

  /** The test hooks of a write to `ino`. */
  const writeFault = (ino: number): void => {
    const w = a.o.faults?.write
    if (w !== undefined && tree.nameOf(ino).endsWith(w)) throw posix('ENOSPC', `REEF_TEST_WRITE_FAULT: ${tree.nameOf(ino)}`)
    if (a.faultAt('write', ino, 'run')) throw a.injected('write', ino)
  }

  const applyQueued = async (h: Handle, ino: number, off: number, data: Buffer): Promise<void> => {
    try {
      writeFault(ino)
      await applyWrite(h, ino, off, data)
      a.changed()
    } catch (err) {
      a.wb.lateErrors++
      h.lateError = new FuseErrno(-toErrno(err, 'write', (l) => a.log(l)))
      // The kernel's pages hold bytes reef does not have: they go.
      void tree.kernel?.invalInode(ino, 0, 0)
    } finally {
      a.wb.pending--
      a.queuedBytes -= data.length
    }
  }

  return {
    open: async (ino: number, flags: number) => {
      const t = await tree.node(ino)
      const writable = (flags & O_ACCMODE) !== 0
      if (writable && t.ro) throw posix('EROFS', 'read-only file system')
      if (t.node.kind === 'dir' && writable) throw posix('EISDIR', tree.nameOf(ino))
      // libfuse3 asks for atomic O_TRUNC: the kernel sends it with the open (no SETATTR) and
      // takes the file as empty once the open succeeds. Linux truncates on O_RDONLY|O_TRUNC too
      // (it has checked write permission).
      if ((flags & O_TRUNC) !== 0 && t.node.kind === 'file') {
        if (t.ro) throw posix('EROFS', 'read-only file system')
        await a.fs.truncate(t.node.ino, 0)
        a.changed()
      }
      return opened({ fs: t.fs, node: t.node, ino, writable, sync: syncFlags(flags), append: appendFlag(flags) })
    },

    create: async (parent: number, name: string | Uint8Array, mode: number, flags: number, ctx: Ctx): Promise<Entry & Opened> => {
      const n = bytes(name)
      const dir = await a.writableDir(parent, n)
      const node = await a.fs.create(dir.ino, n, mode, a.cred(ctx))
      a.changed()
      const t = { kind: 'node' as const, fs: a.fs, node, ro: false }
      const e = tree.entry(t, n)
      return { ...e, ...opened({ fs: a.fs, node, ino: e.attr.ino, writable: true, sync: syncFlags(flags), append: appendFlag(flags) }) }
    },

    read: async (ino: number, fh: number, off: number, size: number) => {
      const h = a.handle(fh)
      if (a.faultAt('read', ino, 'run')) throw a.injected('read', ino)
      const data = await h.fs.readParts(h.node, off, size)
      // More bytes than the kernel asked for: the wrapper refuses them with a RangeError.
      return a.faultAt('read', ino, 'reply') ? Buffer.alloc(size + 1) : data
    },

    write: async (ino: number, fh: number, off: number, data: Buffer) => {
      const h = a.handles.get(fh)
      if (h === undefined || !h.writable || h.fs !== a.fs) throw posix('EBADF', `no open file ${fh} for writing`)
      const max = a.o.maxFileSize
      if (off >= max) throw posix('EFBIG', `write at ${off}, past the maximum file size`)
      if (!a.wb.enabled || h.sync || off + data.length > max) {
        a.wb.synchronous++
        const n = await a.afterWrites(async () => {
          a.takeLateError(h)
          writeFault(ino)
          return await applyWrite(h, ino, off, data)
        })
        a.changed()
        return a.faultAt('write', ino, 'reply') ? Symbol('REEF_TEST_OP_FAULT') as unknown as number : n
      }
      a.takeLateError(h)
      if (a.queuedBytes + data.length > a.maxQueued) {
        a.wb.fullWaits++
        await a.lastWrite
      }
      a.wb.deferred++
      a.wb.pending++
      a.queuedBytes += data.length
      a.lastWrite = a.lastWrite.then(async () => await applyQueued(h, ino, off, data))
      return data.length
    },

    // close(2) of every descriptor: the queue is applied (index.ts waits for it before any op),
    // and a late failure of this handle is reported.
    flush: async (_ino: number, fh: number) => {
      const h = a.handles.get(fh)
      if (h !== undefined) a.takeLateError(h)
    },

    fsync: async (_ino: number, fh: number) => {
      const h = a.handles.get(fh)
      if (h !== undefined) a.takeLateError(h)
      a.fs.sync()
      a.o.onFsync?.()
    },

    release: async (_ino: number, fh: number) => {
      const h = a.handles.get(fh)
      if (h === undefined) return
      a.handles.delete(fh)
      h.fs.release(h.node)
    },

    // The kernel sends the handle fallocate was called on, having checked that it is open for
    // writing, and refuses the modes FUSE does not carry.
    fallocate: async (ino: number, fh: number, mode: number, off: number, length: number) => {
      const h = a.handles.get(fh)
      if (h !== undefined && (!h.writable || h.fs !== a.fs)) throw posix('EBADF', `file ${fh} is not open for writing`)
      const n = h?.node ?? (await a.writable(ino)).node
      await a.fs.fallocate(n.ino, mode, off, length)
      a.changed()
    }
  }
}
