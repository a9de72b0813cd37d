/**
 * The replay of a writer's log when a ReefFS opens (src/fs/fs.ts): the records after the
 * version it opens are applied again, by the same `apply` that applied them live. A record
 * that no longer applies is skipped and reported, one line each.
 */
import type { CID } from 'multiformats/cid'
import { isDamage, ReefError } from '../errors.js'
import { decodeVersion, type VersionRoot } from '../object/version.js'
import { isContentOp, type Op, recordId } from '../log/record.js'
import type { Appended, WriterLog } from '../log/index.js'
import type { BlockGetter } from '../store/types.js'
import { apply } from './apply.js'
import type { Core, Tree } from './tree.js'

export interface ReplayContext {
  store: BlockGetter
  /** FsOptions.lineage: a replayed content record becomes its file's `last` again. */
  lineage: boolean
  warn: (line: string) => void
}

/** What a replay did: records applied (now unfolded) and records skipped (each reported). */
export interface Replayed { applied: number, skipped: number }

/** A log op in a few words, for the line that says it was skipped. */
function describeOp (op: Op): string {
  const parts: string[] = [op.op]
  if ('ino' in op) parts.push(`inode ${op.ino}`)
  if ('parent' in op) parts.push(`in directory inode ${op.parent}`)
  if ('name' in op) parts.push(JSON.stringify(Buffer.from(op.name).toString()))
  if ('newName' in op) parts.push(`to ${JSON.stringify(Buffer.from(op.newName).toString())} in directory inode ${op.newParent}`)
  return parts.join(' ')
}

/**
 * Replays the part of `log` that `v` (the head) does not hold. `from`: the version a `from`
 * open starts the tree from. When the head's own root is lost (its vv with it), the log's
 * counter resumes from `from`'s: new inode numbers come from the counter (src/fs/ino.ts), so
 * it must stay above every number in the tree.
 */
export async function replay (core: Core, ctx: ReplayContext, log: WriterLog, v: VersionRoot | undefined, from?: VersionRoot): Promise<Replayed> {
  const done: Replayed = { applied: 0, skipped: 0 }
  let records: Appended[] = log.replayed
  if (v?.log !== undefined) {
    const at = records.findIndex(r => r.cid.equals(v.log))
    const mine = v.vv?.[Buffer.from(log.writer).toString('hex')]
    if (at >= 0) {
      records = records.slice(at + 1)
    } else if (mine !== undefined && records.some(r => r.record.n <= mine)) {
      // The version's last record is gone from the log but older ones are here: a crash after
      // the fold committed cut short a segment it had not synced (its records are all in the
      // version; open dropped whatever followed the gap). Those records are the version's; the
      // log restarts after it.
      records = records.filter(r => r.record.n > mine)
      if (records.length === 0) log.checkpoint()
    }
  }
  if (records.length === 0) {
    const at = v?.vv !== undefined ? v : from
    if (log.replayed.length === 0 && at?.vv !== undefined) {
      const self = Buffer.from(log.writer).toString('hex')
      log.resumeAfter(at.log ?? await ownLastRecord(ctx.store, at, log.writer), at.vv[self] ?? 0, at.vv)
    }
    return done
  }
  // Opened at a merge (issue 12) with records of its own not in it: what follows has seen both.
  if (v?.vv !== undefined) log.observe(v.vv)
  // Records name inodes by number, so everything they may touch must be in memory first.
  await core.tree.loadAll()
  for (const r of records) {
    const op = r.record.op
    let why = await replayBlocker(core.tree, op)
    if (why === undefined) {
      try {
        await apply(core, op)
        if (ctx.lineage && isContentOp(op)) core.tree.node(op.ino).last = recordId(r.record.writer, r.record.n)
        done.applied++
        continue
      } catch (err) {
        // A record that no longer applies (e.g. a write to a file unlinked before the crash)
        // changes nothing reachable; skipping it is what the live system would have shown.
        if (!(err instanceof ReefError)) throw err
        why = err.message
      }
    }
    done.skipped++
    ctx.warn(`log replay: skipped record ${r.record.n} (${describeOp(op)}): ${why}`)
  }
  return done
}

/**
 * This writer's newest record in a merged version (which names no record of its own): the
 * `log` of the parent that is this writer's head at the counter the merge holds of it. Its
 * next record chains to it, so its log stays one chain through every merge it adopts.
 */
async function ownLastRecord (store: BlockGetter, v: VersionRoot, writer: Uint8Array): Promise<CID | undefined> {
  const self = Buffer.from(writer).toString('hex')
  const n = v.vv?.[self]
  if (n === undefined) return undefined
  for (const p of v.parents) {
    try {
      const root = decodeVersion(await store.get(p))
      if (Buffer.compare(root.author, writer) === 0 && root.vv?.[self] === n && root.log !== undefined) return root.log
    } catch (err) {
      if (!isDamage(err)) throw err
    }
  }
  return undefined
}

/**
 * Why a logged op cannot apply to the state as loaded, checked before anything changes (apply
 * may change state before it meets a damaged directory); undefined if nothing stands in its way.
 */
async function replayBlocker (tree: Tree, op: Op): Promise<string | undefined> {
  const unknown = (what: string, ino: number): string => `${what} ${ino} is not in the tree (removed before the crash` +
    (tree.damaged.size > 0 ? `, or inside a damaged directory: ${tree.damaged.size} found)` : ')')
  const dirs = 'newParent' in op ? [op.parent, op.newParent] : 'parent' in op ? [op.parent] : []
  for (const ino of dirs) {
    const d = tree.inodes.get(ino)
    if (d === undefined) return unknown('directory', ino)
    try {
      await tree.children(d)
    } catch (err) {
      if (isDamage(err)) return err.message
      throw err
    }
  }
  if ('ino' in op && op.ino !== undefined) {
    const creates = op.op === 'create' || op.op === 'mkdir' || op.op === 'symlink' || op.op === 'mknod' || op.op === 'attach'
    if (creates && tree.inodes.has(op.ino)) return `inode ${op.ino} already exists`
    if (!creates && !tree.inodes.has(op.ino)) return unknown('inode', op.ino)
  }
  return undefined
}
