/**
 * Where each command runs (kubo keeps such a table for its daemon). A `daemon` command, while a
 * daemon (`reef mount`, `reef checkout`'s twin `reef node`) serves the data directory, is sent to
 * that daemon and runs there, against its open store, log and network; without one it runs in
 * this process. A `process` command always runs here: it starts a daemon, stops one, or asks one
 * over the control socket itself. A new command does not pass the test suite until it is listed.
 */
export const RUNS_IN: Readonly<Record<string, 'daemon' | 'process'>> = {
  init: 'process',
  mount: 'process',
  checkout: 'process',
  node: 'process',
  unmount: 'process',
  status: 'process',
  sync: 'process',
  put: 'daemon',
  get: 'daemon',
  show: 'daemon',
  history: 'daemon',
  block: 'daemon',
  fsck: 'daemon',
  conflicts: 'daemon',
  id: 'daemon',
  view: 'daemon'
}

/** The top-level command of a command line (after the global --data-dir option), if any. */
export function commandOf (args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]
    if (a === '--data-dir') { i++; continue }
    if (a.startsWith('-')) continue
    return a
  }
  return undefined
}
