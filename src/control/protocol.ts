/**
 * The control socket of a running daemon (`reef mount` / `reef node`): newline-delimited JSON
 * over a unix socket in the data directory, one request and one response per connection, with
 * any number of events (a forwarded put's progress) before the response.
 *   request  { cmd: string, args?: unknown }
 *   event    { event: unknown }
 *   response { ok: true, result } | { ok: false, code, message }
 * Only the owner of the data directory can reach it (the directory is 0700, the socket 0600).
 */
export const SOCKET_NAME = 'control.sock'

export interface Request { cmd: string, args?: unknown }
export type Response = { ok: true, result: unknown } | { ok: false, code: string, message: string }
export interface Event { event: unknown }
/** Largest single line (request, event or response) either side accepts. */
export const MAX_MESSAGE = 256 * 1024 * 1024
