import {constants} from 'node:fs'
import {link, lstat, mkdtemp, open, rename, rmdir, unlink, type FileHandle} from 'node:fs/promises'
import {isIP} from 'node:net'
import {basename, dirname, join} from 'node:path'

import {runCommand} from '../../diagnostics/exec.js'
import {lookupUser, type UserInfo} from '../../diagnostics/files.js'
import {inspectCertFiles} from '../../diagnostics/tls.js'
import type {ProbeOptions} from '../../diagnostics/types.js'
import type {Fix} from '../../engine/types.js'

function subjectAltNames(host: string): string {
  const names = new Set([isIP(host) ? `IP:${host}` : `DNS:${host}`, 'DNS:localhost', 'IP:127.0.0.1'])
  return [...names].join(',')
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

/** Who the new pair will belong to, decided when the fix is planned and shown in its plan. */
export interface PairOwner {
  uid: number
  gid: number
  /** How the plan names it: "callfs (uid 998, gid 998), the CallFS service user". */
  label: string
}

/**
 * The owner of a new pair: the owner of the current key (else certificate) file, so whoever
 * could read it still can; with neither, the user CallFS runs as, so a CallFS that is not root can
 * read its key. null: neither is known, and the files stay with opsctl's own user.
 */
export async function plannedPairOwner(certFile: string, keyFile: string, serviceUser: UserInfo | null): Promise<PairOwner | null> {
  for (const file of [keyFile, certFile]) {
    const s = await lstat(file).catch(() => null)
    if (!s?.isFile()) continue
    const name = (await lookupUser(s.uid))?.name
    return {uid: s.uid, gid: s.gid, label: `${name ?? `uid ${s.uid}`} (uid ${s.uid}, gid ${s.gid}), the owner of the current ${basename(file)}`}
  }
  if (serviceUser) return {uid: serviceUser.uid, gid: serviceUser.gid, label: `${serviceUser.name} (uid ${serviceUser.uid}, gid ${serviceUser.gid}), the CallFS service user`}
  return null
}

/** A failure that leaves nothing changed, with the one line that says why. */
class Refused extends Error {}

function errorText(e: unknown): string {
  const err = e as NodeJS.ErrnoException
  return err.code ? `${err.code}${err.syscall ? ` (${err.syscall})` : ''}` : String(err.message ?? e)
}

/**
 * A private directory (0700, ours) made inside a directory others may write, reached only
 * through an open descriptor (/proc/<pid>/fd/<n>): whoever can write the parent can rename the
 * directory or put a symlink in its place, but cannot change where the descriptor points.
 */
interface PrivateDir {
  /** Its name in the parent, for removing it at the end. */
  path: string
  /** The path that reaches it through the descriptor. */
  via: string
  handle: FileHandle
}

async function makePrivateDir(parent: string): Promise<PrivateDir> {
  let path: string
  try {
    path = await mkdtemp(join(parent, '.opsctl-tls-'))
  } catch (e) {
    throw new Refused(`cannot create a private directory in ${parent}: ${errorText(e)}`)
  }
  let handle: FileHandle
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW)
  } catch (e) {
    throw new Refused(`${path} was replaced as soon as it was created (${errorText(e)}): someone else writes ${parent}`)
  }
  const s = await handle.stat()
  if (!s.isDirectory() || s.uid !== process.geteuid?.() || (s.mode & 0o777) !== 0o700) {
    await handle.close()
    throw new Refused(`${path} was replaced as soon as it was created: someone else writes ${parent}`)
  }
  return {path, via: `/proc/${process.pid}/fd/${handle.fd}`, handle}
}

async function removePrivateDir(d: PrivateDir, names: string[]): Promise<void> {
  for (const name of names) await unlink(`${d.via}/${name}`).catch(() => undefined)
  await d.handle.close().catch(() => undefined)
  // rmdir removes only an empty directory and never follows a symlink put in its place.
  await rmdir(d.path).catch(() => undefined)
}

/** What is at `path` without following a symlink: absent, a regular file, or a reason to refuse. */
async function inspectDestination(path: string): Promise<'absent' | 'file'> {
  let s
  try {
    s = await lstat(path)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'absent'
    throw new Refused(`cannot look at ${path}: ${errorText(e)}`)
  }
  if (s.isSymbolicLink()) throw new Refused(`${path} is a symbolic link: refusing to write through it (whoever can write ${dirname(path)} could point it at any file); replace it by hand`)
  if (!s.isFile()) throw new Refused(`${path} is not a regular file`)
  return 'file'
}

/**
 * Copy `src` to `dest` as a backup: read without following a symlink (and without blocking on a
 * FIFO), written only as a new file (never through an existing name), with the owner and mode of
 * the original set through the descriptor.
 */
async function backupFile(src: string, dest: string, created: string[]): Promise<void> {
  let from: FileHandle
  try {
    from = await open(src, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch (e) {
    throw new Refused(`cannot read ${src} to back it up: ${errorText(e)}`)
  }
  try {
    const s = await from.stat()
    if (!s.isFile()) throw new Refused(`${src} is not a regular file`)
    const data = await from.readFile()
    let to: FileHandle
    try {
      to = await open(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    } catch (e) {
      throw new Refused(`cannot create the backup ${dest}: ${errorText(e)}`)
    }
    created.push(dest)
    try {
      await to.writeFile(data)
      await to.chown(s.uid, s.gid)
      await to.chmod(s.mode & 0o777)
    } finally {
      await to.close()
    }
  } finally {
    await from.close()
  }
}

/** Set mode and owner of a file we generated, through a descriptor (never through a name someone could swap). */
async function settle(path: string, mode: number, owner: PairOwner | null): Promise<void> {
  const h = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW)
  try {
    if (owner) await h.chown(owner.uid, owner.gid)
    await h.chmod(mode)
  } finally {
    await h.close()
  }
}

/**
 * The guide's "Generate new self-signed certificate", for a dev setup only (the certificate is
 * missing or already self-signed). The old pair is kept as *.bak-<time>, so it is reversible.
 * `warnDays`: the pair on disk counts as good (and is left alone) only when it is valid for
 * longer than this — the horizon the check warned at — matches its key and covers `host`.
 *
 * The certificate directory may be writable by others (the CallFS user): the pair is generated
 * in a private directory inside it, nothing is written through a symlink, backups are created
 * only as new files, and the new files are renamed into place — key first, then certificate,
 * and the key put back if the certificate cannot follow.
 */
export function generateSelfSignedFix(
  certFile: string,
  keyFile: string,
  urlHost: string,
  unit: string,
  probe: ProbeOptions,
  warnDays = 1,
  owner: PairOwner | null = null,
): Fix {
  // A URL's hostname keeps IPv6 brackets ("[::1]"); the certificate names the bare address.
  const host = urlHost.replace(/^\[|\]$/g, '')
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, 'Z')
  const san = subjectAltNames(host)
  const certBackup = `${certFile}.bak-${stamp}`
  const keyBackup = `${keyFile}.bak-${stamp}`
  const opensslArgs = (keyOut: string, certOut: string) => [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '365',
    '-subj', `/CN=${host}`, '-addext', `subjectAltName=${san}`,
    '-keyout', keyOut, '-out', certOut,
  ]
  const privateName = (file: string) => join(dirname(file), '.opsctl-tls-XXXXXX')
  const ownerText = owner ? `owned by ${owner.label}` : "owned by opsctl's own user (no current files and no CallFS service user known)"
  return {
    id: 'callfs.tls.generate-self-signed',
    title: `Generate a self-signed certificate for ${host} (dev setups only)`,
    plan: [
      `keep the current files as ${certBackup} and ${keyBackup} (where they exist; nothing is done if a backup name or either file is a symlink)`,
      `openssl ${opensslArgs(join(privateName(keyFile), 'new.key'), join(privateName(certFile), 'new.crt')).join(' ')}   (a new private directory)`,
      `move the new pair into place as ${keyFile} (mode 0600) and ${certFile} (mode 0644), ${ownerText}`,
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
      const dirs: PrivateDir[] = []
      const backups: string[] = []
      try {
        return await replacePair(signal, dirs, backups)
      } catch (e) {
        for (const b of backups) await unlink(b).catch(() => undefined)
        const why = e instanceof Refused ? e.message : `unexpected error: ${errorText(e)}`
        return {ok: false, detail: `${why}; nothing changed`}
      } finally {
        for (const d of dirs) await removePrivateDir(d, ['new.key', 'new.crt', 'previous.key'])
      }
    },
  }

  async function replacePair(signal: AbortSignal, dirs: PrivateDir[], backups: string[]): Promise<{ok: boolean; detail: string}> {
    const certWas = await inspectDestination(certFile)
    const keyWas = await inspectDestination(keyFile)
    for (const b of [certWas === 'file' ? certBackup : null, keyWas === 'file' ? keyBackup : null]) {
      if (b === null) continue
      const s = await lstat(b).catch(() => null)
      if (s) throw new Refused(s.isSymbolicLink() ? `the backup name ${b} is taken by a symbolic link` : `the backup name ${b} is taken`)
    }

    const keyDir = await makePrivateDir(dirname(keyFile))
    dirs.push(keyDir)
    let certDir = keyDir
    if (dirname(certFile) !== dirname(keyFile)) {
      certDir = await makePrivateDir(dirname(certFile))
      dirs.push(certDir)
    }
    const newKey = `${keyDir.via}/new.key`
    const newCert = `${certDir.via}/new.crt`
    const r = await runCommand('openssl', opensslArgs(newKey, newCert), {...probe, signal})
    if (!r.ok) throw new Refused(r.error.message)
    if (r.value.exitCode !== 0) throw new Refused(`openssl exited ${r.value.exitCode}: ${r.value.stderr.trim().split('\n').pop() ?? ''}`)
    await settle(newKey, 0o600, owner)
    await settle(newCert, 0o644, owner)

    if (certWas === 'file') await backupFile(certFile, certBackup, backups)
    if (keyWas === 'file') await backupFile(keyFile, keyBackup, backups)
    // The key as it is, kept by a second name in the private directory, to put back if the
    // certificate cannot follow it into place.
    const previousKey = `${keyDir.via}/previous.key`
    if (keyWas === 'file') {
      try {
        await link(keyFile, previousKey)
      } catch (e) {
        throw new Refused(`cannot keep ${keyFile} for putting it back: ${errorText(e)}`)
      }
    }
    if (signal.aborted) throw new Refused('stopped before replacing the files')

    try {
      await rename(newKey, keyFile)
    } catch (e) {
      throw new Refused(`cannot move the new key into place as ${keyFile}: ${errorText(e)}`)
    }
    try {
      await rename(newCert, certFile)
    } catch (e) {
      const why = `cannot move the new certificate into place as ${certFile}: ${errorText(e)}`
      try {
        if (keyWas === 'file') await rename(previousKey, keyFile)
        else await rename(keyFile, newKey)
      } catch (back) {
        // The key could not be put back: keep the backups, they are the way back now.
        backups.length = 0
        return {ok: false, detail: `${why}; putting the old key back failed too (${errorText(back)}): restore ${keyWas === 'file' ? `${keyBackup} as ${keyFile}` : `by removing ${keyFile}`}`}
      }
      throw new Refused(`${why}; the key was put back`)
    }
    return {ok: true, detail: `wrote a self-signed pair for ${host} (365 days); restart ${unit} to serve it`}
  }
}
