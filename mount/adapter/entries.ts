/**
 * Names and attributes: lookup, forget, getattr, setattr, and the ops that make or remove names.
 * Each takes the kernel's inode numbers (and a name in a directory), never a path.
 */
import { isReefError, ReefError } from '../../src/errors.js'
import { RENAME_EXCHANGE, RENAME_NOREPLACE } from '../../src/fs/fs.js'
import type { Attr, Ctx, Entry, LowLevelOps, SetAttr } from '../fuse3.js'
import type { Adapter } from './context.js'
import { bytes, REEF_INO, type Target } from './tree.js'

const posix = ReefError.posix
type Name = string | Uint8Array

/** An attribute the addon cannot convert (the reply-stage test fault). */
export const unconvertible = (a: Attr): Attr => ({ ...a, size: Symbol('REEF_TEST_OP_FAULT') as unknown as number })

export function entryOps (a: Adapter): Pick<LowLevelOps, 'lookup' | 'forget' | 'getattr' | 'setattr' | 'mknod' | 'mkdir' | 'symlink' | 'readlink' | 'link' | 'unlink' | 'rmdir' | 'rename'> {
  const { tree } = a
  const made = (t: Target, name: Uint8Array): Entry => {
    a.changed()
    return tree.entry(t, name)
  }
  const live = (node: Target & { kind: 'node' }): Target => ({ kind: 'node', fs: a.fs, node: node.node, ro: false })

  return {
    lookup: async (parent: number, name: Name): Promise<Entry> => {
      a.counters.lookup++
      const n = bytes(name)
      try {
        return tree.entry(await tree.child(parent, n), n)
      } catch (err) {
        // A name that is not there may be remembered as such (a negative entry, inode 0): every
        // name made later in this tree is made through this mount, which replaces the kernel's
        // negative entry itself. Not where names appear under the kernel: a follower's tree and
        // the control tree. Compilers and shells probe many missing names; creates each probe one.
        if (!isReefError(err) || err.code !== 'ENOENT' || a.o.follower === true || parent >= REEF_INO) throw err
        const t = await tree.target(parent)
        if (t.kind !== 'node' || t.seq !== undefined) throw err
        return { attr: { ino: 0, mode: 0, nlink: 0, uid: 0, gid: 0, size: 0 }, attrTimeout: 0, entryTimeout: a.o.entryTimeout }
      }
    },

    forget: (forgets: Array<[number, number]>): void => {
      a.counters.forget += forgets.length
      for (const [ino, n] of forgets) tree.forget(ino, n)
    },

    getattr: async (ino: number) => {
      a.counters.getattr++
      const t = await tree.target(ino)
      if (a.faultAt('getattr', ino, 'run')) throw a.injected('getattr', ino)
      if (a.faultAt('uncaught', ino, 'run')) {
        setImmediate(() => { throw a.injected('uncaught (timer)', ino) })
        void Promise.reject(a.injected('uncaught (promise)', ino))
      }
      const attr = tree.attr(t)
      return { attr: a.faultAt('getattr', ino, 'reply') ? unconvertible(attr) : attr, timeout: tree.attrTimeout(t) }
    },

    setattr: async (ino: number, set: SetAttr, fh: number | undefined) => {
      const h = fh !== undefined ? a.handles.get(fh) : undefined
      const t = await a.writable(ino)
      const n = t.node
      if (set.size !== undefined) {
        if (h !== undefined && !h.writable) throw posix('EBADF', 'not open for writing')
        if (n.kind === 'dir') throw posix('EISDIR', tree.nameOf(ino))
        await a.fs.truncate(n.ino, set.size)
      }
      // With nothing else to change (chown(-1, -1), a SETATTR of ctime alone) only ctime moves, as
      // on ext4.
      if (set.size === undefined || set.mode !== undefined || set.uid !== undefined || set.gid !== undefined || set.atimeNs !== undefined || set.mtimeNs !== undefined) {
        await a.fs.setattr(n.ino, { mode: set.mode, uid: set.uid, gid: set.gid, atime: set.atimeNs, mtime: set.mtimeNs })
      }
      a.changed()
      return { attr: tree.attr(t), timeout: tree.attrTimeout(t) }
    },

    // FIFOs, sockets (bind(2) makes one through mknod) and device nodes; the kernel has checked
    // CAP_MKNOD for devices and applied the caller's umask.
    mknod: async (parent: number, name: Name, mode: number, rdev: number, ctx: Ctx) => {
      const n = bytes(name)
      const dir = await a.writableDir(parent, n)
      return made({ kind: 'node', fs: a.fs, node: await a.fs.mknod(dir.ino, n, mode, rdev, a.cred(ctx)), ro: false }, n)
    },

    mkdir: async (parent: number, name: Name, mode: number, ctx: Ctx) => {
      const n = bytes(name)
      const dir = await a.writableDir(parent, n)
      return made({ kind: 'node', fs: a.fs, node: await a.fs.mkdir(dir.ino, n, mode, a.cred(ctx)), ro: false }, n)
    },

    symlink: async (parent: number, name: Name, target: Name, ctx: Ctx) => {
      const n = bytes(name)
      const dir = await a.writableDir(parent, n)
      return made({ kind: 'node', fs: a.fs, node: await a.fs.symlink(dir.ino, n, bytes(target), a.cred(ctx)), ro: false }, n)
    },

    readlink: async (ino: number) => {
      const t = await tree.node(ino)
      return t.fs.readlink(t.node)
    },

    link: async (ino: number, newParent: number, newName: Name) => {
      const n = bytes(newName)
      const t = await a.writable(ino)
      const dir = await a.writableDir(newParent, n)
      await a.fs.link(t.node.ino, dir.ino, n)
      return made(live(t), n)
    },

    unlink: async (parent: number, name: Name) => {
      const dir = await a.writable(parent)
      await a.fs.unlink(dir.node.ino, bytes(name))
      a.changed()
    },

    rmdir: async (parent: number, name: Name) => {
      const dir = await a.writable(parent)
      await a.fs.rmdir(dir.node.ino, bytes(name))
      a.changed()
    },

    rename: async (parent: number, name: Name, newParent: number, newName: Name, flags: number) => {
      if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) !== 0) throw posix('EINVAL', `rename flags ${flags}`)
      const from = await a.writable(parent)
      const to = bytes(newName)
      const dir = await a.writableDir(newParent, to)
      await a.fs.rename(from.node.ino, bytes(name), dir.ino, to, flags)
      a.changed()
    }
  }
}
