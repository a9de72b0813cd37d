/**
 * The scenario: Pond's NFS-like five-phase benchmark (after the Modified Andrew Benchmark) on a
 * real source tree, each phase a separate process run by the shell in the target directory:
 *
 *   1 mkdir    `xargs -0 mkdir` over every directory, parents first (one mkdir process)
 *   2 copy     one `cp -p` per file, as MAB copies file by file; -p keeps modes and mtimes,
 *              as tar or rsync would, so make sees sane timestamps
 *   3 stat     `find . -exec stat ... {} +`: one statx per file and directory
 *   4 read     `find . -type f -exec cat {} + > /dev/null`: every byte once (cat read()s,
 *              it does not splice or copy_file_range to /dev/null)
 *   5 compile  the tree's own build, `make -j1`; configuring (zlib's ./configure) is untimed
 *
 * Caches are not dropped between phases (as in MAB: stat and read follow the copy). Between
 * phases 4 and 5, untimed, every copied file is compared byte for byte with its source.
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { sh } from './proc.js'
import type { SourceTree } from './source.js'

export const PHASES = ['mkdir', 'copy', 'stat', 'read', 'compile'] as const
export type Phase = typeof PHASES[number]
export type PhaseTimes = Record<Phase, number>

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`

export interface Lists { dirsFile: string, filesFile: string }

/** NUL-separated lists of the tree's directories and files, written once (untimed). */
export function writeLists (src: SourceTree, dir: string): Lists {
  const dirsFile = path.join(dir, 'dirs.list')
  const filesFile = path.join(dir, 'files.list')
  fs.writeFileSync(dirsFile, src.dirs.map(d => d + '\0').join(''))
  fs.writeFileSync(filesFile, src.files.map(f => f + '\0').join(''))
  return { dirsFile, filesFile }
}

const digest = (p: string): string => crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex')

/** sha256 of every file of the source, for the untimed check of each copy. */
export function sourceDigests (src: SourceTree): Map<string, string> {
  return new Map(src.files.map(f => [f, digest(path.join(src.dir, f))]))
}

/** Compares every copied file with its source digest; throws on the first difference. */
function verify (dir: string, digests: Map<string, string>): void {
  for (const [f, d] of digests) {
    if (digest(path.join(dir, f)) !== d) throw new Error(`copy of ${f} in ${dir} differs from the source`)
  }
}

/**
 * Runs the five phases in `dir` (empty). `onPhase` hears each phase's seconds as it ends.
 * The build log goes to `buildLog` (outside the target).
 */
export async function runPhases (src: SourceTree, dir: string, lists: Lists, digests: Map<string, string>, buildLog: string, onPhase: (p: Phase, s: number) => void): Promise<PhaseTimes> {
  const t: Partial<PhaseTimes> = {}
  const timed = async (p: Phase, line: string, opts: { stdoutFile?: string } = {}): Promise<void> => {
    const r = await sh(line, dir, { timeoutMs: 3_600_000, ...opts })
    t[p] = r.seconds
    onPhase(p, r.seconds)
  }
  await timed('mkdir', `xargs -0 -a ${q(lists.dirsFile)} mkdir --`)
  await timed('copy', `xargs -0 -a ${q(lists.filesFile)} -I{} cp -p -- ${q(src.dir)}/{} {}`)
  await timed('stat', `find . -exec stat --format='%n %s %Y' {} + > /dev/null`)
  await timed('read', 'find . -type f -exec cat {} + > /dev/null')
  verify(dir, digests)
  await sh(`(${src.configure}) > ${q(buildLog)} 2>&1`, dir, { timeoutMs: 600_000 })
  await timed('compile', `${src.build} >> ${q(buildLog)} 2>&1`)
  return t as PhaseTimes
}
