import {readFileSync} from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {bodyExcerpt, httpRequest, jsonBody, type HttpResponse} from '../../src/diagnostics/http.js'
import {Reachability} from '../../src/diagnostics/reach.js'
import {makePki, type Pki} from './fixtures/pki.js'
import {LoopbackServers} from './fixtures/servers.js'

const net_ = new LoopbackServers()
const serve = (srv: net.Server, host?: string): Promise<number> => net_.serve(srv, host)

/** Behaves like the systems' HTTP APIs: JSON health, an HTML error page from a proxy, redirects, endless bodies. */
function app(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://x')
  const r = /^\/r\/(\d+)$/.exec(url.pathname)
  if (r) {
    const n = Number(r[1])
    if (n === 0) return json(res, 200, {method: req.method, authorization: req.headers.authorization ?? null})
    res.writeHead(302, {location: `/r/${n - 1}`})
    return void res.end('redirecting')
  }
  switch (url.pathname) {
    case '/health':
      res.setHeader('x-multi', ['a', 'b'])
      return json(res, 200, {status: 'healthy', version: '1.4.2', build: 'abc', uptime_seconds: 12})
    case '/html':
      res.writeHead(502, {'content-type': 'text/html'})
      return void res.end('<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>')
    case '/empty':
      res.writeHead(204)
      return void res.end()
    case '/text':
      res.writeHead(200, {'content-type': 'text/plain'})
      return void res.end('Healthy')
    case '/broken':
      res.writeHead(200, {'content-type': 'application/json'})
      return void res.end('{"status": "ok",}')
    case '/echo': {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => json(res, 200, {method: req.method, body: Buffer.concat(chunks).toString(), authorization: req.headers.authorization ?? null, cookie: req.headers.cookie ?? null}))
      return
    }
    case '/post-redirect':
      res.writeHead(Number(url.searchParams.get('code') ?? 303), {location: '/echo'})
      return void res.end()
    case '/loop':
      res.writeHead(302, {location: '/loop'})
      return void res.end()
    case '/to':
      res.writeHead(302, {location: url.searchParams.get('u') ?? '/'})
      return void res.end()
    case '/endless': {
      // A "1 GB" body: streams until the client goes away, honouring back-pressure.
      res.writeHead(200, {'content-type': 'application/octet-stream', 'content-length': String(1024 ** 3)})
      const chunk = Buffer.alloc(64 * 1024, 0x61)
      let sent = 0
      const pump = (): void => {
        while (!res.destroyed && sent < 1024 ** 3) {
          sent += chunk.length
          if (!res.write(chunk)) return void res.once('drain', pump)
        }
      }
      res.on('close', () => undefined)
      return pump()
    }
    default:
      return json(res, 404, {error: 'not found'})
  }
}
function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, {'content-type': 'application/json; charset=utf-8'})
  res.end(JSON.stringify(body))
}

let pki: Pki
let base: string
let other: string // another origin (port) with the same app
let selfPort: number
let expiredPort: number
let wrongPort: number
let leafPort: number
let silentPort: number
let lorisPort: number
let headerLorisPort: number
const lorisTimers = new Set<NodeJS.Timeout>()

/** Sends `text` one byte every 100 ms. */
function trickle(s: net.Socket, text: string): void {
  s.on('error', () => {}) // the client hangs up mid-way: that is the point
  let i = 0
  const t = setInterval(() => {
    if (s.destroyed || i >= text.length) {
      clearInterval(t)
      lorisTimers.delete(t)
      return
    }
    s.write(text[i++]!)
  }, 100)
  lorisTimers.add(t)
}

beforeAll(async () => {
  pki = makePki()
  const httpsOn = (pair: {cert: string; key: string}) =>
    serve(https.createServer({cert: readFileSync(pair.cert), key: readFileSync(pair.key)}, app).on('tlsClientError', () => {}))
  const ports = await Promise.all([
    serve(http.createServer(app)),
    serve(http.createServer(app)),
    httpsOn(pki.selfSigned),
    httpsOn(pki.expired),
    httpsOn(pki.wrongHost),
    httpsOn({cert: pki.fullChain, key: pki.leaf.key}),
    serve(net.createServer(() => {})), // accepts, never answers
    serve(net.createServer((s) => {
      s.on('error', () => {})
      s.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{')
      trickle(s, 'x'.repeat(100000))
    })),
    serve(net.createServer((s) => trickle(s, 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'))),
  ])
  ;[, , selfPort, expiredPort, wrongPort, leafPort, silentPort, lorisPort, headerLorisPort] = ports
  base = `http://127.0.0.1:${ports[0]}`
  other = `http://localhost:${ports[1]}`
})
afterAll(async () => {
  for (const t of lorisTimers) clearInterval(t)
  await net_.closeAll()
  pki.cleanup()
})

describe('httpRequest: answers', () => {
  it('GET JSON: status, lower-case headers, media type, parsed body', async () => {
    const r = await httpRequest({url: `${base}/health`}, {timeoutMs: 1000})
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.value.status).toBe(200)
    expect(r.value.contentType).toBe('application/json')
    expect(r.value.headers['content-type']).toBe('application/json; charset=utf-8')
    expect(r.value.headers['x-multi']).toBe('a, b')
    expect(r.value.truncated).toBe(false)
    expect(r.value.redirects).toBe(0)
    expect(r.value.url).toBe(`${base}/health`)
    expect(jsonBody(r.value)).toEqual({ok: true, value: {status: 'healthy', version: '1.4.2', build: 'abc', uptime_seconds: 12}})
  })

  it('HTML from a proxy instead of JSON: the reason quotes the title', async () => {
    const r = await httpRequest({url: `${base}/html`}, {timeoutMs: 1000})
    expect(r.ok && r.value.status).toBe(502)
    if (!r.ok) return
    expect(jsonBody(r.value)).toEqual({ok: false, reason: 'answered HTML, not JSON: <title>502 Bad Gateway</title>'})
  })

  it('empty, plain text and broken JSON each get their own reason', async () => {
    const empty = await httpRequest({url: `${base}/empty`}, {timeoutMs: 1000})
    expect(empty.ok && jsonBody(empty.value)).toEqual({ok: false, reason: 'answered 204 with an empty body, not JSON'})
    const text = await httpRequest({url: `${base}/text`}, {timeoutMs: 1000})
    expect(text.ok && jsonBody(text.value)).toEqual({ok: false, reason: expect.stringMatching(/^answered text\/plain, not JSON.*: Healthy$/)})
    const broken = await httpRequest({url: `${base}/broken`}, {timeoutMs: 1000})
    expect(broken.ok && jsonBody(broken.value)).toEqual({ok: false, reason: expect.stringMatching(/^invalid JSON at position 16: \{"status": "ok",\}$/)})
  })

  it('an endless ("1 GB") body stops at the cap, quickly', async () => {
    const rss0 = process.memoryUsage().rss
    const t0 = Date.now()
    const r = await httpRequest({url: `${base}/endless`}, {timeoutMs: 3000})
    expect(Date.now() - t0).toBeLessThan(1500)
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.value.truncated).toBe(true)
    expect(r.value.body.length).toBe(1024 * 1024)
    expect(process.memoryUsage().rss - rss0).toBeLessThan(200 * 1024 * 1024)
    expect(jsonBody(r.value).ok).toBe(false)
    const small = await httpRequest({url: `${base}/endless`, maxBodyBytes: 1000}, {timeoutMs: 3000})
    expect(small.ok && small.value.body.length).toBe(1000)
  })

  it('sends method, headers and body', async () => {
    const r = await httpRequest({url: `${base}/echo`, method: 'post', body: 'payload', headers: {Authorization: 'Bearer s3cret-key-123456'}}, {timeoutMs: 1000})
    expect(r.ok && jsonBody(r.value)).toEqual({ok: true, value: {method: 'POST', body: 'payload', authorization: 'Bearer s3cret-key-123456', cookie: null}})
  })

  it('credentials in the URL become Basic auth and never appear in the answer', async () => {
    const url = base.replace('http://', 'http://admin:p%40ss@') + '/echo'
    const r = await httpRequest({url}, {timeoutMs: 1000})
    expect(r.ok && jsonBody(r.value)).toMatchObject({ok: true, value: {authorization: `Basic ${Buffer.from('admin:p@ss').toString('base64')}`}})
    expect(r.ok && r.value.url).toBe(`${base}/echo`)
    expect(JSON.stringify(r)).not.toContain('p%40ss')
  })
})

describe('httpRequest: redirects', () => {
  it('follows up to maxRedirects, then returns the redirect itself', async () => {
    const two = await httpRequest({url: `${base}/r/2`}, {timeoutMs: 1000})
    expect(two.ok && two.value.status).toBe(200)
    expect(two.ok && two.value.redirects).toBe(2)
    expect(two.ok && two.value.url).toBe(`${base}/r/0`)
    const loop = await httpRequest({url: `${base}/loop`}, {timeoutMs: 1000})
    expect(loop.ok && loop.value.status).toBe(302)
    expect(loop.ok && loop.value.redirects).toBe(3)
    const none = await httpRequest({url: `${base}/r/1`, maxRedirects: 0}, {timeoutMs: 1000})
    expect(none.ok && none.value.status).toBe(302)
  })

  it('303 turns POST into GET; 307 keeps method and body', async () => {
    const see = await httpRequest({url: `${base}/post-redirect?code=303`, method: 'POST', body: 'x'}, {timeoutMs: 1000})
    expect(see.ok && jsonBody(see.value)).toMatchObject({ok: true, value: {method: 'GET', body: ''}})
    const temp = await httpRequest({url: `${base}/post-redirect?code=307`, method: 'POST', body: 'x'}, {timeoutMs: 1000})
    expect(temp.ok && jsonBody(temp.value)).toMatchObject({ok: true, value: {method: 'POST', body: 'x'}})
  })

  it('keeps Authorization on the same origin, drops it (and cookies) on another', async () => {
    const headers = {authorization: 'Bearer s3cret-key-123456', cookie: 'session=abc'}
    const same = await httpRequest({url: `${base}/to?u=/echo`, headers}, {timeoutMs: 1000})
    expect(same.ok && jsonBody(same.value)).toMatchObject({ok: true, value: {authorization: 'Bearer s3cret-key-123456'}})
    const cross = await httpRequest({url: `${base}/to?u=${encodeURIComponent(`${other}/echo`)}`, headers}, {timeoutMs: 1000})
    expect(cross.ok && cross.value.url).toBe(`${other}/echo`)
    expect(cross.ok && jsonBody(cross.value)).toMatchObject({ok: true, value: {authorization: null, cookie: null}})
  })
})

describe('httpRequest: failures', () => {
  it('refused, remembered for the run', async () => {
    const port = await net_.closedPort()
    const reach = new Reachability()
    const r = await httpRequest({url: `http://127.0.0.1:${port}/health`}, {timeoutMs: 1000, reach})
    expect(!r.ok && r.error.kind).toBe('refused')
    expect(!r.ok && r.error.message).toContain(`nothing listens on 127.0.0.1:${port} (connection refused)`)
    expect(reach.known(`127.0.0.1:${port}`)).toBeDefined()
  })

  it('accepts but never answers: one time-out, then the run knows', async () => {
    const reach = new Reachability()
    const t0 = Date.now()
    const r = await httpRequest({url: `http://127.0.0.1:${silentPort}/health`}, {timeoutMs: 300, reach})
    const took = Date.now() - t0
    expect(took).toBeGreaterThanOrEqual(290)
    expect(took).toBeLessThan(600)
    expect(!r.ok && r.error.kind).toBe('timeout')
    expect(!r.ok && r.error.message).toBe(`127.0.0.1:${silentPort} accepted the connection but sent no response within 300ms: the service is hung or overloaded`)
    const t1 = Date.now()
    const again = await httpRequest({url: `http://127.0.0.1:${silentPort}/ready`}, {timeoutMs: 300, reach})
    expect(Date.now() - t1).toBeLessThan(50)
    expect(!again.ok && again.error.message).toContain('(earlier in this run; not retried)')
  })

  it('slow-loris body: cut off at the deadline', async () => {
    const t0 = Date.now()
    const r = await httpRequest({url: `http://127.0.0.1:${lorisPort}/`}, {timeoutMs: 800})
    const took = Date.now() - t0
    expect(Math.abs(took - 800)).toBeLessThan(300)
    expect(!r.ok && r.error.kind).toBe('timeout')
    expect(!r.ok && r.error.message).toMatch(/answered 200 but the body did not finish within 800ms \(\d+ bytes read\)/)
  })

  it('slow-loris headers: cut off at the deadline', async () => {
    const reach = new Reachability()
    const t0 = Date.now()
    const r = await httpRequest({url: `http://127.0.0.1:${headerLorisPort}/`}, {timeoutMs: 500, reach})
    expect(Math.abs(Date.now() - t0 - 500)).toBeLessThan(300)
    expect(!r.ok && r.error.message).toContain('accepted the connection but sent no response within 500ms')
  })

  it('a black-holed address: connect time-out (its own, shorter limit)', async () => {
    const t0 = Date.now()
    const r = await httpRequest({url: 'http://192.0.2.123:9/', connectTimeoutMs: 200}, {timeoutMs: 2000})
    expect(Date.now() - t0).toBeLessThan(1000)
    expect(!r.ok && r.error.kind).toMatch(/^(timeout|unreachable)$/)
    if (!r.ok && r.error.kind === 'timeout') expect(r.error.message).toMatch(/^no answer from 192\.0\.2\.123:9 within 200ms/)
  })

  it('aborted by the caller', async () => {
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 100)
    const reach = new Reachability()
    const r = await httpRequest({url: `http://127.0.0.1:${silentPort}/`}, {timeoutMs: 5000, signal: ac.signal, reach})
    expect(!r.ok && r.error.kind).toBe('aborted')
    expect(reach.known(`127.0.0.1:${silentPort}`)).toBeUndefined()
  })

  it('bad URLs are error values', async () => {
    const r = await httpRequest({url: 'not a url'}, {timeoutMs: 300})
    expect(!r.ok && r.error.kind).toBe('other')
    const ftp = await httpRequest({url: 'ftp://127.0.0.1/'}, {timeoutMs: 300})
    expect(!ftp.ok && ftp.error.message).toContain('unsupported URL scheme ftp:')
  })
})

describe('httpRequest: https', () => {
  it('self-signed: refused by default, accepted insecure or with its certificate as CA', async () => {
    const url = `https://127.0.0.1:${selfPort}/health`
    const strict = await httpRequest({url}, {timeoutMs: 1000})
    expect(!strict.ok && strict.error.kind).toBe('tls')
    expect(!strict.ok && strict.error.code).toBe('DEPTH_ZERO_SELF_SIGNED_CERT')
    expect(!strict.ok && strict.error.message).toContain('self-signed')
    const insecure = await httpRequest({url, tls: {insecure: true}}, {timeoutMs: 1000})
    expect(insecure.ok && insecure.value.status).toBe(200)
    const pinned = await httpRequest({url, tls: {caFile: pki.selfSigned.cert}}, {timeoutMs: 1000})
    expect(pinned.ok && pinned.value.status).toBe(200)
  })

  it('a CA-signed certificate verifies with ca_file', async () => {
    const r = await httpRequest({url: `https://localhost:${leafPort}/health`, tls: {caFile: pki.ca.cert}}, {timeoutMs: 1000})
    expect(r.ok && r.value.status).toBe(200)
  })

  it('expired', async () => {
    const r = await httpRequest({url: `https://127.0.0.1:${expiredPort}/health`, tls: {caFile: pki.ca.cert}}, {timeoutMs: 1000})
    expect(!r.ok && r.error.kind).toBe('tls')
    expect(!r.ok && r.error.code).toBe('CERT_HAS_EXPIRED')
    expect(!r.ok && r.error.message).toContain('expired')
  })

  it('wrong host; servername fixes it', async () => {
    const url = `https://127.0.0.1:${wrongPort}/health`
    const r = await httpRequest({url, tls: {caFile: pki.ca.cert}}, {timeoutMs: 1000})
    expect(!r.ok && r.error.kind).toBe('tls')
    expect(!r.ok && r.error.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID')
    const named = await httpRequest({url, tls: {caFile: pki.ca.cert, servername: 'wrong.example'}}, {timeoutMs: 1000})
    expect(named.ok && named.value.status).toBe(200)
  })

  it('https:// to a plain HTTP server is a protocol error', async () => {
    const r = await httpRequest({url: `${base.replace('http:', 'https:')}/health`}, {timeoutMs: 1000})
    expect(!r.ok && r.error.kind).toBe('protocol')
    expect(!r.ok && r.error.message).toContain('does not speak TLS')
  })

  it('http:// to an HTTPS server fails with a hint', async () => {
    const r = await httpRequest({url: `http://127.0.0.1:${leafPort}/health`}, {timeoutMs: 1000})
    expect(!r.ok && r.error.kind).toBe('reset')
    expect(!r.ok && r.error.message).toBe(`127.0.0.1:${leafPort} closed the connection without answering: if it serves HTTPS, use https://`)
  })

  it('an unreadable ca_file names the file', async () => {
    const file = join(pki.dir, 'missing-ca.pem')
    const r = await httpRequest({url: `https://127.0.0.1:${selfPort}/`, tls: {caFile: file}}, {timeoutMs: 1000})
    expect(!r.ok && r.error.kind).toBe('tls')
    expect(!r.ok && r.error.message).toContain(file)
  })
})

describe('bodyExcerpt', () => {
  it('escapes control characters and cuts long bodies', () => {
    expect(bodyExcerpt(Buffer.from('a\nb\tc\x00d\r'))).toBe('a\\nb\\tc\\x00d\\r')
    expect(bodyExcerpt(Buffer.from('x'.repeat(500)))).toBe(`${'x'.repeat(120)}…`)
    expect(bodyExcerpt(Buffer.from('héllo wörld'), 5)).toBe('héllo…')
  })

  it('a truncated body is not parsed', () => {
    const res: HttpResponse = {status: 200, headers: {}, body: Buffer.from('{"a":1'), truncated: true, url: 'http://x/', redirects: 0, contentType: 'application/json', durationMs: 1}
    const r = jsonBody(res)
    expect(!r.ok && r.reason).toMatch(/cut off/)
  })
})
