// The CallFS PostgreSQL checks against real, throwaway PostgreSQL servers: real refused ports,
// real SCRAM passwords, real exhausted connection slots, real idle and idle-in-transaction
// backends, a real SIGSTOPped postmaster — and the destructive fixes applied, verified and
// audited, with their guards proven against backends that changed between diagnosis and fix.

import {execFile} from 'node:child_process'
import {resolve} from 'node:path'
import {promisify} from 'node:util'

import pg from 'pg'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import type {TargetRun} from '../../../src/engine/runner.js'
import type {CheckReport} from '../../../src/engine/types.js'
import {maskQueryLiterals} from '../../../src/runbooks/shared/postgres.js'
import {startCallfsWorld, type CallfsWorld} from '../../support/callfs-world.js'
import {startPostgres, type TestPostgres} from '../../support/postgres.js'
import {freePort, sleep} from '../../support/ports.js'

// The walk's service checks call systemctl/journalctl: the fakes ("not booted"), never the host's.
process.env.PATH = `${resolve(import.meta.dirname, '../../support/fakebin')}:${process.env.PATH ?? ''}`
delete process.env.OPSCTL_FAKE_SYSTEMD_DIR

const execFileP = promisify(execFile)

// max_connections 13 with 3 reserved for superusers: 10 usable slots, so 8 in use is 80 %, 9 is 90 %.
const MAX_CONNECTIONS = 13
const USABLE = 10

let w: CallfsWorld
let scram: TestPostgres
const PG_PASSWORD = 'Callfs-Pg-Pass-7f3a9c'

beforeAll(async () => {
  ;[w, scram] = await Promise.all([
    startCallfsWorld({pg: {maxConnections: MAX_CONNECTIONS, settings: {superuser_reserved_connections: '3'}}, sim: false}),
    startPostgres({auth: 'scram-sha-256'}),
  ])
  await scram.createRole('callfs', {password: PG_PASSWORD})
  await scram.createDatabase('callfs', 'callfs')
  await scram.query('CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)', [], 'callfs')
  await scram.query('INSERT INTO schema_migrations VALUES (3, true)', [], 'callfs')
  await scram.query('ALTER TABLE schema_migrations OWNER TO callfs', [], 'callfs')
})
afterAll(async () => {
  await Promise.allSettled([w?.stop(), scram?.stop()])
})

// ---- helpers ----------------------------------------------------------------------------------

interface Held {
  client: pg.Client
  pid: number
}

const opened: Array<{held: Held; server: TestPostgres}> = []

/** One real client session, as `user` to `db`, announcing `app`; closed after the test. */
async function connect(o: {user?: string; db?: string; app?: string; password?: string; server?: TestPostgres} = {}): Promise<Held> {
  const server = o.server ?? (w.pg as TestPostgres)
  const client = new pg.Client({
    host: '127.0.0.1',
    port: server.port,
    user: o.user ?? 'callfs',
    database: o.db ?? 'callfs',
    password: o.password,
    application_name: o.app ?? 'callfs',
    connectionTimeoutMillis: 3000,
  })
  client.on('error', () => {}) // terminated on purpose by the fixes under test
  await client.connect()
  const pid = (await client.query<{pid: number}>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid ?? 0
  const held = {client, pid}
  opened.push({held, server})
  return held
}

const hold = (n: number, o: Parameters<typeof connect>[0] = {}): Promise<Held[]> => Promise.all(Array.from({length: n}, () => connect(o)))

/** Which of `pids` still have a backend. */
async function alive(pids: number[], server: TestPostgres = w.pg as TestPostgres): Promise<number[]> {
  const rows = await server.query<{pid: number}>('SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[]) ORDER BY pid', [pids])
  return rows.map((r) => r.pid)
}

/** End every session a test opened, and wait until the server no longer counts them. */
afterEach(async () => {
  const all = opened.splice(0)
  for (const server of new Set(all.map((o) => o.server))) {
    const pids = all.filter((o) => o.server === server).map((o) => o.held.pid)
    await server.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY($1::int[])', [pids]).catch(() => {})
    await Promise.all(all.filter((o) => o.server === server).map((o) => o.held.client.end().catch(() => {})))
    const deadline = Date.now() + 3000
    while (Date.now() < deadline && (await alive(pids, server).catch(() => [])).length > 0) await sleep(20)
  }
})

/**
 * A one-check run of the target, as `walkTarget` makes them: the report, the fix its finding
 * carries, and the re-check on a fresh context. (A full walk runs the other PostgreSQL checks
 * concurrently, and their own sessions would move the connection counts under test.)
 */
async function oneCheck(id: string, overrides: Record<string, unknown> = {}, settings: Record<string, unknown> = {}): Promise<TargetRun & {check: CheckReport}> {
  const {fix, ...check} = await w.check(id, overrides, settings)
  const target = w.target(overrides).name
  return {
    system: 'callfs',
    target,
    check,
    report: {system: 'callfs', target, status: check.status, durationMs: check.durationMs, path: [id], checks: [check]},
    fixes: new Map(fix ? [[id, fix]] : []),
    recheck: async (checkId) => {
      const {fix: _fix, ...report} = await w.check(checkId, overrides, settings)
      return report
    },
  }
}



const pgPort = () => (w.pg as TestPostgres).port
const superuser = (sql: string, params: unknown[] = []) => (w.pg as TestPostgres).query(sql, params, 'callfs')

// ---- callfs.db.reachable ----------------------------------------------------------------------

describe('callfs.db.reachable', () => {
  it('ok: PostgreSQL answers as callfs, with its version', async () => {
    const r = await w.check('callfs.db.reachable')
    expect(r.status).toBe('ok')
    const [{version}] = (await superuser("SELECT current_setting('server_version') AS version")) as [{version: string}]
    expect(r.summary).toBe(`PostgreSQL ${version} answers at 127.0.0.1:${pgPort()}/callfs as callfs`)
    expect(r.evidence).toEqual({dsn: `postgres://callfs@127.0.0.1:${pgPort()}/callfs`, serverVersion: version, inRecovery: false})
    expect(r.remediation).toBeNull()
  })

  it('fail: a closed port is refused, and the manual fix says to start PostgreSQL there', async () => {
    const port = await freePort()
    const r = await w.check('callfs.db.reachable', {postgres: `postgres://callfs@127.0.0.1:${port}/callfs`})
    expect(r.status).toBe('fail')
    expect(r.evidence).toMatchObject({error: 'refused', code: 'ECONNREFUSED'})
    expect(r.summary).toContain(`cannot connect to PostgreSQL at 127.0.0.1:${port}/callfs as callfs`)
    expect(r.remediation).toMatchObject({id: 'callfs.db.restore-connection', automated: false, risk: null})
    expect(r.remediation?.plan).toEqual([`start PostgreSQL on 127.0.0.1:${port}, or correct the DSN`])
    expect(r.remediation?.commands).toContain(`pg_isready -h 127.0.0.1 -p ${port} -d callfs`)
    // pasted into a shell, the diagnostic commands say the same: nothing listens there
    const isready = await execFileP('sh', ['-c', r.remediation?.commands[0] ?? 'false']).catch((e: {code?: number; stdout?: string}) => e)
    expect(isready).toMatchObject({code: 2, stdout: expect.stringContaining('no response')})
  })

  it('fail: CONNECT revoked from callfs — CallFS, connecting with the same DSN, cannot either', async () => {
    await superuser('REVOKE CONNECT ON DATABASE callfs FROM PUBLIC, callfs') // callfs owns it: revoke the owner's grant too
    try {
      const r = await w.check('callfs.db.reachable')
      expect(r.status).toBe('fail')
      expect(r.evidence).toMatchObject({error: 'permission', code: '42501'})
      expect(r.remediation?.plan).toEqual(['GRANT CONNECT ON DATABASE callfs TO callfs (and check pg_hba.conf)'])
    } finally {
      await superuser('GRANT CONNECT ON DATABASE callfs TO PUBLIC, callfs')
    }
  })

  it('ok with the SCRAM password from postgres_password_env; the password appears nowhere in the report', async () => {
    const overrides = {postgres: scram.dsn('callfs', 'callfs'), postgres_password_env: 'CALLFS_PG_PASSWORD'}
    const r = await w.check('callfs.db.reachable', overrides, {env: {...w.env, CALLFS_PG_PASSWORD: PG_PASSWORD}})
    expect(r.status).toBe('ok')
    expect(r.summary).toContain(`answers at 127.0.0.1:${scram.port}/callfs as callfs`)
    expect(JSON.stringify(r)).not.toContain(PG_PASSWORD)
  })

  it('fail (auth) with a wrong password, and with none; neither password appears in the report', async () => {
    const wrong = 'Not-The-Password-2b81'
    const overrides = {postgres: scram.dsn('callfs', 'callfs'), postgres_password_env: 'CALLFS_PG_PASSWORD'}
    const bad = await w.check('callfs.db.reachable', overrides, {env: {...w.env, CALLFS_PG_PASSWORD: wrong}})
    expect(bad.status).toBe('fail')
    expect(bad.evidence).toMatchObject({error: 'auth', code: '28P01'})
    expect(bad.summary).toMatch(/password authentication failed for user "callfs"/)
    expect(bad.remediation?.plan[0]).toMatch(/check that role callfs exists and may log in, its password/)
    expect(JSON.stringify(bad)).not.toContain(wrong)
    expect(JSON.stringify(bad)).not.toContain(PG_PASSWORD)

    const none = await w.check('callfs.db.reachable', overrides, {env: {...w.env}})
    expect(none.status).toBe('fail')
    expect(none.evidence.error).toBe('auth')
    expect(none.summary).toMatch(/asks for a password for user "callfs" but none is set/)
  })

  it('fail: the database does not exist → create it, or correct the DSN', async () => {
    const r = await w.check('callfs.db.reachable', {postgres: `postgres://callfs@127.0.0.1:${pgPort()}/nosuchdb`})
    expect(r.status).toBe('fail')
    expect(r.evidence).toMatchObject({error: 'not-found', code: '3D000'})
    expect(r.summary).toMatch(/database "nosuchdb" does not exist/)
    expect(r.remediation?.plan).toEqual(['create the database nosuchdb, or correct the DSN'])
  })

  it('fail: every slot taken (max_connections) → reason too-many-connections, and the walk goes on to callfs.db.connections', async () => {
    await hold(USABLE) // every slot a non-superuser may take
    const run = await w.walk()
    const by = Object.fromEntries(run.report.checks.map((c) => [c.id, c]))
    const reach = by['callfs.db.reachable']
    expect(reach?.status).toBe('fail')
    expect(reach?.evidence).toMatchObject({error: 'capacity', code: '53300', reason: 'too-many-connections'})
    expect(reach?.summary).toMatch(/no free connection slots \(max_connections reached\)/)
    expect(reach?.remediation?.plan[0]).toMatch(/^free connection slots/)

    // The "too many clients" branch: only the connection check runs, and it cannot connect either.
    expect(run.report.path).toContain('callfs.db.connections')
    const conn = by['callfs.db.connections']
    expect(conn?.status).toBe('fail')
    expect(conn?.summary).toBe('PostgreSQL refuses new connections: every slot is taken (max_connections reached)')
    expect(conn?.evidence).toMatchObject({code: '53300', reason: 'too-many-connections'})
    expect(conn?.remediation).toMatchObject({id: 'callfs.db.free-slots', automated: false, risk: null})
    expect(conn?.remediation?.plan[0]).toContain(w.configFile)
    expect(by['callfs.db.migrations']?.status).toBe('skipped')
    expect(by['callfs.db.long-queries']?.status).toBe('skipped')
    expect(run.fixes.get('callfs.db.connections')?.apply).toBeUndefined()
  })
})

// ---- callfs.db.connections --------------------------------------------------------------------

describe('callfs.db.connections', () => {
  const idleSoon = {thresholds: {idle_connection: '300ms'}}

  it('ok below 80 %: opsctl\'s own session is not counted (it would not be there without opsctl)', async () => {
    const r = await w.check('callfs.db.connections')
    expect(r.status).toBe('ok')
    expect(r.evidence).toMatchObject({used: 0, usable: USABLE, maxConnections: MAX_CONNECTIONS, superuserReserved: 3, usedPercent: 0, idleCandidates: 0})
    expect(r.summary).toBe(`0 of ${USABLE} usable connections in use (0%; max_connections ${MAX_CONNECTIONS}, 3 reserved)`)
    await hold(1)
    const one = await w.check('callfs.db.connections')
    expect(one.evidence).toMatchObject({used: 1, usable: USABLE, usedPercent: 10, byState: {idle: 1}})
  })

  it('ok at 70 %, warn at 80 % (no idle candidates yet: the manual fix)', async () => {
    await hold(7)
    const seventy = await w.check('callfs.db.connections')
    expect(seventy.status).toBe('ok')
    expect(seventy.evidence.usedPercent).toBe(70)

    await hold(1)
    const r = await w.check('callfs.db.connections')
    expect(r.status).toBe('warn')
    expect(r.evidence).toMatchObject({used: 8, usedPercent: 80, idleCandidates: 0, idleThreshold: '600s'})
    expect(r.evidence.byState).toEqual({idle: 8})
    expect(r.remediation).toMatchObject({id: 'callfs.db.free-slots', automated: false})
    // The manual fix's commands are real: pasted into a shell they run and show the sessions.
    for (const cmd of r.remediation?.commands ?? []) {
      const {stdout} = await execFileP('sh', ['-c', cmd], {env: {PATH: process.env.PATH ?? ''}})
      expect(stdout).toMatch(/\bidle\b/)
    }
  })

  it('counts the sessions of other roles too, though callfs may not see their state', async () => {
    await hold(9, {user: 'postgres', app: 'other-app'})
    const r = await w.check('callfs.db.connections', idleSoon)
    expect(r.status).toBe('fail')
    expect(r.evidence).toMatchObject({used: 9, usedPercent: 90, byState: {hidden: 9}, idleCandidates: 0})
    // None of them is CallFS's to terminate: the manual fix.
    expect(r.remediation).toMatchObject({id: 'callfs.db.free-slots', automated: false})
  })

  it('fail at 90 %, and the destructive fix terminates exactly the idle CallFS sessions: applied, verified, audited', async () => {
    const callfs = await hold(7, {app: 'callfs'})
    const dba = await connect({user: 'postgres', app: 'psql'}) // idle too, but not CallFS's: never a candidate
    const dba2 = await connect({user: 'postgres', app: 'psql'})
    await sleep(450)
    const run = await oneCheck('callfs.db.connections', idleSoon)
    expect(run.check.status).toBe('fail')
    expect(run.check.evidence).toMatchObject({used: 9, usedPercent: 90, idleCandidates: 7, idleThreshold: '300ms', byState: {idle: 7, hidden: 2}})
    expect(run.check.remediation).toMatchObject({id: 'callfs.db.terminate-idle', automated: true, risk: 'destructive'})
    const pids = callfs.map((h) => h.pid).sort((a, b) => a - b)
    const planned = (run.check.remediation?.plan ?? []).flatMap((l) => [...l.matchAll(/^terminate pid (\d+) \(callfs@127\.0\.0\.1, app "callfs"/g)].map((m) => Number(m[1])))
    expect(planned.sort((a, b) => a - b)).toEqual(pids)
    const sqlLine = run.check.remediation?.plan.at(-1) ?? ''
    expect(sqlLine).toMatch(/^SQL: SELECT a\.pid, pg_terminate_backend\(a\.pid\) .* AND \(extract\(epoch FROM a\.backend_start\) \* 1e6\)::int8 = t\.started_us .* AND a\.state = 'idle' /)
    const param = /\$1=\[([\d,]+)\] \$2=callfs \$3=callfs \$4=300 milliseconds \$5=\[their backend_start, µs since 1970\]$/.exec(sqlLine)
    expect(param?.[1]?.split(',').map(Number).sort((a, b) => a - b)).toEqual(pids)
    expect(run.fixes.get('callfs.db.connections')?.confirmText).toBe('callfs')

    const audit = await w.applyYes(run)
    expect(await alive(pids)).toEqual([])
    expect(await alive([dba.pid, dba2.pid])).toEqual([dba.pid, dba2.pid].sort((a, b) => a - b))
    expect(run.check.outcome).toMatchObject({decision: 'applied', ok: true, verified: true})
    expect(run.check.outcome?.detail).toBe('terminated 7 idle connections; re-check: ok')
    expect(audit).toHaveLength(1)
    expect(audit[0]).toMatchObject({system: 'callfs', check: 'callfs.db.connections', remediation: 'callfs.db.terminate-idle', decision: 'applied', verified: true})
    expect(audit[0]?.result).toEqual({ok: true, detail: 'terminated 7 idle connections; re-check: ok'})
    for (const pid of pids) expect(audit[0]?.plan.some((l) => l.startsWith(`terminate pid ${pid} `))).toBe(true)
    expect(audit[0]?.plan).toEqual(run.check.remediation?.plan)
  })

  it('guard: a session that became active or idle in transaction after the diagnosis is not terminated', async () => {
    const held = await hold(9, {app: 'callfs'})
    await sleep(450)
    const run = await oneCheck('callfs.db.connections', idleSoon)
    expect(run.check.status).toBe('fail')
    expect(run.check.evidence.idleCandidates).toBe(9)

    const [busy, inTx, ...rest] = held as [Held, Held, ...Held[]]
    const sleeping = busy.client.query('SELECT pg_sleep(5)').catch(() => undefined)
    await inTx.client.query('BEGIN')
    await inTx.client.query('SELECT count(*) FROM inodes')
    const activeNow = await superuser('SELECT pid, state FROM pg_stat_activity WHERE pid = ANY($1::int[]) ORDER BY pid', [[busy.pid, inTx.pid]])
    expect(activeNow.map((r) => r.state).sort()).toEqual(['active', 'idle in transaction'])

    const audit = await w.applyYes(run)
    expect(await alive(rest.map((h) => h.pid))).toEqual([])
    expect(await alive([busy.pid, inTx.pid])).toEqual([busy.pid, inTx.pid].sort((a, b) => a - b))
    expect(run.check.outcome?.detail).toMatch(/^terminated 7 idle connections; 2 left alone \(busy again or gone\); re-check: ok$/)
    expect(run.check.outcome).toMatchObject({ok: true, verified: true})
    expect(audit[0]?.decision).toBe('applied')
    await superuser('SELECT pg_cancel_backend($1)', [busy.pid])
    await sleeping
  })

  it('the guard knows the same backends when the sessions read time as DateStyle=SQL, TimeZone=Asia/Kolkata ("IST" is Israel time to PostgreSQL)', async () => {
    await superuser("ALTER ROLE callfs SET DateStyle = 'SQL, DMY'")
    await superuser("ALTER ROLE callfs SET TimeZone = 'Asia/Kolkata'")
    try {
      const held = await hold(8, {app: 'callfs'})
      // opsctl connects as callfs too: its own session reads and writes times in these settings
      const settings = await held[0]?.client.query<{ds: string; tz: string; bs: string}>(
        "SELECT current_setting('DateStyle') AS ds, current_setting('TimeZone') AS tz, backend_start::text AS bs FROM pg_stat_activity WHERE pid = pg_backend_pid()",
      )
      expect(settings?.rows[0]).toMatchObject({ds: 'SQL, DMY', tz: 'Asia/Kolkata', bs: expect.stringMatching(/ IST$/)})
      await sleep(450)
      const run = await oneCheck('callfs.db.connections', idleSoon)
      expect(run.check.evidence.idleCandidates).toBe(8)
      expect(run.check.remediation?.id).toBe('callfs.db.terminate-idle')
      await w.applyYes(run)
      expect(await alive(held.map((h) => h.pid))).toEqual([])
      expect(run.check.outcome).toMatchObject({ok: true, verified: true, detail: 'terminated 8 idle connections; re-check: ok'})
    } finally {
      await superuser('ALTER ROLE callfs RESET ALL')
    }
  })

  it('with an admin DSN, the candidates are the idle sessions of the role CallFS connects as (its config), never a DBA\'s idle psql as the admin role', async () => {
    const callfs = await hold(6, {app: 'callfs'})
    const dba = await hold(2, {user: 'postgres', app: 'psql'})
    await sleep(450)
    const run = await oneCheck('callfs.db.connections', {...idleSoon, postgres: w.pg?.dsn('callfs', 'postgres')})
    expect(run.check.status).toBe('warn')
    expect(run.check.evidence).toMatchObject({used: 8, usedPercent: 80, idleCandidates: 6, serviceRole: 'callfs', serviceRoleFrom: `${w.configFile} (metadata_store.dsn)`})
    const planned = (run.check.remediation?.plan ?? []).flatMap((l) => [...l.matchAll(/^terminate pid (\d+) \(callfs@/g)].map((m) => Number(m[1])))
    expect(planned.sort((a, b) => a - b)).toEqual(callfs.map((h) => h.pid).sort((a, b) => a - b))
    expect(run.check.remediation?.plan.at(-1)).toMatch(/ \$3=callfs /)

    await w.applyYes(run)
    expect(await alive(callfs.map((h) => h.pid))).toEqual([])
    expect(await alive(dba.map((h) => h.pid))).toEqual(dba.map((h) => h.pid).sort((a, b) => a - b))
    expect(run.check.outcome).toMatchObject({ok: true, detail: expect.stringMatching(/^terminated 6 idle connections; re-check: /)})
  })

  it('a superuser\'s idle sessions are never terminated automatically, even when it is the service role (no CallFS config: the DSN\'s user)', async () => {
    const dba = await hold(8, {user: 'postgres', app: 'psql'})
    await sleep(450)
    const r = await w.check('callfs.db.connections', {...idleSoon, postgres: w.pg?.dsn('callfs', 'postgres'), config_file: `${w.dir}/no-such-config.yaml`})
    expect(r.status).toBe('warn')
    expect(r.evidence).toMatchObject({used: 8, idleCandidates: 0, idleOfSuperuser: 8, serviceRole: 'postgres', serviceRoleFrom: 'the opsctl DSN'})
    expect(r.remediation).toMatchObject({id: 'callfs.db.free-slots', automated: false, risk: null})
    expect(r.fix?.apply).toBeUndefined()
    expect(r.remediation?.plan).toContain('8 idle sessions of postgres are a superuser\'s: never terminated automatically — end them by hand if they should go')
    expect(await alive(dba.map((h) => h.pid))).toHaveLength(8)
  })
})

// ---- callfs.db.migrations ---------------------------------------------------------------------

describe('callfs.db.migrations', () => {
  afterEach(async () => {
    await superuser('ALTER TABLE IF EXISTS schema_migrations_moved RENAME TO schema_migrations')
    await superuser('GRANT ALL ON schema_migrations TO callfs')
    await superuser('DELETE FROM schema_migrations')
    await superuser('INSERT INTO schema_migrations (version, dirty) VALUES (3, false)')
  })

  it('ok: version 3, clean', async () => {
    const r = await w.check('callfs.db.migrations')
    expect(r.status).toBe('ok')
    expect(r.summary).toBe('schema at migration 3, clean')
    expect(r.evidence).toEqual({version: 3, dirty: false, latest: 3})
  })

  it('fail: a dirty migration; the manual fix migrates with the real DSN', async () => {
    await superuser('UPDATE schema_migrations SET dirty = true')
    const r = await w.check('callfs.db.migrations')
    expect(r.status).toBe('fail')
    expect(r.summary).toBe('migration 3 is dirty: it failed half-way and CallFS will not start on this schema')
    expect(r.evidence).toEqual({version: 3, dirty: true, latest: 3})
    const base = `migrate -database "postgres://callfs@127.0.0.1:${pgPort()}/callfs?sslmode=disable" -path metadata/schema`
    expect(r.remediation).toMatchObject({id: 'callfs.db.migrate', automated: false, risk: null})
    expect(r.remediation?.commands).toEqual([`${base} version`, `${base} force 2`, `${base} up`])
    expect(r.remediation?.plan[1]).toBe('then mark the schema clean at the version it really is (3 if it completed, 2 if not), and migrate up')
  })

  it('fail: dirty, behind SCRAM: the migrate commands carry the password as ****, and never the password', async () => {
    const r = await w.check(
      'callfs.db.migrations',
      {postgres: scram.dsn('callfs', 'callfs'), postgres_password_env: 'CALLFS_PG_PASSWORD'},
      {env: {...w.env, CALLFS_PG_PASSWORD: PG_PASSWORD}},
    )
    expect(r.status).toBe('fail')
    expect(r.evidence).toEqual({version: 3, dirty: true, latest: 3})
    const base = `migrate -database "postgres://callfs:****@127.0.0.1:${scram.port}/callfs?sslmode=disable" -path metadata/schema`
    expect(r.remediation?.commands).toEqual([`${base} version`, `${base} force 2`, `${base} up`])
    expect(r.remediation?.plan.at(-1)).toBe('in the commands, **** stands for the password (URL-encoded) in $CALLFS_PG_PASSWORD')
    expect(JSON.stringify(r)).not.toContain(PG_PASSWORD)
  })

  it('the migrate commands keep an sslmode the DSN already has (no second, contradicting sslmode)', async () => {
    await superuser('UPDATE schema_migrations SET dirty = true')
    const r = await w.check('callfs.db.migrations', {postgres: `postgres://callfs@127.0.0.1:${pgPort()}/callfs?sslmode=prefer`})
    expect(r.status).toBe('fail')
    for (const c of r.remediation?.commands ?? []) {
      expect(c).toContain(`-database "postgres://callfs@127.0.0.1:${pgPort()}/callfs?sslmode=prefer"`)
      expect(c.match(/sslmode=/g)).toHaveLength(1)
    }
  })

  it('fail: dirty at version 1 — not completed means no migration applied: force -1 (golang-migrate has no version 0 to go up from)', async () => {
    await superuser('UPDATE schema_migrations SET version = 1, dirty = true')
    const r = await w.check('callfs.db.migrations')
    expect(r.status).toBe('fail')
    expect(r.evidence).toEqual({version: 1, dirty: true, latest: 3})
    const base = `migrate -database "postgres://callfs@127.0.0.1:${pgPort()}/callfs?sslmode=disable" -path metadata/schema`
    expect(r.remediation?.commands).toEqual([`${base} version`, `${base} force -1`, `${base} up`])
    expect(r.remediation?.plan[1]).toBe('then mark the schema clean at the version it really is (1 if it completed, -1 — no migration applied — if not), and migrate up')
  })

  it('warn: version 1 is behind the 3 CallFS ships', async () => {
    await superuser('UPDATE schema_migrations SET version = 1')
    const r = await w.check('callfs.db.migrations')
    expect(r.status).toBe('warn')
    expect(r.summary).toBe('schema is at migration 1; CallFS ships 3')
    expect(r.evidence).toEqual({version: 1, dirty: false, latest: 3})
    expect(r.remediation?.plan).toEqual(['migrate up from 1 to 3'])
  })

  it('fail: the schema_migrations table is missing', async () => {
    await superuser('ALTER TABLE schema_migrations RENAME TO schema_migrations_moved')
    const r = await w.check('callfs.db.migrations')
    expect(r.status).toBe('fail')
    expect(r.summary).toMatch(/^table schema_migrations does not exist/)
    expect(r.evidence).toEqual({code: '42P01'})
    expect(r.remediation?.commands.at(-1)).toMatch(/ up$/)
  })

  it('fail: schema_migrations is empty', async () => {
    await superuser('DELETE FROM schema_migrations')
    const r = await w.check('callfs.db.migrations')
    expect(r.status).toBe('fail')
    expect(r.summary).toMatch(/^schema_migrations is empty/)
  })

  it('unknown: callfs may not read schema_migrations (permission denied)', async () => {
    await superuser('REVOKE ALL ON schema_migrations FROM callfs')
    const r = await w.check('callfs.db.migrations')
    expect(r.status).toBe('unknown')
    expect(r.summary).toMatch(/^could not read schema_migrations: .*permission denied for table schema_migrations/)
    expect(r.evidence).toEqual({error: 'permission', code: '42501'})
  })
})

// ---- callfs.db.long-queries -------------------------------------------------------------------

describe('callfs.db.long-queries', () => {
  const soon = {thresholds: {long_query: '300ms'}}

  it('ok: idle sessions are not long queries', async () => {
    await hold(2)
    await sleep(450)
    const r = await w.check('callfs.db.long-queries', soon)
    expect(r.status).toBe('ok')
    expect(r.summary).toBe('no query or transaction on callfs older than 300ms')
  })

  it('warn: a transaction left idle in transaction past the threshold, named by pid', async () => {
    const tx = await connect({app: 'callfs'})
    await tx.client.query('BEGIN')
    await tx.client.query('SELECT count(*) FROM inodes')
    await sleep(450)
    const r = await w.check('callfs.db.long-queries', soon)
    expect(r.status).toBe('warn')
    expect(r.summary).toBe('1 backend on callfs running or holding a transaction longer than 300ms (1 idle in transaction)')
    const backends = r.evidence.backends as Array<Record<string, unknown>>
    expect(backends).toHaveLength(1)
    expect(backends[0]).toMatchObject({pid: tx.pid, user: 'callfs', app: 'callfs', state: 'idle in transaction', query: 'SELECT count(*) FROM inodes'})
    expect(r.remediation).toMatchObject({id: 'callfs.db.terminate-long', automated: true, risk: 'destructive'})
    expect(r.remediation?.plan[0]).toMatch(new RegExp(`^terminate pid ${tx.pid} \\(callfs, idle in transaction, `))
  })

  it('warn: a real active long query, its literals masked in the evidence; the fix terminates it, verified and audited', async () => {
    const secret = 'planted-secret-literal-5d1e'
    const q = await connect({app: 'callfs'})
    const running = q.client.query(`SELECT pg_sleep(30), '${secret}' AS token, $$${secret}$$ AS other`).then(
      () => 'finished',
      (e: {code?: string}) => e.code,
    )
    await sleep(450)
    const run = await oneCheck('callfs.db.long-queries', soon)
    expect(run.check.status).toBe('warn')
    const backends = run.check.evidence.backends as Array<Record<string, unknown>>
    expect(backends.map((b) => b.pid)).toEqual([q.pid])
    expect(backends[0]).toMatchObject({state: 'active', query: "SELECT pg_sleep(?), '?' AS token, $?$ AS other"})
    expect(JSON.stringify(run.check)).not.toContain(secret)

    const audit = await w.applyYes(run)
    expect(await running).toBe('57P01') // admin_shutdown: the backend was terminated
    expect(await alive([q.pid])).toEqual([])
    expect(run.check.outcome).toMatchObject({decision: 'applied', ok: true, verified: true, detail: 'terminated 1 backend; re-check: ok'})
    expect(audit).toHaveLength(1)
    expect(audit[0]).toMatchObject({check: 'callfs.db.long-queries', remediation: 'callfs.db.terminate-long', decision: 'applied', verified: true})
    expect(audit[0]?.plan[0]).toMatch(new RegExp(`^terminate pid ${q.pid} \\(callfs, active, `))
    expect(JSON.stringify(audit)).not.toContain(secret)
  })

  it('guard: a transaction committed between diagnosis and fix is left alone', async () => {
    const tx = await connect({app: 'callfs'})
    await tx.client.query('BEGIN')
    await tx.client.query('SELECT 1')
    await sleep(450)
    const run = await oneCheck('callfs.db.long-queries', soon)
    expect(run.check.status).toBe('warn')
    await tx.client.query('COMMIT')

    await w.applyYes(run)
    expect(await alive([tx.pid])).toEqual([tx.pid])
    expect(run.check.outcome?.detail).toBe('terminated 0 backends; 1 left alone (finished or no longer over the threshold); re-check: ok')
    expect(run.check.outcome?.verified).toBe(true)
    expect((await tx.client.query('SELECT 1 AS one')).rows).toEqual([{one: 1}])
  })

  it('a long transaction of a role callfs cannot see is counted as hidden, and the fix ends only CallFS\'s own', async () => {
    const mine = await connect({app: 'callfs'})
    const dba = await connect({user: 'postgres', app: 'psql'})
    for (const c of [mine, dba]) {
      await c.client.query('BEGIN')
      await c.client.query('SELECT 1')
    }
    await sleep(450)
    const run = await oneCheck('callfs.db.long-queries', soon)
    expect(run.check.status).toBe('warn')
    expect((run.check.evidence.backends as Array<{pid: number}>).map((b) => b.pid)).toEqual([mine.pid])
    expect(run.check.evidence.hiddenSessions).toBe(1)
    expect(run.check.summary).toMatch(/; 1 session of other roles not visible to callfs \(grant it pg_read_all_stats to see them\)$/)

    await w.applyYes(run)
    expect(await alive([mine.pid, dba.pid])).toEqual([dba.pid])
    expect(run.check.outcome).toMatchObject({ok: true, verified: true})
  })

  it('with pg_read_all_stats, a superuser\'s long transaction is shown but left alone, and does not stop the fix ending CallFS\'s own', async () => {
    await superuser('GRANT pg_read_all_stats TO callfs')
    try {
      const mine = await connect({app: 'callfs'})
      const dba = await connect({user: 'postgres', app: 'psql'})
      for (const c of [mine, dba]) {
        await c.client.query('BEGIN')
        await c.client.query('SELECT 1')
      }
      await sleep(450)
      const run = await oneCheck('callfs.db.long-queries', soon)
      expect(run.check.status).toBe('warn')
      const backends = run.check.evidence.backends as Array<{pid: number; terminable: boolean}>
      expect(backends.map((b) => [b.pid, b.terminable]).sort()).toEqual([[mine.pid, true], [dba.pid, false]].sort())
      expect(run.check.summary).toMatch(/; 1 belongs to roles callfs may not signal \(postgres\): a superuser can end it$/)
      const plan = run.check.remediation?.plan ?? []
      expect(plan.filter((l) => new RegExp(`^leave pid ${dba.pid} \\(postgres, idle in transaction, [\\d.]+m?s\\): callfs may not terminate it \\(a superuser can\\)$`).test(l))).toHaveLength(1)
      expect(plan.filter((l) => l.startsWith('terminate pid '))).toEqual([expect.stringMatching(new RegExp(`^terminate pid ${mine.pid} \\(callfs, idle in transaction, `))])
      expect(plan.at(-1)).toMatch(new RegExp(`-- \\$1=\\[${mine.pid}\\] \\$3=callfs \\$4=300 milliseconds \\$5=callfs$`))

      await w.applyYes(run)
      expect(await alive([mine.pid, dba.pid])).toEqual([dba.pid])
      expect(run.check.outcome?.ok).toBe(true)
      expect(run.check.outcome?.detail).toMatch(/^terminated 1 backend; re-check: warn /)
      expect(run.check.outcome?.verified).toBe(false) // the superuser's transaction is still there
    } finally {
      await superuser('REVOKE pg_read_all_stats FROM callfs')
    }
  })

  it('another role\'s long transaction callfs could signal (pg_signal_backend) is shown, never terminated automatically', async () => {
    await superuser('CREATE ROLE backup LOGIN')
    await superuser('GRANT pg_signal_backend, pg_read_all_stats TO callfs')
    try {
      const mine = await connect({app: 'callfs'})
      const dump = await connect({user: 'backup', app: 'pg_dump'})
      for (const c of [mine, dump]) {
        await c.client.query('BEGIN')
        await c.client.query('SELECT 1')
      }
      await sleep(450)
      const run = await oneCheck('callfs.db.long-queries', soon)
      const backends = run.check.evidence.backends as Array<{pid: number; terminable: boolean}>
      expect(backends.map((b) => [b.pid, b.terminable]).sort()).toEqual([[mine.pid, true], [dump.pid, false]].sort())
      const plan = run.check.remediation?.plan ?? []
      expect(plan).toContainEqual(expect.stringMatching(new RegExp(`^leave pid ${dump.pid} \\(backup, idle in transaction, .*\\): not callfs's own session`)))
      expect(plan.filter((l) => l.startsWith('terminate pid '))).toEqual([expect.stringMatching(new RegExp(`^terminate pid ${mine.pid} `))])
      await w.applyYes(run)
      expect(await alive([mine.pid, dump.pid])).toEqual([dump.pid])
    } finally {
      await superuser('REVOKE pg_signal_backend, pg_read_all_stats FROM callfs')
      await superuser("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'backup'")
    }
  })

  it('the guard knows the same backend when the sessions read time as DateStyle=SQL, TimeZone=Asia/Kolkata', async () => {
    await superuser("ALTER ROLE callfs SET DateStyle = 'SQL, DMY'")
    await superuser("ALTER ROLE callfs SET TimeZone = 'Asia/Kolkata'")
    try {
      const tx = await connect({app: 'callfs'})
      await tx.client.query('BEGIN')
      await tx.client.query('SELECT 1')
      await sleep(450)
      const run = await oneCheck('callfs.db.long-queries', soon)
      expect(run.check.remediation?.id).toBe('callfs.db.terminate-long')
      await w.applyYes(run)
      expect(await alive([tx.pid])).toEqual([])
      expect(run.check.outcome).toMatchObject({ok: true, verified: true, detail: 'terminated 1 backend; re-check: ok'})
    } finally {
      await superuser('ALTER ROLE callfs RESET ALL')
    }
  })

  it('with an admin DSN, a pg_dump running as the admin role is shown and left; CallFS\'s own long transaction (the role of its config) is ended', async () => {
    const mine = await connect({app: 'callfs'})
    await mine.client.query('BEGIN')
    await mine.client.query('SELECT 1')
    const dump = await connect({user: 'postgres', app: 'pg_dump'})
    await dump.client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
    await dump.client.query('SELECT count(*) FROM inodes')
    await sleep(450)
    const run = await oneCheck('callfs.db.long-queries', {...soon, postgres: w.pg?.dsn('callfs', 'postgres')})
    expect(run.check.status).toBe('warn')
    expect(run.check.evidence).toMatchObject({serviceRole: 'callfs', serviceRoleFrom: `${w.configFile} (metadata_store.dsn)`})
    const backends = run.check.evidence.backends as Array<{pid: number; terminable: boolean}>
    expect(backends.map((b) => [b.pid, b.terminable]).sort()).toEqual([[mine.pid, true], [dump.pid, false]].sort())
    const plan = run.check.remediation?.plan ?? []
    expect(plan).toContainEqual(expect.stringMatching(new RegExp(`^leave pid ${dump.pid} \\(postgres, idle in transaction, .*\\): not callfs's own session`)))
    expect(plan.filter((l) => l.startsWith('terminate pid '))).toEqual([expect.stringMatching(new RegExp(`^terminate pid ${mine.pid} \\(callfs, `))])
    expect(plan.at(-1)).toMatch(new RegExp(`-- \\$1=\\[${mine.pid}\\] \\$3=callfs \\$4=300 milliseconds \\$5=callfs$`))

    await w.applyYes(run)
    expect(await alive([mine.pid, dump.pid])).toEqual([dump.pid])
    expect(run.check.outcome?.detail).toMatch(/^terminated 1 backend; re-check: warn /)
  })

  it('a superuser\'s long transaction is never terminated automatically, even when it is the service role (no CallFS config)', async () => {
    const dump = await connect({user: 'postgres', app: 'pg_dump'})
    await dump.client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
    await dump.client.query('SELECT count(*) FROM inodes')
    await sleep(450)
    const r = await w.check('callfs.db.long-queries', {...soon, postgres: w.pg?.dsn('callfs', 'postgres'), config_file: `${w.dir}/no-such-config.yaml`})
    expect(r.status).toBe('warn')
    expect(r.evidence).toMatchObject({serviceRole: 'postgres', serviceRoleFrom: 'the opsctl DSN'})
    expect((r.evidence.backends as Array<{pid: number; terminable: boolean}>).map((b) => [b.pid, b.terminable])).toEqual([[dump.pid, false]])
    expect(r.remediation).toMatchObject({id: 'callfs.db.terminate-long', automated: false, risk: null})
    expect(r.fix?.apply).toBeUndefined()
    expect(r.remediation?.plan).toContainEqual(expect.stringMatching(new RegExp(`^leave pid ${dump.pid} \\(postgres, idle in transaction, .*\\): a superuser's session — never ended automatically; end it by hand if it should go$`)))
    expect(await alive([dump.pid])).toEqual([dump.pid])
  })

  it('comments and SET values in the query text of a long transaction never reach the report', async () => {
    const a = await connect({app: 'callfs'})
    await a.client.query('BEGIN')
    await a.client.query('SELECT 1 /* api_key=sk_live_SUPERSECRET */ -- token: hunter2')
    const b = await connect({app: 'callfs'})
    await b.client.query('BEGIN')
    await b.client.query('SET LOCAL app.token = secret_unquoted_value')
    await sleep(450)
    const r = await w.check('callfs.db.long-queries', soon)
    const text = JSON.stringify(r)
    for (const secret of ['SUPERSECRET', 'hunter2', 'secret_unquoted_value']) expect(text).not.toContain(secret)
    const queries = Object.fromEntries((r.evidence.backends as Array<{pid: number; query: string}>).map((x) => [x.pid, x.query]))
    expect(queries).toEqual({[a.pid]: 'SELECT ? /*…*/ /*…*/', [b.pid]: 'SET LOCAL app.token = ?'})
  })

  it('a query text cut off by track_activity_query_size inside a literal leaks no part of it', async () => {
    const secret = 'S'.repeat(8) + 'cut-literal-secret' + 'x'.repeat(2000)
    const q = await connect({app: 'callfs'})
    const running = q.client.query(`SELECT pg_sleep(30), '${secret}' AS token`).catch(() => undefined)
    await sleep(450)
    const r = await w.check('callfs.db.long-queries', soon)
    expect(r.status).toBe('warn')
    expect(JSON.stringify(r)).not.toContain('cut-literal-secret')
    expect((r.evidence.backends as Array<{query: string}>)[0]?.query).toBe("SELECT pg_sleep(?), '?'")
    await superuser('SELECT pg_cancel_backend($1)', [q.pid])
    await running
  })
})

describe('maskQueryLiterals', () => {
  it('masks string, escape-string, dollar-quoted and numeric literals, not identifiers or parameters', () => {
    expect(maskQueryLiterals("SELECT * FROM inodes WHERE path = '/a''b' AND id = 42 AND size > 1.5e3")).toBe("SELECT * FROM inodes WHERE path = '?' AND id = ? AND size > ?")
    expect(maskQueryLiterals("UPDATE t SET v = E'sec\\'ret' WHERE x = $1 AND t2.c = $tag$body$tag$")).toBe("UPDATE t SET v = E'?' WHERE x = $1 AND t2.c = $?$")
    expect(maskQueryLiterals('SELECT pg_sleep(10)')).toBe('SELECT pg_sleep(?)')
  })

  it('masks comments (nested ones too) and the value of a SET statement, not UPDATE … SET', () => {
    expect(maskQueryLiterals('SELECT 1 /* api_key=sk_live_X */ -- token: hunter2')).toBe('SELECT ? /*…*/ /*…*/')
    expect(maskQueryLiterals('SELECT /* outer /* inner */ api_key=sk_live_X */ 1')).toBe('SELECT /*…*/ ?')
    expect(maskQueryLiterals('SELECT 1 -- token: hunter2\nFROM t')).toBe('SELECT ? /*…*/ FROM t')
    expect(maskQueryLiterals('SELECT 1 /* cut off: api_key=sk_live_X')).toBe('SELECT ? /*…*/')
    expect(maskQueryLiterals('SET app.token = secret_unquoted_value')).toBe('SET app.token = ?')
    expect(maskQueryLiterals('set session app.token to secret_unquoted_value; SELECT 1')).toBe('set session app.token to ?; SELECT ?')
    expect(maskQueryLiterals('SET LOCAL "app.token"=secret')).toBe('SET LOCAL "app.token"= ?')
    expect(maskQueryLiterals('ALTER ROLE callfs IN DATABASE callfs SET app.key TO hunter2, other')).toBe('ALTER ROLE callfs IN DATABASE callfs SET app.key TO ?')
    expect(maskQueryLiterals('/* hi */ SET app.key = hunter2')).toBe('/*…*/ SET app.key = ?')
    expect(maskQueryLiterals('UPDATE t SET v = w WHERE id = 1')).toBe('UPDATE t SET v = w WHERE id = ?')
    expect(maskQueryLiterals('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE')).toBe('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE')
  })

  it('a quote inside a quoted identifier, or a backslash that makes a string end differently with standard_conforming_strings off, leaks nothing', () => {
    expect(maskQueryLiterals(`SELECT "col'x", 'secret' FROM t`)).toBe(`SELECT "col'x", '?' FROM t`)
    // standard_conforming_strings on: 'a\' then 'secret2'; off: 'a\' || ' then secret2 unquoted. Either way, hidden.
    expect(maskQueryLiterals("select 'a\\' || 'secret2' -- ssc off")).toBe("select '?'")
    expect(maskQueryLiterals("SELECT 'a\\b' AS p, 2")).toBe("SELECT '?' AS p, ?")
    expect(maskQueryLiterals("SELECT x'DEADBEEF', U&'d\\0061ta', 0x1F")).toBe("SELECT x'?', U&'?', ?")
  })
})

// ---- a stopped postmaster -----------------------------------------------------------------------

describe('a SIGSTOPped postmaster', () => {
  it('fails within the time-out plus a margin instead of hanging', async () => {
    scram.kill('SIGSTOP')
    try {
      const started = Date.now()
      const r = await w.check('callfs.db.reachable', {postgres: scram.dsn('callfs', 'callfs')}, {timeoutMs: 300})
      const took = Date.now() - started
      expect(r.status).toBe('fail')
      expect(r.evidence.error).toBe('timeout')
      expect(r.summary).toMatch(/accepted the connection but did not answer within 300ms/)
      expect(took).toBeLessThan(300 + 1000)
    } finally {
      scram.kill('SIGCONT')
    }
  })
})
