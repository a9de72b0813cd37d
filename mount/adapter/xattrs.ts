/**
 * Extended attributes. reef keeps `user.*` names; `user.reef.guid` is reef's own, read-only:
 * the BGUID of a file or directory as of now (the VGUID for a root), folding first so it is exact.
 */
import { ReefError } from '../../src/errors.js'
import { ROOT_INO } from '../../src/fs/inode.js'
import type { LowLevelOps } from '../fuse3.js'
import type { Adapter } from './context.js'
import type { NodeTarget } from './tree.js'

const posix = ReefError.posix
const GUID = 'user.reef.guid'

export function xattrOps (a: Adapter): Pick<LowLevelOps, 'setxattr' | 'getxattr' | 'listxattr' | 'removexattr'> {
  const { tree } = a

  async function guidOf (t: NodeTarget): Promise<string> {
    if (t.fs === a.fs && !a.fs.readOnly && a.fs.dirty) await a.fs.fold()
    if (t.node.ino === ROOT_INO) {
      const v = t.fs === a.fs ? await a.o.versions.current() : t.fs.version?.vguid
      if (v !== undefined) return v.toString()
    }
    const cid = t.node.kind === 'dir' ? t.node.dirBase : t.node.base
    if (cid === undefined) throw posix('ENODATA', 'no GUID for this entry')
    return cid.toString()
  }

  return {
    setxattr: async (ino: number, name: string, value: Buffer, flags: number) => {
      if (name === GUID) throw posix('EPERM', `${GUID} is read-only`)
      const t = await a.writable(ino)
      await a.fs.setxattr(t.node.ino, name, new Uint8Array(value), flags)
      a.changed()
    },

    getxattr: async (ino: number, name: string) => {
      const t = await tree.target(ino)
      if (t.kind === 'virtual') throw posix('ENODATA', name)
      if (name === GUID) return Buffer.from(await guidOf(t))
      return Buffer.from(t.fs.getxattr(t.node, name))
    },

    listxattr: async (ino: number) => {
      const t = await tree.target(ino)
      return t.kind === 'virtual' ? [] : t.fs.listxattr(t.node)
    },

    removexattr: async (ino: number, name: string) => {
      const t = await a.writable(ino)
      await a.fs.removexattr(t.node.ino, name)
      a.changed()
    }
  }
}
