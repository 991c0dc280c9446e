// TCP reachability: can we open a connection to host:port, and over which address family.
// Also home of the socket-level helpers the other network probes share (errno → ProbeError,
// the deadline every probe runs under), so that http, tls and tcp word failures the same way.

import {lookup} from 'node:dns/promises'
import net from 'node:net'
import os from 'node:os'

import {Reachability} from './reach.js'
import {probeFail, probeOk} from './types.js'
import type {ProbeError, ProbeOptions, ProbeResult} from './types.js'
import {formatMs} from '../util/time.js'

export interface TcpConnectResult {
  host: string
  address: string
  family: 4 | 6
  port: number
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

function errnoOf(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const code = (err as {code?: unknown}).code
  if (typeof code === 'string') return code
  // Happy-eyeballs (autoSelectFamily) reports every attempt in an AggregateError.
  const inner = (err as {errors?: unknown}).errors
  if (Array.isArray(inner)) for (const e of inner) {
    const c = errnoOf(e)
    if (c) return c
  }
  return undefined
}

export function errorMessageOf(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] ?? err.name
  return String(err)
}

/**
 * Turns an error raised while connecting to an endpoint into a ProbeError a person can act on.
 * `host` is used for DNS failures, `endpoint` (Reachability.key form) for everything else.
 */
export function socketError(err: unknown, host: string, endpoint: string): ProbeError {
  const code = errnoOf(err)
  switch (code) {
    case 'ECONNREFUSED':
      return {kind: 'refused', code, message: `nothing listens on ${endpoint} (connection refused): start the service or check the port`}
    case 'ECONNRESET':
    case 'EPIPE':
      return {kind: 'reset', code, message: `${endpoint} reset the connection (${code})`}
    case 'ETIMEDOUT':
      return {kind: 'timeout', code, message: `no answer from ${endpoint} (connect timed out): the host is down or a firewall drops the packets`}
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
    case 'ENETDOWN':
    case 'EADDRNOTAVAIL':
      return {kind: 'unreachable', code, message: `${endpoint} is unreachable (${code}): check the address, the routes and the firewall`}
    case 'ENOTFOUND':
    case 'EAI_NONAME':
    case 'EAI_NODATA':
    case 'EAI_FAIL':
    case 'EAI_AGAIN':
      return {kind: 'dns', code, message: `cannot resolve ${host} (${code}): check the host name and DNS (/etc/hosts, resolv.conf)`}
    case 'EACCES':
    case 'EPERM':
      return {kind: 'permission', code, message: `the OS refused to connect to ${endpoint} (${code})`}
    case 'ERR_SOCKET_BAD_PORT':
      return {kind: 'other', code, message: `invalid port for ${host}: ${errorMessageOf(err)}`}
    default:
      return {kind: 'other', ...(code ? {code} : {}), message: `connecting to ${endpoint} failed: ${errorMessageOf(err)}`}
  }
}

export function abortedError(what: string): ProbeError {
  return {kind: 'aborted', message: `${what} was cancelled`}
}

/**
 * The deadline a probe runs under: fires after `timeoutMs` or when the caller's signal aborts,
 * whichever comes first, and remembers which one it was.
 */
export interface Deadline {
  readonly signal: AbortSignal
  /** Why the signal fired, or null while it has not. */
  readonly cause: 'deadline' | 'aborted' | null
  /** Milliseconds left before the deadline (never below 1). */
  remaining(): number
  clear(): void
}

export function startDeadline(opts: ProbeOptions): Deadline {
  const controller = new AbortController()
  const startedAt = Date.now()
  let cause: 'deadline' | 'aborted' | null = null
  const onAbort = (): void => {
    if (cause) return
    cause = 'aborted'
    controller.abort(new Error('aborted'))
  }
  const timer = setTimeout(() => {
    if (cause) return
    cause = 'deadline'
    controller.abort(new Error(`deadline of ${formatMs(opts.timeoutMs)} passed`))
  }, Math.max(1, opts.timeoutMs))
  if (opts.signal?.aborted) onAbort()
  else opts.signal?.addEventListener('abort', onAbort, {once: true})
  return {
    signal: controller.signal,
    get cause() {
      return cause
    },
    remaining: () => Math.max(1, opts.timeoutMs - (Date.now() - startedAt)),
    clear() {
      clearTimeout(timer)
      opts.signal?.removeEventListener('abort', onAbort)
    },
  }
}

/** "[::1]" → "::1": URLs bracket IPv6 literals, sockets do not. */
export function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
}

function familyOf(f: string | number | undefined, address: string): 4 | 6 {
  if (f === 'IPv6' || f === 6) return 6
  if (f === 'IPv4' || f === 4) return 4
  return net.isIPv6(address) ? 6 : 4
}

export function connectTimeoutMessage(key: string, ms: number): string {
  return `no answer from ${key} within ${formatMs(ms)} (connect timed out): the host is down or a firewall drops the packets`
}

export interface SocketProbeControl<T> {
  /** Settles with a value. */
  ok(value: T): void
  /** Settles with an error, recorded in the run's Reachability when it is endpoint-level. */
  fail(error: ProbeError): void
  /** The socket to destroy however the probe ends; its errors go through onError. */
  adopt<S extends net.Socket>(socket: S): S
}

/**
 * The life of a one-socket probe: settles exactly once, under the deadline, destroying its
 * socket on every path, turning socket errors, throws, time-out and abort into ProbeErrors.
 */
export function socketProbe<T>(p: {
  key: string
  /** "connecting to 127.0.0.1:80", for the cancellation message. */
  what: string
  opts: ProbeOptions
  startedAt: number
  onDeadline: () => ProbeError
  onError: (err: unknown) => ProbeError
  start: (control: SocketProbeControl<T>) => void
}): Promise<ProbeResult<T>> {
  return new Promise((resolve) => {
    const deadline = startDeadline(p.opts)
    let socket: net.Socket | undefined
    let settled = false
    const settle = (r: ProbeResult<T>): void => {
      if (settled) return
      settled = true
      deadline.clear()
      deadline.signal.removeEventListener('abort', onAbort)
      socket?.destroy()
      resolve(r)
    }
    const control: SocketProbeControl<T> = {
      ok: (value) => settle(probeOk(value, p.startedAt)),
      fail: (error) => {
        p.opts.reach?.record(p.key, error)
        settle(probeFail(error, p.startedAt))
      },
      adopt: (s) => {
        socket = s
        s.on('error', (err) => control.fail(p.onError(err)))
        if (settled) s.destroy()
        return s
      },
    }
    const onAbort = (): void => {
      if (deadline.cause === 'aborted') settle(probeFail(abortedError(p.what), p.startedAt))
      else control.fail(p.onDeadline())
    }
    deadline.signal.addEventListener('abort', onAbort, {once: true})
    if (deadline.signal.aborted) return onAbort()
    try {
      p.start(control)
    } catch (err) {
      control.fail(p.onError(err))
    }
  })
}

// ---------------------------------------------------------------------------------------------
// Probes

/** Opens (and at once closes) one TCP connection to host:port. */
export async function tcpConnect(hostOrBracketed: string, port: number, opts: ProbeOptions): Promise<ProbeResult<TcpConnectResult>> {
  const startedAt = Date.now()
  const host = stripBrackets(hostOrBracketed)
  const key = Reachability.key(host, port)
  const known = opts.reach?.known(key)
  if (known) return probeFail(known, startedAt)
  if (opts.signal?.aborted) return probeFail(abortedError(`connecting to ${key}`), startedAt)

  return socketProbe<TcpConnectResult>({
    key,
    what: `connecting to ${key}`,
    opts,
    startedAt,
    onDeadline: () => ({kind: 'timeout', message: connectTimeoutMessage(key, opts.timeoutMs)}),
    onError: (err) => socketError(err, host, key),
    start: (probe) => {
      const s = probe.adopt(net.connect({host, port}))
      s.once('connect', () => {
        const address = s.remoteAddress ?? host
        probe.ok({host, address, family: familyOf(s.remoteFamily, address), port})
      })
    },
  })
}

/**
 * Before a probe loads its client library (undici, pg, ioredis: a tenth of a second each), make
 * sure the endpoint accepts connections at all: a plain TCP connect, once per endpoint per run
 * (opts.reach), closed without a byte sent — PostgreSQL does not even log that. A refused or
 * black-holed endpoint then costs one connect attempt and no library load.
 */
export async function reachable(host: string, port: number, opts: ProbeOptions): Promise<ProbeError | null> {
  if (!opts.reach) return null
  const key = Reachability.key(stripBrackets(host), port)
  return opts.reach.firstContact(key, async () => {
    const r = await tcpConnect(host, port, opts)
    return r.ok ? null : r.error
  })
}

/** Resolves a name to every address it has, within the deadline. */
async function resolveAll(host: string, opts: ProbeOptions): Promise<{ok: true; addresses: Array<{address: string; family: 4 | 6}>} | {ok: false; error: ProbeError}> {
  const deadline = startDeadline(opts)
  try {
    const pending = lookup(host, {all: true, verbatim: true})
    const aborted = new Promise<never>((_, reject) => {
      const onAbort = (): void => reject(deadline.signal.reason)
      if (deadline.signal.aborted) onAbort()
      else deadline.signal.addEventListener('abort', onAbort, {once: true})
    })
    aborted.catch(() => {})
    const found = await Promise.race([pending, aborted])
    const seen = new Set<string>()
    const addresses: Array<{address: string; family: 4 | 6}> = []
    for (const a of found) {
      if (seen.has(a.address)) continue
      seen.add(a.address)
      addresses.push({address: a.address, family: familyOf(a.family, a.address)})
    }
    return {ok: true, addresses}
  } catch (err) {
    if (deadline.cause === 'aborted') return {ok: false, error: abortedError(`resolving ${host}`)}
    if (deadline.cause === 'deadline') {
      return {ok: false, error: {kind: 'dns', message: `resolving ${host} took longer than ${formatMs(opts.timeoutMs)}: check the DNS servers in /etc/resolv.conf`}}
    }
    return {ok: false, error: socketError(err, host, host)}
  } finally {
    deadline.clear()
  }
}

/**
 * Connects to every address `host` resolves to (`localhost` → 127.0.0.1 and ::1 where both
 * exist), concurrently, and reports each: a service listening on 127.0.0.1 only is reached
 * over IPv4 and refused over IPv6. When the name does not resolve, the one entry carries the
 * DNS error with `address` set to the name itself.
 */
export async function tcpConnectEach(
  host: string,
  port: number,
  opts: ProbeOptions,
): Promise<Array<{address: string; family: 4 | 6; result: ProbeResult<TcpConnectResult>}>> {
  const startedAt = Date.now()
  const bare = stripBrackets(host)
  const ipFamily = net.isIP(bare)
  if (ipFamily) return [{address: bare, family: ipFamily === 6 ? 6 : 4, result: await tcpConnect(bare, port, opts)}]

  const resolved = await resolveAll(bare, opts)
  if (!resolved.ok) {
    opts.reach?.record(Reachability.key(bare, port), resolved.error)
    return [{address: bare, family: 4, result: probeFail(resolved.error, startedAt)}]
  }
  const left = Math.max(1, opts.timeoutMs - (Date.now() - startedAt))
  return Promise.all(
    resolved.addresses.map(async ({address, family}) => {
      const result = await tcpConnect(address, port, {...opts, timeoutMs: left})
      return {address, family, result: result.ok ? {...result, value: {...result.value, host: bare}} : result}
    }),
  )
}

function ipv4Octets(address: string): number[] | null {
  if (!net.isIPv4(address)) return null
  return address.split('.').map(Number)
}

/** Strips brackets, a zone id and the IPv4-mapped prefix, lower-cases. */
function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase()
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1)
  if (h.endsWith('.')) h = h.slice(0, -1)
  const zone = h.indexOf('%')
  if (zone >= 0 && h.includes(':')) h = h.slice(0, zone)
  const mapped = /^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h)
  if (mapped?.[1]) h = mapped[1]
  return h
}

/** Expands an IPv6 literal to eight 16-bit groups, or null when it is not one. */
function ipv6Groups(address: string): number[] | null {
  if (!net.isIPv6(address)) return null
  const toParts = (s: string): number[] =>
    s === ''
      ? []
      : s.split(':').flatMap((p) => {
          const v4 = ipv4Octets(p)
          if (v4) return [((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0)]
          return [parseInt(p, 16)]
        })
  const [head = '', tail] = address.split('::')
  const a = toParts(head)
  if (tail === undefined) return a
  const b = toParts(tail)
  return [...a, ...new Array<number>(8 - a.length - b.length).fill(0), ...b]
}

/** localhost (and *.localhost), 127.0.0.0/8, ::1 — addresses that never leave this machine. */
export function isLoopbackHost(host: string): boolean {
  const h = normalizeHost(host)
  if (h === 'localhost' || h.endsWith('.localhost')) return true
  const v4 = ipv4Octets(h)
  if (v4) return v4[0] === 127
  const v6 = ipv6Groups(h)
  if (v6) return v6.slice(0, 7).every((g) => g === 0) && v6[7] === 1
  return false
}

function sameAddress(a: string, b: string): boolean {
  const x = normalizeHost(a)
  const y = normalizeHost(b)
  if (x === y) return true
  const gx = ipv6Groups(x)
  const gy = ipv6Groups(y)
  return gx !== null && gy !== null && gx.every((g, i) => g === gy[i])
}

function isUnspecified(h: string): boolean {
  if (h === '0.0.0.0') return true
  const g = ipv6Groups(h)
  return g !== null && g.every((x) => x === 0)
}

function isInterfaceAddress(address: string): boolean {
  if (isLoopbackHost(address) || isUnspecified(normalizeHost(address))) return true
  for (const list of Object.values(os.networkInterfaces())) {
    for (const info of list ?? []) if (sameAddress(info.address, address)) return true
  }
  return false
}

/**
 * True when `host` designates this machine: a loopback name or address, 0.0.0.0/::, one of
 * this machine's interface addresses, its host name, or a name all of whose addresses are
 * local. Never throws; a name that does not resolve within 2 s is not local.
 */
export async function isLocalHost(host: string): Promise<boolean> {
  const h = normalizeHost(host)
  if (h === '') return false
  if (isLoopbackHost(h)) return true
  if (net.isIP(h)) return isInterfaceAddress(h)
  const own = os.hostname().toLowerCase()
  if (h === own || h === own.split('.')[0]) return true
  const resolved = await resolveAll(h, {timeoutMs: 2000})
  if (!resolved.ok || resolved.addresses.length === 0) return false
  return resolved.addresses.every((a) => isInterfaceAddress(a.address))
}
