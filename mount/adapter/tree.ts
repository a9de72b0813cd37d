/**
 * The kernel's inodes and what they are in reef. The kernel names every inode by a number it got
 * from a lookup (or a create, mkdir, readdirplus ...), and gives each reference back with FORGET:
 *   - a live inode is reef's own inode number (the root is 1, FUSE's root);
 *   - `/.reef` and `/.reef/versions` are two virtual directories above 2^52;
 *   - an inode of an old version (`/.reef/versions/N/...`) gets a number above 2^51, remembered
 *     here until the kernel forgets it.
 * There is no path table: names are resolved in the fs core, one directory at a time.
 */
import { ReefError } from '../../src/errors.js'
import type { ReefFS } from '../../src/fs/fs.js'
import { type Attr as ReefAttr, type Inode, keyName, nameKey, ROOT_INO, S_IFDIR } from '../../src/fs/inode.js'
import type { Attr, Entry, Fuse3Mount } from '../fuse3.js'
import type { AdapterOptions } from './options.js'

export const RESERVED = '.reef'
const RESERVED_BYTES = Buffer.from(RESERVED)
export const REEF_INO = 2 ** 52 + 1
export const VERSIONS_INO = 2 ** 52 + 2
const VERSION_INO_BASE = 2 ** 51
const posix = ReefError.posix

export type NodeTarget = { kind: 'node', fs: ReefFS, node: Inode, ro: boolean, seq?: bigint }
export type Target = NodeTarget | { kind: 'virtual', which: 'reef' | 'versions' }

export const bytes = (name: string | Uint8Array): Uint8Array => typeof name === 'string' ? Buffer.from(name) : name
export const isReserved = (parent: number, name: Uint8Array): boolean => parent === ROOT_INO && RESERVED_BYTES.equals(name)

/** Whether two inodes (one file in two trees) look the same to the kernel: attributes and content. */
function sameState (a: Inode, b: Inode): boolean {
  if (a.kind !== b.kind || a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid || a.nlink !== b.nlink || a.size !== b.size) return false
  if (a.mtime !== b.mtime || a.ctime !== b.ctime || a.rdev !== b.rdev) return false
  if (a.pages !== undefined || b.pages !== undefined) return false
  const base = (n: Inode): string => String(n.kind === 'dir' ? n.dirBase : n.base)
  return base(a) === base(b)
}

/**
 * What the kernel holds by one inode number: its references (lookups minus forgets), the last
 * name it was found under (test hooks and log lines; a nameKey string), and for a live inode
 * the inode, held open in the fs core as an open file is: a name removed (unlink, rename over
 * it) between a process's lookup and its open must still lead to that inode, as on a local file
 * system. FORGET lets go. One record per number: after `find` the kernel holds every inode.
 */
interface Ref { count: number, name: string | undefined, fs: ReefFS | undefined, node: Inode | undefined }

export class Tree {
  private readonly refs = new Map<number, Ref>()
  /** Old versions' inodes the kernel holds: number -> (version, inode of that version). */
  private readonly versionNodes = new Map<number, { seq: bigint, ino: number }>()
  /** The same, the other way: `seq:ino` -> the number the kernel holds it by. */
  private readonly versionNumbers = new Map<string, number>()
  /** Inodes given back to the fs core after FORGETs (status). */
  unloaded = 0
  /** A follower's previous tree: inodes the kernel holds are found again by path in the new one. */
  private previous?: ReefFS

  constructor (private readonly o: AdapterOptions) {}

  get referenced (): number { return this.refs.size }

  /** The inodes of `fs` the kernel holds, by number. */
  * heldIn (fs: ReefFS): Iterable<[number, Inode]> {
    for (const [ino, r] of this.refs) if (r.fs === fs && r.node !== undefined) yield [ino, r.node]
  }

  /** How the kernel is told to drop what it caches (set once mounted). */
  kernel?: Pick<Fuse3Mount, 'invalInode' | 'invalEntry'>

  /**
   * Moves every held inode of `old` to `next` (Adapter.rebase), and says what the kernel must
   * drop: inodes whose attributes or content differ, and names in held directories that differ.
   */
  rebase (old: ReefFS, next: ReefFS, move: (ino: number, n: Inode) => Inode): { inodes: number[], entries: Array<[number, Uint8Array]> } {
    const inodes: number[] = []
    const entries: Array<[number, Uint8Array]> = []
    const compare = (ino: number, before: Inode, after: Inode): void => {
      if (after === before || !sameState(before, after)) inodes.push(ino)
      if (before.kind === 'dir' && before.children !== undefined) {
        // Names that went or changed, and names that came: the kernel may hold a negative entry
        // for those (lookup caches "not there" for the entry timeout).
        const now = after.children ?? new Map<string, number>()
        for (const [key, i] of before.children) if (now.get(key) !== i) entries.push([ino, keyName(key)])
        for (const key of now.keys()) if (!before.children.has(key)) entries.push([ino, keyName(key)])
      }
    }
    // The root is never looked up, so never held, but the kernel holds it all the same.
    const oldRoot = old.inodes.get(ROOT_INO)
    const newRoot = next.inodes.get(ROOT_INO)
    if (oldRoot !== undefined && newRoot !== undefined) compare(ROOT_INO, oldRoot, newRoot)
    for (const [ino, r] of this.refs) {
      if (r.fs !== old || r.node === undefined) continue
      const before = r.node
      const after = move(ino, before)
      r.fs = next
      r.node = after
      compare(ino, before, after)
    }
    this.previous = old
    return { inodes, entries }
  }

  /** Tells the kernel to drop what `rebase` found changed; resolves once it has. */
  async invalidate (what: { inodes: number[], entries: Array<[number, Uint8Array]> }): Promise<void> {
    const k = this.kernel
    if (k === undefined) return
    const done: Array<Promise<void>> = []
    for (const ino of what.inodes) done.push(k.invalInode(ino, 0, 0))
    for (const [dir, name] of what.entries) done.push(k.invalEntry(dir, name))
    await Promise.all(done)
  }

  nameOf (ino: number): string {
    const n = this.refs.get(ino)?.name
    return n === undefined ? `inode ${ino}` : Buffer.from(n, 'latin1').toString()
  }

  /** What the kernel's inode `ino` is now. */
  async target (ino: number): Promise<Target> {
    if (ino === REEF_INO) return { kind: 'virtual', which: 'reef' }
    if (ino === VERSIONS_INO) return { kind: 'virtual', which: 'versions' }
    const v = this.versionNodes.get(ino)
    if (v !== undefined) {
      const fs = await this.o.versions.open(v.seq)
      return { kind: 'node', fs, node: fs.node(v.ino), ro: true, seq: v.seq }
    }
    return { kind: 'node', fs: this.o.fs, node: await this.live(ino), ro: this.o.readOnly === true }
  }

  async node (ino: number): Promise<NodeTarget> {
    const t = await this.target(ino)
    if (t.kind !== 'node') throw posix('EISDIR', `${this.nameOf(ino)} is part of reef's read-only control tree`)
    return t
  }

  private async live (ino: number): Promise<Inode> {
    const fs = this.o.fs
    const n = fs.inodes.get(ino)
    if (n !== undefined) return n
    const old = this.previous?.inodes.get(ino)
    if (old !== undefined && this.previous !== undefined) {
      const again = await fs.resolve(this.previous.pathOf(old)).catch(() => undefined)
      if (again?.ino === ino) return again
    }
    throw posix('ESTALE', `no inode ${ino}`)
  }

  /** `name` in directory `parent`, or ENOENT. */
  async child (parent: number, name: Uint8Array): Promise<Target> {
    if (name.length > 255) throw posix('ENAMETOOLONG', `a name of ${name.length} bytes`)
    const dir = await this.target(parent)
    if (dir.kind === 'virtual') {
      const text = Buffer.from(name).toString()
      if (dir.which === 'reef') {
        if (text === 'versions') return { kind: 'virtual', which: 'versions' }
        throw posix('ENOENT', text)
      }
      if (!/^[1-9]\d{0,18}$/.test(text)) throw posix('ENOENT', text)
      const seq = BigInt(text)
      const fs = await this.o.versions.open(seq)
      return { kind: 'node', fs, node: fs.root, ro: true, seq }
    }
    if (dir.node.kind !== 'dir') throw posix('ENOTDIR', this.nameOf(parent))
    if (dir.seq === undefined && isReserved(dir.node.ino, name)) return { kind: 'virtual', which: 'reef' }
    const n = await dir.fs.lookup(dir.node, name)
    if (n === undefined) throw posix('ENOENT', Buffer.from(name).toString())
    return { ...dir, node: n }
  }

  /**
   * An old version's inode gets a number in the block of its version (seq mod 2^20, 2^31 numbers
   * each) at its own number mod 2^31. Inode numbers are a writer prefix above a record counter
   * (src/fs/ino.ts), so two of one version can meet there (the root and a writer's first file,
   * a legacy number and a counter, two writers' equal counters): the later one the kernel is
   * given takes the next free number of the block, for as long as the kernel holds it.
   */
  inoOf (t: Target): number {
    if (t.kind === 'virtual') return t.which === 'reef' ? REEF_INO : VERSIONS_INO
    if (t.seq === undefined) return t.node.ino
    const held = this.versionNumbers.get(`${t.seq}:${t.node.ino}`)
    if (held !== undefined) return held
    const block = VERSION_INO_BASE + Number(t.seq % 1_048_576n) * 2 ** 31
    let at = t.node.ino % 2 ** 31
    for (let v = this.versionNodes.get(block + at); v !== undefined && !(v.seq === t.seq && v.ino === t.node.ino); v = this.versionNodes.get(block + at)) {
      at = (at + 1) % 2 ** 31
    }
    return block + at
  }

  /** The kernel now holds one more reference to `t` (a lookup answered with it); `name` as bytes or as a nameKey string. */
  counted (t: Target, name?: Uint8Array | string): number {
    const ino = this.inoOf(t)
    let r = this.refs.get(ino)
    if (r === undefined) {
      r = { count: 0, name: undefined, fs: undefined, node: undefined }
      this.refs.set(ino, r)
    }
    r.count++
    if (t.kind === 'node' && t.seq !== undefined) {
      this.versionNodes.set(ino, { seq: t.seq, ino: t.node.ino })
      this.versionNumbers.set(`${t.seq}:${t.node.ino}`, ino)
    }
    if (t.kind === 'node' && t.seq === undefined && r.node === undefined) {
      t.fs.open(t.node)
      r.fs = t.fs
      r.node = t.node
    }
    if (name !== undefined) r.name = typeof name === 'string' ? name : nameKey(name)
    return ino
  }

  forget (ino: number, n: number): void {
    const r = this.refs.get(ino)
    if (r !== undefined && r.count - n > 0) {
      r.count -= n
      return
    }
    this.refs.delete(ino)
    const v = this.versionNodes.get(ino)
    if (v !== undefined) this.versionNumbers.delete(`${v.seq}:${v.ino}`)
    this.versionNodes.delete(ino)
    const fs = r?.fs
    const node = r?.node
    if (fs !== undefined && node !== undefined) {
      fs.release(node)
      // The kernel has let go of every entry below a directory before the directory itself
      // (children pin their parent): what it no longer holds need not stay loaded here either.
      if (node.kind === 'dir') {
        fs.unload(node).then(n => { this.unloaded += n }, err => { this.o.log(`unload of a forgotten directory: ${String(err)}`) })
      }
    }
  }

  /** The kernel's view of `t`: reef's attributes under the kernel's inode number. */
  attr (t: Target): Attr {
    if (t.kind === 'virtual') {
      const r = this.o.fs.root.attr()
      return { ino: this.inoOf(t), mode: S_IFDIR | 0o555, nlink: 2, uid: r.uid, gid: r.gid, size: 0, blocks: 0, atimeNs: r.atime, mtimeNs: r.mtime, ctimeNs: r.ctime }
    }
    return toAttr(t.node.attr(), this.inoOf(t))
  }

  /**
   * Seconds the kernel may keep `t`'s attributes. Inode-addressed, so every name of a hard-linked
   * file is one kernel inode and caching is exact: everything but `.reef/versions`, which grows
   * with each fold (a follower's or a view's tree changes under it too, and the kernel is told: MountDaemon.swap).
   */
  attrTimeout (t: Target): number {
    return t.kind === 'virtual' ? 0 : this.o.attrTimeout
  }

  entryTimeout (t: Target): number {
    return t.kind === 'virtual' ? 0 : this.o.entryTimeout
  }

  /** A lookup's answer; the kernel's count of `t` grows by one. */
  entry (t: Target, name?: Uint8Array): Entry {
    const e = { attr: this.attr(t), attrTimeout: this.attrTimeout(t), entryTimeout: this.entryTimeout(t) }
    this.counted(t, name)
    return e
  }
}

export function toAttr (a: ReefAttr, ino: number): Attr {
  return { ino, mode: a.mode, nlink: a.nlink, uid: a.uid, gid: a.gid, size: a.size, rdev: a.rdev, blocks: a.blocks, atimeNs: a.atime, mtimeNs: a.mtime, ctimeNs: a.ctime }
}
