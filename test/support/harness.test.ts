// The throwaway servers themselves: they start on free ports (never 5432/6379), do what the
// probe tests rely on, and never outlive the test process — not even one that dies.
import {spawn} from 'node:child_process'
import {existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {connect, createServer} from 'node:net'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'
import pg from 'pg'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {postgresTemplate, startPostgres} from './postgres.js'
import {freePort, isAlive, reapServers, sleep} from './ports.js'
import {startRedis} from './redis.js'

const repo = resolve(import.meta.dirname, '../..')

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')
  } catch {
    return ''
  }
}

async function waitDead(pid: number, ms = 8000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (isAlive(pid) && Date.now() < deadline) await sleep(25)
  return !isAlive(pid)
}

/** Runs a TypeScript snippet in a fresh Node process (tsx), returns its stdout. */
function runScript(code: string, env: NodeJS.ProcessEnv): Promise<{stdout: string; code: number | null; signal: NodeJS.Signals | null}> {
  const dir = mkdtempSync(join(tmpdir(), 'opsctl-harness-'))
  const file = join(dir, 'script.mts')
  writeFileSync(file, code)
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ['--import', 'tsx', file], {cwd: repo, env, stdio: ['ignore', 'pipe', 'inherit']})
    let stdout = ''
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
      if (stdout.includes('SELF-KILL')) child.kill('SIGKILL') // a worker that dies without any exit hook
    })
    const guard = setTimeout(() => child.kill('SIGKILL'), 20_000)
    child.once('error', fail)
    child.once('exit', (code, signal) => {
      clearTimeout(guard)
      rmSync(dir, {recursive: true, force: true})
      done({stdout, code, signal})
    })
  })
}

describe('freePort', () => {
  it('returns a port nothing listens on, which a server can then bind', async () => {
    const port = await freePort()
    expect(port).toBeGreaterThan(1024)
    const refused = await new Promise<string>((done) => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => done('connected'))
      s.once('error', (e: NodeJS.ErrnoException) => done(e.code ?? 'error'))
    })
    expect(refused).toBe('ECONNREFUSED')
    const server = createServer()
    await new Promise<void>((done) => server.listen(port, '127.0.0.1', done))
    await new Promise<void>((done) => server.close(() => done()))
  })
})

describe('startPostgres', () => {
  const servers: Array<{stop(): Promise<void>}> = []
  afterAll(() => Promise.all(servers.map((s) => s.stop())))

  it('runs its own postmaster from a copy of the template, on a free port, with the requested settings', async () => {
    const db = await startPostgres({maxConnections: 7, settings: {work_mem: '8MB'}})
    servers.push(db)
    expect(db.host).toBe('127.0.0.1')
    expect(db.port).not.toBe(5432)
    expect(cmdline(db.pid)).toContain(db.dataDir)
    expect(db.dsn()).toBe(`postgres://postgres@127.0.0.1:${db.port}/postgres`)
    expect(db.dsn('app', 'callfs')).toBe(`postgres://callfs@127.0.0.1:${db.port}/app`)
    const [row] = await db.query<{mc: string; wm: string; fs: string; who: string}>(
      "SELECT current_setting('max_connections') AS mc, current_setting('work_mem') AS wm, current_setting('fsync') AS fs, current_user AS who",
    )
    expect(row).toEqual({mc: '7', wm: '8MB', fs: 'off', who: 'postgres'})
    // The machine's own cluster is not ours: a different data directory, untouched.
    const [dir] = await db.query<{d: string}>("SELECT current_setting('data_directory') AS d")
    expect(dir?.d).toBe(db.dataDir)
  })

  it('creates roles and databases, and holds real idle / idle-in-transaction sessions until released', async () => {
    const db = await startPostgres()
    servers.push(db)
    await db.createRole('callfs', {connectionLimit: 10})
    await db.createRole('boss', {superuser: true})
    await db.createDatabase('callfs', 'callfs')
    const [role] = await db.query<{rolconnlimit: number; rolsuper: boolean}>("SELECT rolconnlimit, rolsuper FROM pg_roles WHERE rolname = 'callfs'")
    expect(role).toEqual({rolconnlimit: 10, rolsuper: false})
    const [owner] = await db.query<{owner: string}>("SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = 'callfs'")
    expect(owner?.owner).toBe('callfs')

    const idle = await db.hold(3, {db: 'callfs', user: 'callfs', applicationName: 'callfs-pool'})
    const txn = await db.hold(1, {state: 'idle in transaction'})
    expect(idle.pids).toHaveLength(3)
    const rows = await db.query<{pid: number; state: string; usename: string; datname: string; application_name: string}>(
      'SELECT pid, state, usename, datname, application_name FROM pg_stat_activity WHERE pid = ANY($1) ORDER BY pid',
      [[...idle.pids, ...txn.pids]],
    )
    expect(rows.filter((r) => r.state === 'idle' && r.usename === 'callfs' && r.datname === 'callfs' && r.application_name === 'callfs-pool')).toHaveLength(3)
    expect(rows.filter((r) => r.state === 'idle in transaction' && r.usename === 'postgres')).toHaveLength(1)

    await idle.release()
    await txn.release()
    const left = await db.query<{n: number}>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ANY($1)', [[...idle.pids, ...txn.pids]])
    expect(left[0]?.n).toBe(0)
  })

  it('hold() fails (and keeps nothing open) when the server has no slot left', async () => {
    const db = await startPostgres({maxConnections: 5}) // 3 reserved for superusers: 2 for the rest
    servers.push(db)
    await db.createRole('app')
    await expect(db.hold(3, {user: 'app'})).rejects.toMatchObject({code: '53300'})
    const [n] = await db.query<{n: number}>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = 'app'")
    expect(n?.n).toBe(0)
  })

  it("with auth 'scram-sha-256', other roles need their password while the harness stays trusted", async () => {
    const db = await startPostgres({auth: 'scram-sha-256'})
    servers.push(db)
    await db.createRole('callfs', {password: 'right-horse-battery'})
    const tryLogin = async (password: string | undefined): Promise<string> => {
      const c = new pg.Client({host: '127.0.0.1', port: db.port, user: 'callfs', database: 'postgres', password})
      c.on('error', () => {})
      try {
        await c.connect()
        await c.end()
        return 'ok'
      } catch (e) {
        return (e as {code?: string}).code ?? (e as Error).message
      }
    }
    expect(await tryLogin('wrong-password')).toBe('28P01')
    expect(await tryLogin('right-horse-battery')).toBe('ok')
    expect(await db.query('SELECT 1 AS one')).toEqual([{one: 1}])
  })

  it('kill() stops and resumes the postmaster; stop() shuts it down and removes its files', async () => {
    const db = await startPostgres()
    const state = (): string | undefined => readFileSync(`/proc/${db.pid}/stat`, 'utf8').split(' ')[2]
    db.kill('SIGSTOP')
    for (let i = 0; i < 50 && state() !== 'T'; i++) await sleep(10) // delivery is asynchronous
    expect(state()).toBe('T')
    db.kill('SIGCONT')
    expect(await db.query('SELECT 1 AS one')).toEqual([{one: 1}])
    db.kill('SIGSTOP') // stop() must cope with a stopped server
    await db.stop()
    expect(isAlive(db.pid)).toBe(false)
    expect(existsSync(db.dataDir)).toBe(false)
    await db.stop() // twice is fine
  })
})

describe('startRedis', () => {
  it('runs its own redis-server with DEBUG enabled and nothing persisted; stop() removes it', async () => {
    const redis = await startRedis()
    expect(redis.port).not.toBe(6379)
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}/0`)
    expect(cmdline(redis.pid)).toContain(`127.0.0.1:${redis.port}`)
    expect(await redis.cli('PING')).toBe('PONG')
    expect(await redis.cli('CONFIG', 'GET', 'save')).toBe('["save",""]')
    expect(await redis.cli('CONFIG', 'GET', 'appendonly')).toBe('["appendonly","no"]')
    expect(await redis.cli('DEBUG', 'POPULATE', '10', 'x:')).toBe('OK')
    expect(await redis.cli('DBSIZE')).toBe('10')
    const [dir] = JSON.parse(await redis.cli('CONFIG', 'GET', 'dir')).slice(1) as string[]
    expect(dir && existsSync(dir)).toBe(true)
    await redis.stop()
    expect(isAlive(redis.pid)).toBe(false)
    expect(existsSync(dir as string)).toBe(false)
  })

  it('requires the password when given one; client() and cli() use it', async () => {
    const redis = await startRedis({password: 's3cret-pass', args: ['--maxmemory', '5mb']})
    try {
      expect(await redis.cli('CONFIG', 'GET', 'maxmemory')).toBe(`["maxmemory","${5 * 1024 * 1024}"]`)
      const r = await redis.client()
      expect(await r.set('k', 'v')).toBe('OK')
      await r.quit()
      const raw = await new Promise<string>((done) => {
        const s = connect(redis.port, '127.0.0.1', () => s.write('GET k\r\n'))
        s.once('data', (d) => {
          done(d.toString())
          s.destroy()
        })
      })
      expect(raw).toMatch(/^-NOAUTH/)
    } finally {
      await redis.stop()
    }
  })

  it('pause() leaves connections accepted but unanswered until resume()', async () => {
    const redis = await startRedis()
    try {
      redis.pause()
      const answer = new Promise<string>((done) => {
        const s = connect(redis.port, '127.0.0.1', () => s.write('PING\r\n'))
        s.once('data', (d) => {
          done(d.toString().trim())
          s.destroy()
        })
      })
      const early = await Promise.race([answer, sleep(300).then(() => 'no answer')])
      expect(early).toBe('no answer')
      redis.resume()
      expect(await answer).toBe('+PONG')
    } finally {
      await redis.stop()
    }
  })
})

describe.concurrent('servers never outlive the test process', () => {
  const script = (end: string): string => `
    import {startPostgres} from ${JSON.stringify(join(repo, 'test/support/postgres.ts'))}
    import {startRedis} from ${JSON.stringify(join(repo, 'test/support/redis.ts'))}
    import {testRoot} from ${JSON.stringify(join(repo, 'test/support/ports.ts'))}
    const db = await startPostgres()
    const redis = await startRedis()
    const root = (await testRoot()).dir
    console.log(JSON.stringify({pg: db.pid, redis: redis.pid, dataDir: db.dataDir, root}))
    db.kill('SIGSTOP')
    redis.pause()
    ${end}
  `

  // Outside vitest (no inject, no OPSCTL_TEST_ROOT) the harness makes its own root; it may
  // borrow this run's template to skip initdb.
  let bareEnv: NodeJS.ProcessEnv = {}
  beforeAll(async () => {
    bareEnv = {PATH: process.env.PATH, HOME: process.env.HOME, OPSCTL_TEST_PG_TEMPLATE: await postgresTemplate()}
  })

  it('a process that exits without stopping them takes them along (exit hook), even stopped ones', async () => {
    const out = await runScript(script('process.exit(3)'), bareEnv)
    expect(out.code).toBe(3)
    const {pg: pgPid, redis: redisPid, dataDir, root} = JSON.parse(out.stdout) as {pg: number; redis: number; dataDir: string; root: string}
    try {
      expect(await waitDead(redisPid)).toBe(true)
      expect(await waitDead(pgPid)).toBe(true)
      expect(existsSync(dataDir)).toBe(false)
      expect(existsSync(root)).toBe(false)
    } finally {
      rmSync(root, {recursive: true, force: true})
    }
  })

  it('a process killed outright leaves them listed, and the run-end reaper kills them', async () => {
    const out = await runScript(script("console.log('SELF-KILL'); await new Promise(() => {})"), bareEnv)
    expect(out.signal).toBe('SIGKILL')
    const {pg: pgPid, redis: redisPid, root} = JSON.parse(out.stdout.split('\n')[0] ?? '{}') as {pg: number; redis: number; root: string}
    try {
      expect(isAlive(pgPid) && isAlive(redisPid)).toBe(true) // orphaned, still running
      await reapServers(root)
      expect(await waitDead(redisPid)).toBe(true)
      expect(await waitDead(pgPid)).toBe(true)
    } finally {
      rmSync(root, {recursive: true, force: true})
    }
  })

})
