/** Value helpers shared by tests that compare decoded structures. */

/** A comparable form: byte arrays as hex, CIDs as strings, bigints kept as bigints. */
export function norm (v: unknown): unknown {
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v).toString('hex') }
  if (v !== null && typeof v === 'object') {
    const c = (v as { asCID?: unknown }).asCID
    if (c !== undefined && c === v) return { cid: String(v) }
    if (Array.isArray(v)) return v.map(norm)
    return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined).map(([k, x]) => [k, norm(x)]))
  }
  return v
}
