/**
 * `apply`: the single place where the state of a ReefFS (src/fs/fs.ts) changes, live (after a
 * mutation is validated and logged) and on replay of the log after a crash, and where a merge
 * (src/merge) replays the writers' records. The POSIX checks are the callers' (ReefFS's
 * mutations, before they log a record).
 */
import { ReefError } from '../errors.js'
import { isDevice, type Kind } from '../object/dir.js'
import type { Op } from '../log/record.js'
import { Inode } from './inode.js'
import { checkFallocate } from './fallocate.js'
import type { Core } from './tree.js'

const posix = ReefError.posix

/**
 * The extended attribute that marks an open conflict (src/merge): the merge sets it on a
 * conflict copy (or on a file whose concurrent rename lost); a rename of the inode, or removing
 * the attribute, resolves it, and so does deleting the inode.
 */
export const CONFLICT_XATTR = 'user.reef.conflict'

export async function apply ({ tree, pages, links }: Core, op: Op): Promise<void> {
  switch (op.op) {
    case 'create':
    case 'mkdir':
    case 'symlink': {
      const dir = tree.node(op.parent)
      const kind: Kind = op.op === 'create' ? 'file' : op.op === 'mkdir' ? 'dir' : 'symlink'
      const n = new Inode(op.ino, kind, op.op === 'symlink' ? 0o777 : op.mode, op.uid, op.gid, op.time)
      if (kind === 'dir') n.children = new Map()
      if (op.op === 'symlink') {
        n.target = op.target
        n.size = op.target.length
      }
      tree.inodes.set(n.ino, n)
      tree.bumpLegacy(n.ino)
      await tree.attachChild(dir, op.name, n, op.time)
      if (kind === 'dir') tree.markDirDirty(n.ino)
      if (kind === 'file') pages.dirtyFiles.add(n.ino)
      return
    }
    case 'mknod': {
      const n = new Inode(op.ino, op.kind, op.mode, op.uid, op.gid, op.time)
      if (isDevice(op.kind)) n.rdev = op.rdev
      tree.inodes.set(n.ino, n)
      tree.bumpLegacy(n.ino)
      await tree.attachChild(tree.node(op.parent), op.name, n, op.time)
      return
    }
    case 'write': {
      const n = tree.node(op.ino)
      await pages.applyWrite(n, op.offset, op.data)
      n.mtime = n.ctime = op.time
      tree.markEntryDirty(n)
      return
    }
    case 'truncate': {
      const n = tree.node(op.ino)
      pages.applyTruncate(n, op.size)
      n.mtime = n.ctime = op.time
      tree.markEntryDirty(n)
      return
    }
    case 'fallocate': {
      const n = tree.node(op.ino)
      checkFallocate(n.kind, op.mode, op.offset, op.length)
      pages.applyFallocate(n, op.mode, op.offset, op.length)
      // As ext4 and tmpfs do for every mode, even one that changes nothing else.
      n.mtime = n.ctime = op.time
      tree.markEntryDirty(n)
      return
    }
    case 'unlink':
    case 'rmdir': {
      const n = await tree.detach(tree.node(op.parent), op.name, op.time)
      tree.drop(n, op.time)
      return
    }
    case 'rename': {
      const src = tree.node(op.parent)
      const dst = tree.node(op.newParent)
      if (op.exchange === true) {
        const a = await tree.detach(src, op.name, op.time)
        const b = await tree.detach(dst, op.newName, op.time)
        a.ctime = b.ctime = op.time
        await tree.attachChild(dst, op.newName, a, op.time)
        await tree.attachChild(src, op.name, b, op.time)
        tree.markEntryDirty(a)
        tree.markEntryDirty(b)
        return
      }
      const target = await tree.lookup(dst, op.newName)
      const n = await tree.detach(src, op.name, op.time)
      if (target !== undefined && target !== n) {
        await tree.detach(dst, op.newName, op.time)
        tree.drop(target, op.time)
      }
      n.ctime = op.time
      // Renaming a conflict copy (or a file whose rename lost) resolves its conflict.
      if (n.xattrs.has(CONFLICT_XATTR)) n.removeXattr(CONFLICT_XATTR)
      await tree.attachChild(dst, op.newName, n, op.time)
      tree.markEntryDirty(n)
      return
    }
    case 'link': {
      const n = tree.node(op.ino)
      if (!n.inTable) {
        // The inode moves to the link table; its old entry becomes a reference to it.
        tree.markDirDirty(n.parent)
        n.inTable = true
        n.parent = 0
      }
      n.nlink++
      n.ctime = op.time
      links.dirty = true
      await tree.attachChild(tree.node(op.parent), op.name, n, op.time)
      return
    }
    case 'setattr': {
      const n = tree.node(op.ino)
      if (op.mode !== undefined) n.mode = op.mode & 0o7777
      if (op.uid !== undefined) n.uid = op.uid
      if (op.gid !== undefined) n.gid = op.gid
      if (op.atime !== undefined) n.atime = op.atime
      if (op.mtime !== undefined) n.mtime = op.mtime
      if (op.xattrName !== undefined) {
        if (op.xattrRemove === true) n.removeXattr(op.xattrName)
        else if (op.xattrValue !== undefined) n.setXattr(op.xattrName, op.xattrValue)
      }
      n.ctime = op.time
      tree.markEntryDirty(n)
      return
    }
    case 'attach':
      throw posix('ENOTSUP', 'attach records are not applied by this version')
  }
}
