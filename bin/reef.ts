#!/usr/bin/env node
/**
 * The reef CLI: parses arguments, calls the node, prints. Nothing else lives here.
 * Data commands take --json; errors print one line naming the problem and exit non-zero.
 */
import { Command, Option } from 'commander'
import fs from 'node:fs'
import path from 'node:path'
import cliProgress from 'cli-progress'
import type { CID } from 'multiformats/cid'
import { isAguid, makeBlock, parseGuid, RAW } from '../src/block/index.js'
import { ReefError } from '../src/errors.js'
import { defaultDataDir, ReefNode } from '../src/node.js'
import { putPath } from '../src/transfer/put.js'
import { getTo } from '../src/transfer/get.js'
import { DirReader, type Entry } from '../src/object/dir.js'
import { decodeVersion } from '../src/object/version.js'

const program = new Command()
program
  .name('reef')
  .description('reef: a versioned peer-to-peer file system')
  .addOption(new Option('--data-dir <dir>', 'data directory').default(defaultDataDir(), '$XDG_DATA_HOME/reef'))
  .showHelpAfterError()

/** JSON.stringify calls CID#toJSON ({"/": ...}) before a replacer sees it: print GUIDs as plain strings. */
function jsonValue (_key: string, v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString()
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const keys = Object.keys(v)
    if (keys.length === 1 && keys[0] === '/' && typeof (v as Record<string, unknown>)['/'] === 'string') return (v as Record<string, unknown>)['/']
  }
  return v
}

const dataDir = (): string => path.resolve(program.opts().dataDir as string)

function print (json: boolean | undefined, value: unknown, text: () => string): void {
  if (json === true) process.stdout.write(JSON.stringify(value, jsonValue) + '\n')
  else process.stdout.write(text() + '\n')
}

async function withNode<T> (fn: (node: ReefNode) => Promise<T>): Promise<T> {
  const node = await ReefNode.open(dataDir())
  try {
    return await fn(node)
  } finally {
    await node.close()
  }
}

function progress (total: number): { tick: (n: number) => void, stop: () => void } {
  if (process.stderr.isTTY !== true || total < 32 * 1024 * 1024) return { tick: () => {}, stop: () => {} }
  const bar = new cliProgress.SingleBar({
    stream: process.stderr,
    format: '{bar} {percentage}% | {value}/{total} MiB | {speed} MiB/s',
    hideCursor: true
  }, cliProgress.Presets.shades_classic)
  const start = Date.now()
  let done = 0
  bar.start(Math.ceil(total / 2 ** 20), 0, { speed: '0' })
  return {
    tick: n => {
      done += n
      bar.update(Math.floor(done / 2 ** 20), { speed: (done / 2 ** 20 / Math.max(0.001, (Date.now() - start) / 1000)).toFixed(0) })
    },
    stop: () => bar.stop()
  }
}

function duSize (p: string): number {
  let total = 0
  const stack = [p]
  while (stack.length > 0) {
    const cur = stack.pop() as string
    const st = fs.lstatSync(cur)
    if (st.isDirectory()) for (const n of fs.readdirSync(cur)) stack.push(path.join(cur, n))
    else if (st.isFile()) total += st.size
  }
  return total
}

const fmtTime = (ms: number): string => new Date(ms).toISOString()

program.command('init')
  .description('create the identity key and data directory (idempotent)')
  .option('--name <name>', 'name of this file system (with the key, it gives the AGUID)', 'default')
  .option('--json', 'print JSON')
  .action(async (opts: { name: string, json?: boolean }) => {
    const created = ReefNode.init(dataDir(), opts.name)
    await withNode(async node => {
      let v = await node.currentVersion()
      if (v === undefined) {
        const rfs = await node.openFs()
        v = await rfs.fold('init', true)
        rfs.log?.close()
      }
      print(opts.json, { dataDir: node.dataDir, aguid: node.aguid, created, vguid: v?.vguid }, () =>
        `${created ? 'initialized' : 'already initialized'} ${node.dataDir}\nAGUID ${node.aguid.toString()}`)
    })
  })

program.command('put')
  .description('store a file or a whole tree; prints its GUID last')
  .argument('<path>', 'file, directory or symlink to store')
  .option('--json', 'print JSON')
  .action(async (target: string, opts: { json?: boolean }) => {
    await withNode(async node => {
      let total = 0
      if (process.stderr.isTTY === true) { try { total = duSize(target) } catch {} }
      const bar = progress(total)
      const res = await putPath(node.store, target, { onBytes: bar.tick })
      bar.stop()
      for (const s of res.skipped) process.stderr.write(`reef: skipped ${s} (not a file, directory or symlink)\n`)
      print(opts.json, { guid: res.cid, kind: res.entry.kind, files: res.files, dirs: res.dirs, symlinks: res.symlinks, bytes: res.bytes, skipped: res.skipped }, () =>
        `${res.entry.kind} ${res.files} files ${res.dirs} dirs ${res.symlinks} symlinks ${res.bytes} bytes\n${res.cid.toString()}`)
    })
  })

program.command('get')
  .description('restore a GUID (put result, VGUID, AGUID, tree or raw block) to a new path')
  .argument('<guid>', 'BGUID, VGUID or AGUID')
  .requiredOption('-o, --output <path>', 'where to restore (must not exist)')
  .option('--json', 'print JSON')
  .action(async (guid: string, opts: { output: string, json?: boolean }) => {
    let cid = parseGuid(guid)
    await withNode(async node => {
      if (isAguid(cid)) {
        const v = await node.currentVersion(cid)
        if (v === undefined) throw ReefError.notFound(`no head known for ${guid}`)
        cid = v.vguid
      }
      const res = await getTo(node.store, cid, opts.output)
      print(opts.json, { guid: cid, output: opts.output, ...res }, () =>
        `restored ${res.kind} to ${opts.output}: ${res.files} files ${res.dirs} dirs ${res.symlinks} symlinks ${res.bytes} bytes`)
    })
  })

const block = program.command('block').description('raw blocks')
block.command('put')
  .description('store stdin as one raw block; prints its BGUID')
  .option('--json', 'print JSON')
  .action(async (opts: { json?: boolean }) => {
    const chunks: Buffer[] = []
    for await (const c of process.stdin) chunks.push(c as Buffer)
    const b = makeBlock(new Uint8Array(Buffer.concat(chunks)), RAW)
    await withNode(async node => { await node.store.put(b) })
    print(opts.json, { bguid: b.cid, size: b.bytes.length }, () => b.cid.toString())
  })
block.command('get')
  .description('write one block to stdout, verified against its BGUID')
  .argument('<bguid>', 'block GUID')
  .action(async (guid: string) => {
    const cid = parseGuid(guid)
    const bytes = await withNode(async node => await node.store.get(cid))
    await new Promise<void>((resolve, reject) => process.stdout.write(bytes, err => err != null ? reject(err) : resolve()))
  })

program.command('history')
  .description('list the versions of a file system, newest first')
  .argument('[aguid]', 'AGUID (default: this data directory\'s)')
  .option('--json', 'print JSON')
  .action(async (aguid: string | undefined, opts: { json?: boolean }) => {
    await withNode(async node => {
      const a = aguid !== undefined ? parseGuid(aguid) : node.aguid
      if (!isAguid(a)) throw ReefError.badGuid(aguid ?? '', 'not an AGUID')
      const items = await node.history(a)
      if (items.length === 0 && (await node.heads.current(a)) === undefined) throw ReefError.notFound(`no head known for ${a.toString()}`)
      print(opts.json, { aguid: a, versions: items }, () =>
        items.map(i => `${String(i.seq).padStart(5)}  ${fmtTime(i.time)}  ${i.vguid.toString()}  ${i.message ?? ''}`.trimEnd()).join('\n'))
    })
  })

program.command('show')
  .description('list the tree of a version (or a directory)')
  .argument('<guid>', 'VGUID, SEQ of this file system, or a put GUID')
  .option('--json', 'print JSON')
  .action(async (guid: string, opts: { json?: boolean }) => {
    await withNode(async node => {
      let root: CID
      let vguid: CID | undefined
      if (/^\d+$/.test(guid)) {
        const item = (await node.history()).find(i => i.seq === BigInt(guid))
        if (item === undefined) throw ReefError.notFound(`no version with seq ${guid}`)
        vguid = item.vguid
      } else {
        vguid = parseGuid(guid)
      }
      const bytes = await node.store.get(vguid)
      try {
        root = decodeVersion(bytes).root
      } catch {
        root = vguid
      }
      const rows: Array<{ path: string, kind: string, mode: string, size: number, mtime: string, guid?: string, target?: string }> = []
      const walk = async (dir: CID, prefix: string): Promise<void> => {
        for await (const e of new DirReader(dir, node.store).entries()) {
          const p = prefix + Buffer.from(e.name).toString()
          rows.push(row(p, e))
          if (e.kind === 'dir' && e.cid !== undefined) await walk(e.cid, p + '/')
        }
      }
      await walk(root, '/')
      print(opts.json, { guid: vguid, entries: rows }, () =>
        rows.map(r => `${r.kind.padEnd(7)} ${r.mode} ${String(r.size).padStart(10)} ${r.mtime} ${r.path}${r.target !== undefined ? ' -> ' + r.target : ''}`).join('\n'))
    })
  })

function row (p: string, e: Entry): { path: string, kind: string, mode: string, size: number, mtime: string, guid?: string, target?: string } {
  const r: ReturnType<typeof row> = { path: p, kind: e.linked === true ? 'link' : e.kind, mode: e.mode.toString(8).padStart(4, '0'), size: e.size, mtime: fmtTime(Number(e.mtime / 1_000_000n)) }
  if (e.cid !== undefined) r.guid = e.cid.toString()
  if (e.target !== undefined) r.target = Buffer.from(e.target).toString()
  return r
}

export async function main (argv: string[]): Promise<void> {
  try {
    await program.parseAsync(argv)
  } catch (err) {
    if (err instanceof ReefError) {
      process.stderr.write(`reef: ${err.message} [${err.code}]\n`)
      process.exitCode = 1
      return
    }
    const e = err as NodeJS.ErrnoException
    process.stderr.write(`reef: ${e.code !== undefined ? e.code + ': ' : ''}${e.message}\n`)
    process.exitCode = 1
  }
}

await main(process.argv)
