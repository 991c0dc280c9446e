// The one HTTP probe of the tool, on undici (loaded only when a request is made).
// One deadline covers connect, headers and body; bodies are read with a cap; redirects are
// followed by hand so that credentials never leak to another origin; every failure becomes a
// ProbeError that says which phase failed (connect, TLS, no response, slow body).

import type {Socket} from 'node:net'
import type {Readable} from 'node:stream'

import {Reachability} from './reach.js'
import {abortedError, connectTimeoutMessage, errorMessageOf, reachable, socketError, startDeadline} from './tcp.js'
import {readCaFile, secureContextFor, tlsError, tlsStallMessage} from './tls.js'
import {probeFail, probeOk} from './types.js'
import type {ProbeError, ProbeOptions, ProbeResult} from './types.js'
import {formatMs} from '../util/time.js'

export interface HttpTls {
  insecure?: boolean
  caFile?: string | null
  servername?: string
}

export interface HttpRequest {
  url: string
  /** Default GET. */
  method?: string
  headers?: Record<string, string>
  body?: string | Buffer
  /** Default 1 MiB: read at most this much, then stop reading and drop the connection (truncated: true). */
  maxBodyBytes?: number
  /** Default 3: followed by hand (same method for 307/308, GET for 301-303). */
  maxRedirects?: number
  tls?: HttpTls
  /** Default min(timeoutMs, 5000). */
  connectTimeoutMs?: number
}

export interface HttpResponse {
  status: number
  /** Lower-case names; several values joined with ", ". */
  headers: Record<string, string>
  body: Buffer
  truncated: boolean
  /** Final URL after redirects. */
  url: string
  redirects: number
  /** Media type only, lower-case ("application/json"). */
  contentType: string | null
  durationMs: number
}

const DEFAULT_MAX_BODY = 1024 * 1024
const DEFAULT_MAX_REDIRECTS = 3
const REDIRECTS = new Set([301, 302, 303, 307, 308])
/** Headers that carry credentials: never sent to an origin the caller did not name. */
const CREDENTIAL_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie'])

/** host and port of a URL, in the form Reachability keys them ("[::1]:8443"). */
function endpointOf(u: URL): {host: string; port: number; key: string} {
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname
  const port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80
  return {host, port, key: Reachability.key(host, port)}
}

function flattenHeaders(raw: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(raw)) {
    if (value === undefined) continue
    out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value
  }
  return out
}

function mediaType(contentType: string | undefined): string | null {
  const t = contentType?.split(';')[0]?.trim().toLowerCase()
  return t ? t : null
}

/** The phase a request was in when it failed, for the message a person reads. */
interface Progress {
  tcpConnected: boolean
  secure: boolean
  headers: boolean
  status: number
  bytes: number
}

/**
 * Sends one request, following redirects, under a single deadline. Never throws.
 * When maxRedirects is reached the last redirect response itself is returned.
 */
export async function httpRequest(req: HttpRequest, opts: ProbeOptions): Promise<ProbeResult<HttpResponse>> {
  const startedAt = Date.now()
  let url: URL
  try {
    url = new URL(req.url)
  } catch {
    return probeFail({kind: 'other', message: `invalid URL ${JSON.stringify(req.url)}: expected http(s)://host:port/path`}, startedAt)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return probeFail({kind: 'other', message: `unsupported URL scheme ${url.protocol} in ${url.origin}: use http:// or https://`}, startedAt)
  }
  const first = endpointOf(url)
  const known = opts.reach?.known(first.key)
  if (known) return probeFail(known, startedAt)
  if (opts.signal?.aborted) return probeFail(abortedError(`the request to ${first.key}`), startedAt)
  // Only an endpoint that accepts connections is worth loading undici for.
  const unreachable = await reachable(first.host, first.port, opts)
  if (unreachable) return probeFail(unreachable, startedAt)

  const insecure = req.tls?.insecure === true
  let caPem: string | null = null
  if (req.tls?.caFile) {
    const ca = await readCaFile(req.tls.caFile)
    if (!ca.ok) return probeFail(ca.error, startedAt)
    caPem = ca.pem
  }

  const maxBody = Math.max(0, req.maxBodyBytes ?? DEFAULT_MAX_BODY)
  const maxRedirects = Math.max(0, req.maxRedirects ?? DEFAULT_MAX_REDIRECTS)
  const connectTimeout = Math.max(1, Math.min(req.connectTimeoutMs ?? Math.min(opts.timeoutMs, 5000), opts.timeoutMs))
  // Load undici before the clock starts: on a busy machine the import alone can take a good part
  // of a short time-out, and the endpoint must not be blamed for it.
  const {Agent, buildConnector} = await import('undici')
  const deadline = startDeadline(opts)
  const requestStartedAt = Date.now()

  // Set by the connector for the hop in flight, so a time-out can say which phase it hit.
  let progress: Progress = {tcpConnected: false, secure: false, headers: false, status: 0, bytes: 0}
  const baseConnect = buildConnector({
    // undici's connect timer ticks coarsely (about every half second): we keep our own below.
    timeout: 0,
    rejectUnauthorized: !insecure,
    ...(caPem ? {secureContext: secureContextFor(caPem)} : {}),
  })
  const firstHost = first.host
  const agent = new Agent({
    // Past our own deadline: undici's timers are a safety net, ours speaks first.
    headersTimeout: opts.timeoutMs + 1000,
    bodyTimeout: opts.timeoutMs + 1000,
    connect(options, callback) {
      const mine = progress
      const servername = req.tls?.servername && options.hostname.replace(/^\[|\]$/g, '') === firstHost ? req.tls.servername : options.servername
      const opened: {socket?: Socket} = {}
      const timer = setTimeout(() => {
        opened.socket?.destroy(Object.assign(new Error(`connect timed out after ${connectTimeout}ms`), {code: 'UND_ERR_CONNECT_TIMEOUT'}))
      }, connectTimeout)
      // buildConnector returns the socket it opens, though its type says void.
      const socket = baseConnect({...options, ...(servername ? {servername} : {})}, (err, s) => {
        clearTimeout(timer)
        if (err || !s) return callback(err ?? new Error('no socket'), null)
        mine.secure = true
        callback(null, s)
      }) as unknown as Socket
      opened.socket = socket
      socket.once('connect', () => {
        mine.tcpConnected = true
      })
    },
  })

  let method = (req.method ?? 'GET').toUpperCase()
  let body: string | Buffer | undefined = req.body
  const headers: Record<string, string> = {}
  for (const [k, v] of Object.entries(req.headers ?? {})) headers[k.toLowerCase()] = v
  // Credentials in the URL become Basic auth (as curl does) and leave the URL, so that the
  // URL can be shown in evidence without a password.
  if (url.username || url.password) {
    if (headers['authorization'] === undefined) {
      const pair = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`
      headers['authorization'] = `Basic ${Buffer.from(pair).toString('base64')}`
    }
    url.username = ''
    url.password = ''
  }
  const origin0 = url.origin
  let redirects = 0

  try {
    for (;;) {
      const hop = endpointOf(url)
      if (redirects > 0) {
        const hopKnown = opts.reach?.known(hop.key)
        if (hopKnown) return probeFail({...hopKnown, message: `after a redirect to ${url.origin}: ${hopKnown.message}`}, startedAt)
      }
      progress = {tcpConnected: false, secure: false, headers: false, status: 0, bytes: 0}
      const sent: Record<string, string> = {}
      for (const [k, v] of Object.entries(headers)) {
        if (url.origin !== origin0 && CREDENTIAL_HEADERS.has(k)) continue
        sent[k] = v
      }
      let res: {statusCode: number; headers: Record<string, string | string[] | undefined>; body: Readable}
      try {
        res = await agent.request({
          origin: url.origin,
          path: `${url.pathname}${url.search}`,
          method: method as 'GET',
          headers: sent,
          body: body ?? null,
          signal: deadline.signal,
        })
      } catch (err) {
        const error = requestError(err, url, hop, progress, deadline.cause, opts.timeoutMs, connectTimeout)
        // Connect-level failures say something about the endpoint; remember them for the run.
        opts.reach?.record(hop.key, error)
        return probeFail(error, startedAt)
      }
      progress.headers = true
      progress.status = res.statusCode
      const resHeaders = flattenHeaders(res.headers)
      const location = resHeaders['location']

      if (REDIRECTS.has(res.statusCode) && location !== undefined && redirects < maxRedirects) {
        let next: URL | null = null
        try {
          next = new URL(location, url)
        } catch {
          next = null
        }
        if (next && (next.protocol === 'http:' || next.protocol === 'https:')) {
          discard(res.body) // an unread body is discarded, not drained
          if (res.statusCode <= 303 && method !== 'GET' && method !== 'HEAD') {
            method = 'GET'
            body = undefined
            delete headers['content-type']
            delete headers['content-length']
          }
          next.hash = ''
          next.username = ''
          next.password = ''
          url = next
          redirects++
          continue
        }
      }

      const read = await readCapped(res.body, maxBody, progress)
      if (!read.ok) return probeFail(requestError(read.err, url, hop, progress, deadline.cause, opts.timeoutMs, connectTimeout), startedAt)
      return probeOk(
        {
          status: res.statusCode,
          headers: resHeaders,
          body: read.body,
          truncated: read.truncated,
          url: url.href,
          redirects,
          contentType: mediaType(resHeaders['content-type']),
          durationMs: Date.now() - requestStartedAt, // the exchange itself, not loading undici
        },
        startedAt,
      )
    }
  } finally {
    deadline.clear()
    await agent.destroy().catch(() => {})
  }
}

/** Drops a response body without reading it; the abort it causes is expected, not an error. */
function discard(stream: Readable): void {
  stream.on('error', () => {})
  stream.destroy()
}

async function readCapped(
  stream: Readable,
  max: number,
  progress: Progress,
): Promise<{ok: true; body: Buffer; truncated: boolean} | {ok: false; err: unknown}> {
  const chunks: Buffer[] = []
  let truncated = false
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const room = max - progress.bytes
      if (chunk.length > room) {
        if (room > 0) chunks.push(chunk.subarray(0, room))
        progress.bytes = max
        truncated = true
        break // leaving the loop destroys the stream: the rest is never read
      }
      chunks.push(chunk)
      progress.bytes += chunk.length
    }
  } catch (err) {
    return {ok: false, err}
  } finally {
    discard(stream)
  }
  return {ok: true, body: Buffer.concat(chunks), truncated}
}

function requestError(
  err: unknown,
  url: URL,
  hop: {host: string; key: string},
  p: Progress,
  cause: 'deadline' | 'aborted' | null,
  timeoutMs: number,
  connectTimeoutMs: number,
): ProbeError {
  const ep = hop.key
  if (cause === 'aborted') return abortedError(`the request to ${url.origin}${url.pathname}`)
  const e = err as {code?: unknown; name?: unknown; cause?: {code?: unknown}} | null
  // undici 7's HTTPParserError carries no code of its own; llhttp's HPE_* may sit on its cause.
  const code = e?.code ?? (e?.name === 'HTTPParserError' ? (typeof e.cause?.code === 'string' ? e.cause.code : 'HPE_INVALID') : undefined)
  if (cause === 'deadline' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
    // undici's own connect timer is shorter than the probe's deadline; say which one ran out.
    const limit = cause !== 'deadline' && code === 'UND_ERR_CONNECT_TIMEOUT' ? connectTimeoutMs : timeoutMs
    const within = formatMs(limit)
    if (p.headers) {
      return {kind: 'timeout', message: `${ep} answered ${p.status} but the body did not finish within ${within} (${p.bytes} bytes read): the server is slow or stalled`}
    }
    if (p.secure || (p.tcpConnected && url.protocol === 'http:')) {
      return {kind: 'timeout', message: `${ep} accepted the connection but sent no response within ${within}: the service is hung or overloaded`}
    }
    if (p.tcpConnected) {
      return {kind: 'timeout', message: tlsStallMessage(ep, limit)}
    }
    return {kind: 'timeout', message: connectTimeoutMessage(ep, limit)}
  }
  if (typeof code === 'string') {
    if (code.startsWith('HPE_')) {
      return {kind: 'protocol', code, message: `${ep} did not answer valid HTTP (${code}): is this the right port, and does it speak ${url.protocol === 'https:' ? 'HTTPS' : 'plain HTTP'}?`}
    }
    if (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'UND_ERR_CLOSED') {
      if (!p.headers && url.protocol === 'http:' && p.tcpConnected) {
        return {kind: 'reset', code, message: `${ep} closed the connection without answering: if it serves HTTPS, use https://`}
      }
      if (p.headers) {
        return {kind: 'reset', code, message: `${ep} closed the connection in the middle of the body (${p.bytes} bytes read)`}
      }
      if (url.protocol === 'https:' && !p.secure) {
        return {kind: 'reset', code, message: `${ep} closed the connection during the TLS handshake: check its TLS settings`}
      }
      return {kind: 'reset', code, message: `${ep} closed the connection without answering`}
    }
    if (code.startsWith('UND_ERR_')) {
      return {kind: 'other', code, message: `request to ${url.origin}${url.pathname} failed (${code}): ${errorMessageOf(err)}`}
    }
  }
  if (url.protocol === 'https:') return tlsError(err, hop.host, ep)
  return socketError(err, hop.host, ep)
}

// ---------------------------------------------------------------------------------------------
// Reading bodies

/** Short printable excerpt of a body for evidence: first `max` characters, control characters escaped. */
export function bodyExcerpt(body: Buffer, max = 120): string {
  const text = body.subarray(0, max * 4).toString('utf8').replace(/^\uFEFF/, '')
  const chars = Array.from(text)
  let out = ''
  for (const ch of chars.slice(0, max)) {
    const c = ch.codePointAt(0) ?? 0
    if (ch === '\n') out += '\\n'
    else if (ch === '\r') out += '\\r'
    else if (ch === '\t') out += '\\t'
    else if (c < 0x20 || c === 0x7f || (c >= 0x80 && c < 0xa0)) out += `\\x${c.toString(16).padStart(2, '0')}`
    else out += ch
  }
  return chars.length > max || body.length > max * 4 ? `${out}…` : out
}

function htmlTitle(text: string): string | null {
  const m = /<title[^>]*>([\s\S]*?)<\/title>/i.exec(text)
  if (!m) return null
  const title = (m[1] ?? '').replace(/\s+/g, ' ').trim()
  return title.length > 100 ? `${title.slice(0, 100)}…` : title
}

/**
 * Parses a body as JSON, or says why it is not JSON in words a person can act on:
 * HTML (with its <title>), empty, truncated at the cap, or invalid (with the position).
 */
export function jsonBody(res: HttpResponse): {ok: true; value: unknown} | {ok: false; reason: string} {
  const text = res.body.toString('utf8').replace(/^\uFEFF/, '')
  const trimmed = text.trim()
  if (trimmed === '') return {ok: false, reason: `answered ${res.status} with an empty body, not JSON`}
  if (res.truncated) return {ok: false, reason: `the body exceeded the ${res.body.length}-byte cap and was cut off: not parsed as JSON`}
  const looksHtml = res.contentType === 'text/html' || res.contentType === 'application/xhtml+xml' || /^<(!doctype html|html|head|body)\b/i.test(trimmed)
  if (looksHtml) {
    const title = htmlTitle(text)
    return {ok: false, reason: title !== null ? `answered HTML, not JSON: <title>${title}</title>` : `answered HTML, not JSON: ${bodyExcerpt(res.body, 80)}`}
  }
  try {
    return {ok: true, value: JSON.parse(text)}
  } catch (err) {
    const detail = errorMessageOf(err)
    const pos = /position (\d+)/.exec(detail)?.[1]
    const where = pos !== undefined ? ` at position ${pos}` : /end of JSON/i.test(detail) ? ' (it ends early)' : ''
    const kind = res.contentType && !/json/.test(res.contentType) ? `answered ${res.contentType}, not JSON` : 'invalid JSON'
    return {ok: false, reason: `${kind}${where}: ${bodyExcerpt(res.body, 80)}`}
  }
}
