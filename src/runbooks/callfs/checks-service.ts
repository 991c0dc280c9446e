import {bodyExcerpt, jsonBody} from '../../diagnostics/http.js'
import {inUnitCgroup, listenersOnPort, type Listener} from '../../diagnostics/ports.js'
import {inspectCertFiles, tlsHandshake, type CertInfo, type TlsHandshake} from '../../diagnostics/tls.js'

import type {CheckSpec, Finding, Fix, Status} from '../../engine/types.js'
import {portFinding, unitFinding} from '../shared/service.js'
import {getPath, type CallfsContext} from './context.js'
import {generateSelfSignedFix, plannedPairOwner} from './tls-fix.js'
import {formatMs} from '../../util/time.js'

function port(u: URL): number {
  return u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80
}

/** The host a certificate must name: a URL's hostname without IPv6 brackets. */
function certHost(u: URL): string {
  return u.hostname.replace(/^\[|\]$/g, '')
}

export const apiHealth: CheckSpec<CallfsContext> = {
  id: 'callfs.api.health',
  title: 'CallFS answers /health',
  severity: 'critical',
  docs: "Service Won't Start",
  async run(ctx) {
    const r = await ctx.health()
    const url = new URL('/health', ctx.url).toString()
    if (!r.ok) {
      return {status: 'fail', summary: `GET ${url}: ${r.error.message}`, evidence: {url, error: r.error.kind, code: r.error.code ?? null}}
    }
    const res = r.value
    const evidence: Record<string, unknown> = {url, status: res.status, contentType: res.contentType, durationMs: res.durationMs}
    if (res.status === 429) {
      return {status: 'warn', summary: `GET ${url} is rate limited (429, Retry-After ${res.headers['retry-after'] ?? '?'}s)`, evidence}
    }
    const body = jsonBody(res)
    if (res.status !== 200) {
      evidence.body = bodyExcerpt(res.body)
      return {status: 'fail', summary: `GET ${url} answered ${res.status}${body.ok ? '' : ` (${body.reason})`}`, evidence}
    }
    if (!body.ok) {
      evidence.body = bodyExcerpt(res.body)
      return {status: 'fail', summary: `GET ${url} answered 200 but ${body.reason} — is something other than CallFS on this port?`, evidence}
    }
    const status = getPath(body.value, ['status'])
    if (status !== 'ok') {
      evidence.body = bodyExcerpt(res.body)
      return {status: 'fail', summary: `GET ${url} answered status ${JSON.stringify(status)}, expected "ok"`, evidence}
    }
    return {status: 'ok', summary: `GET ${url} → {"status":"ok"} in ${formatMs(res.durationMs)}`, evidence}
  },
}

export const processDown: CheckSpec<CallfsContext> = {
  id: 'callfs.process.down',
  title: 'CallFS service is running',
  severity: 'critical',
  docs: "Service Won't Start",
  remediations: [
    {id: 'callfs.process.restart', title: 'Restart the CallFS unit', automated: true, risk: 'disruptive'},
    {id: 'callfs.process.start', title: 'Start CallFS', automated: false},
  ],
  budgetMs: (t) => t * 2 + 1000,
  async run(ctx) {
    if (!(await ctx.isLocal())) return {status: 'skipped', summary: `${ctx.url.hostname} is not this machine; run opsctl there to check the service`}
    return unitFinding({
      unit: ctx.target.unit,
      status: await ctx.unit(),
      processes: await ctx.processes(),
      probe: ctx.probe(),
      restartFixId: 'callfs.process.restart',
      startFixId: 'callfs.process.start',
      startHint: `callfs server --config ${ctx.target.config_file}`,
    })
  },
}

export const portConflict: CheckSpec<CallfsContext> = {
  id: 'callfs.port.conflict',
  title: 'Nothing else holds the CallFS port',
  severity: 'high',
  docs: "Service Won't Start > Common Causes and Solutions > Port Already in Use",
  remediations: [
    {id: 'callfs.port.stop-process', title: 'Stop the process holding the port', automated: true, risk: 'destructive'},
    {id: 'callfs.port.change-port', title: 'Free the port or move CallFS', automated: false},
  ],
  async run(ctx) {
    if (!(await ctx.isLocal())) return {status: 'skipped', summary: `${ctx.url.hostname} is not this machine`}
    const p = port(ctx.url)
    const callfsPid = await ctx.callfsPid()
    const unitName = ctx.target.unit
    // CallFS is the unit's main pid, any process in the unit's cgroup (a wrapper script or a
    // child that holds the socket), or a process named after the unit where there is no systemd.
    const isService = (l: Listener) =>
      (callfsPid !== null && l.pid === callfsPid) || inUnitCgroup(l.cgroups, unitName) || l.command === unitName || (l.argv0 ?? '').split('/').pop() === unitName
    return portFinding({
      port: p,
      listeners: await listenersOnPort(p, ctx.probe()),
      isService,
      serviceName: 'CallFS',
      stopFixId: 'callfs.port.stop-process',
      manualFixId: 'callfs.port.change-port',
      probe: ctx.probe(),
      changePortHint: `or move CallFS: server.listen_addr: ":${p + 1}" in ${ctx.target.config_file}, and update systems.callfs.url`,
    })
  },
}

// ---------------------------------------------------------------------------------------

const RANK: Record<Status, number> = {skipped: 0, ok: 1, warn: 2, unknown: 3, fail: 4}

interface TlsIssue {
  status: Status
  text: string
  /**
   * What would make it go away: a new pair (expired, missing, broken, wrong host, key of
   * another pair), trusting the certificate (a new self-signed one would be just as untrusted),
   * or something else (a restart pending, a permission).
   */
  remedy: 'regenerate' | 'trust' | 'other'
}

function certIssues(label: string, cert: CertInfo, warnDays: number): TlsIssue[] {
  const issues: TlsIssue[] = []
  const now = Date.now()
  if (Date.parse(cert.validFrom) > now) issues.push({status: 'fail', text: `${label} is not valid before ${cert.validFrom}`, remedy: 'regenerate'})
  if (cert.daysLeft < 0) issues.push({status: 'fail', text: `${label} expired ${cert.validTo} (${Math.ceil(-cert.daysLeft)} days ago)`, remedy: 'regenerate'})
  else if (cert.daysLeft < warnDays) issues.push({status: 'warn', text: `${label} expires ${cert.validTo} (in ${Math.floor(cert.daysLeft)} days)`, remedy: 'regenerate'})
  return issues
}

function handshakeIssues(h: TlsHandshake, insecure: boolean, warnDays: number): TlsIssue[] {
  const issues: TlsIssue[] = []
  h.chain.forEach((cert, i) => issues.push(...certIssues(i === 0 ? 'served certificate' : `chain certificate ${i} (${cert.subject})`, cert, warnDays)))
  if (!h.hostnameOk) issues.push({status: 'fail', text: `served certificate does not cover ${h.servername}: ${h.hostnameError ?? 'hostname mismatch'}`, remedy: 'regenerate'})
  const leaf = h.chain[0]
  if (!h.authorized && h.authorizationError && !/EXPIRED|NOT_YET_VALID/.test(h.authorizationError)) {
    const selfSigned = leaf?.selfSigned || /SELF_SIGNED/.test(h.authorizationError)
    if (insecure) {
      // The operator chose not to verify (tls.insecure): say so, don't fail on it.
    } else {
      issues.push({
        status: 'fail',
        text: selfSigned
          ? `served certificate is self-signed and not trusted (${h.authorizationError}): set systems.callfs.tls.ca_file to it, or tls.insecure: true for a dev setup`
          : `served certificate is not trusted: ${h.authorizationError}`,
        remedy: 'trust',
      })
    }
  }
  return issues
}

/** The certificate is fine but not trusted here: tell opsctl to trust it (a new one would not be). */
function trustFix(url: URL, certFile: string | null, selfSigned: boolean): Fix {
  const endpoint = `${url.hostname}:${port(url)}`
  return {
    id: 'callfs.tls.trust',
    title: 'Trust the certificate CallFS serves',
    plan: [
      selfSigned
        ? certFile
          ? `set systems.callfs.tls.ca_file: ${certFile} in the opsctl configuration (the certificate CallFS is configured to serve)`
          : 'save the certificate CallFS serves (the first one openssl s_client -showcerts prints) and set systems.callfs.tls.ca_file to that file'
        : 'set systems.callfs.tls.ca_file to the CA certificate that issued the served certificate (or serve the full chain)',
      'or, on a test system only, tls.insecure: true',
    ],
    commands: [`openssl s_client -connect ${endpoint} -servername ${certHost(url)} -showcerts </dev/null`],
  }
}

export const tlsCert: CheckSpec<CallfsContext> = {
  id: 'callfs.tls.cert',
  title: 'CallFS TLS certificate is valid, trusted and matches its key',
  severity: 'high',
  docs: "Service Won't Start > Certificate Issues; Advanced Debugging > Network Troubleshooting > TLS/SSL Issues",
  remediations: [
    {id: 'callfs.tls.generate-self-signed', title: 'Generate a self-signed certificate for a dev setup', automated: true, risk: 'safe'},
    {id: 'callfs.tls.renew', title: 'Renew or replace the certificate', automated: false},
    {id: 'callfs.tls.trust', title: 'Trust the certificate CallFS serves', automated: false},
  ],
  budgetMs: (t) => t * 2 + 1000,
  async run(ctx) {
    const url = ctx.url
    const issues: TlsIssue[] = []
    const evidence: Record<string, unknown> = {}
    const warnDays = ctx.target.thresholds.cert_expiry_warn / 86_400_000
    let served: TlsHandshake | null = null
    let handshakeProblem: string | null = null

    if (url.protocol === 'https:') {
      const h = await ctx.memo('tls-handshake', () =>
        tlsHandshake(url.hostname, port(url), {...ctx.probe(), servername: certHost(url), caFile: ctx.target.tls.ca_file}),
      )
      if (h.ok) {
        served = h.value
        evidence.served = {
          subject: h.value.chain[0]?.subject,
          issuer: h.value.chain[0]?.issuer,
          validTo: h.value.chain[0]?.validTo,
          san: h.value.chain[0]?.san,
          selfSigned: h.value.chain[0]?.selfSigned,
          authorized: h.value.authorized,
          authorizationError: h.value.authorizationError,
          protocol: h.value.protocol,
        }
        issues.push(...handshakeIssues(h.value, ctx.target.tls.insecure, warnDays))
      } else {
        handshakeProblem = h.error.message
        evidence.handshake = h.error.message
      }
    }

    // The files CallFS is configured with, when its config is readable here.
    const cfg = await ctx.callfsConfig()
    let certFile: string | null = null
    let keyFile: string | null = null
    let filesMissing = false
    let fileSelfSigned = false
    let filesNamed = false
    if (cfg.state === 'parsed' && (await ctx.isLocal())) {
      const protocol = String(getPath(cfg.value, ['server', 'protocol']) ?? 'https').toLowerCase()
      const certSetting = getPath(cfg.value, ['server', 'cert_file'])
      const keySetting = getPath(cfg.value, ['server', 'key_file'])
      // "auto" serves TLS when it is given a pair: look at the files only when the config names them.
      if (protocol === 'https' || (protocol === 'auto' && certSetting && keySetting)) {
        filesNamed = true
        const certPath = await ctx.resolveCallfsPath(String(certSetting ?? 'server.crt'))
        const keyPath = await ctx.resolveCallfsPath(String(keySetting ?? 'server.key'))
        if ('unknown' in certPath || 'unknown' in keyPath) {
          // Go opens them relative to CallFS's working directory: without it, there is no saying
          // whether they exist.
          for (const p of [certPath, keyPath]) if ('unknown' in p) issues.push({status: 'unknown', text: p.unknown, remedy: 'other'})
        } else {
          certFile = certPath.path
          keyFile = keyPath.path
          evidence.certFile = certFile
          evidence.keyFile = keyFile
          const files = await inspectCertFiles(certFile, keyFile)
          if (!files.ok) {
            filesMissing = files.error.kind === 'not-found'
            const permission = files.error.kind === 'permission'
            issues.push({status: permission ? 'unknown' : 'fail', text: files.error.message, remedy: permission ? 'other' : 'regenerate'})
          } else {
            const f = files.value
            fileSelfSigned = f.cert.selfSigned
            evidence.file = {subject: f.cert.subject, validTo: f.cert.validTo, selfSigned: f.cert.selfSigned, keyMatches: f.keyMatches}
            issues.push(...certIssues(`certificate file ${certFile}`, f.cert, warnDays))
            if (!f.keyMatches) issues.push({status: 'fail', text: `${keyFile} does not match ${certFile} (different key pair)`, remedy: 'regenerate'})
            const leaf = served?.chain[0]
            if (leaf && leaf.fingerprint256 !== f.cert.fingerprint256) {
              issues.push({status: 'warn', text: `CallFS serves a different certificate than ${certFile} (restart pending, or another server on the port)`, remedy: 'other'})
            }
          }
        }
      }
    }

    if (url.protocol !== 'https:' && !filesNamed) return {status: 'skipped', summary: `${url.origin} is plain HTTP and no certificate files are configured`}
    if (!served && !filesNamed) {
      // Nothing answers and no cert_file is known: there is no certificate here to judge.
      const refused = handshakeProblem !== null && /refused/.test(handshakeProblem)
      return handshakeProblem && !refused
        ? {status: 'unknown', summary: `no certificate to inspect: ${handshakeProblem}, and no CallFS config with cert_file is readable here`, evidence}
        : {status: 'skipped', summary: 'no certificate to inspect: nothing serves TLS on the port and no CallFS config with cert_file is readable here', evidence}
    }
    if (issues.length === 0) {
      const leaf = served?.chain[0]
      const note = ctx.target.tls.insecure && served && !served.authorized ? '; verification disabled by tls.insecure' : ''
      const what = leaf ? `served certificate for ${leaf.subject} valid until ${leaf.validTo}` : `certificate file ${certFile} valid and matches its key`
      return {status: 'ok', summary: `${what}${note}`, evidence}
    }
    issues.sort((a, b) => RANK[b.status] - RANK[a.status])
    const status = issues[0]?.status ?? 'unknown'
    evidence.issues = issues.map((i) => i.text)
    const summary = issues.map((i) => i.text).join('; ')
    // A dev setup, where a self-signed pair is what the operator already runs: the served leaf is
    // self-signed, or nothing is served and the files are missing or self-signed. A CA-issued
    // certificate never gets a self-signed one in its place.
    const servedLeaf = served?.chain[0]
    const devSetup = servedLeaf ? servedLeaf.selfSigned : filesMissing || fileSelfSigned
    const actionable = issues.filter((i) => i.status === 'fail' || i.status === 'warn')
    let fix: Fix | undefined
    if (status === 'fail' || status === 'warn') {
      fix =
        devSetup && certFile && keyFile && actionable.some((i) => i.remedy === 'regenerate')
          ? generateSelfSignedFix(certFile, keyFile, url.hostname, ctx.target.unit, ctx.probe(), warnDays, await plannedPairOwner(certFile, keyFile, await ctx.serviceUser()))
          : actionable.every((i) => i.remedy === 'trust')
            ? trustFix(url, certFile, served?.chain[0]?.selfSigned ?? false)
            : {
              id: 'callfs.tls.renew',
              title: 'Renew or replace the certificate',
              plan: [
                'renew the certificate with your CA (or the ACME client) so it covers ' + certHost(url),
                `install the pair as ${certFile ?? 'server.cert_file'} / ${keyFile ?? 'server.key_file'} and restart CallFS`,
              ],
              commands: [
                `openssl s_client -connect ${url.hostname}:${port(url)} -servername ${certHost(url)} </dev/null | openssl x509 -noout -dates -subject -ext subjectAltName`,
                ...(certFile ? [`openssl x509 -in ${certFile} -noout -dates -subject -ext subjectAltName`] : []),
                ...(certFile && keyFile ? [`openssl x509 -noout -pubkey -in ${certFile} | openssl md5; openssl pkey -pubout -in ${keyFile} | openssl md5`] : []),
              ],
            }
    }
    return {status, summary, evidence, fix} satisfies Finding
  },
}
