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
import type { Frozen } from './layer.js'

/** The table as a fold's snapshot took it (LinkTable.snapshot). */
export interface LinkSnapshot {
  base?: CID
  dropped: number[]
  /** Loaded residents: each one's entry then (with the tree its frozen content gets), or gone. */
  residents: Array<{ ino: number, entry?: Entry, file?: Frozen }>
}

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

  /**
   * Under the fs lock: what a fold of the table needs, taken now (the residents' entries, the
   * drops); changes from here on are tracked for the next fold.
   */
  snapshot (inodes: Iterable<Inode>): LinkSnapshot {
    const residents: LinkSnapshot['residents'] = []
    for (const n of inodes) {
      if (!n.inTable) continue
      if (n.nlink === 0) residents.push({ ino: n.ino })
      else residents.push({ ino: n.ino, entry: n.toEntry(linkTableKey(n.ino)), file: n.kind === 'file' ? n.frozen : undefined })
    }
    const snap = { base: this.base, dropped: [...this.dropped], residents }
    this.dirty = false
    this.dropped.clear()
    return snap
  }

  /** Builds the table from the stored one and a snapshot's residents (no lock needed). */
  async build (snap: LinkSnapshot, emit: (b: Block) => void): Promise<CID | undefined> {
    const byIno = new Map<number, Entry>()
    if (snap.base !== undefined) {
      const dropped = new Set(snap.dropped)
      for await (const e of new DirReader(snap.base, this.store).entries()) {
        if (e.ino !== undefined && !dropped.has(e.ino)) byIno.set(e.ino, e)
      }
    }
    for (const r of snap.residents) {
      if (r.entry === undefined) byIno.delete(r.ino)
      else byIno.set(r.ino, r.file !== undefined ? { ...r.entry, cid: r.file.cid } : r.entry)
    }
    if (byIno.size === 0) return undefined
    return buildDir([...byIno.values()].map(e => ({ ...e, name: linkTableKey(e.ino as number) })), emit).cid
  }

  /** After a fold stored `links`: it is the base; what changed since the snapshot stays pending. */
  settleSnapshot (links: CID | undefined): void {
    this.base = links
  }

  /** The fold failed: what its snapshot took is pending again. */
  restore (snap: LinkSnapshot): void {
    for (const ino of snap.dropped) this.dropped.add(ino)
    this.dirty = true
  }
}
