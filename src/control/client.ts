import fs from 'node:fs'
import net from 'node:net'
import { ReefError, type ReefErrorCode } from '../errors.js'
import { type Event, MAX_MESSAGE, type Response, SOCKET_NAME } from './protocol.js'
import path from 'node:path'

/** True if a daemon is serving this data directory. */
export async function daemonRunning (dataDir: string): Promise<boolean> {
  if (!fs.existsSync(path.join(dataDir, SOCKET_NAME))) return false
  try {
    await request(dataDir, 'ping', undefined, 2000)
    return true
  } catch {
    return false
  }
}

/**
 * One request to the daemon; rejects with the daemon's ReefError code on failure. Events the
 * daemon sends before its response go to `onEvent` as they arrive.
 */
export async function request (dataDir: string, cmd: string, args?: unknown, timeoutMs = 10 * 60 * 1000, socket = SOCKET_NAME,
  onEvent?: (event: unknown) => void): Promise<unknown> {
  const p = path.join(dataDir, socket)
  const line = await new Promise<string>((resolve, reject) => {
    const sock = net.connect(p)
    let buf = ''
    const timer = setTimeout(() => { sock.destroy(); reject(new ReefError('IO', `reef daemon did not answer ${cmd} within ${timeoutMs} ms`)) }, timeoutMs)
    sock.setEncoding('utf8')
    sock.on('connect', () => sock.write(JSON.stringify({ cmd, args }) + '\n'))
    sock.on('data', d => {
      buf += d
      // Every complete line but the response is an event: hand it over and drop it.
      for (let nl = buf.indexOf('\n'); nl >= 0 && buf.startsWith('{"event":'); nl = buf.indexOf('\n')) {
        const ev = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        let event: unknown
        try { event = (JSON.parse(ev) as Event).event } catch { continue }
        onEvent?.(event)
      }
      if (buf.length > MAX_MESSAGE) sock.destroy(new Error('control response too large'))
    })
    sock.on('end', () => { clearTimeout(timer); resolve(buf) })
    sock.on('error', err => { clearTimeout(timer); reject(new ReefError('IO', `cannot reach the reef daemon at ${p}: ${err.message}`)) })
  })
  let res: Response
  try {
    res = JSON.parse(line) as Response
  } catch {
    throw new ReefError('IO', 'malformed answer from the reef daemon')
  }
  if (!res.ok) throw new ReefError(res.code as ReefErrorCode, res.message)
  return res.result
}
