/**
 * The control socket of a running daemon (`reef mount` / `reef node`): newline-delimited JSON
 * over a unix socket in the data directory, one request and one response per connection.
 *   request  { cmd: string, args?: unknown }
 *   response { ok: true, result } | { ok: false, code, message }
 * Only the owner of the data directory can reach it (the directory is 0700, the socket 0600).
 */
export const SOCKET_NAME = 'control.sock'
export const MAX_MESSAGE = 256 * 1024 * 1024

export interface Request { cmd: string, args?: unknown }
export type Response = { ok: true, result: unknown } | { ok: false, code: string, message: string }
