/**
 * The fs core without a mount: a fresh data directory opened as a node and its file system,
 * removed when the test ends, and a crash simulated by reopening without a fold.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ReefNode } from '../../src/node.js'
import type { ReefFS } from '../../src/fs/fs.js'
import { isReefError } from '../../src/errors.js'

export interface CoreFs {
  dir: string
  readonly node: ReefNode
  readonly fs: ReefFS
  /** A crash: the in-memory state goes without a fold; the log is replayed on open. */
  reopen: () => Promise<ReefFS>
}

export async function openCoreFs (t: Tap.Test, prefix = 'reef-fs-'): Promise<CoreFs> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  ReefNode.init(dir)
  const node = await ReefNode.open(dir, { noSync: true })
  const state = { node, fs: await node.openFs() }
  t.teardown(async () => {
    state.fs.log?.close()
    await state.node.close()
    fs.rmSync(dir, { recursive: true, force: true })
  })
  return {
    dir,
    get node () { return state.node },
    get fs () { return state.fs },
    reopen: async () => {
      state.fs.log?.close()
      await state.node.close()
      state.node = await ReefNode.open(dir, { noSync: true })
      state.fs = await state.node.openFs()
      return state.fs
    }
  }
}

/** The ReefError code a promise rejects with (any other failure as text), or undefined if it resolves. */
export async function code (p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p
    return undefined
  } catch (err) {
    return isReefError(err) ? err.code : String(err)
  }
}
