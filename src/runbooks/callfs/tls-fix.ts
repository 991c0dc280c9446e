import {chmod, chown, copyFile, rename, stat} from 'node:fs/promises'
import {isIP} from 'node:net'

import {runCommand} from '../../diagnostics/exec.js'
import {inspectCertFiles} from '../../diagnostics/tls.js'
import type {ProbeOptions} from '../../diagnostics/types.js'
import type {Fix} from '../../engine/types.js'

function subjectAltNames(host: string): string {
  const names = new Set([isIP(host) ? `IP:${host}` : `DNS:${host}`, 'DNS:localhost', 'IP:127.0.0.1'])
  return [...names].join(',')
}

async function exists(path: string): Promise<{uid: number; gid: number} | null> {
  try {
    const s = await stat(path)
    return {uid: s.uid, gid: s.gid}
  } catch {
    return null
  }
}

/** An IP address in one spelling: IPv6 compressed (Node prints SAN addresses expanded). */
function canonicalIp(ip: string): string {
  return isIP(ip) === 6 ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : ip
}

/** Does a certificate's SAN list (as Node prints it) cover `host`? One-label wildcards count. */
export function sanCovers(san: string[], host: string): boolean {
  const name = host.replace(/^\[|\]$/g, '').toLowerCase()
  if (isIP(name)) {
    const want = canonicalIp(name)
    return san.some((s) => s.startsWith('IP Address:') && isIP(s.slice(11)) !== 0 && canonicalIp(s.slice(11).toLowerCase()) === want)
  }
  return san.some((s) => {
    if (!s.startsWith('DNS:')) return false
    const pattern = s.slice(4).toLowerCase()
    if (pattern === name) return true
    if (!pattern.startsWith('*.')) return false
    const dot = name.indexOf('.')
    return dot > 0 && name.slice(dot + 1) === pattern.slice(2)
  })
}

/**
 * The guide's "Generate new self-signed certificate", for a dev setup only (the certificate is
 * missing or already self-signed). The old pair is kept as *.bak-<time>, so it is reversible.
 * `warnDays`: the pair on disk counts as good (and is left alone) only when it is valid for
 * longer than this — the horizon the check warned at — matches its key and covers `host`.
 */
export function generateSelfSignedFix(certFile: string, keyFile: string, urlHost: string, unit: string, probe: ProbeOptions, warnDays = 1): Fix {
  // A URL's hostname keeps IPv6 brackets ("[::1]"); the certificate names the bare address.
  const host = urlHost.replace(/^\[|\]$/g, '')
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, 'Z')
  const san = subjectAltNames(host)
  const args = [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '365',
    '-subj', `/CN=${host}`, '-addext', `subjectAltName=${san}`,
    '-keyout', `${keyFile}.new`, '-out', `${certFile}.new`,
  ]
  return {
    id: 'callfs.tls.generate-self-signed',
    title: `Generate a self-signed certificate for ${host} (dev setups only)`,
    plan: [
      `keep the current files as ${certFile}.bak-${stamp} and ${keyFile}.bak-${stamp} (where they exist)`,
      `openssl ${args.join(' ')}`,
      `move the new pair into place as ${certFile} and ${keyFile} (key mode 0600, same owner as before)`,
      `then restart ${unit} so it serves the new certificate (not done by this fix)`,
    ],
    commands: [
      `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj "/CN=${host}" -addext "subjectAltName=${san}" -keyout ${keyFile} -out ${certFile}`,
      `sudo systemctl restart ${unit}`,
    ],
    async apply(signal) {
      // Guard: if a good pair appeared since the diagnosis (valid beyond the warning horizon,
      // matching, for this host), leave it alone.
      const now = await inspectCertFiles(certFile, keyFile)
      if (now.ok && now.value.keyMatches && now.value.cert.daysLeft > warnDays && Date.parse(now.value.cert.validFrom) <= Date.now() && sanCovers(now.value.cert.san, host)) {
        return {ok: true, detail: `${certFile} is valid, covers ${host} and matches its key now; left alone`}
      }
      const oldCert = await exists(certFile)
      const oldKey = await exists(keyFile)
      const r = await runCommand('openssl', args, {...probe, signal})
      if (!r.ok) return {ok: false, detail: r.error.message}
      if (r.value.exitCode !== 0) return {ok: false, detail: `openssl exited ${r.value.exitCode}: ${r.value.stderr.trim().split('\n').pop() ?? ''}`}
      if (oldCert) await copyFile(certFile, `${certFile}.bak-${stamp}`)
      if (oldKey) await copyFile(keyFile, `${keyFile}.bak-${stamp}`)
      await chmod(`${keyFile}.new`, 0o600)
      const owner = oldKey ?? oldCert
      if (owner) {
        await chown(`${keyFile}.new`, owner.uid, owner.gid)
        await chown(`${certFile}.new`, owner.uid, owner.gid)
      }
      await rename(`${certFile}.new`, certFile)
      await rename(`${keyFile}.new`, keyFile)
      return {ok: true, detail: `wrote a self-signed pair for ${host} (365 days); restart ${unit} to serve it`}
    },
  }
}
