// Real programs on a reef mount: git (init/add/commit/fsck --strict), tar extraction, rsync -a
// twice (the second run transfers nothing), an editor's save (temp + fsync + rename over, the
// old content still under .reef/versions), and compiling and running a C program.
import t from 'tap'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { describe, reef, run, skipReason, startMount, tempDir } from './helpers/mount.js'

const skip = skipReason()
if (skip !== false) {
  t.plan(0, skip)
} else {
  const base = tempDir(t, 'reef-tools-')
  const m = await startMount(t, { dataDir: path.join(base, 'data'), mnt: path.join(base, 'mnt'), foldInterval: 3600 })
  const p = (...s: string[]): string => path.join(m.mnt, ...s)
  const UTC = { TZ: 'UTC' }

  // A source tree outside the mount: nested dirs, files of many sizes, a symlink, odd modes, old mtimes.
  const src = path.join(base, 'src')
  fs.mkdirSync(path.join(src, 'a', 'b', 'c'), { recursive: true })
  for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(src, 'a', `f${i}`), crypto.randomBytes(i * 997))
  fs.writeFileSync(path.join(src, 'a', 'b', 'big'), crypto.randomBytes(1_500_000))
  fs.writeFileSync(path.join(src, 'a', 'b', 'c', 'exec.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 })
  fs.symlinkSync('../f1', path.join(src, 'a', 'b', 'link'))
  fs.chmodSync(path.join(src, 'a', 'f2'), 0o600)
  fs.utimesSync(path.join(src, 'a', 'f3'), new Date('2001-02-03T04:05:06Z'), new Date('2001-02-03T04:05:06Z'))
  fs.utimesSync(path.join(src, 'a', 'b'), new Date('1999-01-01T00:00:00Z'), new Date('1999-01-01T00:00:00Z'))

  t.test('git init, add, commit, fsck --strict', async tt => {
    fs.mkdirSync(p('repo'))
    const git = async (...args: string[]) => await run('git', ['-c', 'user.email=t@example.com', '-c', 'user.name=T', '-c', 'init.defaultBranch=main', ...args], { cwd: p('repo') })
    let r = await git('init', '-q')
    tt.equal(r.code, 0, `git init: ${describe(r)}`)
    for (let i = 0; i < 20; i++) fs.writeFileSync(p('repo', `file${i}.txt`), `line ${i}\n`.repeat(i + 1))
    fs.mkdirSync(p('repo', 'sub'))
    fs.writeFileSync(p('repo', 'sub', 'bin'), crypto.randomBytes(200_000))
    r = await git('add', '-A')
    tt.equal(r.code, 0, `git add: ${describe(r)}`)
    r = await git('commit', '-q', '-m', 'first')
    tt.equal(r.code, 0, `git commit: ${describe(r)}`)
    fs.appendFileSync(p('repo', 'file3.txt'), 'changed\n')
    fs.renameSync(p('repo', 'file4.txt'), p('repo', 'sub', 'file4.txt'))
    r = await git('commit', '-q', '-am', 'second')
    tt.equal(r.code, 0, `second commit: ${describe(r)}`)
    r = await git('add', '-A')
    r = await git('commit', '-q', '-m', 'third')
    tt.equal(r.code, 0, `third commit: ${describe(r)}`)
    r = await git('fsck', '--strict', '--full')
    tt.equal(r.code, 0, `git fsck --strict: ${describe(r)}`)
    r = await git('gc', '-q')
    tt.equal(r.code, 0, `git gc (packs, renames, deletes): ${describe(r)}`)
    r = await git('fsck', '--strict', '--full')
    tt.equal(r.code, 0, `git fsck --strict after gc: ${describe(r)}`)
    r = await git('log', '--format=%s')
    tt.equal(r.stdout, 'third\nsecond\nfirst\n', 'history')
    r = await git('status', '--porcelain')
    tt.equal(r.stdout, '', 'clean work tree')
  })

  t.test('tar: extract into the mount, diff -r clean, mtimes kept', async tt => {
    const archive = path.join(base, 'src.tar')
    let r = await run('tar', ['cf', archive, '-C', src, 'a'])
    tt.equal(r.code, 0, describe(r))
    fs.mkdirSync(p('tarx'))
    r = await run('tar', ['xpf', archive, '-C', p('tarx')])
    tt.equal(r.code, 0, `tar x: ${describe(r)}`)
    r = await run('diff', ['-r', '--no-dereference', path.join(src, 'a'), p('tarx', 'a')])
    tt.equal(r.code, 0, `diff -r: ${describe(r)}`)
    // tar's listing (modes, sizes, mtimes, link targets) of the archive equals one of the mount.
    const list = async (dir: string): Promise<string> =>
      (await run('bash', ['-c', `set -o pipefail; tar cf - --sort=name -C ${JSON.stringify(dir)} a | tar tvf - --full-time`], { env: UTC })).stdout
    const want = await list(src)
    tt.ok(want.split('\n').length > 40, 'listing covers the tree')
    tt.equal(await list(p('tarx')), want, 'tar tv listing (modes, sizes, mtimes, symlinks) identical')
    tt.equal(fs.statSync(p('tarx', 'a', 'f3')).mtime.toISOString(), '2001-02-03T04:05:06.000Z', 'file mtime is the archive\'s')
    tt.equal(fs.statSync(p('tarx', 'a', 'b')).mtime.toISOString(), '1999-01-01T00:00:00.000Z', 'directory mtime is the archive\'s')
  })

  t.test('rsync -a twice: the second run transfers nothing', async tt => {
    let r = await run('rsync', ['-a', src + '/', p('rs') + '/'])
    tt.equal(r.code, 0, `first rsync: ${describe(r)}`)
    r = await run('diff', ['-r', '--no-dereference', src, p('rs')])
    tt.equal(r.code, 0, `diff -r after rsync: ${describe(r)}`)
    r = await run('rsync', ['-a', '--itemize-changes', '--stats', src + '/', p('rs') + '/'])
    tt.equal(r.code, 0, `second rsync: ${describe(r)}`)
    tt.match(r.stdout, /Number of regular files transferred: 0\b/, 'no files transferred')
    const changes = r.stdout.split('\n').filter(l => /^[<>ch.*][fdLDS]/.test(l))
    tt.same(changes, [], 'itemize-changes lists nothing (no time, mode or size differences)')
  })

  t.test('editor save: temp file, fsync, rename over; old version stays old', async tt => {
    fs.mkdirSync(p('doc'))
    fs.writeFileSync(p('doc', 'notes.txt'), 'version one\n')
    let r = await reef(m.dataDir, 'sync', '--json')
    tt.equal(r.code, 0, `reef sync: ${describe(r)}`)
    const oldSeq = JSON.parse(r.stdout).seq as string
    tt.match(oldSeq, /^\d+$/, 'sync reports a seq')
    // What vim/gedit/VS Code do: write a sibling temp, fsync it, rename it over the original.
    const tmp = p('doc', '.notes.txt.swp')
    const fd = fs.openSync(tmp, 'w', 0o644)
    fs.writeSync(fd, 'version two, longer than the first\n')
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    fs.renameSync(tmp, p('doc', 'notes.txt'))
    const dfd = fs.openSync(p('doc'), 'r')
    fs.fsyncSync(dfd)
    fs.closeSync(dfd)
    tt.equal(fs.readFileSync(p('doc', 'notes.txt'), 'utf8'), 'version two, longer than the first\n', 'saved content')
    tt.same(fs.readdirSync(p('doc')), ['notes.txt'], 'no temp file left')
    r = await reef(m.dataDir, 'sync', '--json')
    tt.equal(r.code, 0, `reef sync: ${describe(r)}`)
    const newSeq = JSON.parse(r.stdout).seq as string
    tt.ok(BigInt(newSeq) > BigInt(oldSeq), 'sync made a new version')
    tt.equal(fs.readFileSync(p('.reef', 'versions', oldSeq, 'doc', 'notes.txt'), 'utf8'), 'version one\n', 'old version still holds the old content')
    tt.equal(fs.readFileSync(p('.reef', 'versions', newSeq, 'doc', 'notes.txt'), 'utf8'), 'version two, longer than the first\n', 'new version holds the new content')
  })

  t.test('gcc: compile and run a C program inside the mount', async tt => {
    fs.mkdirSync(p('cc'))
    fs.writeFileSync(p('cc', 'util.h'), 'int twice(int);\n')
    fs.writeFileSync(p('cc', 'util.c'), '#include "util.h"\nint twice(int x) { return 2 * x; }\n')
    fs.writeFileSync(p('cc', 'main.c'), [
      '#include <stdio.h>',
      '#include "util.h"',
      'int main(int argc, char **argv) { FILE *f = fopen("out.txt", "w"); if (!f) return 3;',
      '  fprintf(f, "%d\\n", twice(argc * 21)); fclose(f); printf("hello from reef %d\\n", twice(21)); return 0; }',
      ''
    ].join('\n'))
    let r = await run('gcc', ['-O1', '-Wall', '-c', 'util.c', '-o', 'util.o'], { cwd: p('cc') })
    tt.equal(r.code, 0, `gcc -c: ${describe(r)}`)
    r = await run('gcc', ['-Wall', 'main.c', 'util.o', '-o', 'hello'], { cwd: p('cc') })
    tt.equal(r.code, 0, `gcc link: ${describe(r)}`)
    tt.ok((fs.statSync(p('cc', 'hello')).mode & 0o111) !== 0, 'binary is executable')
    r = await run('./hello', [], { cwd: p('cc') })
    tt.equal(r.code, 0, `run: ${describe(r)}`)
    tt.equal(r.stdout, 'hello from reef 42\n', 'program output')
    tt.equal(fs.readFileSync(p('cc', 'out.txt'), 'utf8'), '42\n', 'program wrote a file in the mount')
  })

  t.test('no unexpected errors; clean unmount', async tt => {
    tt.same(m.unexpected(), [], 'no unexpected log lines')
    const st = await m.stop()
    tt.equal(st.code, 0, `exit code: ${m.stderr()}`)
    tt.match(m.stderr(), /folded into version \d+/, 'folded at unmount')
  })
}
