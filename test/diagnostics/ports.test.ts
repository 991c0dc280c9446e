import {spawn, type ChildProcess} from 'node:child_process'
import {readFileSync} from 'node:fs'
import net from 'node:net'
import {createInterface} from 'node:readline'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {
  decodeProcAddress,
  formatIpv6,
  inUnitCgroup,
  listenersOnPort,
  listenersViaSs,
  maskCommandLine,
  parseProcNetTcp,
  parseSsListeners,
  processCgroups,
  processStartTime,
  startTimeToDate,
} from '../../src/diagnostics/ports.js'
import {LoopbackServers} from './fixtures/servers.js'

const children: ChildProcess[] = []
const strays: number[] = [] // grandchildren (forked workers) to kill as well
const servers = new LoopbackServers()
const listen = (host: string): Promise<number> => servers.serve(net.createServer(), host)

/** Starts a real process and waits for the first line it prints (the port it listens on). */
function spawnListener(cmd: string, args: string[]): Promise<{child: ChildProcess; port: number; extra: string[]}> {
  const child = spawn(cmd, args, {stdio: ['ignore', 'pipe', 'inherit']})
  children.push(child)
  return new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', (code) => reject(new Error(`${cmd} exited with ${code}`)))
    createInterface({input: child.stdout!}).once('line', (line) => {
      const [port, ...extra] = line.trim().split(' ')
      resolve({child, port: Number(port), extra})
    })
  })
}

const NODE_LISTENER = "const s=require('net').createServer().listen(0,'127.0.0.1',()=>console.log(s.address().port));setTimeout(()=>{},60000)"

let selfPort: number
let v6Port: number
beforeAll(async () => {
  selfPort = await listen('127.0.0.1')
  v6Port = await listen('::1')
})
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL')
  for (const pid of strays) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
  await servers.closeAll()
})

describe('decoding /proc/net/tcp', () => {
  it('little-endian words, IPv4 and IPv6', () => {
    expect(decodeProcAddress('0100007F:1F90')).toEqual({address: '127.0.0.1', port: 8080, family: 4})
    expect(decodeProcAddress('00000000:0050')).toEqual({address: '0.0.0.0', port: 80, family: 4})
    expect(decodeProcAddress('00000000000000000000000001000000:20FB')).toEqual({address: '::1', port: 8443, family: 6})
    expect(decodeProcAddress('00000000000000000000000000000000:1F90')).toEqual({address: '::', port: 8080, family: 6})
    expect(decodeProcAddress('0000000000000000FFFF00000100007F:0050')).toEqual({address: '::ffff:127.0.0.1', port: 80, family: 6})
    expect(decodeProcAddress('B80D0120000000000000000001000000:0050')?.address).toBe('2001:db8::1')
    expect(formatIpv6([0xfe80, 0, 0, 0, 0xfc, 0xff, 0xfe00, 1])).toBe('fe80::fc:ff:fe00:1')
    expect(formatIpv6([1, 0, 2, 0, 3, 0, 4, 0])).toBe('1:0:2:0:3:0:4:0')
  })

  it('keeps LISTEN rows on the port only', () => {
    const table = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 9018 1 0000000000000000 100 0 0 10 0',
      '   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000   107        0 9999 1 0000000000000000 20 4 30 10 -1',
      '   2: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0',
    ].join('\n')
    expect(parseProcNetTcp(table, 8080)).toEqual([{address: '127.0.0.1', port: 8080, family: 4, uid: 107, inode: 9018}])
  })

  it('reads ss output too', () => {
    const out = [
      'LISTEN 0      511    127.0.0.1:6379  0.0.0.0:* users:(("redis-server",pid=2205,fd=6)) ino:4760 sk:4 cgroup:/ <->',
      'LISTEN 0      4096       [::1]:6379     [::]:* users:(("redis-server",pid=2205,fd=7)) uid:106 ino:6071 sk:a cgroup:/ v6only:1 <->',
      'LISTEN 0      128      0.0.0.0:2024  0.0.0.0:* ino:1184 sk:1 cgroup:/ <->',
      'LISTEN 0      128            *:6380        *:* uid:5 ino:77 sk:1 cgroup:/ <->',
    ].join('\n')
    const l = parseSsListeners(out, 6379)
    expect(l.map((x) => [x.address, x.family, x.pid, x.command, x.inode, x.uid])).toEqual([
      ['127.0.0.1', 4, 2205, 'redis-server', 4760, 0],
      ['::1', 6, 2205, 'redis-server', 6071, 106],
    ])
    expect(parseSsListeners(out, 2024)[0]).toMatchObject({pid: null, command: null, inode: 1184})
  })
})

describe('listenersOnPort', () => {
  it('finds this process listening on 127.0.0.1', async () => {
    const r = await listenersOnPort(selfPort, {timeoutMs: 3000})
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.value).toHaveLength(1)
    const l = r.value[0]!
    expect(l).toMatchObject({address: '127.0.0.1', port: selfPort, family: 4, pid: process.pid, uid: process.getuid!()})
    expect(l.inode).toBeGreaterThan(0)
    expect(l.command).toBe(readFileSync('/proc/self/comm', 'utf8').trim())
    const raw = readFileSync('/proc/self/cmdline', 'utf8').split('\0').filter(Boolean).join(' ')
    expect(l.cmdline).toBe(raw.slice(0, 300))
    expect(l.startTime).toBe(await processStartTime(process.pid))
  })

  it('finds an IPv6 (::1) listener', async () => {
    const r = await listenersOnPort(v6Port, {timeoutMs: 3000})
    expect(r.ok && r.value.map((l) => [l.address, l.family, l.pid])).toEqual([['::1', 6, process.pid]])
  })

  it('finds another process: pid, command, cmdline (credentials masked), start time', async () => {
    const {child, port} = await spawnListener(process.execPath, ['-e', NODE_LISTENER, '--', '--api-key=hunter2-secret-value'])
    const r = await listenersOnPort(port, {timeoutMs: 3000})
    expect(r.ok).toBe(true)
    if (!r.ok) return
    const l = r.value[0]!
    expect(l.pid).toBe(child.pid)
    expect(l.command).toBe('node')
    expect(l.cmdline).toContain('-e const s=require')
    expect(l.cmdline).toContain('--api-key=***')
    expect(l.cmdline).not.toContain('hunter2')
    // Who it is, for plans that must not carry the arguments: the program, its cgroups, when it started.
    expect(l.argv0).toBe(process.execPath)
    expect(l.cgroups).toEqual(await processCgroups(child.pid!))
    expect(l.cgroups?.length).toBeGreaterThan(0)
    expect(l.startedAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    expect(Math.abs(Date.parse(l.startedAt!) - Date.now())).toBeLessThan(120_000)
    expect(l.cmdline!.length).toBeLessThanOrEqual(300)
    const start = await processStartTime(child.pid!)
    expect(start).not.toBeNull()
    expect(l.startTime).toBe(start)
    // Started after this test process.
    expect(start!).toBeGreaterThanOrEqual((await processStartTime(process.pid))!)
  })

  it('names the parent of a pre-fork server, not a worker sharing the socket', async () => {
    const script = [
      'import os, socket, sys, time',
      's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()',
      'pid = os.fork()',
      'if pid: print(s.getsockname()[1], pid, flush=True)',
      'time.sleep(60)',
    ].join('\n')
    const {child, port, extra} = await spawnListener('/usr/bin/python3', ['-c', script])
    strays.push(Number(extra[0]))
    const r = await listenersOnPort(port, {timeoutMs: 3000})
    expect(r.ok && r.value.map((l) => l.pid)).toEqual([child.pid])
    expect(r.ok && r.value[0]?.command).toMatch(/^python3/)
  })

  it('nothing on a free port', async () => {
    const port = await servers.closedPort()
    const r = await listenersOnPort(port, {timeoutMs: 3000})
    expect(r.ok && r.value).toEqual([])
  })

  it('the ss fallback gives the same answer', async () => {
    const viaProc = await listenersOnPort(selfPort, {timeoutMs: 3000})
    const viaSs = await listenersViaSs(selfPort, {timeoutMs: 3000})
    expect(viaSs.ok).toBe(true)
    if (!viaSs.ok || !viaProc.ok) return
    const pick = (l: {address: string; pid: number | null; inode: number; startTime: number | null}) => [l.address, l.pid, l.inode, l.startTime]
    expect(viaSs.value.map(pick)).toEqual(viaProc.value.map(pick))
  })

  it('invalid ports, aborts and dead pids are values, not throws', async () => {
    expect((await listenersOnPort(0, {timeoutMs: 300})).ok).toBe(false)
    const aborted = await listenersOnPort(selfPort, {timeoutMs: 300, signal: AbortSignal.abort()})
    expect(!aborted.ok && aborted.error.kind).toBe('aborted')
    expect(await processStartTime(2 ** 22 + 12345)).toBeNull()
  })
})

describe('maskCommandLine', () => {
  it('masks credential flags and URL passwords', () => {
    expect(maskCommandLine(['redis-server', '--requirepass', 'p4ss', '--port', '6379'])).toBe('redis-server --requirepass *** --port 6379')
    expect(maskCommandLine(['app', '--db-password=x', '--token=abc', '-v'])).toBe('app --db-password=*** --token=*** -v')
    expect(maskCommandLine(['callfs', '--dsn', 'postgres://callfs:secret@db:5432/callfs'])).toBe('callfs --dsn postgres://callfs:****@db:5432/callfs')
  })
})

describe('maskCommandLine: every way a credential rides on argv', () => {
  it('values of -a/-p/-k and of any flag named like a credential, spaced, attached or with =', () => {
    expect(maskCommandLine(['redis-cli', '-a', 'hunter2secret'])).toBe('redis-cli -a ***')
    expect(maskCommandLine(['app', '--key', 'sk_live_abcdef'])).toBe('app --key ***')
    expect(maskCommandLine(['app', '-p', 'hunter2secret'])).toBe('app -p ***')
    expect(maskCommandLine(['mysqld', '-phunter2secret'])).toBe('mysqld -p***')
    expect(maskCommandLine(['app', '--private-key=hunter2secret'])).toBe('app --private-key=***')
    expect(maskCommandLine(['app', '-k=hunter2secret', '-a', 'x', '-v'])).toBe('app -k=*** -a *** -v')
    expect(maskCommandLine(['app', '--auth-token', 't0k', '--client-cred=c', '--db-pwd', 'p', '--port', '6379'])).toBe('app --auth-token *** --client-cred=*** --db-pwd *** --port 6379')
    expect(maskCommandLine(['java', '-Dpassword=hunter2', '-jar', 'a.jar'])).toBe('java -Dpassword=*** -jar a.jar')
    // "-pass pass:x" (openssl) reads like "-p<password>" too: both readings are masked.
    expect(maskCommandLine(['openssl', '-pass', 'pass:hunter2'])).toBe('openssl -p*** ***')
    expect(maskCommandLine(['env', 'PGPASSWORD=hunter2', 'REDISCLI_AUTH=x', 'LANG=C', 'psql'])).toBe('env PGPASSWORD=*** REDISCLI_AUTH=*** LANG=C psql')
    // URL passwords as everywhere else in opsctl: "/", "#" and "@" unencoded in them too.
    expect(maskCommandLine(['callfs', '--dsn', 'postgres://u:pa/ss@h/db'])).toBe('callfs --dsn postgres://u:****@h/db')
    expect(maskCommandLine(['app', 'DATABASE_URL=postgres://u:p@ss#1@h/db?sslmode=require'])).toBe('app DATABASE_URL=postgres://u:****@h/db?sslmode=require')
    // argv[0] is the program, never masked; other flags and plain words pass.
    expect(maskCommandLine(['/usr/bin/keyd', '-v', '--port', '8443', 'serve'])).toBe('/usr/bin/keyd -v --port 8443 serve')
  })
})

describe('cgroups', () => {
  it('this process\'s cgroup paths, and the unit test that finds a systemd unit among them', async () => {
    const own = await processCgroups(process.pid)
    expect(own?.length).toBeGreaterThan(0)
    expect(own?.every((p) => p.startsWith('/'))).toBe(true)
    expect(await processCgroups(2 ** 22 + 12345)).toBeNull()
    expect(inUnitCgroup(['/', '/system.slice/callfs.service'], 'callfs')).toBe(true)
    expect(inUnitCgroup(['/system.slice/callfs.service/worker'], 'callfs.service')).toBe(true)
    expect(inUnitCgroup(['/system.slice/callfs-proxy.service'], 'callfs')).toBe(false)
    expect(inUnitCgroup(['/user.slice/callfs'], 'callfs')).toBe(false)
    expect(inUnitCgroup(null, 'callfs')).toBe(false)
  })

  it('start times read as wall-clock times', async () => {
    const mine = await processStartTime(process.pid)
    const at = await startTimeToDate(mine!)
    expect(Date.parse(at!)).toBeLessThanOrEqual(Date.now())
    expect(Date.parse(at!)).toBeGreaterThan(Date.now() - 3600_000)
  })
})
