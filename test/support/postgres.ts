// Throwaway PostgreSQL servers for the tests, started from the installed binaries on free
// ports so a test can break them on purpose (exhaust connections, SIGSTOP the postmaster,
// plant locks) without touching the machine's own cluster on 5432.
//
// Usage — one server per test file, stopped after it:
//
//   const pg = await startPostgres({maxConnections: 5})
//   afterAll(() => pg.stop())
//
// or per test: `onTestFinished(() => pg.stop())`. A test that SIGSTOPs the server resumes it
// itself (`pg.kill('SIGSTOP')` … `pg.kill('SIGCONT')`); stop() resumes it anyway.
//
// initdb is slow, so global-setup.ts runs it once per run into <root>/pg-template (trust auth,
// user postgres, no fsync), in the background; startPostgres() copies that template (`cp -a`)
// and starts `postgres -D copy -p PORT -k SOCKDIR -c …`. Without the global setup (a scratch
// script), the first startPostgres() builds the template itself. As root, the binaries run as
// the `postgres` user (they refuse root): spawn's uid/gid does what `runuser -u postgres`
// would, without a process in between, so `pid` is the postmaster's.
import {execFile, spawn} from 'node:child_process'
import {existsSync, openSync, closeSync, readdirSync, readFileSync} from 'node:fs'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {promisify} from 'node:util'
import pg from 'pg'
import {chownTree, freePort, isAlive, sleep, systemUser, testRoot, trackServer, untrackServer} from './ports.js'

const execFileP = promisify(execFile)

export interface TestPostgres {
  port: number
  host: '127.0.0.1'
  /** postgres://user@127.0.0.1:port/db (default db 'postgres', user 'postgres'). */
  dsn(db?: string, user?: string): string
  /** Runs one statement as the superuser on a short-lived client. */
  query<R = Record<string, unknown>>(sql: string, params?: unknown[], db?: string): Promise<R[]>
  createDatabase(name: string, owner?: string): Promise<void>
  createRole(name: string, opts?: {superuser?: boolean; password?: string; connectionLimit?: number}): Promise<void>
  /** Opens n real idle client connections (as `user`, to `db`) and keeps them open until released. */
  hold(
    n: number,
    opts?: {db?: string; user?: string; password?: string; applicationName?: string; state?: 'idle' | 'idle in transaction'},
  ): Promise<{release(): Promise<void>; pids: number[]}>
  /** Fast shutdown, then the data dir is removed. Safe to call twice. */
  stop(): Promise<void>
  /** Signals the postmaster, e.g. SIGSTOP / SIGCONT. */
  kill(signal: NodeJS.Signals): void
  pid: number
  /** The copied data directory (pg_hba.conf, postgresql.auto.conf, the log in ../postgres.log). */
  dataDir: string
}

export interface StartPostgresOptions {
  maxConnections?: number
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string>
  /**
   * Authentication for TCP connections other than the superuser `postgres` (which stays
   * trusted, so the harness can always administer the server). Default 'trust'.
   */
  auth?: 'trust' | 'scram-sha-256' | 'md5' | 'password'
}

/** The highest installed PostgreSQL's bin directory (Debian layout), or initdb found on PATH. */
export function postgresBinDir(): string {
  if (process.env.OPSCTL_TEST_PG_BIN) return process.env.OPSCTL_TEST_PG_BIN
  const base = '/usr/lib/postgresql'
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter((v) => existsSync(join(base, v, 'bin', 'initdb')) && existsSync(join(base, v, 'bin', 'postgres')))
        .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a))
    : []
  const best = versions[0]
  if (best !== undefined) return join(base, best, 'bin')
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres'))) return dir
  }
  throw new Error('PostgreSQL binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin or on PATH: apt-get install postgresql')
}

/** As root, run the server binaries as `postgres`; otherwise as ourselves. */
function serverUser(): {uid: number; gid: number} | undefined {
  if (process.getuid?.() !== 0) return undefined
  const user = systemUser('postgres')
  if (!user) throw new Error('running as root but there is no `postgres` user to run PostgreSQL as')
  return user
}

const serverEnv = (): NodeJS.ProcessEnv => ({PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', LANG: 'C'})

/** initdb into `<dir>/pg-template`; writes `pg-template.ready` or `pg-template.error` beside it. */
export async function buildPostgresTemplate(dir: string): Promise<string> {
  const template = join(dir, 'pg-template')
  const user = serverUser()
  try {
    const work = await mkdtemp(join(dir, 'pg-initdb-'))
    if (user) chownTree(work, user)
    await execFileP(
      join(postgresBinDir(), 'initdb'),
      ['-D', join(work, 'data'), '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C', '--wal-segsize=1'],
      {cwd: work, env: serverEnv(), timeout: 60_000, ...(user ?? {})},
    )
    await execFileP('mv', [join(work, 'data'), template])
    await rm(work, {recursive: true, force: true})
    await writeFile(`${template}.ready`, '')
    return template
  } catch (error) {
    const e = error as {message?: string; stderr?: string}
    await writeFile(`${template}.error`, `initdb failed: ${e.stderr || e.message || String(error)}`)
    throw error
  }
}

let ownTemplate: Promise<string> | undefined

/** The initdb'd template every server is copied from ($OPSCTL_TEST_PG_TEMPLATE, if set, is used as is). */
export async function postgresTemplate(): Promise<string> {
  if (process.env.OPSCTL_TEST_PG_TEMPLATE) return process.env.OPSCTL_TEST_PG_TEMPLATE
  const root = await testRoot()
  if (root.owned) {
    ownTemplate ??= buildPostgresTemplate(root.dir)
    return ownTemplate
  }
  // global-setup.ts builds it in the background while the files are collected.
  const template = join(root.dir, 'pg-template')
  const deadline = Date.now() + 60_000
  for (;;) {
    if (existsSync(`${template}.ready`)) return template
    if (existsSync(`${template}.error`)) throw new Error(readFileSync(`${template}.error`, 'utf8'))
    if (Date.now() > deadline) throw new Error(`PostgreSQL template ${template} not ready after 60s`)
    await sleep(25)
  }
}

const ident = (name: string): string => `"${name.replaceAll('"', '""')}"`
const literal = (text: string): string => `'${text.replaceAll("'", "''")}'`

function hbaFor(auth: NonNullable<StartPostgresOptions['auth']>): string {
  return [
    '# written by test/support/postgres.ts',
    'local all all trust',
    'host all postgres 127.0.0.1/32 trust',
    `host all all 127.0.0.1/32 ${auth}`,
    '',
  ].join('\n')
}

async function logTail(path: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim().split('\n').slice(-8).join('\n')
  } catch {
    return '(no log)'
  }
}

/** postmaster.pid line 8 is the server's state: "starting", "ready", "stopping". */
function postmasterState(dataDir: string): string | undefined {
  try {
    return readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[7]?.trim()
  } catch {
    return undefined
  }
}

export async function startPostgres(opts: StartPostgresOptions = {}): Promise<TestPostgres> {
  const template = await postgresTemplate()
  const root = await testRoot()
  const user = serverUser()
  const dir = await mkdtemp(join(root.dir, 'pg-'))
  const dataDir = join(dir, 'data')
  const sockDir = join(dir, 'sock')
  const logPath = join(dir, 'postgres.log')
  await execFileP('cp', ['-a', template, dataDir])
  await execFileP('mkdir', ['-m', '0700', sockDir])
  if (opts.auth && opts.auth !== 'trust') await writeFile(join(dataDir, 'pg_hba.conf'), hbaFor(opts.auth))
  if (user) chownTree(dir, user)

  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    shared_buffers: '16MB',
    max_connections: String(opts.maxConnections ?? 40),
    ...opts.settings,
  }

  let port = 0
  let pid = 0
  for (let attempt = 1; ; attempt++) {
    port = await freePort()
    const args = ['-D', dataDir, '-p', String(port), '-k', sockDir]
    for (const [name, value] of Object.entries(settings)) args.push('-c', `${name}=${value}`)
    const logFd = openSync(logPath, 'a', 0o644)
    const child = spawn(join(postgresBinDir(), 'postgres'), args, {
      cwd: dir,
      env: serverEnv(),
      stdio: ['ignore', logFd, logFd],
      ...(user ?? {}),
    })
    closeSync(logFd)
    child.unref() // a forgotten server must not keep the worker alive; the exit hook kills it
    let exited: number | null | undefined
    child.once('exit', (code, signal) => (exited = code ?? (signal ? -1 : null)))
    child.once('error', () => (exited = -1))
    const started = Date.now()
    while (exited === undefined && postmasterState(dataDir) !== 'ready' && Date.now() - started < 30_000) await sleep(15)
    if (exited === undefined && postmasterState(dataDir) === 'ready' && child.pid) {
      pid = child.pid
      break
    }
    if (exited === undefined) child.kill('SIGKILL')
    const tail = await logTail(logPath)
    if (/Address already in use/i.test(tail) && attempt < 5) continue
    await rm(dir, {recursive: true, force: true})
    throw new Error(`PostgreSQL did not start on port ${port}:\n${tail}`)
  }
  await trackServer({pid, marker: dataDir, signal: 'SIGQUIT', dir})

  const connect = async (database = 'postgres', role = 'postgres', password?: string): Promise<pg.Client> => {
    const client = new pg.Client({host: '127.0.0.1', port, user: role, database, password, connectionTimeoutMillis: 5000})
    client.on('error', () => {}) // a server killed under a held client must not crash the test
    try {
      await client.connect()
    } catch (error) {
      forceClose(client)
      throw error
    }
    return client
  }

  const query = async <R = Record<string, unknown>>(sql: string, params?: unknown[], db?: string): Promise<R[]> => {
    const client = await connect(db)
    try {
      const result = await client.query(sql, params)
      return result.rows as R[]
    } finally {
      await endClient(client)
    }
  }

  let stopped: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      try {
        process.kill(pid, 'SIGCONT')
        process.kill(pid, 'SIGINT') // fast shutdown: ends the backends, no checkpoint wait
      } catch {
        // already gone
      }
      const deadline = Date.now() + 10_000
      while (isAlive(pid) && Date.now() < deadline) await sleep(20)
      if (isAlive(pid)) process.kill(pid, 'SIGKILL')
      await untrackServer(pid)
      await rm(dir, {recursive: true, force: true, maxRetries: 3})
    })()
    return stopped
  }

  return {
    port,
    host: '127.0.0.1',
    pid,
    dataDir,
    dsn: (db = 'postgres', role = 'postgres') => `postgres://${encodeURIComponent(role)}@127.0.0.1:${port}/${encodeURIComponent(db)}`,
    query,
    async createDatabase(name, owner) {
      await query(`CREATE DATABASE ${ident(name)}${owner ? ` OWNER ${ident(owner)}` : ''}`)
    },
    async createRole(name, o = {}) {
      let sql = `CREATE ROLE ${ident(name)} LOGIN`
      if (o.superuser) sql += ' SUPERUSER'
      if (o.password !== undefined) sql += ` PASSWORD ${literal(o.password)}`
      if (o.connectionLimit !== undefined) sql += ` CONNECTION LIMIT ${Math.trunc(o.connectionLimit)}`
      await query(sql)
    },
    async hold(n, o = {}) {
      const opened = await Promise.allSettled(
        Array.from({length: n}, async () => {
          const client = await connect(o.db, o.user, o.password)
          await client.query(`SET application_name = ${literal(o.applicationName ?? 'opsctl-test-hold')}`)
          const rows = (await client.query<{pid: number}>('SELECT pg_backend_pid() AS pid')).rows
          if (o.state === 'idle in transaction') await client.query('BEGIN')
          return {client, pid: rows[0]?.pid ?? 0}
        }),
      )
      const held = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
      const release = async (): Promise<void> => {
        await Promise.all(held.map((h) => endClient(h.client)))
        // Wait until the backends are gone, so a test that frees slots can use them at once.
        const pids = held.map((h) => h.pid)
        const deadline = Date.now() + 3000
        while (Date.now() < deadline && !stopped) {
          try {
            const rows = await query<{n: number}>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ANY($1)', [pids])
            if (rows[0]?.n === 0) break
          } catch {
            break
          }
          await sleep(20)
        }
      }
      const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected')
      if (failed) {
        await release()
        throw failed.reason
      }
      return {release, pids: held.map((h) => h.pid)}
    },
    stop,
    kill(signal) {
      process.kill(pid, signal)
    },
  }
}

function forceClose(client: pg.Client): void {
  const stream = (client as unknown as {connection?: {stream?: {destroy(): void}}}).connection?.stream
  stream?.destroy()
}

/** client.end(), but never waiting on a stopped server for more than a second. */
async function endClient(client: pg.Client): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    client.end().catch(() => {}),
    new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        forceClose(client)
        resolve()
      }, 1000)
    }),
  ])
  clearTimeout(timer)
}
