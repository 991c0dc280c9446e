import {execFile} from 'node:child_process'
import {X509Certificate, createPrivateKey} from 'node:crypto'
import {rm, stat} from 'node:fs/promises'
import * as tls from 'node:tls'
import {promisify} from 'node:util'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {createCa, issueCert, makeCertDir, mismatchedKey, type CertAuthority, type PemPair} from '../../src/lab/certs.js'

const DAY = 86_400_000
let dir: string
let ca: CertAuthority

beforeAll(async () => {
  dir = await makeCertDir()
  ca = await createCa(dir, {cn: 'Lab Test CA'})
})
afterAll(async () => {
  await rm(dir, {recursive: true, force: true})
})

/** Serves `pair` on loopback TLS and reports how a client that trusts `trust` sees the handshake. */
async function handshake(pair: PemPair, o: {trust?: string; servername?: string} = {}): Promise<{authorized: boolean; code?: string}> {
  const server = tls.createServer({cert: pair.cert, key: pair.key}, (s) => s.end())
  server.on('tlsClientError', () => undefined)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const port = (server.address() as {port: number}).port
  try {
    return await new Promise((resolve) => {
      const s = tls.connect({host: '127.0.0.1', port, servername: o.servername ?? 'localhost', ca: o.trust, timeout: 2000})
      s.once('secureConnect', () => {
        resolve({authorized: s.authorized})
        s.destroy()
      })
      s.once('error', (e: NodeJS.ErrnoException) => resolve({authorized: false, code: e.code}))
    })
  } finally {
    server.close()
  }
}

async function opensslText(certFile: string): Promise<string> {
  const {stdout} = await promisify(execFile)('openssl', ['x509', '-noout', '-dates', '-ext', 'subjectAltName', '-in', certFile])
  return stdout
}

describe('createCa', () => {
  it('makes a CA certificate whose key matches and whose key file is private', async () => {
    const x = new X509Certificate(ca.cert)
    expect(x.ca).toBe(true)
    expect(x.subject).toBe('CN=Lab Test CA')
    expect(x.issuer).toBe(x.subject)
    expect(x.checkPrivateKey(createPrivateKey(ca.key))).toBe(true)
    expect((await stat(ca.keyFile)).mode & 0o777).toBe(0o600)
    expect(ca.certFile.endsWith('ca.crt')).toBe(true)
  })

  it('does not overwrite an earlier CA in the same directory', async () => {
    const second = await createCa(dir, {cn: 'Second CA'})
    expect(second.certFile).not.toBe(ca.certFile)
    expect(new X509Certificate(ca.cert).subject).toBe('CN=Lab Test CA')
  })
})

describe('issueCert', () => {
  it('issues a CA-signed leaf for localhost that a client trusting the CA accepts', async () => {
    const leaf = await issueCert(dir, {ca, name: 'server'})
    const x = new X509Certificate(leaf.cert)
    expect(x.ca).toBe(false)
    expect(x.issuer).toBe('CN=Lab Test CA')
    expect(x.verify(new X509Certificate(ca.cert).publicKey)).toBe(true)
    expect(x.checkIssued(new X509Certificate(ca.cert))).toBe(true)
    expect(x.checkHost('localhost')).toBe('localhost')
    expect(x.checkIP('127.0.0.1')).toBe('127.0.0.1')
    expect(x.checkIP('::1')).toBe('::1')
    expect(x.checkPrivateKey(createPrivateKey(leaf.key))).toBe(true)
    expect(leaf.certFile.endsWith('/server.crt')).toBe(true)
    expect((await stat(leaf.keyFile)).mode & 0o777).toBe(0o600)
    // Default validity: from an hour ago to 90 days ahead.
    expect(Date.parse(x.validFrom)).toBeLessThan(Date.now() - 50 * 60_000)
    expect(Math.abs(Date.parse(x.validTo) - (Date.now() + 90 * DAY))).toBeLessThan(5 * 60_000)
    expect(await handshake(leaf, {trust: ca.cert})).toEqual({authorized: true})
  })

  it('issues a self-signed leaf that an ordinary client rejects as self-signed', async () => {
    const leaf = await issueCert(dir, {})
    const x = new X509Certificate(leaf.cert)
    expect(x.issuer).toBe(x.subject)
    expect(x.verify(x.publicKey)).toBe(true)
    const seen = await handshake(leaf)
    expect(seen.code).toBe('DEPTH_ZERO_SELF_SIGNED_CERT')
  })

  it('issues an expired certificate with the dates asked for', async () => {
    const notBefore = new Date(Date.now() - 30 * DAY)
    const notAfter = new Date(Date.now() - 2 * DAY)
    const leaf = await issueCert(dir, {ca, notBefore, notAfter, name: 'expired'})
    const x = new X509Certificate(leaf.cert)
    expect(Math.abs(Date.parse(x.validTo) - notAfter.getTime())).toBeLessThan(1000)
    expect(Math.abs(Date.parse(x.validFrom) - notBefore.getTime())).toBeLessThan(1000)
    const text = await opensslText(leaf.certFile)
    expect(text).toMatch(/notAfter=.*GMT/)
    expect(await handshake(leaf, {trust: ca.cert})).toEqual({authorized: false, code: 'CERT_HAS_EXPIRED'})
  })

  it('issues a certificate that expires within days and is still valid now', async () => {
    const notAfter = new Date(Date.now() + 3 * DAY)
    const leaf = await issueCert(dir, {ca, notAfter})
    const x = new X509Certificate(leaf.cert)
    const left = Date.parse(x.validTo) - Date.now()
    expect(left).toBeGreaterThan(2.9 * DAY)
    expect(left).toBeLessThan(14 * DAY)
    expect(await handshake(leaf, {trust: ca.cert})).toEqual({authorized: true})
  })

  it('issues a certificate for another host that fails hostname verification', async () => {
    const leaf = await issueCert(dir, {ca, cn: 'files.example.com', san: ['DNS:files.example.com']})
    const x = new X509Certificate(leaf.cert)
    expect(x.subject).toBe('CN=files.example.com')
    expect(x.checkHost('localhost')).toBeUndefined()
    expect(x.checkIP('127.0.0.1')).toBeUndefined()
    const text = await opensslText(leaf.certFile)
    expect(text).toContain('DNS:files.example.com')
    expect(text).not.toContain('localhost')
    expect((await handshake(leaf, {trust: ca.cert})).code).toBe('ERR_TLS_CERT_ALTNAME_INVALID')
  })

  it('makes RSA keys when asked', async () => {
    const leaf = await issueCert(dir, {ca, keyType: 'rsa'})
    expect(createPrivateKey(leaf.key).asymmetricKeyType).toBe('rsa')
    expect(createPrivateKey((await issueCert(dir, {ca})).key).asymmetricKeyType).toBe('ec')
  })

  it('rejects SAN entries that would smuggle config lines and dates out of order', async () => {
    await expect(issueCert(dir, {san: ['localhost']})).rejects.toThrow(/TYPE:value/)
    await expect(issueCert(dir, {san: ['DNS:a\nbasicConstraints=CA:TRUE']})).rejects.toThrow(/TYPE:value/)
    await expect(issueCert(dir, {notBefore: new Date(), notAfter: new Date(Date.now() - DAY)})).rejects.toThrow(/notAfter/)
  })
})

describe('mismatchedKey', () => {
  it('writes a private key that does not match any certificate', async () => {
    const leaf = await issueCert(dir, {ca})
    const file = await mismatchedKey(dir)
    const {readFile} = await import('node:fs/promises')
    const key = await readFile(file, 'utf8')
    expect(new X509Certificate(leaf.cert).checkPrivateKey(createPrivateKey(key))).toBe(false)
    expect(() => tls.createSecureContext({cert: leaf.cert, key})).toThrow()
    expect((await stat(file)).mode & 0o777).toBe(0o600)
  })
})
