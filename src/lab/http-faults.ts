// Misbehaviours that a real deployment shows from the outside — a proxy's HTML page, a hung
// upstream, an endless body, a trickle, an error, bytes that are not HTTP — packaged so every
// simulator (CallFS, Hookshot, Hotswap, Toombos) can put them in front of any node:http handler.
// Also the loopback listener the simulators share: one that can be stopped at once even while
// connections hang, and that answers plain HTTP on a TLS port the way Go's net/http does.

import {randomBytes} from 'node:crypto'
import * as http from 'node:http'
import * as https from 'node:https'
import * as net from 'node:net'
import {clearInterval, setInterval} from 'node:timers'

export type HttpFault = 'html' | 'hang' | 'huge-body' | 'slow-loris' | 'error-500' | 'garbage'
export const HTTP_FAULTS: readonly HttpFault[] = ['html', 'hang', 'huge-body', 'slow-loris', 'error-500', 'garbage']

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void

export interface FaultOptions {
  /** huge-body: bytes sent before the body ends. Default 1 GiB. */
  hugeBodyBytes?: number
  /** slow-loris: one byte every this many ms. Default 200. */
  slowLorisIntervalMs?: number
  /** huge-body and slow-loris: the Content-Type announced. Default application/json. */
  contentType?: string
  /** error-500: the body sent. Default a plain-text "Internal Server Error". */
  errorBody?: {contentType: string; body: string}
  /** html: the page sent. Default a reverse proxy's sign-in page. */
  html?: string
}

const DEFAULT_HUGE_BYTES = 1024 * 1024 * 1024
const HUGE_CHUNK = Buffer.alloc(64 * 1024, 0x78) // "xxxx…", valid inside a JSON string

const PROXY_PAGE = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in - Access Gateway</title></head>
<body>
<h1>Sign in to continue</h1>
<p>Your session has expired. Please sign in through the corporate access gateway.</p>
<form method="post" action="/oauth2/start"><button type="submit">Sign in</button></form>
</body>
</html>
`

/**
 * Answers `req` with the fault. Never throws. Every timer it starts stops when the response
 * closes, so destroying the socket (see {@link listenLoopback}'s close) ends the fault.
 * Returns the status code put on the wire, or 0 when none is (hang, garbage).
 */
export function serveFault(fault: HttpFault, req: http.IncomingMessage, res: http.ServerResponse, o: FaultOptions = {}): number {
  try {
    switch (fault) {
      case 'html': {
        const page = o.html ?? PROXY_PAGE
        res.writeHead(200, {'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(page)})
        res.end(page)
        return 200
      }
      case 'hang':
        // Accept, read nothing more, answer nothing: the socket stays open until the peer or
        // the server's close() gives up on it.
        return 0
      case 'huge-body':
        streamHugeBody(res, o.hugeBodyBytes ?? DEFAULT_HUGE_BYTES, o.contentType ?? 'application/json')
        return 200
      case 'slow-loris':
        trickle(res, o.slowLorisIntervalMs ?? 200, o.contentType ?? 'application/json')
        return 200
      case 'error-500': {
        const e = o.errorBody ?? {contentType: 'text/plain; charset=utf-8', body: 'Internal Server Error\n'}
        res.writeHead(500, {'content-type': e.contentType, 'content-length': Buffer.byteLength(e.body)})
        res.end(e.body)
        return 500
      }
      case 'garbage': {
        const bytes = randomBytes(512)
        // A reply that happened to start with "H" could pass for "HTTP/"; keep it unmistakable.
        if (bytes[0] === 0x48) bytes[0] = 0x00
        req.socket.end(bytes)
        return 0
      }
    }
  } catch {
    req.socket.destroy()
  }
  return 0
}

/** Streams `total` bytes of one JSON document, honouring back-pressure: nothing piles up in memory. */
function streamHugeBody(res: http.ServerResponse, total: number, contentType: string): void {
  res.writeHead(200, {'content-type': contentType})
  const head = '{"status":"ok","padding":"'
  let sent = Buffer.byteLength(head)
  let closed = false
  res.once('close', () => {
    closed = true
  })
  const pump = (): void => {
    while (!closed && sent < total) {
      const chunk = total - sent >= HUGE_CHUNK.length ? HUGE_CHUNK : HUGE_CHUNK.subarray(0, total - sent)
      sent += chunk.length
      if (!res.write(chunk)) {
        res.once('drain', pump)
        return
      }
    }
    if (!closed) res.end('"}')
  }
  if (res.write(head)) pump()
  else res.once('drain', pump)
}

/** Headers at once, then one body byte per interval, forever (until the response closes). */
function trickle(res: http.ServerResponse, intervalMs: number, contentType: string): void {
  res.writeHead(200, {'content-type': contentType})
  res.flushHeaders()
  const body = '{"status":"ok"'
  let i = 0
  const timer = setInterval(() => {
    if (res.destroyed || res.writableEnded) {
      clearInterval(timer)
      return
    }
    res.write(body[i % body.length] ?? ' ')
    i++
  }, intervalMs)
  res.once('close', () => clearInterval(timer))
}

// ---------------------------------------------------------------------------------------------

export interface ListenOptions {
  host?: string
  /** 0 (default) picks a free port. */
  port?: number
  /** PEM pair: serve HTTPS. Absent or null: plain HTTP. */
  tls?: {cert: string; key: string} | null
  /**
   * What a TLS port does with a plain-HTTP request. 'go' (default) answers like Go's net/http:
   * `HTTP/1.0 400 Bad Request` + "Client sent an HTTP request to an HTTPS server."; 'close' hangs up.
   */
  plainHttpOnTls?: 'go' | 'close'
}

export interface LoopbackServer {
  host: string
  port: number
  /** `http(s)://host:port` (IPv6 hosts bracketed). */
  url: string
  /** Stops listening and destroys every connection — idle, hung, mid-handshake — then resolves. */
  close(): Promise<void>
}

const GO_PLAIN_ON_TLS = 'HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n'
// Go's tlsRecordHeaderLooksLikeHTTP: the first five bytes of a request line it recognises.
const HTTP_STARTS = ['GET /', 'HEAD ', 'POST ', 'PUT /', 'OPTIO']

/**
 * Listens on loopback and hands each connection to `handler` over HTTP or HTTPS. Every socket is
 * tracked from accept on, so close() ends hung requests and half-open handshakes too.
 */
export async function listenLoopback(handler: Handler, o: ListenOptions = {}): Promise<LoopbackServer> {
  const host = o.host ?? '127.0.0.1'
  const sockets = new Set<net.Socket>()
  const track = (s: net.Socket): void => {
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
  }

  const tls = o.tls ?? null
  const httpServer: http.Server = tls ? https.createServer({cert: tls.cert, key: tls.key}, handler) : http.createServer(handler)
  // Hung requests are the point of some faults; the server must not time them out itself.
  httpServer.requestTimeout = 0
  httpServer.headersTimeout = 60_000
  httpServer.on('secureConnection', track)
  httpServer.on('tlsClientError', (_err: Error, s: net.Socket) => s.destroy())
  httpServer.on('clientError', (_err: Error, s: net.Socket) => {
    if (s.writable) s.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n')
    else s.destroy()
  })

  const plainOnTls = o.plainHttpOnTls ?? 'go'
  const listener = net.createServer((socket) => {
    track(socket)
    socket.on('error', () => socket.destroy())
    if (!tls) {
      httpServer.emit('connection', socket)
      return
    }
    // Look at the first bytes: a TLS handshake goes to the HTTPS server, plain HTTP gets Go's answer.
    socket.once('data', (first: Buffer) => {
      socket.pause()
      if (first[0] === 0x16) {
        socket.unshift(first)
        // The TLS socket takes over the handle and replays what was unshifted (tls initRead).
        httpServer.emit('connection', socket)
        return
      }
      const start = first.subarray(0, 5).toString('latin1')
      if (plainOnTls === 'go' && HTTP_STARTS.includes(start)) socket.end(GO_PLAIN_ON_TLS)
      else socket.destroy()
    })
  })

  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject)
    listener.listen(o.port ?? 0, host, () => {
      listener.off('error', reject)
      resolve()
    })
  })
  const address = listener.address()
  const port = typeof address === 'object' && address ? address.port : 0
  const urlHost = host.includes(':') ? `[${host}]` : host

  let closing: Promise<void> | null = null
  return {
    host,
    port,
    url: `${tls ? 'https' : 'http'}://${urlHost}:${port}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        listener.close(() => resolve())
        for (const s of sockets) s.destroy()
        sockets.clear()
        httpServer.closeAllConnections()
      })
      return closing
    },
  }
}
