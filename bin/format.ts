/**
 * Plain-text output of nested values (reef status): one `key: value` line per scalar, nested
 * objects as indented blocks, arrays of scalars on one line, arrays of objects as `-` items.
 * `--json` gives the same value exactly; this is for people.
 */
const scalar = (v: unknown): boolean => v === null || typeof v !== 'object'

function lines (value: Record<string, unknown>, indent: string, out: string[]): void {
  for (const [k, v] of Object.entries(value)) {
    if (v === undefined) continue
    if (scalar(v)) {
      out.push(`${indent}${k}: ${String(v)}`)
    } else if (Array.isArray(v)) {
      if (v.every(scalar)) {
        out.push(`${indent}${k}: ${v.length === 0 ? '(none)' : v.map(String).join(', ')}`)
        continue
      }
      out.push(`${indent}${k}:`)
      for (const item of v) {
        if (scalar(item)) out.push(`${indent}  - ${String(item)}`)
        else {
          const sub: string[] = []
          lines(item as Record<string, unknown>, `${indent}    `, sub)
          out.push(...sub.map((l, i) => i === 0 ? `${indent}  - ${l.trimStart()}` : l))
        }
      }
    } else {
      out.push(`${indent}${k}:`)
      lines(v as Record<string, unknown>, `${indent}  `, out)
    }
  }
}

export function formatFields (value: Record<string, unknown>): string {
  const out: string[] = []
  lines(value, '', out)
  return out.join('\n')
}
