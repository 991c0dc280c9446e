import {spawnSync} from 'node:child_process'
import {createServer, connect, type Socket} from 'node:net'
import {resolve} from 'node:path'
import type {Redis} from 'ioredis'
import {afterAll, beforeAll, beforeEach, describe, expect, it} from 'vitest'
import {Reachability} from '../../src/diagnostics/reach.js'
import {
  compareAndDelete,
  displayBytes,
  inspectKeys,
  isPlainText,
  lockReleaseDenied,
  maskRedisUrl,
  prefixPattern,
  redisInfo,
  scanByExpiry,
  scanKeys,
  withRedis,
  type ScanClassification,
} from '../../src/diagnostics/redis.js'
import {freePort} from '../support/ports.js'
import {startRedis, type TestRedis} from '../support/redis.js'

const TIMEOUT = 300
const OWNER_A = 'a'.repeat(32)
const OWNER_B = 'b'.repeat(32)
const OWNER_NEW = 'c'.repeat(32)

let redis: TestRedis
let admin: Redis
beforeAll(async () => {
  redis = await startRedis()
  admin = await redis.client()
})
afterAll(async () => {
  admin?.disconnect()
  await redis?.stop()
})

/** Connections to the server other than `admin`'s, once closing ones are gone (up to 1 s). */
async function otherClients(): Promise<number> {
  const mine = String(await admin.client('ID'))
  let n = 0
  for (let i = 0; i < 50; i++) {
    const list = String(await admin.client('LIST'))
    n = list.split('\n').filter((l) => l.trim() && !l.startsWith(`id=${mine} `)).length
    if (n === 0) break
    await new Promise((r) => setTimeout(r, 20))
  }
  return n
}

describe('withRedis', () => {
  it('connects, runs the probe and disconnects', async () => {
    const res = await withRedis({url: redis.url}, {timeoutMs: 2000}, async (r) => ({pong: await r.ping(), db: await r.dbsize()}))
    expect(res).toMatchObject({ok: true, value: {pong: 'PONG'}})
    expect(res.durationMs).toBeGreaterThanOrEqual(0)
    expect(await otherClients()).toBe(0)
  })

  it('selects the database in the URL', async () => {
    await admin.select(3)
    await admin.set('in-db-3', 'x')
    await admin.select(0)
    const res = await withRedis({url: `redis://127.0.0.1:${redis.port}/3`}, {timeoutMs: 2000}, (r) => r.get('in-db-3'))
    expect(res).toMatchObject({ok: true, value: 'x'})
  })

  it('refused: says nothing listens, and the run remembers the endpoint', async () => {
    const port = await freePort()
    const reach = new Reachability()
    const first = await withRedis({url: `redis://127.0.0.1:${port}/0`}, {timeoutMs: 2000, reach}, (r) => r.ping())
    expect(first).toMatchObject({ok: false, error: {kind: 'refused', code: 'ECONNREFUSED'}})
    if (!first.ok) expect(first.error.message).toContain(`127.0.0.1:${port}`)
    let ran = false
    const second = await withRedis({url: `redis://127.0.0.1:${port}/0`}, {timeoutMs: 2000, reach}, async (r) => {
      ran = true
      return r.ping()
    })
    expect(ran).toBe(false)
    expect(second).toMatchObject({ok: false, error: {kind: 'refused'}})
    if (!second.ok) expect(second.error.message).toContain('earlier in this run')
  })

  it('an invalid URL is an error value, not a throw', async () => {
    const res = await withRedis({url: 'http://:hunter22@x/0'}, {timeoutMs: 500}, (r) => r.ping())
    expect(res).toMatchObject({ok: false, error: {kind: 'other'}})
    if (!res.ok) expect(res.error.message).not.toContain('hunter22')
  })

  it('a failure inside the probe function is reported, and the client still disconnects', async () => {
    const res = await withRedis({url: redis.url}, {timeoutMs: 2000}, async (r) => {
      await r.ping()
      throw new Error('the check broke')
    })
    expect(res).toMatchObject({ok: false, error: {kind: 'other', message: expect.stringContaining('the check broke')}})
    expect(await otherClients()).toBe(0)
  })

  describe('with requirepass', () => {
    let locked: TestRedis
    const password = 'correct-horse-battery'
    beforeAll(async () => {
      locked = await startRedis({password})
    })
    afterAll(() => locked?.stop())

    it('the password variable authenticates (and wins over one in the URL)', async () => {
      const url = `redis://:stale-url-pass@127.0.0.1:${locked.port}/0`
      const res = await withRedis({url, password}, {timeoutMs: 2000}, (r) => r.ping())
      expect(res).toMatchObject({ok: true, value: 'PONG'})
    })

    it('a wrong password is an auth error that never shows the password', async () => {
      const res = await withRedis({url: locked.url, password: 'wrong-password-123'}, {timeoutMs: 2000}, (r) => r.ping())
      expect(res).toMatchObject({ok: false, error: {kind: 'auth', code: 'WRONGPASS'}})
      if (!res.ok) {
        expect(res.error.message).toContain('check the password variable')
        expect(res.error.message).not.toContain('wrong-password-123')
      }
    })

    it('no password is an auth error asking for one', async () => {
      const res = await withRedis({url: locked.url}, {timeoutMs: 2000}, (r) => r.ping())
      expect(res).toMatchObject({ok: false, error: {kind: 'auth', code: 'NOAUTH'}})
    })
  })

  it('a stopped server (accepts, never answers) times out at the deadline, and is remembered', async () => {
    const reach = new Reachability()
    redis.pause()
    try {
      const started = Date.now()
      const res = await withRedis({url: redis.url}, {timeoutMs: TIMEOUT, reach}, (r) => r.ping())
      const took = Date.now() - started
      expect(res).toMatchObject({ok: false, error: {kind: 'timeout'}})
      if (!res.ok) expect(res.error.message).toBe(`Redis at 127.0.0.1:${redis.port} accepted the connection but did not answer within 300ms — is it stopped, overloaded or busy (SLOWLOG, a long script)?`)
      expect(took).toBeGreaterThanOrEqual(TIMEOUT - 5)
      expect(took).toBeLessThan(TIMEOUT + 300)
      expect(reach.known(`127.0.0.1:${redis.port}`)?.kind).toBe('timeout')
    } finally {
      redis.resume()
    }
  })

  it('a command that stalls after connecting times out without marking the endpoint dead', async () => {
    const reach = new Reachability()
    const started = Date.now()
    // DEBUG SLEEP blocks the server after our PING was answered.
    const res = await withRedis({url: redis.url}, {timeoutMs: TIMEOUT, reach}, (r) => r.call('DEBUG', 'SLEEP', '0.6'))
    expect(Date.now() - started).toBeLessThan(TIMEOUT + 300)
    expect(res).toMatchObject({ok: false, error: {kind: 'timeout'}})
    expect(reach.known(`127.0.0.1:${redis.port}`)).toBeUndefined()
    await new Promise((r) => setTimeout(r, 400)) // let the sleep end before the next test
  })

  it('an abort ends the probe at once', async () => {
    redis.pause()
    try {
      const controller = new AbortController()
      setTimeout(() => controller.abort(), 50)
      const started = Date.now()
      const res = await withRedis({url: redis.url}, {timeoutMs: 5000, signal: controller.signal}, (r) => r.ping())
      expect(Date.now() - started).toBeLessThan(1000)
      expect(res).toMatchObject({ok: false, error: {kind: 'aborted'}})
      const pre = await withRedis({url: redis.url}, {timeoutMs: 5000, signal: AbortSignal.abort()}, (r) => r.ping())
      expect(pre).toMatchObject({ok: false, error: {kind: 'aborted'}})
    } finally {
      redis.resume()
    }
  })

  it('NOPERM is a permission error', async () => {
    await admin.call('ACL', 'SETUSER', 'limited', 'on', '>limited-pass', '~*', '+@all', '-get')
    const url = `redis://limited@127.0.0.1:${redis.port}/0`
    const res = await withRedis({url, password: 'limited-pass'}, {timeoutMs: 2000}, (r) => r.get('anything'))
    expect(res).toMatchObject({ok: false, error: {kind: 'permission', code: 'NOPERM'}})
  })

  it('OOM is a capacity error', async () => {
    const small = await startRedis({args: ['--maxmemory', '2mb', '--maxmemory-policy', 'noeviction']})
    try {
      const res = await withRedis({url: small.url}, {timeoutMs: 2000}, async (r) => {
        for (let i = 0; i < 50; i++) await r.set(`big:${i}`, 'x'.repeat(200_000))
      })
      expect(res).toMatchObject({ok: false, error: {kind: 'capacity', code: 'OOM'}})
    } finally {
      await small.stop()
    }
  })

  it('redisInfo parses INFO into key → value', async () => {
    const res = await withRedis({url: redis.url}, {timeoutMs: 2000}, async (r) => [await redisInfo(r), await redisInfo(r, 'memory')] as const)
    expect(res.ok).toBe(true)
    if (!res.ok) return
    const [all, memory] = res.value
    expect(all.tcp_port).toBe(String(redis.port))
    expect(Number(memory.used_memory)).toBeGreaterThan(0)
    expect(memory.tcp_port).toBeUndefined()
    expect(Object.keys(all).some((k) => k.startsWith('#'))).toBe(false)
  })
})

describe('maskRedisUrl', () => {
  it('hides passwords in the userinfo and the query', () => {
    expect(maskRedisUrl('redis://:secret@h:6379/0')).toBe('redis://:****@h:6379/0')
    expect(maskRedisUrl('rediss://callfs:secret@h:6380/1')).toBe('rediss://callfs:****@h:6380/1')
    expect(maskRedisUrl('redis://h:6379/0?password=secret')).toBe('redis://h:6379/0?password=****')
    expect(maskRedisUrl('redis://127.0.0.1:6379/0')).toBe('redis://127.0.0.1:6379/0')
  })
})

// ---------------------------------------------------------------------------------------
// Keys

const PREFIX = 'callfs:lock:'
const MAX_TTL = 60_000

/** Plants what a CallFS Redis holds: live locks (30 s), orphans, a lock given a long expiry, other prefixes. */
async function plant(): Promise<{orphans: string[]; above: string[]; others: Map<string, string>}> {
  await admin.flushall()
  const p = admin.pipeline()
  for (let i = 0; i < 300; i++) p.set(`${PREFIX}file:/live/${i}.txt`, i % 3 === 0 ? OWNER_B : OWNER_A, 'PX', 30_000)
  const orphans = Array.from({length: 25}, (_, i) => `${PREFIX}file:/orphan/${i}.txt`)
  for (const key of orphans) p.set(key, OWNER_A)
  const above = [`${PREFIX}dir:/long-expiry`]
  p.set(above[0] as string, OWNER_B, 'PX', 3_600_000)
  const others = new Map<string, string>()
  for (let i = 0; i < 200; i++) others.set(`callfs:md:/file-${i}`, `{"size":${i}}`)
  others.set('callfs:sul:token', 'x')
  others.set('callfs:lockout', 'not a lock') // shares the prefix's letters, not the prefix
  for (const [k, v] of others) p.set(k, v) // no expiry: must never be reported or touched
  await p.exec()
  return {orphans, above, others}
}

async function othersUntouched(others: Map<string, string>): Promise<void> {
  const keys = [...others.keys()]
  const values = await admin.mget(keys)
  expect(values).toEqual([...others.values()])
  for (const key of keys.slice(0, 20)) expect(await admin.pttl(key)).toBe(-1)
}

function checkClassification(c: ScanClassification, planted: {orphans: string[]; above: string[]}): void {
  expect(c.scanned).toBeGreaterThanOrEqual(326)
  expect(c.matched).toBe(c.scanned)
  expect(c.withoutExpiry.map((k) => k.key).sort()).toEqual([...planted.orphans].sort())
  expect(c.expiryAbove.map((k) => k.key)).toEqual(planted.above)
  for (const k of c.withoutExpiry) {
    expect(k.pttl).toBe(-1)
    expect(k.value).toBe(OWNER_A)
    expect(k.idleSeconds).toBeGreaterThanOrEqual(0)
  }
  expect(c.expiryAbove[0]?.pttl).toBeGreaterThan(MAX_TTL)
  expect(c.expiryAbove[0]?.value).toBe(OWNER_B)
  expect(c.live).toBe(300)
  expect(Object.fromEntries(c.liveByValue)).toEqual({[OWNER_A]: 200, [OWNER_B]: 100})
  expect(c.truncated).toBe(false)
}

describe('scanByExpiry', () => {
  it('finds the orphans and the over-long expiries among live locks, counts live locks per owner, leaves other prefixes alone', async () => {
    const planted = await plant()
    const c = await scanByExpiry(admin, PREFIX, {maxTtlMs: MAX_TTL, count: 50})
    checkClassification(c, planted)
    expect(c.durationMs).toBeGreaterThanOrEqual(0)
    await othersUntouched(planted.others)
  })

  it('gives the same answer, by pipelines, to a user without scripting (read-only ACL)', async () => {
    const planted = await plant()
    await admin.call('ACL', 'SETUSER', 'reader', 'on', '>reader-pass', '~*', '+@read', '+@connection')
    const res = await withRedis({url: `redis://reader@127.0.0.1:${redis.port}/0`, password: 'reader-pass'}, {timeoutMs: 5000}, async (r) => {
      await expect(r.eval('return 1', 0)).rejects.toThrow(/NOPERM/) // really no scripting
      return scanByExpiry(r, PREFIX, {maxTtlMs: MAX_TTL, count: 50})
    })
    expect(res.ok).toBe(true)
    if (res.ok) checkClassification(res.value, planted)
    await othersUntouched(planted.others)
  })

  it('reads idle times before anything touches the keys', async () => {
    await admin.call('ACL', 'SETUSER', 'reader', 'on', '>reader-pass', '~*', '+@read', '+@connection')
    const viaScript = (): Promise<ScanClassification> => scanByExpiry(admin, PREFIX, {maxTtlMs: MAX_TTL})
    const viaPipelines = async (): Promise<ScanClassification | undefined> => {
      const res = await withRedis({url: `redis://reader@127.0.0.1:${redis.port}/0`, password: 'reader-pass'}, {timeoutMs: 5000}, (r) =>
        scanByExpiry(r, PREFIX, {maxTtlMs: MAX_TTL}),
      )
      return res.ok ? res.value : undefined
    }
    for (const scan of [viaScript, viaPipelines]) {
      await admin.flushall()
      await admin.set('template', OWNER_A)
      // An orphan untouched for 100 s (RESTORE … IDLETIME sets its LRU clock). Reading its
      // value before OBJECT IDLETIME would make that 0.
      await admin.call('RESTORE', `${PREFIX}file:/old`, '0', await admin.dumpBuffer('template'), 'IDLETIME', '100')
      const c = await scan()
      expect(c?.withoutExpiry[0]?.key).toBe(`${PREFIX}file:/old`)
      expect(c?.withoutExpiry[0]?.idleSeconds).toBeGreaterThanOrEqual(100)
      expect(c?.withoutExpiry[0]?.value).toBe(OWNER_A)
    }
  })

  it('caps long values and copes with keys that are not strings, by script and by pipelines', async () => {
    await admin.call('ACL', 'SETUSER', 'reader', 'on', '>reader-pass', '~*', '+@read', '+@connection')
    const viaPipelines = async (): Promise<ScanClassification | undefined> => {
      const res = await withRedis({url: `redis://reader@127.0.0.1:${redis.port}/0`, password: 'reader-pass'}, {timeoutMs: 5000}, (r) =>
        scanByExpiry(r, PREFIX, {maxTtlMs: MAX_TTL}),
      )
      return res.ok ? res.value : undefined
    }
    await admin.flushall()
    await admin.set(`${PREFIX}file:/long`, 'x'.repeat(5000))
    await admin.hset(`${PREFIX}file:/hash-orphan`, 'owner', OWNER_A)
    await admin.hset(`${PREFIX}file:/hash-live`, 'owner', OWNER_A)
    await admin.pexpire(`${PREFIX}file:/hash-live`, 30_000)
    for (const c of [await scanByExpiry(admin, PREFIX, {maxTtlMs: MAX_TTL}), await viaPipelines()]) {
      const byKey = new Map(c?.withoutExpiry.map((k) => [k.key, k]))
      expect(byKey.get(`${PREFIX}file:/long`)?.value).toBe(`${'x'.repeat(199)}…`)
      expect(byKey.get(`${PREFIX}file:/hash-orphan`)?.value).toBeNull()
      expect(c?.live).toBe(1)
      expect(Object.fromEntries(c?.liveByValue ?? [])).toEqual({'(not a string)': 1})
    }
  })

  it('stops at maxKeys and says so', async () => {
    await plant()
    const c = await scanByExpiry(admin, PREFIX, {maxTtlMs: MAX_TTL, count: 20, maxKeys: 40})
    expect(c.scanned).toBe(40)
    expect(c.truncated).toBe(true)
    expect(c.live + c.withoutExpiry.length + c.expiryAbove.length).toBe(40)
  })

  it('stops when aborted', async () => {
    await plant()
    const c = await scanByExpiry(admin, PREFIX, {maxTtlMs: MAX_TTL, signal: AbortSignal.abort()})
    expect(c.truncated).toBe(true)
    expect(c.scanned).toBe(0)
  })

  it('treats the prefix literally (glob characters in it match only themselves)', async () => {
    await admin.flushall()
    await admin.set('we*rd:1', 'v')
    await admin.set('weXrd:2', 'v')
    expect(prefixPattern('we*rd:')).toBe('we\\*rd:*')
    const c = await scanByExpiry(admin, 'we*rd:', {maxTtlMs: MAX_TTL})
    expect(c.withoutExpiry.map((k) => k.key)).toEqual(['we*rd:1'])
  })
})

describe('scanKeys and inspectKeys', () => {
  beforeEach(async () => {
    await plant()
  })

  it('scanKeys yields every matching key in batches, never others', async () => {
    const seen = new Set<string>()
    let batches = 0
    for await (const batch of scanKeys(admin, prefixPattern(PREFIX), {count: 30})) {
      batches++
      for (const k of batch) seen.add(k)
    }
    expect(batches).toBeGreaterThan(1)
    expect(seen.size).toBe(326)
    expect([...seen].every((k) => k.startsWith(PREFIX))).toBe(true)
  })

  it('scanKeys stops when the signal aborts, and a consumer may stop early', async () => {
    const controller = new AbortController()
    let batches = 0
    for await (const _batch of scanKeys(admin, '*', {count: 10, signal: controller.signal})) {
      batches++
      controller.abort()
    }
    expect(batches).toBe(1)
    for await (const _batch of scanKeys(admin, '*', {count: 10})) break
    expect(await admin.ping()).toBe('PONG')
  })

  it('inspectKeys reports PTTL, idle time and capped string values; gone keys are -2', async () => {
    await admin.set('long', 'v'.repeat(500))
    await admin.hset('a-hash', 'f', '1')
    const infos = await inspectKeys(admin, [`${PREFIX}file:/orphan/0.txt`, `${PREFIX}file:/live/1.txt`, 'long', 'a-hash', 'missing'], {idle: true, values: true})
    expect(infos[0]).toMatchObject({pttl: -1, value: OWNER_A})
    expect(infos[0]?.idleSeconds).toBeGreaterThanOrEqual(0)
    expect(infos[1]?.pttl).toBeGreaterThan(0)
    expect(infos[1]?.pttl).toBeLessThanOrEqual(30_000)
    expect(infos[2]?.value).toHaveLength(200)
    expect(infos[3]).toMatchObject({pttl: -1, value: null})
    expect(infos[4]).toMatchObject({key: 'missing', pttl: -2, idleSeconds: null, value: null})
    expect(await inspectKeys(admin, [`${PREFIX}file:/orphan/0.txt`])).toEqual([{key: `${PREFIX}file:/orphan/0.txt`, pttl: -1, idleSeconds: null, value: null}])
  })
})

describe('compareAndDelete', () => {
  it('deletes a true orphan; leaves a lock re-acquired by a new owner, one given an expiry, and one already gone', async () => {
    const planted = await plant()
    const [orphan, reacquired, expiring, gone, wrongType] = planted.orphans as [string, string, string, string, string]
    // Between diagnosis and fix: a new owner takes one lock, another gets an expiry, one is released.
    await admin.set(reacquired, OWNER_NEW, 'PX', 30_000)
    await admin.pexpire(expiring, 30_000)
    await admin.del(gone)
    await admin.del(wrongType)
    await admin.hset(wrongType, 'owner', OWNER_A)
    const items = [orphan, reacquired, expiring, gone, wrongType].map((key) => ({key, value: OWNER_A}))
    const res = await compareAndDelete(admin, items, {maxTtlMs: MAX_TTL})
    expect(res.deleted).toEqual([orphan])
    expect(res.kept).toEqual([
      {key: reacquired, reason: 'value-changed'},
      {key: expiring, reason: 'has-expiry'},
      {key: gone, reason: 'gone'},
      {key: wrongType, reason: 'value-changed'},
    ])
    expect(await admin.exists(orphan)).toBe(0)
    expect(await admin.get(reacquired)).toBe(OWNER_NEW)
    expect(await admin.pttl(expiring)).toBeGreaterThan(0)
    await othersUntouched(planted.others)
  })

  it('deletes a key whose expiry is above the limit (no healthy holder sets it)', async () => {
    const planted = await plant()
    const res = await compareAndDelete(admin, [{key: planted.above[0] as string, value: OWNER_B}], {maxTtlMs: MAX_TTL})
    expect(res.deleted).toEqual(planted.above)
  })

  it('works in batches across hundreds of keys, and survives a flushed script cache', async () => {
    await admin.flushall()
    const keys = Array.from({length: 450}, (_, i) => `${PREFIX}file:/bulk/${i}`)
    await admin.mset(...keys.flatMap((k) => [k, OWNER_A]))
    const first = await compareAndDelete(admin, keys.slice(0, 10).map((key) => ({key, value: OWNER_A})), {maxTtlMs: MAX_TTL})
    expect(first.deleted).toHaveLength(10)
    await admin.script('FLUSH') // NOSCRIPT on the next EVALSHA: falls back to EVAL
    await admin.config('RESETSTAT')
    const rest = await compareAndDelete(admin, keys.slice(10).map((key) => ({key, value: OWNER_A})), {maxTtlMs: MAX_TTL})
    expect(rest.deleted).toHaveLength(440)
    expect(rest.kept).toEqual([])
    expect(await admin.dbsize()).toBe(0)
    const stats = await redisInfo(admin, 'commandstats')
    const calls = (name: string): number => Number(/calls=(\d+)/.exec(stats[`cmdstat_${name}`] ?? '')?.[1] ?? 0)
    // 440 keys in batches of 200: EVALSHA → NOSCRIPT → EVAL, then (reloaded) EVALSHA twice.
    expect(calls('eval')).toBe(1)
    expect(calls('evalsha')).toBe(3)
    expect(calls('del')).toBe(440)
  })

  it('does nothing for no items', async () => {
    expect(await compareAndDelete(admin, [], {maxTtlMs: MAX_TTL})).toEqual({deleted: [], kept: []})
  })
})

// ---------------------------------------------------------------------------------------
// Exact bytes, deadlines, duplicates, permissions

const reader = async <T>(fn: (r: Redis) => Promise<T>): Promise<T> => {
  await admin.call('ACL', 'SETUSER', 'reader', 'on', '>reader-pass', '~*', '+@read', '+@connection')
  const res = await withRedis({url: `redis://reader@127.0.0.1:${redis.port}/0`, password: 'reader-pass'}, {timeoutMs: 5000}, fn)
  if (!res.ok) throw new Error(res.error.message)
  return res.value
}

describe('displayBytes', () => {
  it('shows printable UTF-8 as it is and everything else as \\xNN, unambiguously', () => {
    expect(displayBytes(Buffer.from("callfs:lock:file:/my docs/it's é.txt"))).toBe("callfs:lock:file:/my docs/it's é.txt")
    expect(displayBytes(Buffer.from('callfs:lock:file:/bin\xff\xfe', 'latin1'))).toBe('callfs:lock:file:/bin\\xff\\xfe')
    expect(displayBytes(Buffer.from('a\nb\u202Ec'))).toBe('a\\x0ab\\xe2\\x80\\xaec') // newline, bidi override
    expect(displayBytes(Buffer.from('a\\xffb'))).toBe('a\\\\xffb') // a literal backslash is not an escape
    expect(displayBytes(Buffer.from([0xc3]))).toBe('\\xc3') // a cut sequence
    expect(displayBytes(Buffer.from([0xed, 0xa0, 0x80]))).toBe('\\xed\\xa0\\x80') // a surrogate is not UTF-8
    expect(isPlainText(Buffer.from('callfs:lock:dir:/é'))).toBe(true)
    expect(isPlainText(Buffer.from([0x61, 0xff]))).toBe(false)
  })
})

describe('keys and values that are not UTF-8, or long in bytes', () => {
  const binKey = Buffer.from(`${PREFIX}file:/bin\xff\xfe`, 'latin1')
  const binValue = Buffer.from([0x80, 0x81, 0x82, 0x00, 0xff])
  const multibyte = 'ü'.repeat(150) // 150 characters, 300 bytes
  const fits = 'ü'.repeat(100) // 200 bytes: exactly what is compared

  beforeEach(async () => {
    await admin.flushall()
    await admin.set(binKey, OWNER_A)
    await admin.set(`${PREFIX}file:/bin-value`, binValue)
    await admin.set(`${PREFIX}file:/multibyte`, multibyte)
    await admin.set(`${PREFIX}file:/fits`, fits)
  })

  it('scanByExpiry keeps exact key and value bytes and tells a value cut at VALUE_CAP bytes, by script and by pipelines', async () => {
    for (const c of [await scanByExpiry(admin, PREFIX, {maxTtlMs: MAX_TTL}), await reader((r) => scanByExpiry(r, PREFIX, {maxTtlMs: MAX_TTL}))]) {
      const byKey = new Map(c.withoutExpiry.map((k) => [k.key, k]))
      expect([...byKey.keys()].sort()).toEqual([`${PREFIX}file:/bin-value`, `${PREFIX}file:/bin\\xff\\xfe`, `${PREFIX}file:/fits`, `${PREFIX}file:/multibyte`])
      const bin = byKey.get(`${PREFIX}file:/bin\\xff\\xfe`)
      expect(bin?.keyBytes.equals(binKey)).toBe(true)
      expect(bin?.valueBytes?.toString()).toBe(OWNER_A)
      const value = byKey.get(`${PREFIX}file:/bin-value`)
      expect(value?.valueBytes?.equals(binValue)).toBe(true)
      expect(value).toMatchObject({value: '\\x80\\x81\\x82\\x00\\xff', valueTruncated: false})
      expect(byKey.get(`${PREFIX}file:/fits`)).toMatchObject({value: fits, valueTruncated: false})
      const long = byKey.get(`${PREFIX}file:/multibyte`)
      expect(long?.valueTruncated).toBe(true)
      expect(long?.valueBytes).toHaveLength(200)
      expect(long?.value).toBe(`${'ü'.repeat(99)}…`) // cut on a character, never mid-way
    }
  })

  it('compareAndDelete compares bytes: a non-UTF-8 key and value are released; one byte changed is left alone', async () => {
    const c = await scanByExpiry(admin, PREFIX, {maxTtlMs: MAX_TTL})
    const items = c.withoutExpiry.filter((k) => !k.valueTruncated).map((k) => ({key: k.keyBytes, value: k.valueBytes as Buffer}))
    await admin.set(`${PREFIX}file:/fits`, `${'ü'.repeat(99)}ú`) // same length, one character changed
    const res = await compareAndDelete(admin, items, {maxTtlMs: MAX_TTL})
    expect(res.deleted.map((k) => displayBytes(k)).sort()).toEqual([`${PREFIX}file:/bin-value`, `${PREFIX}file:/bin\\xff\\xfe`])
    expect(res.kept.map((k) => [displayBytes(k.key), k.reason])).toEqual([[`${PREFIX}file:/fits`, 'value-changed']])
    expect(await admin.exists(binKey)).toBe(0)
    expect(await admin.exists(`${PREFIX}file:/bin-value`)).toBe(0)
    expect(await admin.get(`${PREFIX}file:/multibyte`)).toBe(multibyte)
  })
})

/**
 * A loopback proxy in front of the test Redis that, once, sends the first SCAN step after the
 * first (plain SCAN or the scan script) the cursor it started from, '0': the real Redis then
 * returns the first batch's keys a second time, as SCAN does when the table shrinks between two
 * calls.
 */
async function rescanningProxy(pattern: string): Promise<{port: number; rewound: () => boolean; close: () => Promise<void>}> {
  let rewound = false
  const sockets = new Set<Socket>()
  const rewrite = (args: Buffer[]): Buffer[] => {
    const name = args[0]?.toString().toLowerCase()
    const at = name === 'scan' ? 1 : name === 'evalsha' || name === 'eval' ? 3 : -1
    if (rewound || at < 0 || !args.some((a) => a.toString() === pattern) || args[at]?.toString() === '0') return args
    rewound = true
    return args.map((a, i) => (i === at ? Buffer.from('0') : a))
  }
  const server = createServer((client) => {
    const upstream = connect(redis.port, '127.0.0.1')
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('error', () => {})
      s.on('close', () => sockets.delete(s))
    }
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    upstream.pipe(client)
    let pending = Buffer.alloc(0)
    client.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk])
      // Forward every complete RESP command (an array of bulk strings), rewritten.
      for (;;) {
        const parsed = parseCommand(pending)
        if (!parsed) break
        pending = pending.subarray(parsed.length)
        const args = rewrite(parsed.args)
        upstream.write(Buffer.concat([Buffer.from(`*${args.length}\r\n`), ...args.flatMap((a) => [Buffer.from(`$${a.length}\r\n`), a, Buffer.from('\r\n')])]))
      }
    })
  })
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done))
  return {
    port: (server.address() as {port: number}).port,
    rewound: () => rewound,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((done) => server.close(() => done()))
    },
  }
}

function parseCommand(b: Buffer): {args: Buffer[]; length: number} | null {
  const line = (from: number): [string, number] | null => {
    const end = b.indexOf('\r\n', from)
    return end < 0 ? null : [b.toString('latin1', from, end), end + 2]
  }
  const head = line(0)
  if (!head || !head[0].startsWith('*')) return null
  let at = head[1]
  const args: Buffer[] = []
  for (let i = 0; i < Number(head[0].slice(1)); i++) {
    const len = line(at)
    if (!len) return null
    const n = Number(len[0].slice(1))
    if (b.length < len[1] + n + 2) return null
    args.push(b.subarray(len[1], len[1] + n))
    at = len[1] + n + 2
  }
  return {args, length: at}
}

describe('a key SCAN returns twice counts once', () => {
  it('by script and by pipelines: every orphan listed once (live locks are counted in Redis, and may count twice)', async () => {
    const planted = await plant()
    const pattern = prefixPattern(PREFIX)
    await admin.call('ACL', 'SETUSER', 'reader', 'on', '>reader-pass', '~*', '+@read', '+@connection')
    for (const user of [undefined, 'reader']) {
      const proxy = await rescanningProxy(pattern)
      try {
        const url = user ? `redis://${user}@127.0.0.1:${proxy.port}/0` : `redis://127.0.0.1:${proxy.port}/0`
        const res = await withRedis({url, password: user ? 'reader-pass' : undefined}, {timeoutMs: 5000}, (r) => scanByExpiry(r, PREFIX, {maxTtlMs: MAX_TTL, count: 50}))
        expect(proxy.rewound()).toBe(true)
        if (!res.ok) throw new Error(res.error.message)
        const c = res.value
        expect(c.scanned).toBeGreaterThan(326) // SCAN really returned keys twice …
        // … and each orphan is listed once: those are what a fix acts on.
        expect(c.withoutExpiry.map((k) => k.key).sort()).toEqual([...planted.orphans].sort())
        expect(c.expiryAbove.map((k) => k.key)).toEqual(planted.above)
        // Live locks are counted inside Redis, by owner: a key returned twice counts twice there
        // (they only feed the lock-pressure heuristic; moving 100,000 live keys out to count them
        // exactly cost the 10 ms command budget and a third of the scan's speed).
        expect(c.live).toBeGreaterThanOrEqual(300)
        expect(c.live).toBeLessThanOrEqual(c.scanned - 26)
        expect([...c.liveByValue.keys()].sort()).toEqual([OWNER_A, OWNER_B].sort())
        expect(c.truncated).toBe(false)
      } finally {
        await proxy.close()
      }
    }
  })
})

describe('scanByExpiry at its deadline keeps what it found', () => {
  it('a keyspace too large for the deadline: stops at the signal with the orphans found so far', async () => {
    await admin.flushall()
    // SCAN walks these too (~0.8 µs each): 600,000 of them take several times the deadline.
    await admin.call('DEBUG', 'POPULATE', '600000', 'callfs:md:')
    await admin.call('DEBUG', 'POPULATE', '2000', `${PREFIX}file:/orphan`)
    try {
      const started = Date.now()
      const c = await scanByExpiry(admin, PREFIX, {maxTtlMs: MAX_TTL, signal: AbortSignal.timeout(150)})
      const took = Date.now() - started
      expect(took).toBeGreaterThanOrEqual(145)
      expect(took).toBeLessThan(150 + 200)
      expect(c.truncated).toBe(true)
      expect(c.withoutExpiry.length).toBeGreaterThan(0)
      expect(c.withoutExpiry.length).toBeLessThan(2000)
      expect(c.withoutExpiry.every((k) => k.key.startsWith(`${PREFIX}file:/orphan:`) && k.pttl === -1)).toBe(true)
    } finally {
      await admin.flushall()
    }
  })

  it('a call in flight when the signal aborts is not waited for (the server stopped mid-scan), by script and by pipelines', async () => {
    await plant()
    const viaScript = (signal: AbortSignal) => withRedis({url: redis.url}, {timeoutMs: 5000}, (r) => paused(() => scanByExpiry(r, PREFIX, {maxTtlMs: MAX_TTL, signal})))
    const viaPipelines = (signal: AbortSignal) =>
      withRedis({url: `redis://reader@127.0.0.1:${redis.port}/0`, password: 'reader-pass'}, {timeoutMs: 5000}, (r) => paused(() => scanByExpiry(r, PREFIX, {maxTtlMs: MAX_TTL, signal})))
    await admin.call('ACL', 'SETUSER', 'reader', 'on', '>reader-pass', '~*', '+@read', '+@connection')
    for (const scan of [viaScript, viaPipelines]) {
      const started = Date.now()
      const res = await scan(AbortSignal.timeout(200))
      expect(Date.now() - started).toBeLessThan(200 + 300)
      expect(res).toMatchObject({ok: true, value: {truncated: true, scanned: 0, withoutExpiry: []}})
    }
  })
})

/** Runs `fn` with the server SIGSTOPped, resuming it afterwards. */
async function paused<T>(fn: () => Promise<T>): Promise<T> {
  redis.pause()
  try {
    return await fn()
  } finally {
    redis.resume()
  }
}

describe('who may release a lock', () => {
  afterAll(async () => {
    for (const user of ['reader', 'nodel', 'locker']) await admin.call('ACL', 'DELUSER', user)
  })

  const as = async <T>(user: string, fn: (r: Redis) => Promise<T>) => withRedis({url: `redis://${user}@127.0.0.1:${redis.port}/0`, password: `${user}-pass`}, {timeoutMs: 2000}, fn)

  it('lockReleaseDenied: null for a user who may; why not for one without scripting or without DEL', async () => {
    await admin.call('ACL', 'SETUSER', 'reader', 'on', '>reader-pass', '~*', '+@read', '+@connection')
    await admin.call('ACL', 'SETUSER', 'nodel', 'on', '>nodel-pass', '~*', '+@read', '+@scripting', '+@connection')
    await admin.call('ACL', 'SETUSER', 'locker', 'on', '>locker-pass', `~${PREFIX}*`, '+@read', '+@scripting', '+del', '+@connection')
    const key = `${PREFIX}file:/x`
    expect(await as('locker', (r) => lockReleaseDenied(r, key))).toEqual({ok: true, value: null, durationMs: expect.any(Number)})
    expect(await as('reader', (r) => lockReleaseDenied(r, key))).toMatchObject({ok: true, value: 'this Redis user may not run scripts (EVAL/EVALSHA), and the guard is a Lua script'})
    expect(await as('nodel', (r) => lockReleaseDenied(r, key))).toMatchObject({ok: true, value: 'the ACL denies this Redis user DEL on the lock keys'})
    // Key patterns count: the locker may not touch keys outside the lock prefix.
    expect(await as('locker', (r) => lockReleaseDenied(r, 'callfs:md:/x'))).toMatchObject({ok: true, value: 'the ACL denies this Redis user TYPE, GET, PTTL, DEL on the lock keys'})
  })

  it('compareAndDelete: a denied DEL inside the guard is "denied" per key, deletes nothing, stops no batch; a user without scripting gets a permission error', async () => {
    await admin.flushall()
    const keys = Array.from({length: 3}, (_, i) => `${PREFIX}file:/denied/${i}`)
    await admin.mset(...keys.flatMap((k) => [k, OWNER_A]))
    const items = keys.map((key) => ({key, value: OWNER_A}))
    expect(await as('nodel', (r) => compareAndDelete(r, items, {maxTtlMs: MAX_TTL}))).toMatchObject({
      ok: true,
      value: {deleted: [], kept: keys.map((key) => ({key, reason: 'denied'}))},
    })
    expect(await admin.exists(...keys)).toBe(3)
    expect(await as('reader', (r) => compareAndDelete(r, items, {maxTtlMs: MAX_TTL}))).toMatchObject({ok: false, error: {kind: 'permission', code: 'NOPERM'}})
    expect(await as('locker', (r) => compareAndDelete(r, items, {maxTtlMs: MAX_TTL}))).toMatchObject({ok: true, value: {deleted: keys, kept: []}})
  })

  it('a command the ACL denies inside a script is a permission error, not "other"', async () => {
    await admin.set('anything', 'x')
    const res = await as('nodel', (r) => r.eval("return redis.call('DEL', KEYS[1])", 1, 'anything'))
    expect(res).toMatchObject({ok: false, error: {kind: 'permission'}})
    if (!res.ok) expect(res.error.message).toMatch(/^Redis at 127\.0\.0\.1:\d+ denied a command inside a script to this user \(ERR The user executing the script can't run this command.*\) — grant it in the ACL$/)
    expect(await admin.get('anything')).toBe('x')
  })
})

describe('loading', () => {
  it('importing the probe module does not load ioredis', () => {
    const repo = resolve(import.meta.dirname, '../..')
    const code = `
      import {createRequire} from 'node:module'
      const loaded = () => Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('/node_modules/ioredis/')).length
      await import('./src/diagnostics/redis.ts')
      const before = loaded()
      await import('ioredis') // proves the check sees ioredis once it is loaded
      console.log(before, loaded() > 0)
    `
    const out = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {cwd: repo, encoding: 'utf8'})
    expect(out.stderr).toBe('')
    expect(out.stdout.trim()).toBe('0 true')
  })
})
