// The one SQL runner (pg, loaded only when a probe runs). Every session opsctl opens says who
// it is (application_name=opsctl) and cannot outstay the probe: statement_timeout and
// lock_timeout end its statements on the server, the probe's deadline ends the connection.
import {isIP} from 'node:net'
import type {Client, ClientConfig} from 'pg'
import {maskUrlPasswords} from '../config/mask.js'
import {Reachability} from './reach.js'
import {abortedError, errorMessageOf, reachable, socketError, startDeadline} from './tcp.js'
import {probeFail, probeOk, type ProbeError, type ProbeOptions, type ProbeResult} from './types.js'
import {formatMs} from '../util/time.js'

export interface PgTarget {
  dsn: string
  /** From the target's *_env variable; wins over a password in the DSN; never shown. */
  password?: string
}

export type SqlRunner = <R extends object = Record<string, unknown>>(sql: string, params?: unknown[]) => Promise<R[]>

/** postgres://callfs:secret@h/db → postgres://callfs:****@h/db (also ?password= and key=value DSNs). */
export function maskDsn(dsn: string): string {
  return maskUrlPasswords(dsn).replace(/(^|\s)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi, '$1$2****')
}

interface PgEndpoint {
  host: string
  port: number
  database: string
  user: string
  password: string | undefined
  sslmode: string
  sslrootcert: string | undefined
}

function parseDsn(dsn: string): PgEndpoint {
  const u = new URL(dsn)
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') throw new Error('not a postgres:// URL')
  const q = u.searchParams
  const user = decodeURIComponent(u.username) || q.get('user') || process.env.PGUSER || process.env.USER || 'postgres'
  // A Unix socket directory may come as ?host=/run/postgresql or as an encoded host.
  const host = q.get('host') || decodeURIComponent(u.hostname).replace(/^\[(.*)\]$/, '$1') || 'localhost'
  const port = Number(q.get('port') || u.port || 5432)
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error('bad port')
  return {
    host,
    port,
    database: decodeURIComponent(u.pathname.slice(1)) || q.get('dbname') || user,
    user,
    password: u.password ? decodeURIComponent(u.password) : (q.get('password') ?? undefined),
    sslmode: q.get('sslmode') ?? 'disable',
    sslrootcert: q.get('sslrootcert') ?? undefined,
  }
}

/** Where a DSN points, with libpq's defaults (port 5432, database = user). */
export function dsnInfo(dsn: string): {host: string; port: number; database: string; user: string} {
  const {host, port, database, user} = parseDsn(dsn)
  return {host, port, database, user}
}

const TLS_CODE = /^(ERR_TLS|ERR_SSL|CERT_|DEPTH_ZERO|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_OSSL)/

/** Turns a pg or socket error into one actionable line, keeping the SQLSTATE or errno as `code`. */
function pgError(
  error: unknown,
  ctx: {where: string; host: string; user: string; database: string; timeoutMs: number},
  scrub: (t: string) => string,
): ProbeError {
  const e = (error ?? {}) as {code?: unknown; message?: unknown}
  const code = typeof e.code === 'string' ? e.code : undefined
  const said = scrub(errorMessageOf(error))
  const tail = code ? {code} : {}
  const {where, user, database} = ctx
  if (code === 'ENOENT') {
    return {kind: 'refused', code, message: `no PostgreSQL socket at ${where}: is PostgreSQL running? check the DSN's host`}
  }
  if (code?.startsWith('E') && !TLS_CODE.test(code)) return socketError(error, ctx.host, where) // errno, never a SQLSTATE
  switch (code) {
    case '28P01':
      return {kind: 'auth', message: `PostgreSQL at ${where}: password authentication failed for user "${user}" — check the password variable`, ...tail}
    case '28000':
      return {kind: 'auth', message: `PostgreSQL at ${where} refused user "${user}": ${said} — check pg_hba.conf, the user and the database`, ...tail}
    case '53300':
      return /for role|for database/i.test(said)
        ? {kind: 'capacity', message: `PostgreSQL at ${where}: ${said} (connection limit reached) — find idle connections in pg_stat_activity`, ...tail}
        : {kind: 'capacity', message: `PostgreSQL at ${where}: server has no free connection slots (max_connections reached) — find idle or leaked connections in pg_stat_activity, or raise max_connections`, ...tail}
    case '42501':
      return {kind: 'permission', message: `PostgreSQL at ${where}: ${said} — grant the privilege to user "${user}"`, ...tail}
    case '3D000':
      return {kind: 'not-found', message: `PostgreSQL at ${where}: database "${database}" does not exist — check the DSN's database`, ...tail}
    case '42P01':
      return {kind: 'not-found', message: `PostgreSQL at ${where}: ${said} (database "${database}") — is the schema migrated?`, ...tail}
    case '57014':
      return {kind: 'timeout', message: `PostgreSQL at ${where}: a query ran past the probe's time-out (${formatMs(ctx.timeoutMs)}) and was cancelled — the server is slow or the table is locked`, ...tail}
    case '55P03':
      return {kind: 'timeout', message: `PostgreSQL at ${where}: a lock was not granted within the probe's time-out (${formatMs(ctx.timeoutMs)}) — another session holds it (pg_locks, pg_blocking_pids)`, ...tail}
  }
  if (code?.startsWith('53')) return {kind: 'capacity', message: `PostgreSQL at ${where} is out of resources: ${said}`, ...tail}
  if (/password must be a string|no password (was )?(supplied|provided)/i.test(said)) {
    return {kind: 'auth', message: `PostgreSQL at ${where} asks for a password for user "${user}" but none is set — set the password variable`}
  }
  if (/does not support SSL/i.test(said) || (code !== undefined && TLS_CODE.test(code))) {
    return {kind: 'tls', message: `TLS to PostgreSQL at ${where} failed: ${said} — check sslmode and the certificate`, ...tail}
  }
  if (/Connection terminated/i.test(said)) {
    return {kind: 'reset', message: `PostgreSQL at ${where} closed the connection — check the server log (too many connections? a crash?)`}
  }
  return {kind: 'other', message: `PostgreSQL at ${where}: ${said}`, ...tail}
}

async function sslOption(ep: PgEndpoint): Promise<ClientConfig['ssl']> {
  switch (ep.sslmode) {
    case 'require':
      return {rejectUnauthorized: false}
    case 'verify-ca':
    case 'verify-full': {
      const ca = ep.sslrootcert ? await (await import('node:fs/promises')).readFile(ep.sslrootcert, 'utf8') : undefined
      return {rejectUnauthorized: true, ca, ...(isIP(ep.host) ? {} : {servername: ep.host})} // SNI takes names only
    }
    default:
      return false // disable, allow, prefer: plain, as most local setups
  }
}

/** Destroys the socket at once: for a server that may never answer a polite goodbye. */
function destroy(client: Client): void {
  client.connection.stream?.destroy()
}

/** client.end(), bounded: a server that stopped answering is not waited on. */
async function endClient(client: Client, graceMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    client.end().catch(() => {}),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
  ])
  clearTimeout(timer)
  destroy(client)
}

/**
 * Opens one session, runs `fn` (which may run several statements), always closes it. The whole
 * call is bounded by opts.timeoutMs and opts.signal; each statement also by statement_timeout
 * and lock_timeout on the server, set a little under the probe's time-out so the server cancels
 * it (57014 / 55P03) before the connection has to be cut. An endpoint that refuses or never
 * answers is recorded in opts.reach (key host:port) so the run does not wait on it again.
 */
export async function withPostgres<T>(target: PgTarget, opts: ProbeOptions, fn: (sql: SqlRunner) => Promise<T>): Promise<ProbeResult<T>> {
  const startedAt = Date.now()
  let ep: PgEndpoint
  try {
    ep = parseDsn(target.dsn)
  } catch {
    return probeFail({kind: 'other', message: `invalid PostgreSQL DSN ${maskDsn(target.dsn)} — expected postgres://user@host:port/database`}, startedAt)
  }
  const key = Reachability.key(ep.host, ep.port)
  const where = key
  const known = opts.reach?.known(key)
  if (known) return probeFail(known, startedAt)
  if (opts.signal?.aborted) return probeFail(abortedError(`the PostgreSQL probe of ${where}`), startedAt)
  // Only an endpoint that accepts connections is worth loading pg for (unix sockets: always).
  const unreachable = ep.host.startsWith('/') ? null : await reachable(ep.host, ep.port, opts)
  if (unreachable) return probeFail(unreachable, startedAt)

  const password = target.password ?? ep.password
  const scrub = (text: string): string => (password && password.length >= 3 ? text.split(password).join('****') : text)
  const ctx = {where, host: ep.host, user: ep.user, database: ep.database, timeoutMs: opts.timeoutMs}
  // The server ends a statement (57014) a little before the probe's deadline, and a lock wait
  // (55P03) a little before that, so each failure says what it was instead of a bare time-out.
  const statementTimeout = Math.max(1, opts.timeoutMs - Math.min(250, Math.floor(opts.timeoutMs / 5)))
  const lockTimeout = Math.max(1, statementTimeout - Math.min(250, Math.floor(statementTimeout / 5)))

  let ssl: ClientConfig['ssl']
  try {
    ssl = await sslOption(ep)
  } catch (error) {
    return probeFail({kind: 'tls', message: `cannot read sslrootcert ${ep.sslrootcert}: ${(error as Error).message}`}, startedAt)
  }
  const {default: pg} = await import('pg')
  const client = new pg.Client({
    host: ep.host,
    port: ep.port,
    user: ep.user,
    database: ep.database,
    password,
    ssl,
    application_name: 'opsctl',
    connectionTimeoutMillis: opts.timeoutMs,
    statement_timeout: statementTimeout,
    lock_timeout: lockTimeout,
    query_timeout: opts.timeoutMs,
  })
  let tcpConnected = false
  let connected = false
  client.on('error', () => {}) // the failing call reports it; an idle error must not crash the run
  client.connection.once('connect', () => (tcpConnected = true))

  const sql: SqlRunner = async <R extends object>(text: string, params?: unknown[]) => (await client.query<R>(text, params)).rows
  const work = (async () => {
    await client.connect()
    connected = true
    return fn(sql)
  })()
  work.catch(() => {}) // settled below, or abandoned at the deadline

  let settled = await settleWithin(work, opts)
  // pg's own connect/query timers, set to the same deadline, may fire first: the same time-out.
  if (settled.state === 'error' && /^(timeout expired|Query read timeout)/.test(errorMessageOf(settled.error))) settled = {state: 'timeout'}
  if (settled.state === 'done' || settled.state === 'error') await endClient(client, 1000)
  else destroy(client)

  if (settled.state === 'done') return probeOk(settled.value, startedAt)
  let error: ProbeError
  if (settled.state === 'aborted') {
    error = abortedError(`the PostgreSQL probe of ${where}`)
  } else if (settled.state === 'timeout') {
    error = connected
      ? {kind: 'timeout', message: `PostgreSQL at ${where}: the queries did not finish within ${formatMs(opts.timeoutMs)} — the server is slow or a lock is held`}
      : tcpConnected
        ? {kind: 'timeout', message: `PostgreSQL at ${where} accepted the connection but did not answer within ${formatMs(opts.timeoutMs)} — is it stopped, overloaded or out of connection slots?`}
        : {kind: 'timeout', message: `PostgreSQL at ${where} did not accept a connection within ${formatMs(opts.timeoutMs)} — check the host, port and firewall`}
  } else {
    error = pgError(settled.error, ctx, scrub)
  }
  if (!connected) opts.reach?.record(key, error)
  return probeFail(error, startedAt)
}

export type Settled<T> = {state: 'done'; value: T} | {state: 'error'; error: unknown} | {state: 'timeout'} | {state: 'aborted'}

/**
 * Waits for `work` under the probe's deadline: its value, its error, or why we stopped waiting.
 * For probes built on a client library (pg here, ioredis in redis.ts) that cannot take a signal:
 * the caller then cuts the client's socket itself.
 */
export async function settleWithin<T>(work: Promise<T>, opts: ProbeOptions): Promise<Settled<T>> {
  const deadline = startDeadline(opts)
  try {
    return await new Promise<Settled<T>>((resolve) => {
      const stop = (): void => resolve({state: deadline.cause === 'aborted' ? 'aborted' : 'timeout'})
      if (deadline.signal.aborted) return stop()
      deadline.signal.addEventListener('abort', stop, {once: true})
      work.then(
        (value) => resolve({state: 'done', value}),
        (error: unknown) => resolve({state: 'error', error}),
      )
    })
  } finally {
    deadline.clear()
  }
}
