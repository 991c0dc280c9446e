import {spawnSync} from 'node:child_process'
import {resolve} from 'node:path'
import pg from 'pg'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {dsnInfo, maskDsn, withPostgres} from '../../src/diagnostics/postgres.js'
import {Reachability} from '../../src/diagnostics/reach.js'
import {freePort} from '../support/ports.js'
import {startPostgres, type TestPostgres} from '../support/postgres.js'

const TIMEOUT = 300

let db: TestPostgres
beforeAll(async () => {
  db = await startPostgres()
  await db.createRole('callfs')
  await db.createDatabase('callfs', 'callfs')
  await db.query('CREATE TABLE inodes (id serial PRIMARY KEY, path text UNIQUE)', [], 'callfs')
  await db.query("INSERT INTO inodes (path) VALUES ('/a.txt'), ('/b.txt')", [], 'callfs')
  await db.query('REVOKE ALL ON inodes FROM PUBLIC', [], 'callfs')
  await db.query('GRANT SELECT ON inodes TO callfs', [], 'callfs')
  await db.createRole('reader')
})
afterAll(() => db?.stop())

/** Sessions of opsctl still on the server, once closing ones are gone (up to 1 s). */
async function opsctlSessions(): Promise<number> {
  let n = 0
  for (let i = 0; i < 50; i++) {
    const rows = await db.query<{n: number}>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'opsctl'")
    n = rows[0]?.n ?? 0
    if (n === 0) break
    await new Promise((r) => setTimeout(r, 20))
  }
  return n
}

describe('withPostgres', () => {
  it('runs several statements in one session that says who it is and cannot outstay the probe', async () => {
    const res = await withPostgres({dsn: db.dsn('callfs', 'callfs')}, {timeoutMs: 5000}, async (sql) => {
      const [me] = await sql<{app: string; st: string; lt: string; who: string; db: string}>(
        "SELECT current_setting('application_name') AS app, current_setting('statement_timeout') AS st, current_setting('lock_timeout') AS lt, current_user AS who, current_database() AS db",
      )
      const files = await sql<{path: string}>('SELECT path FROM inodes WHERE path LIKE $1 ORDER BY path', ['/%'])
      return {me, files: files.map((f) => f.path)}
    })
    expect(res).toMatchObject({
      ok: true,
      value: {me: {app: 'opsctl', st: '4750ms', lt: '4500ms', who: 'callfs', db: 'callfs'}, files: ['/a.txt', '/b.txt']},
    })
    expect(await opsctlSessions()).toBe(0)
  })

  it('refused: says nothing listens, and the run remembers the endpoint', async () => {
    const port = await freePort()
    const reach = new Reachability()
    const dsn = `postgres://callfs@127.0.0.1:${port}/callfs`
    const first = await withPostgres({dsn}, {timeoutMs: 2000, reach}, (sql) => sql('SELECT 1'))
    expect(first).toMatchObject({ok: false, error: {kind: 'refused', code: 'ECONNREFUSED'}})
    if (!first.ok) expect(first.error.message).toContain(`127.0.0.1:${port}`)
    const second = await withPostgres({dsn}, {timeoutMs: 2000, reach}, (sql) => sql('SELECT 1'))
    expect(second).toMatchObject({ok: false, error: {kind: 'refused', message: expect.stringContaining('earlier in this run')}})
  })

  it('a missing database or table is not-found', async () => {
    const noDb = await withPostgres({dsn: db.dsn('nope', 'callfs')}, {timeoutMs: 2000}, (sql) => sql('SELECT 1'))
    expect(noDb).toMatchObject({ok: false, error: {kind: 'not-found', code: '3D000', message: expect.stringContaining('database "nope" does not exist')}})
    const noTable = await withPostgres({dsn: db.dsn('callfs', 'callfs')}, {timeoutMs: 2000}, (sql) => sql('SELECT * FROM schema_migrations'))
    expect(noTable).toMatchObject({ok: false, error: {kind: 'not-found', code: '42P01', message: expect.stringContaining('schema_migrations')}})
    expect(await opsctlSessions()).toBe(0)
  })

  it('insufficient privilege is a permission error', async () => {
    const res = await withPostgres({dsn: db.dsn('callfs', 'reader')}, {timeoutMs: 2000}, (sql) => sql('SELECT * FROM inodes'))
    expect(res).toMatchObject({ok: false, error: {kind: 'permission', code: '42501', message: expect.stringContaining('permission denied for table inodes')}})
  })

  it('a statement running past the probe time-out is cancelled by the server (statement_timeout)', async () => {
    const started = Date.now()
    const res = await withPostgres({dsn: db.dsn()}, {timeoutMs: 1000}, (sql) => sql('SELECT pg_sleep(10)'))
    expect(Date.now() - started).toBeLessThan(1000 + 300)
    expect(res).toMatchObject({ok: false, error: {kind: 'timeout', code: '57014'}})
    expect(await opsctlSessions()).toBe(0)
  })

  it('a lock held by someone else ends at lock_timeout', async () => {
    const holder = new pg.Client({host: '127.0.0.1', port: db.port, user: 'postgres', database: 'callfs'})
    await holder.connect()
    try {
      await holder.query('BEGIN')
      await holder.query('LOCK TABLE inodes IN ACCESS EXCLUSIVE MODE')
      const reach = new Reachability()
      const res = await withPostgres({dsn: db.dsn('callfs')}, {timeoutMs: 1000, reach}, (sql) => sql('SELECT count(*) FROM inodes'))
      expect(res).toMatchObject({ok: false, error: {kind: 'timeout', code: '55P03'}})
      expect(reach.known(`127.0.0.1:${db.port}`)).toBeUndefined() // the server is fine; the table is locked
    } finally {
      await holder.end()
    }
  })

  it('a stopped postmaster (accepts, never answers) times out at the deadline, and is remembered', async () => {
    const reach = new Reachability()
    db.kill('SIGSTOP')
    try {
      const started = Date.now()
      const res = await withPostgres({dsn: db.dsn()}, {timeoutMs: TIMEOUT, reach}, (sql) => sql('SELECT 1'))
      const took = Date.now() - started
      expect(res).toMatchObject({ok: false, error: {kind: 'timeout'}})
      if (!res.ok) expect(res.error.message).toContain(`PostgreSQL at 127.0.0.1:${db.port} accepted the connection but did not answer within 300ms`)
      expect(took).toBeGreaterThanOrEqual(TIMEOUT - 5)
      expect(took).toBeLessThan(TIMEOUT + 300)
      expect(reach.known(`127.0.0.1:${db.port}`)?.kind).toBe('timeout')
    } finally {
      db.kill('SIGCONT')
    }
    expect(await db.query('SELECT 1 AS one')).toEqual([{one: 1}])
  })

  it('a query that stalls after connecting times out without marking the endpoint dead', async () => {
    const reach = new Reachability()
    const started = Date.now()
    // Without the server-side statement_timeout, only the probe's own deadline can end this.
    // (client_connection_check_interval lets the backend notice the cut connection at once.)
    const res = await withPostgres({dsn: db.dsn()}, {timeoutMs: TIMEOUT, reach}, async (sql) => {
      await sql("SET statement_timeout = 0; SET client_connection_check_interval = '50ms'")
      return sql('SELECT pg_sleep(3)')
    })
    expect(Date.now() - started).toBeLessThan(TIMEOUT + 300)
    expect(res).toMatchObject({ok: false, error: {kind: 'timeout', message: expect.stringContaining('did not finish within 300ms')}})
    expect(reach.known(`127.0.0.1:${db.port}`)).toBeUndefined()
    expect(await opsctlSessions()).toBe(0) // the cut session is gone
  })

  it('an abort ends the probe at once', async () => {
    db.kill('SIGSTOP')
    try {
      const controller = new AbortController()
      setTimeout(() => controller.abort(), 50)
      const started = Date.now()
      const res = await withPostgres({dsn: db.dsn()}, {timeoutMs: 5000, signal: controller.signal}, (sql) => sql('SELECT 1'))
      expect(Date.now() - started).toBeLessThan(1000)
      expect(res).toMatchObject({ok: false, error: {kind: 'aborted'}})
      const pre = await withPostgres({dsn: db.dsn()}, {timeoutMs: 5000, signal: AbortSignal.abort()}, (sql) => sql('SELECT 1'))
      expect(pre).toMatchObject({ok: false, error: {kind: 'aborted'}})
    } finally {
      db.kill('SIGCONT')
    }
  })

  it('a failure inside the probe function is reported, and the session still ends', async () => {
    const res = await withPostgres({dsn: db.dsn()}, {timeoutMs: 2000}, async (sql) => {
      await sql('SELECT 1')
      throw new Error('the check broke')
    })
    expect(res).toMatchObject({ok: false, error: {kind: 'other', message: expect.stringContaining('the check broke')}})
    expect(await opsctlSessions()).toBe(0)
  })

  it('an invalid DSN is an error value that hides its password', async () => {
    const res = await withPostgres({dsn: 'mysql://u:hunter22@h/db'}, {timeoutMs: 500}, (sql) => sql('SELECT 1'))
    expect(res).toMatchObject({ok: false, error: {kind: 'other'}})
    if (!res.ok) expect(res.error.message).not.toContain('hunter22')
  })

  describe('connection slots', () => {
    let small: TestPostgres
    beforeAll(async () => {
      small = await startPostgres({maxConnections: 5}) // 3 reserved for superusers
      await small.createRole('callfs')
      await small.createRole('capped', {connectionLimit: 1})
    })
    afterAll(() => small?.stop())

    it('max_connections reached is a capacity error', async () => {
      const held = await small.hold(2, {user: 'callfs', applicationName: 'callfs'}) // every non-reserved slot
      try {
        const reach = new Reachability()
        const res = await withPostgres({dsn: small.dsn('postgres', 'callfs')}, {timeoutMs: 2000, reach}, (sql) => sql('SELECT 1'))
        expect(res).toMatchObject({
          ok: false,
          error: {kind: 'capacity', code: '53300', message: expect.stringContaining('server has no free connection slots (max_connections reached)')},
        })
        expect(reach.known(`127.0.0.1:${small.port}`)).toBeUndefined() // full, not dead
      } finally {
        await held.release()
      }
      const after = await withPostgres({dsn: small.dsn('postgres', 'callfs')}, {timeoutMs: 2000}, (sql) => sql('SELECT 1 AS one'))
      expect(after).toMatchObject({ok: true, value: [{one: 1}]})
    })

    it("a role's own connection limit is a capacity error that says so", async () => {
      const held = await small.hold(1, {user: 'capped'})
      try {
        const res = await withPostgres({dsn: small.dsn('postgres', 'capped')}, {timeoutMs: 2000}, (sql) => sql('SELECT 1'))
        expect(res).toMatchObject({ok: false, error: {kind: 'capacity', code: '53300', message: expect.stringContaining('too many connections for role "capped"')}})
      } finally {
        await held.release()
      }
    })
  })

  describe('password authentication (scram-sha-256)', () => {
    let locked: TestPostgres
    const password = 'correct-horse-battery'
    beforeAll(async () => {
      locked = await startPostgres({auth: 'scram-sha-256'})
      await locked.createRole('callfs', {password})
    })
    afterAll(() => locked?.stop())

    it('the password variable authenticates (and wins over one in the DSN)', async () => {
      const dsn = `postgres://callfs:stale-dsn-pass@127.0.0.1:${locked.port}/postgres`
      const res = await withPostgres({dsn, password}, {timeoutMs: 2000}, (sql) => sql<{who: string}>('SELECT current_user AS who'))
      expect(res).toMatchObject({ok: true, value: [{who: 'callfs'}]})
    })

    it('a wrong password is an auth error that never shows the password', async () => {
      const dsn = `postgres://callfs:wrong-dsn-pass@127.0.0.1:${locked.port}/postgres`
      for (const target of [{dsn}, {dsn: locked.dsn('postgres', 'callfs'), password: 'wrong-env-pass'}]) {
        const res = await withPostgres(target, {timeoutMs: 2000}, (sql) => sql('SELECT 1'))
        expect(res).toMatchObject({
          ok: false,
          error: {kind: 'auth', code: '28P01', message: expect.stringContaining('password authentication failed for user "callfs" — check the password variable')},
        })
        expect(JSON.stringify(res)).not.toMatch(/wrong-(dsn|env)-pass/)
      }
    })

    it('no password at all is an auth error asking for one', async () => {
      const res = await withPostgres({dsn: locked.dsn('postgres', 'callfs')}, {timeoutMs: 2000}, (sql) => sql('SELECT 1'))
      expect(res).toMatchObject({ok: false, error: {kind: 'auth', message: expect.stringContaining('none is set')}})
    })
  })
})

describe('maskDsn and dsnInfo', () => {
  it('masks passwords in URLs, query parameters and key=value DSNs', () => {
    expect(maskDsn('postgres://callfs:secret@h/db')).toBe('postgres://callfs:****@h/db')
    expect(maskDsn('postgresql://u:p%40ss@h:5433/db?sslmode=require')).toBe('postgresql://u:****@h:5433/db?sslmode=require')
    expect(maskDsn('postgres://u@h/db?password=secret&sslmode=disable')).toBe('postgres://u@h/db?password=****&sslmode=disable')
    expect(maskDsn("host=h user=u password='s3 cret' dbname=d")).toBe('host=h user=u password=**** dbname=d')
    expect(maskDsn('postgres://callfs@127.0.0.1:5432/callfs')).toBe('postgres://callfs@127.0.0.1:5432/callfs')
  })

  it('reads where a DSN points, with libpq defaults', () => {
    expect(dsnInfo('postgres://callfs:x@127.0.0.1:5433/files')).toEqual({host: '127.0.0.1', port: 5433, database: 'files', user: 'callfs'})
    expect(dsnInfo('postgresql://callfs@db.internal')).toEqual({host: 'db.internal', port: 5432, database: 'callfs', user: 'callfs'})
    expect(dsnInfo('postgres://u@[::1]:6000/d')).toEqual({host: '::1', port: 6000, database: 'd', user: 'u'})
    expect(dsnInfo('postgres:///d?host=/run/postgresql&user=u')).toEqual({host: '/run/postgresql', port: 5432, database: 'd', user: 'u'})
    expect(() => dsnInfo('not a dsn')).toThrow()
  })
})

describe('loading', () => {
  it('importing the probe module does not load pg', () => {
    const repo = resolve(import.meta.dirname, '../..')
    const code = `
      import {createRequire} from 'node:module'
      const loaded = () => Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('/node_modules/pg/')).length
      await import('./src/diagnostics/postgres.ts')
      const before = loaded()
      await import('pg') // proves the check sees pg once it is loaded
      console.log(before, loaded() > 0)
    `
    const out = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {cwd: repo, encoding: 'utf8'})
    expect(out.stderr).toBe('')
    expect(out.stdout.trim()).toBe('0 true')
  })
})
