/**
 * Device numbers as Linux encodes them in st_rdev (glibc's makedev): the minor's low 8 bits,
 * then 12 bits of major, then the minor's upper bits, then the major's upper bits. Entries keep
 * the encoded number; people read major,minor.
 */
export function devMajor (rdev: number): number {
  const d = BigInt(rdev)
  return Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn))
}

export function devMinor (rdev: number): number {
  const d = BigInt(rdev)
  return Number((d & 0xffn) | ((d >> 12n) & 0xffffff00n))
}

export function makeDev (major: number, minor: number): number {
  const ma = BigInt(major)
  const mi = BigInt(minor)
  return Number(((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n))
}
