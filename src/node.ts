/**
 * The composition root: a data directory opened as a reef node. Wires the disk store, the head
 * book, the identity and the writer log into file systems and versions. Everything else in
 * src/ receives its collaborators as arguments; this is the one place that builds them.
 *
 * Data directory layout:
 *   identity.key   32-byte ed25519 seed (0600)       config.json  { name, aguid }
 *   store/         LMDB: blocks, heads, forks         log/         writer-log segments
 *   peers.json     peers met on the network, for rejoining (networked nodes only)
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { CID } from 'multiformats/cid'
import { cidFromKey, DAG_CBOR, parseGuid } from './block/index.js'
import { generateKeyPair, keyPairFromSeed, type KeyPair } from './crypto/sign.js'
import { isDamage, ReefError } from './errors.js'
import { ReefFS, type VersionInfo } from './fs/fs.js'
import { WriterLog } from './log/index.js'
import { aguidFor, encodeHead, HeadBook, signHead } from './naming/index.js'
import { decodeVersion, objectKind } from './object/version.js'
import { LmdbBlockStore, LmdbHeadStore, LmdbStore } from './store/lmdb.js'
import type { BlockStore } from './store/types.js'
import type { DhtNode, DhtOptions } from './dht/index.js'
import { Views } from './view/views.js'

export function defaultDataDir (): string {
  const xdg = process.env.XDG_DATA_HOME
  const base = xdg !== undefined && xdg !== '' ? xdg : path.join(os.homedir(), '.local', 'share')
  return path.join(base, 'reef')
}

export interface NodeConfig { name: string, aguid: string }

export interface HistoryItem { seq: bigint, time: number, vguid: CID, parents: CID[], message?: string }

export class ReefNode {
  /** The store file systems and commands use: the DHT store when networked, else the local one. */
  store: BlockStore
  dht?: DhtNode

  private constructor (
    readonly dataDir: string,
    readonly keys: KeyPair,
    readonly config: NodeConfig,
    readonly db: LmdbStore,
    readonly local: LmdbBlockStore,
    readonly headStore: LmdbHeadStore,
    readonly heads: HeadBook
  ) {
    this.store = local
  }

  get aguid (): CID { return parseGuid(this.config.aguid) }

  /** Creates the identity and data directory if missing (idempotent). Returns true if created. */
  static init (dataDir: string, name = 'default'): boolean {
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 })
    const keyFile = path.join(dataDir, 'identity.key')
    let created = false
    if (!fs.existsSync(keyFile)) {
      const tmp = keyFile + '.tmp'
      fs.writeFileSync(tmp, Buffer.from(generateKeyPair().secretKey), { mode: 0o600 })
      fs.renameSync(tmp, keyFile)
      created = true
    }
    const cfgFile = path.join(dataDir, 'config.json')
    if (!fs.existsSync(cfgFile)) {
      const keys = readKeys(keyFile)
      // The config is written last: once it exists, the store does too, and a missing or empty
      // store is lost data (STORE_CORRUPT), never silently a new one.
      LmdbStore.initialize(path.join(dataDir, 'store'))
      const cfg: NodeConfig = { name, aguid: aguidFor(keys.publicKey, name).toString() }
      fs.writeFileSync(cfgFile + '.tmp', JSON.stringify(cfg, null, 2) + '\n')
      fs.renameSync(cfgFile + '.tmp', cfgFile)
      created = true
    }
    return created
  }

  static async open (dataDir: string, opts: { noSync?: boolean, network?: DhtOptions } = {}): Promise<ReefNode> {
    const keyFile = path.join(dataDir, 'identity.key')
    if (!fs.existsSync(keyFile)) {
      throw new ReefError('NO_IDENTITY', `no reef data directory at ${dataDir} (run: reef init --data-dir ${dataDir})`)
    }
    const keys = readKeys(keyFile)
    const config = readConfig(path.join(dataDir, 'config.json'), keys)
    const db = new LmdbStore({ path: path.join(dataDir, 'store'), noSync: opts.noSync, create: false })
    const headStore = new LmdbHeadStore(db)
    const node = new ReefNode(dataDir, keys, config, db, new LmdbBlockStore(db), headStore, new HeadBook(headStore))
    if (opts.network !== undefined) {
      try {
        // Loaded only for networked nodes: importing libp2p costs ~0.6 s of every CLI start.
        const { DhtNode } = await import('./dht/index.js')
        node.dht = await DhtNode.start(keys.secretKey, node.local, node.heads, headStore, { peersFile: path.join(dataDir, 'peers.json'), ...opts.network })
      } catch (err) {
        await db.close()
        throw err
      }
      node.store = node.dht.store
    }
    return node
  }

  /** Shared file systems (views) as this node sees them: with its network when it has one. */
  views (): Views {
    return new Views({ keys: this.keys, heads: this.headStore, blocks: this.store, net: this.dht })
  }

  /** Asks the network for a newer head of `aguid` (no-op without a network). */
  async refreshHead (aguid: CID = this.aguid): Promise<void> {
    await this.dht?.fetchHead(aguid)
  }

  /** The version the signed head of `aguid` points at, if any. */
  async currentVersion (aguid: CID = this.aguid): Promise<VersionInfo | undefined> {
    const h = await this.heads.current(aguid)
    if (h === undefined) return undefined
    return { vguid: h.vguid, root: decodeVersion(await this.store.get(h.vguid)) }
  }

  async version (vguid: CID): Promise<VersionInfo> {
    return { vguid, root: decodeVersion(await this.store.get(vguid)) }
  }

  /**
   * The name (and so the AGUID) of this node's file system in view `view`: a writer's own
   * versions of a shared file system, apart from its private one, with a log of its own.
   */
  viewFsName (view: CID): string { return `view:${view.toString()}` }

  /** The AGUID of this node's own file system: its private one, or its writer's in `view`. */
  fsAguid (view?: CID): CID { return view === undefined ? this.aguid : aguidFor(this.keys.publicKey, this.viewFsName(view)) }

  /**
   * Opens this node's own file system for writing: current version plus its log replayed.
   * `from` starts the live tree from that version instead (see FsOptions.from); `warn` gets
   * the lines about damage and skipped log records. With `view`, the file system is this
   * writer's in that view (its own AGUID and log directory); `at` opens it at that version (a
   * merge) instead of the head, with `log` the writer log already open in this process.
   * `committed` hears of every version a fold makes, once its head is signed.
   */
  async openFs (opts: { from?: VersionInfo, warn?: (line: string) => void, view?: CID, at?: VersionInfo, log?: WriterLog, committed?: (v: VersionInfo) => void } = {}): Promise<ReefFS> {
    const name = opts.view === undefined ? this.config.name : this.viewFsName(opts.view)
    const aguid = this.fsAguid(opts.view)
    const version = opts.at ?? await this.headVersion(opts.from, aguid)
    const log = opts.log ?? new WriterLog(this.logDir(opts.view), this.keys.publicKey).open()
    return await ReefFS.open({
      store: this.store,
      log,
      version,
      from: opts.from,
      warn: opts.warn,
      lineage: opts.view !== undefined,
      keepReplayed: opts.view !== undefined,
      author: this.keys.publicKey,
      commit: async (block, root) => {
        await this.signHeadFor(name, aguid, block.cid, root.seq, root.time, opts.view !== undefined)
        opts.committed?.({ vguid: block.cid, root })
      }
    })
  }

  /** The writer log's directory: `log/`, or `views/<view id>/log` for a view's file system. */
  logDir (view?: CID): string {
    return view === undefined ? path.join(this.dataDir, 'log') : path.join(this.dataDir, 'views', view.toString(), 'log')
  }

  /**
   * The current version, for opening the live file system. If its version root cannot be read,
   * nothing can be mounted from it; with `from` (a version to continue from) the signed head
   * still gives the sequence number and VGUID the next version follows.
   */
  private async headVersion (from?: VersionInfo, aguid = this.aguid): Promise<VersionInfo | undefined> {
    try {
      return await this.currentVersion(aguid)
    } catch (err) {
      if (!isDamage(err)) throw err
      const h = await this.heads.current(aguid)
      if (h === undefined) throw err
      if (from === undefined) {
        throw new ReefError(err.code, `the version root of version ${h.seq} (${h.vguid.toString()}) cannot be read: ${err.message}. ` +
          'Run `reef fsck` to see the damage and the versions stored here, then `reef mount DIR --from VERSION` to continue from one of them', err)
      }
      // The head's own log position is lost with its root: every record in the log is replayed.
      return { vguid: h.vguid, root: { ...from.root, seq: h.seq, parents: [], log: undefined, vv: undefined } }
    }
  }

  /**
   * Every version of this node's own file system held in the local store, newest first, found by
   * reading every block: the way to older versions when the head's version root is unreadable
   * (its parent links are in it). Costs a read of the whole store.
   */
  async storedVersions (): Promise<HistoryItem[]> {
    const out: HistoryItem[] = []
    const own = Buffer.from(this.keys.publicKey)
    for await (const key of this.local.keys()) {
      const cid = cidFromKey(key, DAG_CBOR)
      let bytes: Uint8Array
      try {
        bytes = await this.local.get(cid)
      } catch {
        continue
      }
      if (objectKind(cid, bytes) !== 'version') continue
      try {
        const v = decodeVersion(bytes)
        if (!own.equals(v.author)) continue
        const item: HistoryItem = { seq: v.seq, time: v.time, vguid: cid, parents: v.parents }
        if (v.message !== undefined) item.message = v.message
        out.push(item)
      } catch {}
    }
    return out.sort((a, b) => (a.seq < b.seq ? 1 : a.seq > b.seq ? -1 : 0))
  }

  /** A read-only view of one version. */
  async openVersion (v: VersionInfo, warn?: (line: string) => void): Promise<ReefFS> {
    return await ReefFS.open({ store: this.store, version: v, warn })
  }

  /**
   * Makes a version already in the store (a merge of writer heads) this node's head: the next
   * signed head names it. Its seq must be above the current head's (HEAD_ROLLBACK otherwise).
   */
  async adopt (v: VersionInfo, view?: CID): Promise<void> {
    await this.signHeadFor(view === undefined ? this.config.name : this.viewFsName(view), this.fsAguid(view), v.vguid, v.root.seq, v.root.time, view !== undefined)
  }

  /**
   * Signs and stores the head naming `vguid`, then publishes it in the background (a fold never
   * waits for the network). The head's seq is the version's, except in a view (`above`): there
   * two merges of one writer's heads can share a seq (a merge's is one above its parents', and
   * another writer's new head need not raise that), so the head takes the next seq above the one
   * held. Heads only have to rise; the version keeps its own seq for history.
   */
  private async signHeadFor (name: string, aguid: CID, vguid: CID, seq: bigint, time: number, above = false): Promise<void> {
    let headSeq = seq
    if (above) {
      const held = await this.heads.current(aguid)
      if (held !== undefined && held.seq >= seq && !held.vguid.equals(vguid)) headSeq = held.seq + 1n
    }
    const bytes = encodeHead(signHead(this.keys, name, vguid, headSeq, BigInt(time)))
    await this.heads.accept(bytes, aguid)
    void this.dht?.publishHead(aguid, bytes)
  }

  /**
   * Versions from the head back along every parent, newest first (by time, then seq), each once:
   * a merged version (issue 12) has one parent per writer head, so history is a DAG, and
   * `parents` says where each version came from. A parent that is missing or damaged is left
   * out (reef fsck names it) and the walk goes on through the others, so history continues
   * past an unreadable head through the version a mount started from (--from).
   */
  async history (aguid: CID = this.aguid, limit = 1_000_000): Promise<HistoryItem[]> {
    const out: HistoryItem[] = []
    const head = await this.currentVersion(aguid)
    const frontier: VersionInfo[] = head !== undefined ? [head] : []
    const seen = new Set<string>(head !== undefined ? [head.vguid.toString()] : [])
    while (frontier.length > 0 && out.length < limit) {
      let at = 0
      for (let i = 1; i < frontier.length; i++) {
        const a = frontier[i].root
        const b = frontier[at].root
        if (a.time > b.time || (a.time === b.time && a.seq > b.seq)) at = i
      }
      const v = frontier.splice(at, 1)[0]
      const item: HistoryItem = { seq: v.root.seq, time: v.root.time, vguid: v.vguid, parents: v.root.parents }
      if (v.root.message !== undefined) item.message = v.root.message
      out.push(item)
      for (const parent of v.root.parents) {
        const key = parent.toString()
        if (seen.has(key)) continue
        seen.add(key)
        if (!(await this.store.has(parent))) continue
        try {
          frontier.push(await this.version(parent))
        } catch (err) {
          if (!isDamage(err)) throw err
        }
      }
    }
    return out
  }

  async close (): Promise<void> {
    await this.dht?.stop().catch(() => {})
    await this.db.close()
  }
}

function readConfig (cfgFile: string, keys: KeyPair): NodeConfig {
  let config: NodeConfig
  try {
    config = JSON.parse(fs.readFileSync(cfgFile, 'utf8'))
  } catch (err) {
    throw new ReefError('STORE_CORRUPT', `unreadable ${cfgFile}: ${(err as Error).message}`)
  }
  const name: unknown = config?.name
  if (typeof name !== 'string') throw new ReefError('STORE_CORRUPT', `${cfgFile} has no name`)
  // The AGUID follows from the key and the name; any other (malformed, or another owner's) would
  // make every head this node signs name a file system it does not open.
  if (config.aguid !== aguidFor(keys.publicKey, name).toString()) {
    throw new ReefError('STORE_CORRUPT', `${cfgFile}: its AGUID ${JSON.stringify(String(config.aguid).slice(0, 70))} is not the one its identity.key and name give`)
  }
  return config
}

function readKeys (keyFile: string): KeyPair {
  const seed = fs.readFileSync(keyFile)
  if (seed.length !== 32) throw new ReefError('STORE_CORRUPT', `${keyFile} is not a 32-byte ed25519 seed`)
  return keyPairFromSeed(new Uint8Array(seed))
}
