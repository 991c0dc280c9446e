// TLS: what certificate an endpoint presents and whether it can be trusted, and what the
// certificate and key files on disk hold. The handshake never fails for certificate reasons:
// it completes with verification off and then judges the chain, the dates and the name, so
// a report can say "expired 3 days ago" instead of "handshake failed".

import {X509Certificate, createPrivateKey, type KeyObject} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import net from 'node:net'
import tls from 'node:tls'

import {Reachability} from './reach.js'
import {abortedError, connectTimeoutMessage, errorMessageOf, socketError, socketProbe, stripBrackets} from './tcp.js'
import {probeFail, probeOk} from './types.js'
import type {ProbeError, ProbeOptions, ProbeResult} from './types.js'
import {formatMs} from '../util/time.js'

export interface CertInfo {
  subject: string
  issuer: string
  serialNumber: string
  fingerprint256: string
  validFrom: string // ISO 8601
  validTo: string // ISO 8601
  /** Negative when expired. */
  daysLeft: number
  /** Issuer equals subject and the signature verifies with the certificate's own key. */
  selfSigned: boolean
  /** `DNS:…` and `IP Address:…` entries as Node prints them. */
  san: string[]
  isCA: boolean
}

export interface TlsHandshake {
  host: string
  port: number
  servername: string
  protocol: string | null
  /** Leaf first. */
  chain: CertInfo[]
  /** Chain verified against the bundled CAs plus caFile. Says nothing about the host name. */
  authorized: boolean
  authorizationError: string | null
  hostnameOk: boolean
  hostnameError: string | null
}

export interface CertFilesReport {
  cert: CertInfo
  /** Certificates in the file (leaf + intermediates). */
  chainLength: number
  /** The key file's private key belongs to the certificate; false when no key file was given. */
  keyMatches: boolean
  /** The certificate's key: "rsa 2048", "ec prime256v1", "ed25519". */
  keyType: string
}

const DAY_MS = 86_400_000

// ---------------------------------------------------------------------------------------------
// Certificates

/** Splits a comma-separated X.509 list as Node prints it, keeping quoted commas. */
function splitNodeList(text: string): string[] {
  const out: string[] = []
  let cur = ''
  let quoted = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c === '"') quoted = !quoted
    if (c === ',' && !quoted && text[i + 1] === ' ') {
      out.push(cur)
      cur = ''
      i++
      continue
    }
    cur += c
  }
  if (cur !== '') out.push(cur)
  return out
}

function oneLineName(name: string): string {
  return name.split('\n').filter(Boolean).join(', ')
}

function isoDate(text: string): string {
  const d = new Date(text)
  return Number.isNaN(d.getTime()) ? text : d.toISOString()
}

export function certInfoFromX509(x: X509Certificate, now = Date.now()): CertInfo {
  const validTo = new Date(x.validTo).getTime()
  let selfSigned = false
  if (x.issuer === x.subject) {
    try {
      selfSigned = x.verify(x.publicKey)
    } catch {
      selfSigned = false
    }
  }
  return {
    subject: oneLineName(x.subject),
    issuer: oneLineName(x.issuer),
    serialNumber: x.serialNumber,
    fingerprint256: x.fingerprint256,
    validFrom: isoDate(x.validFrom),
    validTo: isoDate(x.validTo),
    daysLeft: Math.round(((validTo - now) / DAY_MS) * 100) / 100,
    selfSigned,
    san: x.subjectAltName ? splitNodeList(x.subjectAltName) : [],
    isCA: x.ca,
  }
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** Every certificate block of a PEM text, in order. */
export function pemCertificates(pem: string): string[] {
  return pem.match(PEM_CERT) ?? []
}

/** Describes the first certificate of a PEM text. Throws an Error when there is none. */
export function certInfoFromPem(pem: string): CertInfo {
  const first = pemCertificates(pem)[0]
  if (!first) throw new Error('no PEM certificate (-----BEGIN CERTIFICATE-----) found')
  return certInfoFromX509(new X509Certificate(first))
}

function keyDescription(key: KeyObject): string {
  const type = key.asymmetricKeyType ?? 'unknown'
  const d = key.asymmetricKeyDetails
  if (d?.modulusLength) return `${type} ${d.modulusLength}`
  if (d?.namedCurve) return `${type} ${d.namedCurve}`
  return type
}

async function readPemFile(
  file: string,
  what: string,
): Promise<{ok: true; text: string} | {ok: false; error: ProbeError}> {
  try {
    return {ok: true, text: await readFile(file, 'utf8')}
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return {ok: false, error: {kind: 'not-found', code, message: `${what} ${file} does not exist`}}
    if (code === 'EACCES' || code === 'EPERM') {
      return {ok: false, error: {kind: 'permission', code, message: `cannot read ${what} ${file} (${code}): run as a user that may read it, or fix its mode`}}
    }
    if (code === 'EISDIR') return {ok: false, error: {kind: 'other', code, message: `${what} ${file} is a directory, not a file`}}
    return {ok: false, error: {kind: 'other', ...(code ? {code} : {}), message: `cannot read ${what} ${file}: ${errorMessageOf(err)}`}}
  }
}

/**
 * Reads a CA bundle for verification. Unreadable → 'permission' (EACCES) or 'tls' (anything
 * else: missing, a directory, not PEM), always naming the file.
 */
export async function readCaFile(file: string): Promise<{ok: true; pem: string} | {ok: false; error: ProbeError}> {
  const read = await readPemFile(file, 'ca_file')
  if (!read.ok) return {ok: false, error: read.error.kind === 'permission' ? read.error : {...read.error, kind: 'tls'}}
  const certs = pemCertificates(read.text)
  if (certs.length === 0) return {ok: false, error: {kind: 'tls', message: `ca_file ${file} holds no PEM certificate`}}
  try {
    for (const c of certs) new X509Certificate(c)
  } catch (err) {
    return {ok: false, error: {kind: 'tls', message: `ca_file ${file} holds a certificate that cannot be parsed: ${errorMessageOf(err)}`}}
  }
  return {ok: true, pem: certs.join('\n')}
}

const contexts = new Map<string, tls.SecureContext>()

/**
 * A client context trusting the bundled CAs plus the ones from a ca_file (a private CA adds
 * trust, it does not replace it). Built once per CA bundle: parsing the ~150 bundled roots
 * costs tens of milliseconds, too much to pay on every probe.
 */
export function secureContextFor(caPem: string): tls.SecureContext {
  let ctx = contexts.get(caPem)
  if (!ctx) {
    ctx = tls.createSecureContext({ca: [...tls.rootCertificates, caPem]})
    if (contexts.size >= 16) contexts.clear()
    contexts.set(caPem, ctx)
  }
  return ctx
}

/**
 * Certificates in the file, the key (when given) and whether the two belong together.
 * Never includes key material in the result or in an error.
 */
export async function inspectCertFiles(certFile: string, keyFile: string | null): Promise<ProbeResult<CertFilesReport>> {
  const startedAt = Date.now()
  const certRead = await readPemFile(certFile, 'certificate file')
  if (!certRead.ok) return probeFail(certRead.error, startedAt)
  const blocks = pemCertificates(certRead.text)
  const leafPem = blocks[0]
  if (!leafPem) {
    const hint = /PRIVATE KEY-----/.test(certRead.text) ? ' (it holds a private key: are cert_file and key_file swapped?)' : ''
    return probeFail({kind: 'protocol', message: `certificate file ${certFile} holds no PEM certificate${hint}`}, startedAt)
  }
  let leaf: X509Certificate
  try {
    leaf = new X509Certificate(leafPem)
  } catch (err) {
    return probeFail({kind: 'protocol', message: `certificate file ${certFile} holds a certificate that cannot be parsed: ${errorMessageOf(err)}`}, startedAt)
  }
  const cert = certInfoFromX509(leaf)
  const keyType = keyDescription(leaf.publicKey)
  if (keyFile === null) return probeOk({cert, chainLength: blocks.length, keyMatches: false, keyType}, startedAt)

  const keyRead = await readPemFile(keyFile, 'key file')
  if (!keyRead.ok) return probeFail(keyRead.error, startedAt)
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(keyRead.text)) {
    const hint = pemCertificates(keyRead.text).length > 0 ? ' (it holds a certificate: are cert_file and key_file swapped?)' : ''
    return probeFail({kind: 'protocol', message: `key file ${keyFile} holds no PEM private key${hint}`}, startedAt)
  }
  let key: KeyObject
  try {
    key = createPrivateKey({key: keyRead.text, format: 'pem'})
  } catch (err) {
    // The OpenSSL reason only: it never quotes the key.
    const encrypted = /ENCRYPTED/.test(keyRead.text) || /passphrase|bad decrypt/i.test(errorMessageOf(err))
    const message = encrypted
      ? `key file ${keyFile} is encrypted with a passphrase: the service cannot load it unattended`
      : `key file ${keyFile} holds a private key that cannot be parsed (${(err as {code?: string}).code ?? 'invalid key'})`
    return probeFail({kind: 'protocol', message}, startedAt)
  }
  let keyMatches = false
  try {
    keyMatches = leaf.checkPrivateKey(key)
  } catch {
    keyMatches = false // a key of another type (EC key, RSA cert) cannot match
  }
  return probeOk({cert, chainLength: blocks.length, keyMatches, keyType}, startedAt)
}

// ---------------------------------------------------------------------------------------------
// Handshake

const CERT_REASONS: Record<string, string> = {
  CERT_HAS_EXPIRED: 'the certificate has expired: renew it',
  CERT_NOT_YET_VALID: 'the certificate is not valid yet: check this machine\'s clock, or the certificate\'s start date',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the certificate is self-signed: set tls.ca_file to it (or tls.insecure: true on a test system)',
  SELF_SIGNED_CERT_IN_CHAIN: 'the chain ends in an untrusted root: set tls.ca_file to that CA',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the issuer is unknown or an intermediate certificate is missing: serve the full chain, or set tls.ca_file',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'the issuer is not trusted here or an intermediate certificate is missing: serve the full chain, or set tls.ca_file',
  UNABLE_TO_GET_ISSUER_CERT: 'an issuer certificate is missing from the chain: serve the full chain',
  CERT_SIGNATURE_FAILURE: 'a certificate signature does not verify',
  CERT_REVOKED: 'the certificate has been revoked',
  CERT_UNTRUSTED: 'the certificate is not trusted for this purpose',
  INVALID_CA: 'an issuer in the chain is not a CA certificate',
  ERR_TLS_CERT_ALTNAME_INVALID: 'the certificate does not name this host',
}

/** One line for a certificate verification code (CERT_HAS_EXPIRED → what it means and what to do). */
export function describeCertError(code: string): string {
  return CERT_REASONS[code] ?? `certificate verification failed (${code})`
}

const PLAINTEXT_PEER = /WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|HTTP_REQUEST|UNKNOWN_PROTOCOL|RECORD_LAYER_FAILURE/

/**
 * Classifies a TLS-layer error: certificate refusals → 'tls' with the reason, a peer that
 * answers plain text → 'protocol', anything socket-level → socketError.
 */
export function tlsError(err: unknown, host: string, endpoint: string): ProbeError {
  const code = (err as {code?: unknown} | null)?.code
  if (typeof code === 'string') {
    if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
      const reason = (err as {reason?: unknown}).reason
      return {kind: 'tls', code, message: `TLS certificate of ${endpoint} does not name this host: ${typeof reason === 'string' ? reason : errorMessageOf(err)}: use a name the certificate lists, or reissue it`}
    }
    if (PLAINTEXT_PEER.test(code)) {
      return {kind: 'protocol', code, message: `${endpoint} does not speak TLS (it answered in plain text, probably HTTP): use http:// or enable TLS on the server`}
    }
    if (code in CERT_REASONS || (!code.startsWith('ERR_') && /CERT|SELF_SIGNED|UNABLE_TO_|^INVALID_/.test(code))) {
      return {kind: 'tls', code, message: `TLS certificate of ${endpoint} is not trusted (${code}): ${describeCertError(code)}`}
    }
    if (/ALERT_CERTIFICATE_REQUIRED/.test(code)) {
      return {kind: 'tls', code, message: `${endpoint} requires a client certificate (${code})`}
    }
    if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) {
      return {kind: 'tls', code, message: `TLS handshake with ${endpoint} failed (${code}): ${errorMessageOf(err)}`}
    }
  }
  return socketError(err, host, endpoint)
}

function chainOf(socket: tls.TLSSocket): CertInfo[] {
  const chain: CertInfo[] = []
  const seen = new Set<string>()
  let cert: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true)
  const now = Date.now()
  while (cert && cert.raw && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256)
    try {
      chain.push(certInfoFromX509(new X509Certificate(cert.raw), now))
    } catch {
      break
    }
    cert = cert.issuerCertificate
  }
  return chain
}

export function tlsStallMessage(key: string, ms: number): string {
  return `${key} accepted the connection but did not complete a TLS handshake within ${formatMs(ms)}: is TLS enabled on that port?`
}

/** What a completed handshake showed: the chain, whether it verifies, whether it names the host. */
function evaluate(s: tls.TLSSocket, host: string, port: number, servername: string): TlsHandshake {
  const peer = s.getPeerCertificate()
  let hostnameError: string | null = null
  if (!peer || !peer.raw) hostnameError = 'the server presented no certificate'
  else {
    const mismatch = tls.checkServerIdentity(servername, peer)
    if (mismatch) {
      const reason = (mismatch as Error & {reason?: string}).reason ?? mismatch.message
      hostnameError = `${(mismatch as NodeJS.ErrnoException).code ?? 'ERR_TLS_CERT_ALTNAME_INVALID'}: ${reason}`
    }
  }
  // Node documents an Error but sets the verification code, a string.
  const authError = s.authorizationError as unknown
  const authorizationError = s.authorized
    ? null
    : authError instanceof Error
      ? ((authError as NodeJS.ErrnoException).code ?? authError.message)
      : authError
        ? String(authError)
        : 'unverified'
  return {
    host,
    port,
    servername,
    protocol: s.getProtocol() ?? null,
    chain: chainOf(s),
    authorized: s.authorized,
    authorizationError,
    hostnameOk: hostnameError === null,
    hostnameError,
  }
}

/**
 * Completes a TLS handshake with host:port without trusting anything, then evaluates what the
 * server presented: chain verification (bundled CAs + caFile), host name, dates.
 */
export async function tlsHandshake(
  host: string,
  port: number,
  o: {servername?: string; caFile?: string | null} & ProbeOptions,
): Promise<ProbeResult<TlsHandshake>> {
  const startedAt = Date.now()
  const bare = stripBrackets(host)
  const key = Reachability.key(bare, port)
  const known = o.reach?.known(key)
  if (known) return probeFail(known, startedAt)
  if (o.signal?.aborted) return probeFail(abortedError(`the TLS handshake with ${key}`), startedAt)

  let caPem: string | null = null
  if (o.caFile) {
    const ca = await readCaFile(o.caFile)
    if (!ca.ok) return probeFail(ca.error, startedAt)
    caPem = ca.pem
  }
  // SNI cannot carry an IP address; the name checked is the one a client would check.
  const servername = o.servername ?? bare
  const sni = net.isIP(servername) ? undefined : servername

  let tcpConnected = false
  return socketProbe<TlsHandshake>({
    key,
    what: `the TLS handshake with ${key}`,
    opts: o,
    startedAt,
    onDeadline: () =>
      tcpConnected
        ? {kind: 'timeout', message: tlsStallMessage(key, o.timeoutMs)}
        : {kind: 'timeout', message: connectTimeoutMessage(key, o.timeoutMs)},
    onError: (err) => tlsError(err, bare, key),
    start: (probe) => {
      const s = probe.adopt(
        tls.connect({
          host: bare,
          port,
          ...(sni ? {servername: sni} : {}),
          rejectUnauthorized: false,
          // The host name is judged below, separately from the chain.
          checkServerIdentity: () => undefined,
          ...(caPem ? {secureContext: secureContextFor(caPem)} : {}),
        }),
      )
      s.once('connect', () => {
        tcpConnected = true
      })
      s.once('secureConnect', () => probe.ok(evaluate(s, bare, port, servername)))
    },
  })
}
