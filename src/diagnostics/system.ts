// Services and processes: systemd units (through systemctl/journalctl), /proc, signals.
import {readdir, readFile} from 'node:fs/promises'

import {runCommand, type CommandResult} from './exec.js'
import {probeFail, probeOk, type ProbeError, type ProbeOptions, type ProbeResult} from './types.js'

export interface UnitStatus {
  unit: string
  /** loaded | not-found | masked | bad-setting | error */
  loadState: string
  /** active | inactive | failed | activating | deactivating | reloading */
  activeState: string
  subState: string
  /** null when 0 (nothing running). */
  mainPid: number | null
  /** success | exit-code | signal | core-dump | timeout | … (null when unset) */
  result: string | null
  /** User= of the unit (null when unset, i.e. root). */
  user: string | null
  execMainStatus: number | null
  /** ActiveEnterTimestamp when up, InactiveEnterTimestamp otherwise, as systemctl prints it. */
  since: string | null
}

const UNIT_PROPERTIES = [
  'LoadState',
  'ActiveState',
  'SubState',
  'MainPID',
  'Result',
  'User',
  'ExecMainStatus',
  'ActiveEnterTimestamp',
  'InactiveEnterTimestamp',
] as const

const NOT_BOOTED = /System has not been booted with systemd/i

/** A unit name given to systemctl must never be read as an option. */
function badUnitName(unit: string): string | null {
  if (unit === '' || unit.startsWith('-') || /[\s/]/.test(unit)) return `invalid systemd unit name ${JSON.stringify(unit)}`
  return null
}

/** Map a failed systemctl/journalctl run (non-zero exit) to one actionable error. */
function systemdToolError(tool: string, run: CommandResult): ProbeError {
  const stderr = run.stderr.trim()
  if (NOT_BOOTED.test(stderr)) {
    return {
      kind: 'not-found',
      message: `systemd is not running on this host (System has not been booted with systemd as init system); ${tool} cannot report units here — check the process directly`,
    }
  }
  if (/access denied|permission denied|interactive authentication required/i.test(stderr)) {
    return {kind: 'permission', message: `${tool} was denied access (${firstLine(stderr)}); run opsctl as root or with sudo`}
  }
  return {kind: 'other', message: `\`${run.command}\` exited with ${run.exitCode ?? run.signal}: ${firstLine(stderr) || 'no error output'}`}
}

function firstLine(text: string): string {
  return text.split('\n').find((l) => l.trim() !== '')?.trim() ?? ''
}

function emptyToNull(v: string | undefined): string | null {
  return v === undefined || v === '' || v === 'n/a' ? null : v
}

function intOrNull(v: string | undefined): number | null {
  if (v === undefined || !/^-?\d+$/.test(v.trim())) return null
  return Number.parseInt(v, 10)
}

/** Parse `systemctl show` output (Key=Value per line; the value may itself contain '='). */
export function parseSystemctlShow(text: string): Map<string, string> {
  const props = new Map<string, string>()
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=')
    if (eq <= 0) continue
    props.set(line.slice(0, eq), line.slice(eq + 1).replace(/\r$/, ''))
  }
  return props
}

export async function systemdUnitStatus(unit: string, opts: ProbeOptions): Promise<ProbeResult<UnitStatus>> {
  const startedAt = Date.now()
  const invalid = badUnitName(unit)
  if (invalid) return probeFail({kind: 'other', message: invalid}, startedAt)
  const run = await runCommand('systemctl', ['show', unit, '--no-pager', `--property=${UNIT_PROPERTIES.join(',')}`], opts)
  if (!run.ok) return run.error.kind === 'not-found' ? probeFail({...run.error, message: 'systemctl not found on PATH (not a systemd host?)'}, startedAt) : probeFail(run.error, startedAt)
  if (run.value.exitCode !== 0) return probeFail(systemdToolError('systemctl', run.value), startedAt)

  const p = parseSystemctlShow(run.value.stdout)
  const loadState = p.get('LoadState')
  const activeState = p.get('ActiveState')
  if (!loadState || !activeState) {
    return probeFail({kind: 'protocol', message: `\`${run.value.command}\` printed no LoadState/ActiveState; unexpected systemctl output`}, startedAt)
  }
  const mainPid = intOrNull(p.get('MainPID'))
  const up = activeState === 'active' || activeState === 'activating' || activeState === 'reloading' || activeState === 'deactivating'
  return probeOk(
    {
      unit,
      loadState,
      activeState,
      subState: p.get('SubState') ?? '',
      mainPid: mainPid === 0 ? null : mainPid,
      result: emptyToNull(p.get('Result')),
      user: emptyToNull(p.get('User')),
      execMainStatus: intOrNull(p.get('ExecMainStatus')),
      since: emptyToNull(up ? p.get('ActiveEnterTimestamp') : p.get('InactiveEnterTimestamp')),
    },
    startedAt,
  )
}

/** journalctl -u UNIT -n N --no-pager -o cat [--since S]: the unit's last log lines, oldest first. */
export async function journalTail(
  unit: string,
  opts: ProbeOptions & {lines?: number; since?: string},
): Promise<ProbeResult<string[]>> {
  const startedAt = Date.now()
  const invalid = badUnitName(unit)
  if (invalid) return probeFail({kind: 'other', message: invalid}, startedAt)
  const lines = Math.max(1, Math.floor(opts.lines ?? 50))
  const args = ['-u', unit, '-n', String(lines), '--no-pager', '-o', 'cat']
  if (opts.since !== undefined) args.push('--since', opts.since)
  const run = await runCommand('journalctl', args, opts)
  if (!run.ok) return run.error.kind === 'not-found' ? probeFail({...run.error, message: 'journalctl not found on PATH (not a systemd host?)'}, startedAt) : probeFail(run.error, startedAt)
  if (run.value.exitCode !== 0) return probeFail(systemdToolError('journalctl', run.value), startedAt)
  if (/No journal files were found/i.test(run.value.stderr)) {
    return probeFail({kind: 'not-found', message: `journalctl found no journal on this host; read ${unit}'s log file instead`}, startedAt)
  }
  const out = run.value.stdout.split('\n')
  if (out.at(-1) === '') out.pop()
  return probeOk(
    out.filter((l) => l !== '-- No entries --'),
    startedAt,
  )
}

export interface ProcessInfo {
  pid: number
  ppid: number
  /** Kernel name of the executable, at most 15 characters. */
  comm: string
  /** Arguments joined by spaces ('' for kernel threads). */
  cmdline: string
  /** Effective uid. */
  uid: number
  /** Start time in clock ticks after boot (/proc/<pid>/stat field 22): with the PID, identifies a process. */
  startTime: number
}

interface StatLine {
  comm: string
  state: string
  ppid: number
  startTime: number
}

/** /proc/<pid>/stat: "pid (comm) state ppid … starttime …"; comm may contain spaces and ')'. */
export function parseProcStat(text: string): StatLine | null {
  const open = text.indexOf('(')
  const close = text.lastIndexOf(')')
  if (open < 0 || close < open) return null
  const rest = text.slice(close + 2).trim().split(/\s+/)
  // rest[0] is field 3 (state), so field N is rest[N - 3].
  const state = rest[0]
  const ppid = Number(rest[1])
  const startTime = Number(rest[19])
  if (state === undefined || !Number.isFinite(ppid) || !Number.isFinite(startTime)) return null
  return {comm: text.slice(open + 1, close), state, ppid, startTime}
}

async function readStat(pid: number): Promise<StatLine | null> {
  try {
    return parseProcStat(await readFile(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return null
  }
}

export async function processInfo(pid: number): Promise<ProcessInfo | null> {
  if (!Number.isInteger(pid) || pid <= 0) return null
  const stat = await readStat(pid)
  if (!stat) return null
  const [cmdline, status] = await Promise.all([
    readFile(`/proc/${pid}/cmdline`).catch(() => Buffer.alloc(0)),
    readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''),
  ])
  const uidLine = /^Uid:\s+(\d+)\s+(\d+)/m.exec(status)
  return {
    pid,
    ppid: stat.ppid,
    comm: stat.comm,
    cmdline: cmdline.toString('utf8').replace(/\0+$/, '').replaceAll('\0', ' '),
    uid: uidLine?.[2] !== undefined ? Number(uidLine[2]) : -1,
    startTime: stat.startTime,
  }
}

/**
 * Scan /proc for processes matching every given criterion. opsctl itself is never listed (its
 * own command line names the system it diagnoses). comm is compared as the kernel stores it:
 * cut to 15 characters.
 */
export async function findProcesses(match: {comm?: string; cmdlineIncludes?: string}): Promise<ProcessInfo[]> {
  let entries: string[]
  try {
    entries = await readdir('/proc')
  } catch {
    return []
  }
  const pids = entries.filter((e) => /^\d+$/.test(e)).map(Number).filter((p) => p !== process.pid)
  const wantComm = match.comm?.slice(0, 15)
  const found: ProcessInfo[] = []
  // Read in modest batches: thousands of parallel opens would hit the fd limit.
  for (let i = 0; i < pids.length; i += 64) {
    const batch = await Promise.all(
      pids.slice(i, i + 64).map(async (pid) => {
        // A zombie (or a dying task) keeps its name but runs nothing: not a running process.
        const stat = await readStat(pid)
        if (!stat || stat.state === 'Z' || stat.state === 'X' || stat.state === 'x') return null
        if (wantComm !== undefined && stat.comm !== wantComm) return null
        const info = await processInfo(pid)
        if (!info) return null
        if (match.cmdlineIncludes !== undefined && !info.cmdline.includes(match.cmdlineIncludes)) return null
        return info
      }),
    )
    for (const p of batch) if (p) found.push(p)
  }
  return found.sort((a, b) => a.pid - b.pid)
}

/**
 * The environment a process was started with (/proc/<pid>/environ). The values may hold
 * secrets: callers look at keys or compare values, and never put a value into evidence.
 */
export async function processEnvironment(pid: number): Promise<ProbeResult<Record<string, string>>> {
  const startedAt = Date.now()
  let raw: Buffer
  try {
    raw = await readFile(`/proc/${pid}/environ`)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ESRCH') return probeFail({kind: 'not-found', message: `process ${pid} is not running`, code}, startedAt)
    if (code === 'EACCES' || code === 'EPERM') {
      return probeFail({kind: 'permission', message: `not allowed to read the environment of process ${pid}; run opsctl as root or as the process's user`, code}, startedAt)
    }
    return probeFail({kind: 'other', message: `cannot read /proc/${pid}/environ: ${code ?? String(e)}`, ...(code ? {code} : {})}, startedAt)
  }
  const env: Record<string, string> = {}
  for (const entry of raw.toString('utf8').split('\0')) {
    const eq = entry.indexOf('=')
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1)
  }
  return probeOk(env, startedAt)
}

export interface StopResult {
  /** True when this call made the process go away. */
  stopped: boolean
  /** The last signal sent (null when none was). */
  signalSent: 'SIGTERM' | 'SIGKILL' | null
  detail: string
}

const POLL_MS = 25
/** After SIGKILL only an uninterruptible sleep (D state) keeps a process around this long. */
const KILL_WAIT_MS = 2000

/** Gone, exited (zombie waiting for its parent) or replaced by another process with the same PID. */
async function isGone(pid: number, startTime: number): Promise<boolean> {
  const stat = await readStat(pid)
  return stat === null || stat.startTime !== startTime || stat.state === 'Z' || stat.state === 'X'
}

async function waitGone(pid: number, startTime: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms
  for (;;) {
    if (await isGone(pid, startTime)) return true
    if (Date.now() >= until) return false
    await new Promise((r) => setTimeout(r, POLL_MS))
  }
}

function signal(pid: number, sig: 'SIGTERM' | 'SIGKILL'): NodeJS.ErrnoException | null {
  try {
    process.kill(pid, sig)
    return null
  } catch (e) {
    return e as NodeJS.ErrnoException
  }
}

/**
 * Stop a process safely: only if its start time still equals expectedStartTime (the PID was
 * not reused since it was inspected); SIGTERM, wait up to graceMs, then SIGKILL.
 */
export async function stopProcess(pid: number, expectedStartTime: number, graceMs: number): Promise<StopResult> {
  if (!Number.isInteger(pid) || pid <= 1) return {stopped: false, signalSent: null, detail: `refusing to signal PID ${pid}`}
  const stat = await readStat(pid)
  if (!stat || stat.state === 'Z' || stat.state === 'X') {
    return {stopped: false, signalSent: null, detail: `process ${pid} had already exited; nothing to stop`}
  }
  if (stat.startTime !== expectedStartTime) {
    return {
      stopped: false,
      signalSent: null,
      detail: `PID ${pid} now belongs to another process (${stat.comm}, start time ${stat.startTime}, expected ${expectedStartTime}); not touched`,
    }
  }
  const termError = signal(pid, 'SIGTERM')
  if (termError) {
    if (termError.code === 'ESRCH') return {stopped: false, signalSent: null, detail: `process ${pid} exited before it could be signalled`}
    return {stopped: false, signalSent: null, detail: `not allowed to signal process ${pid} (${stat.comm}): ${termError.code ?? termError.message}; run as root or as its user`}
  }
  if (await waitGone(pid, expectedStartTime, graceMs)) {
    return {stopped: true, signalSent: 'SIGTERM', detail: `process ${pid} (${stat.comm}) exited after SIGTERM`}
  }
  // Re-check identity right before the KILL: the PID must still be the same process.
  const again = await readStat(pid)
  if (!again || again.startTime !== expectedStartTime) {
    return {stopped: true, signalSent: 'SIGTERM', detail: `process ${pid} (${stat.comm}) exited after SIGTERM`}
  }
  const killError = signal(pid, 'SIGKILL')
  if (killError && killError.code !== 'ESRCH') {
    return {stopped: false, signalSent: 'SIGTERM', detail: `process ${pid} (${stat.comm}) ignored SIGTERM and SIGKILL was refused: ${killError.code ?? killError.message}`}
  }
  if (await waitGone(pid, expectedStartTime, KILL_WAIT_MS)) {
    return {stopped: true, signalSent: 'SIGKILL', detail: `process ${pid} (${stat.comm}) ignored SIGTERM for ${graceMs}ms; killed with SIGKILL`}
  }
  return {stopped: false, signalSent: 'SIGKILL', detail: `process ${pid} (${stat.comm}) is still there after SIGKILL (stuck in uninterruptible I/O?)`}
}
