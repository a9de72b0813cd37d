/**
 * Memory of a mount daemon against the size of its tree: a tree of N small files (written
 * straight through the fs core and folded, so building it is not the thing measured) is mounted
 * by `reef mount`, then walked the way tools walk a tree; the daemon's RSS is read from /proc
 * after each step. Reports a table and JSON; judges nothing.
 *   node dist/bench/tree-rss.js [--files 100000] [--per-dir 1000] [--dir /var/tmp] [--json FILE]
 */
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ReefNode } from '../src/node.js'
import { ROOT_INO } from '../src/fs/inode.js'

const args = process.argv.slice(2)
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(name)
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt
}
const files = Number(opt('--files', '100000'))
const perDir = Number(opt('--per-dir', '1000'))
const jsonOut = opt('--json', '')
const base = fs.mkdtempSync(path.join(opt('--dir', os.tmpdir()), 'reef-tree-rss-'))
const reef = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'reef.js')
const enc = new TextEncoder()

const rssMiB = (pid: number, field = 'VmRSS'): number => {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? NaN : Number(m[1]) / 1024
}
const seconds = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e9

async function buildTree (dataDir: string): Promise<number> {
  const t0 = process.hrtime.bigint()
  ReefNode.init(dataDir)
  const node = await ReefNode.open(dataDir, { noSync: true })
  const rfs = await node.openFs()
  const cred = { uid: 0, gid: 0 }
  let dir = ROOT_INO
  for (let i = 0; i < files; i++) {
    if (i % perDir === 0) dir = (await rfs.mkdir(ROOT_INO, enc.encode(`d${i / perDir}`), 0o755, cred)).ino
    const f = await rfs.create(dir, enc.encode(`file-${i}.txt`), 0o644, cred)
    await rfs.write(f.ino, 0, enc.encode(`content of file ${i}\n`))
    // Fold in slices, as a mount would, so no single log segment holds the whole tree.
    if (i % 20_000 === 19_999) await rfs.fold()
  }
  await rfs.fold()
  rfs.log?.close()
  await node.close()
  return seconds(t0)
}

async function main (): Promise<void> {
  const dataDir = path.join(base, 'data')
  const mnt = path.join(base, 'mnt')
  fs.mkdirSync(mnt)
  const build = await buildTree(dataDir)
  const errFile = path.join(base, 'daemon.stderr')
  const fd = fs.openSync(errFile, 'w')
  const t0 = process.hrtime.bigint()
  const daemon = spawn(process.execPath, [reef, '--data-dir', dataDir, 'mount', mnt], { stdio: ['ignore', 'ignore', fd] })
  fs.closeSync(fd)
  const pid = daemon.pid as number
  for (let i = 0; i < 6000 && !/^reef: mounted /m.test(fs.readFileSync(errFile, 'utf8')); i++) await new Promise(resolve => setTimeout(resolve, 20))
  // RssFile is mostly the LMDB store's memory map (pages the kernel may drop); RssAnon is the
  // daemon's own heap: inodes, caches, buffers.
  const rows: Array<{ step: string, seconds: number, rssMiB: number, anonMiB: number, fileMiB: number }> = []
  const sample = (step: string, s: number): void => {
    rows.push({ step, seconds: s, rssMiB: rssMiB(pid), anonMiB: rssMiB(pid, 'RssAnon'), fileMiB: rssMiB(pid, 'RssFile') })
  }
  sample('mounted', seconds(t0))
  const step = (name: string, cmd: string): void => {
    const t = process.hrtime.bigint()
    execFileSync('sh', ['-c', cmd], { stdio: 'ignore', maxBuffer: 1 << 30 })
    sample(name, seconds(t))
  }
  try {
    step('ls of the root', `ls ${mnt} > /dev/null`)
    // .reef/versions holds every version's tree: a walk of the live tree prunes it.
    const walk = `find ${mnt} -path ${mnt}/.reef -prune -o`
    step('find (names only)', `${walk} -name '*.txt' -print | wc -l`)
    step('stat of every entry', `${walk} -printf '%s %m %T@\\n' | wc -l`)
    step('read of every file', `${walk} -type f -print0 | xargs -0 cat | wc -c`)
    step('second stat pass', `${walk} -printf '%s %m %T@\\n' | wc -l`)
    // The kernel lets go of the inodes (FORGET); the daemon unloads what it no longer holds.
    if (process.getuid?.() === 0) {
      step('drop_caches (FORGET)', 'sync; echo 2 > /proc/sys/vm/drop_caches')
      const status = JSON.parse(execFileSync(process.execPath, [reef, '--data-dir', dataDir, 'status', '--json'], { encoding: 'utf8' })) as { attrCache?: { inodesLoaded?: number, forgets?: number } }
      console.log(`after drop_caches: ${status.attrCache?.inodesLoaded ?? '?'} inodes loaded, ${status.attrCache?.forgets ?? '?'} FORGETs`)
      step('stat pass after that', `${walk} -printf '%s %m %T@\\n' | wc -l`)
    }
    const peak = rssMiB(pid, 'VmHWM')
    console.log(`tree: ${files} files in ${Math.ceil(files / perDir)} directories (built and folded through the fs core in ${build.toFixed(1)} s); ${os.cpus().length} cores, node ${process.version}`)
    console.log('step                    seconds   RSS MiB  (anon + file)')
    for (const r of rows) console.log(`${r.step.padEnd(22)} ${r.seconds.toFixed(2).padStart(8)} ${r.rssMiB.toFixed(0).padStart(9)}  (${r.anonMiB.toFixed(0)} + ${r.fileMiB.toFixed(0)})`)
    console.log(`peak RSS (VmHWM): ${peak.toFixed(0)} MiB`)
    if (jsonOut !== '') fs.writeFileSync(jsonOut, JSON.stringify({ files, perDir, build, rows, peakMiB: peak, date: new Date().toISOString() }, null, 2) + '\n')
  } finally {
    daemon.kill('SIGTERM')
    await new Promise(resolve => daemon.on('exit', resolve))
    try { execFileSync('fusermount3', ['-uz', mnt], { stdio: 'ignore' }) } catch {}
    fs.rmSync(base, { recursive: true, force: true })
  }
}

await main()
