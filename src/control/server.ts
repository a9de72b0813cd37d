import fs from 'node:fs'
import net from 'node:net'
import { ReefError } from '../errors.js'
import path from 'node:path'
import { MAX_MESSAGE, type Request, type Response, SOCKET_NAME } from './protocol.js'

/** `notify` sends an event to the client ahead of the response (dropped once it has gone). */
export type Handler = (args: unknown, notify: (event: unknown) => void) => Promise<unknown>

/** Serves control requests; a stale socket file left by a killed daemon is replaced. */
export class ControlServer {
  private server?: net.Server
  readonly path: string

  constructor (dataDir: string, private readonly handlers: Record<string, Handler>, socket = SOCKET_NAME) {
    this.path = path.join(dataDir, socket)
  }

  async listen (): Promise<void> {
    if (fs.existsSync(this.path)) {
      if (await isAlive(this.path)) throw new ReefError('BAD_INPUT', `another reef daemon already serves ${this.path}`)
      fs.rmSync(this.path, { force: true })
    }
    const server = net.createServer(sock => this.serve(sock))
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.path, () => { server.off('error', reject); resolve() })
    })
    fs.chmodSync(this.path, 0o600)
  }

  private serve (sock: net.Socket): void {
    let buf = ''
    sock.setEncoding('utf8')
    sock.on('error', () => {})
    sock.on('data', chunk => {
      buf += chunk
      if (buf.length > MAX_MESSAGE) { sock.destroy(); return }
      const nl = buf.indexOf('\n')
      if (nl < 0) return
      const line = buf.slice(0, nl)
      sock.pause()
      const notify = (event: unknown): void => {
        if (!sock.writableEnded && !sock.destroyed) sock.write(JSON.stringify({ event }) + '\n')
      }
      void this.dispatch(line, notify).then(res => sock.end(JSON.stringify(res) + '\n'))
    })
  }

  private async dispatch (line: string, notify: (event: unknown) => void): Promise<Response> {
    try {
      const req = JSON.parse(line) as Request
      const h = typeof req?.cmd === 'string' ? this.handlers[req.cmd] : undefined
      if (h === undefined) return { ok: false, code: 'BAD_INPUT', message: `unknown control command ${String(req?.cmd)}` }
      return { ok: true, result: await h(req.args, notify) }
    } catch (err) {
      const code = err instanceof ReefError ? err.code : 'IO'
      return { ok: false, code, message: (err as Error).message }
    }
  }

  async close (): Promise<void> {
    const s = this.server
    if (s === undefined) return
    this.server = undefined
    await new Promise<void>(resolve => s.close(() => resolve()))
    fs.rmSync(this.path, { force: true })
  }
}

function isAlive (p: string): Promise<boolean> {
  return new Promise(resolve => {
    const s = net.connect(p)
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}
