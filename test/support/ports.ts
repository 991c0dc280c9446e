// Where the suite's throwaway servers live and how they die.
//
// - freePort(): a free TCP port on 127.0.0.1, for servers that must be told their port up
//   front (postgres, redis-server). Another process can take it between this call and the
//   bind, so callers that start a server retry with a new port when the bind fails.
// - testRoot(): one scratch directory per `vitest run` (made by global-setup.ts, handed to the
//   workers with provide/inject), or per process when the harness is used outside vitest.
// - trackServer(): every server process is written down in <root>/procs and killed when the
//   test process exits (even without teardown: a crashed worker, Ctrl-C); global-setup.ts
//   reaps whatever is still listed when the run ends.
import {execFileSync} from 'node:child_process'
import {mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, chmodSync, mkdirSync, unlinkSync} from 'node:fs'
import {createServer} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen({host: '127.0.0.1', port: 0, exclusive: true}, () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('could not obtain a free port'))))
    })
  })
}

/** Set by global-setup.ts for the workers (and read back by testRoot()). */
export const ROOT_ENV = 'OPSCTL_TEST_ROOT'

/** Makes a run's scratch root: world-traversable, so servers running as `postgres` reach their dirs. */
export function makeRoot(): string {
  const dir = mkdtempSync(join(tmpdir(), 'opsctl-test-'))
  chmodSync(dir, 0o755)
  mkdirSync(join(dir, 'procs'))
  return dir
}

let root: {dir: string; owned: boolean} | undefined

/**
 * The run's scratch root. `owned` is false when global-setup.ts made it (it also builds the
 * shared PostgreSQL template there and removes it at the end), true when this process made
 * its own because it runs without the suite's global setup.
 */
export async function testRoot(): Promise<{dir: string; owned: boolean}> {
  if (root) return root
  let dir: string | undefined
  try {
    const {inject} = await import('vitest')
    dir = inject('opsctlTestRoot')
  } catch {
    dir = undefined
  }
  dir ??= process.env[ROOT_ENV]
  if (dir) {
    root = {dir, owned: false}
  } else {
    root = {dir: makeRoot(), owned: true}
  }
  return root
}

interface Tracked {
  pid: number
  /** A piece of /proc/<pid>/cmdline that proves the pid is still ours (not reused). */
  marker: string
  /** Signal that ends it without waiting: SIGQUIT (postgres: immediate shutdown, reaps its children) or SIGKILL. */
  signal: NodeJS.Signals
  /** Scratch directory removed with it. */
  dir: string
}

const tracked = new Map<number, Tracked>()
let exitHookInstalled = false

function recordFile(dir: string, pid: number): string {
  return join(dir, 'procs', String(pid))
}

/** Writes a server down so it cannot outlive the test process or the run. */
export async function trackServer(t: Tracked): Promise<void> {
  const {dir} = await testRoot()
  tracked.set(t.pid, t)
  writeFileSync(recordFile(dir, t.pid), JSON.stringify(t))
  if (!exitHookInstalled) {
    exitHookInstalled = true
    // 'exit' handlers must be synchronous: signal every server, remove what we can. A postgres
    // told SIGQUIT finishes its immediate shutdown on its own after we are gone.
    process.once('exit', () => {
      for (const s of tracked.values()) killIfOurs(s)
      for (const s of tracked.values()) rmSync(s.dir, {recursive: true, force: true, maxRetries: 2})
      if (root?.owned) rmSync(root.dir, {recursive: true, force: true, maxRetries: 2})
    })
  }
}

/** The server stopped normally: forget it. */
export async function untrackServer(pid: number): Promise<void> {
  tracked.delete(pid)
  const {dir} = await testRoot()
  try {
    unlinkSync(recordFile(dir, pid))
  } catch {
    // already reaped
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function isOurs(t: Tracked): boolean {
  try {
    return readFileSync(`/proc/${t.pid}/cmdline`, 'utf8').replaceAll('\0', ' ').includes(t.marker)
  } catch {
    return false
  }
}

function killIfOurs(t: Tracked): void {
  if (!isOurs(t)) return
  try {
    process.kill(t.pid, 'SIGCONT') // a stopped process cannot act on SIGQUIT
    process.kill(t.pid, t.signal)
  } catch {
    // gone meanwhile
  }
}

/** Kills every server still listed under `dir` (the run's end, after all workers). */
export async function reapServers(dir: string): Promise<void> {
  let names: string[] = []
  try {
    names = readdirSync(join(dir, 'procs'))
  } catch {
    return
  }
  const left: Tracked[] = []
  for (const name of names) {
    try {
      const t = JSON.parse(readFileSync(join(dir, 'procs', name), 'utf8')) as Tracked
      killIfOurs(t)
      left.push(t)
    } catch {
      // unreadable record: nothing to do
    }
  }
  const deadline = Date.now() + 5000
  while (left.some((t) => isOurs(t) && isAlive(t.pid)) && Date.now() < deadline) await sleep(50)
  for (const t of left) {
    if (isOurs(t)) {
      try {
        process.kill(t.pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** uid/gid of a system user, from /etc/passwd (`id` would work too; this needs no process). */
export function systemUser(name: string): {uid: number; gid: number} | undefined {
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const [user, , uid, gid] = line.split(':')
      if (user === name && uid !== undefined && gid !== undefined) return {uid: Number(uid), gid: Number(gid)}
    }
  } catch {
    // no passwd file
  }
  return undefined
}

/** chown -R, for scratch dirs handed to a server that runs as another user. */
export function chownTree(path: string, user: {uid: number; gid: number}): void {
  execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, path])
}

declare module 'vitest' {
  export interface ProvidedContext {
    opsctlTestRoot: string
  }
}
