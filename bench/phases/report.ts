/**
 * What every benchmark prints: the machine and the command, fixed-width tables, medians, and a
 * hand-written SVG bar chart (log scale: phases span milliseconds to tens of seconds).
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export interface Machine {
  cores: number
  cpu: string
  memoryGiB: number
  kernel: string
  node: string
  /** File system type and device under the benchmark's base directory. */
  baseDir: string
  baseFs: string
  /** 1-minute load average when the benchmark started: other work on the machine skews times. */
  loadAvg: number
}

/** The mount entry that holds `p` (longest matching mount point). */
function fsOf (p: string): string {
  let best = { where: '', what: 'unknown' }
  for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [dev, where, type] = line.split(' ')
    if (where === undefined || type === undefined) continue
    if ((p === where || p.startsWith(where === '/' ? '/' : where + '/')) && where.length >= best.where.length) best = { where, what: `${type} on ${dev} (${where})` }
  }
  return best.what
}

export function machine (baseDir: string): Machine {
  return {
    cores: os.cpus().length,
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30 * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    baseDir,
    baseFs: fsOf(fs.realpathSync(baseDir)),
    loadAvg: Math.round(os.loadavg()[0] * 100) / 100
  }
}

export function printMachine (m: Machine, command: string, out: (s: string) => void): void {
  out(`machine: ${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB, ${m.kernel}, node ${m.node}, load average ${m.loadAvg} at start`)
  out(`work dir: ${m.baseDir} (${m.baseFs})`)
  out(`command: ${command}`)
}

/** The command line as typed, with the benchmark's environment variables in front. */
export function commandLine (): string {
  const env = Object.entries(process.env).filter(([k]) => k.startsWith('REEF_BENCH') || k.startsWith('REEF_MICRO')).map(([k, v]) => `${k}=${v ?? ''}`)
  const script = path.relative(process.cwd(), process.argv[1] ?? '') || process.argv[1]
  return [...env, 'node', script, ...process.argv.slice(2)].join(' ')
}

export function median (xs: number[]): number {
  const s = xs.filter(x => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** Fixed-width table: first column left-aligned, the rest right-aligned. */
export function table (header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map(r => (r[i] ?? '').length)))
  const line = (r: string[]): string => r.map((c, i) => i === 0 ? c.padEnd(w[i]) : c.padStart(w[i])).join('  ').trimEnd()
  return [line(header), line(w.map(n => '-'.repeat(n))), ...rows.map(line)].join('\n')
}

export const secs = (x: number | undefined): string => x === undefined || !Number.isFinite(x) ? '-' : x < 10 ? x.toFixed(3) : x.toFixed(2)
export const ratio = (x: number | undefined): string => x === undefined || !Number.isFinite(x) ? '-' : `${x < 10 ? x.toFixed(2) : x.toFixed(1)}x`

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2']

/**
 * Grouped bars on a log axis: one group per category, one bar per series, each labelled with
 * its value. `unit` names the axis ("seconds"); missing values leave a gap.
 */
export function barChartSvg (title: string, subtitle: string, categories: string[], series: Array<{ name: string, values: Array<number | undefined> }>, unit: string): string {
  const W = 960
  const H = 460
  const left = 70
  const right = 20
  const top = 70
  const bottom = 70
  const all = series.flatMap(s => s.values).filter((v): v is number => v !== undefined && v > 0 && Number.isFinite(v))
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...all, 1))))
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...all, lo * 10))))
  const y = (v: number): number => top + (H - top - bottom) * (1 - (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)))
  const groupW = (W - left - right) / categories.length
  const barW = Math.min(40, (groupW - 16) / series.length)
  const parts: string[] = []
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`)
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`)
  parts.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">${esc(title)}</text>`)
  parts.push(`<text x="${W / 2}" y="44" text-anchor="middle" fill="#555">${esc(subtitle)}</text>`)
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    const yy = y(d).toFixed(1)
    parts.push(`<line x1="${left}" x2="${W - right}" y1="${yy}" y2="${yy}" stroke="#ddd"/>`)
    parts.push(`<text x="${left - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle" fill="#555">${d >= 1 ? d.toFixed(0) : d.toPrecision(1)}</text>`)
  }
  parts.push(`<text transform="translate(18 ${(top + H - bottom) / 2}) rotate(-90)" text-anchor="middle" fill="#555">${esc(unit)} (log scale)</text>`)
  categories.forEach((c, i) => {
    const gx = left + i * groupW + (groupW - barW * series.length) / 2
    series.forEach((s, j) => {
      const v = s.values[i]
      if (v === undefined || !(v > 0) || !Number.isFinite(v)) return
      const x = gx + j * barW
      const yy = y(Math.max(v, lo))
      parts.push(`<rect x="${x.toFixed(1)}" y="${yy.toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(H - bottom - yy).toFixed(1)}" fill="${COLORS[j % COLORS.length]}"><title>${esc(`${s.name} ${c}: ${v}`)}</title></rect>`)
      parts.push(`<text x="${(x + barW / 2 - 1).toFixed(1)}" y="${(yy - 4).toFixed(1)}" text-anchor="middle" font-size="10">${esc(v < 10 ? v.toPrecision(2) : v.toFixed(0))}</text>`)
    })
    parts.push(`<text x="${(left + i * groupW + groupW / 2).toFixed(1)}" y="${H - bottom + 18}" text-anchor="middle">${esc(c)}</text>`)
  })
  parts.push(`<line x1="${left}" x2="${W - right}" y1="${H - bottom}" y2="${H - bottom}" stroke="#333"/>`)
  series.forEach((s, j) => {
    const x = left + j * 220
    parts.push(`<rect x="${x}" y="${H - 28}" width="12" height="12" fill="${COLORS[j % COLORS.length]}"/>`)
    parts.push(`<text x="${x + 18}" y="${H - 18}">${esc(s.name)}</text>`)
  })
  parts.push('</svg>')
  return parts.join('\n') + '\n'
}

/** Writes `value` as JSON and `svg` next to it (same name, .svg); returns the SVG path. */
export function writeResults (jsonPath: string, value: unknown, svg: string): string {
  fs.mkdirSync(path.dirname(path.resolve(jsonPath)), { recursive: true })
  const svgPath = jsonPath.replace(/\.json$/i, '') + '.svg'
  fs.writeFileSync(jsonPath, JSON.stringify(value, null, 2) + '\n')
  fs.writeFileSync(svgPath, svg)
  return svgPath
}
