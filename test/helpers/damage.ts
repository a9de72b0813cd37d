/**
 * A small file system with one of each block kind worth damaging (directory leaves, an interior
 * directory node, the link table, file chunks, version roots), built in-process and folded, and
 * the means to damage its blocks in the data directory's LMDB store: flip a byte (BLOCK_CORRUPT),
 * delete (NOT_FOUND), or commit a version that names a block that does not decode (BAD_ENCODING).
 */
import crypto from 'node:crypto'
import type { CID } from 'multiformats/cid'
import { open } from 'lmdb'
import { ReefNode } from '../../src/node.js'
import { ROOT_INO } from '../../src/fs/inode.js'
import { buildDir, DirReader, type Entry } from '../../src/object/dir.js'
import { FileReader } from '../../src/object/file.js'
import { encodeBlock } from '../../src/object/codec.js'
import { encodeVersion } from '../../src/object/version.js'
import { encodeHead, signHead } from '../../src/naming/index.js'
import { type Block, parseGuid } from '../../src/block/index.js'
import { overwriteBlock, STORE_DIR } from './cli.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const cred = { uid: 0, gid: 0 }

/** Names in /big: enough for several leaves under an interior node (a leaf ends about every 128). */
export const BIG_ENTRIES = 600
export const BLOB = crypto.randomBytes(300 * 1024)

export interface Fixture {
  /** VGUID and seq of the version holding the tree (after an empty first version). */
  vguid: string
  seq: bigint
  older: { vguid: string, seq: bigint }
  /** Root block of each directory's tree, by path ("/", "/docs", ...). */
  dirs: Record<string, string>
  /** /big: its interior root and leaves. */
  bigLeaves: string[]
  links: string
  /** Chunks of /data/blob, in order. */
  blobChunks: string[]
}

/**
 *   /docs/a.txt  /docs/sub/b.txt   /big/f000..f599   /data/blob (300 KiB)  /data/small
 *   /links/orig, /links/h1 (one inode, two names: the link table)   /other/x
 */
export async function buildFixture (dataDir: string): Promise<Fixture> {
  ReefNode.init(dataDir)
  const node = await ReefNode.open(dataDir, { noSync: true })
  try {
    const rfs = await node.openFs()
    const older = await rfs.fold('empty', true)
    const mk = async (parent: number, name: string): Promise<number> => (await rfs.mkdir(parent, enc(name), 0o755, cred)).ino
    const file = async (parent: number, name: string, data: Uint8Array): Promise<number> => {
      const f = await rfs.create(parent, enc(name), 0o644, cred)
      if (data.length > 0) await rfs.write(f.ino, 0, data)
      return f.ino
    }
    const docs = await mk(ROOT_INO, 'docs')
    await file(docs, 'a.txt', enc('alpha\n'))
    await file(await mk(docs, 'sub'), 'b.txt', enc('beta\n'))
    const big = await mk(ROOT_INO, 'big')
    for (let i = 0; i < BIG_ENTRIES; i++) await file(big, `f${String(i).padStart(3, '0')}`, new Uint8Array(0))
    const data = await mk(ROOT_INO, 'data')
    await file(data, 'blob', BLOB)
    await file(data, 'small', enc('small\n'))
    const links = await mk(ROOT_INO, 'links')
    const orig = await file(links, 'orig', enc('linked\n'))
    await rfs.link(orig, links, enc('h1'))
    await file(await mk(ROOT_INO, 'other'), 'x', enc('x\n'))
    const v = await rfs.fold('tree')
    rfs.log?.close()
    if (v === undefined || older === undefined) throw new Error('fixture: fold made no version')
    const dirs: Record<string, string> = { '/': v.root.root.toString() }
    for await (const e of new DirReader(v.root.root, node.store).entries()) {
      if (e.kind === 'dir' && e.cid !== undefined) dirs['/' + Buffer.from(e.name).toString()] = e.cid.toString()
    }
    const sub = await new DirReader(parseCid(dirs['/docs']), node.store).lookup(enc('sub'))
    dirs['/docs/sub'] = (sub?.cid as CID).toString()
    const bigLeaves = (await new DirReader(parseCid(dirs['/big']), node.store).blocks()).map(c => c.toString())
    const blob = await new DirReader(parseCid(dirs['/data']), node.store).lookup(enc('blob'))
    const blobChunks = (await new FileReader(blob?.cid as CID, node.store).leaves()).map(l => (l.cid as CID).toString())
    return { vguid: v.vguid.toString(), seq: v.root.seq, older: { vguid: older.vguid.toString(), seq: older.root.seq }, dirs, bigLeaves, links: (v.root.links as CID).toString(), blobChunks }
  } finally {
    await node.close()
  }
}

const parseCid = (guid: string): CID => parseGuid(guid)

/** Flips one byte of a stored block: it no longer hashes to its BGUID (BLOCK_CORRUPT). */
export async function corruptBlock (dataDir: string, guid: string): Promise<void> {
  await overwriteBlock(dataDir, parseCid(guid).multihash.digest, old => {
    const b = Buffer.from(old)
    b[b.length >> 1] ^= 0x01
    return b
  })
}

/** Removes a block from the store (NOT_FOUND). */
export async function deleteBlock (dataDir: string, guid: string): Promise<void> {
  const env = open({ path: STORE_DIR(dataDir), compression: false, maxDbs: 8 })
  try {
    const blocks = env.openDB<Buffer, Buffer>({ name: 'blocks', keyEncoding: 'binary', encoding: 'binary' })
    const key = Buffer.from(parseCid(guid).multihash.digest)
    if (blocks.getBinary(key) === undefined) throw new Error(`no block ${guid} in the store`)
    await blocks.remove(key)
  } finally {
    await env.close()
  }
}

/**
 * Commits a version (head + 1) whose root gains /bad: a directory whose tree is a block that
 * hashes right but does not decode (an entry without its fields), as a faulty encoder would
 * write. Returns the new version and the GUID of that block.
 */
export async function commitMalformedDir (dataDir: string): Promise<{ vguid: string, seq: bigint, bad: string }> {
  const node = await ReefNode.open(dataDir)
  try {
    const cur = await node.currentVersion()
    if (cur === undefined) throw new Error('no version')
    const bad = encodeBlock({ t: 'd', h: 0, e: [{ n: enc('x') }] })
    const entries: Entry[] = await new DirReader(cur.root.root, node.store).list()
    const t = BigInt(Date.now()) * 1_000_000n
    entries.push({ name: enc('bad'), kind: 'dir', mode: 0o755, uid: 0, gid: 0, size: 1, mtime: t, atime: t, ctime: t, cid: bad.cid, ino: cur.root.nextIno, nlink: 2 })
    const blocks: Block[] = [bad]
    const root = buildDir(entries, b => blocks.push(b))
    const vroot = { ...cur.root, root: root.cid, parents: [cur.vguid], seq: cur.root.seq + 1n, time: Date.now(), nextIno: cur.root.nextIno + 1, message: 'malformed' }
    const vb = encodeVersion(vroot)
    blocks.push(vb)
    await node.store.putMany(blocks)
    await node.heads.accept(encodeHead(signHead(node.keys, node.config.name, vb.cid, vroot.seq, BigInt(vroot.time))), node.aguid)
    return { vguid: vb.cid.toString(), seq: vroot.seq, bad: bad.cid.toString() }
  } finally {
    await node.close()
  }
}
