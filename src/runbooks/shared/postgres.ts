// PostgreSQL checks shared by the runbooks whose service keeps its state there (CallFS,
// Hotswap): reachability, connection slots, long transactions — and the guarded fixes.

import {dsnInfo, maskDsn, type SqlRunner} from '../../diagnostics/postgres.js'
import type {ProbeResult} from '../../diagnostics/types.js'

import type {Finding, Fix} from '../../engine/types.js'
import {formatMs} from '../../util/time.js'

/** Runs `fn` in one session; a fix passes the signal of its apply() deadline. */
export type PgRun = <T>(fn: (sql: SqlRunner) => Promise<T>, signal?: AbortSignal) => Promise<ProbeResult<T>>

export interface PgTargetInfo {
  dsn: string
  /** Manual-fix ids. */
  reachableFixId: string
}

/** Evidence value for "PostgreSQL refused because it is full": the branch to the connections check. */
export const TOO_MANY_CONNECTIONS = 'too-many-connections'

function psql(dsn: string, sql: string): string {
  return `psql "${maskDsn(dsn)}" -c "${sql}"`
}

export async function reachableFinding(run: PgRun, t: PgTargetInfo): Promise<Finding> {
  const info = dsnInfo(t.dsn)
  const where = `${info.host}:${info.port}/${info.database} as ${info.user}`
  const r = await run(async (sql) => {
    const [row] = await sql<{version: string; recovery: boolean}>(
      `SELECT current_setting('server_version') AS version, pg_is_in_recovery() AS recovery`,
    )
    return row
  })
  const evidence: Record<string, unknown> = {dsn: maskDsn(t.dsn)}
  if (r.ok) {
    evidence.serverVersion = r.value?.version
    evidence.inRecovery = r.value?.recovery
    return {status: 'ok', summary: `PostgreSQL ${r.value?.version ?? ''} answers at ${where}`, evidence}
  }
  evidence.error = r.error.kind
  if (r.error.code) evidence.code = r.error.code
  if (r.error.kind === 'capacity') evidence.reason = TOO_MANY_CONNECTIONS
  const commands = [
    `pg_isready -h ${info.host} -p ${info.port} -d ${info.database}`,
    psql(t.dsn, 'SELECT 1;'),
    'systemctl status postgresql',
  ]
  const plan: string[] = []
  switch (r.error.kind) {
    case 'refused':
      plan.push(`start PostgreSQL on ${info.host}:${info.port}, or correct the DSN`)
      break
    case 'auth':
      plan.push(`check that role ${info.user} exists and may log in, its password (the variable named by postgres_password_env, or PGPASSWORD), and pg_hba.conf`)
      break
    case 'capacity':
      plan.push('free connection slots: see the connection check below, or raise max_connections', 'lower the pool size of the clients (e.g. metadata_store.max_open_conns)')
      break
    case 'not-found':
      plan.push(`create the database ${info.database}, or correct the DSN`)
      break
    case 'permission':
      // The service connects with this DSN: if opsctl may not, neither may the service.
      plan.push(`GRANT CONNECT ON DATABASE ${info.database} TO ${info.user} (and check pg_hba.conf)`)
      break
    default:
      plan.push(`make ${info.host}:${info.port} reachable from here (firewall, listen_addresses, DNS)`)
  }
  return {
    status: 'fail',
    summary: `cannot connect to PostgreSQL at ${where}: ${r.error.message}`,
    evidence,
    fix: {id: t.reachableFixId, title: 'Restore the database connection', plan, commands},
  }
}

export interface ConnectionsInput {
  dsn: string
  /** Idle connections of the service older than this may be terminated. */
  idleThresholdMs: number
  /** Only connections of this database and user are candidates. */
  database: string
  user: string
  terminateFixId: string
  manualFixId: string
  poolHint: string
  warnRatio?: number
  failRatio?: number
}

interface Usage {
  max: number
  reserved: number
  used: number
  byState: Record<string, number>
  idle: Array<{pid: number; usename: string; application_name: string; client_addr: string | null; idle_ms: number; state_change: string; backend_start: string}>
}

/**
 * A client backend in pg_stat_activity, also when the row belongs to another role and this
 * one may not see its details (no pg_read_all_stats): such rows show only pid, database, user
 * and application, with backend_type NULL. Background processes have no database or no user
 * (a hidden parallel worker or logical walsender of another role would count: rare, and high).
 */
const CLIENT_BACKEND = `(backend_type = 'client backend' OR (backend_type IS NULL AND datname IS NOT NULL AND usename IS NOT NULL))`

/**
 * May this session signal backend `a` (pg_terminate_backend raises an ERROR otherwise)? As
 * PostgreSQL decides: a superuser's backend only from a superuser; otherwise the privileges of
 * its role or of pg_signal_backend.
 */
const CAN_SIGNAL =
  `((NOT coalesce((SELECT rolsuper FROM pg_roles WHERE oid = a.usesysid), true) OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) ` +
  `AND (pg_has_role(a.usesysid, 'USAGE') OR pg_has_role('pg_signal_backend', 'USAGE')))`

function interval(ms: number): string {
  return `${Math.max(0, Math.round(ms))} milliseconds`
}

export function terminateIdleFix(run: PgRun, i: ConnectionsInput, pids: Usage['idle']): Fix {
  // Guard: the same backend (pid and start time, against pid reuse), still idle for long enough.
  const guardSql =
    `SELECT a.pid, pg_terminate_backend(a.pid) AS terminated FROM pg_stat_activity a ` +
    `JOIN unnest($1::int[], $5::timestamptz[]) AS t(pid, backend_start) ON a.pid = t.pid AND a.backend_start = t.backend_start ` +
    `WHERE a.datname = $2 AND a.usename = $3 AND a.state = 'idle' ` +
    `AND a.state_change < now() - $4::interval AND a.pid <> pg_backend_pid()`
  return {
    id: i.terminateFixId,
    title: `Terminate ${pids.length} idle connection${pids.length === 1 ? '' : 's'} of ${i.user} to ${i.database}`,
    plan: [
      ...pids.map(
        (p) =>
          `terminate pid ${p.pid} (${p.usename}${p.client_addr ? '@' + p.client_addr : ''}, app "${p.application_name}", idle ${formatMs(p.idle_ms)}) — only if it is still idle`,
      ),
      `SQL: ${guardSql} -- $1=[${pids.map((p) => p.pid).join(',')}] $2=${i.database} $3=${i.user} $4=${interval(i.idleThresholdMs)} $5=[their backend_start]`,
    ],
    commands: [psql(i.dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (${pids.map((p) => p.pid).join(',')}) AND state = 'idle';`)],
    confirmText: i.database,
    async apply(signal) {
      const r = await run(
        (sql) => sql<{pid: number; terminated: boolean}>(guardSql, [pids.map((p) => p.pid), i.database, i.user, interval(i.idleThresholdMs), pids.map((p) => p.backend_start)]),
        signal,
      )
      if (!r.ok) return {ok: false, detail: r.error.message}
      const done = r.value.filter((x) => x.terminated).length
      const left = pids.length - done
      return {ok: true, detail: `terminated ${done} idle connection${done === 1 ? '' : 's'}${left ? `; ${left} left alone (busy again or gone)` : ''}`}
    },
  }
}

/** Backends in use against max_connections (minus the superuser reserve). */
export async function connectionsFinding(run: PgRun, i: ConnectionsInput): Promise<Finding> {
  const warnRatio = i.warnRatio ?? 0.8
  const failRatio = i.failRatio ?? 0.9
  const r = await run(async (sql): Promise<Usage> => {
    const [limits] = await sql<{max: number; reserved: number; used: number}>(
      `SELECT current_setting('max_connections')::int AS max, current_setting('superuser_reserved_connections')::int
                + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved,
              (SELECT count(*)::int FROM pg_stat_activity WHERE ${CLIENT_BACKEND}) AS used`,
    )
    const states = await sql<{state: string | null; n: number}>(
      `SELECT coalesce(state, 'hidden') AS state, count(*)::int AS n FROM pg_stat_activity WHERE ${CLIENT_BACKEND} GROUP BY 1`,
    )
    const idle = await sql<Usage['idle'][number]>(
      `SELECT pid, usename, coalesce(application_name, '') AS application_name, host(client_addr) AS client_addr,
              (extract(epoch FROM now() - state_change) * 1000)::bigint::float8 AS idle_ms, state_change::text AS state_change,
              backend_start::text AS backend_start
         FROM pg_stat_activity
        WHERE datname = $1 AND usename = $2 AND state = 'idle' AND state_change < now() - $3::interval AND pid <> pg_backend_pid()
        ORDER BY state_change LIMIT 500`,
      [i.database, i.user, interval(i.idleThresholdMs)],
    )
    return {max: limits?.max ?? 0, reserved: limits?.reserved ?? 0, used: limits?.used ?? 0, byState: Object.fromEntries(states.map((s) => [s.state, s.n])), idle}
  })
  const manual: Fix = {
    id: i.manualFixId,
    title: 'Free PostgreSQL connection slots',
    plan: [i.poolHint, 'or raise max_connections in postgresql.conf (restart required)'],
    commands: [
      psql(i.dsn, "SELECT application_name, state, count(*) FROM pg_stat_activity GROUP BY 1, 2 ORDER BY 3 DESC;"),
      psql(i.dsn, "SELECT pid, usename, state, now() - state_change AS idle_for FROM pg_stat_activity WHERE state = 'idle' ORDER BY 4 DESC;"),
    ],
  }
  if (!r.ok) {
    if (r.error.kind === 'capacity') {
      return {
        status: 'fail',
        summary: 'PostgreSQL refuses new connections: every slot is taken (max_connections reached)',
        evidence: {code: r.error.code, reason: TOO_MANY_CONNECTIONS},
        fix: manual,
      }
    }
    return {status: 'unknown', summary: `could not read connection usage: ${r.error.message}`, evidence: {error: r.error.kind}}
  }
  const u = r.value
  const usable = Math.max(1, u.max - u.reserved)
  const ratio = u.used / usable
  const evidence: Record<string, unknown> = {
    used: u.used,
    maxConnections: u.max,
    superuserReserved: u.reserved,
    usedPercent: Math.round(ratio * 1000) / 10,
    byState: u.byState,
    idleCandidates: u.idle.length,
    idleThreshold: formatMs(i.idleThresholdMs),
  }
  const summary = `${u.used} of ${usable} usable connections in use (${evidence.usedPercent}%; max_connections ${u.max}, ${u.reserved} reserved)`
  if (ratio < warnRatio) return {status: 'ok', summary, evidence}
  const fix = u.idle.length > 0 ? terminateIdleFix(run, i, u.idle) : manual
  return {status: ratio >= failRatio ? 'fail' : 'warn', summary, evidence, fix}
}

export interface LongQueriesInput {
  dsn: string
  database: string
  thresholdMs: number
  terminateFixId: string
}

interface LongBackend {
  pid: number
  usename: string
  application_name: string
  state: string
  age_ms: number
  query: string
  backend_start: string
  /** This session may terminate it (pg_terminate_backend would raise an error otherwise). */
  can_signal: boolean
}

/**
 * A SQL literal as pg_stat_activity may show it: a string (also E'' with backslash escapes), a
 * dollar-quoted body, or a number. A string or body cut off by track_activity_query_size runs
 * to the end of the text. One left-to-right pass, so quotes inside another literal do not count.
 */
const LITERAL =
  /(?<![\w$])[eE]'(?:[^'\\]|\\[\s\S]|'')*(?:'|$)|'(?:[^']|'')*(?:'|$)|\$([A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$[\s\S]*?(?:\$\1\$|$)|(?<![\w$.])(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.])/g

/** Mask string and number literals so query text in evidence carries no data or secrets. */
export function maskQueryLiterals(q: string): string {
  return q
    .replace(LITERAL, (m) => (m.startsWith('$') ? '$?$' : /^[eE]'/.test(m) ? "E'?'" : m.startsWith("'") ? "'?'" : '?'))
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 160)
}

export async function longQueriesFinding(run: PgRun, i: LongQueriesInput): Promise<Finding> {
  const r = await run(async (sql) => {
    const rows = await sql<LongBackend>(
      `SELECT a.pid, a.usename, coalesce(a.application_name, '') AS application_name, a.state,
              (extract(epoch FROM now() - least(coalesce(a.xact_start, a.query_start), a.query_start)) * 1000)::float8 AS age_ms,
              coalesce(a.query, '') AS query, a.backend_start::text AS backend_start, coalesce(${CAN_SIGNAL}, false) AS can_signal
         FROM pg_stat_activity a
        WHERE a.datname = $1 AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
          AND ((a.state = 'active' AND a.query_start < now() - $2::interval)
            OR (a.state LIKE 'idle in transaction%' AND a.state_change < now() - $2::interval)
            OR (a.xact_start < now() - $2::interval))
        ORDER BY age_ms DESC LIMIT 100`,
      [i.database, interval(i.thresholdMs)],
    )
    // Sessions of other roles whose state this role may not see (no pg_read_all_stats).
    const [hidden] = await sql<{n: number}>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type IS NULL AND usename IS NOT NULL`,
      [i.database],
    )
    return {rows, hidden: hidden?.n ?? 0}
  })
  if (!r.ok) return {status: 'unknown', summary: `could not read pg_stat_activity: ${r.error.message}`, evidence: {error: r.error.kind}}
  const {rows, hidden} = r.value
  const who = dsnInfo(i.dsn).user
  const hiddenNote = hidden
    ? `; ${hidden} session${hidden === 1 ? '' : 's'} of other roles not visible to ${who} (grant it pg_read_all_stats to see them)`
    : ''
  if (rows.length === 0) {
    return {
      status: 'ok',
      summary: `no query or transaction on ${i.database} older than ${formatMs(i.thresholdMs)}${hiddenNote}`,
      evidence: {threshold: formatMs(i.thresholdMs), hiddenSessions: hidden},
    }
  }
  const evidence = {
    threshold: formatMs(i.thresholdMs),
    backends: rows.slice(0, 20).map((b) => ({
      pid: b.pid,
      user: b.usename,
      app: b.application_name,
      state: b.state,
      age: formatMs(Math.round(b.age_ms)),
      query: maskQueryLiterals(b.query),
      terminable: b.can_signal && b.usename === who,
    })),
    hiddenSessions: hidden,
  }
  const idleTx = rows.filter((b) => b.state.startsWith('idle in transaction')).length
  // Only the service's own sessions are ended automatically: another role's long transaction on
  // the same database (a pg_dump, an operator's psql) is shown, never terminated by surprise.
  const ours = rows.filter((b) => b.can_signal && b.usename === who)
  const others = rows.filter((b) => b.can_signal && b.usename !== who)
  const theirs = rows.filter((b) => !b.can_signal)
  const theirsNote = theirs.length
    ? `; ${theirs.length} belong${theirs.length === 1 ? 's' : ''} to roles ${who} may not signal (${[...new Set(theirs.map((b) => b.usename))].join(', ')}): a superuser can end ${theirs.length === 1 ? 'it' : 'them'}`
    : ''
  const summary =
    `${rows.length} backend${rows.length === 1 ? '' : 's'} on ${i.database} running or holding a transaction longer than ${formatMs(i.thresholdMs)}` +
    `${idleTx ? ` (${idleTx} idle in transaction)` : ''}${theirsNote}${hiddenNote}`
  const pidList = (bs: LongBackend[]) => bs.map((b) => b.pid).join(',')
  const line = (b: LongBackend) => `pid ${b.pid} (${b.usename}, ${b.state}, ${formatMs(Math.round(b.age_ms))})`
  if (ours.length === 0) {
    return {
      status: 'warn',
      summary,
      evidence,
      fix: {
        id: i.terminateFixId,
        title: `Decide about the long-running backend${rows.length === 1 ? '' : 's'} on ${i.database} (not ${who}'s own)`,
        plan: [...rows.map((b) => `if it should go: terminate ${line(b)} as a superuser or a member of its role`)],
        commands: [psql(i.dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (${pidList(rows)});`)],
      },
    }
  }
  // Guard, in the one statement that acts: the same backend (pid and start time) of the
  // service's own role (which this session may always signal), still over the threshold.
  const guardSql =
    `SELECT a.pid, pg_terminate_backend(a.pid) AS terminated FROM pg_stat_activity a ` +
    `JOIN unnest($1::int[], $2::timestamptz[]) AS t(pid, backend_start) ON a.pid = t.pid AND a.backend_start = t.backend_start ` +
    `WHERE a.datname = $3 AND a.usename = $5 AND ((a.state = 'active' AND a.query_start < now() - $4::interval) ` +
    `OR (a.state LIKE 'idle in transaction%' AND a.state_change < now() - $4::interval) OR (a.xact_start < now() - $4::interval))`
  const fix: Fix = {
    id: i.terminateFixId,
    title: `Terminate ${ours.length} long-running backend${ours.length === 1 ? '' : 's'} on ${i.database}`,
    plan: [
      ...ours.map((b) => `terminate ${line(b)} — only if it is the same backend and still over ${formatMs(i.thresholdMs)}`),
      ...others.map((b) => `leave ${line(b)}: not ${who}'s own session — end it by hand if it should go`),
      ...theirs.map((b) => `leave ${line(b)}: ${who} may not terminate it (a superuser can)`),
      `SQL: ${guardSql} -- $1=[${pidList(ours)}] $3=${i.database} $4=${interval(i.thresholdMs)} $5=${who}`,
    ],
    commands: [psql(i.dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (${pidList(ours)});`)],
    confirmText: i.database,
    async apply(signal) {
      const res = await run(
        (sql) => sql<{pid: number; terminated: boolean}>(guardSql, [ours.map((b) => b.pid), ours.map((b) => b.backend_start), i.database, interval(i.thresholdMs), who]),
        signal,
      )
      if (!res.ok) return {ok: false, detail: res.error.message}
      const done = res.value.filter((x) => x.terminated).length
      const left = ours.length - done
      return {ok: true, detail: `terminated ${done} backend${done === 1 ? '' : 's'}${left ? `; ${left} left alone (finished or no longer over the threshold)` : ''}`}
    },
  }
  return {status: 'warn', summary, evidence, fix}
}
