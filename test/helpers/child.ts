/**
 * A child node process for a test, outside tap's hooks: none of tap's NODE_OPTIONS (its
 * process-info hook) or `_TAPJS_*` variables, its output collected, SIGKILLed (and so failing)
 * after `limitMs`.
 */
import { spawn } from 'node:child_process'

export interface ChildRun { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }

/** `node ...args` with this environment less tap's, plus `extraEnv`. */
export async function runChild (args: string[], limitMs: number, extraEnv: Record<string, string> = {}): Promise<ChildRun> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_OPTIONS' && !k.startsWith('_TAPJS_')))
  const c = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, ...extraEnv } })
  let stdout = ''
  let stderr = ''
  c.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  c.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => c.kill('SIGKILL'), limitMs)
  return await new Promise((resolve, reject) => {
    c.on('error', err => { clearTimeout(timer); reject(err) })
    c.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }) })
  })
}
