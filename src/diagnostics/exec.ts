// Every child process opsctl starts goes through here. The child runs in its own process
// group so that a time-out or Ctrl-C takes down everything it forked, not just the leader.
import {stat} from 'node:fs/promises'
import type {Readable} from 'node:stream'

import {probeFail, probeOk, type ProbeOptions, type ProbeResult} from './types.js'
import {formatMs} from '../util/time.js'

export interface CommandResult {
  /** The command line as run, for evidence (no secrets are ever passed on argv). */
  command: string
  exitCode: number | null
  /** Capped at maxOutputBytes (default 1 MiB); a cut is marked at the end. */
  stdout: string
  stderr: string
  timedOut: boolean
  signal: string | null
}

export interface RunCommandOptions extends ProbeOptions {
  /** Merged over process.env; a key set to undefined is removed from the child's environment. */
  env?: Record<string, string | undefined>
  /** Written to stdin; without it stdin is closed so nothing can wait for a prompt. */
  input?: string
  cwd?: string
  maxOutputBytes?: number
}

export const DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
/** How long to wait for pipes to close after the group was killed (a setsid'd grandchild may hold them). */
const DRAIN_AFTER_KILL_MS = 1000

/** Quote one argv element the way a person would paste it into a shell. */
export function shellQuote(arg: string): string {
  if (arg !== '' && /^[\w@%+=:,./-]+$/.test(arg)) return arg
  return `'${arg.replaceAll("'", `'\\''`)}'`
}

export function formatCommand(file: string, args: readonly string[]): string {
  return [file, ...args].map(shellQuote).join(' ')
}

/** Collects a stream up to a byte cap and keeps draining past it, so the child never blocks on a full pipe. */
class CappedCollector {
  private readonly chunks: Buffer[] = []
  private kept = 0
  private dropped = 0

  constructor(private readonly cap: number) {}

  push(chunk: Buffer | string): void {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    const room = this.cap - this.kept
    if (room >= buf.length) {
      this.chunks.push(buf)
      this.kept += buf.length
    } else {
      if (room > 0) this.chunks.push(buf.subarray(0, room))
      this.kept += Math.max(room, 0)
      this.dropped += buf.length - Math.max(room, 0)
    }
  }

  text(): string {
    const body = Buffer.concat(this.chunks).toString('utf8')
    return this.dropped > 0 ? `${body}\n[… output truncated: ${this.dropped} more bytes not kept]` : body
  }
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return
  try {
    process.kill(-pid, 'SIGKILL')
  } catch {
    // ESRCH: the whole group is already gone.
  }
}

/**
 * Run `file args…` without a shell. A non-zero exit is not an error: callers interpret exit
 * codes. Errors: binary missing → 'not-found'; not executable → 'permission'; deadline →
 * 'timeout'; opts.signal → 'aborted'. On time-out or abort the whole process group is killed.
 */
export async function runCommand(
  file: string,
  args: string[],
  opts: RunCommandOptions,
): Promise<ProbeResult<CommandResult>> {
  const startedAt = Date.now()
  const command = formatCommand(file, args)
  if (opts.signal?.aborted) return probeFail({kind: 'aborted', message: `\`${command}\` was not started: the run was cancelled`}, startedAt)

  if (opts.cwd !== undefined) {
    // spawn reports a missing cwd as ENOENT of the binary; say what is really missing.
    const dir = await stat(opts.cwd).catch(() => null)
    if (!dir?.isDirectory()) {
      return probeFail({kind: 'not-found', message: `working directory ${opts.cwd} does not exist; cannot run \`${command}\``, code: 'ENOENT'}, startedAt)
    }
  }

  const {execa} = await import('execa')
  const env: Record<string, string | undefined> = {...process.env, ...opts.env}
  const cap = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES
  const out = new CappedCollector(cap)
  const err = new CappedCollector(cap)

  const subprocess = execa(file, args, {
    detached: true, // own process group: kill(-pid) reaches every descendant that stayed in it
    cleanup: false,
    reject: false,
    buffer: false,
    extendEnv: false,
    env,
    cwd: opts.cwd,
    ...(opts.input === undefined ? {stdin: 'ignore' as const} : {input: opts.input}),
    stdout: 'pipe',
    stderr: 'pipe',
    stripFinalNewline: false,
  })
  const streams: Readable[] = []
  if (subprocess.stdout) {
    streams.push(subprocess.stdout)
    subprocess.stdout.on('data', (c: Buffer | string) => out.push(c))
  }
  if (subprocess.stderr) {
    streams.push(subprocess.stderr)
    subprocess.stderr.on('data', (c: Buffer | string) => err.push(c))
  }

  let ended: 'timeout' | 'aborted' | null = null
  const stop = (why: 'timeout' | 'aborted'): void => {
    if (ended) return
    ended = why
    killGroup(subprocess.pid)
    // A descendant that left the group (setsid) may still hold our pipes: stop waiting for them.
    drainTimer = setTimeout(() => {
      for (const s of streams) s.destroy()
    }, DRAIN_AFTER_KILL_MS)
  }
  let drainTimer: ReturnType<typeof setTimeout> | undefined
  const deadline = setTimeout(() => stop('timeout'), opts.timeoutMs)
  const onAbort = (): void => stop('aborted')
  opts.signal?.addEventListener('abort', onAbort, {once: true})

  try {
    const result = await subprocess
    if (ended === 'timeout') {
      return probeFail({kind: 'timeout', message: `\`${command}\` did not finish within ${formatMs(opts.timeoutMs)}; killed`}, startedAt)
    }
    if (ended === 'aborted') {
      return probeFail({kind: 'aborted', message: `\`${command}\` was cancelled; killed`}, startedAt)
    }
    const code = (result as {code?: unknown}).code
    if (result.failed && result.exitCode === undefined && result.signal === undefined) {
      if (code === 'ENOENT') return probeFail({kind: 'not-found', message: `${file} not found on PATH`, code}, startedAt)
      if (code === 'EACCES') return probeFail({kind: 'permission', message: `${file} is not executable (permission denied)`, code}, startedAt)
      const first = (result.shortMessage ?? result.message ?? 'unknown error').split('\n')[0]
      return probeFail({kind: 'other', message: `could not run \`${command}\`: ${first}`, ...(typeof code === 'string' ? {code} : {})}, startedAt)
    }
    return probeOk(
      {
        command,
        exitCode: result.exitCode ?? null,
        stdout: out.text(),
        stderr: err.text(),
        timedOut: false,
        signal: result.signal ?? null,
      },
      startedAt,
    )
  } finally {
    clearTimeout(deadline)
    if (drainTimer) clearTimeout(drainTimer)
    opts.signal?.removeEventListener('abort', onAbort)
  }
}

/**
 * Start a long-running process that must outlive opsctl (e.g. a mock service a remediation
 * brings back): own session, stdio to a log file (appended) or nowhere, not waited for.
 * Returns its PID, or an error when it could not be started at all.
 */
export async function startDetached(
  file: string,
  args: string[],
  opts: {cwd?: string; env?: Record<string, string | undefined>; logFile?: string},
): Promise<ProbeResult<{pid: number; command: string}>> {
  const startedAt = Date.now()
  const command = formatCommand(file, args)
  const {spawn} = await import('node:child_process')
  const {open} = await import('node:fs/promises')
  let log: import('node:fs/promises').FileHandle | undefined
  try {
    if (opts.logFile !== undefined) log = await open(opts.logFile, 'a', 0o640)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    return probeFail({kind: code === 'EACCES' ? 'permission' : code === 'ENOENT' ? 'not-found' : 'other', message: `cannot open log file ${opts.logFile}: ${code ?? String(e)}`, ...(code ? {code} : {})}, startedAt)
  }
  try {
    const child = spawn(file, args, {
      cwd: opts.cwd,
      env: {...process.env, ...opts.env},
      detached: true,
      stdio: ['ignore', log?.fd ?? 'ignore', log?.fd ?? 'ignore'],
    })
    const spawned = await new Promise<{pid: number} | {error: NodeJS.ErrnoException}>((resolve) => {
      child.once('spawn', () => resolve({pid: child.pid ?? -1}))
      child.once('error', (error: NodeJS.ErrnoException) => resolve({error}))
    })
    if ('error' in spawned) {
      const code = spawned.error.code
      if (code === 'ENOENT') return probeFail({kind: 'not-found', message: `${file} not found on PATH (or working directory ${opts.cwd ?? '.'} missing)`, code}, startedAt)
      if (code === 'EACCES') return probeFail({kind: 'permission', message: `${file} is not executable (permission denied)`, code}, startedAt)
      return probeFail({kind: 'other', message: `could not start \`${command}\`: ${spawned.error.message}`, ...(code ? {code} : {})}, startedAt)
    }
    child.unref()
    return probeOk({pid: spawned.pid, command}, startedAt)
  } finally {
    await log?.close()
  }
}
