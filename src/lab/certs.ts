// Certificates for the lab and the tests: a CA, leaves it signs, self-signed leaves, expired and
// soon-expiring ones, ones for the wrong host, and keys that match nothing — every shape the
// TLS checks must recognise. Certificates come from the OpenSSL CLI (`openssl ca`, because only
// it takes arbitrary start and end dates on OpenSSL 3.0); keys from node:crypto, written 0600.
// No key material is ever put into an error message.

import {execFile} from 'node:child_process'
import {generateKeyPair, randomBytes} from 'node:crypto'
import {access, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

export interface PemPair {
  cert: string
  key: string
  certFile: string
  keyFile: string
}
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface CertAuthority extends PemPair {}

export interface IssueOptions {
  /** Signing CA; absent → self-signed. */
  ca?: CertAuthority
  /** Default "localhost". */
  cn?: string
  /** Default ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]. */
  san?: string[]
  /** Default now − 1 h. */
  notBefore?: Date
  /** Default now + 90 days. May be in the past (expired) or close (expiring). */
  notAfter?: Date
  /** File base name: `<name>.crt`, `<name>.key`. Default a fresh `cert-<hex>`. */
  name?: string
  /** Default 'ec' (P-256, fast). */
  keyType?: 'rsa' | 'ec'
}

const OPENSSL_TIMEOUT_MS = 15_000
const HOUR = 3600_000
const DAY = 24 * HOUR

/** A fresh private directory for certificates. The caller removes it (`rm -r`). */
export function makeCertDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'opsctl-certs-'))
}

/** A CA (P-256) valid from an hour ago for ten years, as `ca.crt`/`ca.key` (or `ca-2`, … if taken). */
export async function createCa(dir: string, o: {cn?: string} = {}): Promise<CertAuthority> {
  const base = await freeBaseName(dir, 'ca')
  const now = Date.now()
  return signed(dir, base, {
    cn: o.cn ?? 'opsctl lab CA',
    keyType: 'ec',
    notBefore: new Date(now - HOUR),
    notAfter: new Date(now + 3650 * DAY),
    extensions: 'ca_ext',
    san: null,
    ca: undefined,
  })
}

/** A leaf certificate for a TLS server, signed by `o.ca` or by itself. */
export async function issueCert(dir: string, o: IssueOptions = {}): Promise<PemPair> {
  const now = Date.now()
  const san = o.san ?? ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1']
  for (const entry of san) {
    if (!/^(DNS|IP|URI|email):[^,\n\r]+$/.test(entry)) throw new Error(`issueCert: SAN entry "${entry}" is not TYPE:value (DNS:, IP:, URI:, email:)`)
  }
  const base = o.name ?? `cert-${randomBytes(4).toString('hex')}`
  if (!/^[\w.-]+$/.test(base)) throw new Error(`issueCert: name "${base}" must be a plain file name`)
  return signed(dir, base, {
    cn: o.cn ?? 'localhost',
    keyType: o.keyType ?? 'ec',
    notBefore: o.notBefore ?? new Date(now - HOUR),
    notAfter: o.notAfter ?? new Date(now + 90 * DAY),
    extensions: 'leaf_ext',
    san,
    ca: o.ca,
  })
}

/** Path of a fresh private key that matches no certificate (for "key does not match cert" drills). */
export async function mismatchedKey(dir: string): Promise<string> {
  const file = join(dir, `mismatched-${randomBytes(4).toString('hex')}.key`)
  await writeFile(file, await newKey('ec'), {mode: 0o600})
  return file
}

// ---------------------------------------------------------------------------------------------

interface SignSpec {
  cn: string
  keyType: 'rsa' | 'ec'
  notBefore: Date
  notAfter: Date
  extensions: 'ca_ext' | 'leaf_ext'
  san: string[] | null
  ca: CertAuthority | undefined
}

async function signed(dir: string, base: string, s: SignSpec): Promise<PemPair> {
  if (/[\n\r]/.test(s.cn)) throw new Error('certificate CN must be one line')
  if (s.notAfter.getTime() <= s.notBefore.getTime()) throw new Error('certificate notAfter must be later than notBefore')
  const keyFile = join(dir, `${base}.key`)
  const certFile = join(dir, `${base}.crt`)
  const key = await newKey(s.keyType)
  await writeFile(keyFile, key, {mode: 0o600})

  // `openssl ca` keeps a database and a serial file; give each signing its own, then drop them.
  const work = await mkdtemp(join(dir, '.ca-work-'))
  try {
    const cfg = join(work, 'openssl.cnf')
    const csr = join(work, 'req.csr')
    await writeFile(join(work, 'index.txt'), '')
    await writeFile(join(work, 'serial'), `${randomBytes(16).toString('hex').replace(/^[89a-f]/, '1')}\n`)
    await writeFile(cfg, opensslConfig(work, s.san))
    await openssl(['req', '-new', '-config', cfg, '-key', keyFile, '-subj', `/CN=${escapeSubject(s.cn)}`, '-out', csr])
    const signer = s.ca ? ['-cert', s.ca.certFile, '-keyfile', s.ca.keyFile] : ['-selfsign', '-keyfile', keyFile]
    await openssl([
      'ca', '-batch', '-notext', '-config', cfg, '-in', csr, '-out', certFile,
      '-startdate', asn1Time(s.notBefore), '-enddate', asn1Time(s.notAfter),
      '-extensions', s.extensions, ...signer,
    ])
  } finally {
    await rm(work, {recursive: true, force: true})
  }
  const cert = await readFile(certFile, 'utf8')
  return {cert, key, certFile, keyFile}
}

function opensslConfig(work: string, san: string[] | null): string {
  return `
[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
CN = unused

[ ca ]
default_ca = lab_ca
[ lab_ca ]
database = ${work}/index.txt
new_certs_dir = ${work}
serial = ${work}/serial
default_md = sha256
policy = lab_policy
unique_subject = no
copy_extensions = none
email_in_dn = no
[ lab_policy ]
commonName = supplied

[ ca_ext ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ leaf_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
${san ? `subjectAltName = ${san.join(',')}` : ''}
`
}

function newKey(type: 'rsa' | 'ec'): Promise<string> {
  return new Promise((resolve, reject) => {
    const enc = {publicKeyEncoding: {type: 'spki', format: 'pem'}, privateKeyEncoding: {type: 'pkcs8', format: 'pem'}} as const
    const done = (err: Error | null, _pub: string, priv: string): void => (err ? reject(new Error('private key generation failed')) : resolve(priv))
    if (type === 'rsa') generateKeyPair('rsa', {modulusLength: 2048, ...enc}, done)
    else generateKeyPair('ec', {namedCurve: 'prime256v1', ...enc}, done)
  })
}

function openssl(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, {timeout: OPENSSL_TIMEOUT_MS, maxBuffer: 1024 * 1024}, (err, _stdout, stderr) => {
      if (!err) return resolve()
      const e = err as NodeJS.ErrnoException & {killed?: boolean}
      if (e.code === 'ENOENT') return reject(new Error('openssl not found on PATH: install OpenSSL 3 (apt-get install openssl)'))
      if (e.killed) return reject(new Error(`openssl ${args[0]} did not finish within ${OPENSSL_TIMEOUT_MS / 1000} s`))
      // stderr names files and what OpenSSL disliked; it never echoes key material.
      const why = String(stderr).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('Using configuration')).slice(-2).join('; ')
      reject(new Error(`openssl ${args[0]} failed: ${why || `exit ${String(e.code)}`}`))
    })
  })
}

/** GeneralizedTime as `openssl ca -startdate/-enddate` takes it: YYYYMMDDHHMMSSZ, UTC. */
function asn1Time(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:T]/g, '')
}

function escapeSubject(v: string): string {
  return v.replace(/[\\/+=]/g, (c) => `\\${c}`)
}

async function freeBaseName(dir: string, stem: string): Promise<string> {
  for (let i = 1; ; i++) {
    const base = i === 1 ? stem : `${stem}-${i}`
    try {
      await access(join(dir, `${base}.crt`))
    } catch {
      return base
    }
  }
}
