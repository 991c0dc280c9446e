import net from 'node:net'
import os from 'node:os'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {Reachability} from '../../src/diagnostics/reach.js'
import {isLocalHost, isLoopbackHost, reachable, tcpConnect, tcpConnectEach} from '../../src/diagnostics/tcp.js'
import {formatMs} from '../../src/util/time.js'
import {LoopbackServers} from './fixtures/servers.js'

const servers = new LoopbackServers()
let v4Port: number
let v6Port: number
beforeAll(async () => {
  v4Port = await servers.serve(net.createServer((s) => s.destroy()), '127.0.0.1')
  v6Port = await servers.serve(net.createServer((s) => s.destroy()), '::1')
})
afterAll(() => servers.closeAll())

describe('tcpConnect', () => {
  it('connects over IPv4 and says which address answered', async () => {
    const r = await tcpConnect('127.0.0.1', v4Port, {timeoutMs: 300})
    expect(r.ok).toBe(true)
    if (r.ok) expect(r.value).toEqual({host: '127.0.0.1', address: '127.0.0.1', family: 4, port: v4Port})
  })

  it('connects over IPv6 (::1)', async () => {
    const r = await tcpConnect('::1', v6Port, {timeoutMs: 300})
    expect(r.ok).toBe(true)
    if (r.ok) expect(r.value).toMatchObject({address: '::1', family: 6})
  })

  it('refused: names the endpoint and is remembered for the run', async () => {
    const port = await servers.closedPort()
    const reach = new Reachability()
    const r = await tcpConnect('127.0.0.1', port, {timeoutMs: 300, reach})
    expect(r.ok).toBe(false)
    if (!r.ok) {
      expect(r.error.kind).toBe('refused')
      expect(r.error.code).toBe('ECONNREFUSED')
      expect(r.error.message).toContain(`nothing listens on 127.0.0.1:${port} (connection refused)`)
    }
    const key = Reachability.key('127.0.0.1', port)
    expect(reach.known(key)?.kind).toBe('refused')
    // Even if something starts listening now, this run does not retry.
    const again = await tcpConnect('127.0.0.1', port, {timeoutMs: 300, reach})
    expect(!again.ok && again.error.message).toContain('earlier in this run')
  })

  it('a listener on ::1 only refuses IPv4 on the same port', async () => {
    const r = await tcpConnect('127.0.0.1', v6Port, {timeoutMs: 300})
    expect(!r.ok && r.error.kind).toBe('refused')
  })

  it('times out on a black-holed address at the deadline and records it', async () => {
    // 192.0.2.0/24 (TEST-NET-1) is never routed; depending on the network it either hangs
    // (time-out) or fails at once (unreachable). Both are endpoint failures.
    const reach = new Reachability()
    const t0 = Date.now()
    const r = await tcpConnect('192.0.2.123', 9, {timeoutMs: 300, reach})
    expect(Date.now() - t0).toBeLessThan(1000)
    expect(r.ok).toBe(false)
    if (!r.ok) {
      expect(['timeout', 'unreachable']).toContain(r.error.kind)
      if (r.error.kind === 'timeout') expect(r.error.message).toMatch(/no answer from 192\.0\.2\.123:9 within 300ms/)
    }
    expect(reach.known('192.0.2.123:9')).toBeDefined()
  })

  it('honours an abort signal', async () => {
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 50)
    const t0 = Date.now()
    const r = await tcpConnect('192.0.2.123', 9, {timeoutMs: 5000, signal: ac.signal})
    expect(Date.now() - t0).toBeLessThan(1000)
    expect(!r.ok && r.error.kind).toMatch(/^(aborted|unreachable)$/)
    const pre = await tcpConnect('127.0.0.1', v4Port, {timeoutMs: 300, signal: AbortSignal.abort()})
    expect(!pre.ok && pre.error.kind).toBe('aborted')
  })

  it('a name that does not resolve is a dns error', async () => {
    const r = await tcpConnect('no-such-host.invalid', 80, {timeoutMs: 2000})
    expect(r.ok).toBe(false)
    if (!r.ok) {
      expect(r.error.kind).toBe('dns')
      expect(r.error.message).toContain('cannot resolve no-such-host.invalid')
    }
  })

  it('an invalid port is an error value, not a throw', async () => {
    const r = await tcpConnect('127.0.0.1', 70000, {timeoutMs: 300})
    expect(r.ok).toBe(false)
  })
})

describe('reachable (the first contact before a client library is loaded)', () => {
  it('connects once per endpoint per run, however many probes ask', async () => {
    let accepted = 0
    const port = await servers.serve(net.createServer((sock) => (accepted++, sock.destroy())), '127.0.0.1')
    const reach = new Reachability()
    const answers = await Promise.all([1, 2, 3].map(() => reachable('127.0.0.1', port, {timeoutMs: 300, reach})))
    expect(answers).toEqual([null, null, null])
    await new Promise((r) => setTimeout(r, 50))
    expect(accepted).toBe(1)
  })

  it('a refused endpoint: the first asker hears why, the rest that it was earlier in the run', async () => {
    const port = await servers.closedPort()
    const reach = new Reachability()
    const first = await reachable('127.0.0.1', port, {timeoutMs: 300, reach})
    const second = await reachable('127.0.0.1', port, {timeoutMs: 300, reach})
    expect(first).toMatchObject({kind: 'refused', message: expect.not.stringContaining('earlier in this run')})
    expect(second).toMatchObject({kind: 'refused', message: expect.stringMatching(/\(earlier in this run; not retried\)$/)})
  })

  it('without a run to remember it in, it does not probe at all', async () => {
    expect(await reachable('127.0.0.1', await servers.closedPort(), {timeoutMs: 300})).toBeNull()
  })
})

describe('tcpConnectEach', () => {
  it('reports every address of a name separately', async () => {
    const r = await tcpConnectEach('localhost', v4Port, {timeoutMs: 300})
    expect(r.length).toBeGreaterThanOrEqual(1)
    const ipv4 = r.find((x) => x.family === 4)
    expect(ipv4?.result.ok).toBe(true)
    if (ipv4?.result.ok) expect(ipv4.result.value.host).toBe('localhost')
    for (const x of r.filter((e) => e.family === 6)) {
      // A 127.0.0.1-only listener is not there on ::1 (unless the port is shared by chance).
      if (!x.result.ok) expect(x.result.error.kind).toBe('refused')
    }
  })

  it('an IP literal is one entry; brackets are accepted', async () => {
    const r = await tcpConnectEach('[::1]', v6Port, {timeoutMs: 300})
    expect(r).toHaveLength(1)
    expect(r[0]).toMatchObject({address: '::1', family: 6})
    expect(r[0]?.result.ok).toBe(true)
  })

  it('a name that does not resolve yields one dns entry', async () => {
    const r = await tcpConnectEach('no-such-host.invalid', 80, {timeoutMs: 2000})
    expect(r).toHaveLength(1)
    const only = r[0]!.result
    expect(!only.ok && only.error.kind).toBe('dns')
  })
})

describe('isLoopbackHost / isLocalHost', () => {
  it('knows loopback names and addresses', () => {
    for (const h of ['localhost', 'LOCALHOST', 'localhost.', 'api.localhost', '127.0.0.1', '127.1.2.3', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) {
      expect(isLoopbackHost(h), h).toBe(true)
    }
    for (const h of ['10.0.0.1', '128.0.0.1', '::2', '::', '0.0.0.0', 'example.com', 'localhost.example.com', '']) {
      expect(isLoopbackHost(h), h).toBe(false)
    }
  })

  it('knows this machine: loopback, its interface addresses, its name, 0.0.0.0', async () => {
    expect(await isLocalHost('127.0.0.1')).toBe(true)
    expect(await isLocalHost('0.0.0.0')).toBe(true)
    expect(await isLocalHost(os.hostname())).toBe(true)
    const external = Object.values(os.networkInterfaces()).flat().find((i) => i && !i.internal)
    if (external) expect(await isLocalHost(external.address)).toBe(true)
    expect(await isLocalHost('192.0.2.250')).toBe(false)
    expect(await isLocalHost('no-such-host.invalid')).toBe(false)
  })

  it('formats durations as people say them', () => {
    expect(formatMs(5000)).toBe('5s')
    expect(formatMs(1500)).toBe('1.5s')
    expect(formatMs(300)).toBe('300ms')
  })
})
