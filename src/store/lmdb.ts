/**
 * The disk store: one LMDB environment per data directory holding blocks, heads and fork
 * evidence. LMDB commits are atomic and fsync'd (copy-on-write B+tree, no write-ahead log to
 * tear), so a kill -9 mid-write leaves either the whole block or none of it. Readers use the
 * memory map directly (no copies, no thread-pool hop), which is why lmdb beat the alternatives
 * for get and has here. Several processes (a mount daemon and the CLI) may open it at once.
 */
import fs from 'node:fs'
import path from 'node:path'
import { open, type RootDatabase, type Database } from 'lmdb'
import type { CID } from 'multiformats/cid'
import { type Block, blockKey, verifyBlock } from '../block/index.js'
import { sha256 } from '../crypto/hash.js'
import { ReefError } from '../errors.js'
import { checkLmdbFile } from './lmdb-check.js'
import type { BlockStore, HeadStore } from './types.js'

export interface LmdbOptions {
  path: string
  /** Skip fsync on commit: only for throwaway stores in tests and benchmarks. */
  noSync?: boolean
  /**
   * Create the store if it is missing or empty (default true). A data directory opens its store
   * with false: once initialized, a missing or 0-byte store is lost data, not a new store.
   */
  create?: boolean
}

const DATA_FILE = 'data.mdb'

export class LmdbStore {
  readonly env: RootDatabase
  readonly blocks: Database<Uint8Array, Uint8Array>
  readonly heads: Database<Uint8Array, string>
  readonly forkDb: Database<Uint8Array, string>
  /**
   * Keys of blocks held only as read-cache copies (fetched from the network by a read, not put
   * here nor pushed here as a replica). Repair leaves them out: they are not this node's to keep.
   */
  readonly cacheDb: Database<Uint8Array, Uint8Array>
  private readonly noSync: boolean
  private closed = false

  constructor (opts: LmdbOptions) {
    // noSubdir is explicit: lmdb-js otherwise guesses from a dot in the last path component
    // ("/var/lib/reef.store" would become one file named so instead of a directory).
    this.noSync = opts.noSync === true
    // Before lmdb sees the file: a damaged one crashes its native code instead of failing.
    checkLmdbFile(path.join(opts.path, DATA_FILE), { create: opts.create !== false, overlappingSync: !this.noSync })
    try {
      this.env = open({ path: opts.path, noSubdir: false, compression: false, noSync: opts.noSync === true, maxDbs: 8 })
      this.blocks = this.env.openDB({ name: 'blocks', keyEncoding: 'binary', encoding: 'binary' })
      this.heads = this.env.openDB({ name: 'heads', keyEncoding: 'ordered-binary', encoding: 'binary' })
      this.forkDb = this.env.openDB({ name: 'forks', keyEncoding: 'ordered-binary', encoding: 'binary' })
      this.cacheDb = this.env.openDB({ name: 'cached', keyEncoding: 'binary', encoding: 'binary' })
    } catch (err) {
      throw new ReefError('STORE_CORRUPT', `cannot open the block store at ${opts.path}: ${(err as Error).message}`, err)
    }
  }

  /**
   * Creates an empty store at `dir` unless one is there (then only checks it), durably, without
   * an event-loop turn: ReefNode.init is synchronous and writes its config only after this.
   */
  static initialize (dir: string): void {
    const file = path.join(dir, DATA_FILE)
    checkLmdbFile(file, { create: true, overlappingSync: true })
    try {
      const env = open({ path: dir, noSubdir: false, compression: false, maxDbs: 8 })
      // Nothing was written through this handle, so lmdb-js closes it before returning.
      void env.close()
    } catch (err) {
      throw new ReefError('STORE_CORRUPT', `cannot create the block store at ${dir}: ${(err as Error).message}`, err)
    }
    // LMDB writes the new file's meta pages without fsync: make them durable before a config
    // names this store as existing.
    for (const p of [file, dir]) {
      const fd = fs.openSync(p, 'r')
      try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
    }
  }

  /**
   * Waits for a committed write to reach the disk. lmdb-js defaults to overlappingSync, where a
   * write's promise resolves at commit (visible) and the fsync lands later: awaiting `flushed`
   * is what makes "durable once the promise resolves" true.
   */
  async durable (write: Promise<unknown>): Promise<void> {
    await write
    if (!this.noSync) await this.env.flushed
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.env.close()
  }
}

export class LmdbBlockStore implements BlockStore {
  constructor (private readonly db: LmdbStore, private readonly ownsEnv = false) {}

  async get (cid: CID): Promise<Uint8Array> {
    return this.getSync(cid)
  }

  /** Synchronous read from the memory map: lets hot FUSE paths skip a promise round-trip. */
  getSync (cid: CID): Uint8Array {
    const bytes = this.db.blocks.getBinary(blockKey(cid) as Buffer)
    if (bytes === undefined) throw ReefError.notFound(`block ${cid.toString()}`)
    return verifyBlock(cid, bytes, 'the local store')
  }

  prefetch (cids: CID[]): void {
    if (cids.length === 0) return
    try {
      this.db.blocks.prefetch(cids.map(c => blockKey(c) as Buffer), () => {})
    } catch {}
  }

  hasSync (cid: CID): boolean {
    return this.db.blocks.doesExist(blockKey(cid) as Buffer)
  }

  async has (cid: CID): Promise<boolean> { return this.hasSync(cid) }

  // lmdb-js keeps a reference to a binary value and copies it only when the write thread commits,
  // so a caller reusing its buffer before the promise resolves would store other bytes under
  // this BGUID: hand lmdb a private copy.
  async put (block: Block): Promise<void> {
    await this.db.durable(this.db.blocks.put(blockKey(block.cid) as Buffer, copy(block.bytes)))
  }

  async putMany (blocks: Iterable<Block>): Promise<void> {
    const pending: Array<Promise<boolean>> = []
    for (const b of blocks) {
      const key = blockKey(b.cid) as Buffer
      pending.push(this.db.blocks.put(key, copy(b.bytes)))
      // Put here or pushed here as a replica: no longer a mere cache copy (a read of the marker
      // from the memory map, a write only when there is one).
      if (this.db.cacheDb.doesExist(key)) pending.push(this.db.cacheDb.remove(key))
    }
    await this.db.durable(Promise.all(pending))
  }

  /**
   * Stores a block fetched from the network by a read, marked as a cache copy (see
   * `isCacheCopy`), unless the block is here already (then it stays what it was). Not waited
   * for to reach the disk: a lost cache copy is fetched again.
   */
  async putCacheCopy (block: Block): Promise<void> {
    const key = blockKey(block.cid) as Buffer
    const bytes = copy(block.bytes)
    await this.db.env.transaction(() => {
      if (this.db.blocks.doesExist(key)) return
      void this.db.blocks.put(key, bytes)
      void this.db.cacheDb.put(key, EMPTY)
    })
  }

  /** Whether the block with this digest is held only as a read-cache copy. */
  isCacheCopy (key: Uint8Array): boolean {
    return this.db.cacheDb.doesExist(key as Buffer)
  }

  async delete (cid: CID): Promise<void> {
    const key = blockKey(cid) as Buffer
    await this.db.durable(Promise.all([this.db.blocks.remove(key), this.db.cacheDb.remove(key)]))
  }

  /** Up to `limit` digests in key order, strictly after `after` (from the start if undefined). */
  keyBatch (after: Uint8Array | undefined, limit: number): Uint8Array[] {
    const out: Uint8Array[] = []
    for (const key of this.db.blocks.getKeys({ start: after as Buffer | undefined, limit: limit + 1 })) {
      const k = new Uint8Array(key as Buffer)
      if (after !== undefined && Buffer.compare(k, after) === 0) continue
      out.push(k)
      if (out.length >= limit) break
    }
    return out
  }

  get count (): number { return this.db.blocks.getCount() }

  async * keys (): AsyncIterable<Uint8Array> {
    for (const key of this.db.blocks.getKeys()) yield new Uint8Array(key as Buffer)
  }

  async close (): Promise<void> {
    if (this.ownsEnv) await this.db.close()
  }
}

const copy = (b: Uint8Array): Buffer => Buffer.from(b)
const EMPTY = Buffer.alloc(0)
const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')

interface HeadEntry { seq: bigint, bytes: Uint8Array }

function encodeEntry (e: HeadEntry): Uint8Array {
  const out = new Uint8Array(8 + e.bytes.length)
  new DataView(out.buffer).setBigUint64(0, e.seq)
  out.set(e.bytes, 8)
  return out
}

function decodeEntry (b: Uint8Array): HeadEntry {
  if (b.length < 8) throw new ReefError('STORE_CORRUPT', 'head store entry shorter than its header')
  return { seq: new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(0), bytes: b.slice(8) }
}

export class LmdbHeadStore implements HeadStore {
  constructor (private readonly db: LmdbStore, private readonly ownsEnv = false) {}

  async getHead (aguid: CID): Promise<HeadEntry | undefined> {
    const b = this.db.heads.getBinary(aguid.toString())
    return b === undefined ? undefined : decodeEntry(b)
  }

  async putHeadIfHigher (aguid: CID, seq: bigint, bytes: Uint8Array): Promise<HeadEntry | undefined> {
    const key = aguid.toString()
    // The read-compare-write runs inside one write transaction, so two processes cannot both win.
    let blocking: HeadEntry | undefined
    await this.db.durable(this.db.heads.transaction(() => {
      const cur = this.db.heads.getBinary(key)
      if (cur !== undefined) {
        const e = decodeEntry(cur)
        if (e.seq >= seq) { blocking = e; return }
      }
      void this.db.heads.put(key, encodeEntry({ seq, bytes })) // encodeEntry copies
    }))
    return blocking
  }

  /** Every AGUID with a stored head (as CID strings). */
  aguids (): string[] {
    const out: string[] = []
    for (const key of this.db.heads.getKeys()) if (typeof key === 'string') out.push(key)
    return out
  }

  async recordFork (aguid: CID, seq: bigint, bytes: Uint8Array): Promise<void> {
    // Keyed by the evidence's own hash: two forks recorded in the same millisecond both stay,
    // and the same evidence delivered again is stored once.
    const key = `${aguid.toString()}/${seq.toString().padStart(20, '0')}/${hex(sha256(bytes))}`
    await this.db.durable(this.db.forkDb.put(key, encodeEntry({ seq, bytes })))
  }

  async forks (aguid: CID): Promise<HeadEntry[]> {
    const prefix = `${aguid.toString()}/`
    const out: HeadEntry[] = []
    for (const { key, value } of this.db.forkDb.getRange({ start: prefix, end: prefix + '\uffff' })) {
      if (typeof key === 'string' && key.startsWith(prefix)) out.push(decodeEntry(value as unknown as Uint8Array))
    }
    return out
  }

  async close (): Promise<void> {
    if (this.ownsEnv) await this.db.close()
  }
}
