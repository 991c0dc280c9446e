// Who listens on a TCP port: the kernel's socket tables (/proc/net/tcp, tcp6), each listening
// socket's inode mapped to the processes holding it through /proc/<pid>/fd. `ss -ltnpHe` is the
// fallback where /proc/net is not readable. Processes that vanish or deny access are skipped:
// their sockets are still reported, with pid null.

import {execFile} from 'node:child_process'
import {readFile, readdir, readlink} from 'node:fs/promises'

import {maskUrlPasswords} from '../config/mask.js'
import {abortedError, errorMessageOf, startDeadline} from './tcp.js'
import type {Deadline} from './tcp.js'
import {probeFail, probeOk} from './types.js'
import type {ProbeOptions, ProbeResult} from './types.js'
import {formatMs} from '../util/time.js'

export interface Listener {
  address: string
  port: number
  family: 4 | 6
  inode: number
  uid: number
  /** null when the owning process is not visible (other namespace, no permission). */
  pid: number | null
  /** /proc/<pid>/comm */
  command: string | null
  /** /proc/<pid>/cmdline, NUL → space, at most 300 characters, credentials masked. */
  cmdline: string | null
  /** The first word of the command line (the program as it was started), as the kernel keeps it. */
  argv0: string | null
  /** /proc/<pid>/cgroup paths, one per hierarchy ("/system.slice/callfs.service"); null when not visible. */
  cgroups: string[] | null
  /** /proc/<pid>/stat field 22 (clock ticks since boot): tells a process from a later one with the same pid. */
  startTime: number | null
  /** startTime as a wall-clock time (ISO 8601), for people; null when unknown. */
  startedAt: string | null
}

const PROC = '/proc'
const MAX_CMDLINE = 300
const LISTEN = '0A'

// ---------------------------------------------------------------------------------------------
// /proc/net/tcp

/** "0100007F" → "127.0.0.1": one 32-bit word, stored in host (little-endian) byte order. */
function wordBytes(hex: string): number[] {
  const n = parseInt(hex, 16)
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff]
}

/** Shortest form of eight 16-bit groups (RFC 5952), IPv4-mapped addresses in dotted form. */
export function formatIpv6(groups: number[]): string {
  if (groups.length === 8 && groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    const a = groups[6] ?? 0
    const b = groups[7] ?? 0
    return `::ffff:${a >> 8}.${a & 0xff}.${b >> 8}.${b & 0xff}`
  }
  let bestStart = -1
  let bestLen = 0
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < groups.length && groups[j] === 0) j++
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i
      bestLen = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (bestStart < 0) return hex.join(':')
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`
}

/** Decodes a /proc/net/tcp{,6} local address ("0100007F:1F90") into address and port. */
export function decodeProcAddress(field: string): {address: string; port: number; family: 4 | 6} | null {
  const [hex, portHex] = field.split(':')
  if (!hex || !portHex) return null
  const port = parseInt(portHex, 16)
  if (hex.length === 8) return {address: wordBytes(hex).join('.'), port, family: 4}
  if (hex.length === 32) {
    const bytes: number[] = []
    for (let w = 0; w < 4; w++) bytes.push(...wordBytes(hex.slice(w * 8, w * 8 + 8)))
    const groups: number[] = []
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0))
    return {address: formatIpv6(groups), port, family: 6}
  }
  return null
}

/** One row of /proc/net/tcp{,6}. */
export interface ProcSocket {
  address: string
  port: number
  family: 4 | 6
  inode: number
  uid: number
}

/** The listening sockets on `port` in one /proc/net/tcp{,6} table. */
export function parseProcNetTcp(text: string, port: number): ProcSocket[] {
  const out: ProcSocket[] = []
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/)
    if (f.length < 10 || f[3] !== LISTEN) continue
    const local = decodeProcAddress(f[1] ?? '')
    if (!local || local.port !== port) continue
    out.push({...local, uid: Number(f[7]), inode: Number(f[9])})
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Processes

/** Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot. */
export async function processStartTime(pid: number): Promise<number | null> {
  const stat = await processStat(pid)
  return stat?.startTime ?? null
}

async function processStat(pid: number): Promise<{ppid: number; startTime: number} | null> {
  try {
    const text = await readFile(`${PROC}/${pid}/stat`, 'utf8')
    // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
    const ppid = Number(rest[1]) // field 4
    const startTime = Number(rest[19]) // field 22
    if (!Number.isFinite(startTime)) return null
    return {ppid, startTime}
  } catch {
    return null
  }
}

// A flag whose name says it carries a credential: --password, --db-pass, --api-key, --private-key,
// --auth-token, -credentials, --requirepass … ("key" and "auth" are broad on purpose).
const SECRET_WORD = /pass|pwd|secret|token|key|auth|cred/i
// Short options that take a password in common tools: redis-cli -a, mysql -p<pw>, -k <key> …
const SHORT_SECRET = /^-([apk])(=?)(.*)$/
// NAME=value arguments (env PGPASSWORD=… cmd), masked by the same words.
const ASSIGNMENT = /^([A-Za-z_][A-Za-z0-9_]*)=(.+)$/
const MASK = '***'

/**
 * Masks what looks like a credential on a command line: the value of any flag whose name holds
 * pass/pwd/secret/token/key/auth/cred (`--x value`, `--x=value`, `-x value`), of the short flags
 * -a, -p and -k (`-p value`, `-pvalue`, `-p=value`), of NAME=value arguments with such a name, and
 * the password of a URL (scheme://user:pass@host, as maskUrlPasswords does everywhere). argv[0] is kept as it is. It masks rather too
 * much than too little: a masked port is harmless, a leaked password is not.
 */
export function maskCommandLine(args: string[]): string {
  const out: string[] = []
  let maskNext = false
  args.forEach((arg, i) => {
    if (i === 0) {
      out.push(arg)
      return
    }
    if (maskNext) {
      out.push(MASK)
      maskNext = false
      return
    }
    const isFlag = /^--?[A-Za-z]/.test(arg)
    const eq = arg.indexOf('=')
    const name = eq >= 0 ? arg.slice(0, eq) : arg
    const secretName = isFlag && SECRET_WORD.test(name)
    const short = arg.startsWith('--') ? null : SHORT_SECRET.exec(arg)
    if (short) {
      const [, letter, equals, attached] = short
      if (!attached) {
        out.push(arg)
        maskNext = true
      } else {
        out.push(`-${letter}${equals}${MASK}`)
        // "-pass <value>" (openssl) reads like "-p<password>": mask both readings.
        if (secretName && eq < 0) maskNext = true
      }
      return
    }
    if (secretName) {
      if (eq >= 0) out.push(`${name}=${MASK}`)
      else {
        out.push(arg)
        maskNext = true
      }
      return
    }
    const assignment = isFlag ? null : ASSIGNMENT.exec(arg)
    if (assignment?.[1] && SECRET_WORD.test(assignment[1])) {
      out.push(`${assignment[1]}=${MASK}`)
      return
    }
    out.push(maskUrlPasswords(arg))
  })
  return out.join(' ')
}

/** Boot time (seconds since the epoch), from /proc/stat's btime line. */
let bootTime: Promise<number | null> | null = null
function readBootTime(): Promise<number | null> {
  bootTime ??= readFile(`${PROC}/stat`, 'utf8').then(
    (t) => {
      const m = /^btime\s+(\d+)$/m.exec(t)
      return m ? Number(m[1]) : null
    },
    () => null,
  )
  return bootTime
}

// USER_HZ: the unit of /proc/<pid>/stat times, 100 on every Linux architecture Node runs on.
const CLOCK_TICKS_PER_SECOND = 100

/** A /proc start time (clock ticks since boot) as an ISO 8601 time, to the second. */
export async function startTimeToDate(ticks: number): Promise<string | null> {
  const boot = await readBootTime()
  if (boot === null || !Number.isFinite(ticks)) return null
  return new Date((boot + Math.floor(ticks / CLOCK_TICKS_PER_SECOND)) * 1000).toISOString().replace(/\.\d+Z$/, 'Z')
}

/** The cgroup paths of a process, one per hierarchy ("0::/system.slice/callfs.service" → that path). */
export async function processCgroups(pid: number): Promise<string[] | null> {
  try {
    const text = await readFile(`${PROC}/${pid}/cgroup`, 'utf8')
    return text
      .split('\n')
      .filter(Boolean)
      .map((line) => line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1))
  } catch {
    return null
  }
}

/** Is the process in the cgroup systemd made for `unit` ("callfs" or "callfs.service")? */
export function inUnitCgroup(cgroups: string[] | null, unit: string): boolean {
  if (!cgroups || unit === '') return false
  const name = unit.includes('.') ? unit : `${unit}.service`
  return cgroups.some((path) => path.split('/').includes(name))
}

type ProcessDescription = Pick<Listener, 'command' | 'cmdline' | 'argv0' | 'cgroups' | 'startTime' | 'startedAt'>

const UNKNOWN_PROCESS: ProcessDescription = {command: null, cmdline: null, argv0: null, cgroups: null, startTime: null, startedAt: null}

async function describeProcess(pid: number): Promise<ProcessDescription> {
  const [comm, args, stat, cgroups] = await Promise.all([
    readFile(`${PROC}/${pid}/comm`, 'utf8').then((t) => t.trim(), () => null),
    readFile(`${PROC}/${pid}/cmdline`).then(
      (b) => {
        const list = b.toString('utf8').split('\0')
        while (list.length > 0 && list[list.length - 1] === '') list.pop()
        return list
      },
      () => null,
    ),
    processStat(pid),
    processCgroups(pid),
  ])
  const line = args && args.length > 0 ? maskCommandLine(args) : null
  return {
    command: comm || null,
    cmdline: line ? line.slice(0, MAX_CMDLINE) : null,
    argv0: args?.[0] || null,
    cgroups,
    startTime: stat?.startTime ?? null,
    startedAt: stat ? await startTimeToDate(stat.startTime) : null,
  }
}

/**
 * pids holding each of `inodes` open, found by reading every /proc/<pid>/fd link. Processes
 * that exit meanwhile or deny access are skipped. Stops early once every inode is found in a
 * batch, and at the deadline.
 */
async function socketOwners(inodes: Set<number>, deadline: Deadline): Promise<Map<number, number[]>> {
  const owners = new Map<number, number[]>()
  const wanted = new Set([...inodes].map((i) => `socket:[${i}]`))
  let pids: number[]
  try {
    pids = (await readdir(PROC)).filter((n) => /^\d+$/.test(n)).map(Number)
  } catch {
    return owners
  }
  const scan = async (pid: number): Promise<void> => {
    let fds: string[]
    try {
      fds = await readdir(`${PROC}/${pid}/fd`)
    } catch {
      return // gone, or not ours to look at
    }
    await Promise.all(
      fds.map(async (fd) => {
        try {
          const link = await readlink(`${PROC}/${pid}/fd/${fd}`)
          if (!wanted.has(link)) return
          const inode = Number(link.slice(8, -1))
          const list = owners.get(inode) ?? []
          if (!list.includes(pid)) list.push(pid)
          owners.set(inode, list)
        } catch {
          // fd closed meanwhile
        }
      }),
    )
  }
  const BATCH = 32
  for (let i = 0; i < pids.length; i += BATCH) {
    if (deadline.signal.aborted) break
    await Promise.all(pids.slice(i, i + BATCH).map(scan))
  }
  return owners
}

/**
 * Of several processes sharing one listening socket (a pre-fork server: master and workers),
 * the one to name is the one whose parent does not hold it too: the master.
 */
async function mainOwner(pids: number[]): Promise<number> {
  if (pids.length === 1) return pids[0] as number
  const stats = await Promise.all(pids.map(async (pid) => ({pid, stat: await processStat(pid)})))
  const holders = new Set(pids)
  const roots = stats.filter((s) => s.stat && !holders.has(s.stat.ppid)).map((s) => s.pid)
  return Math.min(...(roots.length > 0 ? roots : pids))
}

// ---------------------------------------------------------------------------------------------
// ss fallback

function runSs(timeoutMs: number): Promise<{ok: true; stdout: string} | {ok: false; message: string; code?: string}> {
  return new Promise((resolve) => {
    execFile('ss', ['-ltnpHe'], {timeout: timeoutMs, maxBuffer: 8 * 1024 * 1024, env: {...process.env, LC_ALL: 'C'}}, (err, stdout) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code
        resolve({ok: false, message: errorMessageOf(err), ...(typeof code === 'string' ? {code} : {})})
      } else resolve({ok: true, stdout})
    })
  })
}

/** Splits "[::1]:8080", "127.0.0.1%lo:53", "*:80" into address and port. */
function splitSsAddress(text: string): {address: string; port: number; family: 4 | 6} | null {
  const i = text.lastIndexOf(':')
  if (i < 0) return null
  let host = text.slice(0, i)
  const port = Number(text.slice(i + 1))
  if (!Number.isInteger(port)) return null
  const zone = host.indexOf('%')
  if (zone >= 0) host = host.slice(0, zone)
  if (host.startsWith('[')) host = host.slice(1, host.indexOf(']') > 0 ? host.indexOf(']') : undefined)
  if (host === '*') return {address: '0.0.0.0', port, family: 4}
  return {address: host, port, family: host.includes(':') ? 6 : 4}
}

/** Listeners on `port` in the output of `ss -ltnpHe`. */
export function parseSsListeners(stdout: string, port: number): Listener[] {
  const out: Listener[] = []
  for (const line of stdout.split('\n')) {
    const f = line.trim().split(/\s+/)
    if (f.length < 5 || f[0] !== 'LISTEN') continue
    const local = splitSsAddress(f[3] ?? '')
    if (!local || local.port !== port) continue
    const users = /users:\(\("((?:[^"\\]|\\.)*)",pid=(\d+)/.exec(line)
    const inode = /\bino:(\d+)/.exec(line)
    const uid = /\buid:(\d+)/.exec(line)
    out.push({
      ...local,
      inode: inode ? Number(inode[1]) : 0,
      uid: uid ? Number(uid[1]) : 0, // ss omits uid:0
      pid: users ? Number(users[2]) : null,
      ...UNKNOWN_PROCESS,
      command: users ? (users[1] ?? null) : null,
    })
  }
  return out
}

/**
 * The same answer from `ss -ltnpHe` (iproute2), for systems where /proc/net/tcp is not
 * readable. cmdline and startTime still come from /proc/<pid> when it is visible.
 */
export async function listenersViaSs(port: number, opts: ProbeOptions): Promise<ProbeResult<Listener[]>> {
  const startedAt = Date.now()
  if (opts.signal?.aborted) return probeFail(abortedError(`looking up who listens on port ${port}`), startedAt)
  const deadline = startDeadline(opts)
  try {
    return await listenersFromSs(port, deadline, startedAt, opts)
  } finally {
    deadline.clear()
  }
}

async function listenersFromSs(port: number, deadline: Deadline, startedAt: number, opts: ProbeOptions): Promise<ProbeResult<Listener[]>> {
  const ss = await runSs(deadline.remaining())
  if (deadline.cause === 'aborted') return probeFail(abortedError(`looking up who listens on port ${port}`), startedAt)
  if (!ss.ok) {
    if (ss.code === 'ENOENT') {
      return probeFail({kind: 'not-found', code: 'ENOENT', message: `cannot tell who listens on port ${port}: /proc/net/tcp is not readable and ss (iproute2) is not installed`}, startedAt)
    }
    if (deadline.cause === 'deadline') {
      return probeFail({kind: 'timeout', message: `ss did not list listening sockets within ${formatMs(opts.timeoutMs)}`}, startedAt)
    }
    return probeFail({kind: 'other', ...(ss.code ? {code: ss.code} : {}), message: `ss -ltnpHe failed: ${ss.message}`}, startedAt)
  }
  const listeners = parseSsListeners(ss.stdout, port)
  for (const l of listeners) {
    if (l.pid === null) continue
    const d = await describeProcess(l.pid)
    Object.assign(l, {...d, command: d.command ?? l.command})
  }
  return probeOk(listeners, startedAt)
}

// ---------------------------------------------------------------------------------------------
// Probe

/** Every socket listening on TCP `port` (IPv4 and IPv6) and the process that holds it. */
export async function listenersOnPort(port: number, opts: ProbeOptions): Promise<ProbeResult<Listener[]>> {
  const startedAt = Date.now()
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    return probeFail({kind: 'other', message: `invalid port ${port}: expected 1-65535`}, startedAt)
  }
  if (opts.signal?.aborted) return probeFail(abortedError(`looking up who listens on port ${port}`), startedAt)
  const deadline = startDeadline(opts)
  try {
    const tables = await Promise.all(
      ['tcp', 'tcp6'].map((t) => readFile(`${PROC}/net/${t}`, 'utf8').then((text) => ({ok: true as const, text}), (err: NodeJS.ErrnoException) => ({ok: false as const, code: err.code}))),
    )
    const v4 = tables[0]
    if (!v4?.ok) return await listenersFromSs(port, deadline, startedAt, opts)

    const sockets: ProcSocket[] = []
    for (const t of tables) if (t.ok) sockets.push(...parseProcNetTcp(t.text, port))
    // A dual-stack socket (::, v6only off) appears once, in tcp6; an inode is never listed twice.
    const unique = [...new Map(sockets.map((s, i) => [s.inode > 0 ? s.inode : -1 - i, s])).values()]

    const owners = unique.length > 0 ? await socketOwners(new Set(unique.map((s) => s.inode).filter((i) => i > 0)), deadline) : new Map<number, number[]>()
    if (deadline.cause === 'aborted') return probeFail(abortedError(`looking up who listens on port ${port}`), startedAt)
    if (deadline.cause === 'deadline') {
      return probeFail({kind: 'timeout', message: `mapping the sockets on port ${port} to processes took longer than ${formatMs(opts.timeoutMs)} (scanning /proc/*/fd)`}, startedAt)
    }

    const listeners: Listener[] = []
    for (const s of unique) {
      const pids = owners.get(s.inode)
      const pid = pids && pids.length > 0 ? await mainOwner(pids) : null
      const d = pid !== null ? await describeProcess(pid) : UNKNOWN_PROCESS
      listeners.push({...s, pid, ...d})
    }
    return probeOk(listeners, startedAt)
  } catch (err) {
    return probeFail({kind: 'other', message: `cannot tell who listens on port ${port}: ${errorMessageOf(err)}`}, startedAt)
  } finally {
    deadline.clear()
  }
}
