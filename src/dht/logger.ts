/**
 * libp2p's logging, silent unless DEBUG asks for it. libp2p's default logger builds a `debug`
 * logger for every component, connection and stream, and each one asks whether stderr is a
 * TTY: in a 64-node network reading blocks that was 3% of all CPU, for logs nobody enabled.
 * With DEBUG set (e.g. DEBUG=libp2p:*), libp2p's own logger is used, as before.
 */
import type { ComponentLogger, Logger } from '@libp2p/interface'

function silent (): Logger {
  const log = (() => {}) as unknown as Logger
  log.error = () => {}
  log.trace = () => {}
  log.enabled = false
  log.newScope = () => log
  return log
}

/** The `logger` option of createLibp2p: none (libp2p's default) when DEBUG is set. */
export function quietLogger (): { logger?: ComponentLogger } {
  if ((process.env.DEBUG ?? '') !== '') return {}
  const log = silent()
  return { logger: { forComponent: () => log } }
}
