/**
 * Undoes a lost-commit race of the LMDB that lmdb-js 3.x builds in (its liblmdb predates the fix
 * of ITS#9496, see https://github.com/monero-project/monero/pull/7656). Opening an environment
 * that another process already has open reads the newest meta page, maps the file, and only then
 * stores that meta's txnid as the shared "last committed txnid" in lock.mdb (mdb_env_open2; the
 * fixed LMDB does so only for MDB_PREVSNAPSHOT). A commit by another process in between is thus
 * hidden again: readers get the older snapshot (`reef get` answered NOT_FOUND for a block a
 * finished `reef put` had committed), and the next writer builds on the older snapshot and
 * overwrites the newer meta page, so the commit is lost for good (and the writer that made it may
 * fail with MDB_PROBLEM or crash: its cached free-page state no longer matches the file).
 *
 * `SharedTxnid.restore` runs right after open, before this process reads or writes: inside a
 * write transaction (LMDB's writer mutex held, so no commit can land meanwhile) it compares the shared
 * txnid with the newest of the two meta pages and, if it is behind, puts it back, as LMDB itself
 * does when it recovers the writer mutex from a dead owner (mdb_mutex_failed); then it aborts
 * the transaction, writing nothing. What it cannot undo is a writer that started on the older
 * snapshot between the open and the repair (a fraction of a millisecond): LmdbStore therefore
 * also checks, after each durable write, that the write is in the newest snapshot, and writes it
 * again if not (durableChecked), and a read that misses first runs this repair and reads again.
 *
 * Layout (lmdb-js 3.x, 64-bit little-endian Linux, POSIX robust mutexes): lock.mdb starts with
 * magic u32 (0xbeefc0de), lock format u32, txnid u64; a meta page's txnid is at 24 + 128.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ABORT, type RootDatabase } from 'lmdb'

const MAGIC = 0xbeefc0de
/** MDB_LOCK_FORMAT of the lock file layout above (lock version 2, its layout descriptor). */
const LOCK_FORMAT = 0x2c2f6002
const LOCK_TXNID_AT = 8
const META_TXNID_AT = 24 + 128
const PSIZE_AT = 24 + 24

/** What the repair found: the shared txnid before, the newest meta's txnid, and whether it acted. */
export interface TxnidCheck { shared: bigint, newest: bigint, restored: boolean }

/**
 * The shared txnid of one store, for the repair. LMDB keeps POSIX record locks on lock.mdb (its
 * reader-liveness and shared-environment locks), and closing any descriptor of a file drops all
 * of a process's record locks on it: other processes would then take this one's readers for dead
 * and reuse the pages they read. So one descriptor per lock file (device and inode) is shared by
 * every user in the process and closed only when the last one closes, after its environment.
 */
export class SharedTxnid {
  private closed = false
  private constructor (private readonly key: string, private readonly fd: number, private readonly dir: string) {}

  /** Undefined where the layout is not the one described above (then nothing is ever touched). */
  static open (dir: string): SharedTxnid | undefined {
    if (os.endianness() !== 'LE' || process.platform !== 'linux' || !['x64', 'arm64', 'ppc64', 's390x', 'riscv64', 'loong64'].includes(process.arch)) return undefined
    const file = path.join(dir, 'lock.mdb')
    let st: fs.Stats
    try { st = fs.statSync(file) } catch { return undefined }
    const key = `${st.dev}:${st.ino}`
    let shared = lockFds.get(key)
    if (shared?.foreign === true) return undefined
    if (shared === undefined) {
      let fd: number
      try { fd = fs.openSync(file, 'r+') } catch { return undefined }
      const now = fs.fstatSync(fd)
      if (`${now.dev}:${now.ino}` !== key) return undefined // replaced meanwhile: left open, as above
      const head = readAt(fd, 0, 8)
      if (head.length < 8 || head.readUInt32LE(0) !== MAGIC || head.readUInt32LE(4) !== LOCK_FORMAT) {
        lockFds.set(key, { fd, users: 0, foreign: true }) // never closed: LMDB may hold locks on it
        return undefined
      }
      shared = { fd, users: 0, foreign: false }
      lockFds.set(key, shared)
    }
    shared.users++
    return new SharedTxnid(key, shared.fd, dir)
  }

  /** Puts the shared txnid back to the newest committed meta if an open left it behind. */
  restore (env: RootDatabase): TxnidCheck | undefined {
    if (this.closed) return undefined
    let dataFd: number
    try {
      dataFd = fs.openSync(path.join(this.dir, 'data.mdb'), 'r')
    } catch {
      return undefined
    }
    try {
      // Without the writer mutex first: a shared txnid level with the newest meta hides nothing
      // (a commit in progress may show behind for a moment; the check below then finds it level).
      const before = readAt(this.fd, LOCK_TXNID_AT, 8)
      const glance = newestMeta(dataFd)
      if (before.length < 8 || glance === undefined) return undefined
      if (before.readBigUInt64LE(0) >= glance) return { shared: before.readBigUInt64LE(0), newest: glance, restored: false }
      let found: TxnidCheck | undefined
      env.transactionSync(() => {
        // The writer mutex is held, so the metas cannot move until ABORT and `newest` is the last
        // commit. (Another open may still store an older txnid meanwhile; it repairs that itself.)
        const shared = readAt(this.fd, LOCK_TXNID_AT, 8).readBigUInt64LE(0)
        // A write transaction's id is the shared txnid + 1: proof that offset 8 is that txnid.
        if (BigInt(env.getWriteTxnId()) !== shared + 1n) return ABORT
        const newest = newestMeta(dataFd)
        if (newest === undefined) return ABORT
        found = { shared, newest, restored: false }
        if (newest > shared) {
          const out = Buffer.alloc(8)
          out.writeBigUInt64LE(newest)
          fs.writeSync(this.fd, out, 0, 8, LOCK_TXNID_AT)
          found.restored = true
        }
        return ABORT
      })
      // A read snapshot taken meanwhile may predate the repair.
      if (found?.restored === true) env.resetReadTxn()
      return found
    } finally {
      fs.closeSync(dataFd)
    }
  }

  /** Drops this user; the descriptor closes with the last one (call after closing the environment). */
  close (): void {
    if (this.closed) return
    this.closed = true
    const shared = lockFds.get(this.key)
    if (shared === undefined || --shared.users > 0) return
    lockFds.delete(this.key)
    fs.closeSync(shared.fd)
  }
}

/** Lock files of another layout are kept open too (`foreign`), and never used. */
const lockFds = new Map<string, { fd: number, users: number, foreign: boolean }>()

/** The txnid of the newer of the two meta pages, or undefined if they cannot be read. */
function newestMeta (dataFd: number): bigint | undefined {
  const p = readAt(dataFd, PSIZE_AT, 4)
  if (p.length < 4) return undefined
  const psize = p.readUInt32LE(0)
  if (!(psize >= 512 && psize <= 65536 && (psize & (psize - 1)) === 0)) return undefined
  const m0 = readAt(dataFd, META_TXNID_AT, 8)
  const m1 = readAt(dataFd, psize + META_TXNID_AT, 8)
  if (m0.length < 8 || m1.length < 8) return undefined
  const a = m0.readBigUInt64LE(0)
  const b = m1.readBigUInt64LE(0)
  return a > b ? a : b
}

function readAt (fd: number, pos: number, len: number): Buffer {
  const b = Buffer.alloc(len)
  const n = fs.readSync(fd, b, 0, len, pos)
  return b.subarray(0, n)
}
