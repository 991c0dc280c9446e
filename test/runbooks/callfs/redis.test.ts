// The CallFS Redis checks against real, throwaway redis-servers: refused ports, a SIGSTOPped
// server, requirepass, a real maxmemory filled and evicting, real orphaned locks among CallFS's
// other keys — and the guarded compare-and-delete applied, verified and audited, with locks
// that changed between diagnosis and fix left alone, and the simulator's own locking showing
// what an orphan does to a write.

import {execFile} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {resolve} from 'node:path'
import {promisify} from 'node:util'

import type {Redis} from 'ioredis'
import {Agent, request} from 'undici'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import type {TargetRun} from '../../../src/engine/runner.js'
import type {CheckReport, Fix} from '../../../src/engine/types.js'
import {lockScanLimits} from '../../../src/runbooks/callfs/checks-redis.js'
import {API_KEY, startCallfsWorld, type CallfsWorld} from '../../support/callfs-world.js'
import {freePort} from '../../support/ports.js'
import {startRedis, type TestRedis} from '../../support/redis.js'

// The walk's service checks call systemctl/journalctl: the fakes ("not booted"), never the host's.
process.env.PATH = `${resolve(import.meta.dirname, '../../support/fakebin')}:${process.env.PATH ?? ''}`
delete process.env.OPSCTL_FAKE_SYSTEMD_DIR

const execFileP = promisify(execFile)
const REDIS_PASSWORD = 'Callfs-Redis-Pass-93e1d'

let w: CallfsWorld
let r: Redis
let authed: TestRedis
let mem: TestRedis

beforeAll(async () => {
  ;[w, authed, mem] = await Promise.all([startCallfsWorld({redis: true, sim: {}}), startRedis({password: REDIS_PASSWORD}), startRedis()])
  r = await (w.redis as TestRedis).client()
})
afterAll(async () => {
  r?.disconnect()
  await Promise.allSettled([w?.stop(), authed?.stop(), mem?.stop()])
})
afterEach(async () => {
  await r.flushall()
})

// ---- helpers ----------------------------------------------------------------------------------

const owner = () => randomBytes(16).toString('hex') // a CallFS instance id: 32 hex chars

/** Every key with its type, exact serialized value and whether it expires. */
async function keyspace(client: Redis): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'COUNT', 1000)
    cursor = next
    for (const key of keys) {
      const [type, dump, pttl] = await Promise.all([client.type(key), client.dumpBuffer(key), client.pttl(key)])
      out.set(key, `${type}|${dump?.toString('hex')}|${pttl === -1 ? 'persistent' : 'expiring'}`)
    }
  } while (cursor !== '0')
  return out
}

/** CallFS's other keys, which no lock fix may touch: metadata, children, single-use links, sequences. */
async function plantCallfsData(n: number): Promise<void> {
  const p = r.pipeline()
  for (let i = 0; i < n; i++) {
    p.set(`callfs:md:/data/file-${i}.txt`, JSON.stringify({size: i, owner: 'root'}))
    p.sadd(`callfs:children:/data/dir-${i % 50}`, `file-${i}.txt`)
    p.hset(`callfs:sul:${i.toString(16).padStart(8, '0')}`, {path: `/data/file-${i}.txt`, status: 'active'})
    p.expire(`callfs:sul:${i.toString(16).padStart(8, '0')}`, 3600)
    p.incr(`callfs:seq:${i % 10}`)
  }
  p.set('callfs:lock', 'not under the prefix "callfs:lock:"') // a neighbour of the prefix, no expiry
  await p.exec()
}



/** The real walk of the whole flowchart, with only `id`'s fix left to apply. */
async function walkFor(id: string, overrides: Record<string, unknown> = {}): Promise<TargetRun & {check: CheckReport}> {
  const run = await w.walk(overrides)
  expect(run.report.path).toContain(id)
  for (const other of [...run.fixes.keys()]) if (other !== id) run.fixes.delete(other)
  const check = run.report.checks.find((c) => c.id === id) as CheckReport
  return Object.assign(run, {check})
}

const redisPort = () => (w.redis as TestRedis).port

/** Overrides and settings to run the checks as a Redis ACL user, and a run to apply a check's fix as that user. */
function asUser(user: string, pass: string) {
  const over = {redis: `redis://${user}@127.0.0.1:${redisPort()}/0`, redis_password_env: 'CALLFS_REDIS_PASSWORD'}
  const settings = {env: {...w.env, CALLFS_REDIS_PASSWORD: pass}}
  const run = (check: CheckReport, fix: Fix | undefined): TargetRun => {
    const target = w.target(over).name
    return {
      system: 'callfs',
      target,
      report: {system: 'callfs', target, status: check.status, durationMs: 0, path: [check.id], checks: [check]},
      fixes: new Map(fix ? [[check.id, fix]] : []),
      recheck: async (id) => w.check(id, over, settings),
    }
  }
  return {over, settings, run}
}

// ---- callfs.redis.ping --------------------------------------------------------------------------

describe('callfs.redis.ping', () => {
  it('ok: PING answered, with version, role and clients', async () => {
    const c = await w.check('callfs.redis.ping')
    expect(c.status).toBe('ok')
    const version = (await r.info('server')).match(/redis_version:(\S+)/)?.[1]
    expect(c.evidence).toMatchObject({url: `redis://127.0.0.1:${redisPort()}/0`, version, role: 'master'})
    expect(c.evidence.connectedClients).toBeGreaterThanOrEqual(2) // opsctl, this test, the simulator
    expect(c.summary).toMatch(new RegExp(`^Redis ${version} at redis://127\\.0\\.0\\.1:${redisPort()}/0 answers PING \\(master, \\d+ clients\\)$`))
  })

  it('fail: a closed port is refused; the fix says to start Redis there', async () => {
    const port = await freePort()
    const c = await w.check('callfs.redis.ping', {redis: `redis://127.0.0.1:${port}/0`})
    expect(c.status).toBe('fail')
    expect(c.evidence).toEqual({url: `redis://127.0.0.1:${port}/0`, error: 'refused'})
    expect(c.summary).toMatch(new RegExp(`^redis://127\\.0\\.0\\.1:${port}/0: .*127\\.0\\.0\\.1:${port}.*refused`))
    expect(c.remediation).toMatchObject({id: 'callfs.redis.restore-connection', automated: false})
    expect(c.remediation?.plan).toEqual([`start Redis at redis://127.0.0.1:${port}/0, or correct dlm.redis_addr / systems.callfs.redis`])
  })

  it('ok with requirepass and the password from redis_password_env; fail (auth) with a wrong one or none; no password in any report', async () => {
    const over = {redis: authed.url, redis_password_env: 'CALLFS_REDIS_PASSWORD'}
    const good = await w.check('callfs.redis.ping', over, {env: {...w.env, CALLFS_REDIS_PASSWORD: REDIS_PASSWORD}})
    expect(good.status).toBe('ok')

    const wrong = 'Wrong-Redis-Pass-0c4f'
    const bad = await w.check('callfs.redis.ping', over, {env: {...w.env, CALLFS_REDIS_PASSWORD: wrong}})
    expect(bad.status).toBe('fail')
    expect(bad.evidence).toMatchObject({error: 'auth'})
    expect(bad.summary).toMatch(/refused the credentials .*WRONGPASS/)
    expect(bad.remediation?.plan[0]).toMatch(/^set the Redis password in the variable named by systems\.callfs\.redis_password_env/)

    const none = await w.check('callfs.redis.ping', over, {env: {...w.env}})
    expect(none.status).toBe('fail')
    expect(none.evidence).toMatchObject({error: 'auth'})
    expect(none.summary).toMatch(/requires a password .*NOAUTH/)

    for (const c of [good, bad, none]) {
      expect(JSON.stringify(c)).not.toContain(REDIS_PASSWORD)
      expect(JSON.stringify(c)).not.toContain(wrong)
    }
  })

  it('ok for an ACL user that may PING but not INFO: Redis answers, only its version is unknown', async () => {
    const pass = 'Ping-Only-Pass-7d21'
    await r.call('ACL', 'SETUSER', 'opsping', 'reset', 'on', `>${pass}`, '~*', '+@connection', '-info')
    try {
      const c = await w.check('callfs.redis.ping', {redis: `redis://opsping@127.0.0.1:${redisPort()}/0`, redis_password_env: 'CALLFS_REDIS_PASSWORD'}, {
        env: {...w.env, CALLFS_REDIS_PASSWORD: pass},
      })
      expect(c.status).toBe('ok')
      expect(c.summary).toBe(`Redis at redis://opsping@127.0.0.1:${redisPort()}/0 answers PING (INFO is not permitted for this user: version and role unknown)`)
      expect(c.evidence).toMatchObject({version: null, role: null, infoDenied: true})
    } finally {
      await r.call('ACL', 'DELUSER', 'opsping')
    }
  })

  it('fail: maxclients reached; the fix is about client slots, not about starting Redis', async () => {
    const admin = await mem.client()
    try {
      await admin.config('SET', 'maxclients', '1') // this admin connection is the one
      const c = await w.check('callfs.redis.ping', {redis: mem.url})
      expect(c.status).toBe('fail')
      // Redis says "max number of clients reached" and closes; the probe may see only the close.
      expect(['capacity', 'reset']).toContain(c.evidence.error)
      expect(c.remediation?.plan.join('\n')).toMatch(/maxclients/)
      expect(c.remediation?.plan.join('\n')).not.toMatch(/^start Redis/m)
      expect(c.remediation?.commands).toEqual(expect.arrayContaining([`redis-cli -u ${mem.url} info clients`, `redis-cli -u ${mem.url} client list`]))

      // Once a slot is free again, callfs.redis.memory tells of the refused clients.
      await admin.config('SET', 'maxclients', '10000')
      const rejected = Number((await admin.info('stats')).match(/^rejected_connections:(\d+)/m)?.[1])
      expect(rejected).toBeGreaterThanOrEqual(1)
      const m = await w.check('callfs.redis.memory', {redis: mem.url})
      expect(m.status).toBe('warn')
      expect(m.summary).toBe(`${rejected} connections rejected (maxclients)`)
      expect(m.evidence.rejectedConnections).toBe(rejected)
    } finally {
      await admin.config('SET', 'maxclients', '10000')
      await admin.config('RESETSTAT')
      admin.disconnect()
    }
  })

  // diagnostics/redis.ts (not this task's file): ioredis never surfaces the server's
  // "-ERR max number of clients reached" (the socket is closed under the PING: EPIPE), so the
  // probe reports a reset instead of capacity. Reported to the lead.
  it('the probe names a maxclients refusal as capacity, with Redis\'s own words', async () => {
    const admin = await mem.client()
    try {
      await admin.config('SET', 'maxclients', '1')
      const c = await w.check('callfs.redis.ping', {redis: mem.url})
      expect(c.evidence.error).toBe('capacity')
      expect(c.summary).toMatch(/max number of clients reached/)
    } finally {
      await admin.config('SET', 'maxclients', '10000')
      await admin.config('RESETSTAT')
      admin.disconnect()
    }
  })

  it('fail within the time-out plus a margin when Redis is SIGSTOPped, with a summary that says so', async () => {
    authed.pause()
    try {
      const started = Date.now()
      const c = await w.check('callfs.redis.ping', {redis: authed.url, redis_password_env: 'CALLFS_REDIS_PASSWORD'}, {
        timeoutMs: 300,
        env: {...w.env, CALLFS_REDIS_PASSWORD: REDIS_PASSWORD},
      })
      expect(Date.now() - started).toBeLessThan(300 + 1000)
      expect(c.status).toBe('fail')
      expect(c.evidence.error).toBe('timeout')
      expect(c.summary).toMatch(/accepted the connection but did not answer within 300ms — is it stopped, overloaded or busy/)
      expect(c.remediation?.plan[0]).toMatch(/^Redis accepted but did not answer/)
    } finally {
      authed.resume()
    }
    // And once resumed it answers again.
    const after = await w.check('callfs.redis.ping', {redis: authed.url, redis_password_env: 'CALLFS_REDIS_PASSWORD'}, {env: {...w.env, CALLFS_REDIS_PASSWORD: REDIS_PASSWORD}})
    expect(after.status).toBe('ok')
  })
})

// ---- callfs.redis.memory ------------------------------------------------------------------------

describe('callfs.redis.memory', () => {
  let m: Redis
  beforeAll(async () => {
    m = await mem.client()
  })
  afterAll(() => m?.disconnect())
  afterEach(async () => {
    await m.config('SET', 'maxmemory', '0')
    await m.config('SET', 'maxmemory-policy', 'noeviction')
    await m.flushall()
    await m.config('RESETSTAT')
  })

  const usedMemory = async (): Promise<number> => Number((await m.info('memory')).match(/^used_memory:(\d+)/m)?.[1])
  /** Sets maxmemory so that what is used now is `ratio` of it. */
  const limitAt = async (ratio: number): Promise<void> => {
    await m.config('SET', 'maxmemory', String(Math.round((await usedMemory()) / ratio)))
  }
  const check = () => w.check('callfs.redis.memory', {redis: mem.url})

  it('ok: no maxmemory, nothing evicted', async () => {
    const c = await check()
    expect(c.status).toBe('ok')
    expect(c.evidence).toMatchObject({maxmemory: 'no limit', usedPercent: null, policy: 'noeviction', evictedKeys: 0, rejectedConnections: 0})
    expect(c.summary).toMatch(/^Redis uses \d+\.\d MiB, no maxmemory limit; nothing evicted$/)
  })

  it('ok below 80 % of maxmemory, warn between 80 and 95 %', async () => {
    await m.call('DEBUG', 'POPULATE', '50000', 'callfs:md:', '100')
    await limitAt(0.6)
    const low = await check()
    expect(low.status).toBe('ok')
    expect(low.evidence.usedPercent).toBeGreaterThan(55)
    expect(low.evidence.usedPercent).toBeLessThan(65)

    await limitAt(0.88)
    const c = await check()
    expect(c.status).toBe('warn')
    expect(c.evidence.usedPercent).toBeGreaterThan(85)
    expect(c.evidence.usedPercent).toBeLessThan(91)
    expect(c.summary).toMatch(/^\d+(\.\d)?% of maxmemory used$/)
    expect(c.remediation).toMatchObject({id: 'callfs.redis.memory-headroom', automated: false})
  })

  it('fail: filled past 95 % of a small maxmemory', async () => {
    await m.config('SET', 'maxmemory', '8mb')
    // Fill it for real: writes until Redis refuses them (noeviction → OOM).
    const value = 'v'.repeat(1000)
    let refused = false
    for (let batch = 0; batch < 20 && !refused; batch++) {
      const p = m.pipeline()
      for (let i = 0; i < 1000; i++) p.set(`callfs:md:/fill/${batch}/${i}`, value)
      refused = ((await p.exec()) ?? []).some(([e]) => e && /OOM/.test(String(e)))
    }
    expect(refused).toBe(true)
    const c = await check()
    expect(c.status).toBe('fail')
    expect(c.evidence.usedPercent).toBeGreaterThanOrEqual(95)
    expect(c.evidence).toMatchObject({maxmemory: '8.0 MiB', policy: 'noeviction', evictedKeys: 0})
    expect(c.summary).toMatch(/^\d+(\.\d)?% of maxmemory used$/)
  })

  it('fail: keys evicted (allkeys-lru, overfilled), naming evicted_keys and the policy', async () => {
    await m.config('SET', 'maxmemory-policy', 'allkeys-lru')
    await m.config('SET', 'maxmemory', String((await usedMemory()) + 2 * 1024 * 1024))
    const value = 'v'.repeat(1000)
    for (let batch = 0; batch < 6; batch++) {
      const p = m.pipeline()
      for (let i = 0; i < 1000; i++) p.set(`callfs:md:/evict/${batch}/${i}`, value)
      await p.exec()
    }
    // Lift the limit again: memory is fine now, but the keys evicted stay evicted (and counted).
    await m.config('SET', 'maxmemory', '0')
    const evicted = Number((await m.info('stats')).match(/^evicted_keys:(\d+)/m)?.[1])
    expect(evicted).toBeGreaterThan(0)
    expect(await m.dbsize()).toBeLessThan(6000)
    const c = await check()
    expect(c.status).toBe('fail')
    expect(c.evidence).toMatchObject({evictedKeys: evicted, policy: 'allkeys-lru', maxmemory: 'no limit'})
    expect(c.summary).toBe(`${evicted} keys evicted since start (policy allkeys-lru) — an evicted lock lets two writers in`)
    expect(c.remediation?.commands).toContain(`redis-cli -u ${mem.url} config set maxmemory-policy noeviction`)
  })
})

// ---- callfs.redis.orphaned-locks ----------------------------------------------------------------

describe('callfs.redis.orphaned-locks', () => {
  it('ok: only live locks (expiry within lock_timeout), and other CallFS keys without expiry are not locks', async () => {
    await plantCallfsData(200)
    const a = owner()
    for (let i = 0; i < 5; i++) await r.set(`callfs:lock:file:/live/${i}.txt`, a, 'EX', 30)
    const c = await w.check('callfs.redis.orphaned-locks')
    expect(c.status).toBe('ok')
    expect(c.evidence).toEqual({scanned: 5, live: 5})
    expect(c.summary).toMatch(/^5 live lock\(s\) under callfs:lock:, none orphaned; scanned 5 lock keys in \d+m?s$/)
  })

  it('fail: orphans (no expiry) among live locks and lots of other keys, with keys, owners and count', async () => {
    await plantCallfsData(2000)
    const [a, b] = [owner(), owner()]
    for (let i = 0; i < 5; i++) await r.set(`callfs:lock:file:/live/${i}.txt`, a, 'EX', 30)
    const orphans = ['callfs:lock:file:/docs/a.txt', 'callfs:lock:file:/docs/b.txt', 'callfs:lock:dir:/docs']
    await r.set(orphans[0] as string, a)
    await r.set(orphans[1] as string, a)
    await r.set(orphans[2] as string, b)
    const c = await w.check('callfs.redis.orphaned-locks')
    expect(c.status).toBe('fail')
    expect(c.summary).toBe('3 lock keys under callfs:lock: have no expiry')
    expect(c.evidence).toMatchObject({count: 3, owners: {[a]: 2, [b]: 1}, scanned: 8, live: 5})
    expect((c.evidence.keys as string[]).sort()).toEqual([...orphans].sort())
    expect(c.evidence.idleSeconds).toEqual({min: expect.any(Number), max: expect.any(Number)})
    expect(c.remediation).toMatchObject({id: 'callfs.redis.release-orphaned-locks', automated: true, risk: 'destructive'})
    expect([...(c.remediation?.plan ?? [])].sort()).toEqual(
      [`compare-and-delete ${orphans[0]} (owner ${a.slice(0, 8)}…)`, `compare-and-delete ${orphans[1]} (owner ${a.slice(0, 8)}…)`, `compare-and-delete ${orphans[2]} (owner ${b.slice(0, 8)}…)`].sort(),
    )
    expect(c.remediation?.commands).toContain(`redis-cli -u redis://127.0.0.1:${redisPort()}/0 DEL ${orphans[2]}`)
  })

  it('fail: an expiry above lock_timeout is an orphan too', async () => {
    const a = owner()
    await r.set('callfs:lock:file:/live.txt', a, 'EX', 30)
    await r.set('callfs:lock:file:/stuck.txt', a, 'EX', 3600)
    const c = await w.check('callfs.redis.orphaned-locks')
    expect(c.status).toBe('fail')
    expect(c.summary).toBe('1 have an expiry above lock_timeout 60s')
    expect(c.evidence).toMatchObject({keys: ['callfs:lock:file:/stuck.txt'], count: 1, live: 1})
    // Within a longer lock_timeout the same key is live.
    const longer = await w.check('callfs.redis.orphaned-locks', {lock_timeout: '2h'})
    expect(longer.status).toBe('ok')
  })

  it('the fix (--yes) releases exactly the orphans: every other key untouched, verified, audited', async () => {
    await plantCallfsData(2000)
    const [a, b] = [owner(), owner()]
    for (let i = 0; i < 20; i++) await r.set(`callfs:lock:file:/live/${i}.txt`, i % 2 ? a : b, 'EX', 30)
    const orphans = Array.from({length: 12}, (_, i) => `callfs:lock:file:/orphan/${i}.txt`)
    for (const [i, key] of orphans.entries()) await r.set(key, i % 3 ? a : b)
    await r.set('callfs:lock:file:/stuck.txt', a, 'EX', 7200)
    const before = await keyspace(r)

    const run = await walkFor('callfs.redis.orphaned-locks')
    expect(run.check.status).toBe('fail')
    expect(run.check.evidence.count).toBe(13)
    const audit = await w.applyYes(run)

    const after = await keyspace(r)
    const released = [...orphans, 'callfs:lock:file:/stuck.txt']
    const expected = new Map([...before].filter(([k]) => !released.includes(k)))
    expect(after).toEqual(expected)
    expect(after.size).toBe(before.size - 13)

    expect(run.check.outcome).toMatchObject({decision: 'applied', ok: true, verified: true, detail: 'released 13 of 13 locks; re-check: ok'})
    expect(audit).toHaveLength(1)
    expect(audit[0]).toMatchObject({system: 'callfs', check: 'callfs.redis.orphaned-locks', remediation: 'callfs.redis.release-orphaned-locks', decision: 'applied', verified: true})
    expect(audit[0]?.result).toEqual({ok: true, detail: 'released 13 of 13 locks; re-check: ok'})
    expect([...(audit[0]?.plan ?? [])].map((l) => /^compare-and-delete (\S+) /.exec(l)?.[1]).sort()).toEqual([...released].sort())
  })

  it('orphans whose value no guard can compare (not a string, or longer than the value cap) are shown, not deleted blind', async () => {
    const a = owner()
    await r.set('callfs:lock:file:/plain.txt', a)
    await r.hset('callfs:lock:file:/a-hash', {owner: a})
    const long = `${a}:${'x'.repeat(400)}`
    await r.set('callfs:lock:file:/long-value.txt', long)
    const run = await walkFor('callfs.redis.orphaned-locks')
    expect(run.check.evidence.count).toBe(3)
    const plan = run.check.remediation?.plan ?? []
    expect(plan.filter((l) => l.startsWith('compare-and-delete '))).toEqual([`compare-and-delete callfs:lock:file:/plain.txt (owner ${a.slice(0, 8)}…)`])
    expect(plan.filter((l) => l.startsWith('leave ')).sort()).toEqual([
      'leave callfs:lock:file:/a-hash: not a string value, so no guard can prove it unchanged — inspect it, then DEL it by hand',
      'leave callfs:lock:file:/long-value.txt: its value is longer than opsctl compares, so no guard can prove it unchanged — inspect it, then DEL it by hand',
    ])
    await w.applyYes(run)
    expect(await r.exists('callfs:lock:file:/plain.txt')).toBe(0)
    expect(await r.hget('callfs:lock:file:/a-hash', 'owner')).toBe(a)
    expect(await r.get('callfs:lock:file:/long-value.txt')).toBe(long)
    expect(run.check.outcome).toMatchObject({ok: true, verified: false})
    expect(run.check.outcome?.detail).toMatch(/^released 1 of 1 locks; re-check: fail \(2 lock keys under callfs:lock: have no expiry\)$/)
  })

  it('a lock on a path with spaces and quotes: the DEL command is one pasteable shell word (run here through sh)', async () => {
    const key = "callfs:lock:file:/my docs/it's $HOME.txt"
    await r.set(key, owner())
    const c = await w.check('callfs.redis.orphaned-locks')
    expect(c.evidence.keys).toEqual([key])
    const cmd = c.remediation?.commands[0] ?? ''
    expect(cmd).toBe(`redis-cli -u redis://127.0.0.1:${redisPort()}/0 DEL 'callfs:lock:file:/my docs/it'\\''s $HOME.txt'`)
    const {stdout} = await execFileP('sh', ['-c', cmd])
    expect(stdout.trim()).toBe('1')
    expect(await r.exists(key)).toBe(0)
  })

  it('guard: a lock re-acquired by a new owner, or given an expiry by its owner, after the diagnosis is left alone', async () => {
    const [a, b] = [owner(), owner()]
    await r.set('callfs:lock:file:/reacquired.txt', a)
    await r.set('callfs:lock:file:/renewed.txt', a)
    await r.set('callfs:lock:file:/orphan.txt', b)
    const run = await walkFor('callfs.redis.orphaned-locks')
    expect(run.check.evidence.count).toBe(3)

    // Between diagnosis and fix: the orphan was cleared and a CallFS took the lock anew …
    await r.del('callfs:lock:file:/reacquired.txt')
    const fresh = owner()
    await r.set('callfs:lock:file:/reacquired.txt', fresh, 'EX', 30)
    // … and the other got an expiry from its owner.
    await r.pexpire('callfs:lock:file:/renewed.txt', 20_000)

    await w.applyYes(run)
    expect(await r.get('callfs:lock:file:/reacquired.txt')).toBe(fresh)
    expect(await r.ttl('callfs:lock:file:/reacquired.txt')).toBeGreaterThan(25)
    expect(await r.get('callfs:lock:file:/renewed.txt')).toBe(a)
    expect(await r.pttl('callfs:lock:file:/renewed.txt')).toBeGreaterThan(15_000)
    expect(await r.exists('callfs:lock:file:/orphan.txt')).toBe(0)
    expect(run.check.outcome).toMatchObject({
      ok: true,
      verified: true,
      detail: 'released 1 of 3 locks; left alone 2: 1 re-acquired by another owner, 1 given an expiry, 0 already gone; re-check: ok',
    })
  })

  it('a read-only ACL user (no scripting) still finds the orphans; the release, whose guard is a Lua script, is offered by hand only', async () => {
    const pass = 'Ro-User-Pass-52a7e'
    await r.call('ACL', 'SETUSER', 'opsro', 'reset', 'on', `>${pass}`, '~*', '&*', '+@read', '+@connection', '+info', '-@scripting')
    try {
      const a = owner()
      await r.set('callfs:lock:file:/ro/orphan.txt', a)
      await r.set('callfs:lock:file:/ro/live.txt', a, 'EX', 30)
      const as = asUser('opsro', pass)
      const {fix, ...check} = await w.check('callfs.redis.orphaned-locks', as.over, as.settings)
      expect(check.status).toBe('fail')
      expect(check.evidence).toMatchObject({keys: ['callfs:lock:file:/ro/orphan.txt'], count: 1, owners: {[a]: 1}, live: 1})
      expect(check.remediation).toMatchObject({id: 'callfs.redis.release-orphaned-locks', automated: false, risk: null, title: 'Inspect and release the 1 orphaned lock key by hand'})
      expect(check.remediation?.plan).toEqual([
        `leave callfs:lock:file:/ro/orphan.txt (owner ${a.slice(0, 8)}…): this Redis user may not run scripts (EVAL/EVALSHA), and the guard is a Lua script — check it still has no expiry and this owner, then DEL it by hand`,
      ])
      expect(check.remediation?.commands).toEqual([`redis-cli -u redis://opsro@127.0.0.1:${redisPort()}/0 DEL callfs:lock:file:/ro/orphan.txt`])
      expect(fix?.apply).toBeUndefined()

      // --yes has nothing to apply: no attempt that could only fail at apply time.
      const audit = await w.applyYes(as.run(check, fix))
      expect(audit).toEqual([])
      expect(check.outcome).toBeNull()
      expect(await r.get('callfs:lock:file:/ro/orphan.txt')).toBe(a)
      expect(JSON.stringify([check, audit])).not.toContain(pass)
    } finally {
      await r.call('ACL', 'DELUSER', 'opsro')
    }
  })

  it('a user who may run scripts but not DEL: the release is offered by hand, naming what the ACL denies', async () => {
    const pass = 'No-Del-Pass-8e1f0'
    await r.call('ACL', 'SETUSER', 'opsnodel', 'reset', 'on', `>${pass}`, '~*', '&*', '+@read', '+@scripting', '+@connection', '+info')
    try {
      const a = owner()
      await r.set('callfs:lock:file:/nodel/orphan.txt', a)
      const as = asUser('opsnodel', pass)
      const {fix, ...check} = await w.check('callfs.redis.orphaned-locks', as.over, as.settings)
      expect(check.status).toBe('fail')
      expect(check.remediation).toMatchObject({automated: false, title: 'Inspect and release the 1 orphaned lock key by hand'})
      expect(check.remediation?.plan).toEqual([
        `leave callfs:lock:file:/nodel/orphan.txt (owner ${a.slice(0, 8)}…): the ACL denies this Redis user DEL on the lock keys — check it still has no expiry and this owner, then DEL it by hand`,
      ])
      expect(fix?.apply).toBeUndefined()
      expect(await w.applyYes(as.run(check, fix))).toEqual([])
      expect(await r.get('callfs:lock:file:/nodel/orphan.txt')).toBe(a)
    } finally {
      await r.call('ACL', 'DELUSER', 'opsnodel')
    }
  })

  it('DEL revoked between diagnosis and fix: the guard leaves the lock alone, says why, and the fix is not ok', async () => {
    const pass = 'Locker-Pass-3c9d2'
    await r.call('ACL', 'SETUSER', 'opslocker', 'reset', 'on', `>${pass}`, '~callfs:lock:*', '+@read', '+@scripting', '+del', '+@connection', '+info')
    try {
      const a = owner()
      await r.set('callfs:lock:file:/revoked.txt', a)
      const as = asUser('opslocker', pass)
      const {fix, ...check} = await w.check('callfs.redis.orphaned-locks', as.over, as.settings)
      expect(check.remediation).toMatchObject({automated: true, plan: [`compare-and-delete callfs:lock:file:/revoked.txt (owner ${a.slice(0, 8)}…)`]})
      await r.call('ACL', 'SETUSER', 'opslocker', '-del')
      const audit = await w.applyYes(as.run(check, fix))
      expect(await r.get('callfs:lock:file:/revoked.txt')).toBe(a)
      expect(check.outcome).toMatchObject({
        decision: 'applied',
        ok: false,
        verified: false,
        detail: 'released 0 of 1 locks; left alone 1: 0 re-acquired by another owner, 0 given an expiry, 0 already gone, 1 denied to this Redis user by the ACL; re-check: fail (1 lock key under callfs:lock: has no expiry)',
      })
      expect(audit[0]).toMatchObject({decision: 'applied', verified: false, result: {ok: false}})
    } finally {
      await r.call('ACL', 'DELUSER', 'opslocker')
    }
  })

  it('125,000 orphans: the check still fails with them (no stack overflow); plan and commands name 50 and state the rest exactly; evidence keeps 1,000 keys and 100 owners', async () => {
    // Keys callfs:lock:file:/orphan:<n>, values "value:<n>", no expiry: 125,000 owners too.
    await r.call('DEBUG', 'POPULATE', '125000', 'callfs:lock:file:/orphan')
    const a = owner()
    for (let i = 0; i < 5; i++) await r.set(`callfs:lock:file:/live/${i}.txt`, a, 'EX', 30)
    const c = await w.check('callfs.redis.orphaned-locks')
    expect(c.status).toBe('fail')
    expect(c.summary).toBe('125000 lock keys under callfs:lock: have no expiry')
    expect(c.evidence).toMatchObject({count: 125_000, scanned: 125_005, live: 5, ownerCount: 125_000, idleSeconds: {min: expect.any(Number), max: expect.any(Number)}})
    expect(c.evidence.keys).toHaveLength(1000)
    expect(Object.keys(c.evidence.owners as object)).toHaveLength(100)
    const plan = c.remediation?.plan ?? []
    expect(plan).toHaveLength(51)
    for (const line of plan.slice(0, 50)) expect(line).toMatch(/^compare-and-delete callfs:lock:file:\/orphan:\d+ \(owner value:\d+\)$/)
    expect(plan[50]).toBe('… and 124,950 more: every other key under callfs:lock: that this scan found without expiry, each by the same guarded compare-and-delete')
    const commands = c.remediation?.commands ?? []
    expect(commands).toHaveLength(51)
    expect(commands[50]).toBe('# … and 124,950 more: the same DEL for every other orphaned key this scan found (125,000 in all)')
    expect(c.remediation).toMatchObject({automated: true})
  })

  it('more orphans than the plan names: the fix releases every one the scan found, named or counted, and the audit keeps the bounded plan', async () => {
    await plantCallfsData(200)
    const [a, b] = [owner(), owner()]
    for (let i = 0; i < 5; i++) await r.set(`callfs:lock:file:/live/${i}.txt`, a, 'EX', 30)
    const orphans = Array.from({length: 120}, (_, i) => `callfs:lock:file:/many/${String(i).padStart(3, '0')}.txt`)
    await r.mset(...orphans.flatMap((k, i) => [k, i % 2 ? a : b]))
    await r.set('callfs:lock:file:/zz-stuck', a, 'EX', 7200) // sorts last: among the keys counted, not named
    await r.hset('callfs:lock:file:/a-hash', {owner: a}) // left for a person
    const before = await keyspace(r)

    const run = await walkFor('callfs.redis.orphaned-locks')
    const plan = run.check.remediation?.plan ?? []
    expect(plan).toHaveLength(49 + 1 + 1) // 49 named releases and the rule for the rest, the one left alone: 50 keys named
    expect(plan.filter((l) => l.startsWith('compare-and-delete '))).toHaveLength(49)
    expect(plan[49]).toBe(
      '… and 72 more: every other key under callfs:lock: that this scan found without expiry or with an expiry above lock_timeout 60s (the keys left alone below excepted), each by the same guarded compare-and-delete',
    )
    expect(plan[50]).toMatch(/^leave callfs:lock:file:\/a-hash: not a string value/)
    expect(run.check.remediation?.commands.at(-1)).toBe('# … and 72 more: the same DEL for every other orphaned key this scan found (122 in all)')

    const audit = await w.applyYes(run)
    const released = [...orphans, 'callfs:lock:file:/zz-stuck']
    expect(await keyspace(r)).toEqual(new Map([...before].filter(([k]) => !released.includes(k))))
    expect(run.check.outcome).toMatchObject({decision: 'applied', ok: true, verified: false})
    expect(run.check.outcome?.detail).toBe('released 121 of 121 locks; re-check: fail (1 lock key under callfs:lock: has no expiry)')
    expect(audit[0]?.plan).toEqual(plan)
  })

  it('the lines that count the keys not named state the exact rule: what the guard cannot compare; everything, for a user who may not run the guard', async () => {
    const a = owner()
    const p = r.pipeline()
    for (let i = 0; i < 40; i++) p.set(`callfs:lock:file:/g/${String(i).padStart(2, '0')}`, a)
    for (let i = 0; i < 30; i++) p.hset(`callfs:lock:file:/h/${String(i).padStart(2, '0')}`, {owner: a})
    p.set('callfs:lock:file:/zz-stuck', a, 'EX', 7200)
    await p.exec()
    const plan = (await w.check('callfs.redis.orphaned-locks')).remediation?.plan ?? []
    // 25 of each named (50 keys), then one line for the rest of each kind.
    expect(plan).toHaveLength(52)
    expect(plan[25]).toBe(
      '… and 16 more: every other key under callfs:lock: that this scan found without expiry or with an expiry above lock_timeout 60s (the keys left alone below excepted), each by the same guarded compare-and-delete',
    )
    expect(plan[51]).toBe('… and 5 more left alone: every other key under callfs:lock: that this scan found without expiry whose value is not a string or is longer than opsctl compares — inspect each, then DEL it by hand')

    const pass = 'Ro-User-Pass-1b7c4'
    await r.call('ACL', 'SETUSER', 'opsro2', 'reset', 'on', `>${pass}`, '~*', '&*', '+@read', '+@connection', '+info', '-@scripting')
    try {
      const as = asUser('opsro2', pass)
      const ro = (await w.check('callfs.redis.orphaned-locks', as.over, as.settings)).remediation
      expect(ro?.automated).toBe(false)
      expect(ro?.plan).toHaveLength(51)
      expect(ro?.plan[0]).toBe(`leave callfs:lock:file:/g/00 (owner ${a.slice(0, 8)}…): this Redis user may not run scripts (EVAL/EVALSHA), and the guard is a Lua script — check it still has no expiry and this owner, then DEL it by hand`)
      expect(ro?.plan[50]).toBe(
        '… and 21 more left alone: every other key under callfs:lock: that this scan found without expiry or with an expiry above lock_timeout 60s, as this Redis user may not run the guard — inspect each, then DEL it by hand',
      )
    } finally {
      await r.call('ACL', 'DELUSER', 'opsro2')
    }
  })

  it('keys and values that are not UTF-8: shown escaped, compared byte for byte and released; the DEL command reproduces the exact key (run through sh)', async () => {
    const a = owner()
    const bin = Buffer.from('callfs:lock:file:/bin\xff\xfe', 'latin1')
    const multibyte = 'callfs:lock:file:/'.padEnd(30, 'é')
    await r.set(bin, a)
    await r.set('callfs:lock:file:/line\nbreak', a)
    await r.set('callfs:lock:file:/v', Buffer.from([0x80, 0x81, 0x82]))
    await r.set(multibyte, 'ü'.repeat(150)) // 150 characters, 300 bytes: longer than the guard compares
    const run = await walkFor('callfs.redis.orphaned-locks')
    const c = run.check
    expect(c.evidence).toMatchObject({count: 4, keys: ['callfs:lock:file:/bin\\xff\\xfe', 'callfs:lock:file:/line\\x0abreak', 'callfs:lock:file:/v', multibyte]})
    expect(c.remediation?.plan).toEqual([
      `compare-and-delete callfs:lock:file:/bin\\xff\\xfe (owner ${a.slice(0, 8)}…)`,
      `compare-and-delete callfs:lock:file:/line\\x0abreak (owner ${a.slice(0, 8)}…)`,
      'compare-and-delete callfs:lock:file:/v (owner \\x80\\x81\\x82)',
      `leave ${multibyte}: its value is longer than opsctl compares, so no guard can prove it unchanged — inspect it, then DEL it by hand`,
    ])
    const cli = `redis-cli -u redis://127.0.0.1:${redisPort()}/0`
    expect(c.remediation?.commands).toEqual([
      `printf 'callfs:lock:file:/bin\\377\\376' | ${cli} -x DEL`,
      `printf 'callfs:lock:file:/line\\012break' | ${cli} -x DEL`,
      `${cli} DEL callfs:lock:file:/v`,
      `${cli} DEL '${multibyte}'`,
    ])

    await w.applyYes(run)
    expect(await r.exists(bin, 'callfs:lock:file:/line\nbreak', 'callfs:lock:file:/v')).toBe(0)
    expect(await r.get(multibyte)).toBe('ü'.repeat(150))
    expect(c.outcome).toMatchObject({ok: true, verified: false, detail: 'released 3 of 3 locks; re-check: fail (1 lock key under callfs:lock: has no expiry)'})

    // The command for a key that is not UTF-8 deletes exactly that key.
    await r.set(bin, a)
    await r.set(Buffer.from('callfs:lock:file:/bin\xff\xff', 'latin1'), a) // one byte apart
    const {stdout} = await execFileP('sh', ['-c', c.remediation?.commands[0] ?? ''])
    expect(stdout.trim()).toBe('1')
    expect(await r.exists(bin)).toBe(0)
    expect(await r.exists(Buffer.from('callfs:lock:file:/bin\xff\xff', 'latin1'))).toBe(1)
  })

  it('the simulator: a PUT under an orphaned lock fails 500; after the fix the PUT succeeds', async () => {
    const url = `${String(w.config().url)}/v1/files/docs/report.txt`
    const dispatcher = new Agent({connect: {ca: w.cert.cert}})
    const put = async (): Promise<{status: number; body: string}> => {
      const res = await request(url, {method: 'PUT', dispatcher, headers: {authorization: `Bearer ${API_KEY}`}, body: 'quarterly numbers'})
      return {status: res.statusCode, body: await res.body.text()}
    }
    try {
      const crashed = owner() // an instance that died holding the lock, its expiry lost
      await r.set('callfs:lock:file:/docs/report.txt', crashed)
      const blocked = await put()
      expect(blocked.status).toBe(500)
      expect(blocked.body).toMatch(/failed to acquire lock for file creation/)

      const run = await walkFor('callfs.redis.orphaned-locks')
      expect(run.check.status).toBe('fail')
      expect(run.check.evidence).toMatchObject({keys: ['callfs:lock:file:/docs/report.txt'], owners: {[crashed]: 1}})
      await w.applyYes(run)
      expect(run.check.outcome).toMatchObject({ok: true, verified: true})

      expect((await put()).status).toBe(201)
      expect(await r.exists('callfs:lock:file:/docs/report.txt')).toBe(0) // taken with EX 30 and released again
    } finally {
      await dispatcher.close()
    }
  })
})

describe('the lock scan at its deadline', () => {
  afterEach(() => {
    lockScanLimits.minBudgetMs = 30_000
  })

  it('a keyspace larger than the scan budget: orphans found so far fail the check as a partial scan, none found is unknown — never thrown away', async () => {
    // The Redis session gets 600 ms; the scan stops at 300 ms with what it found. SCAN walks
    // every key (~0.8 µs each), so 1,000,000 other keys take several times that.
    lockScanLimits.minBudgetMs = 600
    await r.call('DEBUG', 'POPULATE', '1000000', 'callfs:md:')
    const a = owner()
    for (let i = 0; i < 50; i++) await r.set(`callfs:lock:file:/live/${i}.txt`, a, 'EX', 30)
    const settings = {timeoutMs: 300}

    let started = Date.now()
    const none = await w.check('callfs.redis.orphaned-locks', {}, settings)
    expect(Date.now() - started).toBeLessThan(600)
    expect(none.status).toBe('unknown')
    expect(none.summary).toMatch(/^\d+ live lock\(s\) under callfs:lock:, none orphaned; scanned \d+ lock keys in \d+ms \(stopped early: partial\)$/)
    const pressure = await w.check('callfs.redis.lock-pressure', {}, settings)
    expect(pressure.status).toBe('unknown')
    expect(pressure.summary).toMatch(/^\d+ live lock\(s\) held by [01] instance\(s\) \(partial scan: stopped after [\d,]+ lock keys; there may be more\)$/)

    await r.call('DEBUG', 'POPULATE', '2000', 'callfs:lock:file:/orphan')
    started = Date.now()
    const found = await w.check('callfs.redis.orphaned-locks', {}, settings)
    expect(Date.now() - started).toBeLessThan(600)
    expect(found.status).toBe('fail')
    expect(found.summary).toMatch(/^\d+ lock keys? under callfs:lock: (has|have) no expiry \(partial scan: stopped after [\d,]+ lock keys in \d+ms; there may be more\)$/)
    expect(found.evidence.partial).toBe(true)
    expect(found.evidence.count).toBeGreaterThan(0)
    expect(found.evidence.count).toBeLessThan(2000)
    expect(found.remediation).toMatchObject({id: 'callfs.redis.release-orphaned-locks', automated: true})
  })
})

// ---- callfs.redis.lock-pressure -----------------------------------------------------------------

describe('callfs.redis.lock-pressure', () => {
  const live = async (n: number, who: string, prefix = 'p'): Promise<void> => {
    const p = r.pipeline()
    for (let i = 0; i < n; i++) p.set(`callfs:lock:file:/${prefix}/${who.slice(0, 6)}/${i}`, who, 'EX', 30)
    await p.exec()
  }

  it('ok: a normal number of live locks spread over instances', async () => {
    const [a, b] = [owner(), owner()]
    await live(30, a)
    await live(20, b)
    const c = await w.check('callfs.redis.lock-pressure')
    expect(c.status).toBe('ok')
    expect(c.summary).toBe('50 live lock(s) held by 2 instance(s)')
    expect(c.evidence).toEqual({live: 50, threshold: 1000, owners: 2, topOwner: {owner: a, held: 30}})
  })

  it('warn: more live locks than thresholds.live_locks', async () => {
    await live(11, owner())
    const c = await w.check('callfs.redis.lock-pressure', {thresholds: {live_locks: 10}})
    expect(c.status).toBe('warn')
    expect(c.summary).toBe('11 live locks (threshold 10)')
    expect(c.remediation).toMatchObject({id: 'callfs.redis.tune-locks', automated: false})
    expect(c.remediation?.commands[0]).toBe(`redis-cli -u redis://127.0.0.1:${redisPort()}/0 --scan --pattern 'callfs:lock:*' --count 1000 | head -50`)
  })

  it('warn: one of two instances holds more than 80 % of at least 50 live locks; exactly 80 % is ok', async () => {
    const [a, b] = [owner(), owner()]
    await live(40, a)
    await live(10, b)
    expect((await w.check('callfs.redis.lock-pressure')).status).toBe('ok') // 40 of 50: 80 %, not more

    await live(5, a, 'q')
    const c = await w.check('callfs.redis.lock-pressure')
    expect(c.status).toBe('warn')
    expect(c.summary).toBe(`one instance (${a.slice(0, 8)}…) holds 45 of 55 live locks`)
    expect(c.evidence).toMatchObject({live: 55, owners: 2, topOwner: {owner: a, held: 45}})
  })

  it('ok: below 50 live locks one instance may hold them all', async () => {
    const [a, b] = [owner(), owner()]
    await live(45, a)
    await live(1, b)
    expect((await w.check('callfs.redis.lock-pressure')).status).toBe('ok')
  })
})
