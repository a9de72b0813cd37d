/**
 * `reef id` and `reef view ...`: this node's key, and shared file systems (views) with their
 * owner-signed writer lists and per-writer heads. The commands run where program.ts runs them
 * (in the daemon of the data directory when one serves it, so a networked node publishes and
 * fetches; otherwise on the local store alone).
 */
import type { Command } from 'commander'
import type { CID } from 'multiformats/cid'
import { decodeRecord } from '../src/log/record.js'
import type { ReefNode } from '../src/node.js'
import { decodeVersion } from '../src/object/version.js'
import { ReefError } from '../src/errors.js'
import { keyHex, parseKey, parseViewId } from '../src/view/ids.js'
import type { ViewState, WriterPosition } from '../src/view/views.js'

export interface ViewCliHelpers {
  withNode: <T>(fn: (node: ReefNode) => Promise<T>) => Promise<T>
  print: (json: boolean | undefined, value: unknown, text: () => string) => void
}

const dec = new TextDecoder()
const fmtTime = (ms: number | bigint): string => new Date(Number(ms)).toISOString()

/** What `reef view show --json` prints (and, with `published`, add/remove/create). */
function describe (s: ViewState): Record<string, unknown> {
  const l = s.list
  return {
    view: l.view.toString(),
    name: dec.decode(l.name),
    owner: keyHex(l.owner),
    seq: l.seq.toString(),
    list: s.listCid.toString(),
    time: fmtTime(l.time),
    writers: l.writers.map(w => ({ key: keyHex(w.key), added: w.added.toString() })),
    removed: l.removed.map(r => ({
      key: keyHex(r.key),
      added: r.added.toString(),
      removed: r.removed.toString(),
      cut: { seq: r.cut.seq.toString(), n: r.cut.n.toString(), vguid: r.cut.vguid?.toString(), record: r.cut.record?.toString() }
    }))
  }
}

function text (s: ViewState): string {
  const l = s.list
  const lines = [
    `view    ${l.view.toString()}`,
    `name    ${dec.decode(l.name)}`,
    `owner   ${keyHex(l.owner)}`,
    `seq     ${l.seq} (${fmtTime(l.time)})`,
    'writers:'
  ]
  for (const w of l.writers) lines.push(`  ${keyHex(w.key)}  added at ${w.added}${Buffer.compare(w.key, l.owner) === 0 ? ' (owner)' : ''}`)
  if (l.removed.length > 0) {
    lines.push('removed:')
    for (const r of l.removed) lines.push(`  ${keyHex(r.key)}  added at ${r.added}, removed at ${r.removed}, log kept up to record ${r.cut.n}`)
  }
  return lines.join('\n')
}

function position (p: WriterPosition): Record<string, unknown> {
  if (p.state === 'removed') {
    return { key: keyHex(p.key), state: p.state, added: p.added.toString(), removed: p.removed.toString(), vguid: p.cut.vguid?.toString(), record: p.cut.record?.toString(), n: p.cut.n.toString(), seq: p.cut.seq.toString() }
  }
  const h = p.head
  return {
    key: keyHex(p.key),
    state: p.state,
    added: p.added.toString(),
    ...(h !== undefined ? { seq: h.seq.toString(), vguid: h.vguid.toString(), record: h.record?.toString(), n: h.n.toString(), listSeq: h.listSeq.toString(), time: fmtTime(h.time) } : {}),
    ...(p.refused !== undefined ? { refused: p.refused } : {})
  }
}

/**
 * Where this node's log in a view is: its tree of the view's current version (what a view mount
 * folds and publishes by itself), newest folded record and its counter. A writer that never
 * mounted the view gets its first version here, an empty tree, as a view mount would start.
 */
async function ownPosition (node: ReefNode, view: CID): Promise<{ vguid: CID, record?: CID, n: bigint }> {
  let vguid = (await node.heads.current(node.fsAguid(view)))?.vguid
  if (vguid === undefined) {
    const rfs = await node.openFs({ view })
    try {
      vguid = (await rfs.fold('first version of this writer in the view', true))?.vguid
    } finally {
      rfs.log?.close()
    }
    if (vguid === undefined) throw new ReefError('BAD_INPUT', `no version of this node's tree in view ${view.toString()} could be made`)
  }
  const v = decodeVersion(await node.store.get(vguid))
  if (v.log === undefined) return { vguid, n: 0n }
  const mine = v.vv?.[keyHex(node.keys.publicKey)]
  const n = mine !== undefined ? BigInt(mine) : BigInt(decodeRecord(await node.store.get(v.log)).n)
  return { vguid, record: v.log, n }
}

const published = (acks: number | undefined): string => acks === undefined ? 'stored here (no network)' : `published to ${acks} peer${acks === 1 ? '' : 's'}`

export function addViewCommands (program: Command, { withNode, print }: ViewCliHelpers): void {
  program.command('id')
    .description('print this node\'s public key (the form `reef view add` takes)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      await withNode(async node => {
        const key = keyHex(node.keys.publicKey)
        print(opts.json, { key, aguid: node.aguid.toString(), peerId: node.dht?.peerId }, () => key)
      })
    })

  const view = program.command('view').description('shared file systems: a name, an owner, a signed list of writers')

  view.command('create')
    .description('create a view owned by this node\'s key, with this node as its only writer; prints its id last')
    .argument('<name>', 'name of the view (with the owner\'s key, it gives the view id)')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      await withNode(async node => {
        const r = await node.views().create(name)
        print(opts.json, { ...describe(r), created: r.created, acks: r.acks }, () =>
          `${r.created ? 'created' : 'already exists:'} view ${JSON.stringify(name)}, ${published(r.acks)}\n${r.list.view.toString()}`)
      })
    })

  view.command('add')
    .description('add a writer to a view (its owner only): a new signed version of the list')
    .argument('<view>', 'view id')
    .argument('<key>', 'the writer\'s key, as `reef id` prints it')
    .option('--json', 'print JSON')
    .action(async (v: string, key: string, opts: { json?: boolean }) => {
      const id = parseViewId(v)
      const k = parseKey(key)
      await withNode(async node => {
        const r = await node.views().add(id, k)
        print(opts.json, { ...describe(r), acks: r.acks }, () => `added ${keyHex(k)}: list ${r.list.seq}, ${r.list.writers.length} writers, ${published(r.acks)}`)
      })
    })

  view.command('remove')
    .description('remove a writer (its owner only); its log is kept up to its newest head found now, nothing after')
    .argument('<view>', 'view id')
    .argument('<key>', 'the writer\'s key')
    .option('--json', 'print JSON')
    .action(async (v: string, key: string, opts: { json?: boolean }) => {
      const id = parseViewId(v)
      const k = parseKey(key)
      await withNode(async node => {
        const r = await node.views().remove(id, k)
        print(opts.json, { ...describe(r), acks: r.acks }, () => `removed ${keyHex(k)}: list ${r.list.seq}, ${r.list.writers.length} writers, ${published(r.acks)}`)
      })
    })

  view.command('show')
    .description('show the newest version of a view\'s writer list known here or on the network')
    .argument('<view>', 'view id')
    .option('--json', 'print JSON')
    .action(async (v: string, opts: { json?: boolean }) => {
      const id = parseViewId(v)
      await withNode(async node => {
        const r = await node.views().resolve(id)
        print(opts.json, describe(r), () => text(r))
      })
    })

  view.command('publish')
    .description('sign and publish this node\'s head in a view: its tree of the view as last folded (a view mount publishes by itself)')
    .argument('<view>', 'view id')
    .option('--json', 'print JSON')
    .action(async (v: string, opts: { json?: boolean }) => {
      const id = parseViewId(v)
      await withNode(async node => {
        const r = await node.views().publishHead(id, async () => await ownPosition(node, id))
        const h = r.head
        print(opts.json, { view: id.toString(), key: keyHex(h.writer), seq: h.seq.toString(), vguid: h.vguid.toString(), record: h.record?.toString(), n: h.n.toString(), listSeq: h.listSeq.toString(), acks: r.acks }, () =>
          `head ${h.seq} of ${keyHex(h.writer)}: version ${h.vguid.toString()}, record ${h.n}, under list ${h.listSeq}; ${published(r.acks)}`)
      })
    })

  view.command('heads')
    .description('every writer\'s position in a view: current writers\' heads (checked against the list), removed writers\' cuts')
    .argument('<view>', 'view id')
    .option('--json', 'print JSON')
    .action(async (v: string, opts: { json?: boolean }) => {
      const id = parseViewId(v)
      await withNode(async node => {
        const r = await node.views().positions(id)
        const rows = r.writers.map(position)
        print(opts.json, { view: id.toString(), seq: r.state.list.seq.toString(), writers: rows }, () => r.writers.map(p => {
          const k = keyHex(p.key)
          if (p.state === 'removed') return `${k}  removed at ${p.removed}; kept up to record ${p.cut.n}${p.cut.vguid !== undefined ? ` (${p.cut.vguid.toString()})` : ''}`
          if (p.head !== undefined) return `${k}  head ${p.head.seq}: record ${p.head.n}, ${p.head.vguid.toString()}`
          return `${k}  ${p.refused !== undefined ? `refused: ${p.refused.message} [${p.refused.code}]` : 'no head yet'}`
        }).join('\n'))
      })
    })
}
