/**
 * `reef fsck`: walks one version block by block (version root, directory trees, the link table,
 * file trees and their chunks, the log records folded into it) and lists every block that is
 * missing, corrupt (its bytes do not hash to its BGUID) or malformed (it does not decode), with
 * the paths that reach it. Every block is read once; a damaged block does not stop the walk of
 * anything beside it.
 */
import type { CID } from 'multiformats/cid'
import { isDamage, ReefError } from '../errors.js'
import { compareBytes, decodeDirNode, type DirNode, type Entry, linkTableKey } from '../object/dir.js'
import { decodeFileNode, type FileNode } from '../object/file.js'
import { decodeVersion, type VersionRoot } from '../object/version.js'
import { decodeRecord, type LogRecord } from '../log/record.js'
import type { BlockGetter } from '../store/types.js'

export type ProblemKind = 'missing' | 'corrupt' | 'malformed'
export type BlockRole = 'version root' | 'directory node' | 'link table node' | 'file node' | 'chunk' | 'log record' | 'log data'

export interface Problem {
  guid: string
  problem: ProblemKind
  role: BlockRole
  /** The error code reading it gave: NOT_FOUND, BLOCK_CORRUPT or BAD_ENCODING. */
  code: string
  message: string
  /** Paths that reach the block (directories end in "/"), the first MAX_PATHS of them. */
  paths: string[]
  /** How many more paths reach it than are listed. */
  morePaths: number
}

export interface FsckReport {
  vguid: string
  seq?: string
  /** Distinct blocks read. */
  blocks: number
  problems: Problem[]
}

export const MAX_PATHS = 20
/** The log records a version folded are checked back to its parent's last one, at most this many. */
export const MAX_LOG_RECORDS = 100_000
/** Deeper than any tree reef writes (see DirReader): a cycle or a forged tree. */
const MAX_DEPTH = 32

const KIND_OF: Record<string, ProblemKind> = { NOT_FOUND: 'missing', BLOCK_CORRUPT: 'corrupt', BAD_ENCODING: 'malformed' }

type Outcome<T> = { ok: T } | { bad: Problem }

class Walker {
  private readonly seen = new Map<string, Outcome<unknown>>()
  private readonly problems = new Map<string, Problem>()
  /** Directory and file trees already walked without a problem: shared subtrees are walked once. */
  private readonly clean = new Set<string>()
  private tableRoot?: CID

  constructor (private readonly store: BlockGetter) {}

  get blocks (): number { return this.seen.size }
  get found (): Problem[] { return [...this.problems.values()] }

  /** Reads and decodes one block once; a failure becomes (or adds `path` to) its problem. */
  async block<T> (cid: CID, role: BlockRole, path: string, decode: (bytes: Uint8Array) => T): Promise<T | undefined> {
    const key = cid.toString()
    let o = this.seen.get(key) as Outcome<T> | undefined
    if (o === undefined) {
      try {
        o = { ok: decode(await this.store.get(cid)) }
      } catch (err) {
        if (!isDamage(err)) throw err
        o = { bad: this.problem(key, role, err) }
      }
      this.seen.set(key, o)
    }
    if ('ok' in o) return o.ok
    addPath(o.bad, path)
    return undefined
  }

  private problem (guid: string, role: BlockRole, err: ReefError, path?: string): Problem {
    const key = `${guid} ${err.message}`
    let p = this.problems.get(key)
    if (p === undefined) {
      p = { guid, problem: KIND_OF[err.code] ?? 'malformed', role, code: err.code, message: err.message, paths: [], morePaths: 0 }
      this.problems.set(key, p)
    }
    if (path !== undefined) addPath(p, path)
    return p
  }

  async version (vguid: CID): Promise<VersionRoot | undefined> {
    return await this.block(vguid, 'version root', '(version root)', decodeVersion)
  }

  async walkVersion (v: VersionRoot): Promise<void> {
    if (v.links !== undefined) {
      this.tableRoot = v.links
      // Every node of the table, also those no name reaches.
      await this.dirNodes(v.links, '(link table)', 'link table node', 0, [])
    }
    await this.dir(v.root, '/')
  }

  /** The entries of a directory tree's readable leaves; false if any node of it is damaged. */
  private async dirNodes (cid: CID, path: string, role: BlockRole, depth: number, out: Entry[]): Promise<boolean> {
    if (depth > MAX_DEPTH) return false
    const n = await this.block<DirNode>(cid, role, path, decodeDirNode)
    if (n === undefined) return false
    if (n.height === 0) {
      out.push(...(n.entries ?? []))
      return true
    }
    let ok = true
    for (const l of n.links ?? []) ok = (await this.dirNodes(l.cid, path, role, depth + 1, out)) && ok
    return ok
  }

  private async dir (cid: CID, path: string): Promise<boolean> {
    const key = cid.toString()
    if (this.clean.has(key)) return true
    const entries: Entry[] = []
    let ok = await this.dirNodes(cid, path, 'directory node', 0, entries)
    for (const raw of entries) {
      const p = path + Buffer.from(raw.name).toString()
      let e: Entry | undefined = raw
      if (raw.linked === true && raw.ino !== undefined) {
        e = await this.tableEntry(raw.ino, p)
        if (e === undefined) {
          ok = false
          continue
        }
      }
      if (e.kind === 'dir' && e.cid !== undefined) ok = (await this.dir(e.cid, p + '/')) && ok
      else if (e.kind === 'file' && e.cid !== undefined) ok = (await this.file(e.cid, p)) && ok
    }
    if (ok) this.clean.add(key)
    return ok
  }

  /** A hard-linked inode's record, by the path a lookup reads (so a bad node gets this path). */
  private async tableEntry (ino: number, path: string): Promise<Entry | undefined> {
    const name = linkTableKey(ino)
    let cid = this.tableRoot
    if (cid === undefined) {
      this.problem('(no link table)', 'link table node', ReefError.badEncoding(`version: hard link to inode ${ino}, but no link table`), path)
      return undefined
    }
    for (let depth = 0; depth <= MAX_DEPTH; depth++) {
      const n: DirNode | undefined = await this.block<DirNode>(cid, 'link table node', path, decodeDirNode)
      if (n === undefined) return undefined
      if (n.height === 0) {
        const e = (n.entries ?? []).find(x => compareBytes(x.name, name) === 0)
        if (e === undefined) this.problem(cid.toString(), 'link table node', ReefError.badEncoding(`link table: no inode ${ino}`), path)
        return e
      }
      const links = n.links ?? []
      let pick: CID | undefined
      for (const l of links) if (compareBytes(l.first, name) <= 0 || pick === undefined) pick = l.cid
      if (pick === undefined) return undefined
      cid = pick
    }
    return undefined
  }

  private async file (cid: CID, path: string): Promise<boolean> {
    const key = cid.toString()
    if (this.clean.has(key)) return true
    const ok = await this.fileNode(cid, path, 0)
    if (ok) this.clean.add(key)
    return ok
  }

  private async fileNode (cid: CID, path: string, depth: number): Promise<boolean> {
    if (depth > MAX_DEPTH) return false
    const n = await this.block<FileNode>(cid, 'file node', path, decodeFileNode)
    if (n === undefined) return false
    let ok = true
    for (const l of n.links) {
      if (l.cid === undefined) continue
      if (n.height > 0) {
        ok = (await this.fileNode(l.cid, path, depth + 1)) && ok
        continue
      }
      const size = l.size
      const chunk = await this.block(l.cid, 'chunk', path, bytes => {
        if (bytes.length !== size) throw ReefError.badEncoding(`chunk: ${bytes.length} bytes where its link says ${size}`)
        return true
      })
      ok = chunk !== undefined && ok
    }
    return ok
  }

  /** The log records this version folded: from its last back to its parent's last. */
  async walkLog (v: VersionRoot, parentLog: CID | undefined): Promise<void> {
    let cid = v.log
    for (let i = 0; cid !== undefined && i < MAX_LOG_RECORDS; i++) {
      if (parentLog !== undefined && cid.equals(parentLog)) return
      const r: LogRecord | undefined = await this.block(cid, 'log record', '(log)', decodeRecord)
      if (r === undefined) return
      if (r.op.op === 'write' && r.op.dataCid !== undefined) await this.block(r.op.dataCid, 'log data', '(log)', () => true)
      cid = r.prev
    }
  }
}

function addPath (p: Problem, path: string): void {
  if (p.paths.includes(path)) return
  if (p.paths.length < MAX_PATHS) p.paths.push(path)
  else p.morePaths++
}

/** Checks one version; never throws for damage (that is the report), only for a failing store. */
export async function fsck (store: BlockGetter, vguid: CID): Promise<FsckReport> {
  const w = new Walker(store)
  const v = await w.version(vguid)
  if (v !== undefined) {
    await w.walkVersion(v)
    // The parent's last record bounds this version's own records; its root is not this version's
    // block, so it is read directly and not counted.
    let parentLog: CID | undefined
    if (v.parents[0] !== undefined) {
      try {
        parentLog = decodeVersion(await store.get(v.parents[0])).log
      } catch (err) {
        if (!isDamage(err)) throw err
      }
    }
    await w.walkLog(v, parentLog)
  }
  return { vguid: vguid.toString(), seq: v?.seq.toString(), blocks: w.blocks, problems: w.found }
}
