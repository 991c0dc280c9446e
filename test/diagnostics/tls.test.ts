import {execFileSync} from 'node:child_process'
import {readFileSync, writeFileSync} from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import {join} from 'node:path'
import tls from 'node:tls'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {Reachability} from '../../src/diagnostics/reach.js'
import {certInfoFromPem, inspectCertFiles, readCaFile, tlsHandshake} from '../../src/diagnostics/tls.js'
import {makePki, type Pki} from './fixtures/pki.js'
import {LoopbackServers} from './fixtures/servers.js'

let pki: Pki
const net_ = new LoopbackServers()
const serve = (srv: net.Server, host?: string): Promise<number> => net_.serve(srv, host)

function tlsServer(certFile: string, keyFile: string, host = '127.0.0.1'): Promise<number> {
  const srv = tls.createServer({cert: readFileSync(certFile), key: readFileSync(keyFile)}, (s) => s.end())
  srv.on('tlsClientError', () => {})
  return serve(srv, host)
}

let leafPort: number
let chainPort: number
let selfPort: number
let expiredPort: number
let futurePort: number
let soonPort: number
let wrongPort: number
let v6Port: number

beforeAll(async () => {
  pki = makePki()
  ;[leafPort, chainPort, selfPort, expiredPort, futurePort, soonPort, wrongPort, v6Port] = await Promise.all([
    tlsServer(pki.leaf.cert, pki.leaf.key),
    tlsServer(pki.fullChain, pki.leaf.key),
    tlsServer(pki.selfSigned.cert, pki.selfSigned.key),
    tlsServer(pki.expired.cert, pki.expired.key),
    tlsServer(pki.notYetValid.cert, pki.notYetValid.key),
    tlsServer(pki.expiringSoon.cert, pki.expiringSoon.key),
    tlsServer(pki.wrongHost.cert, pki.wrongHost.key),
    tlsServer(pki.leaf.cert, pki.leaf.key, '::1'),
  ])
})
afterAll(async () => {
  await net_.closeAll()
  pki.cleanup()
})

describe('certInfoFromPem', () => {
  it('describes a CA-signed leaf', () => {
    const c = certInfoFromPem(pki.leaf.certPem)
    expect(c.subject).toBe('CN=localhost')
    expect(c.issuer).toBe('CN=opsctl test CA')
    expect(c.san).toEqual(['DNS:localhost', 'IP Address:127.0.0.1', 'IP Address:0:0:0:0:0:0:0:1'])
    expect(c.selfSigned).toBe(false)
    expect(c.isCA).toBe(false)
    expect(c.daysLeft).toBeGreaterThan(29)
    expect(c.daysLeft).toBeLessThan(31)
    expect(c.validTo).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    expect(c.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/)
    expect(c.serialNumber).toMatch(/^[0-9A-F]+$/)
  })

  it('a CA is a CA and signs itself', () => {
    const c = certInfoFromPem(pki.ca.certPem)
    expect(c.isCA).toBe(true)
    expect(c.selfSigned).toBe(true)
  })

  it('expired: negative days left, exact dates', () => {
    const c = certInfoFromPem(pki.expired.certPem)
    expect(c.validFrom).toBe('2020-01-01T00:00:00.000Z')
    expect(c.validTo).toBe('2020-02-01T00:00:00.000Z')
    expect(c.daysLeft).toBeLessThan(-365)
  })

  it('takes the first certificate of a bundle and rejects non-PEM', () => {
    expect(certInfoFromPem(readFileSync(pki.fullChain, 'utf8')).subject).toBe('CN=localhost')
    expect(() => certInfoFromPem('hello')).toThrow(/no PEM certificate/)
  })
})

describe('tlsHandshake', () => {
  it('trusted with the CA file: chain, protocol, host name by IP SAN', async () => {
    const r = await tlsHandshake('127.0.0.1', chainPort, {timeoutMs: 1000, caFile: pki.ca.cert})
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.value.authorized).toBe(true)
    expect(r.value.authorizationError).toBeNull()
    expect(r.value.hostnameOk).toBe(true)
    expect(r.value.protocol).toMatch(/^TLSv1\.[23]$/)
    expect(r.value.chain.map((c) => c.subject)).toEqual(['CN=localhost', 'CN=opsctl test CA'])
    expect(r.value.chain[1]?.isCA).toBe(true)
  })

  it('untrusted without the CA file, yet the handshake completes', async () => {
    const r = await tlsHandshake('localhost', leafPort, {timeoutMs: 1000})
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.value.servername).toBe('localhost')
    expect(r.value.authorized).toBe(false)
    expect(r.value.authorizationError).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE')
    expect(r.value.hostnameOk).toBe(true)
    expect(r.value.chain).toHaveLength(1)
  })

  it('self-signed', async () => {
    const r = await tlsHandshake('127.0.0.1', selfPort, {timeoutMs: 1000})
    expect(r.ok && r.value.authorizationError).toBe('DEPTH_ZERO_SELF_SIGNED_CERT')
    expect(r.ok && r.value.chain[0]?.selfSigned).toBe(true)
    // Trusting the certificate itself makes it valid.
    const trusted = await tlsHandshake('127.0.0.1', selfPort, {timeoutMs: 1000, caFile: pki.selfSigned.cert})
    expect(trusted.ok && trusted.value.authorized).toBe(true)
  })

  it('expired and not yet valid', async () => {
    const expired = await tlsHandshake('127.0.0.1', expiredPort, {timeoutMs: 1000, caFile: pki.ca.cert})
    expect(expired.ok && expired.value.authorizationError).toBe('CERT_HAS_EXPIRED')
    expect(expired.ok && expired.value.chain[0]!.daysLeft).toBeLessThan(0)
    const future = await tlsHandshake('127.0.0.1', futurePort, {timeoutMs: 1000, caFile: pki.ca.cert})
    expect(future.ok && future.value.authorizationError).toBe('CERT_NOT_YET_VALID')
  })

  it('expiring soon is still trusted, with few days left', async () => {
    const r = await tlsHandshake('127.0.0.1', soonPort, {timeoutMs: 1000, caFile: pki.ca.cert})
    expect(r.ok && r.value.authorized).toBe(true)
    const days = r.ok ? r.value.chain[0]!.daysLeft : NaN
    expect(days).toBeGreaterThan(4)
    expect(days).toBeLessThan(6)
  })

  it('hostname mismatch is reported apart from the chain', async () => {
    const r = await tlsHandshake('127.0.0.1', wrongPort, {timeoutMs: 1000, caFile: pki.ca.cert, servername: 'localhost'})
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.value.authorized).toBe(true)
    expect(r.value.hostnameOk).toBe(false)
    expect(r.value.hostnameError).toMatch(/^ERR_TLS_CERT_ALTNAME_INVALID: .*localhost.*DNS:wrong\.example/)
    const ok = await tlsHandshake('127.0.0.1', wrongPort, {timeoutMs: 1000, caFile: pki.ca.cert, servername: 'wrong.example'})
    expect(ok.ok && ok.value.hostnameOk).toBe(true)
  })

  it('over IPv6', async () => {
    const r = await tlsHandshake('::1', v6Port, {timeoutMs: 1000, caFile: pki.ca.cert})
    expect(r.ok && r.value.authorized && r.value.hostnameOk).toBe(true)
  })

  it('a TCP server that never speaks TLS: one time-out, remembered', async () => {
    const port = await serve(net.createServer(() => {}))
    const reach = new Reachability()
    const t0 = Date.now()
    const r = await tlsHandshake('127.0.0.1', port, {timeoutMs: 300, reach})
    const took = Date.now() - t0
    expect(took).toBeGreaterThanOrEqual(290)
    expect(took).toBeLessThan(800)
    expect(!r.ok && r.error.kind).toBe('timeout')
    expect(!r.ok && r.error.message).toContain(`127.0.0.1:${port} accepted the connection but did not complete a TLS handshake within 300ms`)
    const t1 = Date.now()
    const again = await tlsHandshake('127.0.0.1', port, {timeoutMs: 300, reach})
    expect(Date.now() - t1).toBeLessThan(50)
    expect(!again.ok && again.error.message).toContain('earlier in this run')
  })

  it('a plain HTTP server is a protocol error', async () => {
    const port = await serve(http.createServer((_, res) => res.end('hi')))
    const r = await tlsHandshake('127.0.0.1', port, {timeoutMs: 1000})
    expect(!r.ok && r.error.kind).toBe('protocol')
    expect(!r.ok && r.error.message).toContain('does not speak TLS')
  })

  it('refused', async () => {
    const port = await net_.closedPort()
    const r = await tlsHandshake('127.0.0.1', port, {timeoutMs: 300})
    expect(!r.ok && r.error.kind).toBe('refused')
  })

  it('an unusable ca_file names the file', async () => {
    const missing = await tlsHandshake('127.0.0.1', leafPort, {timeoutMs: 300, caFile: join(pki.dir, 'nope.pem')})
    expect(!missing.ok && missing.error.kind).toBe('tls')
    expect(!missing.ok && missing.error.message).toContain('nope.pem')
    const notPem = await readCaFile(pki.leaf.key)
    expect(!notPem.ok && notPem.error.message).toMatch(/holds no PEM certificate/)
  })
})

describe('inspectCertFiles', () => {
  it('cert and its key match', async () => {
    const r = await inspectCertFiles(pki.leaf.cert, pki.leaf.key)
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.value.keyMatches).toBe(true)
    expect(r.value.keyType).toBe('ec prime256v1')
    expect(r.value.chainLength).toBe(1)
    expect(r.value.cert.subject).toBe('CN=localhost')
  })

  it('a full chain file counts its certificates', async () => {
    const r = await inspectCertFiles(pki.fullChain, pki.leaf.key)
    expect(r.ok && r.value.chainLength).toBe(2)
    expect(r.ok && r.value.keyMatches).toBe(true)
  })

  it('mismatch, and never a byte of key material in the answer', async () => {
    const r = await inspectCertFiles(pki.leaf.cert, pki.strayKey)
    expect(r.ok && r.value.keyMatches).toBe(false)
    const keyBody = readFileSync(pki.strayKey, 'utf8').split('\n')[1]!
    expect(JSON.stringify(r)).not.toContain(keyBody.slice(0, 20))
  })

  it('no key file: reports the certificate alone', async () => {
    const r = await inspectCertFiles(pki.leaf.cert, null)
    expect(r.ok && r.value.keyMatches).toBe(false)
    expect(r.ok && r.value.keyType).toBe('ec prime256v1')
  })

  it('missing files name the file', async () => {
    const cert = await inspectCertFiles(join(pki.dir, 'server.crt'), null)
    expect(!cert.ok && cert.error.kind).toBe('not-found')
    expect(!cert.ok && cert.error.message).toBe(`certificate file ${join(pki.dir, 'server.crt')} does not exist`)
    const key = await inspectCertFiles(pki.leaf.cert, join(pki.dir, 'server.key'))
    expect(!key.ok && key.error.kind).toBe('not-found')
    expect(!key.ok && key.error.message).toContain('server.key')
  })

  it('not PEM, swapped files and encrypted keys are protocol errors', async () => {
    const junk = join(pki.dir, 'junk.pem')
    writeFileSync(junk, 'not a certificate\n')
    const r = await inspectCertFiles(junk, null)
    expect(!r.ok && r.error.kind).toBe('protocol')
    const swapped = await inspectCertFiles(pki.leaf.key, pki.leaf.cert)
    expect(!swapped.ok && swapped.error.message).toContain('swapped')
    const enc = join(pki.dir, 'enc.key')
    execFileSync('openssl', ['pkey', '-in', pki.leaf.key, '-aes256', '-passout', 'pass:opsctl-test', '-out', enc])
    const encrypted = await inspectCertFiles(pki.leaf.cert, enc)
    expect(!encrypted.ok && encrypted.error.kind).toBe('protocol')
    expect(!encrypted.ok && encrypted.error.message).toContain('encrypted with a passphrase')
    expect(JSON.stringify(encrypted)).not.toContain('opsctl-test')
  })
})
