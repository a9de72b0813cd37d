import type { CID } from 'multiformats/cid'
import { type Block, blockKey, sameBytes, verifyBlock } from '../block/index.js'
import { ReefError } from '../errors.js'
import type { BlockStore, HeadStore } from './types.js'

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')

export class MemoryBlockStore implements BlockStore {
  readonly blocks = new Map<string, Uint8Array>()

  async get (cid: CID): Promise<Uint8Array> {
    const bytes = this.blocks.get(hex(blockKey(cid)))
    if (bytes === undefined) throw ReefError.notFound(`block ${cid.toString()}`)
    // A copy, as the disk store returns: a caller that mutates what it got must not corrupt the store.
    return verifyBlock(cid, bytes, 'the memory store').slice()
  }

  async has (cid: CID): Promise<boolean> { return this.blocks.has(hex(blockKey(cid))) }

  async put (block: Block): Promise<void> {
    this.blocks.set(hex(blockKey(block.cid)), block.bytes.slice())
  }

  async putMany (blocks: Iterable<Block>): Promise<void> {
    for (const b of blocks) await this.put(b)
  }

  async delete (cid: CID): Promise<void> { this.blocks.delete(hex(blockKey(cid))) }

  async * keys (): AsyncIterable<Uint8Array> {
    for (const k of [...this.blocks.keys()]) yield Uint8Array.from(Buffer.from(k, 'hex'))
  }

  async close (): Promise<void> {}
}

export class MemoryHeadStore implements HeadStore {
  private readonly heads = new Map<string, { seq: bigint, bytes: Uint8Array }>()
  private readonly forkLog = new Map<string, Array<{ seq: bigint, bytes: Uint8Array }>>()

  async getHead (aguid: CID): Promise<{ seq: bigint, bytes: Uint8Array } | undefined> {
    const e = this.heads.get(aguid.toString())
    return e === undefined ? undefined : { seq: e.seq, bytes: e.bytes.slice() }
  }

  async putHeadIfHigher (aguid: CID, seq: bigint, bytes: Uint8Array): Promise<{ seq: bigint, bytes: Uint8Array } | undefined> {
    const cur = this.heads.get(aguid.toString())
    if (cur !== undefined && cur.seq >= seq) return cur
    this.heads.set(aguid.toString(), { seq, bytes: bytes.slice() })
    return undefined
  }

  async recordFork (aguid: CID, seq: bigint, bytes: Uint8Array): Promise<void> {
    const list = this.forkLog.get(aguid.toString()) ?? []
    // The same evidence delivered again is stored once (as in the disk store).
    if (list.some(f => f.seq === seq && sameBytes(f.bytes, bytes))) return
    list.push({ seq, bytes: bytes.slice() })
    this.forkLog.set(aguid.toString(), list)
  }

  async forks (aguid: CID): Promise<Array<{ seq: bigint, bytes: Uint8Array }>> {
    return (this.forkLog.get(aguid.toString()) ?? []).map(f => ({ seq: f.seq, bytes: f.bytes.slice() }))
  }

  async close (): Promise<void> {}
}
