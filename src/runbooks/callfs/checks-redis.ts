import {shellQuote} from '../../diagnostics/exec.js'
import {compareAndDelete, isPlainText, lockReleaseDenied, maskRedisUrl, redisInfo, scanByExpiry, type ScanClassification, type ScannedKey} from '../../diagnostics/redis.js'
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

/**
 * The lock scan's bounds. A scan of a large keyspace takes longer than one probe, so it gets its
 * own budget: the probe time-out, at least minBudgetMs (tests lower it to reach the deadline).
 */
export const lockScanLimits = {minBudgetMs: 30_000, maxKeys: 5_000_000}

function scanBudget(timeoutMs: number): number {
  return Math.max(timeoutMs, lockScanLimits.minBudgetMs)
}

/** When the scan stops and keeps what it found: ~1 s before the Redis session's own deadline. */
function scanStopMs(budget: number): number {
  return Math.max(budget - 1000, Math.round(budget / 2))
}

interface LockScan {
  scan: ScanClassification
  /** Why this Redis user cannot run the guarded release (null: it can, or Redis cannot tell). */
  releaseDenied: string | null
}

/** One scan of the lock keys serves both lock checks. */
function lockScan(ctx: CallfsContext): Promise<ProbeResult<LockScan>> {
  return ctx.memo('lock-scan', () => {
    const budget = scanBudget(ctx.timeoutMs)
    // The scan stops at its own deadline with what it found; the whole session's deadline
    // (budget) would throw all of that away. The permission check after it gets what is left.
    const stopScan = AbortSignal.any([ctx.signal, AbortSignal.timeout(scanStopMs(budget))])
    const stopCheck = AbortSignal.any([ctx.signal, AbortSignal.timeout(budget - Math.min(300, Math.round(budget / 10)))])
    return ctx.redis(
      async (redis): Promise<LockScan> => {
        const scan = await scanByExpiry(redis, ctx.target.lock_prefix, {maxTtlMs: ctx.target.lock_timeout, count: 1000, maxKeys: lockScanLimits.maxKeys, signal: stopScan})
        // Can this user run the guard? Asked on a real orphan, so its key patterns apply.
        const sample = [...scan.withoutExpiry, ...scan.expiryAbove].find((k) => uncomparable(k) === null)
        const releaseDenied = sample ? await lockReleaseDenied(redis, sample.keyBytes, {signal: stopCheck}) : null
        return {scan, releaseDenied}
      },
      {timeoutMs: budget},
    )
  })
}

/** The first 8 characters of an owner (an escape such as \xff counts as one). */
function short(owner: string | null): string {
  if (!owner) return 'no owner value'
  const units = owner.match(/\\x[0-9a-f]{2}|\\\\|[\s\S]/gu) ?? []
  return units.length > 12 ? `${units.slice(0, 8).join('')}…` : owner
}

/** Why the guard cannot compare this key's value exactly, or null when it can. */
function uncomparable(k: ScannedKey): string | null {
  if (k.valueBytes === null) return 'not a string value'
  if (k.valueTruncated) return 'its value is longer than opsctl compares'
  return null
}

/** How many keys a plan and its commands name one by one; the rest is one line with the count. */
export const PLAN_KEYS = 50

function thousands(n: number): string {
  return n.toLocaleString('en-US')
}

/** printf's format for exact bytes: printable ASCII as it is, everything else as \ooo. */
function printfBytes(b: Buffer): string {
  let out = ''
  for (const c of b) out += c >= 0x20 && c < 0x7f && c !== 0x5c && c !== 0x25 && c !== 0x27 ? String.fromCharCode(c) : `\\${c.toString(8).padStart(3, '0')}`
  return out
}

/** DEL of one key as a pasteable shell command; a key that is not plain text goes through printf and -x, byte for byte. */
function delCommand(ctx: CallfsContext, k: ScannedKey): string {
  if (isPlainText(k.keyBytes)) return `${cli(ctx)} DEL ${shellQuote(k.key)}`
  return `printf '${printfBytes(k.keyBytes)}' | ${cli(ctx)} -x DEL`
}

/** "without expiry", "with an expiry above lock_timeout 60s", or both, as found among `keys`. */
function expiryRule(keys: ScannedKey[], lockTimeoutMs: number): string {
  const none = keys.some((k) => k.pttl === -1)
  const above = keys.some((k) => k.pttl !== -1)
  const aboveText = `with an expiry above lock_timeout ${formatMs(lockTimeoutMs)}`
  return none && above ? `without expiry or ${aboveText}` : none ? 'without expiry' : aboveText
}

/**
 * The release of `orphans` (one scan's result): a guarded compare-and-delete of each whose
 * value the guard can compare, when this Redis user may run it; the rest left for a person.
 * The plan names up to PLAN_KEYS keys, then one line with the exact count of the others and the
 * rule that picks them; apply() acts on exactly the keys of the plan, named or counted.
 */
export function releaseLocksFix(ctx: CallfsContext, orphans: ScannedKey[], o: {releaseDenied?: string | null} = {}): Fix {
  // Only what the guard can compare exactly, as a user allowed to run it, is deleted; the rest
  // is shown for a person to judge.
  const guarded: ScannedKey[] = []
  const manual: Array<{k: ScannedKey; line: string}> = []
  for (const k of orphans) {
    const why = uncomparable(k)
    if (why) manual.push({k, line: `leave ${k.key}: ${why}, so no guard can prove it unchanged — inspect it, then DEL it by hand`})
    else if (o.releaseDenied) manual.push({k, line: `leave ${k.key} (owner ${short(k.value)}): ${o.releaseDenied} — check it still has ${k.pttl === -1 ? 'no expiry' : 'an expiry above lock_timeout'} and this owner, then DEL it by hand`})
    else guarded.push(k)
  }
  const prefix = ctx.target.lock_prefix
  const maxTtlMs = ctx.target.lock_timeout
  // Up to PLAN_KEYS keys named: each list gets at least half of them when both are longer.
  const guardedShown = Math.min(guarded.length, PLAN_KEYS - Math.min(manual.length, PLAN_KEYS / 2))
  const manualShown = Math.min(manual.length, PLAN_KEYS - guardedShown)
  const plan = guarded.slice(0, guardedShown).map((k) => `compare-and-delete ${k.key} (owner ${short(k.value)})`)
  const guardedMore = guarded.slice(guardedShown)
  if (guardedMore.length > 0) {
    const except = manual.length > 0 ? ' (the keys left alone below excepted)' : ''
    plan.push(`… and ${thousands(guardedMore.length)} more: every other key under ${prefix} that this scan found ${expiryRule(guardedMore, maxTtlMs)}${except}, each by the same guarded compare-and-delete`)
  }
  plan.push(...manual.slice(0, manualShown).map((m) => m.line))
  const manualMore = manual.slice(manualShown).map((m) => m.k)
  if (manualMore.length > 0) {
    // With releaseDenied every orphan is left alone; else exactly those the guard cannot compare.
    const which = o.releaseDenied ? `, as this Redis user may not run the guard` : ' whose value is not a string or is longer than opsctl compares'
    plan.push(`… and ${thousands(manualMore.length)} more left alone: every other key under ${prefix} that this scan found ${expiryRule(manualMore, maxTtlMs)}${which} — inspect each, then DEL it by hand`)
  }
  // CallFS paths may hold spaces and quotes: each key is one shell word, ready to paste.
  const named = [...guarded.slice(0, guardedShown), ...manual.slice(0, manualShown).map((m) => m.k)]
  const commands = named.map((k) => delCommand(ctx, k))
  if (orphans.length > named.length) {
    commands.push(`# … and ${thousands(orphans.length - named.length)} more: the same DEL for every other orphaned key this scan found (${thousands(orphans.length)} in all)`)
  }
  const fix: Fix = {
    id: 'callfs.redis.release-orphaned-locks',
    title: guarded.length
      ? `Release the ${guarded.length} orphaned lock${guarded.length === 1 ? '' : 's'}`
      : `Inspect and release the ${orphans.length} orphaned lock key${orphans.length === 1 ? '' : 's'} by hand`,
    plan,
    commands,
  }
  if (guarded.length === 0) return fix
  const items = guarded.map((k) => ({key: k.keyBytes, value: k.valueBytes as Buffer}))
  return {
    ...fix,
    confirmText: guarded.length === 1 ? (guarded[0] as ScannedKey).key : `${guarded.length} locks`,
    applyTimeoutMs: scanBudget(ctx.timeoutMs),
    async apply(signal) {
      // Guard, in one Lua call per batch: the key still holds the same bytes and still has no
      // (or an over-long) expiry. A lock re-acquired or given an expiry since is left alone.
      const r = await ctx.redis((redis) => compareAndDelete(redis, items, {maxTtlMs}), {timeoutMs: scanBudget(ctx.timeoutMs), signal})
      if (!r.ok) return {ok: false, detail: r.error.message}
      const {deleted, kept} = r.value
      const why = (reason: string) => kept.filter((k) => k.reason === reason).length
      const denied = why('denied') ? `, ${why('denied')} denied to this Redis user by the ACL` : ''
      const leftAlone = kept.length
        ? `; left alone ${kept.length}: ${why('value-changed')} re-acquired by another owner, ${why('has-expiry')} given an expiry, ${why('gone')} already gone${denied}`
        : ''
      // A lock the ACL kept us from releasing is a plan not carried out: not ok.
      return {ok: why('denied') === 0, detail: `released ${deleted.length} of ${items.length} locks${leftAlone}`}
    },
  }
}

/** Evidence names at most this many keys and owners; `count` and `ownerCount` say how many in all. */
const EVIDENCE_KEYS = 1000
const EVIDENCE_OWNERS = 100

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
    const {scan: s, releaseDenied} = r.value
    const orphans = [...s.withoutExpiry, ...s.expiryAbove].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    const scanned = `scanned ${s.matched} lock keys in ${formatMs(s.durationMs)}${s.truncated ? ' (stopped early: partial)' : ''}`
    if (orphans.length === 0) {
      return {status: s.truncated ? 'unknown' : 'ok', summary: `${s.live} live lock(s) under ${ctx.target.lock_prefix}, none orphaned; ${scanned}`, evidence: {scanned: s.matched, live: s.live}}
    }
    const owners = new Map<string, number>()
    let idle: {min: number; max: number} | null = null
    for (const k of orphans) {
      owners.set(k.value ?? '(none)', (owners.get(k.value ?? '(none)') ?? 0) + 1)
      if (k.idleSeconds === null) continue
      idle = idle ? {min: Math.min(idle.min, k.idleSeconds), max: Math.max(idle.max, k.idleSeconds)} : {min: k.idleSeconds, max: k.idleSeconds}
    }
    const topOwners = [...owners].sort((a, b) => b[1] - a[1]).slice(0, EVIDENCE_OWNERS)
    const parts = []
    if (s.withoutExpiry.length) parts.push(`${s.withoutExpiry.length} lock key${s.withoutExpiry.length === 1 ? '' : 's'} under ${ctx.target.lock_prefix} ${s.withoutExpiry.length === 1 ? 'has' : 'have'} no expiry`)
    if (s.expiryAbove.length) parts.push(`${s.expiryAbove.length} have an expiry above lock_timeout ${formatMs(ctx.target.lock_timeout)}`)
    const partial = s.truncated ? ` (partial scan: stopped after ${thousands(s.matched)} lock keys in ${formatMs(s.durationMs)}; there may be more)` : ''
    return {
      status: 'fail',
      summary: `${parts.join('; ')}${partial}`,
      evidence: {
        keys: orphans.slice(0, EVIDENCE_KEYS).map((k) => k.key),
        count: orphans.length,
        owners: Object.fromEntries(topOwners),
        ...(owners.size > topOwners.length ? {ownerCount: owners.size} : {}),
        idleSeconds: idle,
        scanned: s.matched,
        live: s.live,
        ...(s.truncated ? {partial: true} : {}),
      },
      fix: releaseLocksFix(ctx, orphans, {releaseDenied}),
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
    const s = r.value.scan
    const top = [...s.liveByValue.entries()].sort((a, b) => b[1] - a[1])
    const [owner, held] = top[0] ?? [null, 0]
    const evidence = {live: s.live, threshold: ctx.target.thresholds.live_locks, owners: top.length, topOwner: owner ? {owner, held} : null}
    const problems: string[] = []
    if (s.live > ctx.target.thresholds.live_locks) problems.push(`${s.live} live locks (threshold ${ctx.target.thresholds.live_locks})`)
    if (s.live >= 50 && held / s.live > 0.8 && top.length > 1) problems.push(`one instance (${short(owner)}) holds ${held} of ${s.live} live locks`)
    // A partial scan counted only some of the locks: enough to warn, never enough to say ok.
    const partial = s.truncated ? ` (partial scan: stopped after ${thousands(s.matched)} lock keys; there may be more)` : ''
    if (problems.length === 0) return {status: s.truncated ? 'unknown' : 'ok', summary: `${s.live} live lock(s) held by ${top.length} instance(s)${partial}`, evidence}
    return {
      status: 'warn',
      summary: `${problems.join('; ')}${partial}`,
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
