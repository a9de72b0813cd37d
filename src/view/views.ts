/**
 * Views as a node uses them: create one, change its writers (owner only), read it, and publish
 * or read the writers' heads. Everything lands in the local view book and block store first, so
 * a node without peers works on what it holds; with a network, each change is published at once
 * and each read first asks the network for something newer.
 *
 * For the merge (issue 12 item 3, not built yet): `positions(view)` gives every writer's place
 * to merge from (a current writer's checked head, a removed writer's cut from the list); walk
 * each writer's records back from there along `prev` and pass each through check.ts's
 * `checkRecord` with the head that reached it. Until the merge lands, `reef view publish` makes a
 * writer's head name its own file system's current version and newest folded record.
 */
import type { CID } from 'multiformats/cid'
import type { KeyPair } from '../crypto/sign.js'
import { isReefError, ReefError, type ReefErrorCode } from '../errors.js'
import type { BlockStore, HeadStore } from '../store/types.js'
import { ViewBook } from './book.js'
import { checkWriterHead } from './check.js'
import { recordKeyFor } from './dht.js'
import { keyHex, viewIdFor, writerSlotFor } from './ids.js'
import { addWriter, checkSuccessor, type Cut, decodeList, encodeList, genesisList, NO_CUT, removeWriter, standingOf, type ViewList } from './list.js'
import { encodeViewRecord, encodeWriterHead, signViewRecord, signWriterHead, verifyViewRecord, type ViewRecord, type WriterHead } from './record.js'

/** The network as views need it: put and get a signed record under its DHT key. */
export interface RecordNet {
  publishRecord: (key: Uint8Array, bytes: Uint8Array, what: string) => Promise<number>
  fetchRecord: (key: Uint8Array, what: string) => Promise<Uint8Array | undefined>
}

/** Where a writer's log is: its newest version, newest log record and that record's counter. */
export interface LogPosition { vguid: CID, record?: CID, n: bigint }

export interface ViewState { record: ViewRecord, list: ViewList, listCid: CID }

/** One writer's place in a view as a reader sees it. */
export type WriterPosition =
  | { key: Uint8Array, state: 'writer', added: bigint, head?: WriterHead, refused?: { code: ReefErrorCode, message: string } }
  | { key: Uint8Array, state: 'removed', added: bigint, removed: bigint, cut: Cut }

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0

export class Views {
  readonly book: ViewBook

  constructor (private readonly deps: { keys: KeyPair, heads: HeadStore, blocks: BlockStore, net?: RecordNet }) {
    this.book = new ViewBook(deps.heads)
  }

  private key (id: CID): Uint8Array { return recordKeyFor(id) as Uint8Array }

  private async loadList (r: ViewRecord): Promise<ViewList> {
    const l = decodeList(await this.deps.blocks.get(r.list))
    if (!l.view.equals(r.view) || l.seq !== r.seq) {
      throw new ReefError('VIEW_MALFORMED', `view record ${r.seq} of ${r.view.toString()} names list ${l.seq} of ${String(l.view)}`)
    }
    return l
  }

  /**
   * Asks the network for a newer view record and takes it if its list reads and, when it is the
   * very next version, follows the held list (checkSuccessor). Older records are not taken.
   */
  async refresh (view: CID): Promise<void> {
    const bytes = await this.deps.net?.fetchRecord(this.key(view), `view ${view.toString()}`)
    if (bytes === undefined) return
    const r = verifyViewRecord(bytes, view)
    const held = await this.book.currentView(view)
    if (held !== undefined && r.seq <= held.record.seq) return
    const list = await this.loadList(r)
    if (held !== undefined && r.seq === held.record.seq + 1n) checkSuccessor(await this.loadList(held.record), held.record.list, list)
    await this.book.acceptView(bytes, view)
  }

  /**
   * The newest version of a view this node can get: NOT_FOUND if it knows none. With
   * `local`, only what this node holds (its book: what it fetched, made, or a peer put here).
   */
  async resolve (view: CID, local = false): Promise<ViewState> {
    try {
      if (!local) await this.refresh(view)
    } catch (err) {
      // A newer list whose block cannot be fetched now: the held one still answers (a node
      // without peers works on what it holds). Anything wrong with what was fetched is reported.
      if (!isReefError(err, 'NOT_FOUND') || (await this.book.currentView(view)) === undefined) throw err
    }
    const cur = await this.book.currentView(view)
    if (cur === undefined) throw ReefError.notFound(`no view ${view.toString()} is known here or on the network`)
    return { record: cur.record, list: await this.loadList(cur.record), listCid: cur.record.list }
  }

  private async commit (list: ViewList): Promise<ViewState & { acks?: number }> {
    const block = encodeList(list)
    await this.deps.blocks.put(block)
    const record = signViewRecord(this.deps.keys, list.name, block.cid, list.seq, BigInt(list.time))
    const bytes = encodeViewRecord(record)
    await this.book.acceptView(bytes, list.view)
    const acks = await this.deps.net?.publishRecord(this.key(list.view), bytes, `view ${list.view.toString()}`)
    return { record, list, listCid: block.cid, acks }
  }

  /**
   * Puts the newest view record held here back on the network (a signed record anyone may
   * carry): a view created offline becomes findable once its owner, or any node that holds it,
   * is online. Returns the peers that took it (undefined without a network).
   */
  async republish (view: CID): Promise<number | undefined> {
    const cur = await this.book.currentView(view)
    if (cur === undefined || this.deps.net === undefined) return undefined
    return await this.deps.net.publishRecord(this.key(view), cur.bytes, `view ${view.toString()}`)
  }

  /** Creates the view NAME owned by this node's key; an existing one is returned as it is. */
  async create (name: string): Promise<ViewState & { created: boolean, acks?: number }> {
    const view = viewIdFor(this.deps.keys.publicKey, name)
    try {
      return { ...(await this.resolve(view)), created: false }
    } catch (err) {
      if (!isReefError(err, 'NOT_FOUND')) throw err
    }
    return { ...(await this.commit(genesisList(this.deps.keys.publicKey, name))), created: true }
  }

  private async change (view: CID, next: (s: ViewState) => ViewList | Promise<ViewList>): Promise<ViewState & { acks?: number }> {
    const s = await this.resolve(view)
    if (!same(s.list.owner, this.deps.keys.publicKey)) {
      throw new ReefError('VIEW_NOT_OWNER', `only the owner of view ${view.toString()} (${keyHex(s.list.owner)}) can change its writers; this node's key is ${keyHex(this.deps.keys.publicKey)}`)
    }
    return await this.commit(await next(s))
  }

  async add (view: CID, key: Uint8Array): Promise<ViewState & { acks?: number }> {
    return await this.change(view, s => addWriter(s.list, s.listCid, key))
  }

  /** Removes a writer, cutting its log at the newest head of it found here or on the network. */
  async remove (view: CID, key: Uint8Array): Promise<ViewState & { acks?: number }> {
    return await this.change(view, async s => {
      // Checked before looking for its head, so that a non-writer is refused without a lookup.
      if (standingOf(s.list, key).state !== 'writer') return removeWriter(s.list, s.listCid, key)
      const pos = await this.currentHead(s.list, key)
      const h = pos.head
      const cut: Cut = h === undefined ? NO_CUT : { seq: h.seq, n: h.n, vguid: h.vguid, ...(h.record !== undefined ? { record: h.record } : {}) }
      return removeWriter(s.list, s.listCid, key, cut)
    })
  }

  /**
   * Signs and publishes this node's head in a view: its log is at `position`. Only a current writer
   * may; the head names the list version it was made under. `local`: the list and this writer's
   * last head as held here, with no lookup first (a view mount, which keeps both fresh by its
   * rounds, publishes every fold this way).
   */
  async publishHead (view: CID, position: LogPosition | (() => Promise<LogPosition>), local = false): Promise<{ head: WriterHead, acks?: number }> {
    const s = await this.resolve(view, local)
    const me = this.deps.keys.publicKey
    const st = standingOf(s.list, me)
    if (st.state === 'removed') throw new ReefError('VIEW_REMOVED', `this node's key ${keyHex(me)} was removed from view ${view.toString()} at list ${st.removed}`)
    if (st.state !== 'writer') throw new ReefError('VIEW_NOT_WRITER', `this node's key ${keyHex(me)} is not a writer of view ${view.toString()} (its owner adds it with: reef view add ${view.toString()} ${keyHex(me)})`)
    // Asked for only once this key may write: a non-writer is refused whatever its log holds.
    const at = typeof position === 'function' ? await position() : position
    const slot = writerSlotFor(view, me)
    if (!local) await this.fetchHead(slot)
    const held = await this.book.currentWriterHead(slot)
    const head = signWriterHead(this.deps.keys, { view, ...at, listSeq: s.list.seq, seq: (held?.head.seq ?? 0n) + 1n })
    const bytes = encodeWriterHead(head)
    await this.book.acceptWriterHead(bytes, slot)
    const acks = await this.deps.net?.publishRecord(this.key(slot), bytes, `writer head ${slot.toString()}`)
    return { head, acks }
  }

  /** Takes the network's head of a slot into the book if it verifies and advances. */
  private async fetchHead (slot: CID): Promise<void> {
    const bytes = await this.deps.net?.fetchRecord(this.key(slot), `writer head ${slot.toString()}`)
    if (bytes === undefined) return
    try {
      await this.book.acceptWriterHead(bytes, slot)
    } catch (err) {
      // An older head than the one held is no news; anything else is worth the caller's eyes.
      if (!isReefError(err, 'VIEW_ROLLBACK')) throw err
    }
  }

  /** A current writer's newest head, checked against the list (refused: why it does not count). */
  private async currentHead (list: ViewList, key: Uint8Array, local = false): Promise<{ head?: WriterHead, refused?: { code: ReefErrorCode, message: string } }> {
    const slot = writerSlotFor(list.view, key)
    try {
      if (!local) await this.fetchHead(slot)
      const held = await this.book.currentWriterHead(slot)
      if (held === undefined) return {}
      checkWriterHead(held.head, list)
      return { head: held.head }
    } catch (err) {
      if (!isReefError(err)) throw err
      return { refused: { code: err.code, message: err.message } }
    }
  }

  /**
   * Every writer's position in the view: a current writer's newest head (each checked against
   * the list), a removed writer's cut from the list itself. `local`: from what this node holds,
   * with no lookup (see resolve); `skip`: a writer whose head is not looked up (a mount's own).
   */
  async positions (view: CID, opts: { local?: boolean, skip?: Uint8Array } = {}): Promise<{ state: ViewState, writers: WriterPosition[] }> {
    const local = opts.local === true
    const state = await this.resolve(view, local)
    const writers: WriterPosition[] = []
    for (const w of state.list.writers) {
      const skip = opts.skip !== undefined && same(opts.skip, w.key)
      writers.push({ key: w.key, state: 'writer', added: w.added, ...(await this.currentHead(state.list, w.key, local || skip)) })
    }
    for (const r of state.list.removed) writers.push({ key: r.key, state: 'removed', added: r.added, removed: r.removed, cut: r.cut })
    return { state, writers }
  }
}
