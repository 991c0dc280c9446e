// A CallFS that answers like the real one (ebogdum/callfs: Go, chi, promhttp, go-redis), on
// loopback, with faults that can be switched on and off while it runs. It stands in for CallFS
// in the test suite and in `opsctl lab start`. What it copies from the real server:
//
// - router (server/router.go): GET /health → 200 {"status":"ok"} (no auth); /v1/* behind the
//   Bearer middleware; /v1/files/* with GET/HEAD/POST/PUT/DELETE; /v1/directories/*; anything
//   else → chi's NotFound, plain text "404 page not found" (so the guide's /api/v1/files/ is a 404).
// - auth (server/middleware/auth.go, auth/apikey_authenticator.go): missing header or unknown key
//   → 401 {"code":"AUTHENTICATION_FAILED","message":"authentication failed"}. The "Bearer " prefix
//   is trimmed *if present*, so a bare key is accepted too, as the real server does.
// - handlers: PUT → 201 new / 200 replaced, empty body; POST → 201, an existing file → 409;
//   DELETE → 204; GET file → octet-stream + X-CallFS-* headers; GET directory → JSON array
//   (`null` when empty: a nil Go slice); errors {"code","message"} (+ "\n" from json.Encoder).
// - metrics (metrics/metrics.go): the same names, labels, help texts and default buckets; the
//   request middleware labels path with the chi route pattern ("/v1/files/*", "/health",
//   "/v1/*" for a request the auth middleware rejected, "unmatched"); GET /v1/files/* is also
//   counted by the handler itself under path "/files/*", as the real handler does.
// - metrics server (cmd/main.go): plain HTTP, /metrics only, no auth.
// - locks (locks/redis_manager.go, core/*_operations.go): `callfs:lock:file:<path>` /
//   `callfs:lock:dir:<path>`, value = the instance's 32-hex owner id, SET NX with a 30 s expiry,
//   released with a compare-and-delete Lua script; a held lock fails the write with a 500.

import {randomBytes} from 'node:crypto'
import {createReadStream, readdirSync} from 'node:fs'
import {mkdir, rm, stat, writeFile} from 'node:fs/promises'
import type * as http from 'node:http'
import {dirname, resolve, sep} from 'node:path'
import {clearTimeout, setTimeout} from 'node:timers'
import type {Redis as RedisClient} from 'ioredis'
import {listenLoopback, serveFault, type HttpFault, type LoopbackServer} from './http-faults.js'

export type CallfsHealthFault = 'none' | HttpFault
export type CallfsMetricsFault = 'none' | 'hang' | 'not-found' | 'html'

export interface CallfsSimOptions {
  /** Default 127.0.0.1. */
  host?: string
  /** Default 0 (free). */
  port?: number
  /** PEM pair; null → plain HTTP. */
  tls?: {cert: string; key: string} | null
  /** Bearer keys accepted. */
  apiKeys: string[]
  /** Default 0 (free); null → no separate metrics server. */
  metricsPort?: number | null
  /** LocalFS backend root; default: an in-memory store. Metadata is always in memory. */
  dataDir?: string
  /** When set, writes take real Redis locks as CallFS does. */
  redisUrl?: string | null
  /** Lock owner id, 32 hex chars; default random. */
  instanceId?: string
  /** 429 RATE_LIMIT_EXCEEDED for /v1 requests beyond this many per minute. */
  rateLimitPerMinute?: number | null
  /**
   * Serve /v1/* to anyone, key or not: a CallFS behind a proxy that answers for it (or a build
   * without the auth middleware). The misconfiguration callfs.auth.required exists to catch.
   */
  openAccess?: boolean
}

export interface CallfsRequestLog {
  method: string
  path: string
  /** 0 when no status line was sent (hang, garbage, connection closed first). */
  status: number
  auth: 'none' | 'valid' | 'invalid'
}

export interface CallfsSim {
  url: string
  metricsUrl: string | null
  port: number
  metricsPort: number | null
  instanceId: string
  setHealthFault(f: CallfsHealthFault): void
  setFilesFault(f: {status: 500 | 503; everyNth?: number} | null): void
  setLatency(ms: number): void
  setMetricsFault(f: CallfsMetricsFault): void
  /** Synthetic traffic recorded in the metrics exactly as real requests would be. */
  recordTraffic(o: {count: number; status: number; seconds: number; method?: string; path?: string}): void
  requests: CallfsRequestLog[]
  stop(): Promise<void>
}

/** X-CallFS-Instance-ID: CallFS's instance_discovery.instance_id default (not the lock owner id). */
const DISCOVERY_INSTANCE_ID = 'callfs-instance-1'
const LOCK_TTL_SECONDS = 30
const MEMORY_FILE_CAP = 256 * 1024 * 1024
const RELEASE_LUA = `
if redis.call("get", KEYS[1]) == ARGV[1] then
  return redis.call("del", KEYS[1])
else
  return 0
end`

// ---------------------------------------------------------------------------------------------
// Metrics: a small registry that writes the Prometheus text format the way client_golang does.

const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

interface Histo {
  counts: number[]
  sum: number
  count: number
}

class LabeledCounter {
  readonly values = new Map<string, number>()
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labels: string[],
  ) {}
  add(values: string[], n = 1): void {
    const k = JSON.stringify(values)
    this.values.set(k, (this.values.get(k) ?? 0) + n)
  }
  get(values: string[]): number {
    return this.values.get(JSON.stringify(values)) ?? 0
  }
  render(out: string[]): void {
    // client_golang leaves a vector with no children out entirely.
    if (this.values.size === 0) return
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`)
    for (const [k, v] of sortedEntries(this.values)) out.push(`${this.name}${labelSet(this.labels, JSON.parse(k) as string[])} ${goFloat(v)}`)
  }
}

class LabeledHistogram {
  readonly values = new Map<string, Histo>()
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labels: string[],
  ) {}
  observe(values: string[], seconds: number, times = 1): void {
    const k = JSON.stringify(values)
    let h = this.values.get(k)
    if (!h) {
      h = {counts: DEFAULT_BUCKETS.map(() => 0), sum: 0, count: 0}
      this.values.set(k, h)
    }
    for (let i = 0; i < DEFAULT_BUCKETS.length; i++) if (seconds <= (DEFAULT_BUCKETS[i] ?? 0)) h.counts[i] = (h.counts[i] ?? 0) + times
    h.sum += seconds * times
    h.count += times
  }
  render(out: string[]): void {
    if (this.values.size === 0) return
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`)
    for (const [k, h] of sortedEntries(this.values)) {
      const vals = JSON.parse(k) as string[]
      DEFAULT_BUCKETS.forEach((le, i) => {
        out.push(`${this.name}_bucket${labelSet([...this.labels, 'le'], [...vals, goFloat(le)])} ${goFloat(h.counts[i] ?? 0)}`)
      })
      out.push(`${this.name}_bucket${labelSet([...this.labels, 'le'], [...vals, '+Inf'])} ${goFloat(h.count)}`)
      out.push(`${this.name}_sum${labelSet(this.labels, vals)} ${goFloat(h.sum)}`)
      out.push(`${this.name}_count${labelSet(this.labels, vals)} ${goFloat(h.count)}`)
    }
  }
}

class CallfsMetrics {
  readonly requests = new LabeledCounter('callfs_http_requests_total', 'Total number of HTTP requests', ['method', 'path', 'status_code'])
  readonly duration = new LabeledHistogram('callfs_http_request_duration_seconds', 'HTTP request duration in seconds', ['method', 'path'])
  readonly backendOps = new LabeledCounter('callfs_backend_ops_total', 'Total number of backend operations', ['backend_type', 'operation'])
  readonly fileOps = new LabeledCounter('callfs_file_operations_total', 'Total number of file operations', ['operation', 'backend_type'])
  readonly lockOps = new LabeledCounter('callfs_lock_operations_total', 'Total number of lock operations', ['operation', 'status'])
  readonly lockDuration = new LabeledHistogram('callfs_lock_operation_duration_seconds', 'Lock operation duration in seconds', ['operation'])
  readonly errors = new LabeledCounter('callfs_errors_total', 'Total number of errors by component', ['component', 'error_type'])
  readonly scrapes = new LabeledCounter('promhttp_metric_handler_requests_total', 'Total number of scrapes by HTTP status code.', ['code'])
  activeLocks = 0
  scrapesInFlight = 0
  private readonly startedAt = Date.now() / 1000

  constructor() {
    // promhttp pre-creates these three children.
    for (const code of ['200', '500', '503']) this.scrapes.add([code], 0)
  }

  /** One finished request, as the router's metrics middleware (and, for GET files, the handler) records it. */
  recordRequest(method: string, routePattern: string, status: number, seconds: number, times = 1): void {
    this.requests.add([method, routePattern, String(status)], times)
    this.duration.observe([method, routePattern], seconds, times)
    if (routePattern === '/v1/files/*' && method === 'GET') {
      this.requests.add([method, '/files/*', String(status)], times)
      this.duration.observe([method, '/files/*'], seconds, times)
    }
  }

  render(): string {
    const out: string[] = []
    const gauge = (name: string, help: string, value: number, labels = ''): void => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name}${labels} ${goFloat(value)}`)
    }
    const counter = (name: string, help: string, value: number): void => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${goFloat(value)}`)
    }
    gauge('callfs_active_locks', 'Number of currently active locks', this.activeLocks)
    this.backendOps.render(out)
    this.errors.render(out)
    this.fileOps.render(out)
    this.duration.render(out)
    this.requests.render(out)
    this.lockDuration.render(out)
    this.lockOps.render(out)
    counter('callfs_single_use_link_generations_total', 'Total number of single-use links generated', 0)

    const mem = process.memoryUsage()
    const cpu = process.cpuUsage()
    out.push(
      '# HELP go_gc_duration_seconds A summary of the pause duration of garbage collection cycles.',
      '# TYPE go_gc_duration_seconds summary',
      'go_gc_duration_seconds{quantile="0"} 2.8e-05',
      'go_gc_duration_seconds{quantile="0.25"} 4.1e-05',
      'go_gc_duration_seconds{quantile="0.5"} 6.3e-05',
      'go_gc_duration_seconds{quantile="0.75"} 0.000102',
      'go_gc_duration_seconds{quantile="1"} 0.000481',
      'go_gc_duration_seconds_sum 0.001873',
      'go_gc_duration_seconds_count 21',
    )
    gauge('go_goroutines', 'Number of goroutines that currently exist.', 14)
    gauge('go_info', 'Information about the Go environment.', 1, '{version="go1.23.4"}')
    gauge('go_memstats_alloc_bytes', 'Number of bytes allocated and still in use.', mem.heapUsed)
    gauge('go_memstats_heap_inuse_bytes', 'Number of heap bytes that are in use.', mem.heapTotal)
    gauge('go_threads', 'Number of OS threads created.', 9)
    counter('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.', (cpu.user + cpu.system) / 1e6)
    const fds = openFds()
    if (fds !== null) gauge('process_open_fds', 'Number of open file descriptors.', fds)
    gauge('process_resident_memory_bytes', 'Resident memory size in bytes.', mem.rss)
    gauge('process_start_time_seconds', 'Start time of the process since unix epoch in seconds.', Math.floor(this.startedAt * 100) / 100)
    gauge('promhttp_metric_handler_requests_in_flight', 'Current number of scrapes being served.', this.scrapesInFlight)
    this.scrapes.render(out)
    return `${out.join('\n')}\n`
  }
}

function openFds(): number | null {
  try {
    return readdirSync('/proc/self/fd').length
  } catch {
    return null // not Linux: client_golang leaves the process collector's fd metrics out too
  }
}

function sortedEntries<V>(m: Map<string, V>): Array<[string, V]> {
  return [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
}

function labelSet(names: string[], values: string[]): string {
  if (names.length === 0) return ''
  return `{${names.map((n, i) => `${n}="${escapeLabel(values[i] ?? '')}"`).join(',')}}`
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

/** Go's strconv.FormatFloat(f, 'g', -1, 64), which client_golang uses for every sample value. */
function goFloat(v: number): string {
  if (Number.isNaN(v)) return 'NaN'
  if (v === Infinity) return '+Inf'
  if (v === -Infinity) return '-Inf'
  if (v === 0) return Object.is(v, -0) ? '-0' : '0'
  const [mantissa, expStr] = v.toExponential().split('e')
  const exp = Number(expStr)
  // Shortest 'g' switches to an exponent below 1e-4 and from 1e6 on (e.g. 2.905512e+06).
  if (exp < -4 || exp >= 6) return `${mantissa}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`
  return String(v)
}

// ---------------------------------------------------------------------------------------------
// Storage: metadata in memory (CallFS keeps it in PostgreSQL), content in memory or on disk.

interface Inode {
  name: string
  path: string
  type: 'file' | 'directory'
  size: number
  mode: string
  uid: number
  gid: number
  mtime: Date
  data?: Buffer
}

class CallfsError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}
const notFound = (): CallfsError => new CallfsError(404, 'FILE_NOT_FOUND', 'metadata not found')
const internal = (status: number, message: string): CallfsError => new CallfsError(status, 'INTERNAL_ERROR', message)

class Store {
  private readonly inodes = new Map<string, Inode>()
  constructor(private readonly dataDir: string | null) {
    this.inodes.set('/', dirInode('/'))
  }
  get backendType(): string {
    return 'localfs'
  }
  get(path: string): Inode | undefined {
    return this.inodes.get(path)
  }
  children(path: string): Inode[] {
    const prefix = path === '/' ? '/' : `${path}/`
    return [...this.inodes.values()]
      .filter((n) => n.path !== '/' && n.path.startsWith(prefix) && !n.path.slice(prefix.length).includes('/'))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  }
  private diskPath(path: string): string {
    if (!this.dataDir) throw new Error('no data dir')
    const root = resolve(this.dataDir)
    const p = resolve(root, `.${path}`)
    if (p !== root && !p.startsWith(root + sep)) throw internal(400, 'invalid path')
    return p
  }
  async ensureParents(path: string): Promise<void> {
    const parts = path.split('/').filter(Boolean)
    let cur = ''
    for (const part of parts.slice(0, -1)) {
      cur += `/${part}`
      const n = this.inodes.get(cur)
      if (n && n.type !== 'directory') throw internal(500, `failed to ensure parent directories: ${cur} is not a directory`)
      if (!n) await this.mkdir(cur)
    }
  }
  async mkdir(path: string): Promise<void> {
    if (this.dataDir) {
      try {
        await mkdir(this.diskPath(path), {recursive: true})
      } catch (e) {
        throw internal(500, `failed to create directory in backend: ${errText(e)}`)
      }
    }
    this.inodes.set(path, dirInode(path))
  }
  async write(path: string, body: Buffer): Promise<void> {
    if (this.dataDir) {
      try {
        const p = this.diskPath(path)
        await mkdir(dirname(p), {recursive: true})
        await writeFile(p, body)
      } catch (e) {
        if (e instanceof CallfsError) throw e
        throw internal(500, `failed to create file in backend: ${errText(e)}`)
      }
    }
    const prev = this.inodes.get(path)
    this.inodes.set(path, {
      ...fileInode(path, body.length),
      mtime: new Date(),
      mode: prev?.mode ?? '0644',
      data: this.dataDir ? undefined : body,
    })
  }
  async open(path: string, n: Inode): Promise<{stream: NodeJS.ReadableStream; size: number} | Buffer> {
    if (!this.dataDir) return n.data ?? Buffer.alloc(0)
    const p = this.diskPath(path)
    try {
      const st = await stat(p)
      return {stream: createReadStream(p), size: st.size}
    } catch (e) {
      throw internal(500, `failed to open file: ${errText(e)}`)
    }
  }
  async remove(path: string): Promise<void> {
    const n = this.inodes.get(path)
    if (!n) throw notFound()
    if (n.type === 'directory' && this.children(path).length > 0) throw internal(500, 'directory not empty')
    if (path === '/') throw internal(500, 'cannot delete the root directory')
    if (this.dataDir) {
      try {
        await rm(this.diskPath(path), {recursive: false, force: true})
      } catch (e) {
        // rm of a directory without recursive fails; an empty one is removed with rmdir semantics.
        try {
          await rm(this.diskPath(path), {recursive: true, force: true})
        } catch {
          throw internal(500, `failed to delete from backend: ${errText(e)}`)
        }
      }
    }
    this.inodes.delete(path)
  }
}

function dirInode(path: string): Inode {
  return {name: path === '/' ? '' : (path.split('/').pop() ?? ''), path, type: 'directory', size: 0, mode: '0755', uid: 1000, gid: 1000, mtime: new Date()}
}
function fileInode(path: string, size: number): Inode {
  return {name: path.split('/').pop() ?? '', path, type: 'file', size, mode: '0644', uid: 1000, gid: 1000, mtime: new Date()}
}
function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}
/** Go's time.Format("2006-01-02T15:04:05Z07:00") of a UTC time. */
function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z')
}

// ---------------------------------------------------------------------------------------------
// Locks, as locks/redis_manager.go takes them.

class RedisLocks {
  private constructor(
    private readonly redis: RedisClient,
    private readonly owner: string,
    private readonly metrics: CallfsMetrics,
  ) {}

  static async connect(url: string, owner: string, metrics: CallfsMetrics): Promise<RedisLocks> {
    const {Redis} = await import('ioredis')
    const redis = new Redis(url, {lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 3000, enableOfflineQueue: false, retryStrategy: () => 200})
    redis.on('error', () => undefined) // surfaced per operation, as go-redis does
    try {
      await redis.connect()
      await redis.ping()
    } catch {
      redis.disconnect()
      throw new Error(`CallFS simulator: failed to connect to Redis at ${maskUrl(url)}`)
    }
    return new RedisLocks(redis, owner, metrics)
  }

  /** Runs `fn` holding `callfs:lock:<key>`; a lock someone else holds fails like CallFS: 500. */
  async with<T>(key: string, what: string, fn: () => Promise<T>): Promise<T> {
    const lockKey = `callfs:lock:${key}`
    const started = Date.now()
    let acquired: boolean
    try {
      acquired = (await this.redis.set(lockKey, this.owner, 'EX', LOCK_TTL_SECONDS, 'NX')) === 'OK'
    } catch (e) {
      this.metrics.lockOps.add(['acquire', 'failure'])
      throw internal(500, `failed to acquire lock: ${errText(e)}`)
    } finally {
      this.metrics.lockDuration.observe(['acquire'], (Date.now() - started) / 1000)
    }
    if (!acquired) {
      this.metrics.lockOps.add(['acquire', 'failure'])
      throw internal(500, `failed to acquire lock for ${what}`)
    }
    this.metrics.lockOps.add(['acquire', 'success'])
    this.metrics.activeLocks++
    try {
      return await fn()
    } finally {
      const releasedAt = Date.now()
      try {
        await this.redis.eval(RELEASE_LUA, 1, lockKey, this.owner)
        this.metrics.lockOps.add(['release', 'success'])
      } catch {
        this.metrics.lockOps.add(['release', 'failure'])
      }
      this.metrics.lockDuration.observe(['release'], (Date.now() - releasedAt) / 1000)
      this.metrics.activeLocks = Math.max(0, this.metrics.activeLocks - 1)
    }
  }

  async close(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      await Promise.race([this.redis.quit(), new Promise((r) => (timer = setTimeout(r, 500)))])
    } catch {
      // already gone
    } finally {
      clearTimeout(timer)
    }
    this.redis.disconnect()
  }
}

function maskUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '****'
    return u.toString()
  } catch {
    return 'the configured URL'
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'strict-origin-when-cross-origin',
  'Permissions-Policy': 'geolocation=(), microphone=(), camera=(), payment=(), usb=(), magnetometer=(), gyroscope=(), accelerometer=()',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
}

const AUTH_FAILED_BODY = '{"code":"AUTHENTICATION_FAILED","message":"authentication failed"}'
const RATE_LIMIT_BODY = '{"code":"RATE_LIMIT_EXCEEDED","message":"Rate limit exceeded"}'
const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/** Go's http.NotFound. */
function goNotFound(res: http.ServerResponse): void {
  const body = '404 page not found\n'
  res.writeHead(404, {'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff', 'Content-Length': Buffer.byteLength(body)})
  res.end(body)
}

function sendJson(res: http.ServerResponse, status: number, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), ...extra})
  res.end(body)
}

/** handlers.SendErrorResponse: json.Encoder adds the trailing newline. */
function sendError(res: http.ServerResponse, e: CallfsError): void {
  sendJson(res, e.status, `${JSON.stringify({code: e.code, message: e.message})}\n`)
}

function readBody(req: http.IncomingMessage, cap: number): Promise<Buffer> {
  return new Promise((resolveBody, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size > cap) {
        reject(internal(500, `failed to create file in backend: upload exceeds the simulator's ${cap} byte in-memory limit`))
        req.destroy()
        return
      }
      chunks.push(c)
    })
    req.once('end', () => resolveBody(Buffer.concat(chunks)))
    req.once('error', reject)
    req.once('close', () => {
      if (!req.complete) reject(internal(500, 'upload interrupted'))
    })
  })
}

/** Decodes and checks a file path the way ParseFilePath does; null when it is invalid. */
function parseFilePath(rest: string): {full: string; engine: string; isDir: boolean; name: string} | null {
  let decoded: string
  try {
    decoded = decodeURIComponent(rest)
  } catch {
    return null
  }
  decoded = decoded.replace(/^\/+/, '')
  const isDir = decoded === '' || decoded.endsWith('/')
  const clean = decoded.replace(/\/+$/, '')
  if (clean.split('/').some((seg) => seg === '..') || clean.includes('\0') || clean.includes('//')) return null
  if (clean === '' || clean === '.') return {full: '/', engine: '/', isDir: true, name: ''}
  const full = `/${clean}${isDir ? '/' : ''}`
  return {full, engine: `/${clean}`, isDir, name: clean.split('/').pop() ?? ''}
}

export async function startCallfsSim(o: CallfsSimOptions): Promise<CallfsSim> {
  const instanceId = o.instanceId ?? randomBytes(16).toString('hex')
  if (!/^[0-9a-f]{32}$/.test(instanceId)) throw new Error('CallFS simulator: instanceId must be 32 lowercase hex characters, like the lock owner id CallFS generates')
  const apiKeys = new Set(o.apiKeys.filter((k) => k !== ''))
  const metrics = new CallfsMetrics()
  const store = new Store(o.dataDir ?? null)
  if (o.dataDir) await mkdir(o.dataDir, {recursive: true})
  const locks = o.redisUrl ? await RedisLocks.connect(o.redisUrl, instanceId, metrics) : null
  const isTls = Boolean(o.tls)

  let healthFault: CallfsHealthFault = 'none'
  let filesFault: {status: 500 | 503; everyNth?: number} | null = null
  let filesCount = 0
  let latencyMs = 0
  let metricsFault: CallfsMetricsFault = 'none'
  const rateWindow: number[] = []
  const timers = new Set<ReturnType<typeof setTimeout>>()
  const requests: CallfsRequestLog[] = []
  let stopped = false

  const authOf = (req: http.IncomingMessage): {state: CallfsRequestLog['auth']} => {
    const header = req.headers.authorization
    if (header === undefined || header === '') return {state: 'none'}
    // APIKeyAuthenticator.Authenticate: TrimPrefix("Bearer "), TrimSpace, exact match.
    const token = (header.startsWith('Bearer ') ? header.slice(7) : header).trim()
    return {state: token !== '' && apiKeys.has(token) ? 'valid' : 'invalid'}
  }

  const sleep = (ms: number): Promise<void> =>
    new Promise((r) => {
      const t = setTimeout(() => {
        timers.delete(t)
        r()
      }, ms)
      timers.add(t)
    })

  const scrape = (res: http.ServerResponse): void => {
    metrics.scrapesInFlight++
    try {
      const body = metrics.render()
      res.writeHead(200, {'Content-Type': METRICS_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body)})
      res.end(body)
      metrics.scrapes.add(['200'])
    } finally {
      metrics.scrapesInFlight--
    }
  }

  /** The metrics endpoint's faults; true when one answered. */
  const metricsFaulted = (req: http.IncomingMessage, res: http.ServerResponse): boolean => {
    switch (metricsFault) {
      case 'none':
        return false
      case 'not-found':
        goNotFound(res)
        return true
      case 'hang':
      case 'html':
        serveFault(metricsFault, req, res)
        return true
    }
  }

  const logRequest = (req: http.IncomingMessage, res: http.ServerResponse, auth: CallfsRequestLog['auth'], onDone?: (status: number) => void): void => {
    let done = false
    const finish = (): void => {
      if (done) return
      done = true
      const status = res.headersSent ? res.statusCode : 0
      requests.push({method: req.method ?? '', path: (req.url ?? '/').split('?')[0] ?? '/', status, auth})
      onDone?.(status)
    }
    res.once('finish', finish)
    res.once('close', finish)
  }

  // ---- files API ------------------------------------------------------------------------------

  const handleFiles = async (req: http.IncomingMessage, res: http.ServerResponse, rest: string): Promise<void> => {
    const method = req.method ?? 'GET'
    const p = parseFilePath(rest)
    if (!p) throw internal(400, 'invalid path')

    if (filesFault) {
      filesCount++
      const every = filesFault.everyNth ?? 1
      if (every <= 1 || filesCount % every === 0) {
        metrics.errors.add(['backend', filesFault.status === 503 ? 'unavailable' : 'internal_error'])
        throw internal(filesFault.status, `failed to ${method === 'GET' || method === 'HEAD' ? 'open file' : 'write file in backend'}: backend unavailable`)
      }
    }

    switch (method) {
      case 'GET': {
        const n = store.get(p.engine)
        if (!n) throw notFound()
        const common = {
          'X-CallFS-Type': n.type,
          'X-CallFS-Mode': n.mode,
          'X-CallFS-UID': String(n.uid),
          'X-CallFS-GID': String(n.gid),
          'X-CallFS-MTime': rfc3339(n.mtime),
        }
        if (n.type === 'directory') {
          metrics.backendOps.add([store.backendType, 'list'])
          const items = store.children(p.engine).map((c) => ({name: c.name, path: c.path, type: c.type, size: c.size, mode: c.mode, uid: c.uid, gid: c.gid, mtime: rfc3339(c.mtime)}))
          // A nil Go slice encodes as null.
          const body = `${items.length === 0 ? 'null' : JSON.stringify(items)}\n`
          res.writeHead(200, {'Content-Type': 'application/json', ...common, 'X-CallFS-Size': '0', 'Content-Length': Buffer.byteLength(body)})
          res.end(body)
          return
        }
        const content = await store.open(p.engine, n)
        metrics.backendOps.add([store.backendType, 'open'])
        metrics.fileOps.add(['read', store.backendType])
        const size = Buffer.isBuffer(content) ? content.length : content.size
        res.writeHead(200, {'Content-Type': 'application/octet-stream', 'Content-Length': size, ...common, 'X-CallFS-Size': String(size)})
        if (Buffer.isBuffer(content)) res.end(content)
        else {
          content.stream.on('error', () => res.destroy())
          content.stream.pipe(res)
        }
        return
      }
      case 'HEAD': {
        const n = store.get(p.engine)
        if (!n) throw notFound()
        metrics.backendOps.add([store.backendType, 'stat'])
        res.writeHead(200, {
          'X-CallFS-Type': n.type,
          'X-CallFS-Size': String(n.size),
          'X-CallFS-Mode': n.mode,
          'X-CallFS-UID': String(n.uid),
          'X-CallFS-GID': String(n.gid),
          'X-CallFS-MTime': rfc3339(n.mtime),
          'X-CallFS-Instance-ID': DISCOVERY_INSTANCE_ID,
        })
        res.end()
        return
      }
      case 'PUT': {
        if (p.isDir) throw internal(400, 'PUT method cannot be used with directory paths (trailing slash)')
        const existing = store.get(p.engine)
        if (existing && existing.type !== 'file') throw internal(400, 'cannot update directory with file content')
        const body = await readBody(req, MEMORY_FILE_CAP)
        const write = async (): Promise<number> => {
          const now = store.get(p.engine)
          if (!now) await store.ensureParents(p.engine)
          await store.write(p.engine, body)
          metrics.backendOps.add([store.backendType, now ? 'update' : 'create'])
          if (!now) metrics.fileOps.add(['create', store.backendType])
          return now ? 200 : 201
        }
        const status = locks ? await locks.with(`file:${p.engine}`, existing ? 'file update' : 'file creation', write) : await write()
        res.writeHead(status, {'Content-Length': 0})
        res.end()
        return
      }
      case 'POST': {
        const existing = store.get(p.engine)
        if (existing) {
          // The real handler answers these with its own messages, so their code is INTERNAL_ERROR.
          if (p.isDir) {
            if (existing.type !== 'directory') throw internal(409, 'path exists as file, cannot create directory')
            res.writeHead(200, {'Content-Length': 0})
            res.end()
            return
          }
          if (existing.type !== 'file') throw internal(409, 'path exists as directory, cannot create file')
          throw internal(409, 'file already exists, use PUT to update')
        }
        if (p.isDir) {
          const create = async (): Promise<void> => {
            if (store.get(p.engine)) throw new CallfsError(409, 'FILE_ALREADY_EXISTS', 'metadata already exists')
            await store.ensureParents(p.engine)
            await store.mkdir(p.engine)
            metrics.backendOps.add([store.backendType, 'create_directory'])
          }
          if (locks) await locks.with(`dir:${p.engine}`, 'directory creation', create)
          else await create()
        } else {
          const body = await readBody(req, MEMORY_FILE_CAP)
          const create = async (): Promise<void> => {
            if (store.get(p.engine)) throw new CallfsError(409, 'FILE_ALREADY_EXISTS', 'metadata already exists')
            await store.ensureParents(p.engine)
            await store.write(p.engine, body)
            metrics.backendOps.add([store.backendType, 'create'])
            metrics.fileOps.add(['create', store.backendType])
          }
          if (locks) await locks.with(`file:${p.engine}`, 'file creation', create)
          else await create()
        }
        res.writeHead(201, {'Content-Length': 0})
        res.end()
        return
      }
      case 'DELETE': {
        const n = store.get(p.engine)
        if (!n) throw notFound()
        const remove = async (): Promise<void> => {
          await store.remove(p.engine)
          metrics.backendOps.add([store.backendType, 'delete'])
        }
        if (locks) await locks.with(`file:${p.engine}`, 'file deletion', remove)
        else await remove()
        res.writeHead(204)
        res.end()
        return
      }
      default:
        // chi's 405 has an empty body.
        res.writeHead(405, {Allow: 'GET, HEAD, POST, PUT, DELETE', 'Content-Length': 0})
        res.end()
    }
  }

  const handleDirectories = (req: http.IncomingMessage, res: http.ServerResponse, rest: string): void => {
    const p = parseFilePath(rest.endsWith('/') || rest === '' ? rest : `${rest}/`)
    if (!p) throw internal(400, 'invalid path')
    const n = store.get(p.engine)
    if (!n) throw notFound()
    if (n.type !== 'directory') throw internal(400, 'path is not a directory')
    const query = new URLSearchParams((req.url ?? '').split('?')[1] ?? '')
    const recursive = query.get('recursive') === 'true'
    const maxDepthRaw = Number.parseInt(query.get('max_depth') ?? '', 10)
    const maxDepth = Number.isNaN(maxDepthRaw) || maxDepthRaw < 0 ? 100 : Math.min(maxDepthRaw, 1000)
    const walk = (path: string, depth: number): Inode[] => {
      const kids = store.children(path)
      if (!recursive || depth >= maxDepth) return kids
      return kids.flatMap((k) => (k.type === 'directory' ? [k, ...walk(k.path, depth + 1)] : [k]))
    }
    const items = walk(p.engine, 0).map((c) => ({name: c.name, path: c.path, type: c.type, size: c.size, mode: c.mode, uid: c.uid, gid: c.gid, mtime: rfc3339(c.mtime)}))
    const body = `${JSON.stringify({path: p.engine, type: 'directory', recursive, ...(recursive ? {max_depth: maxDepth} : {}), count: items.length, items: items.length ? items : null})}\n`
    res.writeHead(200, {'Content-Type': 'application/json', 'X-CallFS-Type': 'directory', 'X-CallFS-Count': String(items.length), 'X-CallFS-Recursive': String(recursive), 'Content-Length': Buffer.byteLength(body)})
    res.end(body)
  }

  // ---- the main router ------------------------------------------------------------------------

  const mainHandler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const started = Date.now()
    const method = req.method ?? 'GET'
    const path = (req.url ?? '/').split('?')[0] ?? '/'
    const auth = authOf(req)

    // Health faults stand in front of CallFS (a proxy's page, a hung upstream): CallFS never sees them.
    if (path === '/health' && healthFault !== 'none') {
      logRequest(req, res, auth.state)
      serveFault(healthFault, req, res)
      return
    }
    if (path === '/metrics' && metricsFault !== 'none') {
      logRequest(req, res, auth.state)
      metricsFaulted(req, res)
      return
    }

    let route = 'unmatched'
    logRequest(req, res, auth.state, (status) => {
      if (status !== 0) metrics.recordRequest(method, route, status, (Date.now() - started) / 1000)
    })
    res.setHeader('X-Request-ID', randomBytes(8).toString('hex'))
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v)
    if (isTls) res.setHeader('Strict-Transport-Security', 'max-age=31536000; includeSubDomains; preload')

    const fail = (e: unknown): void => {
      if (res.headersSent) {
        res.destroy()
        return
      }
      sendError(res, e instanceof CallfsError ? e : internal(500, errText(e)))
    }

    try {
      if (path === '/health') {
        route = '/health'
        if (method !== 'GET') {
          res.writeHead(405, {Allow: 'GET', 'Content-Length': 0})
          res.end()
          return
        }
        sendJson(res, 200, '{"status":"ok"}')
        return
      }
      if (path === '/metrics') {
        route = '/metrics'
        if (auth.state !== 'valid') {
          sendJson(res, 401, AUTH_FAILED_BODY)
          return
        }
        scrape(res)
        return
      }
      if (path === '/v1' || path.startsWith('/v1/')) {
        route = '/v1/*'
        if (auth.state !== 'valid' && o.openAccess !== true) {
          sendJson(res, 401, AUTH_FAILED_BODY)
          return
        }
        const sub = path.slice(3)
        const files = sub === '/files' || sub.startsWith('/files/')
        const dirs = sub === '/directories' || sub.startsWith('/directories/')
        if (!files && !dirs) {
          goNotFound(res)
          return
        }
        route = files ? '/v1/files/*' : '/v1/directories/*'
        if (o.rateLimitPerMinute != null) {
          const now = Date.now()
          while (rateWindow.length > 0 && (rateWindow[0] ?? 0) <= now - 60_000) rateWindow.shift()
          if (rateWindow.length >= o.rateLimitPerMinute) {
            sendJson(res, 429, RATE_LIMIT_BODY)
            return
          }
          rateWindow.push(now)
        }
        const rest = files ? sub.slice('/files'.length) : sub.slice('/directories'.length)
        const run = async (): Promise<void> => {
          if (latencyMs > 0 && files) await sleep(latencyMs)
          if (stopped || res.destroyed) return
          if (files) await handleFiles(req, res, rest)
          else handleDirectories(req, res, rest)
        }
        run().catch(fail)
        return
      }
      goNotFound(res)
    } catch (e) {
      fail(e)
    }
  }

  const metricsHandler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0] ?? '/'
    // Go's ServeMux with one pattern: exactly /metrics, every other path is a 404.
    if (path !== '/metrics') {
      goNotFound(res)
      return
    }
    if (metricsFaulted(req, res)) return
    scrape(res)
  }

  // ---- start, and stop on every path ----------------------------------------------------------

  let main: LoopbackServer | null = null
  let metricsServer: LoopbackServer | null = null
  const stop = async (): Promise<void> => {
    stopped = true
    for (const t of timers) clearTimeout(t)
    timers.clear()
    await Promise.all([main?.close(), metricsServer?.close(), locks?.close()])
  }
  try {
    main = await listenLoopback(mainHandler, {host: o.host, port: o.port ?? 0, tls: o.tls ?? null})
    if (o.metricsPort !== null) metricsServer = await listenLoopback(metricsHandler, {host: o.host, port: o.metricsPort ?? 0, tls: null})
  } catch (e) {
    await stop()
    throw new Error(`CallFS simulator: could not listen: ${errText(e)}`)
  }

  return {
    url: main.url,
    metricsUrl: metricsServer ? `${metricsServer.url}/metrics` : null,
    port: main.port,
    metricsPort: metricsServer?.port ?? null,
    instanceId,
    requests,
    setHealthFault(f) {
      healthFault = f
    },
    setFilesFault(f) {
      filesFault = f
      filesCount = 0
    },
    setLatency(ms) {
      latencyMs = Math.max(0, ms)
    },
    setMetricsFault(f) {
      metricsFault = f
    },
    recordTraffic(t) {
      if (t.count <= 0) return
      metrics.recordRequest(t.method ?? 'GET', t.path ?? '/v1/files/*', t.status, t.seconds, t.count)
      if (t.status >= 500) metrics.errors.add(['backend', 'internal_error'], t.count)
    },
    stop,
  }
}
