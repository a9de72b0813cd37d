/**
 * The inode table of a ReefFS (src/fs/fs.ts) and its directory structure. A directory's
 * children load from its stored tree on first use (a tree that cannot be read makes the
 * directory damaged, not the file system); names resolve to inodes; and the changes `apply`
 * makes (src/fs/apply.ts) go through attachChild, detach and drop, which mark the directories
 * (and link-table entries) the next fold must rebuild.
 */
import type { CID } from 'multiformats/cid'
import { isDamage, ReefError } from '../errors.js'
import { DirReader, type Entry } from '../object/dir.js'
import type { BlockGetter, BlockStore } from '../store/types.js'
import { Inode, keyName, nameKey, ROOT_INO } from './inode.js'
import { LEGACY_LIMIT } from './ino.js'
import type { LinkTable } from './links.js'
import type { Pages } from './pages.js'

const posix = ReefError.posix
const enc = new TextEncoder()

const DAMAGE_WORD: Record<string, string> = { NOT_FOUND: 'is missing', BLOCK_CORRUPT: 'is corrupt', BAD_ENCODING: 'is malformed' }

/** The state of a file system, one owner for each part: what `apply` and a fold work on. */
export interface Core { tree: Tree, pages: Pages, links: LinkTable }

export class Tree {
  readonly inodes = new Map<number, Inode>()
  nextIno = ROOT_INO + 1
  /** Directories the next fold rebuilds (a changed one and every one above it). */
  readonly dirtyDirs = new Set<number>()
  /** A fold is storing a snapshot: directories stay loaded (their stored trees are the old ones). */
  folding = false
  /** Directories whose tree could not be read, by inode (see children). */
  readonly damaged = new Map<number, { path: string, guid: string, code: string, message: string }>()
  /** Damaged blocks already reported (dir ino and GUID): a retried `ls` logs nothing new. */
  private readonly reported = new Set<string>()

  constructor (
    private readonly store: BlockStore,
    private readonly pages: Pages,
    private readonly links: LinkTable,
    private readonly warn: (line: string) => void
  ) {}

  node (ino: number): Inode {
    const n = this.inodes.get(ino)
    if (n === undefined) throw posix('ENOENT', `no inode ${ino}`)
    return n
  }

  get root (): Inode { return this.node(ROOT_INO) }

  /**
   * Children of a directory (name key -> ino), loading them from its tree on first use. A tree
   * that cannot be read makes the directory damaged (DAMAGED, EIO through the mount), not the
   * file system: the next call tries again, so a block that arrives later heals it.
   */
  async children (dir: Inode): Promise<Map<string, number>> {
    if (dir.children !== undefined) return dir.children
    if (dir.kind !== 'dir') throw posix('ENOTDIR', `inode ${dir.ino} is not a directory`)
    if (dir.loading === undefined) {
      dir.loading = this.loadDir(dir).finally(() => { dir.loading = undefined })
    }
    return await dir.loading
  }

  /**
   * Reads the whole tree (and the link-table records of its hard links) before any inode is
   * made, so a directory that fails part-way leaves nothing behind, and is never dirty: a
   * damaged directory keeps its old tree link at every fold (nothing in it is lost).
   */
  private async loadDir (dir: Inode): Promise<Map<string, number>> {
    const map = new Map<string, number>()
    if (dir.dirBase !== undefined) {
      // Reads are sequential, so the block that failed is the last one asked for.
      let last: CID = dir.dirBase
      const store: BlockGetter = { get: async cid => { last = cid; return await this.store.get(cid) } }
      const read: Array<{ e: Entry, t?: Entry }> = []
      try {
        for await (const e of new DirReader(dir.dirBase, store).entries()) read.push({ e, t: await this.links.entry(e, store, this.inodes) })
      } catch (err) {
        if (!isDamage(err)) throw err
        throw this.damage(dir, last, err)
      }
      for (const { e, t } of read) map.set(nameKey(e.name), this.inodeFor(e, dir, t).ino)
    }
    this.damaged.delete(dir.ino)
    if (dir.children === undefined) dir.children = map
    return dir.children
  }

  private inodeFor (e: Entry, dir: Inode, t: Entry | undefined): Inode {
    if (e.ino !== undefined) {
      const known = this.inodes.get(e.ino)
      if (known !== undefined) return known
    }
    let n: Inode
    if (t !== undefined && e.ino !== undefined) {
      n = Inode.fromEntry(e.ino, t)
      n.inTable = true
    } else {
      // Every entry reef writes carries an ino; one without (a foreign tree) gets the next free
      // one, and its directory is rewritten at the next fold so the number sticks.
      const ino = e.ino ?? this.nextIno++
      if (e.ino === undefined) this.markDirDirty(dir.ino)
      n = Inode.fromEntry(ino, e)
      n.parent = dir.ino
    }
    this.bumpLegacy(n.ino)
    this.inodes.set(n.ino, n)
    return n
  }

  /** `nextIno` numbers foreign entries that carry none; it stays in the legacy range. */
  bumpLegacy (ino: number): void {
    if (ino < LEGACY_LIMIT && ino >= this.nextIno) this.nextIno = ino + 1
  }

  /** Records a damaged directory, reports it once per block, and gives the error its readers get. */
  private damage (dir: Inode, block: CID, err: ReefError): ReefError {
    const path = this.pathOf(dir)
    const guid = block.toString()
    this.damaged.set(dir.ino, { path, guid, code: err.code, message: err.message })
    this.dirtyDirs.delete(dir.ino)
    const key = `${dir.ino} ${guid}`
    if (!this.reported.has(key)) {
      this.reported.add(key)
      this.warn(`damaged directory ${path}: block ${guid} ${DAMAGE_WORD[err.code] ?? 'is unreadable'} (${err.message} [${err.code}]); ` +
        'it answers EIO, the rest is served, and its stored tree is kept as it is')
    }
    return new ReefError('DAMAGED', `directory ${path} is damaged: block ${guid} ${DAMAGE_WORD[err.code] ?? 'is unreadable'}`, err)
  }

  /** Loads every directory of the tree (used before replaying a log); damaged ones are skipped. */
  async loadAll (): Promise<void> {
    const stack = [this.inodes.get(ROOT_INO) as Inode]
    while (stack.length > 0) {
      const d = stack.pop() as Inode
      let kids: Map<string, number>
      try {
        kids = await this.children(d)
      } catch (err) {
        if (isDamage(err)) continue
        throw err
      }
      for (const ino of kids.values()) {
        const c = this.inodes.get(ino)
        if (c?.kind === 'dir') stack.push(c)
      }
    }
  }

  // ---- names -----------------------------------------------------------------------------

  /** A loaded inode's path, for messages ("?" where a name cannot be found). */
  pathOf (n: Inode): string {
    const names: string[] = []
    for (let cur = n, guard = 0; cur.ino !== ROOT_INO && guard < 4096; guard++) {
      const parent = this.inodes.get(cur.parent)
      let name = '?'
      for (const [k, ino] of parent?.children ?? []) if (ino === cur.ino) { name = Buffer.from(keyName(k)).toString(); break }
      names.push(name)
      if (parent === undefined) break
      cur = parent
    }
    return '/' + names.reverse().join('/')
  }

  async lookup (dir: Inode, name: Uint8Array): Promise<Inode | undefined> {
    if (dir.kind !== 'dir') throw posix('ENOTDIR', `inode ${dir.ino} is not a directory`)
    const ino = (await this.children(dir)).get(nameKey(name))
    return ino === undefined ? undefined : this.inodes.get(ino)
  }

  /** Resolves an absolute path ("/a/b") without following a final symlink. */
  async resolve (path: string | Uint8Array): Promise<Inode> {
    const p = typeof path === 'string' ? enc.encode(path) : path
    let cur = this.root
    let start = 0
    for (let i = 0; i <= p.length; i++) {
      if (i === p.length || p[i] === 0x2f) {
        if (i > start) {
          const name = p.subarray(start, i)
          if (cur.kind !== 'dir') throw posix('ENOTDIR', 'a path component is not a directory')
          if (name.length > 255) throw posix('ENAMETOOLONG', 'a path component exceeds 255 bytes')
          const next = await this.lookup(cur, name)
          if (next === undefined) throw posix('ENOENT', Buffer.from(p).toString())
          cur = next
        }
        start = i + 1
      }
    }
    return cur
  }

  /** The entries of a directory; `key` is the name as the directory's map keys it (nameKey). */
  async readdir (dir: Inode): Promise<Array<{ name: Uint8Array, ino: number, key: string }>> {
    const out: Array<{ name: Uint8Array, ino: number, key: string }> = []
    for (const [k, ino] of await this.children(dir)) out.push({ name: keyName(k), ino, key: k })
    return out
  }

  /** One name of a loaded inode: its parent's entry, or for a hard-linked one the first found. */
  where (ino: number): { dir: Inode, name: Uint8Array } | undefined {
    const n = this.inodes.get(ino)
    if (n === undefined || n.ino === ROOT_INO) return undefined
    const dirs = n.inTable ? [...this.inodes.values()].filter(d => d.kind === 'dir') : [this.inodes.get(n.parent)]
    for (const d of dirs) {
      for (const [k, i] of d?.children ?? []) if (i === ino && d !== undefined) return { dir: d, name: keyName(k) }
    }
    return undefined
  }

  /** Whether `ino` is `ancestor` or below it (loaded parents only). */
  within (ino: number, ancestor: number): boolean {
    for (let a = this.inodes.get(ino), guard = 0; a !== undefined && guard < 1 << 20; a = this.inodes.get(a.parent), guard++) {
      if (a.ino === ancestor) return true
      if (a.ino === ROOT_INO) return false
    }
    return false
  }

  // ---- changes (made by apply): what they touch is marked for the next fold -------------

  markDirDirty (ino: number): void {
    // A damaged directory is never rebuilt (it would be written from what could not be read).
    while (ino !== 0 && !this.dirtyDirs.has(ino) && !this.damaged.has(ino)) {
      this.dirtyDirs.add(ino)
      ino = this.inodes.get(ino)?.parent ?? 0
    }
  }

  markEntryDirty (n: Inode): void {
    if (n.ino === ROOT_INO) this.markDirDirty(ROOT_INO)
    else if (n.inTable) this.links.dirty = true
    else this.markDirDirty(n.parent)
  }

  forget (n: Inode): void {
    this.inodes.delete(n.ino)
    this.pages.forget(n)
    if (n.inTable) this.links.drop(n.ino)
  }

  async detach (dir: Inode, name: Uint8Array, time: bigint): Promise<Inode> {
    const kids = await this.children(dir)
    const key = nameKey(name)
    const ino = kids.get(key)
    if (ino === undefined) throw posix('ENOENT', Buffer.from(name).toString())
    const n = this.node(ino)
    kids.delete(key)
    dir.size = kids.size
    dir.mtime = dir.ctime = time
    this.markDirDirty(dir.ino)
    if (n.kind === 'dir') {
      dir.nlink--
      dir.subdirs--
    }
    return n
  }

  async attachChild (dir: Inode, name: Uint8Array, n: Inode, time: bigint): Promise<void> {
    const kids = await this.children(dir)
    kids.set(nameKey(name), n.ino)
    dir.size = kids.size
    dir.mtime = dir.ctime = time
    if (n.kind === 'dir') {
      dir.nlink++
      dir.subdirs++
    }
    if (!n.inTable) n.parent = dir.ino
    this.markDirDirty(dir.ino)
  }

  drop (n: Inode, time: bigint): void {
    n.nlink = n.kind === 'dir' ? 0 : n.nlink - 1
    n.ctime = time
    if (n.nlink > 0) {
      this.markEntryDirty(n)
      return
    }
    if (n.openCount === 0) this.forget(n)
    else if (n.inTable) this.links.dirty = true
  }

  // ---- memory ----------------------------------------------------------------------------

  /**
   * Forgets the loaded children of a clean directory (they load again from its tree at the next
   * lookup): how the memory the kernel gives back with FORGET is given back here too. A child
   * that is open or held, has unfolded changes, is hard-linked (the link table owns it) or is a
   * directory with loaded children stays. Returns how many inodes went. The caller holds the lock.
   */
  unload (dir: Inode): number {
    if (dir.kind !== 'dir' || dir.children === undefined || dir.loading !== undefined || !dir.hasDirBase) return 0
    if (this.folding || this.dirtyDirs.has(dir.ino) || this.damaged.has(dir.ino) || !this.inodes.has(dir.ino)) return 0
    let gone = 0
    for (const ino of dir.children.values()) {
      const c = this.inodes.get(ino)
      if (c === undefined || c.openCount > 0 || c.inTable || c.pages !== undefined || c.contentDirty || this.pages.dirtyFiles.has(ino)) continue
      if (c.kind === 'dir' && (c.children !== undefined || this.dirtyDirs.has(ino) || this.damaged.has(ino))) continue
      this.inodes.delete(ino)
      gone++
    }
    dir.children = undefined
    return gone
  }

  release (n: Inode): void {
    n.openCount = Math.max(0, n.openCount - 1)
    if (n.openCount === 0 && n.nlink === 0) {
      this.forget(n)
      return
    }
    // The reader's cached tree nodes and chunks (~5 KiB even for a tiny file) would otherwise
    // stay with every inode ever read for as long as something holds it, and the mount holds
    // every inode the kernel does (reading 100,000 small files left 864 MiB of heap, not 401).
    // Dropped at every release: another descriptor's next read makes a new reader.
    n.dropReader()
  }
}
