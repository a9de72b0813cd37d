/**
 * A structural check of an LMDB data file before lmdb opens it. LMDB trusts its file: it maps it
 * and follows page numbers, so a truncated or overwritten data.mdb makes its native code crash
 * the whole process (SIGSEGV, SIGBUS) instead of returning an error. What is checked here is
 * what LMDB itself reads first: the meta pages (magic, format version, page size, page numbers)
 * and that every page the snapshot LMDB will open may reach lies inside the file.
 *
 * The layout is LMDB's as built into lmdb-js 3.x (liblmdb "mdb.master3", 64-bit little-endian):
 *   page header (24 bytes): pgno u64, txnid u64, pad u16, flags u16, lower/upper u16 (or pages u32)
 *   meta (at 24 in pages 0 and 1): magic u32, version u32, address u64, mapsize u64,
 *     MDB_db free (48 bytes; its first u32 is the page size, its flags the env flags),
 *     MDB_db main (48), last_pg u64, txnid u64, boot_id i64
 *   MDB_db: pad u32, flags u16, depth u16, branch/leaf/overflow pages u64 x3, entries u64, root u64
 * With overlapping sync lmdb-js also keeps a "flushed" meta half way through page 0 (written from
 * mapsize on, so without magic) and may open the previous snapshot instead of the newest: which
 * meta counts is decided as lmdb-js's mdb_pick_meta does.
 */
import fs from 'node:fs'
import os from 'node:os'
import { ReefError } from '../errors.js'

const MAGIC = 0xbeefc0de
const DATA_VERSION = 2
const PAGE_HEADER = 24
const META_SIZE = 144
const P_BRANCH = 0x01
const P_LEAF = 0x02
const P_META = 0x08
const F_BIGDATA = 0x01
const MDB_OVERLAPPINGSYNC = 0x1000
const NO_PAGE = 0xffff_ffff_ffff_ffffn

interface Meta {
  at: number
  psize: number
  flags: number
  freeRoot: bigint
  mainRoot: bigint
  lastPage: bigint
  txnid: bigint
  bootId: bigint
}

export interface LmdbCheckOptions {
  /** A missing or empty file is a new store to create (else it is corrupt). */
  create: boolean
  /** The store is opened with overlapping sync (lmdb-js's default unless noSync). */
  overlappingSync: boolean
}

/** What a check found, for tests: the page size, the open snapshot's last page, the file size. */
export interface LmdbFileInfo { psize: number, lastPage: number, size: number, freeTail: number }

/** Throws STORE_CORRUPT naming `file` and what is wrong, unless LMDB can safely open it. */
export function checkLmdbFile (file: string, opts: LmdbCheckOptions): LmdbFileInfo | undefined {
  // Other layouts (32-bit, big-endian) are not what lmdb-js ships for Linux; leave them to lmdb.
  if (os.endianness() !== 'LE' || !['x64', 'arm64', 'ppc64', 's390x', 'riscv64', 'loong64'].includes(process.arch)) return undefined
  const bad = (what: string): ReefError => new ReefError('STORE_CORRUPT', `corrupt block store ${file}: ${what}`)
  let fd: number
  try {
    fd = fs.openSync(file, 'r')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' && opts.create) return undefined
    throw bad(code === 'ENOENT' ? 'the file is missing, but the data directory is initialized' : `cannot read it (${code ?? (err as Error).message})`)
  }
  try {
    return checkOpen(fd, opts, bad)
  } finally {
    fs.closeSync(fd)
  }
}

function checkOpen (fd: number, opts: LmdbCheckOptions, bad: (what: string) => ReefError): LmdbFileInfo | undefined {
  const read = (pos: number, len: number): Buffer => {
    const b = Buffer.alloc(len)
    const n = fs.readSync(fd, b, 0, len, pos)
    return b.subarray(0, n)
  }
  const first = fs.fstatSync(fd)
  if (!first.isFile()) throw bad('not a regular file')
  if (first.size === 0) {
    if (opts.create) return undefined
    throw bad('the file is empty (0 bytes), but the data directory is initialized')
  }
  const p0 = read(0, PAGE_HEADER + META_SIZE)
  if (p0.length < PAGE_HEADER + META_SIZE) throw bad(`only ${first.size} bytes, too short for an LMDB file`)
  const m0 = checkMetaPage(p0, 0, undefined, bad)
  const psize = m0.psize
  const p1 = read(psize, PAGE_HEADER + META_SIZE)
  if (p1.length < PAGE_HEADER + META_SIZE) throw bad(`${first.size} bytes, shorter than its two ${psize}-byte meta pages`)
  const m1 = checkMetaPage(p1, 1, psize, bad)
  let chosen = pickMeta(m0, m1, opts.overlappingSync)
  if (opts.overlappingSync) {
    const half = read(psize / 2 + PAGE_HEADER, META_SIZE)
    const flushed = decodeMeta(Buffer.concat([Buffer.alloc(PAGE_HEADER), half]), psize / 2)
    if (flushed.txnid !== 0n) {
      if (flushed.psize !== psize) throw bad(`the flushed meta (at byte ${psize / 2}) records page size ${flushed.psize}, not ${psize}`)
      chosen = pickMeta(chosen, flushed, true)
    }
  }
  // The size is read after the metas: the file only grows, and a writer writes a snapshot's
  // pages before its meta, so a meta read earlier never names pages a later size lacks.
  const size = fs.fstatSync(fd).size
  if (size < 2 * psize) throw bad(`${size} bytes, shorter than its two ${psize}-byte meta pages`)
  const last = chosen.lastPage
  const where = `the meta at byte ${chosen.at} (txn ${chosen.txnid})`
  if (last < 1n || last > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`${where} records an impossible last page ${last}`)
  for (const [name, root] of [['free-page', chosen.freeRoot], ['main', chosen.mainRoot]] as const) {
    if (root !== NO_PAGE && (root < 2n || root > last)) throw bad(`${where} puts the ${name} tree's root at page ${root}, outside pages 2..${last}`)
  }
  const filePages = Math.floor(size / psize)
  const lastPage = Number(last)
  const info = { psize, lastPage, size, freeTail: 0 }
  if (lastPage < filePages) return info
  // LMDB may legitimately end the file before its last page: pages allocated and freed within
  // one transaction are never written. Every page past the end must then be free in this snapshot.
  const gap = lastPage - filePages + 1
  let free = 0
  try {
    free = freePages(read, psize, chosen.freeRoot, filePages, filePages, lastPage, bad)
  } catch (err) {
    if (err !== PAST_END) throw err
  }
  if (free < gap) {
    throw bad(`${size} bytes (${filePages} pages of ${psize}), but ${where} uses pages up to ${lastPage}: the file was truncated`)
  }
  info.freeTail = gap
  return info
}

function checkMetaPage (page: Buffer, pgno: number, psize: number | undefined, bad: (what: string) => ReefError): Meta {
  const which = pgno === 0 ? 'first' : 'second'
  const flags = page.readUInt16LE(18)
  if ((flags & P_META) === 0 || page.readBigUInt64LE(0) !== BigInt(pgno)) throw bad(`page ${pgno} is not an LMDB meta page (overwritten?)`)
  const magic = page.readUInt32LE(PAGE_HEADER)
  if (magic !== MAGIC) throw bad(`the ${which} meta page has magic 0x${magic.toString(16)}, not LMDB's 0xbeefc0de (overwritten?)`)
  const version = page.readUInt32LE(PAGE_HEADER + 4) & 0xffff
  if (version !== DATA_VERSION) throw bad(`the ${which} meta page records LMDB data format ${version}, not ${DATA_VERSION}`)
  const m = decodeMeta(page, pgno === 0 ? 0 : psize ?? 0)
  if (!(m.psize >= 512 && m.psize <= 65536 && (m.psize & (m.psize - 1)) === 0)) throw bad(`the ${which} meta page records an impossible page size ${m.psize}`)
  if (psize !== undefined && m.psize !== psize) throw bad(`the meta pages disagree on the page size (${psize}, ${m.psize})`)
  return m
}

/** `page` starts with a page header; its meta follows it. `at` is where the page sits in the file. */
function decodeMeta (page: Buffer, at: number): Meta {
  const m = PAGE_HEADER
  return {
    at,
    psize: page.readUInt32LE(m + 24),
    flags: page.readUInt16LE(m + 28),
    freeRoot: page.readBigUInt64LE(m + 24 + 40),
    mainRoot: page.readBigUInt64LE(m + 72 + 40),
    lastPage: page.readBigUInt64LE(m + 120),
    txnid: page.readBigUInt64LE(m + 128),
    bootId: page.readBigInt64LE(m + 136)
  }
}

/**
 * The snapshot lmdb-js opens, as its mdb_pick_meta decides: the newest, except that with
 * overlapping sync a newest snapshot not yet flushed by a process of an earlier boot (a power
 * loss may have kept its meta but not its pages) gives way to the older one.
 */
function pickMeta (a: Meta, b: Meta, overlappingSync: boolean): Meta {
  const latest = a.txnid >= b.txnid ? a : b
  if (!overlappingSync) return latest
  if (b.txnid === 0n) return a
  const trusted = (latest.bootId !== 0n && latest.bootId === bootId() && process.env.LMDB_RESTORE !== 'safe') ||
    (latest.flags & MDB_OVERLAPPINGSYNC) === 0
  if (trusted) return latest
  return a.txnid > b.txnid ? b : a
}

let cachedBootId: bigint | undefined
/** LMDB's boot id: the leading hex digits of the kernel's boot_id (strtoll stops at the first '-'). */
function bootId (): bigint {
  if (cachedBootId === undefined) {
    let id = 0n
    try {
      const m = /^[0-9a-fA-F]+/.exec(fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8'))
      if (m !== null) id = BigInt.asIntN(64, BigInt('0x' + m[0]))
    } catch {}
    cachedBootId = id
  }
  return cachedBootId
}

/** Thrown when the free-page tree itself reaches past the end of the file. */
const PAST_END = new Error('past the end of the file')

/**
 * Counts the pages in [lo, hi] that the free-page tree (rooted at `root`) lists as free. Every
 * page it reads must lie below `filePages`. Records are lists (u64 count, then entries), inline or
 * on overflow pages; a page is listed at most once.
 */
function freePages (read: (pos: number, len: number) => Buffer, psize: number, root: bigint, filePages: number, lo: number, hi: number,
  bad: (what: string) => ReefError): number {
  if (root === NO_PAGE) return 0
  let found = 0
  const stack = [Number(root)]
  const seen = new Set<number>()
  const page = (pgno: number): Buffer => {
    if (pgno >= filePages) throw PAST_END
    return read(pgno * psize, psize)
  }
  while (stack.length > 0) {
    const pgno = stack.pop() as number
    if (seen.has(pgno) || seen.size > filePages) throw bad(`the free-page tree loops at page ${pgno}`)
    seen.add(pgno)
    const p = page(pgno)
    const flags = p.readUInt16LE(18)
    if (p.readBigUInt64LE(0) !== BigInt(pgno) || (flags & (P_BRANCH | P_LEAF)) === 0) throw bad(`page ${pgno} of the free-page tree is not a tree page (overwritten?)`)
    const lower = p.readUInt16LE(20)
    const count = lower >> 1
    if (PAGE_HEADER + lower > psize) throw bad(`page ${pgno} of the free-page tree has an impossible entry count`)
    for (let i = 0; i < count; i++) {
      const node = PAGE_HEADER + p.readUInt16LE(PAGE_HEADER + 2 * i)
      if (node + 8 > psize) throw bad(`page ${pgno} of the free-page tree points outside itself`)
      const lo16 = p.readUInt16LE(node)
      const hi16 = p.readUInt16LE(node + 2)
      const nflags = p.readUInt16LE(node + 4)
      const ksize = p.readUInt16LE(node + 6)
      if ((flags & P_BRANCH) !== 0) {
        stack.push(lo16 + hi16 * 0x10000 + nflags * 0x1_0000_0000)
        continue
      }
      const dsize = lo16 + hi16 * 0x10000
      const dataAt = node + 8 + ksize
      let idl: Buffer
      if ((nflags & F_BIGDATA) !== 0) {
        if (dataAt + 8 > psize) throw bad(`page ${pgno} of the free-page tree points outside itself`)
        const ov = Number(p.readBigUInt64LE(dataAt))
        const pages = Math.floor((PAGE_HEADER - 1 + dsize) / psize) + 1
        if (ov + pages > filePages) throw PAST_END
        idl = read(ov * psize + PAGE_HEADER, dsize)
      } else {
        if (dataAt + dsize > psize) throw bad(`page ${pgno} of the free-page tree points outside itself`)
        idl = p.subarray(dataAt, dataAt + dsize)
      }
      const n = idl.length >= 8 ? Number(idl.readBigUInt64LE(0)) : 0
      if (n > idl.length / 8 - 1) throw bad(`a free-page list on page ${pgno} is longer than its record`)
      for (let j = 1; j <= n; j++) {
        // lmdb-js's lists hold single pages, and runs as (-length, first page); 0 is unused space.
        const v = Number(idl.readBigInt64LE(8 * j))
        if (v === 0) continue
        let first = v
        let count = 1
        if (v < 0) {
          if (j === n) throw bad(`a free-page list on page ${pgno} ends inside a run`)
          count = -v
          first = Number(idl.readBigInt64LE(8 * ++j))
        }
        found += Math.max(0, Math.min(hi, first + count - 1) - Math.max(lo, first) + 1)
      }
    }
  }
  return found
}
