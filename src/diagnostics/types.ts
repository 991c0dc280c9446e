// What every probe returns: a value or an error a person can act on, never a throw.
// A probe knows nothing about the system it serves; runbooks give its results meaning.

export type ProbeErrorKind =
  | 'refused' // nothing listens (ECONNREFUSED)
  | 'timeout' // the deadline passed: connect, first byte or total
  | 'unreachable' // no route, host down, network unreachable
  | 'dns' // name does not resolve
  | 'tls' // handshake or certificate verification failed
  | 'reset' // peer closed or reset the connection mid-way
  | 'protocol' // the peer answered, but not in the protocol expected (HTML for JSON, garbage)
  | 'too-large' // the answer exceeded the cap
  | 'auth' // credentials refused
  | 'permission' // the OS or the server denied access (EACCES, insufficient_privilege)
  | 'capacity' // the server refused for lack of capacity (too many connections, OOM)
  | 'not-found' // the thing probed does not exist (file, binary, table, database, unit)
  | 'aborted' // the run was cancelled
  | 'other'

export interface ProbeError {
  kind: ProbeErrorKind
  /** One line a person can act on. Never contains a secret. */
  message: string
  /** Machine code when there is one: errno (`ECONNREFUSED`), SQLSTATE (`53300`), Redis error prefix. */
  code?: string
}

export type ProbeResult<T> =
  | {ok: true; value: T; durationMs: number}
  | {ok: false; error: ProbeError; durationMs: number}

export interface ProbeOptions {
  /** Deadline for the whole probe, in milliseconds. */
  timeoutMs: number
  /** Aborts the probe early (run deadline, Ctrl-C). */
  signal?: AbortSignal
  /**
   * Per-run memory of endpoints that already refused or timed out, so a blackholed host
   * costs one time-out per run, not one per check.
   */
  reach?: import('./reach.js').Reachability
}

export function probeOk<T>(value: T, startedAt: number): ProbeResult<T> {
  return {ok: true, value, durationMs: Date.now() - startedAt}
}

export function probeFail<T = never>(error: ProbeError, startedAt: number): ProbeResult<T> {
  return {ok: false, error, durationMs: Date.now() - startedAt}
}
