/**
 * The hard-link table of a ReefFS (src/fs/fs.ts): a file linked more than once lives in the
 * version's link table (keyed by inode), and each of its names is an entry that refers to it.
 * This holds the table as of the last fold, what changed since, and how a fold rebuilds it.
 */
import type { CID } from 'multiformats/cid'
import type { Block } from '../block/index.js'
import { ReefError } from '../errors.js'
import { buildDir, DirReader, type Entry, linkTableKey } from '../object/dir.js'
import type { BlockGetter, BlockStore } from '../store/types.js'
import type { Inode } from './inode.js'

export class LinkTable {
  /** The link table of the version the tree was last folded into (or opened from). */
  base?: CID
  /** Whether the next fold must rebuild the table. */
  dirty = false
  /** Table residents forgotten since the last fold: the rebuilt table leaves them out. */
  private readonly dropped = new Set<number>()

  constructor (private readonly store: BlockStore) {}

  /** The link-table record of a hard-linked entry whose inode is not in memory yet. */
  async entry (e: Entry, store: BlockGetter, inodes: ReadonlyMap<number, Inode>): Promise<Entry | undefined> {
    if (e.linked !== true || e.ino === undefined || inodes.has(e.ino)) return undefined
    if (this.base === undefined) throw ReefError.badEncoding(`entry ${Buffer.from(e.name).toString()}: linked entry without a link table`)
    const t = await new DirReader(this.base, store).lookup(linkTableKey(e.ino))
    if (t === undefined) throw ReefError.badEncoding(`entry ${Buffer.from(e.name).toString()}: link table lacks inode ${e.ino}`)
    return t
  }

  /** A table resident is gone (forgotten): its record goes at the next fold. */
  drop (ino: number): void {
    this.dropped.add(ino)
    this.dirty = true
  }

  /** Builds the table from the stored one and the loaded residents of `inodes`. */
  async fold (emit: (b: Block) => void, inodes: Iterable<Inode>): Promise<CID | undefined> {
    const byIno = new Map<number, Entry>()
    if (this.base !== undefined) {
      for await (const e of new DirReader(this.base, this.store).entries()) {
        if (e.ino !== undefined && !this.dropped.has(e.ino)) byIno.set(e.ino, e)
      }
    }
    for (const n of inodes) {
      if (n.inTable && n.nlink > 0) byIno.set(n.ino, n.toEntry(linkTableKey(n.ino)))
      if (n.inTable && n.nlink === 0) byIno.delete(n.ino)
    }
    if (byIno.size === 0) return undefined
    return buildDir([...byIno.values()].map(e => ({ ...e, name: linkTableKey(e.ino as number) })), emit).cid
  }

  /** After a fold: `links` is the stored table, and nothing is pending. */
  settle (links: CID | undefined): void {
    this.base = links
    this.dirty = false
    this.dropped.clear()
  }
}
