/**
 * The source tree the phase benchmark copies, stats, reads and compiles.
 *
 * First choice: the Debian source packages of lua5.4 and zlib, fetched with `apt-get source
 * --download-only` into bench/.cache and unpacked with `dpkg-source -x --skip-patches` (the
 * upstream trees: Debian's lua5.4 patches switch the build to libtool and C++, which this machine
 * need not have). If no deb-src entry is configured, a temporary one for this machine's Debian
 * release is added under /etc/apt/sources.list.d/, only that list is updated, and the entry is
 * removed again. Phase 5 builds both with their own Makefiles (zlib's ./configure runs untimed).
 *
 * Fallback (apt-get or dpkg-source missing or failing, not root, no network, or
 * REEF_BENCH_SOURCE=synthetic): a deterministic synthetic C project generated from a seed
 * (bench/phases/synthetic.ts) with a plain Makefile. The report names the source used.
 */
import fs from 'node:fs'
import path from 'node:path'
import { run } from './proc.js'
import { generateSynthetic } from './synthetic.js'

export interface SourceTree {
  /** What was used, for the report, e.g. "Debian source packages lua5.4 5.4.4-3+deb12u1, zlib ...". */
  description: string
  kind: 'debian' | 'synthetic'
  dir: string
  /** Relative paths, parents before children (phase 1 creates them in this order). */
  dirs: string[]
  files: string[]
  bytes: number
  /** Untimed step before phase 5, run in the copy (e.g. zlib's ./configure). */
  configure: string
  /** Phase 5, run in the copy. */
  build: string
}

const PACKAGES = ['lua5.4', 'zlib']
const SRC_LIST = '/etc/apt/sources.list.d/reef-bench-deb-src.sources'

// Drives the two packages' own build systems; copied with the tree, so it is part of phase 2.
const TOP_MAKEFILE = `# reef bench, phase 5: each package builds with its own build system.
all:
\t$(MAKE) -C zlib
\t$(MAKE) -C lua5.4 linux
.PHONY: all
`

function osRelease (): Record<string, string> {
  try {
    return Object.fromEntries(fs.readFileSync('/etc/os-release', 'utf8').split('\n').filter(l => l.includes('='))
      .map(l => { const i = l.indexOf('='); return [l.slice(0, i), l.slice(i + 1).replace(/^"|"$/g, '')] }))
  } catch {
    return {}
  }
}

async function aptSource (dlDir: string, log: (s: string) => void): Promise<boolean> {
  const r = await run('apt-get', ['source', '--download-only', ...PACKAGES], { cwd: dlDir, timeoutMs: 300_000 })
  if (r.code !== 0) log(`apt-get source: ${(r.stderr.trim().split('\n').pop() ?? '').slice(0, 300)}`)
  return r.code === 0
}

/** Downloads the .dsc/.orig/.debian files into dlDir; adds a deb-src entry only for as long as needed. */
async function download (dlDir: string, log: (s: string) => void): Promise<void> {
  if (await aptSource(dlDir, log)) return
  const rel = osRelease()
  const codename = rel.VERSION_CODENAME
  if (rel.ID !== 'debian' || codename === undefined) throw new Error(`not a Debian release (${rel.PRETTY_NAME ?? 'unknown'}); no deb-src entry to add`)
  if (process.getuid?.() !== 0) throw new Error('adding a deb-src entry needs root')
  log(`adding a temporary deb-src entry for ${codename} (${SRC_LIST})`)
  fs.writeFileSync(SRC_LIST, [
    'Types: deb-src', 'URIs: http://deb.debian.org/debian', `Suites: ${codename}`, 'Components: main',
    'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg', ''
  ].join('\n'))
  try {
    // Update only this list: quick, and leaves the machine's other lists alone.
    const u = await run('apt-get', ['update', `-oDir::Etc::sourcelist=${SRC_LIST}`, '-oDir::Etc::sourceparts=-', '-oAPT::Get::List-Cleanup=0'], { timeoutMs: 300_000 })
    if (u.code !== 0) throw new Error(`apt-get update: ${u.stderr.slice(-300)}`)
    if (!(await aptSource(dlDir, log))) throw new Error('apt-get source failed with the deb-src entry too')
  } finally {
    fs.rmSync(SRC_LIST, { force: true })
  }
}

async function debianTree (cacheDir: string, log: (s: string) => void): Promise<{ dir: string, description: string }> {
  const tree = path.join(cacheDir, 'debian-tree')
  const stamp = path.join(cacheDir, 'debian-tree.json')
  if (fs.existsSync(stamp) && fs.existsSync(tree)) return JSON.parse(fs.readFileSync(stamp, 'utf8')) as { dir: string, description: string }
  const dl = path.join(cacheDir, 'debian-dl')
  fs.mkdirSync(dl, { recursive: true })
  const dscs = (): string[] => fs.readdirSync(dl).filter(f => f.endsWith('.dsc'))
  if (!PACKAGES.every(p => dscs().some(f => f.startsWith(p + '_')))) await download(dl, log)
  fs.rmSync(tree, { recursive: true, force: true })
  fs.mkdirSync(tree)
  const versions: string[] = []
  for (const p of PACKAGES) {
    const dsc = dscs().filter(f => f.startsWith(p + '_')).sort().pop()
    if (dsc === undefined) throw new Error(`no ${p} .dsc in ${dl}`)
    const x = await run('dpkg-source', ['--no-check', '--skip-patches', '-x', path.join(dl, dsc), path.join(tree, p)], { cwd: dl, timeoutMs: 120_000 })
    if (x.code !== 0) throw new Error(`dpkg-source -x ${dsc}: ${x.stderr.slice(-300)}`)
    versions.push(dsc.replace(/\.dsc$/, '').replace('_', ' '))
  }
  fs.writeFileSync(path.join(tree, 'Makefile'), TOP_MAKEFILE)
  const res = { dir: tree, description: `Debian source packages ${versions.join(', ')} (apt-get source, upstream trees)` }
  fs.writeFileSync(stamp, JSON.stringify(res))
  return res
}

/** Lists dirs (parents first) and regular files under `root`, relative, sorted. */
function walk (root: string): { dirs: string[], files: string[], bytes: number } {
  const dirs: string[] = []
  const files: string[] = []
  let bytes = 0
  const visit = (rel: string): void => {
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true }).sort((a, b) => a.name < b.name ? -1 : 1)) {
      const r = rel === '' ? e.name : `${rel}/${e.name}`
      if (e.isDirectory()) {
        dirs.push(r)
        visit(r)
      } else if (e.isFile()) {
        files.push(r)
        bytes += fs.statSync(path.join(root, r)).size
      }
      // Symlinks and specials are left out: the phases copy regular files.
    }
  }
  visit('')
  return { dirs, files, bytes }
}

/** The benchmark's source tree: Debian packages if obtainable, else the synthetic project. */
export async function getSource (cacheDir: string, log: (s: string) => void): Promise<SourceTree> {
  fs.mkdirSync(cacheDir, { recursive: true })
  // The cache is never committed; it ignores itself so no shared .gitignore needs an entry.
  fs.writeFileSync(path.join(cacheDir, '.gitignore'), '*\n')
  const want = process.env.REEF_BENCH_SOURCE ?? 'debian'
  if (want !== 'synthetic') {
    try {
      const d = await debianTree(cacheDir, log)
      return { ...walk(d.dir), dir: d.dir, description: d.description, kind: 'debian', configure: 'cd zlib && ./configure', build: 'make -j1' }
    } catch (err) {
      log(`Debian sources unavailable (${(err as Error).message}); using the synthetic C project`)
    }
  }
  const files = Number(process.env.REEF_BENCH_SYNTH_FILES ?? '400')
  const dir = path.join(cacheDir, `synthetic-${files}`)
  if (!fs.existsSync(path.join(dir, 'Makefile'))) {
    fs.rmSync(dir, { recursive: true, force: true })
    generateSynthetic(dir, files)
  }
  return { ...walk(dir), dir, description: `synthetic C project (${files} files, seeded, bench/phases/synthetic.ts)`, kind: 'synthetic', configure: 'true', build: 'make -j1' }
}
