// The CallFS metrics checks against the simulator's real Prometheus endpoint: the endpoint
// itself (served, refused, 404, an HTML page, the main port's authenticated /metrics, hung),
// the 5xx share and the p95 between two real scrapes — with real requests answered 500 or
// slowed down during the window, or traffic recorded exactly as real requests would be.
import {request} from 'node:https'
import {createServer as createHttpServer} from 'node:http'
import {createServer} from 'node:net'

import {afterAll, beforeAll, describe, expect, it, onTestFinished} from 'vitest'

import {API_KEY, startCallfsWorld, type CallfsWorld} from '../../support/callfs-world.js'

let w: CallfsWorld
beforeAll(async () => {
  w = await startCallfsWorld({sim: {}})
})
afterAll(() => w?.stop())

/** A world of its own, for tests whose traffic would skew the counters of the others. */
async function fresh(): Promise<CallfsWorld> {
  const world = await startCallfsWorld({sim: {}})
  onTestFinished(() => world.stop())
  return world
}

function simOf(world: CallfsWorld) {
  const sim = world.sim
  if (!sim?.metricsUrl) throw new Error('this world has no CallFS metrics server')
  return {sim, metricsUrl: sim.metricsUrl}
}

/** A closed port on loopback: bound, then released. */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0))
    })
  })
}

/** One real request to the CallFS API (the traffic, not the thing under test). */
function call(world: CallfsWorld, method: string, path: string, body = ''): Promise<number> {
  const url = new URL(path, simOf(world).sim.url)
  return new Promise((resolve, reject) => {
    const req = request(url, {method, rejectUnauthorized: false, headers: {authorization: `Bearer ${API_KEY}`, 'content-length': Buffer.byteLength(body)}}, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/**
 * Run a check that scrapes twice with `traffic` between its two scrapes, whatever the load on
 * this machine: the check scrapes through a loopback gate in front of the real metrics server
 * that starts the traffic once the first scrape is answered, and holds the second scrape until
 * the traffic is done. The check gets the gate's URL.
 */
async function withTrafficInWindow<T>(world: CallfsWorld, check: (metricsUrl: string) => Promise<T>, traffic: () => Promise<unknown>): Promise<T> {
  const {metricsUrl} = simOf(world)
  let scrapes = 0
  let trafficDone: Promise<unknown> | null = null
  const gate = createHttpServer((req, res) => {
    const n = ++scrapes
    void (async () => {
      if (n > 1) await trafficDone?.catch(() => undefined)
      const upstream = await fetch(metricsUrl)
      const body = Buffer.from(await upstream.arrayBuffer())
      res.writeHead(upstream.status, {'content-type': upstream.headers.get('content-type') ?? 'text/plain'})
      res.end(body)
      if (n === 1) trafficDone = traffic()
    })().catch(() => res.destroy())
  })
  await new Promise<void>((resolve) => gate.listen(0, '127.0.0.1', resolve))
  const address = gate.address()
  const port = typeof address === 'object' && address ? address.port : 0
  try {
    const result = await check(`http://127.0.0.1:${port}/metrics`)
    expect(scrapes).toBe(2)
    await trafficDone // a traffic error fails the test
    return result
  } finally {
    await new Promise((resolve) => gate.close(resolve))
  }
}

/** Overrides for a check run through the gate: a short window (the gate makes room for the traffic). */
const gated = (metricsUrl: string) => ({metrics_url: metricsUrl, thresholds: {metrics_window: '200ms'}})
/** The held second scrape needs a probe time-out longer than the traffic. */
const SLOW_OK = {timeoutMs: 8000}

describe('callfs.metrics.endpoint', () => {
  it('is ok when the metrics server serves callfs_ metrics', async () => {
    const {metricsUrl} = simOf(w)
    const r = await w.check('callfs.metrics.endpoint')
    expect(r.status).toBe('ok')
    expect(r.evidence).toMatchObject({url: metricsUrl, status: 200, contentType: 'text/plain'})
    expect(r.evidence.callfsFamilies).toBeGreaterThanOrEqual(1)
    expect(r.summary).toBe(`${r.evidence.samples} samples, ${r.evidence.callfsFamilies} callfs_ metric families at ${metricsUrl}`)
  })

  it('warns when nothing listens there', async () => {
    const port = await closedPort()
    const url = `http://127.0.0.1:${port}/metrics`
    const r = await w.check('callfs.metrics.endpoint', {metrics_url: url})
    expect(r.status).toBe('warn')
    expect(r.evidence).toEqual({url, error: 'refused'})
    expect(r.summary).toMatch(new RegExp(`^GET ${url}: nothing listens on 127\\.0\\.0\\.1:${port} \\(connection refused\\)`))
    expect(r.remediation).toMatchObject({id: 'callfs.metrics.enable', automated: false})
    expect(r.remediation?.plan[0]).toBe('make the metrics server reachable from here')
    expect(r.remediation?.commands[0]).toBe(`curl -s ${url} | head`)
  })

  it('warns on a 404 (the metrics server answers only /metrics)', async () => {
    const url = simOf(w).metricsUrl.replace(/\/metrics$/, '/stats')
    const r = await w.check('callfs.metrics.endpoint', {metrics_url: url})
    expect(r.status).toBe('warn')
    expect(r.summary).toBe(`GET ${url} answered 404`)
    expect(r.evidence).toMatchObject({url, status: 404, samples: 0, body: '404 page not found\\n'})
    expect(r.remediation?.plan[0]).toBe(`${url} does not serve metrics`)
  })

  it('warns when /metrics itself is a 404', async () => {
    const {sim, metricsUrl} = simOf(w)
    sim.setMetricsFault('not-found')
    try {
      const r = await w.check('callfs.metrics.endpoint')
      expect(r.status).toBe('warn')
      expect(r.summary).toBe(`GET ${metricsUrl} answered 404`)
    } finally {
      sim.setMetricsFault('none')
    }
  })

  it('warns when a 200 page carries no callfs_ metrics (an HTML page in front of it)', async () => {
    const {sim, metricsUrl} = simOf(w)
    sim.setMetricsFault('html')
    try {
      const r = await w.check('callfs.metrics.endpoint')
      expect(r.status).toBe('warn')
      expect(r.summary).toBe(`GET ${metricsUrl} answered 200 but no callfs_ metrics (0 samples; text/html)`)
      expect(r.evidence).toMatchObject({status: 200, samples: 0})
      expect(String(r.evidence.body)).toMatch(/<html/i)
      expect(r.remediation?.plan[0]).toBe('this is not the CallFS metrics server')
    } finally {
      sim.setMetricsFault('none')
    }
  })

  it('warns when pointed at the main port\'s /metrics, which wants the API key (401)', async () => {
    const url = `${simOf(w).sim.url.replace('127.0.0.1', 'localhost')}/metrics`
    const r = await w.check('callfs.metrics.endpoint', {metrics_url: url})
    expect(r.status).toBe('warn')
    expect(r.summary).toBe(`GET ${url} needs credentials (401): that is the main port's /metrics`)
    expect(r.evidence).toMatchObject({url, status: 401})
    expect(r.remediation?.plan[0]).toBe('use the separate, unauthenticated metrics server')
  })

  it('warns within the probe time-out when the metrics server hangs', async () => {
    const {sim, metricsUrl} = simOf(w)
    sim.setMetricsFault('hang')
    try {
      const started = Date.now()
      const r = await w.check('callfs.metrics.endpoint', {}, {timeoutMs: 300})
      expect(Date.now() - started).toBeLessThan(1500)
      expect(r.status).toBe('warn')
      expect(r.evidence).toEqual({url: metricsUrl, error: 'timeout'})
    } finally {
      sim.setMetricsFault('none')
    }
  })
})

describe('callfs.errors.rate', () => {
  it('is ok on a CallFS that has served no request yet (client_golang leaves the counter out)', async () => {
    const world = await fresh()
    const r = await world.check('callfs.errors.rate')
    expect(r.status).toBe('ok')
    expect(r.summary).toBe('no requests served yet')
    expect(r.evidence).toMatchObject({requests: 0, errors: 0})
  })

  it('is ok when few requests fail during the window', async () => {
    const world = await fresh()
    const {sim} = simOf(world)
    sim.setFilesFault({status: 500, everyNth: 20})
    const r = await withTrafficInWindow(
      world,
      (url) => world.check('callfs.errors.rate', gated(url), SLOW_OK),
      async () => {
        for (let i = 0; i < 20; i++) await call(world, 'PUT', `/v1/files/low/${i}.txt`, 'x')
      },
    )
    expect(r.status).toBe('ok')
    expect(r.evidence).toMatchObject({requests: 20, errors: 1, errorPercent: 5, threshold: '10%'})
    expect(r.summary).toMatch(/^5% of requests answered 5xx over the last [\d.]+m?s \(1 of 20\)$/)
  })

  it('fails when real requests answer 500 during the window, though the history is clean', async () => {
    const world = await fresh()
    const {sim} = simOf(world)
    sim.recordTraffic({count: 1000, status: 200, seconds: 0.01, method: 'PUT'})
    sim.setFilesFault({status: 500})
    const statuses: number[] = []
    const r = await withTrafficInWindow(
      world,
      (url) => world.check('callfs.errors.rate', gated(url), SLOW_OK),
      async () => {
        for (let i = 0; i < 9; i++) statuses.push(await call(world, 'PUT', `/v1/files/bad/${i}.txt`, 'x'))
      },
    )
    expect(statuses.every((s) => s === 500)).toBe(true)
    expect(r.status).toBe('fail')
    expect(r.evidence).toMatchObject({requests: 9, errors: 9, errorPercent: 100})
    expect(String(r.evidence.basis)).toMatch(/^over the last [\d.]+m?s$/)
    expect(r.summary).toMatch(/^100% of requests answered 5xx over the last [\d.]+m?s \(9 of 9\)$/)
    expect(r.remediation).toMatchObject({id: 'callfs.errors.investigate', automated: false})
    expect(r.remediation?.commands[0]).toBe('journalctl -u callfs --since "15 min ago" | grep -i error | tail -50')
  })

  it('counts each file read once when the first reads of a file happen in the window', async () => {
    // The real GET handler counts a read twice (its route and path="/files/*"); before any file
    // was read, the first scrape cannot show that — the second one does.
    const world = await fresh()
    const {sim} = simOf(world)
    sim.recordTraffic({count: 1, status: 200, seconds: 0.001, path: '/health'})
    const r = await withTrafficInWindow(
      world,
      (url) => world.check('callfs.errors.rate', gated(url), SLOW_OK),
      async () => {
        sim.recordTraffic({count: 2, status: 500, seconds: 0.01, method: 'PUT'})
        sim.recordTraffic({count: 10, status: 200, seconds: 0.01, method: 'GET'})
      },
    )
    expect(r.evidence).toMatchObject({requests: 12, errors: 2, errorPercent: 16.7})
    expect(r.status).toBe('fail')
  })

  it('judges the window, not the history: old errors with clean traffic now are ok', async () => {
    const world = await fresh()
    const {sim} = simOf(world)
    sim.recordTraffic({count: 50, status: 503, seconds: 0.01, method: 'PUT'})
    const r = await withTrafficInWindow(
      world,
      (url) => world.check('callfs.errors.rate', gated(url), SLOW_OK),
      async () => sim.recordTraffic({count: 20, status: 201, seconds: 0.01, method: 'PUT'}),
    )
    expect(r.status).toBe('ok')
    expect(r.evidence).toMatchObject({requests: 20, errors: 0, errorPercent: 0})
  })

  it('falls back to the counts since start-up when nothing was served during the window', async () => {
    const world = await fresh()
    const {sim} = simOf(world)
    sim.recordTraffic({count: 70, status: 200, seconds: 0.01, method: 'PUT'})
    sim.recordTraffic({count: 30, status: 503, seconds: 0.01, method: 'PUT'})
    const r = await world.check('callfs.errors.rate')
    expect(r.status).toBe('fail')
    expect(r.evidence).toMatchObject({requests: 100, errors: 30, errorPercent: 30})
    expect(r.evidence.basis).toMatch(/^since CallFS started \(no requests during the [\d.]+m?s window\)$/)
    expect(r.summary).toMatch(/^30% of requests answered 5xx since CallFS started \(no requests during the [\d.]+m?s window\) \(30 of 100\)$/)
  })

  it('is unknown when the page scraped is not CallFS metrics at all', async () => {
    const {sim, metricsUrl} = simOf(w)
    sim.setMetricsFault('html')
    try {
      const r = await w.check('callfs.errors.rate')
      expect(r.status).toBe('unknown')
      expect(r.summary).toBe(`callfs_http_requests_total is not among the metrics, nor any callfs_ metric: is ${metricsUrl} the CallFS metrics server?`)
    } finally {
      sim.setMetricsFault('none')
    }
  })

  it('is unknown when the metrics cannot be scraped', async () => {
    const url = `http://127.0.0.1:${await closedPort()}/metrics`
    const r = await w.check('callfs.errors.rate', {metrics_url: url})
    expect(r.status).toBe('unknown')
    expect(r.summary).toMatch(/nothing listens on 127\.0\.0\.1:\d+ \(connection refused\)/)
  })
})

describe('callfs.latency.p95', () => {
  it('is ok on a CallFS that has observed no request yet', async () => {
    const world = await fresh()
    const r = await world.check('callfs.latency.p95')
    expect(r.status).toBe('ok')
    expect(r.summary).toBe('no requests observed yet')
  })

  it('is ok when real requests are fast', async () => {
    const world = await fresh()
    const r = await withTrafficInWindow(
      world,
      (url) => world.check('callfs.latency.p95', gated(url), SLOW_OK),
      async () => {
        for (let i = 0; i < 10; i++) await call(world, 'PUT', `/v1/files/fast/${i}.txt`, 'x')
      },
    )
    expect(r.status).toBe('ok')
    expect(r.evidence).toMatchObject({observations: 10, threshold: '2s'})
    expect(r.evidence.p95Seconds as number).toBeLessThan(0.25)
    expect(String(r.evidence.basis)).toMatch(/^over the last [\d.]+m?s$/)
  })

  it('warns with the p95 when real requests take over 2 s during the window', async () => {
    const world = await fresh()
    const {sim} = simOf(world)
    sim.setLatency(2100)
    const r = await withTrafficInWindow(
      world,
      (url) => world.check('callfs.latency.p95', gated(url), SLOW_OK),
      () => Promise.all([1, 2, 3, 4].map((i) => call(world, 'PUT', `/v1/files/slow/${i}.txt`, 'x'))),
    )
    expect(r.status).toBe('warn')
    // Prometheus' histogram_quantile over the default buckets: all four fall in (1, 2.5].
    expect(r.evidence).toMatchObject({observations: 4, p95Seconds: 2.425, threshold: '2s'})
    expect(r.summary).toMatch(/^p95 2\.4s over the last [\d.]+m?s \(4 requests\)$/)
    expect(r.remediation).toMatchObject({id: 'callfs.latency.investigate', automated: false})
  })

  it('warns on recorded 3 s reads and counts each read once', async () => {
    const world = await fresh()
    const {sim} = simOf(world)
    sim.recordTraffic({count: 100, status: 200, seconds: 0.01, method: 'PUT'})
    const r = await withTrafficInWindow(
      world,
      (url) => world.check('callfs.latency.p95', gated(url), SLOW_OK),
      async () => sim.recordTraffic({count: 20, status: 200, seconds: 3, method: 'GET'}),
    )
    expect(r.status).toBe('warn')
    expect(r.evidence).toMatchObject({observations: 20, p95Seconds: 4.875})
  })

  it('judges the window, not the history: slow requests long ago with fast ones now are ok', async () => {
    const world = await fresh()
    const {sim} = simOf(world)
    sim.recordTraffic({count: 50, status: 200, seconds: 4, method: 'PUT'})
    const r = await withTrafficInWindow(
      world,
      (url) => world.check('callfs.latency.p95', gated(url), SLOW_OK),
      async () => sim.recordTraffic({count: 20, status: 200, seconds: 0.02, method: 'PUT'}),
    )
    expect(r.status).toBe('ok')
    expect(r.evidence).toMatchObject({observations: 20})
    expect(r.evidence.p95Seconds as number).toBeLessThanOrEqual(0.025)
  })

  it('falls back to the histogram since start-up when nothing was observed during the window', async () => {
    const world = await fresh()
    const {sim} = simOf(world)
    sim.recordTraffic({count: 20, status: 200, seconds: 3, method: 'PUT'})
    const r = await world.check('callfs.latency.p95')
    expect(r.status).toBe('warn')
    expect(r.evidence).toMatchObject({observations: 20, p95Seconds: 4.875, basis: 'since CallFS started'})
  })
})
