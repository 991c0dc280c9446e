import {dsnInfo, maskDsn} from '../../diagnostics/postgres.js'
import type {CheckSpec} from '../../engine/types.js'
import {connectionsFinding, longQueriesFinding, reachableFinding, type PgRun} from '../shared/postgres.js'
import {getPath, type CallfsContext} from './context.js'

/** The newest golang-migrate version CallFS ships (001–003; 003 replaces uid/gid with owner). */
export const LATEST_MIGRATION = 3

const run = (ctx: CallfsContext): PgRun => (fn, signal) => ctx.pg(fn, {signal})

/**
 * The DSN for golang-migrate, as opsctl connected: the password masked, shown as `****` also
 * when it comes from the environment (so the command says one is needed), and sslmode=disable
 * (opsctl's default; lib/pq's is require) unless the DSN already names an sslmode.
 */
export function migrateDsn(dsn: string, passwordFromEnv: boolean): string {
  let u: URL
  try {
    u = new URL(dsn)
  } catch {
    return maskDsn(dsn)
  }
  let text = dsn
  // The user's own text, not URL's re-serialisation: only the userinfo and the query change.
  if (passwordFromEnv && u.username !== '' && u.password === '') text = text.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@:]+)@/i, '$1:****@')
  if (!u.searchParams.has('sslmode')) text += `${text.includes('?') ? '&' : '?'}sslmode=disable`
  return maskDsn(text)
}

/**
 * The user a PostgreSQL DSN names, as lib/pq reads it: postgres://user@… (or ?user=), or
 * key=value with user=…; null when it names none (lib/pq would then take the OS user CallFS runs
 * as, which opsctl cannot know from here).
 */
export function dsnUser(dsn: string): string | null {
  if (/^postgres(?:ql)?:\/\//i.test(dsn)) {
    try {
      const u = new URL(dsn)
      return decodeURIComponent(u.username) || u.searchParams.get('user') || null
    } catch {
      return null
    }
  }
  const m = /(?:^|\s)user\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']+)/.exec(dsn)
  if (!m?.[1]) return null
  return m[1].startsWith("'") ? m[1].slice(1, -1).replace(/\\(.)/g, '$1') : m[1]
}

/**
 * The role CallFS connects as — whose sessions are "the service's own", the only ones a fix
 * terminates: the user of metadata_store.dsn in CallFS's own config when it is readable, else
 * the user of opsctl's DSN (which may be an admin's: then the fixes still never end a
 * superuser's session).
 */
export async function serviceRole(ctx: CallfsContext): Promise<{user: string; from: string}> {
  const cfg = await ctx.callfsConfig()
  if (cfg.state === 'parsed') {
    const dsn = getPath(cfg.value, ['metadata_store', 'dsn'])
    const user = typeof dsn === 'string' ? dsnUser(dsn) : null
    if (user) return {user, from: `${cfg.path} (metadata_store.dsn)`}
  }
  return {user: dsnInfo(ctx.target.postgres).user, from: 'the opsctl DSN'}
}

export const dbReachable: CheckSpec<CallfsContext> = {
  id: 'callfs.db.reachable',
  title: 'PostgreSQL accepts connections',
  severity: 'critical',
  docs: 'Database Connection Issues',
  remediations: [{id: 'callfs.db.restore-connection', title: 'Restore the database connection', automated: false}],
  run: (ctx) => reachableFinding(run(ctx), {dsn: ctx.target.postgres, reachableFixId: 'callfs.db.restore-connection'}),
}

export const dbConnections: CheckSpec<CallfsContext> = {
  id: 'callfs.db.connections',
  title: 'PostgreSQL has free connection slots',
  severity: 'high',
  docs: 'Database Connection Issues > Common Causes and Solutions > Connection Pool Exhausted',
  remediations: [
    {id: 'callfs.db.terminate-idle', title: 'Terminate idle CallFS connections', automated: true, risk: 'destructive'},
    {id: 'callfs.db.free-slots', title: 'Free connection slots', automated: false},
  ],
  async run(ctx) {
    const info = dsnInfo(ctx.target.postgres)
    const role = await serviceRole(ctx)
    return connectionsFinding(run(ctx), {
      dsn: ctx.target.postgres,
      database: info.database,
      user: role.user,
      userFrom: role.from,
      idleThresholdMs: ctx.target.thresholds.idle_connection,
      terminateFixId: 'callfs.db.terminate-idle',
      manualFixId: 'callfs.db.free-slots',
      poolHint: `lower metadata_store.max_open_conns / max_idle_conns and set conn_max_lifetime in ${ctx.target.config_file}`,
    })
  },
}

export const dbMigrations: CheckSpec<CallfsContext> = {
  id: 'callfs.db.migrations',
  title: 'The CallFS schema is migrated and clean',
  severity: 'high',
  docs: 'Database Connection Issues > Common Causes and Solutions > Database Migration Issues',
  remediations: [{id: 'callfs.db.migrate', title: 'Repair the schema migrations', automated: false}],
  async run(ctx) {
    const dsn = migrateDsn(ctx.target.postgres, ctx.postgresPassword() !== undefined)
    const migrate = (cmd: string) => `migrate -database "${dsn}" -path metadata/schema ${cmd}`
    const passwordNote = dsn.includes(':****@') ? [`in the commands, **** stands for the password (URL-encoded) in $${ctx.target.postgres_password_env ?? 'PGPASSWORD'}`] : []
    const r = await ctx.pg((sql) => sql<{version: string; dirty: boolean}>('SELECT version::text AS version, dirty FROM schema_migrations'))
    if (!r.ok) {
      if (r.error.kind === 'not-found' && r.error.code === '42P01') {
        return {
          status: 'fail',
          summary: 'table schema_migrations does not exist: the CallFS migrations never ran against this database',
          evidence: {code: r.error.code},
          fix: {id: 'callfs.db.migrate', title: 'Apply the CallFS migrations', plan: ['run the migrations up to the latest version', ...passwordNote], commands: [migrate('version'), migrate('up')]},
        }
      }
      return {status: 'unknown', summary: `could not read schema_migrations: ${r.error.message}`, evidence: {error: r.error.kind, code: r.error.code ?? null}}
    }
    const row = r.value[0]
    if (!row) {
      return {
        status: 'fail',
        summary: 'schema_migrations is empty: no migration was recorded',
        fix: {id: 'callfs.db.migrate', title: 'Apply the CallFS migrations', plan: ['run the migrations up', ...passwordNote], commands: [migrate('up')]},
      }
    }
    const version = Number(row.version)
    const evidence = {version, dirty: row.dirty, latest: LATEST_MIGRATION}
    if (row.dirty) {
      // The version before it; golang-migrate's -1 is "no migration applied" (there is no version 0 to go up from).
      const before = version <= 1 ? -1 : version - 1
      return {
        status: 'fail',
        summary: `migration ${version} is dirty: it failed half-way and CallFS will not start on this schema`,
        evidence,
        fix: {
          id: 'callfs.db.migrate',
          title: 'Repair the dirty migration',
          plan: [
            `inspect what migration ${version} changed and finish or undo it by hand`,
            `then mark the schema clean at the version it really is (${version} if it completed, ${before === -1 ? '-1 — no migration applied —' : before} if not), and migrate up`,
            ...passwordNote,
          ],
          commands: [migrate('version'), migrate(`force ${before}`), migrate('up')],
        },
      }
    }
    if (version < LATEST_MIGRATION) {
      return {
        status: 'warn',
        summary: `schema is at migration ${version}; CallFS ships ${LATEST_MIGRATION}`,
        evidence,
        fix: {id: 'callfs.db.migrate', title: 'Apply the missing migrations', plan: [`migrate up from ${version} to ${LATEST_MIGRATION}`, ...passwordNote], commands: [migrate('up')]},
      }
    }
    return {status: 'ok', summary: `schema at migration ${version}, clean`, evidence}
  },
}

export const dbLongQueries: CheckSpec<CallfsContext> = {
  id: 'callfs.db.long-queries',
  title: 'No long-running queries or open transactions',
  severity: 'medium',
  docs: 'Advanced Debugging Techniques > Database Query Analysis > Connection Pool Monitoring (long-running transactions)',
  remediations: [{id: 'callfs.db.terminate-long', title: 'Terminate the long-running backends', automated: true, risk: 'destructive'}],
  async run(ctx) {
    const role = await serviceRole(ctx)
    return longQueriesFinding(run(ctx), {
      dsn: ctx.target.postgres,
      database: dsnInfo(ctx.target.postgres).database,
      thresholdMs: ctx.target.thresholds.long_query,
      terminateFixId: 'callfs.db.terminate-long',
      serviceUser: role.user,
      serviceUserFrom: role.from,
    })
  },
}
