// The one Redis client and the one key scanner (ioredis, loaded only when a probe runs).
// SCAN, never KEYS: every command here does a bounded amount of work, so a diagnosis of a
// production Redis never stalls it.
import {isIP} from 'node:net'
import type {Redis} from 'ioredis'
import {maskUrlPasswords} from '../config/mask.js'
import {settleWithin} from './postgres.js'
import {Reachability} from './reach.js'
import {abortedError, errorMessageOf, reachable, socketError} from './tcp.js'
import {probeFail, probeOk, type ProbeError, type ProbeOptions, type ProbeResult} from './types.js'
import {formatMs} from '../util/time.js'

export interface RedisTarget {
  url: string
  /** From the target's *_env variable; wins over a password in the URL. */
  password?: string
}

interface RedisEndpoint {
  host: string
  port: number
  db: number
  username: string | undefined
  password: string | undefined
  tls: boolean
}

function parseRedisUrl(url: string): RedisEndpoint {
  const u = new URL(url)
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error('not a redis:// URL')
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0
  if (!Number.isInteger(db) || db < 0) throw new Error('bad database number')
  return {
    host: (u.hostname || '127.0.0.1').replace(/^\[(.*)\]$/, '$1'),
    port: u.port ? Number(u.port) : 6379,
    db,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : (u.searchParams.get('password') ?? undefined),
    tls: u.protocol === 'rediss:',
  }
}

/** redis://:secret@h:6379/0 → redis://:****@h:6379/0 (also user:secret@ and ?password=). */
export function maskRedisUrl(url: string): string {
  return maskUrlPasswords(url)
}

/** The Redis error prefix ("WRONGPASS", "NOAUTH", "OOM") or the errno. */
function errorCode(error: unknown): string | undefined {
  const e = error as {code?: unknown; message?: unknown; name?: unknown}
  if (typeof e?.code === 'string') return e.code
  if (e?.name === 'ReplyError' && typeof e.message === 'string') return /^([A-Z][A-Z_-]+)\b/.exec(e.message)?.[1]
  return undefined
}

/** Turns whatever ioredis or Redis said into one actionable line. */
function redisError(error: unknown, host: string, where: string, scrub: (text: string) => string): ProbeError {
  const code = errorCode(error)
  const said = scrub(errorMessageOf(error))
  const tail = code ? {code} : {}
  const isErrno = (error as {name?: unknown})?.name !== 'ReplyError' && typeof (error as {code?: unknown})?.code === 'string'
  if (isErrno && code?.startsWith('E') && !code.startsWith('ERR_')) return socketError(error, host, where)
  switch (code) {
    case 'NOAUTH':
      return {kind: 'auth', message: `Redis at ${where} requires a password (${said}) — set the password variable`, ...tail}
    case 'WRONGPASS':
      return {kind: 'auth', message: `Redis at ${where} refused the credentials (${said}) — check the password variable`, ...tail}
    case 'NOPERM':
      return {kind: 'permission', message: `Redis at ${where} denied a command to this user (${said}) — grant it in the ACL`, ...tail}
    case 'OOM':
      return {kind: 'capacity', message: `Redis at ${where} is out of memory (${said}) — check maxmemory and the eviction policy`, ...tail}
    case 'READONLY':
      return {kind: 'permission', message: `Redis at ${where} is a read-only replica (${said}) — point the redis URL at the primary`, ...tail}
  }
  if (/user executing the script can't run this command/i.test(said)) {
    // The script ran, but a command inside it is denied to this user (Redis says ERR, not NOPERM).
    return {kind: 'permission', message: `Redis at ${where} denied a command inside a script to this user (${said}) — grant it in the ACL`, ...tail}
  }
  if (/max(imum)? number of clients reached/i.test(said)) {
    return {kind: 'capacity', message: `Redis at ${where} has no free client slots (${said}) — raise maxclients or find the leaking client`, ...tail}
  }
  if (/AUTH.*without any password configured|no password is set/i.test(said)) {
    return {kind: 'auth', message: `Redis at ${where} has no password but one was given (${said}) — unset the password variable`, ...tail}
  }
  if (/^Command timed out/i.test(said)) {
    return {kind: 'timeout', message: `Redis at ${where} did not answer a command in time — check its latency (SLOWLOG, INFO)`}
  }
  if (/certificate|SSL|TLS|self[- ]signed/i.test(said) || (code ?? '').startsWith('ERR_TLS') || (code ?? '').includes('CERT')) {
    return {kind: 'tls', message: `TLS to Redis at ${where} failed (${said}) — check rediss:// and the certificate`, ...tail}
  }
  if (/Connection is closed/i.test(said)) {
    return {kind: 'reset', message: `Redis at ${where} closed the connection — check the Redis log`, ...tail}
  }
  return {kind: 'other', message: `Redis at ${where}: ${said}`, ...tail}
}

/**
 * Connects, proves the server answers (PING), runs `fn`, always disconnects. The whole call is
 * bounded by opts.timeoutMs and opts.signal. An endpoint that refuses or never answers is
 * recorded in opts.reach so the rest of the run does not wait on it again.
 */
export async function withRedis<T>(target: RedisTarget, opts: ProbeOptions, fn: (r: Redis) => Promise<T>): Promise<ProbeResult<T>> {
  const startedAt = Date.now()
  let endpoint: RedisEndpoint
  try {
    endpoint = parseRedisUrl(target.url)
  } catch {
    return probeFail({kind: 'other', message: `invalid Redis URL ${maskRedisUrl(target.url)} — expected redis://host:port/db`}, startedAt)
  }
  const key = Reachability.key(endpoint.host, endpoint.port)
  const where = key
  const known = opts.reach?.known(key)
  if (known) return probeFail(known, startedAt)
  if (opts.signal?.aborted) return probeFail(abortedError(`the Redis probe of ${where}`), startedAt)
  // Only an endpoint that accepts connections is worth loading ioredis for (unix sockets: always).
  const unreachable = endpoint.host.startsWith('/') ? null : await reachable(endpoint.host, endpoint.port, opts)
  if (unreachable) return probeFail(unreachable, startedAt)

  const password = target.password ?? endpoint.password
  const scrub = (text: string): string => (password && password.length >= 3 ? text.split(password).join('****') : text)
  const {Redis: RedisClient} = await import('ioredis')
  const r = new RedisClient({
    host: endpoint.host,
    port: endpoint.port,
    db: endpoint.db,
    username: endpoint.username,
    password,
    tls: endpoint.tls ? (isIP(endpoint.host) ? {} : {servername: endpoint.host}) : undefined, // SNI takes names only
    lazyConnect: true,
    connectTimeout: opts.timeoutMs,
    commandTimeout: opts.timeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null, // no reconnect storm against a struggling server
    autoResubscribe: false,
    // Our own PING proves readiness; ioredis' INFO-based check would print a warning for
    // ACL users without INFO and wait out a dataset load instead of reporting it.
    enableReadyCheck: false,
  })
  let firstError: unknown
  let tcpConnected = false
  let answered = false
  r.on('error', (error: unknown) => (firstError ??= error))
  r.on('connect', () => (tcpConnected = true))

  const work = (async () => {
    await r.connect()
    try {
      await r.ping()
    } catch (error) {
      if (errorCode(error) !== 'NOPERM') throw error // an answer all the same
    }
    answered = true
    return fn(r)
  })()
  work.catch(() => {}) // settled below, or abandoned at the deadline

  const settled = await settleWithin(work, opts)
  r.disconnect()
  if (settled.state === 'done') return probeOk(settled.value, startedAt)
  let error: ProbeError
  if (settled.state === 'aborted') {
    error = abortedError(`the Redis probe of ${where}`)
  } else if (settled.state === 'timeout') {
    error = !tcpConnected
      ? {kind: 'timeout', message: `Redis at ${where} did not accept a connection within ${formatMs(opts.timeoutMs)} — check the host, port and firewall`}
      : !answered
        ? {kind: 'timeout', message: `Redis at ${where} accepted the connection but did not answer within ${formatMs(opts.timeoutMs)} — is it stopped, overloaded or busy (SLOWLOG, a long script)?`}
        : {kind: 'timeout', message: `Redis at ${where} did not finish the probe within ${formatMs(opts.timeoutMs)} — check its latency (SLOWLOG, INFO)`}
  } else {
    // Before the first answer the 'error' event carries the cause; the rejection only says "Connection is closed".
    error = redisError(answered ? settled.error : (firstError ?? settled.error), endpoint.host, where, scrub)
    if (!answered && tcpConnected && error.kind === 'reset' && !endpoint.tls) {
      // Redis refuses a client it has no slot for by writing one error line and closing; ioredis
      // only reports the closed socket. Listen once for that line to say why.
      const said = await greetingError(endpoint.host, endpoint.port, Math.min(300, opts.timeoutMs))
      if (said) error = redisError(Object.assign(new Error(said), {name: 'ReplyError'}), endpoint.host, where, scrub)
    }
  }
  if (!answered) opts.reach?.record(key, error)
  return probeFail(error, startedAt)
}

/** The error line a Redis writes to a new connection before closing it ("-ERR max number of clients reached"), if any. */
async function greetingError(host: string, port: number, withinMs: number): Promise<string | null> {
  const {connect} = await import('node:net')
  return new Promise((resolve) => {
    let text = ''
    const socket = connect({host, port})
    const done = (value: string | null) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(value)
    }
    const timer = setTimeout(() => done(null), withinMs)
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8')
      if (text.includes('\r\n')) done(text.startsWith('-') ? (text.slice(1).split('\r\n')[0] ?? null) : null)
    })
    socket.on('error', () => done(null))
    socket.on('close', () => done(text.startsWith('-') ? text.slice(1).trim() : null))
  })
}

/** INFO (or one section) parsed to key → value; `# Section` headers are dropped. */
export async function redisInfo(r: Redis, section?: string): Promise<Record<string, string>> {
  const text = section ? await r.info(section) : await r.info()
  const out: Record<string, string> = {}
  for (const line of text.split(/\r?\n/)) {
    if (!line || line.startsWith('#')) continue
    const at = line.indexOf(':')
    if (at > 0) out[line.slice(0, at)] = line.slice(at + 1)
  }
  return out
}

// ---------------------------------------------------------------------------------------
// Keys

export interface KeyInfo {
  /**
   * The key as a person reads it: printable UTF-8 as it is; a backslash, control and format
   * characters, and bytes that are not UTF-8 as \xNN (see displayBytes). inspectKeys: the key given.
   */
  key: string
  /** Milliseconds to expiry; -1 no expiry; -2 gone. */
  pttl: number
  /** OBJECT IDLETIME, when asked for and tracked (null under an LFU policy). */
  idleSeconds: number | null
  /** String value for display, capped at VALUE_CAP (a longer one ends in "…"); null for other types or when not asked for. */
  value: string | null
}

/** A key found by scanByExpiry: what is shown, and the exact bytes a guard compares. */
export interface ScannedKey extends KeyInfo {
  /** The key's exact bytes. */
  keyBytes: Buffer
  /** The value's exact bytes when it is a string of at most VALUE_CAP bytes; its first VALUE_CAP bytes when longer; null when not a string. */
  valueBytes: Buffer | null
  /** The value is longer than VALUE_CAP bytes: valueBytes holds only its start, so no guard can compare it. */
  valueTruncated: boolean
}

/** Bytes of a value read and compared; a longer value is only shown. */
export const VALUE_CAP = 200

function capValue(v: unknown): string | null {
  if (typeof v !== 'string') return null
  return v.length > VALUE_CAP ? `${v.slice(0, VALUE_CAP - 1)}…` : v
}

/** Length of the valid UTF-8 sequence at b[i] (overlongs, surrogates and > U+10FFFF are not), or 0. */
function utf8SequenceAt(b: Buffer, i: number): number {
  const c = b[i] ?? 0
  if (c < 0x80) return 1
  const n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0
  if (n === 0 || i + n > b.length) return 0
  for (let k = 1; k < n; k++) if (((b[i + k] ?? 0) & 0xc0) !== 0x80) return 0
  const c1 = b[i + 1] ?? 0
  if ((c === 0xe0 && c1 < 0xa0) || (c === 0xed && c1 > 0x9f) || (c === 0xf0 && c1 < 0x90) || (c === 0xf4 && c1 > 0x8f)) return 0
  return n
}

/** Characters shown escaped even in valid UTF-8: controls, format (bidi overrides), line/paragraph separators. */
const INVISIBLE = /^[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]$/u

/**
 * Bytes as a person reads them, unambiguously: printable UTF-8 as it is, a backslash as \\,
 * anything else (bytes that are not UTF-8, control and format characters) as \xNN per byte.
 */
export function displayBytes(b: Buffer): string {
  let plain = true // the common case: printable ASCII without a backslash
  for (const c of b) {
    if (c < 0x20 || c > 0x7e || c === 0x5c) {
      plain = false
      break
    }
  }
  if (plain) return b.toString('latin1')
  let out = ''
  for (let i = 0; i < b.length; ) {
    const n = utf8SequenceAt(b, i)
    const ch = n ? b.toString('utf8', i, i + n) : ''
    if (ch === '\\') out += '\\\\'
    else if (n && !INVISIBLE.test(ch)) out += ch
    else for (let k = i; k < i + Math.max(n, 1); k++) out += `\\x${(b[k] ?? 0).toString(16).padStart(2, '0')}`
    i += Math.max(n, 1)
  }
  return out
}

/** Whether displayBytes shows these bytes exactly as their UTF-8 text (nothing escaped). */
export function isPlainText(b: Buffer): boolean {
  return displayBytes(b) === b.toString('utf8')
}

/** Drops an incomplete UTF-8 sequence at the end (a value cut at a byte count). */
function trimIncomplete(b: Buffer): Buffer {
  for (let j = b.length - 1; j >= Math.max(0, b.length - 3); j--) {
    const c = b[j] ?? 0
    if ((c & 0xc0) === 0x80) continue
    const n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 1
    return j + n > b.length ? b.subarray(0, j) : b
  }
  return b
}

/** A value read as bytes (up to VALUE_CAP + 1 of them): its display, its exact bytes, and whether it was cut. */
function readValue(v: unknown): {value: string | null; valueBytes: Buffer | null; valueTruncated: boolean} {
  if (!Buffer.isBuffer(v)) return {value: null, valueBytes: null, valueTruncated: false}
  if (v.length <= VALUE_CAP) return {value: displayBytes(v), valueBytes: v, valueTruncated: false}
  return {value: `${displayBytes(trimIncomplete(v.subarray(0, VALUE_CAP - 1)))}…`, valueBytes: v.subarray(0, VALUE_CAP), valueTruncated: true}
}

function scannedKey(keyBytes: Buffer, pttl: number, idleSeconds: number | null, value: unknown): ScannedKey {
  return {key: displayBytes(keyBytes), keyBytes, pttl, idleSeconds, ...readValue(value)}
}

/** A SCAN MATCH pattern that matches `prefix` literally, then anything. */
export function prefixPattern(prefix: string): string {
  return `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`
}

const ABORTED = Symbol('aborted')

/** `p`, or ABORTED as soon as `signal` aborts (p is then abandoned: its rejection is swallowed). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T | typeof ABORTED> {
  if (!signal) return p
  p.catch(() => {})
  if (signal.aborted) return Promise.resolve(ABORTED)
  return new Promise((resolve, reject) => {
    const stop = (): void => resolve(ABORTED)
    signal.addEventListener('abort', stop, {once: true})
    p.then(
      (value) => {
        signal.removeEventListener('abort', stop)
        resolve(value)
      },
      (error: unknown) => {
        signal.removeEventListener('abort', stop)
        reject(error)
      },
    )
  })
}

type ScanStep<K> = (cursor: string) => Promise<[cursor: string, keys: K[]]>

async function* scanWith<K>(step: ScanStep<K>, signal: AbortSignal | undefined): AsyncGenerator<K[]> {
  let next: Promise<[string, K[]]> | undefined = step('0')
  try {
    while (next) {
      const got: [string, K[]] | typeof ABORTED = await untilAborted(next, signal)
      if (got === ABORTED) return
      const [cursor, keys]: [string, K[]] = got
      next = cursor === '0' || signal?.aborted ? undefined : step(cursor)
      if (keys.length > 0) yield keys
      if (signal?.aborted) return
    }
  } finally {
    next?.catch(() => {}) // the consumer stopped early: nobody waits for the prefetched batch
  }
}

/**
 * Keys matching `pattern`, in the batches SCAN returns, never blocking Redis: SCAN cursor
 * MATCH pattern COUNT count. The next SCAN is already in flight while the caller works on a
 * batch. Ends at cursor 0 or as soon as `signal` aborts (a SCAN in flight is not waited for).
 * A key may appear twice (SCAN's guarantee). Keys are decoded as UTF-8: scanKeyBytes for exact keys.
 */
export function scanKeys(r: Redis, pattern: string, o: {count?: number; signal?: AbortSignal} = {}): AsyncGenerator<string[]> {
  const count = o.count ?? DEFAULT_SCAN_COUNT
  return scanWith((cursor) => r.scan(cursor, 'MATCH', pattern, 'COUNT', count), o.signal)
}

/** scanKeys with every key as its exact bytes. */
export function scanKeyBytes(r: Redis, pattern: string, o: {count?: number; signal?: AbortSignal} = {}): AsyncGenerator<Buffer[]> {
  const count = o.count ?? DEFAULT_SCAN_COUNT
  return scanWith(async (cursor) => {
    const [next, keys] = await r.scanBuffer(cursor, 'MATCH', pattern, 'COUNT', count)
    return [next.toString(), keys]
  }, o.signal)
}

/**
 * One pipeline for a batch of keys: PTTL, then (optionally) OBJECT IDLETIME before GET, since
 * GET resets the idle time that PTTL and OBJECT leave alone.
 */
export async function inspectKeys(r: Redis, keys: string[], o: {idle?: boolean; values?: boolean} = {}): Promise<KeyInfo[]> {
  if (keys.length === 0) return []
  const p = r.pipeline()
  for (const key of keys) {
    p.pttl(key)
    if (o.idle) p.object('IDLETIME', key)
    if (o.values) p.get(key)
  }
  const replies = (await p.exec()) ?? []
  const per = 1 + (o.idle ? 1 : 0) + (o.values ? 1 : 0)
  return keys.map((key, i) => {
    const at = i * per
    const pttl = replies[at]
    const idle = o.idle ? replies[at + 1] : undefined
    const value = o.values ? replies[at + per - 1] : undefined
    return {
      key,
      pttl: !pttl?.[0] && typeof pttl?.[1] === 'number' ? pttl[1] : -2,
      idleSeconds: !idle?.[0] && typeof idle?.[1] === 'number' ? idle[1] : null,
      value: value && !value[0] ? capValue(value[1]) : null,
    }
  })
}

export interface ScanClassification {
  /** Keys SCAN returned (MATCH filters server-side, so: keys under the prefix), a key SCAN returned twice counted twice. */
  scanned: number
  /** Distinct keys still present when inspected (each counted once, however often SCAN returned it). */
  matched: number
  /** PTTL -1: never expires — for a lock, an orphan. Each key once. */
  withoutExpiry: ScannedKey[]
  /** Expiry above maxTtlMs: longer than any healthy holder sets. Each key once. */
  expiryAbove: ScannedKey[]
  /** Distinct keys with an expiry within maxTtlMs. */
  live: number
  /** Live keys per value as displayed (for locks: per owner). */
  liveByValue: Map<string, number>
  durationMs: number
  /** Stopped at maxKeys or by the signal before SCAN finished: the lists hold what was found until then. */
  truncated: boolean
}

/**
 * COUNT per SCAN: how many hash-table slots each call walks. SCAN's own cost (~0.8 µs per key
 * walked, prefix or not) dominates a scan; 1000 keeps each call near 1 ms, far under the 10 ms
 * that would show in SLOWLOG, even on a busy host. Larger COUNTs save round trips but not
 * Redis time, and push single calls towards 10 ms.
 */
const DEFAULT_SCAN_COUNT = 1000
/** Pipelined fallback: batches whose PTTL/MGET pipelines may be in flight at once. */
const IN_FLIGHT = 4
/** For values that are not strings, in liveByValue. */
const NOT_A_STRING = '(not a string)'

/**
 * One SCAN step and its classification, inside Redis: SCAN cursor MATCH pattern COUNT count,
 * then for each key (up to `limit`) PTTL; anomalies (no expiry, or above maxTtl) get OBJECT
 * IDLETIME, then their value (reading it resets the idle time). Values are read with GETRANGE
 * (VALUE_CAP + 1 bytes: one more tells a longer value), so a huge value costs no more than its
 * first bytes. Read-only; each call does one SCAN's worth of work (~1 ms at COUNT 1000).
 * Returns {cursor, walked, {key, pttl, idle, value}..., {owner value, count}... of the live
 * keys}: live keys are counted inside Redis, by owner, so a scan of a large lock table moves only
 * its anomalies (deduplicated here, as SCAN may return a key twice) and a few owner counts. A key
 * SCAN returns twice while Redis rehashes can be counted twice among the live ones: those counts
 * only feed the lock-pressure heuristic.
 */
const SCAN_BY_EXPIRY = `
local step = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local keys = step[2]
local maxTtl = tonumber(ARGV[4])
local n = math.min(#keys, tonumber(ARGV[5]))
local anomalies, live = {}, {}
for i = 1, n do
  local key = keys[i]
  local pttl = redis.call('PTTL', key)
  if pttl ~= -2 then
    if pttl == -1 or pttl > maxTtl then
      local idle = redis.pcall('OBJECT', 'IDLETIME', key)
      if type(idle) ~= 'number' then idle = -1 end
      local v = redis.pcall('GETRANGE', key, 0, ${VALUE_CAP})
      if type(v) ~= 'string' then v = false end
      anomalies[#anomalies + 1] = key
      anomalies[#anomalies + 1] = pttl
      anomalies[#anomalies + 1] = idle
      anomalies[#anomalies + 1] = v
    else
      local v = redis.pcall('GETRANGE', key, 0, ${VALUE_CAP})
      if type(v) ~= 'string' then v = '' end
      live[v] = (live[v] or 0) + 1
    end
  end
end
local owners = {}
for v, c in pairs(live) do
  owners[#owners + 1] = v
  owners[#owners + 1] = c
end
return {step[1], n, anomalies, owners}
`

/** Everything scanByExpiry's two ways of scanning share: each key once, in the result. */
class Classifier {
  private readonly seen = new Set<string>()
  private readonly owners = new Map<string, string>()
  constructor(readonly result: ScanClassification) {}

  /** False when this key was seen already (SCAN may return a key twice). */
  first(key: Buffer): boolean {
    const id = key.toString('latin1') // one char per byte: exact
    if (this.seen.has(id)) return false
    this.seen.add(id)
    return true
  }

  anomaly(key: Buffer, pttl: number, idleSeconds: number | null, value: unknown): void {
    if (!this.first(key)) return
    this.result.matched++
    ;(pttl === -1 ? this.result.withoutExpiry : this.result.expiryAbove).push(scannedKey(key, pttl, idleSeconds, value))
  }

  /** `n` live keys holding `value` (empty: not a string). */
  liveCount(value: unknown, n: number): void {
    this.result.matched += n
    this.result.live += n
    const owner = Buffer.isBuffer(value) && value.length === 0 ? NOT_A_STRING : this.owner(value)
    this.result.liveByValue.set(owner, (this.result.liveByValue.get(owner) ?? 0) + n)
  }

  private owner(value: unknown): string {
    if (!Buffer.isBuffer(value)) return NOT_A_STRING
    const id = value.toString('latin1')
    let shown = this.owners.get(id)
    if (shown === undefined) this.owners.set(id, (shown = readValue(value).value ?? NOT_A_STRING))
    return shown
  }
}

/**
 * Scans the keys under `prefix` and sorts them by expiry: none (pttl -1), above maxTtlMs, live.
 * Only anomalies are kept as ScannedKey (exact key and value bytes, for a guard to compare);
 * live keys are counted (per value, for lock owners). A key SCAN returns twice counts once.
 *
 * The work runs in Redis, one bounded script call per SCAN step, so values cross the network
 * only as their first VALUE_CAP bytes. Reading a value resets its idle time (before Redis 7.2's
 * CLIENT NO-TOUCH there is no way around that), so idle times are read first, and a diagnosis
 * repeated soon after sees the anomalies' idle times since the previous one. A user without
 * scripting (a read-only ACL: +@read) gets the same answer from pipelines: while SCAN n+1 is in
 * flight, batch n's PTTLs go out, then one pipeline with OBJECT IDLETIME for its anomalies and
 * one MGET for the whole batch.
 *
 * When `signal` aborts (a deadline), the scan stops at once, a call in flight abandoned, and
 * returns what it found with truncated: true.
 */
export async function scanByExpiry(
  r: Redis,
  prefix: string,
  o: {maxTtlMs: number; count?: number; maxKeys?: number; signal?: AbortSignal},
): Promise<ScanClassification> {
  const startedAt = Date.now()
  const result: ScanClassification = {
    scanned: 0,
    matched: 0,
    withoutExpiry: [],
    expiryAbove: [],
    live: 0,
    liveByValue: new Map(),
    durationMs: 0,
    truncated: false,
  }
  const classifier = new Classifier(result)
  const maxKeys = o.maxKeys ?? Number.POSITIVE_INFINITY
  const count = o.count ?? DEFAULT_SCAN_COUNT
  const pattern = prefixPattern(prefix)

  let cursor = '0'
  let first = true
  let scripted = true
  do {
    if (o.signal?.aborted || result.scanned >= maxKeys) {
      result.truncated = true
      break
    }
    const limit = Math.min(maxKeys - result.scanned, 2 ** 31 - 1)
    let reply: unknown
    try {
      reply = await untilAborted(runScript(r, SCAN_BY_EXPIRY, 0, [cursor, pattern, String(count), String(Math.trunc(o.maxTtlMs)), String(limit)], {buffers: true}), o.signal)
    } catch (error) {
      if (!first || !scriptingUnavailable(error)) throw error
      scripted = false
      break
    }
    if (reply === ABORTED) {
      result.truncated = true
      break
    }
    first = false
    const [next, walked, anomalies, live] = reply as [Buffer, number, unknown[], unknown[]]
    result.scanned += walked
    for (let i = 0; i + 3 < anomalies.length; i += 4) {
      const key = anomalies[i]
      const idle = anomalies[i + 2] as number
      if (Buffer.isBuffer(key)) classifier.anomaly(key, anomalies[i + 1] as number, idle >= 0 ? idle : null, anomalies[i + 3])
    }
    for (let i = 0; i + 1 < live.length; i += 2) classifier.liveCount(live[i], live[i + 1] as number)
    cursor = next.toString()
    if (walked >= limit && cursor !== '0') result.truncated = true
  } while (cursor !== '0' && !result.truncated)

  if (!scripted) await scanByExpiryPipelined(r, pattern, count, maxKeys, o, classifier)
  result.durationMs = Date.now() - startedAt
  return result
}

/** EVAL is denied (ACL without @scripting), renamed away, or cannot SCAN from a script. */
function scriptingUnavailable(error: unknown): boolean {
  return errorCode(error) === 'NOPERM' || /unknown command|not allowed from script/i.test(errorMessageOf(error))
}

async function scanByExpiryPipelined(
  r: Redis,
  pattern: string,
  count: number,
  maxKeys: number,
  o: {maxTtlMs: number; signal?: AbortSignal},
  classifier: Classifier,
): Promise<void> {
  const result = classifier.result
  // Set when the scan stops at the signal: pipelines still in flight then change nothing.
  let closed = false
  const inFlight: Promise<void>[] = []
  const classify = async (keys: Buffer[]): Promise<void> => {
    const ttls = await pipelined(r, keys, (p, key) => p.pttl(key))
    if (closed) return
    const anomalies: number[] = []
    const idleAt = new Map<number, number>() // key index → its OBJECT IDLETIME reply
    ttls.forEach((t, i) => {
      if (typeof t === 'number' && (t === -1 || t > o.maxTtlMs)) idleAt.set(i, anomalies.push(i) - 1)
    })
    const p = r.pipeline()
    for (const i of anomalies) p.object('IDLETIME', keys[i] as Buffer)
    p.mgetBuffer(keys)
    const replies = (await p.exec()) ?? []
    if (closed) return
    const mget = replies[anomalies.length]
    const values: unknown[] = mget && !mget[0] && Array.isArray(mget[1]) ? mget[1] : []
    ttls.forEach((t, i) => {
      if (typeof t !== 'number' || t === -2) return
      const key = keys[i] as Buffer
      if (t === -1 || t > o.maxTtlMs) {
        const idle = replies[idleAt.get(i) ?? -1]
        classifier.anomaly(key, t, idle && !idle[0] && typeof idle[1] === 'number' ? idle[1] : null, capBytes(values[i]))
      } else {
        classifier.liveCount(capBytes(values[i]), 1)
      }
    })
  }

  let scanFailure: {error: unknown} | undefined
  try {
    for await (const batch of scanKeyBytes(r, pattern, {count, signal: o.signal})) {
      let keys = batch
      if (result.scanned + keys.length >= maxKeys) {
        keys = keys.slice(0, maxKeys - result.scanned)
        result.truncated = true
      }
      result.scanned += keys.length
      inFlight.push(classify(keys))
      if (inFlight.length >= IN_FLIGHT && (await untilAborted(inFlight.shift() as Promise<void>, o.signal)) === ABORTED) break
      if (result.truncated) break
    }
  } catch (error) {
    scanFailure = {error}
  }
  if (o.signal?.aborted) result.truncated = true
  // Even when SCAN failed, wait for the pipelines already sent, then surface the first failure;
  // at the signal, wait for nothing: what was classified is the answer.
  const settled = await untilAborted(Promise.allSettled(inFlight), o.signal)
  if (settled === ABORTED) {
    closed = true
    result.truncated = true
    return
  }
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected')
  if (scanFailure) throw scanFailure.error
  if (failed) throw failed.reason
}

/** A whole value (MGET) cut to what the script reads: VALUE_CAP + 1 bytes. */
function capBytes(v: unknown): unknown {
  return Buffer.isBuffer(v) && v.length > VALUE_CAP + 1 ? v.subarray(0, VALUE_CAP + 1) : v
}

const scriptShas = new WeakMap<Redis, Map<string, string>>()

/**
 * EVALSHA of a script loaded once per client (SCRIPT LOAD); EVAL when the script cache was
 * flushed (NOSCRIPT) or SCRIPT LOAD or EVALSHA is not allowed for this user. `buffers`: string
 * replies as Buffers (exact bytes).
 */
async function runScript(r: Redis, lua: string, numKeys: number, args: Array<string | Buffer>, o: {buffers?: boolean} = {}): Promise<unknown> {
  let shas = scriptShas.get(r)
  if (!shas) scriptShas.set(r, (shas = new Map()))
  let sha = shas.get(lua)
  if (sha === undefined) {
    try {
      sha = String(await r.script('LOAD', lua))
    } catch (error) {
      if (!scriptingUnavailable(error)) throw error
      sha = ''
    }
    shas.set(lua, sha)
  }
  if (sha) {
    try {
      return await (o.buffers ? r.callBuffer('EVALSHA', [sha, numKeys, ...args]) : r.evalsha(sha, numKeys, ...args))
    } catch (error) {
      const code = errorCode(error)
      if (code === 'NOPERM') shas.set(lua, '')
      else if (code === 'NOSCRIPT') shas.delete(lua)
      else throw error
    }
  }
  return o.buffers ? r.callBuffer('EVAL', [lua, numKeys, ...args]) : r.eval(lua, numKeys, ...args)
}

/** One command per key in one pipeline; the replies, with errors as undefined. */
async function pipelined<K extends string | Buffer>(
  r: Redis,
  keys: K[],
  add: (p: ReturnType<Redis['pipeline']>, key: K) => unknown,
): Promise<unknown[]> {
  const p = r.pipeline()
  for (const key of keys) add(p, key)
  const replies = (await p.exec()) ?? []
  return replies.map(([error, value]) => (error ? undefined : value))
}

// ---------------------------------------------------------------------------------------
// Guarded deletion

/** The commands compareAndDelete runs on each key. */
const RELEASE_COMMANDS = ['TYPE', 'GET', 'PTTL', 'DEL'] as const

/**
 * Which of RELEASE_COMMANDS the ACL denies this user on KEYS-less ARGV[1] (redis.acl_check_cmd,
 * Redis 7+); nil where Redis cannot tell. Read-only: nothing is run on the key.
 */
const RELEASE_DENIED = `
local check = redis.acl_check_cmd
if not check then return nil end
local denied = {}
for _, cmd in ipairs({${RELEASE_COMMANDS.map((c) => `'${c}'`).join(', ')}}) do
  if not check(cmd, ARGV[1]) then denied[#denied + 1] = cmd end
end
return denied
`

/**
 * Why this user cannot run compareAndDelete on `key`, or null when it can (or Redis cannot tell:
 * before Redis 7 there is no redis.acl_check_cmd; compareAndDelete then meets the ACL itself).
 * A user without scripting cannot run the guard at all. Stops at `signal` (null: not known).
 */
export async function lockReleaseDenied(r: Redis, key: string | Buffer, o: {signal?: AbortSignal} = {}): Promise<string | null> {
  try {
    const denied = await untilAborted(runScript(r, RELEASE_DENIED, 0, [key]), o.signal)
    if (denied === ABORTED || !Array.isArray(denied) || denied.length === 0) return null
    return `the ACL denies this Redis user ${denied.map(String).join(', ')} on the lock keys`
  } catch (error) {
    if (errorCode(error) === 'NOPERM') return 'this Redis user may not run scripts (EVAL/EVALSHA), and the guard is a Lua script'
    if (/unknown command/i.test(errorMessageOf(error))) return 'scripts (EVAL) are not available on this Redis, and the guard is a Lua script'
    if ((error as {name?: unknown})?.name === 'ReplyError') return null // Redis could not tell
    throw error
  }
}

/**
 * For each key: delete it only if it still holds the expected value AND still has no expiry
 * (or one above the limit) — atomically, per batch. So a lock re-acquired by a new owner, or
 * given an expiry, between the diagnosis and the fix is left alone. A key whose commands the
 * ACL denies this user (redis.acl_check_cmd, Redis 7+) is left alone before anything runs on
 * it, so a denial never stops a batch half-way (Redis does not roll back a script).
 * Returns per key: 0 deleted, 1 value changed, 2 has expiry, 3 gone, 4 denied.
 */
const COMPARE_AND_DELETE = `
local limit = tonumber(ARGV[1])
local check = redis.acl_check_cmd
local out = {}
for i, key in ipairs(KEYS) do
  if check and not (${RELEASE_COMMANDS.map((c) => `check('${c}', key)`).join(' and ')}) then
    out[i] = 4
  else
    local t = redis.call('TYPE', key)['ok']
    if t == 'none' then
      out[i] = 3
    elseif t ~= 'string' or redis.call('GET', key) ~= ARGV[i + 1] then
      out[i] = 1
    else
      local pttl = redis.call('PTTL', key)
      if pttl ~= -1 and pttl <= limit then
        out[i] = 2
      else
        redis.call('DEL', key)
        out[i] = 0
      end
    end
  end
end
return out
`
const CAD_BATCH = 200
export const KEPT_REASONS = ['value-changed', 'has-expiry', 'gone', 'denied'] as const
export type KeptReason = (typeof KEPT_REASONS)[number]

/** Keys and values are compared as exact bytes: pass Buffers for keys or values that are not UTF-8. */
export async function compareAndDelete<K extends string | Buffer>(
  r: Redis,
  items: Array<{key: K; value: string | Buffer}>,
  o: {maxTtlMs: number},
): Promise<{deleted: K[]; kept: Array<{key: K; reason: KeptReason}>}> {
  const deleted: K[] = []
  const kept: Array<{key: K; reason: KeptReason}> = []
  if (items.length === 0) return {deleted, kept}
  for (let at = 0; at < items.length; at += CAD_BATCH) {
    const batch = items.slice(at, at + CAD_BATCH)
    const args = [...batch.map((i) => i.key), String(Math.trunc(o.maxTtlMs)), ...batch.map((i) => i.value)]
    const codes = await runScript(r, COMPARE_AND_DELETE, batch.length, args)
    const list = Array.isArray(codes) ? codes : []
    batch.forEach((item, i) => {
      const code = Number(list[i])
      if (code === 0) deleted.push(item.key)
      else kept.push({key: item.key, reason: KEPT_REASONS[code - 1] ?? 'gone'})
    })
  }
  return {deleted, kept}
}
