/**
 * Replays writers' records, in merge order, onto one tree, translating each from what its
 * writer saw to what the merged tree holds, so that no concurrent change is lost silently.
 *
 * Each record carries its writer's version vector, so for any two records the merge knows
 * whether one writer had seen the other's change. The rules (each a test in test/merge.test.ts):
 * - Content (write, truncate, fallocate) of a file another writer changed concurrently: the
 *   writer first in merge order keeps the name; a later one's version (the file as of the merge
 *   base, the changes that writer had seen, its own) becomes a conflict copy beside it
 *   (names.ts), and its later records go to the copy (until it has seen the change that set its
 *   version aside: from then on it has the merged tree, and the name means the merged file).
 * - A new name that exists already: two directories merge into the first one; anything else gets
 *   a conflict name (so a directory and a file under one name both stay).
 * - unlink or rmdir of an inode another writer changed concurrently (content, rename, link, or a
 *   new entry inside a directory) is not applied: the change survives. rmdir of a directory that
 *   is not empty in the merged tree is not applied either.
 * - A rename whose source was renamed concurrently: the first in merge order wins and the file is
 *   marked as a conflict (what the other writer wanted is in the mark). A rename over a file
 *   another writer changed concurrently keeps that file under a conflict name. A rename that
 *   would put a directory inside itself (a -> b/a while b -> a/b) is not applied; its directory
 *   is marked. No loop forms and no subtree is cut off.
 * - setattr (chmod, chown, utimes, xattrs) applies in merge order: the later one wins.
 * - A writer's later records follow its file wherever the merge put it (its conflict copy, a
 *   conflict name), so they reach its own version.
 * Every record that is not applied as written is reported in `events`; every conflict copy or
 * mark in `notes` and in the tree (CONFLICT_XATTR), which `listConflicts` reads back.
 */
import type { CID } from 'multiformats/cid'
import type { Entry } from '../object/dir.js'
import { type ContentOp, isContentOp, type Op, recordId, recordIdKey } from '../log/record.js'
import { ReefError } from '../errors.js'
import { CONFLICT_XATTR, type ReefFS } from '../fs/fs.js'
import type { Inode } from '../fs/inode.js'
import { inoPrefixOf, mergeIno, prefixOfIno } from '../fs/ino.js'
import { conflictName } from './names.js'
import { hasSeen, type Ranked } from './order.js'

export type ConflictKind = 'content' | 'create' | 'rename' | 'cycle' | 'replaced'

/** An open conflict: the marked inode's path, what it was, who was involved. */
export interface ConflictNote {
  kind: ConflictKind
  /** The marked inode's path when the merge marked it. */
  path: string
  /** The name the conflict is about (the original's path; for 'rename', the name wanted). */
  original: string
  /** Writers involved (hex keys), the one whose version was set aside last. */
  writers: string[]
  /** Their head versions, where the merge knew them. */
  versions: string[]
  ino: number
}

export interface MergeEvent {
  /** kept: a removal not applied; skipped: a record that no longer applies; merged: two mkdirs; renumbered: an inode number taken. */
  kind: 'kept' | 'skipped' | 'merged' | 'renumbered'
  writer: string
  n: number
  what: string
}

interface Touch { w: string, n: number, vv: Record<string, number>, time: number }

/** Inodes a record changes (or adds entries to), before translation. */
function touched (op: Op): number[] {
  switch (op.op) {
    case 'write': case 'truncate': case 'fallocate': return [op.ino]
    case 'link': return [op.ino, op.parent]
    case 'rename': return [...(op.ino !== undefined ? [op.ino] : []), op.newParent]
    case 'create': case 'mkdir': case 'symlink': case 'mknod': case 'attach': return [op.parent]
    default: return []
  }
}

/**
 * A file's content history in this merge: its entry before the first change, the changes
 * replayed onto it in order, and each writer's latest of them.
 */
interface Lineage { snap: Entry, ops: Ranked[], last: Map<string, Ranked> }

/**
 * A change in `lin` by another writer that `x` had not seen (the latest change of the first such
 * writer): seeing a writer's record means seeing all its earlier ones, so the latest decides.
 */
function unseen (lin: Lineage | undefined, x: Ranked): Ranked | undefined {
  for (const [w, c] of lin?.last ?? []) if (w !== x.w && !hasSeen(x.r, w, c.r.n)) return c
  return undefined
}

const enc = new TextEncoder()

/**
 * A conflict copy's entry: the content its writer changed (`content`: data, size, last change)
 * with the attributes the merged file has now (mode, owner, xattrs, atime): those come from
 * records before it in merge order, the same from any base, where `content` is an entry as
 * the merge base or an earlier state left it.
 */
function copyEntry (now: Inode | undefined, content: Entry): Entry {
  if (now === undefined) return content
  const e: Entry = { ...now.toEntry(content.name), size: content.size }
  if (content.cid !== undefined) e.cid = content.cid
  else delete e.cid
  if (content.last !== undefined) e.last = content.last
  else delete e.last
  return e
}

export class Merger {
  /**
   * Per writer: inode numbers of its records -> the inode they mean in the merged tree; with
   * `unless`, only for records that had seen none of those records (a conflict copy: once its
   * writer has seen a change that set its version aside, it has a merged tree, where the number
   * means the file at the name again, and the copy has a number of its own; if that file is not
   * what it saw there, its change becomes a conflict copy of its own rather than land on bytes
   * it never saw).
   */
  private readonly alias = new Map<string, Map<number, { to: number, unless?: Array<{ w: string, n: number }> }>>()
  /** A file's content history in this merge: its entry before the first change, the changes. */
  private readonly lineage = new Map<number, Lineage>()
  /** Conflict copies made in this merge, by inode: the writer whose version each holds. */
  private readonly forkOwner = new Map<number, string>()
  /**
   * Inodes the merge put under another name than their writer asked for (a conflict name), by
   * that writer: its later records name the inode by the name it knows, so they find it here.
   */
  private readonly displaced = new Map<number, string>()
  /**
   * Writers by inode-number prefix (src/fs/ino.ts), for naming who made a file a new one met:
   * from the number alone, so a merge from an earlier merge names the same writer as a merge
   * from none (which saw the create). Prefixes two writers share name neither.
   */
  private readonly byPrefix = new Map<number, string | null>()
  /** Per inode, per writer (in order of first touch): its records touching it, by counter. */
  private readonly touches = new Map<number, Map<string, Touch[]>>()
  private readonly marks = new Map<number, ConflictNote>()
  readonly changed = new Set<number>()
  readonly events: MergeEvent[] = []
  /** Content records of this merge by record id (recordIdKey): the chains `after` links. */
  private readonly byId = new Map<string, Ranked>()
  /**
   * Where each record's change is now the content's last (recordIdKey -> inode), from the
   * tree's `last` fields; built at the first record that says what it changed.
   */
  private lastAt?: Map<string, number>
  /** The same at the start of the merge (base content a chain starts from). */
  private baseAt?: Map<string, number>

  constructor (private readonly fs: ReefFS, records: Ranked[], private readonly heads: Map<string, CID>) {
    for (const w of new Set([...heads.keys(), ...records.map(x => x.w)])) {
      const p = inoPrefixOf(Buffer.from(w, 'hex'))
      this.byPrefix.set(p, this.byPrefix.has(p) ? null : w)
    }
    for (const x of records) {
      if (isContentOp(x.r.op)) this.byId.set(`${x.w}:${x.r.n}`, x)
      for (const ino of touched(x.r.op)) {
        let byWriter = this.touches.get(ino)
        if (byWriter === undefined) this.touches.set(ino, byWriter = new Map())
        let l = byWriter.get(x.w)
        if (l === undefined) byWriter.set(x.w, l = [])
        l.push({ w: x.w, n: x.r.n, vv: x.r.vv, time: x.r.time })
      }
    }
  }

  get notes (): ConflictNote[] { return [...this.marks.values()] }

  private tr (x: Ranked, ino: number): number {
    const a = this.alias.get(x.w)?.get(ino)
    if (a === undefined || (a.unless !== undefined && a.unless.some(u => hasSeen(x.r, u.w, u.n)))) return ino
    return a.to
  }

  private setAlias (w: string, from: number, to: number, unless?: Array<{ w: string, n: number }>): void {
    let m = this.alias.get(w)
    if (m === undefined) this.alias.set(w, m = new Map())
    m.set(from, unless !== undefined ? { to, unless } : { to })
  }

  private event (x: Ranked, kind: MergeEvent['kind'], what: string): void {
    this.events.push({ kind, writer: x.w, n: x.r.n, what })
  }

  /**
   * The writer's own tree applied the record as written; the merge may have applied it
   * elsewhere (a conflict copy, a conflict name) or not at all: a mount showing that tree must
   * drop what it holds of every inode the record named, in both numberings.
   */
  private named (x: Ranked): void {
    const op = x.r.op as Partial<Record<'ino' | 'parent' | 'newParent' | 'target', number>>
    for (const k of ['ino', 'parent', 'newParent', 'target'] as const) {
      const v = op[k]
      if (v !== undefined) this.changed.add(v).add(this.tr(x, v))
    }
  }

  /** The writer whose records make inodes numbered like `ino` (none for merge-made numbers). */
  private writerOf (ino: number): string | undefined {
    return this.byPrefix.get(prefixOfIno(ino)) ?? undefined
  }

  /** The first record of another writer that changed `ino` concurrently with `x`. */
  private concurrentTouch (ino: number, x: Ranked): Touch | undefined {
    // x had seen a writer's records up to some counter; of the later ones, the first is the one
    // least likely to have seen x (version vectors only grow along a writer's log).
    for (const [w, list] of this.touches.get(ino) ?? []) {
      if (w === x.w) continue
      const seen = x.r.vv[w] ?? 0
      let lo = 0
      let hi = list.length
      while (lo < hi) {
        const mid = (lo + hi) >> 1
        if (list[mid].n <= seen) lo = mid + 1
        else hi = mid
      }
      const t = list[lo]
      if (t !== undefined && (t.vv[x.w] ?? 0) < x.r.n) return t
    }
    return undefined
  }

  /**
   * Another writer's change `x` had not seen to the merged tree's inode `ino` (`raw` in x's own
   * numbering): a record touching `raw` (precomputed), or a content change replayed onto `ino`
   * itself (a conflict copy holds only its own writer's).
   */
  private changedConcurrently (ino: number, raw: number, x: Ranked): Touch | undefined {
    const c = unseen(this.lineage.get(ino), x)
    if (c !== undefined) return { w: c.w, n: c.r.n, vv: c.r.vv, time: c.r.time }
    if (this.forkOwner.has(ino)) return undefined
    return this.concurrentTouch(raw, x)
  }

  /** The writer who changed `ino` concurrently with `x` (if one did), then x's writer. */
  private involved (ino: number, x: Ranked): string[] {
    const t = this.concurrentTouch(ino, x)
    return t !== undefined ? [t.w, x.w] : [x.w]
  }

  /** A free inode number under the merge prefix, the same on every node for (writer, ino). */
  private freshIno (w: string, ino: number): number {
    const seed = Buffer.alloc(40)
    Buffer.from(w, 'hex').copy(seed, 0, 0, 32)
    seed.writeBigUInt64BE(BigInt(ino), 32)
    for (let probe = 0; ; probe++) {
      const cand = mergeIno(seed, probe)
      if (!this.fs.inodes.has(cand)) return cand
    }
  }

  private async freeName (dir: Inode, name: Uint8Array, timeMs: number, w: string): Promise<Uint8Array> {
    for (let k = 1; ; k++) {
      const cand = conflictName(name, timeMs, Buffer.from(w, 'hex'), k)
      if (await this.fs.lookup(dir, cand) === undefined) return cand
    }
  }

  private join (dir: Inode, name: Uint8Array): string {
    const p = this.fs.pathOf(dir)
    return (p === '/' ? '' : p) + '/' + Buffer.from(name).toString()
  }

  private mark (n: Inode, note: Omit<ConflictNote, 'path' | 'ino' | 'versions'>): void {
    const versions = note.writers.map(w => this.heads.get(w)?.toString()).filter((v): v is string => v !== undefined)
    const full: ConflictNote = { ...note, path: this.fs.pathOf(n), versions, ino: n.ino }
    this.marks.set(n.ino, full)
    this.fs.markConflict(n, markBytes(full))
    this.changed.add(n.ino)
  }

  async apply (x: Ranked): Promise<void> {
    try {
      this.named(x)
      await this.translate(x)
      this.named(x)
    } catch (err) {
      // What a writer did may not fit the merged tree in ways not foreseen above: the record is
      // reported and left out rather than stopping the merge (the checks above run first, so a
      // refused op has changed nothing).
      if (!(err instanceof ReefError)) throw err
      this.event(x, 'skipped', `${x.r.op.op}: ${err.message}`)
    }
  }

  private async translate (x: Ranked): Promise<void> {
    const op = x.r.op
    const fs = this.fs
    switch (op.op) {
      case 'create': case 'mkdir': case 'symlink': case 'mknod': {
        let dir = fs.inodes.get(this.tr(x, op.parent))
        let name = op.name
        let lost = false
        if (dir === undefined || dir.kind !== 'dir') {
          // Its directory went in a way the rules above did not foresee: keep the entry at the top.
          dir = fs.root
          lost = true
        }
        let ino = op.ino
        if (fs.inodes.has(ino)) {
          ino = this.freshIno(x.w, op.ino)
          this.setAlias(x.w, op.ino, ino)
          this.event(x, 'renumbered', `inode ${op.ino} is taken in the merged tree; ${op.op} ${Buffer.from(op.name).toString()} made inode ${ino}`)
        }
        const existing = await fs.lookup(dir, name)
        if (existing !== undefined) {
          if (op.op === 'mkdir' && existing.kind === 'dir' && !lost) {
            this.setAlias(x.w, op.ino, existing.ino)
            this.event(x, 'merged', `mkdir ${this.join(dir, name)}: the directory exists, its entries join it`)
            return
          }
          name = await this.freeName(dir, name, x.r.time, x.w)
        } else if (lost) {
          name = await this.freeName(dir, name, x.r.time, x.w)
        }
        await fs.apply({ ...op, parent: dir.ino, name, ino })
        this.changed.add(ino).add(dir.ino)
        if (name !== op.name) {
          this.displaced.set(ino, x.w)
          const other = existing !== undefined ? this.writerOf(existing.ino) : undefined
          this.mark(fs.node(ino), { kind: 'create', original: this.join(dir, op.name), writers: [...(other !== undefined && other !== x.w ? [other] : []), x.w] })
        }
        return
      }
      case 'write': case 'truncate': case 'fallocate': {
        if (op.after !== undefined) return await this.content(x, op)
        const ino = this.tr(x, op.ino)
        const n = fs.inodes.get(ino)
        if (n === undefined) return this.event(x, 'skipped', `${op.op} of inode ${op.ino}: not in the merged tree`)
        const lin = this.lineageOf(n)
        const clash = unseen(lin, x)
        if (clash === undefined) return await this.applyContent(x, n)
        await this.fork(x, n, lin, clash)
        return
      }
      case 'setattr': {
        const ino = this.tr(x, op.ino)
        if (!fs.inodes.has(ino)) return this.event(x, 'skipped', `setattr of inode ${op.ino}: not in the merged tree`)
        await fs.apply({ ...op, ino })
        this.changed.add(ino)
        return
      }
      case 'link': {
        const ino = this.tr(x, op.ino)
        const n = fs.inodes.get(ino)
        const dir = fs.inodes.get(this.tr(x, op.parent))
        if (n === undefined || dir === undefined || dir.kind !== 'dir') return this.event(x, 'skipped', `link of inode ${op.ino}: it or its new directory is not in the merged tree`)
        let name = op.name
        if (await fs.lookup(dir, name) !== undefined) name = await this.freeName(dir, name, x.r.time, x.w)
        await fs.apply({ ...op, ino, parent: dir.ino, name })
        this.changed.add(ino).add(dir.ino)
        if (name !== op.name) this.mark(n, { kind: 'create', original: this.join(dir, op.name), writers: [x.w] })
        return
      }
      case 'unlink': case 'rmdir': {
        const dir = fs.inodes.get(this.tr(x, op.parent))
        if (dir === undefined || dir.kind !== 'dir') return this.event(x, 'skipped', `${op.op}: its directory is not in the merged tree`)
        const placed = await fs.lookup(dir, op.name)
        const raw = op.ino ?? placed?.ino
        if (raw === undefined) return this.event(x, 'skipped', `${op.op} ${this.join(dir, op.name)}: gone already`)
        const target = this.tr(x, raw)
        const n = fs.inodes.get(target)
        if (n === undefined) return this.event(x, 'skipped', `${op.op} of inode ${raw}: gone already`)
        // The writer's own conflict copy has one name: the writer's unlink removes it only if
        // that file had one name too (a hard-linked one keeps the copy, so nothing is lost).
        const single = n.nlink === 1 && (fs.inodes.get(raw)?.nlink ?? 0) <= 1
        const own = this.forkOwner.get(target) === x.w
        if (own && !single) return this.event(x, 'kept', `${op.op} ${this.join(dir, op.name)}: one name of a hard-linked file whose conflict copy has one, the copy stays`)
        const at = placed?.ino === target ? { dir, name: op.name } : own || this.displaced.get(target) === x.w ? fs.where(target) : undefined
        if (at === undefined) return this.event(x, 'kept', `${op.op} ${this.join(dir, op.name)}: inode ${raw} was moved or replaced concurrently, it stays`)
        const t = this.changedConcurrently(target, raw, x)
        if (t !== undefined) return this.event(x, 'kept', `${op.op} ${this.join(at.dir, at.name)}: changed concurrently by ${t.w.slice(0, 8)} (record ${t.n}), it stays`)
        if (n.kind === 'dir' && (await fs.children(n)).size > 0) return this.event(x, 'kept', `rmdir ${this.join(at.dir, at.name)}: not empty in the merged tree, it stays`)
        if ((op.op === 'rmdir') !== (n.kind === 'dir')) return this.event(x, 'skipped', `${op.op} ${this.join(at.dir, at.name)}: it is a ${n.kind} in the merged tree`)
        await fs.apply({ op: op.op, parent: at.dir.ino, name: at.name, time: op.time, ino: target })
        this.changed.add(target).add(at.dir.ino)
        return
      }
      case 'rename':
        await this.rename(x, op)
        return
      case 'attach':
        this.event(x, 'skipped', 'attach records are not applied by this version')
    }
  }

  /**
   * The writer's version of a file another writer changed concurrently: a new inode beside it
   * with the file as of the merge base, the changes this writer had seen, and its own; the
   * writer's later records of the file go to it.
   */
  private async fork (x: Ranked, n: Inode, lin: Lineage, clash: Ranked): Promise<void> {
    const fs = this.fs
    const op = x.r.op as Extract<Op, { ino: number }>
    const copyIno = this.freshIno(x.w, n.ino)
    const at = fs.where(n.ino)
    const dir = at?.dir ?? fs.root
    const name = at?.name ?? enc.encode(`inode-${n.ino}`)
    const cname = await this.freeName(dir, name, x.r.time, x.w)
    const copy = await fs.place(dir, cname, copyIno, copyEntry(n, lin.snap), op.time)
    const mine: Lineage = { snap: lin.snap, ops: [], last: new Map() }
    for (const c of [...lin.ops, x]) {
      if (c !== x && c.w !== x.w && !hasSeen(x.r, c.w, c.r.n)) continue
      await fs.apply({ ...(c.r.op as Extract<Op, { ino: number }>), ino: copyIno })
      mine.ops.push(c)
      mine.last.set(c.w, c)
    }
    this.setLast(copy, x)
    this.lineage.set(copyIno, mine)
    const aside = [...lin.last.values()].filter(c => c.w !== x.w && !hasSeen(x.r, c.w, c.r.n)).map(c => ({ w: c.w, n: c.r.n }))
    this.setAlias(x.w, op.ino, copyIno, aside.length > 0 ? aside : [{ w: clash.w, n: clash.r.n }])
    this.forkOwner.set(copyIno, x.w)
    this.changed.add(copyIno).add(dir.ino)
    this.mark(copy, { kind: 'content', original: this.join(dir, name), writers: [clash.w, x.w] })
  }

  /** `n`'s content history in this merge, begun (its entry as it is now) at its first change. */
  private lineageOf (n: Inode): Lineage {
    let lin = this.lineage.get(n.ino)
    if (lin === undefined) this.lineage.set(n.ino, lin = { snap: n.toEntry(new Uint8Array(0)), ops: [], last: new Map() })
    return lin
  }

  /**
   * Applies content record `x` to inode `n` (wherever x's writer had it): it joins n's lineage
   * and becomes n's last.
   */
  private async applyContent (x: Ranked, n: Inode): Promise<void> {
    const lin = this.lineageOf(n)
    const op = x.r.op as ContentOp
    await this.fs.apply(op.ino === n.ino ? op : { ...op, ino: n.ino })
    lin.ops.push(x)
    lin.last.set(x.w, x)
    this.setLast(n, x)
    this.changed.add(n.ino)
  }

  private index (): Map<string, number> {
    if (this.lastAt === undefined) {
      this.lastAt = new Map()
      for (const n of this.fs.inodes.values()) if (n.last !== undefined) this.lastAt.set(recordIdKey(n.last), n.ino)
      this.baseAt = new Map(this.lastAt)
    }
    return this.lastAt
  }

  private setLast (n: Inode, x: Ranked): void {
    const at = this.index()
    const old = recordIdKey(n.last)
    if (old !== '' && at.get(old) === n.ino) at.delete(old)
    n.last = recordId(Buffer.from(x.w, 'hex'), x.r.n)
    at.set(`${x.w}:${x.r.n}`, n.ino)
  }

  /** The inode whose content's last change is `key` ('' for none: then `hint`, if unchanged since). */
  private holding (key: string, hint: Inode | undefined): Inode | undefined {
    if (key === '') return hint !== undefined && hint.last === undefined && hint.kind === 'file' ? hint : undefined
    const ino = this.index().get(key)
    const n = ino === undefined ? undefined : this.fs.inodes.get(ino)
    return n !== undefined && recordIdKey(n.last) === key ? n : undefined
  }

  /**
   * A content record that says what content it changed (`after`): it lands on the inode whose
   * content is still exactly that (wherever the merge put it: the name, a conflict copy), so it
   * never overwrites bytes its writer did not see. If no inode holds that content any more
   * (another writer changed it concurrently, or the merge ordered a change its writer had not
   * seen before it), its writer's version becomes a conflict copy beside the file: that content
   * rebuilt from the chain of `after` links, then this change.
   */
  private async content (x: Ranked, op: ContentOp): Promise<void> {
    const fs = this.fs
    const hint = fs.inodes.get(this.tr(x, op.ino))
    const want = recordIdKey(op.after)
    const at = this.holding(want, hint)
    if (at !== undefined) return await this.applyContent(x, at)
    // The content x changed: a chain of this merge's records back to a start that holds.
    const chain: Ranked[] = []
    let key = want
    for (let c = this.byId.get(key); c !== undefined && chain.length <= this.byId.size; c = this.byId.get(key)) {
      chain.push(c)
      key = recordIdKey((c.r.op as ContentOp).after)
    }
    chain.reverse()
    const first = chain[0] ?? x
    const originIno = key !== '' ? this.baseAt?.get(key) : this.tr(first, (first.r.op as ContentOp).ino)
    const origin = originIno === undefined ? undefined : fs.inodes.get(originIno)
    // The start as the merge began (a removed inode's too): its content before this merge's changes.
    const start = (originIno === undefined ? undefined : this.lineage.get(originIno)?.snap) ?? origin?.toEntry(new Uint8Array(0))
    if (start === undefined || start.kind !== 'file') return this.event(x, 'skipped', `${op.op} of inode ${op.ino}: the content it changed is not in the merged tree`)
    const place = hint?.kind === 'file' ? hint : origin?.kind === 'file' ? origin : undefined
    const lin = place === undefined ? undefined : this.lineage.get(place.ino)
    // Who set x's version aside: a change x had not seen (one it had seen, maybe one in the
    // merge base, is not a conflict with it).
    const last = place === undefined ? undefined : this.lastRecord(place)
    const clash = unseen(lin, x) ?? (last !== undefined && !hasSeen(x.r, last.w, last.r.n) ? last : undefined)
    const copyIno = this.freshIno(x.w, place?.ino ?? originIno ?? op.ino)
    const where = place === undefined ? undefined : fs.where(place.ino)
    const dir = where?.dir ?? fs.root
    const name = where?.name ?? enc.encode(`inode-${op.ino}`)
    const cname = await this.freeName(dir, name, x.r.time, x.w)
    const copy = await fs.place(dir, cname, copyIno, copyEntry(place, start), op.time)
    const mine: Lineage = { snap: start, ops: [], last: new Map() }
    for (const c of [...chain, x]) {
      await fs.apply({ ...(c.r.op as ContentOp), ino: copyIno })
      mine.ops.push(c)
      mine.last.set(c.w, c)
    }
    this.setLast(copy, x)
    this.lineage.set(copyIno, mine)
    // x's writer's other records of the file (renames, unlinks, attributes) follow its version
    // until it has seen the changes that set that version aside.
    const aside = [...(lin?.last.values() ?? [])].filter(c => c.w !== x.w && !hasSeen(x.r, c.w, c.r.n)).map(c => ({ w: c.w, n: c.r.n }))
    if (aside.length > 0) this.setAlias(x.w, op.ino, copyIno, aside)
    this.forkOwner.set(copyIno, x.w)
    this.changed.add(copyIno).add(dir.ino)
    const writers = clash !== undefined && clash.w !== x.w ? [clash.w, x.w] : [x.w]
    this.mark(copy, { kind: 'content', original: this.join(dir, name), writers })
  }

  /** The record of this merge that made `n`'s content what it is, if one did. */
  private lastRecord (n: Inode): Ranked | undefined {
    return this.byId.get(recordIdKey(n.last))
  }

  private async rename (x: Ranked, op: Extract<Op, { op: 'rename' }>): Promise<void> {
    const fs = this.fs
    const src = fs.inodes.get(this.tr(x, op.parent))
    const dst = fs.inodes.get(this.tr(x, op.newParent))
    if (src === undefined || dst === undefined || src.kind !== 'dir' || dst.kind !== 'dir') return this.event(x, 'skipped', 'rename: a directory of it is not in the merged tree')
    const placed = await fs.lookup(src, op.name)
    const raw = op.ino ?? placed?.ino
    const moved = raw === undefined ? undefined : fs.inodes.get(this.tr(x, raw))
    if (moved === undefined) return this.event(x, 'skipped', `rename ${this.join(src, op.name)}: gone from the merged tree`)
    let from: { dir: Inode, name: Uint8Array } | undefined
    if (placed === moved) from = { dir: src, name: op.name }
    else if (this.forkOwner.get(moved.ino) === x.w || this.displaced.get(moved.ino) === x.w) from = fs.where(moved.ino)
    const wanted = this.join(dst, op.newName)
    if (from === undefined) {
      // Renamed (or replaced) concurrently by a writer earlier in merge order: that one stands.
      this.event(x, 'kept', `rename to ${wanted}: inode ${raw} was renamed concurrently, the first rename stands`)
      this.mark(moved, { kind: 'rename', original: wanted, writers: this.involved(raw as number, x) })
      return
    }
    const cycle = (m: Inode, into: Inode): boolean => m.kind === 'dir' && fs.within(into.ino, m.ino)
    const existing = await fs.lookup(dst, op.newName)
    if (op.exchange === true) {
      // Records made before issue 12 do not say which inode they expected there: the one there.
      const expected = op.target !== undefined ? this.tr(x, op.target) : op.ino === undefined ? existing?.ino : undefined
      if (existing === undefined || existing.ino !== expected) return this.event(x, 'skipped', `rename exchange with ${wanted}: it changed concurrently`)
      if (cycle(moved, dst) || cycle(existing, from.dir)) {
        this.event(x, 'skipped', `rename exchange with ${wanted}: would put a directory inside itself`)
        this.mark(moved, { kind: 'cycle', original: wanted, writers: [x.w] })
        return
      }
      await fs.apply({ ...op, parent: from.dir.ino, name: from.name, newParent: dst.ino, ino: moved.ino, target: existing.ino })
      this.changed.add(moved.ino).add(existing.ino).add(from.dir.ino).add(dst.ino)
      return
    }
    if (cycle(moved, dst)) {
      this.event(x, 'kept', `rename to ${wanted}: would put the directory inside itself (a concurrent rename), not applied`)
      this.mark(moved, { kind: 'cycle', original: wanted, writers: this.involved(dst.ino, x) })
      return
    }
    if (existing === moved) return
    let newName = op.newName
    let named = false
    if (existing !== undefined) {
      const expected = op.target !== undefined ? this.tr(x, op.target) : op.ino === undefined ? existing.ino : undefined
      const fits = existing.ino === expected && (existing.kind === 'dir') === (moved.kind === 'dir') &&
        (existing.kind !== 'dir' || (await fs.children(existing)).size === 0)
      if (fits) {
        const t = this.changedConcurrently(existing.ino, op.target ?? existing.ino, x)
        // The writer's own conflict copy of a file that had several names: the rename replaced
        // one name of that file, the copy (which has one) holds them all, so it stays.
        const ownCopy = this.forkOwner.get(existing.ino) === x.w && (fs.inodes.get(op.target ?? existing.ino)?.nlink ?? 0) > 1
        if (t !== undefined || ownCopy) {
          // Replacing a file another writer changed concurrently: that version stays, renamed.
          const keep = await this.freeName(dst, op.newName, t?.time ?? x.r.time, t?.w ?? x.w)
          await fs.apply({ op: 'rename', parent: dst.ino, name: op.newName, newParent: dst.ino, newName: keep, time: op.time, ino: existing.ino })
          this.mark(existing, { kind: 'replaced', original: wanted, writers: t !== undefined ? [x.w, t.w] : [x.w] })
          this.changed.add(existing.ino)
        }
      } else {
        newName = await this.freeName(dst, op.newName, x.r.time, x.w)
        named = true
      }
    }
    const note = this.marks.get(moved.ino)
    await fs.apply({ ...op, parent: from.dir.ino, name: from.name, newParent: dst.ino, newName, ino: moved.ino, ...(op.target !== undefined ? { target: this.tr(x, op.target) } : {}) })
    this.changed.add(moved.ino).add(from.dir.ino).add(dst.ino)
    if (named) this.displaced.set(moved.ino, x.w)
    else this.displaced.delete(moved.ino)
    // A file replaced by the rename loses a link (or goes).
    if (existing !== undefined && !named && existing.ino !== moved.ino) this.changed.add(existing.ino)
    if (named) {
      const other = existing !== undefined ? this.writerOf(existing.ino) : undefined
      this.mark(moved, { kind: 'create', original: wanted, writers: [...(other !== undefined && other !== x.w ? [other] : []), x.w] })
    } else if (note !== undefined && this.forkOwner.get(moved.ino) === x.w) {
      // The copy's own writer renamed its file before it could know of the conflict: still open.
      this.mark(moved, { kind: note.kind, original: note.original, writers: note.writers })
    }
  }
}

/**
 * A conflict mark's stored value: JSON with a fixed key order, so every node writes the same
 * bytes. What the records say, never which heads this merge was given: a merge from an earlier
 * merge must write what a merge from none writes, and a mark made there named older heads.
 * `reef conflicts` finds the writers' versions from the merged version's parents instead.
 */
export function markBytes (n: ConflictNote): Uint8Array {
  return enc.encode(JSON.stringify({ kind: n.kind, original: n.original, writers: n.writers }))
}

export { CONFLICT_XATTR }
