import type { CID } from 'multiformats/cid'
import type { ReefFS } from '../../src/fs/fs.js'
import type { Logger } from '../errno.js'

export interface VersionSource {
  /** Sequence numbers of every version, oldest first. */
  list (): Promise<bigint[]>
  /** A read-only view of version `seq`. */
  open (seq: bigint): Promise<ReefFS>
  /** VGUID of the current version (after folding pending writes). */
  current (): Promise<CID | undefined>
}

/**
 * Faults the composition root may inject (tests only; bin/ reads them from REEF_TEST_* and the
 * handlers never look at the environment).
 */
export interface Faults {
  /** Writes to names ending in this fail with ENOSPC (a late failure under write-behind). */
  write?: string
  /**
   * getattr, read, readdir or write of a name ending in `MARK.<op>` throws a TypeError in the
   * handler; `MARK.<op>.reply` hands the addon a reply it cannot convert (a Symbol for a size,
   * more bytes than the read asked for), so the exception comes from the reply path; and
   * `MARK.uncaught` makes getattr also throw from a timer and leave a rejection unhandled.
   */
  op?: string
  /**
   * A view mount whose file this is does no view rounds while the file exists: it neither
   * publishes its head nor looks at the others', as if cut off from them (partition tests).
   */
  viewHold?: string
}

export interface AdapterOptions {
  /** The live file system; a follower mount swaps it when a newer head arrives. */
  fs: ReefFS
  versions: VersionSource
  log: Logger
  /** Read-only mount (a checkout or a follower): every mutation is EROFS. */
  readOnly?: boolean
  /** Following another owner's head: the live tree changes under the same names. */
  follower?: boolean
  /** Called after each mutation; the daemon schedules folds from it. */
  onChange?: () => void
  /** Called after each fsync (the log is durable): a view mount folds and publishes at once. */
  onFsync?: () => void
  statfsPath?: string
  /** Seconds the kernel keeps attributes and names (0: it asks every time). */
  attrTimeout: number
  entryTimeout: number
  /** Acknowledge a write once queued, apply it right after, before any later op. */
  writeBehind: boolean
  /** Writes at or past this offset fail with EFBIG; a write straddling it is cut short. */
  maxFileSize: number
  faults?: Faults
}
