import {shellQuote} from '../../diagnostics/exec.js'
import {compareAndDelete, maskRedisUrl, redisInfo, scanByExpiry, type KeyInfo, type ScanClassification} from '../../diagnostics/redis.js'
import type {ProbeResult} from '../../diagnostics/types.js'

import type {CheckSpec, Finding, Fix} from '../../engine/types.js'
import type {CallfsContext} from './context.js'
import {formatMs} from '../../util/time.js'

const GUIDE = 'Redis/Distributed Locking Issues'

function cli(ctx: CallfsContext): string {
  return `redis-cli -u ${shellQuote(maskRedisUrl(ctx.target.redis))}`
}

function num(info: Record<string, string>, key: string): number | null {
  const v = info[key]
  if (v === undefined) return null
  const n = Number(v)
  return Number.isFinite(n) ? n : null
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`
}

function pingPlan(kind: string, where: string): string[] {
  const slots = 'find the client holding the connections (CLIENT LIST) or raise maxclients'
  switch (kind) {
    case 'auth':
      return ['set the Redis password in the variable named by systems.callfs.redis_password_env (and dlm.redis_password in CallFS)']
    case 'timeout':
      return ['Redis accepted but did not answer: check whether it is stopped, swapping or blocked by a slow command', 'look at its log and SLOWLOG']
    case 'capacity':
      return [`Redis refuses new clients (maxclients): ${slots}`]
    case 'reset':
      // Redis answers a client over maxclients with an error and closes at once; the client
      // usually sees only the closed socket.
      return [
        'Redis accepted the connection, then closed it: most often maxclients is reached (its log and INFO clients say so); else protected-mode or a TLS-only port',
        slots,
      ]
    default:
      return [`start Redis at ${where}, or correct dlm.redis_addr / systems.callfs.redis`]
  }
}

export const redisPing: CheckSpec<CallfsContext> = {
  id: 'callfs.redis.ping',
  title: 'Redis answers',
  severity: 'critical',
  docs: `${GUIDE} > Common Causes and Solutions > Redis Connection Issues`,
  remediations: [{id: 'callfs.redis.restore-connection', title: 'Restore the Redis connection', automated: false}],
  async run(ctx) {
    // The probe has PINGed already. INFO is a @dangerous command an ACL user may lack: Redis
    // answered all the same, so that is ok with the details unknown, not an unknown Redis.
    const r = await ctx.redis(async (redis) => {
      try {
        return {info: await redisInfo(redis), infoDenied: false}
      } catch (error) {
        if (!/^NOPERM/.test(error instanceof Error ? error.message : String(error))) throw error
        return {info: {} as Record<string, string>, infoDenied: true}
      }
    })
    const where = maskRedisUrl(ctx.target.redis)
    if (!r.ok) {
      if (r.error.kind === 'permission') return {status: 'unknown', summary: `${where}: ${r.error.message}`}
      return {
        status: 'fail',
        summary: `${where}: ${r.error.message}`,
        evidence: {url: where, error: r.error.kind},
        fix: {
          id: 'callfs.redis.restore-connection',
          title: 'Restore the Redis connection',
          plan: pingPlan(r.error.kind, where),
          commands: [
            `${cli(ctx)} ping`,
            `${cli(ctx)} info server`,
            ...(r.error.kind === 'capacity' || r.error.kind === 'reset' ? [`${cli(ctx)} info clients`, `${cli(ctx)} client list`] : []),
            'systemctl status redis-server',
            `${cli(ctx)} slowlog get 10`,
          ],
        },
      }
    }
    const {info, infoDenied} = r.value
    if (infoDenied) {
      return {
        status: 'ok',
        summary: `Redis at ${where} answers PING (INFO is not permitted for this user: version and role unknown)`,
        evidence: {url: where, version: null, role: null, infoDenied: true},
      }
    }
    const evidence = {
      url: where,
      version: info.redis_version,
      role: info.role,
      connectedClients: num(info, 'connected_clients'),
      uptimeSeconds: num(info, 'uptime_in_seconds'),
    }
    return {status: 'ok', summary: `Redis ${info.redis_version ?? ''} at ${where} answers PING (${info.role ?? 'role unknown'}, ${evidence.connectedClients ?? '?'} clients)`, evidence}
  },
}

export const redisMemory: CheckSpec<CallfsContext> = {
  id: 'callfs.redis.memory',
  title: 'Redis has memory headroom and evicts nothing',
  severity: 'medium',
  docs: `${GUIDE} > Diagnostic Commands (Check Redis memory usage)`,
  remediations: [{id: 'callfs.redis.memory-headroom', title: 'Give Redis memory headroom', automated: false}],
  async run(ctx) {
    const r = await ctx.redis((redis) => redisInfo(redis))
    if (!r.ok) return {status: 'unknown', summary: r.error.message}
    const info = r.value
    const used = num(info, 'used_memory') ?? 0
    const max = num(info, 'maxmemory') ?? 0
    const evicted = num(info, 'evicted_keys') ?? 0
    const rejected = num(info, 'rejected_connections') ?? 0
    const policy = info.maxmemory_policy ?? 'unknown'
    const ratio = max > 0 ? used / max : 0
    const evidence = {usedMemory: mib(used), maxmemory: max > 0 ? mib(max) : 'no limit', usedPercent: max > 0 ? Math.round(ratio * 1000) / 10 : null, policy, evictedKeys: evicted, rejectedConnections: rejected}
    const problems: string[] = []
    let status: Finding['status'] = 'ok'
    if (max > 0 && ratio >= 0.95) {
      status = 'fail'
      problems.push(`${evidence.usedPercent}% of maxmemory used`)
    } else if (max > 0 && ratio >= 0.8) {
      status = 'warn'
      problems.push(`${evidence.usedPercent}% of maxmemory used`)
    }
    if (evicted > 0) {
      status = 'fail'
      problems.push(`${evicted} keys evicted since start (policy ${policy}) — an evicted lock lets two writers in`)
    }
    if (rejected > 0) {
      if (status === 'ok') status = 'warn'
      problems.push(`${rejected} connections rejected (maxclients)`)
    }
    const usage = max > 0 ? `${mib(used)} of ${mib(max)} (${evidence.usedPercent}%)` : `${mib(used)}, no maxmemory limit`
    if (status === 'ok') return {status, summary: `Redis uses ${usage}; nothing evicted`, evidence}
    return {
      status,
      summary: problems.join('; '),
      evidence,
      fix: {
        id: 'callfs.redis.memory-headroom',
        title: 'Give Redis memory headroom',
        plan: ['raise maxmemory, or move other data off this Redis', 'use maxmemory-policy noeviction for a lock store: a full Redis should refuse writes, not drop locks'],
        commands: [`${cli(ctx)} info memory`, `${cli(ctx)} config set maxmemory <bytes>`, `${cli(ctx)} config set maxmemory-policy noeviction`],
      },
    }
  },
}

/** One scan of the lock keys serves both lock checks. */
function lockScan(ctx: CallfsContext): Promise<ProbeResult<ScanClassification>> {
  // A scan of a large keyspace takes longer than one probe; it gets its own, larger budget.
  const budget = scanBudget(ctx.timeoutMs)
  return ctx.memo('lock-scan', () =>
    ctx.redis((redis) => scanByExpiry(redis, ctx.target.lock_prefix, {maxTtlMs: ctx.target.lock_timeout, count: 1000, maxKeys: 5_000_000, signal: ctx.signal}), {timeoutMs: budget}),
  )
}

function scanBudget(timeoutMs: number): number {
  return Math.max(timeoutMs, 30_000)
}

function short(owner: string | null): string {
  if (!owner) return 'no owner value'
  return owner.length > 12 ? `${owner.slice(0, 8)}…` : owner
}

/**
 * diagnostics/redis.ts reads at most this many characters of a value (VALUE_CAP) and marks a
 * longer one with a trailing "…": such a value cannot be compared exactly by the guard.
 */
const COMPARED_CHARS = 200

/** Why the guard cannot compare this key's value exactly, or null when it can. */
function uncomparable(k: KeyInfo): string | null {
  if (k.value === null) return 'not a string value'
  if (k.value.length >= COMPARED_CHARS && k.value.endsWith('…')) return 'its value is longer than opsctl compares'
  return null
}

export function releaseLocksFix(ctx: CallfsContext, orphans: KeyInfo[]): Fix {
  // Only what the guard can compare exactly is deleted; the rest is shown for a person to judge.
  const guarded = orphans.filter((k) => uncomparable(k) === null)
  const blind = orphans.filter((k) => uncomparable(k) !== null)
  const items = guarded.map((k) => ({key: k.key, value: k.value ?? ''}))
  const maxTtlMs = ctx.target.lock_timeout
  const fix: Fix = {
    id: 'callfs.redis.release-orphaned-locks',
    title: guarded.length
      ? `Release the ${guarded.length} orphaned lock${guarded.length === 1 ? '' : 's'}`
      : `Inspect and release the ${orphans.length} orphaned lock key${orphans.length === 1 ? '' : 's'} by hand`,
    plan: [
      ...guarded.map((k) => `compare-and-delete ${k.key} (owner ${short(k.value)})`),
      ...blind.map((k) => `leave ${k.key}: ${uncomparable(k)}, so no guard can prove it unchanged — inspect it, then DEL it by hand`),
    ],
    // CallFS paths may hold spaces and quotes: each key is one shell word, ready to paste.
    commands: orphans.map((k) => `${cli(ctx)} DEL ${shellQuote(k.key)}`),
  }
  if (guarded.length === 0) return fix
  return {
    ...fix,
    confirmText: guarded.length === 1 ? (guarded[0] as KeyInfo).key : `${guarded.length} locks`,
    applyTimeoutMs: scanBudget(ctx.timeoutMs),
    async apply(signal) {
      // Guard, in one Lua call per batch: the key still holds the same owner and still has no
      // (or an over-long) expiry. A lock re-acquired or given an expiry since is left alone.
      const r = await ctx.redis((redis) => compareAndDelete(redis, items, {maxTtlMs}), {timeoutMs: scanBudget(ctx.timeoutMs), signal})
      if (!r.ok) return {ok: false, detail: r.error.message}
      const {deleted, kept} = r.value
      const why = (reason: string) => kept.filter((k) => k.reason === reason).length
      const leftAlone = kept.length
        ? `; left alone ${kept.length}: ${why('value-changed')} re-acquired by another owner, ${why('has-expiry')} given an expiry, ${why('gone')} already gone`
        : ''
      return {ok: true, detail: `released ${deleted.length} of ${items.length} locks${leftAlone}`}
    },
  }
}

export const redisOrphanedLocks: CheckSpec<CallfsContext> = {
  id: 'callfs.redis.orphaned-locks',
  title: 'Orphaned CallFS locks in Redis',
  severity: 'high',
  docs: `${GUIDE} > Common Causes and Solutions > Orphaned Locks`,
  remediations: [{id: 'callfs.redis.release-orphaned-locks', title: 'Release the orphaned locks', automated: true, risk: 'destructive'}],
  budgetMs: (t) => scanBudget(t) + 1000,
  async run(ctx) {
    const r = await lockScan(ctx)
    if (!r.ok) return {status: 'unknown', summary: `could not scan ${ctx.target.lock_prefix}*: ${r.error.message}`}
    const s = r.value
    const orphans = [...s.withoutExpiry, ...s.expiryAbove]
    const scanned = `scanned ${s.matched} lock keys in ${formatMs(s.durationMs)}${s.truncated ? ' (stopped early: partial)' : ''}`
    if (orphans.length === 0) {
      return {status: s.truncated ? 'unknown' : 'ok', summary: `${s.live} live lock(s) under ${ctx.target.lock_prefix}, none orphaned; ${scanned}`, evidence: {scanned: s.matched, live: s.live}}
    }
    const owners: Record<string, number> = {}
    for (const k of orphans) owners[k.value ?? '(none)'] = (owners[k.value ?? '(none)'] ?? 0) + 1
    const idle = orphans.map((k) => k.idleSeconds).filter((x): x is number => x !== null)
    const parts = []
    if (s.withoutExpiry.length) parts.push(`${s.withoutExpiry.length} lock key${s.withoutExpiry.length === 1 ? '' : 's'} under ${ctx.target.lock_prefix} ${s.withoutExpiry.length === 1 ? 'has' : 'have'} no expiry`)
    if (s.expiryAbove.length) parts.push(`${s.expiryAbove.length} have an expiry above lock_timeout ${formatMs(ctx.target.lock_timeout)}`)
    return {
      status: 'fail',
      summary: parts.join('; '),
      evidence: {
        keys: orphans.slice(0, 20).map((k) => k.key),
        count: orphans.length,
        owners,
        idleSeconds: idle.length ? {min: Math.min(...idle), max: Math.max(...idle)} : null,
        scanned: s.matched,
        live: s.live,
      },
      fix: releaseLocksFix(ctx, orphans),
    }
  },
}

export const redisLockPressure: CheckSpec<CallfsContext> = {
  id: 'callfs.redis.lock-pressure',
  title: 'Lock pressure is normal',
  severity: 'medium',
  docs: `${GUIDE} > Common Causes and Solutions > Lock Timeout Issues`,
  remediations: [{id: 'callfs.redis.tune-locks', title: 'Relieve lock pressure', automated: false}],
  budgetMs: (t) => scanBudget(t) + 1000,
  async run(ctx) {
    const r = await lockScan(ctx)
    if (!r.ok) return {status: 'unknown', summary: `could not scan ${ctx.target.lock_prefix}*: ${r.error.message}`}
    const s = r.value
    const top = [...s.liveByValue.entries()].sort((a, b) => b[1] - a[1])
    const [owner, held] = top[0] ?? [null, 0]
    const evidence = {live: s.live, threshold: ctx.target.thresholds.live_locks, owners: top.length, topOwner: owner ? {owner, held} : null}
    const problems: string[] = []
    if (s.live > ctx.target.thresholds.live_locks) problems.push(`${s.live} live locks (threshold ${ctx.target.thresholds.live_locks})`)
    if (s.live >= 50 && held / s.live > 0.8 && top.length > 1) problems.push(`one instance (${short(owner)}) holds ${held} of ${s.live} live locks`)
    if (problems.length === 0) return {status: 'ok', summary: `${s.live} live lock(s) held by ${top.length} instance(s)`, evidence}
    return {
      status: 'warn',
      summary: problems.join('; '),
      evidence,
      fix: {
        id: 'callfs.redis.tune-locks',
        title: 'Relieve lock pressure',
        plan: [
          'find which files are hot (many writers on the same paths) and which instance holds the most locks',
          'raise dlm.lock_timeout / retry settings in the CallFS config if operations legitimately take longer',
        ],
        commands: [`${cli(ctx)} --scan --pattern ${shellQuote(`${ctx.target.lock_prefix}*`)} --count 1000 | head -50`, `journalctl -u ${ctx.target.unit} | grep -i "failed to acquire lock" | tail -20`],
      },
    }
  },
}
