import {spawn, type ChildProcess} from 'node:child_process'
import {mkdtemp, readFile, rm} from 'node:fs/promises'
import * as net from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {Agent, request} from 'undici'
import {afterAll, afterEach, beforeAll, describe, expect, it, vi} from 'vitest'
import {createCa, issueCert, makeCertDir} from '../../src/lab/certs.js'
import {startCallfsSim, type CallfsSim} from '../../src/lab/callfs.js'

const KEY = 'lab-api-key-0123456789abcdef'
const auth = {authorization: `Bearer ${KEY}`}

// ---- a tiny Prometheus text check (the team's parser lives elsewhere) ------------------------

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

function parseProm(text: string): {samples: Sample[]; types: Map<string, string>} {
  const types = new Map<string, string>()
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line)
    if (meta) {
      if (meta[1] === 'TYPE') types.set(meta[2] ?? '', meta[3] ?? '')
      continue
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`unparseable metrics line: ${line}`)
    const labels: Record<string, string> = {}
    const body = m[2] ?? ''
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g
    let consumed = 0
    for (let l = re.exec(body); l; l = re.exec(body)) {
      labels[l[1] ?? ''] = l[2] ?? ''
      consumed += l[0].length
    }
    if (consumed !== body.length) throw new Error(`bad label set: ${line}`)
    const raw = m[3] ?? ''
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw)
    if (Number.isNaN(value) && raw !== 'NaN') throw new Error(`bad value: ${line}`)
    const name = m[1] ?? ''
    const family = name.replace(/_(bucket|sum|count)$/, '')
    if (!types.has(name) && !types.has(family)) throw new Error(`sample without TYPE: ${line}`)
    samples.push({name, labels, value})
  }
  return {samples, types}
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value
}

// ---- shared fixtures ---------------------------------------------------------------------------

let certDir: string
let caPem: string
let tlsPair: {cert: string; key: string}
let agent: Agent

beforeAll(async () => {
  certDir = await makeCertDir()
  const ca = await createCa(certDir)
  caPem = ca.cert
  const leaf = await issueCert(certDir, {ca})
  tlsPair = {cert: leaf.cert, key: leaf.key}
  agent = new Agent({connect: {ca: caPem}})
})
afterAll(async () => {
  await agent.close()
  await rm(certDir, {recursive: true, force: true})
})

async function text(url: string, init: Parameters<typeof request>[1] = {}): Promise<{status: number; headers: Record<string, unknown>; body: string}> {
  const r = await request(url, {dispatcher: agent, headersTimeout: 2000, bodyTimeout: 2000, ...init})
  return {status: r.statusCode, headers: r.headers, body: await r.body.text()}
}

describe('CallFS simulator over HTTPS', () => {
  let sim: CallfsSim
  beforeAll(async () => {
    sim = await startCallfsSim({tls: tlsPair, apiKeys: [KEY]})
  })
  afterAll(async () => {
    await sim.stop()
  })
  afterEach(() => {
    sim.setHealthFault('none')
    sim.setFilesFault(null)
    sim.setLatency(0)
    sim.setMetricsFault('none')
  })

  it('answers /health with {"status":"ok"} and no auth, over a certificate the CA vouches for', async () => {
    expect(sim.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
    expect(sim.instanceId).toMatch(/^[0-9a-f]{32}$/)
    const r = await text(`${sim.url}/health`)
    expect(r.status).toBe(200)
    expect(r.body).toBe('{"status":"ok"}')
    expect(r.headers['content-type']).toBe('application/json')
    expect(r.headers['strict-transport-security']).toMatch(/max-age=31536000/)
    expect(r.headers['x-request-id']).toMatch(/^[0-9a-f]{16}$/)
    expect(sim.requests.at(-1)).toEqual({method: 'GET', path: '/health', status: 200, auth: 'none'})
  })

  it('refuses the file API without a key, and with a wrong one, as AUTHENTICATION_FAILED', async () => {
    const none = await text(`${sim.url}/v1/files/`)
    expect(none.status).toBe(401)
    expect(JSON.parse(none.body)).toEqual({code: 'AUTHENTICATION_FAILED', message: 'authentication failed'})
    const wrong = await text(`${sim.url}/v1/files/`, {headers: {authorization: 'Bearer not-the-key'}})
    expect(wrong.status).toBe(401)
    expect(sim.requests.slice(-2).map((r) => r.auth)).toEqual(['none', 'invalid'])
  })

  it('lists the root with the key (a bare key without "Bearer " works too, as in CallFS)', async () => {
    const r = await text(`${sim.url}/v1/files/`, {headers: auth})
    expect(r.status).toBe(200)
    expect(r.headers['x-callfs-type']).toBe('directory')
    expect(Array.isArray(JSON.parse(r.body)) || JSON.parse(r.body) === null).toBe(true)
    const bare = await text(`${sim.url}/v1/files/`, {headers: {authorization: KEY}})
    expect(bare.status).toBe(200)
  })

  it('round-trips a file: PUT creates, PUT replaces, GET/HEAD read, POST conflicts, DELETE removes', async () => {
    const url = `${sim.url}/v1/files/docs/hello.txt`
    const created = await text(url, {method: 'PUT', headers: auth, body: 'hello callfs'})
    expect(created.status).toBe(201)
    expect(created.body).toBe('')
    expect((await text(url, {method: 'PUT', headers: auth, body: 'hello again'})).status).toBe(200)

    const got = await text(url, {headers: auth})
    expect(got.status).toBe(200)
    expect(got.body).toBe('hello again')
    expect(got.headers['content-type']).toBe('application/octet-stream')
    expect(got.headers['x-callfs-size']).toBe('11')
    expect(got.headers['x-callfs-mode']).toBe('0644')

    const head = await request(url, {method: 'HEAD', headers: auth, dispatcher: agent})
    await head.body.dump()
    expect(head.statusCode).toBe(200)
    expect(head.headers['x-callfs-type']).toBe('file')
    expect(head.headers['x-callfs-instance-id']).toBeDefined()

    const listing = await text(`${sim.url}/v1/files/docs/`, {headers: auth})
    expect(JSON.parse(listing.body)).toEqual([expect.objectContaining({name: 'hello.txt', path: '/docs/hello.txt', type: 'file', size: 11})])

    const conflict = await text(url, {method: 'POST', headers: auth, body: 'x'})
    expect(conflict.status).toBe(409)

    expect((await text(url, {method: 'DELETE', headers: auth})).status).toBe(204)
    const gone = await text(url, {headers: auth})
    expect(gone.status).toBe(404)
    expect(JSON.parse(gone.body)).toEqual({code: 'FILE_NOT_FOUND', message: 'metadata not found'})
    expect((await text(url, {method: 'DELETE', headers: auth})).status).toBe(404)
  })

  it('answers the guide\'s /api/v1/files/ the way chi does for an unknown route', async () => {
    const r = await text(`${sim.url}/api/v1/files/`, {headers: auth})
    expect(r.status).toBe(404)
    expect(r.body).toBe('404 page not found\n')
    expect(r.headers['content-type']).toBe('text/plain; charset=utf-8')
  })

  it('answers plain HTTP on its TLS port like Go: 400 "Client sent an HTTP request to an HTTPS server."', async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect(sim.port, '127.0.0.1', () => s.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n'))
      let got = ''
      s.on('data', (d) => (got += d.toString()))
      s.on('end', () => resolve(got))
      s.on('error', reject)
      s.setTimeout(2000, () => reject(new Error('no answer')))
    })
    expect(reply).toBe('HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n')
  })

  it('serves Prometheus text unauthenticated on the metrics port, and only with the key on the main port', async () => {
    await text(`${sim.url}/health`)
    await text(`${sim.url}/v1/files/`)
    await text(`${sim.url}/nope`)
    expect(sim.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/)
    const r = await request(sim.metricsUrl ?? '', {headersTimeout: 2000})
    expect(r.statusCode).toBe(200)
    expect(r.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8')
    const {samples, types} = parseProm(await r.body.text())

    expect(types.get('callfs_http_requests_total')).toBe('counter')
    expect(types.get('callfs_http_request_duration_seconds')).toBe('histogram')
    expect(types.get('callfs_active_locks')).toBe('gauge')
    expect(types.get('process_resident_memory_bytes')).toBe('gauge')
    expect(types.get('go_goroutines')).toBe('gauge')
    expect(value(samples, 'callfs_http_requests_total', {method: 'GET', path: '/health', status_code: '200'})).toBeGreaterThanOrEqual(1)
    expect(value(samples, 'callfs_http_requests_total', {method: 'GET', path: '/v1/*', status_code: '401'})).toBeGreaterThanOrEqual(1)
    expect(value(samples, 'callfs_http_requests_total', {method: 'GET', path: 'unmatched', status_code: '404'})).toBeGreaterThanOrEqual(1)

    // Histogram: Prometheus default buckets, cumulative, +Inf equal to the count.
    const buckets = samples.filter((s) => s.name === 'callfs_http_request_duration_seconds_bucket' && s.labels.path === '/health')
    expect(buckets.map((b) => b.labels.le)).toEqual(['0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '+Inf'])
    for (let i = 1; i < buckets.length; i++) expect(buckets[i]?.value).toBeGreaterThanOrEqual(buckets[i - 1]?.value ?? 0)
    expect(buckets.at(-1)?.value).toBe(value(samples, 'callfs_http_request_duration_seconds_count', {path: '/health'}))

    expect((await text(`${sim.url}/metrics`)).status).toBe(401)
    const withKey = await text(`${sim.url}/metrics`, {headers: auth})
    expect(withKey.status).toBe(200)
    expect(() => parseProm(withKey.body)).not.toThrow()
    const other = await request(sim.metricsUrl?.replace('/metrics', '/other') ?? '', {headersTimeout: 2000})
    expect(other.statusCode).toBe(404)
    await other.body.dump()
  })

  it('counts injected file errors and added latency in the metrics like real traffic', async () => {
    const before = parseProm(await (await request(sim.metricsUrl ?? '')).body.text()).samples
    await text(`${sim.url}/v1/files/m.txt`, {method: 'PUT', headers: auth, body: 'm'})
    sim.setFilesFault({status: 500, everyNth: 2})
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const r = await text(`${sim.url}/v1/files/m.txt`, {headers: auth})
      statuses.push(r.status)
      if (r.status === 500) expect(JSON.parse(r.body).code).toBe('INTERNAL_ERROR')
    }
    expect(statuses).toEqual([200, 500, 200, 500])
    sim.setFilesFault({status: 503})
    expect((await text(`${sim.url}/v1/files/m.txt`, {headers: auth})).status).toBe(503)
    sim.setFilesFault(null)

    sim.setLatency(300)
    const t0 = Date.now()
    expect((await text(`${sim.url}/v1/files/m.txt`, {method: 'DELETE', headers: auth})).status).toBe(204)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290)

    const {samples} = parseProm(await (await request(sim.metricsUrl ?? '')).body.text())
    const delta = (name: string, labels: Record<string, string>): number => (value(samples, name, labels) ?? 0) - (value(before, name, labels) ?? 0)
    expect(delta('callfs_http_requests_total', {method: 'GET', path: '/v1/files/*', status_code: '500'})).toBe(2)
    expect(delta('callfs_http_requests_total', {method: 'GET', path: '/v1/files/*', status_code: '503'})).toBe(1)
    // The real GET handler counts again under its own label.
    expect(delta('callfs_http_requests_total', {method: 'GET', path: '/files/*', status_code: '500'})).toBe(2)
    expect(delta('callfs_http_request_duration_seconds_bucket', {method: 'DELETE', path: '/v1/files/*', le: '0.25'})).toBe(0)
    expect(delta('callfs_http_request_duration_seconds_bucket', {method: 'DELETE', path: '/v1/files/*', le: '0.5'})).toBe(1)
    expect(delta('callfs_errors_total', {component: 'backend', error_type: 'internal_error'})).toBe(2)
    expect(delta('callfs_errors_total', {component: 'backend', error_type: 'unavailable'})).toBe(1)
  })

  it('records synthetic traffic exactly where real requests land', async () => {
    const before = parseProm(await (await request(sim.metricsUrl ?? '')).body.text()).samples
    const delta = (samples: Sample[], name: string, labels: Record<string, string>): number => (value(samples, name, labels) ?? 0) - (value(before, name, labels) ?? 0)
    sim.recordTraffic({count: 90, status: 200, seconds: 0.04, method: 'PUT'})
    sim.recordTraffic({count: 10, status: 500, seconds: 3, method: 'PUT'})
    sim.recordTraffic({count: 2_000_000, status: 200, seconds: 0.001, method: 'POST'})
    const body = await (await request(sim.metricsUrl ?? '')).body.text()
    const {samples} = parseProm(body)
    expect(delta(samples, 'callfs_http_requests_total', {method: 'PUT', path: '/v1/files/*', status_code: '200'})).toBe(90)
    expect(delta(samples, 'callfs_http_requests_total', {method: 'PUT', path: '/v1/files/*', status_code: '500'})).toBe(10)
    expect(delta(samples, 'callfs_http_request_duration_seconds_bucket', {method: 'PUT', path: '/v1/files/*', le: '2.5'})).toBe(90)
    expect(delta(samples, 'callfs_http_request_duration_seconds_bucket', {method: 'PUT', path: '/v1/files/*', le: '5'})).toBe(100)
    expect(delta(samples, 'callfs_http_request_duration_seconds_sum', {method: 'PUT', path: '/v1/files/*'})).toBeCloseTo(90 * 0.04 + 30, 3)
    // Large counts are written as client_golang writes them.
    expect(body).toContain('callfs_http_requests_total{method="POST",path="/v1/files/*",status_code="200"} 2e+06')
  })

  describe('health faults', () => {
    it('html: a 200 text/html page like a proxy\'s', async () => {
      sim.setHealthFault('html')
      const r = await text(`${sim.url}/health`)
      expect(r.status).toBe(200)
      expect(r.headers['content-type']).toBe('text/html; charset=utf-8')
      expect(r.body).toContain('<html')
    })

    it('hang: accepts and never answers', async () => {
      sim.setHealthFault('hang')
      const t0 = Date.now()
      const err = await request(`${sim.url}/health`, {dispatcher: agent, headersTimeout: 300}).then(
        () => null,
        (e: Error & {code?: string}) => e,
      )
      expect(err?.code).toBe('UND_ERR_HEADERS_TIMEOUT')
      expect(Date.now() - t0).toBeGreaterThanOrEqual(280)
      expect(Date.now() - t0).toBeLessThan(2000)
    })

    it('huge-body: streams JSON without end and without buffering it server-side', async () => {
      sim.setHealthFault('huge-body')
      const rss0 = process.memoryUsage().rss
      const r = await request(`${sim.url}/health`, {dispatcher: agent, headersTimeout: 1000})
      expect(r.statusCode).toBe(200)
      expect(r.headers['content-type']).toBe('application/json')
      // Not reading for a while must not let the server pile the body up in memory.
      await new Promise((res) => setTimeout(res, 400))
      expect(process.memoryUsage().rss - rss0).toBeLessThan(96 * 1024 * 1024)
      let got = 0
      let first = ''
      for await (const chunk of r.body) {
        if (first === '') first = (chunk as Buffer).subarray(0, 16).toString()
        got += (chunk as Buffer).length
        if (got >= 8 * 1024 * 1024) break
      }
      expect(first).toBe('{"status":"ok","')
      expect(got).toBeGreaterThanOrEqual(8 * 1024 * 1024)
    })

    it('slow-loris: headers at once, then a byte every 200 ms', async () => {
      sim.setHealthFault('slow-loris')
      const t0 = Date.now()
      const r = await request(`${sim.url}/health`, {dispatcher: agent, headersTimeout: 1000, bodyTimeout: 1000})
      expect(r.statusCode).toBe(200)
      expect(Date.now() - t0).toBeLessThan(500)
      let got = 0
      const deadline = Date.now() + 700
      for await (const chunk of r.body) {
        got += (chunk as Buffer).length
        if (Date.now() >= deadline) break
      }
      expect(got).toBeGreaterThanOrEqual(2)
      expect(got).toBeLessThanOrEqual(6)
    })

    it('error-500: an error status', async () => {
      sim.setHealthFault('error-500')
      expect((await text(`${sim.url}/health`)).status).toBe(500)
    })

    it('garbage: bytes that are not HTTP, failing fast', async () => {
      sim.setHealthFault('garbage')
      const t0 = Date.now()
      const err = await request(`${sim.url}/health`, {dispatcher: agent, headersTimeout: 2000}).then(
        () => null,
        (e: Error) => e,
      )
      expect(err).toBeInstanceOf(Error)
      expect(Date.now() - t0).toBeLessThan(1000)
      await vi.waitFor(() => expect(sim.requests.at(-1)).toMatchObject({path: '/health', status: 0}), {timeout: 1000})
    })
  })

  describe('metrics faults', () => {
    it('not-found, html and hang on the metrics endpoint', async () => {
      sim.setMetricsFault('not-found')
      const nf = await request(sim.metricsUrl ?? '')
      expect(nf.statusCode).toBe(404)
      expect(await nf.body.text()).toBe('404 page not found\n')
      sim.setMetricsFault('html')
      const html = await request(sim.metricsUrl ?? '')
      expect(html.headers['content-type']).toBe('text/html; charset=utf-8')
      await html.body.dump()
      sim.setMetricsFault('hang')
      const err = await request(sim.metricsUrl ?? '', {headersTimeout: 300}).then(
        () => null,
        (e: Error & {code?: string}) => e,
      )
      expect(err?.code).toBe('UND_ERR_HEADERS_TIMEOUT')
    })
  })
})

describe('CallFS simulator lifecycle and limits', () => {
  it('stops promptly while connections hang and trickle', async () => {
    const sim = await startCallfsSim({apiKeys: [KEY], metricsPort: null})
    expect(sim.url).toMatch(/^http:\/\//)
    expect(sim.metricsUrl).toBeNull()
    const client = new Agent()
    sim.setHealthFault('hang')
    const hung = [1, 2, 3].map(() => request(`${sim.url}/health`, {dispatcher: client, headersTimeout: 10_000}).then(() => 'answered', () => 'failed'))
    const idle = net.connect(sim.port, '127.0.0.1')
    idle.on('error', () => undefined)
    const idleClosed = new Promise((r) => idle.once('close', r))
    await new Promise((r) => setTimeout(r, 150))
    const t0 = Date.now()
    await sim.stop()
    expect(Date.now() - t0).toBeLessThan(1000)
    expect(await Promise.all(hung)).toEqual(['failed', 'failed', 'failed'])
    await idleClosed
    await client.close()
    // Nothing listens any more.
    const refused = await new Promise<string | undefined>((r) => {
      const s = net.connect(sim.port, '127.0.0.1')
      s.on('connect', () => r('connected'))
      s.on('error', (e: NodeJS.ErrnoException) => r(e.code))
    })
    expect(refused).toBe('ECONNREFUSED')
  })

  it('answers 429 RATE_LIMIT_EXCEEDED beyond the per-minute limit', async () => {
    const sim = await startCallfsSim({apiKeys: [KEY], rateLimitPerMinute: 2, metricsPort: null})
    try {
      const statuses = []
      for (let i = 0; i < 3; i++) {
        const r = await request(`${sim.url}/v1/files/`, {headers: auth})
        statuses.push(r.statusCode)
        if (r.statusCode === 429) expect(await r.body.json()).toEqual({code: 'RATE_LIMIT_EXCEEDED', message: 'Rate limit exceeded'})
        else await r.body.dump()
      }
      expect(statuses).toEqual([200, 200, 429])
    } finally {
      await sim.stop()
    }
  })

  it('writes files under dataDir like the LocalFS backend', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'callfs-data-'))
    const sim = await startCallfsSim({apiKeys: [KEY], dataDir, metricsPort: null})
    try {
      const put = await request(`${sim.url}/v1/files/reports/q1.csv`, {method: 'PUT', headers: auth, body: 'a,b\n1,2\n'})
      await put.body.dump()
      expect(put.statusCode).toBe(201)
      expect(await readFile(join(dataDir, 'reports', 'q1.csv'), 'utf8')).toBe('a,b\n1,2\n')
      const got = await request(`${sim.url}/v1/files/reports/q1.csv`, {headers: auth})
      expect(await got.body.text()).toBe('a,b\n1,2\n')
      // Content lost behind CallFS's back: metadata says file, backend cannot open it.
      await rm(join(dataDir, 'reports', 'q1.csv'))
      const lost = await request(`${sim.url}/v1/files/reports/q1.csv`, {headers: auth})
      expect(lost.statusCode).toBe(500)
      expect(((await lost.body.json()) as {code: string}).code).toBe('INTERNAL_ERROR')
    } finally {
      await sim.stop()
      await rm(dataDir, {recursive: true, force: true})
    }
  })

  it('rejects an instance id that is not 32 hex characters', async () => {
    await expect(startCallfsSim({apiKeys: [KEY], instanceId: 'callfs-1'})).rejects.toThrow(/32/)
  })
})

// ---- Redis locks against a throwaway redis-server ------------------------------------------------

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise((r) => s.close(r))
  return port
}

describe('CallFS simulator with Redis locks', () => {
  let redisProc: ChildProcess
  let redisUrl: string

  beforeAll(async () => {
    const port = await freePort()
    redisProc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {stdio: ['ignore', 'pipe', 'pipe']})
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('redis-server did not start')), 5000)
      redisProc.stdout?.on('data', (d: Buffer) => {
        if (d.toString().includes('Ready to accept connections')) {
          clearTimeout(t)
          resolve()
        }
      })
      redisProc.once('error', reject)
    })
    redisUrl = `redis://127.0.0.1:${port}`
  })
  afterAll(() => {
    redisProc.kill('SIGTERM')
  })

  it('takes callfs:lock:file:<path> with SET NX and a 30 s expiry, and releases it by compare-and-delete', async () => {
    const {Redis} = await import('ioredis')
    const monitorClient = new Redis(redisUrl)
    const probe = new Redis(redisUrl)
    const sim = await startCallfsSim({apiKeys: [KEY], redisUrl, metricsPort: 0})
    try {
      const monitor = await monitorClient.monitor()
      const commands: string[][] = []
      monitor.on('monitor', (_time: string, args: string[]) => commands.push(args))
      await new Promise((r) => setTimeout(r, 50))

      const put = await request(`${sim.url}/v1/files/locked/a.txt`, {method: 'PUT', headers: auth, body: 'a'})
      await put.body.dump()
      expect(put.statusCode).toBe(201)
      await new Promise((r) => setTimeout(r, 50))

      const set = commands.find((c) => c[0]?.toLowerCase() === 'set')
      expect(set).toEqual(['set', 'callfs:lock:file:/locked/a.txt', sim.instanceId, 'EX', '30', 'NX'])
      const release = commands.find((c) => c[0]?.toLowerCase() === 'eval')
      expect(release?.[1]).toContain('redis.call("get", KEYS[1]) == ARGV[1]')
      expect(release?.slice(2)).toEqual(['1', 'callfs:lock:file:/locked/a.txt', sim.instanceId])
      expect(await probe.exists('callfs:lock:file:/locked/a.txt')).toBe(0)
      await monitor.disconnect()

      // An orphaned lock (no expiry, another owner) blocks the write with a 500 and stays put.
      await probe.set('callfs:lock:file:/locked/b.txt', 'f'.repeat(32))
      const blocked = await request(`${sim.url}/v1/files/locked/b.txt`, {method: 'PUT', headers: auth, body: 'b'})
      expect(blocked.statusCode).toBe(500)
      expect(await blocked.body.json()).toEqual({code: 'INTERNAL_ERROR', message: 'failed to acquire lock for file creation'})
      expect(await probe.get('callfs:lock:file:/locked/b.txt')).toBe('f'.repeat(32))
      expect(await probe.ttl('callfs:lock:file:/locked/b.txt')).toBe(-1)

      const {samples} = parseProm(await (await request(sim.metricsUrl ?? '')).body.text())
      expect(value(samples, 'callfs_lock_operations_total', {operation: 'acquire', status: 'success'})).toBe(1)
      expect(value(samples, 'callfs_lock_operations_total', {operation: 'acquire', status: 'failure'})).toBe(1)
      expect(value(samples, 'callfs_lock_operations_total', {operation: 'release', status: 'success'})).toBe(1)
      expect(value(samples, 'callfs_active_locks')).toBe(0)
    } finally {
      await sim.stop()
      monitorClient.disconnect()
      probe.disconnect()
    }
  })

  it('refuses to start when Redis is unreachable, naming the URL without its password', async () => {
    const port = await freePort()
    await expect(startCallfsSim({apiKeys: [KEY], redisUrl: `redis://:s3cret-pass@127.0.0.1:${port}`})).rejects.toThrow(/failed to connect to Redis at redis:\/\/:\*\*\*\*@127\.0\.0\.1/)
    await expect(startCallfsSim({apiKeys: [KEY], redisUrl: `redis://:s3cret-pass@127.0.0.1:${port}`})).rejects.not.toThrow(/s3cret/)
  })
})
