/**
 * The mount's operations on libfuse3's low-level API (mount/fuse3.ts), split by group: entries
 * (names and attributes), files (open files and their data), dirs, xattrs. Every handler takes
 * the kernel's inode numbers. Here they get two rules in one place:
 *   - every op but write runs once the writes acknowledged before it are applied (write-behind);
 *   - every op but forget runs inside the gate, which a swap of the live tree closes (context.ts);
 *   - whatever a handler throws becomes its errno (mount/errno.ts), and what is not an ordinary
 *     POSIX outcome is logged as one "unexpected" line: a handler never kills the mount.
 * Unit tests can call `ops` directly with inode numbers, without a mount.
 */
import { describeError, toErrno } from '../errno.js'
import { FuseErrno, type LowLevelOps } from '../fuse3.js'
import { Adapter, type WriteBehindStats } from './context.js'
import { dirOps } from './dirs.js'
import { entryOps } from './entries.js'
import { fileOps } from './files.js'
import type { AdapterOptions } from './options.js'
import { xattrOps } from './xattrs.js'

export type { AdapterOptions, Faults, VersionSource } from './options.js'

/** Ops that answer nothing (or only count) and must not wait for the write queue. */
const UNGUARDED = new Set(['forget', 'counted'])
/** READDIRPLUS is readdir to the people reading the log. */
const logName = (op: string): string => op === 'readdirplus' ? 'readdir' : op

export interface MountAdapter {
  ops: LowLevelOps
  adapter: Adapter
  /** Resolves once every write acknowledged so far has been applied. */
  settled: () => Promise<void>
  writeBehind: () => WriteBehindStats
}

export function buildAdapter (o: AdapterOptions): MountAdapter {
  const a = new Adapter(o)
  const log = (line: string): void => a.log(line)
  const groups: Record<string, unknown> = { ...entryOps(a), ...fileOps(a), ...dirOps(a), ...xattrOps(a) }
  const ops: Record<string, unknown> = {}
  for (const [name, fn] of Object.entries(groups)) {
    if (typeof fn !== 'function') continue
    if (UNGUARDED.has(name)) {
      ops[name] = fn
      continue
    }
    const handler = fn as (...args: unknown[]) => Promise<unknown>
    const wait = name !== 'write'
    ops[name] = async (...args: unknown[]): Promise<unknown> => {
      try {
        return await a.gate.run(async () => await (wait ? a.afterWrites(async () => await handler(...args)) : handler(...args)))
      } catch (err) {
        // A late write failure was mapped (and logged) when it happened.
        if (err instanceof FuseErrno) throw err
        throw new FuseErrno(-toErrno(err, logName(name), log))
      }
    }
  }
  ops.unexpected = (op: string, err: unknown) => { log(`${logName(op)}: unexpected exception in the reply: ${describeError(err)}`) }
  return {
    ops: ops as unknown as LowLevelOps,
    adapter: a,
    settled: async () => { await a.lastWrite },
    writeBehind: () => ({ ...a.wb })
  }
}
