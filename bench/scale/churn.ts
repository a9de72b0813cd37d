/**
 * Node churn for the scale simulator: how long a node stays up (a session), how long it stays
 * down between sessions, which nodes never go down, and how often a node leaves for good.
 *
 * Source of the session lengths (the one published figure this model is built on):
 *   ProbeLab (D. Trautwein et al.), "RFM 2 | Uptime and Churn", the IPFS network-measurements
 *   report, github.com/probe-lab/network-measurements, results/rfm2-uptime-and-churn.md: Nebula
 *   crawls of the public IPFS DHT's server nodes, one week (2022-04-28 to 2022-05-05). "50% of
 *   all peers stay only online for ~2 hours or less" and "80% of all peers that join the network
 *   stay online for 8 hours or less". Node classes in the same week: offline 37.7% (never seen
 *   up), dangling 27.1% (up and down repeatedly), oneoff 21.3%, online 10.5% (never seen down),
 *   entered 2.2%, left 1.1%.
 * Shape of the distribution: Stutzbach and Rejaie, "Understanding Churn in Peer-to-Peer
 *   Networks", IMC 2006 (Gnutella, BitTorrent and Kad): session lengths are not exponential;
 *   Weibull and log-normal fit, with a heavy tail (their BitTorrent fits have Weibull shape
 *   0.34-0.59: most sessions last minutes, some days). Steiner, En-Najjary and Biersack ("Long
 *   Term Study of Peer Behavior in the KAD DHT", IEEE/ACM ToN 2009) also found Kad's session
 *   times Weibull distributed.
 *
 * What is taken, and what is assumed:
 *   - Sessions: a Weibull through RFM 2's two quantiles (F(2 h) = 0.5, F(8 h) = 0.8), fitted
 *     below (weibullFromQuantiles): shape 0.61, scale 3.66 h, mean 5.4 h. TAKEN (fitted).
 *   - Stable nodes: 17% never go down: RFM 2's "online" class (10.5%) among the peers seen up
 *     at all that week (100% - 37.7% offline = 62.3%). TAKEN (derived).
 *   - Downtimes: the report gives no downtime figure. ASSUMED: a Weibull of the same shape (the
 *     IMC 2006 paper found downtimes heavy-tailed too) with the same mean as a session, so a
 *     churning node is up half the time. Overall mean availability: 0.17 + 0.83 x 0.5 = 0.585.
 *   - Permanent departures (the node never returns; its disk is gone), replaced by a fresh empty
 *     node so N stays put: ASSUMED 1% of nodes per day (6.8% a week), between RFM 2's "left"
 *     (1.8% of peers seen up left during the week and did not return) and its "oneoff" class
 *     (34%, mostly new peers seen for a single session, many of which return in a later week).
 *   - Sessions are independent of each other and of the node (no diurnal pattern, no
 *     correlation between consecutive sessions: IMC 2006 found some in file-sharing systems).
 */

/** Seconds in an hour and a day. */
export const HOUR = 3600
export const DAY = 24 * HOUR

export interface Weibull { shape: number, scale: number }

/** The Weibull (times in seconds) whose CDF passes through (t1, p1) and (t2, p2). */
export function weibullFromQuantiles (t1: number, p1: number, t2: number, p2: number): Weibull {
  // F(t) = 1 - exp(-(t/scale)^shape)  =>  ln(-ln(1 - p)) = shape ln t - shape ln scale
  const y1 = Math.log(-Math.log(1 - p1))
  const y2 = Math.log(-Math.log(1 - p2))
  const shape = (y2 - y1) / (Math.log(t2) - Math.log(t1))
  const scale = t1 / Math.exp(y1 / shape)
  return { shape, scale }
}

export function sampleWeibull (w: Weibull, rand: () => number): number {
  return w.scale * Math.pow(-Math.log(1 - rand()), 1 / w.shape)
}

export function weibullSurvival (w: Weibull, t: number): number {
  return Math.exp(-Math.pow(t / w.scale, w.shape))
}

/** Lanczos approximation of the gamma function (15 significant digits), for Weibull means. */
export function gamma (z: number): number {
  const g = 7
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7]
  if (z < 0.5) return Math.PI / (Math.sin(Math.PI * z) * gamma(1 - z))
  z -= 1
  let x = c[0]
  for (let i = 1; i < g + 2; i++) x += c[i] / (z + i)
  const t = z + g + 0.5
  return Math.sqrt(2 * Math.PI) * Math.pow(t, z + 0.5) * Math.exp(-t) * x
}

export function weibullMean (w: Weibull): number { return w.scale * gamma(1 + 1 / w.shape) }

export interface ChurnModel {
  name: string
  /** Where the numbers come from (printed with the results). */
  source: string
  /** Fraction of nodes that never go down (they may still leave for good). */
  stableFraction: number
  /** Session length (up), seconds. */
  session: Weibull
  /** Downtime between sessions, seconds. */
  downtime: Weibull
  /** Permanent departures per node per day (Poisson). */
  departPerDay: number
}

/** The session Weibull fitted to RFM 2: 50% of sessions end within 2 h, 80% within 8 h. */
export const IPFS_SESSION = weibullFromQuantiles(2 * HOUR, 0.5, 8 * HOUR, 0.8)

/** Mean downtime = mean session: a churning node is up half the time (an assumption, see above). */
export function downtimeFor (session: Weibull, churnerAvailability: number): Weibull {
  return { shape: session.shape, scale: session.scale * (1 - churnerAvailability) / churnerAvailability }
}

export function ipfsChurn (opts: { departPerDay?: number, stableFraction?: number, churnerAvailability?: number } = {}): ChurnModel {
  const a = opts.churnerAvailability ?? 0.5
  return {
    name: 'ipfs-rfm2',
    source: 'sessions: Weibull through IPFS DHT-server session quantiles (50% <= 2 h, 80% <= 8 h; ProbeLab RFM 2, ' +
      'probe-lab/network-measurements, week 2022-04-28..05-05), shape per Stutzbach & Rejaie IMC 2006; stable nodes: ' +
      'RFM 2 "online" class among peers seen up (10.5/62.3); downtimes: same shape, mean set so churners are up ' +
      `${Math.round(a * 100)}% (assumed); permanent departures ${((opts.departPerDay ?? 0.01) * 100).toFixed(1)}%/day (assumed)`,
    stableFraction: opts.stableFraction ?? 10.5 / 62.3,
    session: IPFS_SESSION,
    downtime: downtimeFor(IPFS_SESSION, a),
    departPerDay: opts.departPerDay ?? 0.01
  }
}

/** Long-run fraction of time a node is up (ignoring permanent departures). */
export function availability (m: ChurnModel): number {
  const s = weibullMean(m.session)
  const d = weibullMean(m.downtime)
  return m.stableFraction + (1 - m.stableFraction) * s / (s + d)
}

/**
 * Probability that a node seen up at a random moment goes down within `t` seconds: for a
 * churning node, the residual of a stationary renewal process, (1/E[S]) * integral_0^t of the
 * session survival; stable nodes never go down. Weighted by each class's share of the up nodes.
 */
export function downWithin (m: ChurnModel, t: number): number {
  const s = weibullMean(m.session)
  const steps = 2000
  let integral = 0
  for (let i = 0; i < steps; i++) {
    const u = (i + 0.5) * t / steps
    integral += weibullSurvival(m.session, u) * t / steps
  }
  const churnerUp = (1 - m.stableFraction) * s / (s + weibullMean(m.downtime))
  const churnerShare = churnerUp / (churnerUp + m.stableFraction)
  return churnerShare * integral / s
}

/**
 * A node's state at time 0 in a stationary process: up or down, and how long until it changes.
 * Runs the node's alternating renewal process from `warmup` seconds before 0 (the heavy tail
 * makes a fresh start at 0 too optimistic: long sessions are under-represented at first).
 */
export function initialState (m: ChurnModel, rand: () => number, warmup = 7 * DAY): { up: boolean, next: number } {
  let up = rand() < 0.5
  let t = -warmup * rand() - warmup
  for (;;) {
    const d = up ? sampleWeibull(m.session, rand) : sampleWeibull(m.downtime, rand)
    if (t + d > 0) return { up, next: t + d }
    t += d
    up = !up
  }
}

export function describeChurn (m: ChurnModel): string {
  const h = (x: number): string => `${(x / HOUR).toFixed(2)} h`
  return `${m.name}: stable ${(m.stableFraction * 100).toFixed(1)}%; sessions Weibull(shape ${m.session.shape.toFixed(3)}, scale ${h(m.session.scale)}, ` +
    `mean ${h(weibullMean(m.session))}); downtimes Weibull(shape ${m.downtime.shape.toFixed(3)}, scale ${h(m.downtime.scale)}, mean ${h(weibullMean(m.downtime))}); ` +
    `permanent departures ${(m.departPerDay * 100).toFixed(2)}%/day; mean availability ${availability(m).toFixed(3)}`
}
