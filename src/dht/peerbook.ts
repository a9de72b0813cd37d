/**
 * The peers this node has met, remembered in the data directory (peers.json) so that a node
 * whose bootstrap peers are gone, or that was given none, still finds its way back into the
 * network after a restart or after losing every connection. Bounded: the MAX_PEERS most
 * recently seen. Written atomically (tmp + rename) and at most once per SAVE_DELAY_MS.
 */
import fs from 'node:fs'

export interface KnownPeer { id: string, addrs: string[], seen: number }

export const MAX_PEERS = 64
const SAVE_DELAY_MS = 1000

export class PeerBook {
  private readonly peers = new Map<string, KnownPeer>()
  private saveTimer?: NodeJS.Timeout

  constructor (private readonly file: string | undefined, private readonly log?: (line: string) => void) {
    if (file === undefined) return
    let doc: unknown
    try {
      doc = JSON.parse(fs.readFileSync(file, 'utf8'))
    } catch (err) {
      // A missing file is a node that never met anyone; an unreadable one is only a lost hint.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log?.(`ignoring unreadable ${file}: ${(err as Error).message}`)
      return
    }
    const list = (doc as { peers?: unknown })?.peers
    if (!Array.isArray(list)) return
    for (const p of list.slice(0, MAX_PEERS)) {
      if (typeof p?.id !== 'string' || !Array.isArray(p.addrs) || typeof p.seen !== 'number') continue
      const addrs = p.addrs.filter((a: unknown): a is string => typeof a === 'string').slice(0, 16)
      this.peers.set(p.id, { id: p.id, addrs, seen: p.seen })
    }
  }

  get size (): number { return this.peers.size }

  /** Most recently seen first. */
  list (): KnownPeer[] {
    return [...this.peers.values()].sort((a, b) => b.seen - a.seen)
  }

  /** Records that `id` was seen now, at `addrs` (kept from before when empty). */
  note (id: string, addrs: string[]): void {
    const old = this.peers.get(id)
    this.peers.delete(id)
    this.peers.set(id, { id, addrs: addrs.length > 0 ? addrs.slice(0, 16) : old?.addrs ?? [], seen: Date.now() })
    if (this.peers.size > MAX_PEERS) {
      for (const p of this.list().slice(MAX_PEERS)) this.peers.delete(p.id)
    }
    this.scheduleSave()
  }

  private scheduleSave (): void {
    if (this.file === undefined || this.saveTimer !== undefined) return
    this.saveTimer = setTimeout(() => {
      this.saveTimer = undefined
      this.save()
    }, SAVE_DELAY_MS)
    this.saveTimer.unref()
  }

  /** Writes any pending change now (at shutdown). */
  flush (): void {
    if (this.saveTimer === undefined) return
    clearTimeout(this.saveTimer)
    this.saveTimer = undefined
    this.save()
  }

  private save (): void {
    if (this.file === undefined) return
    const tmp = `${this.file}.tmp`
    try {
      fs.writeFileSync(tmp, JSON.stringify({ peers: this.list() }, null, 1) + '\n')
      fs.renameSync(tmp, this.file)
    } catch (err) {
      this.log?.(`saving ${this.file}: ${(err as Error).message}`)
    }
  }
}
