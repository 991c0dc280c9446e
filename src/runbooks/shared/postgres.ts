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
  /** The role the service connects as (not necessarily the DSN's user, which may be an admin's). */
  user: string
  /** Where `user` came from, for the evidence (e.g. "/etc/callfs/config.yaml (metadata_store.dsn)"). */
  userFrom?: string
  terminateFixId: string
  manualFixId: string
  poolHint: string
  warnRatio?: number
  failRatio?: number
}

interface IdleBackend {
  pid: number
  usename: string
  application_name: string
  client_addr: string | null
  idle_ms: number
  /** backend_start in microseconds since 1970, as text (int8): the backend's identity with its pid. */
  started_us: string
  superuser: boolean
  can_signal: boolean
}

interface Usage {
  max: number
  reserved: number
  used: number
  byState: Record<string, number>
  idle: IdleBackend[]
}

/**
 * A client backend in pg_stat_activity, also when the row belongs to another role and this
 * one may not see its details (no pg_read_all_stats): such rows show only pid, database, user
 * and application, with backend_type NULL. Background processes have no database or no user
 * (a hidden parallel worker or logical walsender of another role would count: rare, and high).
 */
const CLIENT_BACKEND = `(backend_type = 'client backend' OR (backend_type IS NULL AND datname IS NOT NULL AND usename IS NOT NULL))`

/** Is backend `a` a superuser's? (An unknown role counts as one: never guessed harmless.) */
const IS_SUPERUSER = `coalesce((SELECT rolsuper FROM pg_roles WHERE oid = a.usesysid), true)`

/**
 * May this session signal backend `a` (pg_terminate_backend raises an ERROR otherwise)? As
 * PostgreSQL decides: a superuser's backend only from a superuser; otherwise the privileges of
 * its role or of pg_signal_backend.
 */
const CAN_SIGNAL =
  `((NOT ${IS_SUPERUSER} OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) ` +
  `AND (pg_has_role(a.usesysid, 'USAGE') OR pg_has_role('pg_signal_backend', 'USAGE')))`

/**
 * What a fix may terminate on its own: a backend that is not a superuser's (a DBA's session is
 * never ended by surprise, whatever role the service uses) and that this session may signal.
 */
const AUTO_TERMINABLE = `NOT ${IS_SUPERUSER} AND (pg_has_role(a.usesysid, 'USAGE') OR pg_has_role('pg_signal_backend', 'USAGE'))`

/**
 * A backend's start time as an exact number (microseconds since 1970), the same in every
 * session: text would be written in the session's DateStyle and TimeZone and may not read back
 * as the same instant ("IST" is India to the writer, Israel to the reader).
 */
const STARTED_US = `(extract(epoch FROM a.backend_start) * 1e6)::int8`

function interval(ms: number): string {
  return `${Math.max(0, Math.round(ms))} milliseconds`
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`

export function terminateIdleFix(run: PgRun, i: ConnectionsInput, pids: IdleBackend[], leftAlone: string[] = []): Fix {
  // Guard: the same backend (pid and start time, against pid reuse), still idle for long enough,
  // still not a superuser's and still one this session may signal.
  const guardSql =
    `SELECT a.pid, pg_terminate_backend(a.pid) AS terminated FROM pg_stat_activity a ` +
    `JOIN unnest($1::int[], $5::int8[]) AS t(pid, started_us) ON a.pid = t.pid AND ${STARTED_US} = t.started_us ` +
    `WHERE a.datname = $2 AND a.usename = $3 AND a.state = 'idle' ` +
    `AND a.state_change < now() - $4::interval AND a.pid <> pg_backend_pid() AND ${AUTO_TERMINABLE}`
  return {
    id: i.terminateFixId,
    title: `Terminate ${plural(pids.length, 'idle connection')} of ${i.user} to ${i.database}`,
    plan: [
      ...pids.map(
        (p) =>
          `terminate pid ${p.pid} (${p.usename}${p.client_addr ? '@' + p.client_addr : ''}, app "${p.application_name}", idle ${formatMs(p.idle_ms)}) — only if it is still idle`,
      ),
      ...leftAlone,
      `SQL: ${guardSql} -- $1=[${pids.map((p) => p.pid).join(',')}] $2=${i.database} $3=${i.user} $4=${interval(i.idleThresholdMs)} $5=[their backend_start, µs since 1970]`,
    ],
    commands: [psql(i.dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (${pids.map((p) => p.pid).join(',')}) AND state = 'idle';`)],
    confirmText: i.database,
    async apply(signal) {
      const r = await run(
        (sql) => sql<{pid: number; terminated: boolean}>(guardSql, [pids.map((p) => p.pid), i.database, i.user, interval(i.idleThresholdMs), pids.map((p) => p.started_us)]),
        signal,
      )
      if (!r.ok) return {ok: false, detail: r.error.message}
      const done = r.value.filter((x) => x.terminated).length
      const left = pids.length - done
      return {ok: true, detail: `terminated ${plural(done, 'idle connection')}${left ? `; ${left} left alone (busy again or gone)` : ''}`}
    },
  }
}

/**
 * Backends in use against max_connections minus the reserved slots (superuser_reserved_connections
 * and reserved_connections), not counting opsctl's own session.
 */
export async function connectionsFinding(run: PgRun, i: ConnectionsInput): Promise<Finding> {
  const warnRatio = i.warnRatio ?? 0.8
  const failRatio = i.failRatio ?? 0.9
  const r = await run(async (sql): Promise<Usage> => {
    const [limits] = await sql<{max: number; reserved: number; used: number}>(
      `SELECT current_setting('max_connections')::int AS max, current_setting('superuser_reserved_connections')::int
                + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved,
              (SELECT count(*)::int FROM pg_stat_activity WHERE ${CLIENT_BACKEND} AND pid <> pg_backend_pid()) AS used`,
    )
    const states = await sql<{state: string | null; n: number}>(
      `SELECT coalesce(state, 'hidden') AS state, count(*)::int AS n FROM pg_stat_activity WHERE ${CLIENT_BACKEND} AND pid <> pg_backend_pid() GROUP BY 1`,
    )
    const idle = await sql<IdleBackend>(
      `SELECT a.pid, a.usename, coalesce(a.application_name, '') AS application_name, host(a.client_addr) AS client_addr,
              (extract(epoch FROM now() - a.state_change) * 1000)::bigint::float8 AS idle_ms,
              ${STARTED_US}::text AS started_us, ${IS_SUPERUSER} AS superuser, coalesce(${CAN_SIGNAL}, false) AS can_signal
         FROM pg_stat_activity a
        WHERE a.datname = $1 AND a.usename = $2 AND a.state = 'idle' AND a.state_change < now() - $3::interval AND a.pid <> pg_backend_pid()
        ORDER BY a.state_change LIMIT 500`,
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
  // Only what is not a superuser's and may be signalled is terminated automatically.
  const candidates = u.idle.filter((b) => !b.superuser && b.can_signal)
  const ofSuperuser = u.idle.filter((b) => b.superuser)
  const unsignalable = u.idle.filter((b) => !b.superuser && !b.can_signal)
  const evidence: Record<string, unknown> = {
    used: u.used,
    usable,
    maxConnections: u.max,
    superuserReserved: u.reserved,
    usedPercent: Math.round(ratio * 1000) / 10,
    byState: u.byState,
    idleCandidates: candidates.length,
    idleThreshold: formatMs(i.idleThresholdMs),
    serviceRole: i.user,
  }
  if (i.userFrom) evidence.serviceRoleFrom = i.userFrom
  if (ofSuperuser.length) evidence.idleOfSuperuser = ofSuperuser.length
  if (unsignalable.length) evidence.idleNotSignalable = unsignalable.length
  const summary = `${u.used} of ${usable} usable connections in use (${evidence.usedPercent}%; max_connections ${u.max}, ${u.reserved} reserved)`
  if (ratio < warnRatio) return {status: 'ok', summary, evidence}
  const login = dsnInfo(i.dsn).user
  const leftAlone = [
    ...(ofSuperuser.length
      ? [`${plural(ofSuperuser.length, 'idle session')} of ${i.user} ${ofSuperuser.length === 1 ? "is a superuser's" : "are a superuser's"}: never terminated automatically — end ${ofSuperuser.length === 1 ? 'it' : 'them'} by hand if ${ofSuperuser.length === 1 ? 'it' : 'they'} should go`]
      : []),
    ...(unsignalable.length
      ? [`${plural(unsignalable.length, 'idle session')} of ${i.user}: ${login} may not terminate ${unsignalable.length === 1 ? 'it' : 'them'} (grant it pg_signal_backend, or end ${unsignalable.length === 1 ? 'it' : 'them'} as ${i.user})`]
      : []),
  ]
  const fix = candidates.length > 0 ? terminateIdleFix(run, i, candidates, leftAlone) : {...manual, plan: [...manual.plan, ...leftAlone]}
  return {status: ratio >= failRatio ? 'fail' : 'warn', summary, evidence, fix}
}

export interface LongQueriesInput {
  dsn: string
  database: string
  thresholdMs: number
  terminateFixId: string
  /** The role the service connects as: only its sessions are ended automatically. Default: the DSN's user. */
  serviceUser?: string
  /** Where `serviceUser` came from, for the evidence. */
  serviceUserFrom?: string
}

interface LongBackend {
  pid: number
  usename: string
  application_name: string
  state: string
  age_ms: number
  query: string
  /** backend_start in microseconds since 1970, as text (int8). */
  started_us: string
  superuser: boolean
  /** This session may terminate it (pg_terminate_backend would raise an error otherwise). */
  can_signal: boolean
}

/**
 * The pieces of a query text as pg_stat_activity shows it (possibly cut off by
 * track_activity_query_size anywhere, so any quoted piece may run to the end of the text).
 */
type Token = {kind: 'space' | 'comment' | 'literal' | 'ident' | 'word' | 'other'; text: string; out: string}

const WORD = /[A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*/y
const NUMBER = /(?:\d|\.\d)(?:[\w.]|(?<=[eE])[+-])*/y
const PARAM = /\$\d+/y
const DOLLAR_TAG = /\$(?:[A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$/y
const SPACE = /\s+/y
const LINE_COMMENT = /--[^\n]*/y
const QUOTED_IDENT = /(?:[uU]&)?"(?:[^"]|"")*(?:"|$)/y
const ESCAPE_STRING = /[eE]'(?:[^'\\]|\\[\s\S]|'')*(?:'|$)/y
/** A '…' string as standard_conforming_strings on reads it (backslash is a plain character) … */
const STRING_SSC_ON = /'(?:[^']|'')*(?:'|$)/y
/** … and as it off reads it (backslash escapes): a session may have either. */
const STRING_SSC_OFF = /'(?:[^'\\]|\\[\s\S]|'')*(?:'|$)/y

function stickyMatch(re: RegExp, text: string, at: number): string | null {
  re.lastIndex = at
  return re.exec(text)?.[0] ?? null
}

function tokenize(q: string): Token[] {
  const tokens: Token[] = []
  let i = 0
  const push = (kind: Token['kind'], text: string, out = text) => {
    tokens.push({kind, text, out})
    i += text.length
  }
  while (i < q.length) {
    const c = q[i] ?? ''
    const next = q[i + 1] ?? ''
    let m: string | null
    if ((m = stickyMatch(SPACE, q, i))) push('space', m)
    else if (c === '-' && next === '-') push('comment', stickyMatch(LINE_COMMENT, q, i) ?? '--', '/*…*/')
    else if (c === '/' && next === '*') {
      // Block comments nest in PostgreSQL; one cut off runs to the end.
      let depth = 0
      let j = i
      while (j < q.length) {
        if (q.startsWith('/*', j)) {
          depth++
          j += 2
        } else if (q.startsWith('*/', j)) {
          depth--
          j += 2
          if (depth === 0) break
        } else j++
      }
      push('comment', q.slice(i, j), '/*…*/')
    } else if ((c === 'e' || c === 'E') && next === "'") push('literal', stickyMatch(ESCAPE_STRING, q, i) ?? q.slice(i), "E'?'")
    else if (c === "'") {
      const on = stickyMatch(STRING_SSC_ON, q, i) ?? q.slice(i)
      const off = stickyMatch(STRING_SSC_OFF, q, i) ?? q.slice(i)
      // Where the two readings end the string differently, what follows may be either data or
      // SQL: hide all of it.
      push('literal', on.length === off.length ? on : q.slice(i), "'?'")
    } else if ((m = stickyMatch(QUOTED_IDENT, q, i))) push('ident', m)
    else if ((m = stickyMatch(PARAM, q, i))) push('other', m)
    else if ((m = stickyMatch(DOLLAR_TAG, q, i))) {
      const close = q.indexOf(m, i + m.length)
      push('literal', close < 0 ? q.slice(i) : q.slice(i, close + m.length), '$?$')
    } else if ((m = stickyMatch(WORD, q, i))) push('word', m)
    else if ((m = stickyMatch(NUMBER, q, i))) push('literal', m, '?')
    else push('other', c)
  }
  return tokens
}

/**
 * The value of a configuration setting in a SET statement (`SET [SESSION|LOCAL] name = | TO
 * value`, also `ALTER ROLE|DATABASE|SYSTEM … SET name = | TO value`): from the token after
 * `=`/`TO` to the end of the statement; null when the statement sets nothing like that.
 */
function setValueSpan(tokens: Token[], afterSet: number, statement: 'set' | 'alter'): {from: number; to: number} | null {
  const sig = (k: number): number => {
    while (k < tokens.length && (tokens[k]?.kind === 'space' || tokens[k]?.kind === 'comment')) k++
    return k
  }
  const isWord = (k: number, ...words: string[]) => tokens[k]?.kind === 'word' && words.includes(tokens[k]?.text.toUpperCase() ?? '')
  const isName = (k: number) => tokens[k]?.kind === 'word' || tokens[k]?.kind === 'ident'
  const isAssign = (k: number) => (tokens[k]?.kind === 'other' && tokens[k]?.text === '=') || isWord(k, 'TO')
  let k = sig(afterSet)
  if (statement === 'set' && isWord(k, 'SESSION', 'LOCAL')) {
    const after = sig(k + 1)
    if (isName(after) && !isWord(after, 'TO')) k = after
  }
  if (!isName(k)) return null
  k = sig(k + 1)
  while (tokens[k]?.kind === 'other' && tokens[k]?.text === '.') {
    const part = sig(k + 1)
    if (!isName(part)) return null
    k = sig(part + 1)
  }
  if (!isAssign(k)) return null
  let end = k + 1
  while (end < tokens.length && !(tokens[end]?.kind === 'other' && tokens[end]?.text === ';')) end++
  return {from: k + 1, to: end}
}

/**
 * Mask what may be data or a secret in a query text shown as evidence: string, escape-string,
 * dollar-quoted and numeric literals; comments (they may carry anything); and the value a SET
 * statement gives a setting (`SET app.token = secret` needs no quotes). Identifiers, keywords
 * and $n parameters stay.
 */
export function maskQueryLiterals(q: string): string {
  const tokens = tokenize(q)
  let statement: 'set' | 'alter' | 'other' | null = null
  for (let k = 0; k < tokens.length; k++) {
    const t = tokens[k] as Token
    if (t.kind === 'space' || t.kind === 'comment') continue
    if (t.kind === 'other' && t.text === ';') {
      statement = null
      continue
    }
    const isSet = t.kind === 'word' && t.text.toUpperCase() === 'SET'
    if (statement === null) statement = isSet ? 'set' : t.kind === 'word' && t.text.toUpperCase() === 'ALTER' ? 'alter' : 'other'
    else if (!(statement === 'alter' && isSet)) continue
    if (!isSet) continue
    const span = setValueSpan(tokens, k + 1, statement === 'set' ? 'set' : 'alter')
    if (!span) continue
    for (let j = span.from; j < span.to; j++) (tokens[j] as Token).out = j === span.from ? ' ?' : ''
    k = span.to - 1
  }
  return tokens
    .map((t) => t.out)
    .join('')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 160)
}

export async function longQueriesFinding(run: PgRun, i: LongQueriesInput): Promise<Finding> {
  const r = await run(async (sql) => {
    const rows = await sql<LongBackend>(
      `SELECT a.pid, a.usename, coalesce(a.application_name, '') AS application_name, a.state,
              (extract(epoch FROM now() - least(coalesce(a.xact_start, a.query_start), a.query_start)) * 1000)::float8 AS age_ms,
              coalesce(a.query, '') AS query, ${STARTED_US}::text AS started_us, ${IS_SUPERUSER} AS superuser,
              coalesce(${CAN_SIGNAL}, false) AS can_signal
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
  /** opsctl's own role: what it may see and signal. */
  const login = dsnInfo(i.dsn).user
  /** The service's role: only its sessions are ended automatically. */
  const service = i.serviceUser ?? login
  const roleEvidence: Record<string, unknown> = {serviceRole: service, ...(i.serviceUserFrom ? {serviceRoleFrom: i.serviceUserFrom} : {})}
  const hiddenNote = hidden
    ? `; ${plural(hidden, 'session')} of other roles not visible to ${login} (grant it pg_read_all_stats to see them)`
    : ''
  if (rows.length === 0) {
    return {
      status: 'ok',
      summary: `no query or transaction on ${i.database} older than ${formatMs(i.thresholdMs)}${hiddenNote}`,
      evidence: {threshold: formatMs(i.thresholdMs), hiddenSessions: hidden, ...roleEvidence},
    }
  }
  // Only the service's own sessions are ended automatically, and never a superuser's: another
  // role's long transaction (a pg_dump, an operator's psql) is shown, never terminated by surprise.
  const isOurs = (b: LongBackend) => b.can_signal && !b.superuser && b.usename === service
  const evidence = {
    threshold: formatMs(i.thresholdMs),
    backends: rows.slice(0, 20).map((b) => ({
      pid: b.pid,
      user: b.usename,
      app: b.application_name,
      state: b.state,
      age: formatMs(Math.round(b.age_ms)),
      query: maskQueryLiterals(b.query),
      terminable: isOurs(b),
    })),
    hiddenSessions: hidden,
    ...roleEvidence,
  }
  const idleTx = rows.filter((b) => b.state.startsWith('idle in transaction')).length
  const ours = rows.filter(isOurs)
  const serviceSuper = rows.filter((b) => b.usename === service && b.superuser && b.can_signal)
  const others = rows.filter((b) => b.can_signal && b.usename !== service)
  const theirs = rows.filter((b) => !b.can_signal)
  const theirsNote = theirs.length
    ? `; ${theirs.length} belong${theirs.length === 1 ? 's' : ''} to roles ${login} may not signal (${[...new Set(theirs.map((b) => b.usename))].join(', ')}): a superuser can end ${theirs.length === 1 ? 'it' : 'them'}`
    : ''
  const summary =
    `${plural(rows.length, 'backend')} on ${i.database} running or holding a transaction longer than ${formatMs(i.thresholdMs)}` +
    `${idleTx ? ` (${idleTx} idle in transaction)` : ''}${theirsNote}${hiddenNote}`
  const pidList = (bs: LongBackend[]) => bs.map((b) => b.pid).join(',')
  const line = (b: LongBackend) => `pid ${b.pid} (${b.usename}, ${b.state}, ${formatMs(Math.round(b.age_ms))})`
  const superLine = (b: LongBackend) => `leave ${line(b)}: a superuser's session — never ended automatically; end it by hand if it should go`
  if (ours.length === 0) {
    return {
      status: 'warn',
      summary,
      evidence,
      fix: {
        id: i.terminateFixId,
        title: `Decide about the long-running backend${rows.length === 1 ? '' : 's'} on ${i.database}${serviceSuper.length ? '' : ` (not ${service}'s own)`}`,
        plan: rows.map((b) => (serviceSuper.includes(b) ? superLine(b) : `if it should go: terminate ${line(b)} as a superuser or a member of its role`)),
        commands: [psql(i.dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (${pidList(rows)});`)],
      },
    }
  }
  // Guard, in the one statement that acts: the same backend (pid and start time) of the
  // service's own role, not a superuser's, one this session may signal, still over the threshold.
  const guardSql =
    `SELECT a.pid, pg_terminate_backend(a.pid) AS terminated FROM pg_stat_activity a ` +
    `JOIN unnest($1::int[], $2::int8[]) AS t(pid, started_us) ON a.pid = t.pid AND ${STARTED_US} = t.started_us ` +
    `WHERE a.datname = $3 AND a.usename = $5 AND ${AUTO_TERMINABLE} AND ((a.state = 'active' AND a.query_start < now() - $4::interval) ` +
    `OR (a.state LIKE 'idle in transaction%' AND a.state_change < now() - $4::interval) OR (a.xact_start < now() - $4::interval))`
  const fix: Fix = {
    id: i.terminateFixId,
    title: `Terminate ${plural(ours.length, 'long-running backend')} on ${i.database}`,
    plan: [
      ...ours.map((b) => `terminate ${line(b)} — only if it is the same backend and still over ${formatMs(i.thresholdMs)}`),
      ...serviceSuper.map(superLine),
      ...others.map((b) => `leave ${line(b)}: not ${service}'s own session — end it by hand if it should go`),
      ...theirs.map((b) => `leave ${line(b)}: ${login} may not terminate it (a superuser can)`),
      `SQL: ${guardSql} -- $1=[${pidList(ours)}] $3=${i.database} $4=${interval(i.thresholdMs)} $5=${service}`,
    ],
    commands: [psql(i.dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (${pidList(ours)});`)],
    confirmText: i.database,
    async apply(signal) {
      const res = await run(
        (sql) => sql<{pid: number; terminated: boolean}>(guardSql, [ours.map((b) => b.pid), ours.map((b) => b.started_us), i.database, interval(i.thresholdMs), service]),
        signal,
      )
      if (!res.ok) return {ok: false, detail: res.error.message}
      const done = res.value.filter((x) => x.terminated).length
      const left = ours.length - done
      return {ok: true, detail: `terminated ${plural(done, 'backend')}${left ? `; ${left} left alone (finished or no longer over the threshold)` : ''}`}
    },
  }
  return {status: 'warn', summary, evidence, fix}
}
