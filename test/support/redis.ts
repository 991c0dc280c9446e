// Throwaway Redis servers for the tests, started from the installed redis-server on free ports
// so a test can break them on purpose (SIGSTOP, requirepass, fill them) without touching the
// machine's own Redis on 6379.
//
// Usage — one server per test file, stopped after it:
//
//   const redis = await startRedis()
//   afterAll(() => redis.stop())
//
// or per test: `onTestFinished(() => redis.stop())`. A test that pause()s the server resumes it
// itself; stop() resumes it anyway. Every client() a test opens must be quit by that test.
//
// The server: redis-server --port P --bind 127.0.0.1 --save "" --appendonly no --dir <tmp>
// --daemonize no --enable-debug-command local (DEBUG POPULATE fills it fast), + --requirepass.
import {spawn} from 'node:child_process'
import {closeSync, existsSync, openSync, readFileSync} from 'node:fs'
import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'
import {Redis} from 'ioredis'
import {freePort, isAlive, sleep, testRoot, trackServer, untrackServer} from './ports.js'

export interface TestRedis {
  port: number
  host: '127.0.0.1'
  /** redis://127.0.0.1:port/0 (no password in it; see `password`). */
  url: string
  pid: number
  password: string | undefined
  /** Runs one command on a short-lived client; a string reply as is, numbers as digits, anything else as JSON. */
  cli(...args: string[]): Promise<string>
  /** A connected client (authenticated when the server has a password); the test must quit() it. */
  client(): Promise<Redis>
  /** SIGTERM (after resuming it), then the scratch dir is removed. Safe to call twice. */
  stop(): Promise<void>
  /** SIGSTOP / SIGCONT the server process: it keeps accepting TCP connections and never answers. */
  pause(): void
  resume(): void
}

export interface StartRedisOptions {
  password?: string
  /** Extra redis-server arguments, e.g. ['--maxmemory', '10mb']. */
  args?: string[]
}

function redisServerBin(): string {
  if (process.env.OPSCTL_TEST_REDIS_SERVER) return process.env.OPSCTL_TEST_REDIS_SERVER
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/bin', '/usr/local/bin']) {
    if (dir && existsSync(join(dir, 'redis-server'))) return join(dir, 'redis-server')
  }
  throw new Error('redis-server not found on PATH: apt-get install redis-server')
}

function logText(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

export async function startRedis(opts: StartRedisOptions = {}): Promise<TestRedis> {
  const root = await testRoot()
  const dir = await mkdtemp(join(root.dir, 'redis-'))
  const logPath = join(dir, 'redis.log')
  let port = 0
  let pid = 0
  for (let attempt = 1; ; attempt++) {
    port = await freePort()
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir]
    args.push('--daemonize', 'no', '--enable-debug-command', 'local', '--logfile', logPath)
    if (opts.password !== undefined) args.push('--requirepass', opts.password)
    args.push(...(opts.args ?? []))
    const logFd = openSync(logPath, 'a', 0o644) // startup errors before --logfile applies
    const child = spawn(redisServerBin(), args, {cwd: dir, stdio: ['ignore', logFd, logFd]})
    closeSync(logFd)
    child.unref() // a forgotten server must not keep the worker alive; the exit hook kills it
    let exited = false
    child.once('exit', () => (exited = true))
    child.once('error', () => (exited = true))
    const started = Date.now()
    while (!exited && !/Ready to accept connections/.test(logText(logPath)) && Date.now() - started < 15_000) await sleep(10)
    if (!exited && child.pid && /Ready to accept connections/.test(logText(logPath))) {
      pid = child.pid
      break
    }
    if (!exited) child.kill('SIGKILL')
    const tail = (await readFile(logPath, 'utf8').catch(() => '')).trim().split('\n').slice(-6).join('\n')
    if (/Address already in use/i.test(tail) && attempt < 5) continue
    await rm(dir, {recursive: true, force: true})
    throw new Error(`redis-server did not start on port ${port}:\n${tail}`)
  }
  // redis-server rewrites its title to "redis-server 127.0.0.1:PORT": that proves a pid is ours.
  await trackServer({pid, marker: `127.0.0.1:${port}`, signal: 'SIGKILL', dir})

  const client = async (): Promise<Redis> => {
    const r = new Redis({
      host: '127.0.0.1',
      port,
      password: opts.password,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      enableOfflineQueue: false,
      connectTimeout: 5000,
    })
    r.on('error', () => {}) // surfaced by the command that fails
    try {
      await r.connect()
    } catch (error) {
      r.disconnect()
      throw error
    }
    return r
  }

  let stopped: Promise<void> | undefined
  return {
    port,
    host: '127.0.0.1',
    url: `redis://127.0.0.1:${port}/0`,
    pid,
    password: opts.password,
    async cli(...args) {
      const [command, ...rest] = args
      if (command === undefined) throw new Error('cli() needs a command')
      const r = await client()
      try {
        const reply: unknown = await r.call(command, ...rest)
        if (typeof reply === 'string') return reply
        if (typeof reply === 'number') return String(reply)
        return JSON.stringify(reply)
      } finally {
        r.disconnect()
      }
    },
    client,
    stop() {
      stopped ??= (async () => {
        try {
          process.kill(pid, 'SIGCONT')
          process.kill(pid, 'SIGTERM')
        } catch {
          // already gone
        }
        const deadline = Date.now() + 5000
        while (isAlive(pid) && Date.now() < deadline) await sleep(10)
        if (isAlive(pid)) process.kill(pid, 'SIGKILL')
        await untrackServer(pid)
        await rm(dir, {recursive: true, force: true, maxRetries: 3})
      })()
      return stopped
    },
    pause() {
      process.kill(pid, 'SIGSTOP')
    },
    resume() {
      process.kill(pid, 'SIGCONT')
    },
  }
}
