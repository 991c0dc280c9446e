// callfs.tls.cert against real certificates: served by the CallFS simulator over real TLS and
// named in a real config.yaml — valid, expired, expiring, for another host, self-signed and not
// trusted, with a key of another pair, missing — and the self-signed fix applied for real.

import {execFileSync, spawn, type ChildProcess} from 'node:child_process'
import {X509Certificate} from 'node:crypto'
import {randomBytes} from 'node:crypto'
import {chmod, chown, copyFile, lstat, mkdtemp, readFile, readdir, readlink, rm, stat, symlink, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {inspectCertFiles} from '../../../src/diagnostics/tls.js'
import {AuditLog} from '../../../src/engine/audit.js'
import {pendingFixes, remediate} from '../../../src/engine/remediate.js'
import {createCa, issueCert, makeCertDir, mismatchedKey, type CertAuthority, type IssueOptions, type PemPair} from '../../../src/lab/certs.js'
import {startCallfsSim, type CallfsSim} from '../../../src/lab/callfs.js'
import {generateSelfSignedFix, sanCovers} from '../../../src/runbooks/callfs/tls-fix.js'
import {API_KEY, startCallfsWorld, validCallfsConfig, type CallfsWorld} from '../../support/callfs-world.js'
import {freePort, systemUser} from '../../support/ports.js'
import {exited, isRunning, waitUntil} from '../../support/processes.js'

// This file's own unit name (≤ 15 characters): the walk looks for a process named after it.
const UNIT = `cfs-tls-${randomBytes(3).toString('hex')}`
const DAY = 86_400_000

let w: CallfsWorld
let certDir: string
let ca: CertAuthority
const sims: CallfsSim[] = []
const children: ChildProcess[] = []

beforeAll(async () => {
  w = await startCallfsWorld({sim: false})
  certDir = await makeCertDir()
  ca = await createCa(certDir)
})
afterAll(async () => {
  await Promise.all(children.map(async (c) => {
    if (isRunning(c)) {
      c.kill('SIGKILL')
      await exited(c)
    }
  }))
  await Promise.allSettled(sims.map((s) => s.stop()))
  await w?.stop()
  if (certDir) await rm(certDir, {recursive: true, force: true})
})

function cert(o: IssueOptions = {}): Promise<PemPair> {
  return issueCert(certDir, o)
}

/** A CallFS (the simulator) serving `pair` on loopback; its URL by the name localhost. */
async function serve(pair: PemPair): Promise<string> {
  const sim = await startCallfsSim({apiKeys: [API_KEY], tls: {cert: pair.cert, key: pair.key}, metricsPort: null})
  sims.push(sim)
  return sim.url.replace('127.0.0.1', 'localhost')
}

/** A CallFS config.yaml naming these certificate files; its path. */
async function configWith(certFile: string, keyFile: string): Promise<string> {
  const path = join(w.dir, `config-${randomBytes(4).toString('hex')}.yaml`)
  await writeFile(path, validCallfsConfig({dataDir: w.dataDir, certFile, keyFile, dsn: 'postgres://callfs@127.0.0.1:1/callfs', redisAddr: '127.0.0.1:1'}))
  return path
}

/** Overrides for a CallFS at `url` configured with `files`, trusting `caFile`. */
function target(url: string, configFile: string, tls: {insecure?: boolean; ca_file?: string | null}): Record<string, unknown> {
  return {unit: UNIT, url, config_file: configFile, tls: {insecure: false, ca_file: null, ...tls}}
}

function tlsCheck(overrides: Record<string, unknown>) {
  return w.check('callfs.tls.cert', overrides)
}

const re = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

// ---------------------------------------------------------------------------------------------

describe('callfs.tls.cert: what is served and what is configured', () => {
  it('ok: a valid certificate, trusted through ca_file, matching its key file', async () => {
    const pair = await cert()
    const r = await tlsCheck(target(await serve(pair), await configWith(pair.certFile, pair.keyFile), {ca_file: pair.certFile}))
    const leaf = new X509Certificate(pair.cert)
    expect(r.status).toBe('ok')
    expect(r.summary).toBe(`served certificate for CN=localhost valid until ${new Date(leaf.validTo).toISOString()}`)
    expect(r.evidence).toMatchObject({
      served: {subject: 'CN=localhost', authorized: true, authorizationError: null, selfSigned: true},
      certFile: pair.certFile,
      keyFile: pair.keyFile,
      file: {keyMatches: true, selfSigned: true},
    })
    expect(r.remediation).toBeNull()
  })

  it('fail: a real expired certificate served and configured', async () => {
    const pair = await cert({notBefore: new Date(Date.now() - 100 * DAY), notAfter: new Date(Date.now() - 10 * DAY - 3600_000)})
    const r = await tlsCheck(target(await serve(pair), await configWith(pair.certFile, pair.keyFile), {ca_file: pair.certFile}))
    const validTo = new Date(new X509Certificate(pair.cert).validTo).toISOString()
    expect(r.status).toBe('fail')
    expect(r.evidence.issues).toEqual([
      `served certificate expired ${validTo} (11 days ago)`,
      `certificate file ${pair.certFile} expired ${validTo} (11 days ago)`,
    ])
    expect(r.summary).toBe((r.evidence.issues as string[]).join('; '))
    expect(r.evidence).toMatchObject({served: {authorizationError: 'CERT_HAS_EXPIRED'}})
  })

  it('warn: a certificate that expires within 14 days', async () => {
    const pair = await cert({notAfter: new Date(Date.now() + 5 * DAY - 3600_000)})
    const r = await tlsCheck(target(await serve(pair), await configWith(pair.certFile, pair.keyFile), {ca_file: pair.certFile}))
    const validTo = new Date(new X509Certificate(pair.cert).validTo).toISOString()
    expect(r.status).toBe('warn')
    expect(r.evidence.issues).toEqual([
      `served certificate expires ${validTo} (in 4 days)`,
      `certificate file ${pair.certFile} expires ${validTo} (in 4 days)`,
    ])
  })

  it('the warning horizon is the configured cert_expiry_warn', async () => {
    const pair = await cert({notAfter: new Date(Date.now() + 20 * DAY)})
    const over = target(await serve(pair), await configWith(pair.certFile, pair.keyFile), {ca_file: pair.certFile})
    expect((await tlsCheck(over)).status).toBe('ok')
    expect((await tlsCheck({...over, thresholds: {cert_expiry_warn: '30d'}})).status).toBe('warn')
  })

  it('fail: a certificate for another host', async () => {
    const pair = await cert({cn: 'files.example.com', san: ['DNS:files.example.com']})
    const r = await tlsCheck(target(await serve(pair), await configWith(pair.certFile, pair.keyFile), {ca_file: pair.certFile}))
    expect(r.status).toBe('fail')
    expect(r.evidence.issues).toEqual([expect.stringMatching(/^served certificate does not cover localhost: .*files\.example\.com/)])
    expect(r.evidence).toMatchObject({served: {san: ['DNS:files.example.com'], authorized: true}})
  })

  it('fail: a self-signed certificate that is not trusted (insecure: false), with the hint', async () => {
    const pair = await cert()
    const r = await tlsCheck(target(await serve(pair), await configWith(pair.certFile, pair.keyFile), {ca_file: null}))
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(
      'served certificate is self-signed and not trusted (DEPTH_ZERO_SELF_SIGNED_CERT): set systems.callfs.tls.ca_file to it, or tls.insecure: true for a dev setup',
    )
    // A new self-signed pair would be just as untrusted: the fix is to trust this one.
    expect(r.remediation).toMatchObject({
      id: 'callfs.tls.trust',
      automated: false,
      plan: [`set systems.callfs.tls.ca_file: ${pair.certFile} in the opsctl configuration (the certificate CallFS is configured to serve)`, 'or, on a test system only, tls.insecure: true'],
    })
  })

  it('ok with insecure: true, noting that verification is disabled', async () => {
    const pair = await cert()
    const r = await tlsCheck(target(await serve(pair), await configWith(pair.certFile, pair.keyFile), {insecure: true}))
    expect(r.status).toBe('ok')
    expect(r.summary).toMatch(/^served certificate for CN=localhost valid until \S+; verification disabled by tls\.insecure$/)
  })

  it('insecure: true does not hide an expired certificate', async () => {
    const pair = await cert({notBefore: new Date(Date.now() - 100 * DAY), notAfter: new Date(Date.now() - DAY)})
    const r = await tlsCheck(target(await serve(pair), await configWith(pair.certFile, pair.keyFile), {insecure: true}))
    expect(r.status).toBe('fail')
    expect(r.summary).toMatch(/^served certificate expired /)
  })

  it('fail: the key file belongs to another key pair', async () => {
    const pair = await cert()
    const otherKey = await mismatchedKey(certDir)
    const r = await tlsCheck(target(await serve(pair), await configWith(pair.certFile, otherKey), {ca_file: pair.certFile}))
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`${otherKey} does not match ${pair.certFile} (different key pair)`)
    expect(r.evidence).toMatchObject({file: {keyMatches: false}})
  })

  it('warn: the files on disk are not what is served (a restart pending)', async () => {
    const served = await cert()
    const onDisk = await cert()
    const r = await tlsCheck(target(await serve(served), await configWith(onDisk.certFile, onDisk.keyFile), {ca_file: served.certFile}))
    expect(r.status).toBe('warn')
    expect(r.summary).toBe(`CallFS serves a different certificate than ${onDisk.certFile} (restart pending, or another server on the port)`)
    // Both are valid: generating yet another pair would fix nothing.
    expect(r.remediation).toMatchObject({id: 'callfs.tls.renew', automated: false})
  })

  it('a CA-issued expired certificate: the manual renew fix, not the self-signed one', async () => {
    const pair = await cert({ca, notBefore: new Date(Date.now() - 100 * DAY), notAfter: new Date(Date.now() - 2 * DAY)})
    const url = await serve(pair)
    const r = await tlsCheck(target(url, await configWith(pair.certFile, pair.keyFile), {ca_file: ca.certFile}))
    expect(r.status).toBe('fail')
    expect(r.summary).toMatch(/^served certificate expired /)
    expect(r.evidence).toMatchObject({served: {issuer: 'CN=opsctl lab CA', selfSigned: false}})
    const port = new URL(url).port
    expect(r.remediation).toMatchObject({
      id: 'callfs.tls.renew',
      automated: false,
      risk: null,
      commands: [
        `openssl s_client -connect localhost:${port} -servername localhost </dev/null | openssl x509 -noout -dates -subject -ext subjectAltName`,
        `openssl x509 -in ${pair.certFile} -noout -dates -subject -ext subjectAltName`,
        `openssl x509 -noout -pubkey -in ${pair.certFile} | openssl md5; openssl pkey -pubout -in ${pair.keyFile} | openssl md5`,
      ],
    })
    expect(r.fix?.apply).toBeUndefined()
  })

  it('ok over IPv6: https://[::1]:port with a certificate naming ::1', async () => {
    const pair = await cert()
    const sim = await startCallfsSim({host: '::1', apiKeys: [API_KEY], tls: {cert: pair.cert, key: pair.key}, metricsPort: null})
    sims.push(sim)
    const url = `https://[::1]:${sim.port}`
    const r = await tlsCheck(target(url, await configWith(pair.certFile, pair.keyFile), {ca_file: pair.certFile}))
    expect(r.summary).toMatch(/^served certificate for CN=localhost valid until /)
    expect(r.status).toBe('ok')
  })

  it('skipped: nothing serves TLS and no config names a certificate', async () => {
    const port = await freePort()
    const r = await tlsCheck(target(`https://localhost:${port}`, join(w.dir, 'absent.yaml'), {}))
    expect(r.status).toBe('skipped')
  })
})

// ---------------------------------------------------------------------------------------------

describe('callfs.tls.cert: the self-signed fix for a dev setup', () => {
  async function walkAndFix(overrides: Record<string, unknown>) {
    const run = await w.walk(overrides)
    // The API is down (or refuses the handshake): the flowchart reaches the TLS check on the "no" side.
    expect(run.report.checks.find((c) => c.id === 'callfs.api.health')?.status).toBe('fail')
    const tls = run.report.checks.find((c) => c.id === 'callfs.tls.cert')
    if (!tls) throw new Error('no tls report')
    expect(tls.remediation).toMatchObject({id: 'callfs.tls.generate-self-signed', automated: true, risk: 'safe'})
    for (const other of [...run.fixes.keys()]) if (other !== 'callfs.tls.cert') run.fixes.delete(other)
    expect(pendingFixes([run]).map((p) => p.fix.id)).toEqual(['callfs.tls.generate-self-signed'])
    const auditFile = join(w.dir, `audit-${randomBytes(4).toString('hex')}.jsonl`)
    await remediate([run], {kind: 'yes'}, new AuditLog(auditFile, '0.1.0'), 5000)
    const audit = (await readFile(auditFile, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
    return {tls, audit}
  }

  async function expectFreshPair(certFile: string, keyFile: string): Promise<void> {
    const now = await inspectCertFiles(certFile, keyFile)
    if (!now.ok) throw new Error(now.error.message)
    expect(now.value.keyMatches).toBe(true)
    expect(now.value.cert.selfSigned).toBe(true)
    expect(now.value.cert.daysLeft).toBeGreaterThan(360)
    expect(now.value.cert.san).toEqual(expect.arrayContaining(['DNS:localhost', 'IP Address:127.0.0.1']))
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600)
  }

  it('cert files missing while the API is down: fail, then the fix writes a valid matching pair (verified, audited)', async () => {
    const dir = await mkdtemp(join(w.dir, 'tls-missing-'))
    const certFile = join(dir, 'server.crt')
    const keyFile = join(dir, 'server.key')
    const port = await freePort()
    const overrides = target(`https://localhost:${port}`, await configWith(certFile, keyFile), {})

    const before = await tlsCheck(overrides)
    expect(before.status).toBe('fail')
    expect(before.summary).toBe(`certificate file ${certFile} does not exist`)

    const {tls, audit} = await walkAndFix(overrides)
    expect(tls.outcome).toEqual({
      decision: 'applied',
      ok: true,
      verified: true,
      detail: `wrote a self-signed pair for localhost (365 days); restart ${UNIT} to serve it; re-check: ok`,
    })
    await expectFreshPair(certFile, keyFile)
    // Nothing existed, so nothing was backed up.
    expect((await readdir(dir)).sort()).toEqual(['server.crt', 'server.key'])
    expect(audit).toEqual([
      expect.objectContaining({
        check: 'callfs.tls.cert',
        remediation: 'callfs.tls.generate-self-signed',
        plan: expect.arrayContaining([expect.stringMatching(/^openssl req -x509 -newkey ec /)]),
        decision: 'applied',
        verified: true,
      }),
    ])
    expect((await tlsCheck(overrides)).summary).toBe(`certificate file ${certFile} valid and matches its key`)
  })

  it('a good pair put in place between the diagnosis and the fix: left alone', async () => {
    const dir = await mkdtemp(join(w.dir, 'tls-raced-'))
    const certFile = join(dir, 'server.crt')
    const keyFile = join(dir, 'server.key')
    const port = await freePort()
    const overrides = target(`https://localhost:${port}`, await configWith(certFile, keyFile), {})
    const run = await w.walk(overrides)
    for (const other of [...run.fixes.keys()]) if (other !== 'callfs.tls.cert') run.fixes.delete(other)
    const good = await cert()
    await copyFile(good.certFile, certFile)
    await copyFile(good.keyFile, keyFile)
    await remediate([run], {kind: 'yes'}, new AuditLog(join(w.dir, 'audit-raced.jsonl'), '0.1.0'), 5000)
    expect(run.report.checks.find((c) => c.id === 'callfs.tls.cert')?.outcome).toEqual({
      decision: 'applied',
      ok: true,
      verified: true,
      detail: `${certFile} is valid, covers localhost and matches its key now; left alone; re-check: ok`,
    })
    expect(await readFile(certFile, 'utf8')).toBe(good.cert)
    expect((await readdir(dir)).sort()).toEqual(['server.crt', 'server.key'])
  })

  it('a self-signed pair expiring within the warning horizon while the API is down: replaced (the guard does not call it valid)', async () => {
    const old = await cert({notAfter: new Date(Date.now() + 5 * DAY)})
    const dir = await mkdtemp(join(w.dir, 'tls-expiring-'))
    const certFile = join(dir, 'server.crt')
    const keyFile = join(dir, 'server.key')
    await copyFile(old.certFile, certFile)
    await copyFile(old.keyFile, keyFile)
    const port = await freePort()
    const {tls} = await walkAndFix(target(`https://localhost:${port}`, await configWith(certFile, keyFile), {}))
    expect(tls.status).toBe('warn')
    expect(tls.outcome).toMatchObject({decision: 'applied', ok: true, verified: true})
    expect(tls.outcome?.detail).toMatch(/^wrote a self-signed pair for localhost/)
    await expectFreshPair(certFile, keyFile)
  })

  it('a served self-signed certificate for another host: the pair is regenerated for this host (restart pending)', async () => {
    const old = await cert({cn: 'files.example.com', san: ['DNS:files.example.com']})
    const dir = await mkdtemp(join(w.dir, 'tls-host-'))
    const certFile = join(dir, 'server.crt')
    const keyFile = join(dir, 'server.key')
    await copyFile(old.certFile, certFile)
    await copyFile(old.keyFile, keyFile)
    const url = await serve(old)
    const {tls} = await walkAndFix(target(url, await configWith(certFile, keyFile), {ca_file: old.certFile}))
    expect(tls.status).toBe('fail')
    expect(tls.summary).toMatch(/^served certificate does not cover localhost/)
    // Written, but CallFS still serves the old one until it is restarted: not verified.
    expect(tls.outcome).toMatchObject({decision: 'applied', ok: true, verified: false})
    expect(tls.outcome?.detail).toContain(`wrote a self-signed pair for localhost (365 days); restart ${UNIT} to serve it; re-check: fail (served certificate does not cover localhost`)
    await expectFreshPair(certFile, keyFile)
  })

  it('an expired self-signed pair while the API is down: replaced, the old files kept as .bak-*', async () => {
    const old = await cert({notBefore: new Date(Date.now() - 100 * DAY), notAfter: new Date(Date.now() - 3 * DAY)})
    const dir = await mkdtemp(join(w.dir, 'tls-expired-'))
    const certFile = join(dir, 'server.crt')
    const keyFile = join(dir, 'server.key')
    await copyFile(old.certFile, certFile)
    await copyFile(old.keyFile, keyFile)
    const port = await freePort()
    const overrides = target(`https://localhost:${port}`, await configWith(certFile, keyFile), {})

    const {tls, audit} = await walkAndFix(overrides)
    expect(tls.status).toBe('fail')
    expect(tls.summary).toMatch(new RegExp(`^certificate file ${re(certFile)} expired `))
    expect(tls.outcome).toMatchObject({decision: 'applied', ok: true, verified: true})
    await expectFreshPair(certFile, keyFile)

    const files = (await readdir(dir)).sort()
    const bakCert = files.find((f) => /^server\.crt\.bak-\d{8}T\d{6}Z$/.test(f))
    const bakKey = files.find((f) => /^server\.key\.bak-\d{8}T\d{6}Z$/.test(f))
    expect(files).toHaveLength(4)
    expect(await readFile(join(dir, bakCert ?? 'none'), 'utf8')).toBe(old.cert)
    expect(await readFile(join(dir, bakKey ?? 'none'), 'utf8')).toBe(old.key)
    expect(audit[0]).toMatchObject({decision: 'applied', verified: true, result: {ok: true}})
  })
})

describe('generateSelfSignedFix for an IPv6 URL', () => {
  it('names the address as an IP SAN (URL hosts are bracketed), so the new pair covers it', async () => {
    const dir = await mkdtemp(join(w.dir, 'tls-ipv6-'))
    const certFile = join(dir, 'server.crt')
    const keyFile = join(dir, 'server.key')
    const host = new URL('https://[::1]:8443').hostname
    expect(host).toBe('[::1]')
    const fix = generateSelfSignedFix(certFile, keyFile, host, UNIT, {timeoutMs: 5000})
    const result = await fix.apply?.(new AbortController().signal)
    expect(result).toEqual({ok: true, detail: `wrote a self-signed pair for ::1 (365 days); restart ${UNIT} to serve it`})
    const files = await inspectCertFiles(certFile, keyFile)
    if (!files.ok) throw new Error(files.error.message)
    expect(files.value.cert.subject).toBe('CN=::1')
    expect(files.value.cert.san).toEqual(['IP Address:0:0:0:0:0:0:0:1', 'DNS:localhost', 'IP Address:127.0.0.1'])
    expect(sanCovers(files.value.cert.san, host)).toBe(true)
    // Applied again, the pair is good: left alone.
    expect(await fix.apply?.(new AbortController().signal)).toEqual({ok: true, detail: `${certFile} is valid, covers ::1 and matches its key now; left alone`})
  })
})

describe('sanCovers (the fix guard\'s host test)', () => {
  it('matches DNS names, one-label wildcards and IP addresses as Node prints them', () => {
    expect(sanCovers(['DNS:localhost', 'IP Address:127.0.0.1'], 'localhost')).toBe(true)
    expect(sanCovers(['DNS:LocalHost'], 'localhost')).toBe(true)
    expect(sanCovers(['DNS:*.example.com'], 'files.example.com')).toBe(true)
    expect(sanCovers(['DNS:*.example.com'], 'a.files.example.com')).toBe(false)
    expect(sanCovers(['DNS:*.example.com'], 'example.com')).toBe(false)
    expect(sanCovers(['DNS:files.example.com'], 'localhost')).toBe(false)
    expect(sanCovers(['IP Address:127.0.0.1'], '127.0.0.1')).toBe(true)
    expect(sanCovers(['DNS:127.0.0.1'], '127.0.0.1')).toBe(false)
    // Node prints IPv6 SAN entries expanded; URL hosts come bracketed and compressed.
    expect(sanCovers(['IP Address:0:0:0:0:0:0:0:1'], '[::1]')).toBe(true)
    expect(sanCovers(['IP Address:::1'], '::1')).toBe(true)
    expect(sanCovers(['IP Address:0:0:0:0:0:0:0:2'], '[::1]')).toBe(false)
    expect(sanCovers([], 'localhost')).toBe(false)
  })
})

// ---------------------------------------------------------------------------------------------

describe('callfs.tls.cert: certificate paths as CallFS resolves them', () => {
  /** CallFS (a real process named after the unit) running in `cwd`, as systemd's WorkingDirectory= would start it. */
  async function callfsIn(cwd: string): Promise<ChildProcess> {
    const bin = join(await mkdtemp(join(w.dir, 'bin-')), UNIT)
    await copyFile('/bin/sleep', bin)
    const child = spawn(bin, ['300'], {cwd, stdio: 'ignore'})
    children.push(child)
    await waitUntil(async () => (await readlink(`/proc/${child.pid}/cwd`).catch(() => '')) === cwd && (await readFile(`/proc/${child.pid}/comm`, 'utf8').catch(() => '')).trim() === UNIT)
    return child
  }

  async function stopChild(c: ChildProcess): Promise<void> {
    if (!isRunning(c)) return
    c.kill('SIGKILL')
    await exited(c)
  }

  /** A config naming the pair by relative paths, as config.yaml.example does. */
  async function relativeConfig(): Promise<string> {
    const path = join(w.dir, `config-${randomBytes(4).toString('hex')}.yaml`)
    await writeFile(path, validCallfsConfig({dataDir: w.dataDir, certFile: 'server.crt', keyFile: 'server.key', dsn: 'postgres://callfs@127.0.0.1:1/callfs', redisAddr: '127.0.0.1:1'}))
    return path
  }

  it('relative cert_file/key_file are read from the working directory of the running CallFS, not the config file\'s', async () => {
    const pair = await cert()
    const cwd = await mkdtemp(join(w.dir, 'callfs-cwd-'))
    await copyFile(pair.certFile, join(cwd, 'server.crt'))
    await copyFile(pair.keyFile, join(cwd, 'server.key'))
    const child = await callfsIn(cwd)
    try {
      const port = await freePort()
      const r = await tlsCheck(target(`https://localhost:${port}`, await relativeConfig(), {}))
      expect(r.status).toBe('ok')
      expect(r.summary).toBe(`certificate file ${join(cwd, 'server.crt')} valid and matches its key`)
      expect(r.evidence).toMatchObject({certFile: join(cwd, 'server.crt'), keyFile: join(cwd, 'server.key')})
    } finally {
      await stopChild(child)
    }
  })

  it('relative paths with no running CallFS: unknown, never "does not exist", and no fix that writes files', async () => {
    const port = await freePort()
    const r = await tlsCheck(target(`https://localhost:${port}`, await relativeConfig(), {}))
    expect(r.status).toBe('unknown')
    expect(r.evidence.issues).toEqual([
      "server.crt: relative path, CallFS's working directory unknown (no running CallFS process to read it from)",
      "server.key: relative path, CallFS's working directory unknown (no running CallFS process to read it from)",
    ])
    expect(r.summary).not.toContain('does not exist')
    expect(r.remediation).toBeNull()
  })

  it('relative paths next to a served certificate that is fine: the served part is judged, the file part unknown', async () => {
    const pair = await cert()
    const r = await tlsCheck(target(await serve(pair), await relativeConfig(), {ca_file: pair.certFile}))
    expect(r.status).toBe('unknown')
    expect(r.summary).toMatch(/^server\.crt: relative path, CallFS's working directory unknown/)
    expect(r.evidence).toMatchObject({served: {subject: 'CN=localhost', authorized: true}})
  })

  it('a CA-issued certificate served while the configured files are missing: the manual renew fix, never a self-signed pair', async () => {
    const pair = await cert({ca, notBefore: new Date(Date.now() - 100 * DAY), notAfter: new Date(Date.now() - 2 * DAY)})
    const dir = await mkdtemp(join(w.dir, 'tls-ca-missing-'))
    const r = await tlsCheck(target(await serve(pair), await configWith(join(dir, 'server.crt'), join(dir, 'server.key')), {ca_file: ca.certFile}))
    expect(r.status).toBe('fail')
    expect(r.evidence.issues).toEqual([expect.stringMatching(/^served certificate expired /), `certificate file ${join(dir, 'server.crt')} does not exist`])
    expect(r.remediation).toMatchObject({id: 'callfs.tls.renew', automated: false})
    expect(r.fix?.apply).toBeUndefined()
  })
})

// ---------------------------------------------------------------------------------------------

describe('the self-signed fix in a certificate directory others can write', () => {
  const nobody = systemUser('nobody')
  if (!nobody) throw new Error('these tests need the user "nobody"')

  /** A certificate directory owned by the CallFS user (nobody), and a root-only file outside it. */
  async function hostileDir(): Promise<{dir: string; certFile: string; keyFile: string; victim: string; victimText: string}> {
    const base = await mkdtemp(join(w.dir, 'tls-hostile-'))
    const dir = join(base, 'certs')
    await mkdtemp(join(base, 'x-')) // something else in base, so the listing check below has company
    await (await import('node:fs/promises')).mkdir(dir)
    await chown(dir, nobody!.uid, nobody!.gid)
    const victim = join(base, 'victim')
    const victimText = `IMPORTANT ROOT-OWNED FILE ${randomBytes(8).toString('hex')}\n`
    await writeFile(victim, victimText, {mode: 0o600})
    return {dir, certFile: join(dir, 'server.crt'), keyFile: join(dir, 'server.key'), victim, victimText}
  }

  async function expectVictimIntact(victim: string, text: string): Promise<void> {
    expect(await readFile(victim, 'utf8')).toBe(text)
    const s = await stat(victim)
    expect([s.uid, s.gid, s.mode & 0o7777]).toEqual([0, 0, 0o600])
  }

  function fixFor(certFile: string, keyFile: string, owner: Parameters<typeof generateSelfSignedFix>[6] = null) {
    return generateSelfSignedFix(certFile, keyFile, 'localhost', UNIT, {timeoutMs: 5000}, 1, owner)
  }

  it('a symlink planted where the key goes: refused, nothing changed inside or outside the directory', async () => {
    const h = await hostileDir()
    await symlink(h.victim, h.keyFile)
    const before = (await readdir(h.dir)).sort()
    const result = await fixFor(h.certFile, h.keyFile).apply?.(new AbortController().signal)
    expect(result).toEqual({
      ok: false,
      detail: `${h.keyFile} is a symbolic link: refusing to write through it (whoever can write ${h.dir} could point it at any file); replace it by hand; nothing changed`,
    })
    await expectVictimIntact(h.victim, h.victimText)
    expect((await readdir(h.dir)).sort()).toEqual(before)
    expect((await lstat(h.keyFile)).isSymbolicLink()).toBe(true)
  })

  it('a symlink planted at the name of a backup: refused, nothing changed', async () => {
    const h = await hostileDir()
    const old = await cert({notBefore: new Date(Date.now() - 100 * DAY), notAfter: new Date(Date.now() - DAY)})
    await copyFile(old.certFile, h.certFile)
    await copyFile(old.keyFile, h.keyFile)
    const fix = fixFor(h.certFile, h.keyFile)
    const backup = /^keep the current files as (\S+) and (\S+) /.exec(fix.plan[0] ?? '')
    expect(backup?.[2]).toMatch(/server\.key\.bak-\d{8}T\d{6}Z$/)
    await symlink(h.victim, backup?.[2] ?? 'none')
    const before = (await readdir(h.dir)).sort()
    const result = await fix.apply?.(new AbortController().signal)
    expect(result).toEqual({ok: false, detail: `the backup name ${backup?.[2]} is taken by a symbolic link; nothing changed`})
    await expectVictimIntact(h.victim, h.victimText)
    expect((await readdir(h.dir)).sort()).toEqual(before)
    expect(await readFile(h.certFile, 'utf8')).toBe(old.cert)
    expect(await readFile(h.keyFile, 'utf8')).toBe(old.key)
  })

  it('symlinks at the names an older opsctl wrote through (*.new) are never touched: the pair is written beside them', async () => {
    const h = await hostileDir()
    await symlink(h.victim, `${h.keyFile}.new`)
    await symlink(h.victim, `${h.certFile}.new`)
    const result = await fixFor(h.certFile, h.keyFile).apply?.(new AbortController().signal)
    expect(result).toEqual({ok: true, detail: `wrote a self-signed pair for localhost (365 days); restart ${UNIT} to serve it`})
    await expectVictimIntact(h.victim, h.victimText)
    expect((await readdir(h.dir)).sort()).toEqual(['server.crt', 'server.crt.new', 'server.key', 'server.key.new'])
    for (const f of [h.certFile, h.keyFile]) expect((await lstat(f)).isFile()).toBe(true)
    const files = await inspectCertFiles(h.certFile, h.keyFile)
    expect(files.ok && files.value.keyMatches).toBe(true)
  })

  it('the certificate cannot follow the key into place: the old key is put back, nothing changed', async () => {
    const h = await hostileDir()
    const old = await cert({notBefore: new Date(Date.now() - 100 * DAY), notAfter: new Date(Date.now() - DAY)})
    await copyFile(old.certFile, h.certFile)
    await copyFile(old.keyFile, h.keyFile)
    await chmod(h.keyFile, 0o640)
    await chown(h.keyFile, nobody!.uid, nobody!.gid)
    const before = (await readdir(h.dir)).sort()
    // An immutable certificate file: even root cannot rename over it.
    execFileSync('chattr', ['+i', h.certFile])
    try {
      const result = await fixFor(h.certFile, h.keyFile).apply?.(new AbortController().signal)
      expect(result).toEqual({ok: false, detail: `cannot move the new certificate into place as ${h.certFile}: EPERM (rename); the key was put back; nothing changed`})
    } finally {
      execFileSync('chattr', ['-i', h.certFile])
    }
    expect((await readdir(h.dir)).sort()).toEqual(before)
    expect(await readFile(h.keyFile, 'utf8')).toBe(old.key)
    const k = await stat(h.keyFile)
    expect([k.uid, k.gid, k.mode & 0o777]).toEqual([nobody!.uid, nobody!.gid, 0o640])
    expect(await readFile(h.certFile, 'utf8')).toBe(old.cert)
  })

  it('an existing pair owned by the CallFS user: replaced with the same owner; the backups keep owner and mode', async () => {
    const h = await hostileDir()
    const old = await cert({notBefore: new Date(Date.now() - 100 * DAY), notAfter: new Date(Date.now() - DAY)})
    await copyFile(old.certFile, h.certFile)
    await copyFile(old.keyFile, h.keyFile)
    await chmod(h.keyFile, 0o600)
    for (const f of [h.certFile, h.keyFile]) await chown(f, nobody!.uid, nobody!.gid)
    const port = await freePort()
    const {tls} = await walkAndFixHere(target(`https://localhost:${port}`, await configWith(h.certFile, h.keyFile), {}))
    expect(tls.remediation?.plan).toContain(`move the new pair into place as ${h.keyFile} (mode 0600) and ${h.certFile} (mode 0644), owned by nobody (uid ${nobody!.uid}, gid ${nobody!.gid}), the owner of the current server.key`)
    expect(tls.outcome).toMatchObject({decision: 'applied', ok: true, verified: true})
    for (const f of [h.certFile, h.keyFile]) expect([(await stat(f)).uid, (await stat(f)).gid]).toEqual([nobody!.uid, nobody!.gid])
    expect((await stat(h.keyFile)).mode & 0o777).toBe(0o600)
    const files = (await readdir(h.dir)).sort()
    const bakKey = files.find((f) => /^server\.key\.bak-/.test(f))
    expect(files).toHaveLength(4)
    const b = await stat(join(h.dir, bakKey ?? 'none'))
    expect([b.uid, b.gid, b.mode & 0o777]).toEqual([nobody!.uid, nobody!.gid, 0o600])
    expect(await readFile(join(h.dir, bakKey ?? 'none'), 'utf8')).toBe(old.key)
    await expectVictimIntact(h.victim, h.victimText)
  })

  it('no files yet: the new pair belongs to the CallFS service user, so a CallFS that is not root can read its key', async () => {
    const h = await hostileDir()
    const port = await freePort()
    const {tls} = await walkAndFixHere({...target(`https://localhost:${port}`, await configWith(h.certFile, h.keyFile), {}), service_user: 'nobody'})
    expect(tls.remediation?.plan).toContain(`move the new pair into place as ${h.keyFile} (mode 0600) and ${h.certFile} (mode 0644), owned by nobody (uid ${nobody!.uid}, gid ${nobody!.gid}), the CallFS service user`)
    expect(tls.outcome).toMatchObject({decision: 'applied', ok: true, verified: true})
    const k = await stat(h.keyFile)
    expect([k.uid, k.gid, k.mode & 0o777]).toEqual([nobody!.uid, nobody!.gid, 0o600])
    const c = await stat(h.certFile)
    expect([c.uid, c.gid, c.mode & 0o777]).toEqual([nobody!.uid, nobody!.gid, 0o644])
    expect((await readdir(h.dir)).sort()).toEqual(['server.crt', 'server.key'])
  })

  /** Walk, keep only the TLS fix, apply it as --yes does; the TLS report. */
  async function walkAndFixHere(overrides: Record<string, unknown>) {
    const run = await w.walk(overrides)
    const tls = run.report.checks.find((c) => c.id === 'callfs.tls.cert')
    if (!tls) throw new Error('no tls report')
    expect(tls.remediation).toMatchObject({id: 'callfs.tls.generate-self-signed', automated: true, risk: 'safe'})
    for (const other of [...run.fixes.keys()]) if (other !== 'callfs.tls.cert') run.fixes.delete(other)
    await w.applyYes(run, 5000)
    return {tls}
  }
})
