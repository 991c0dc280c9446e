// `npm run bench`: the performance figures of opsctl, printed — not asserted. Each figure is
// shown with its target so a regression is visible at a glance.
//
//   1. start-up: `opsctl --version` and `opsctl diagnose --help` against bare `node -e 0`
//   2. `opsctl diagnose callfs` with every endpoint refusing, and with every endpoint accepting
//      and never answering
//   3. orphaned CallFS locks in a Redis holding 1,000,000 keys (100,000 locks, 1,000 orphans):
//      time to find them against `redis-cli --scan`, the slowest Redis command (SLOWLOG), the
//      time to release them, and the peak RSS of the opsctl process doing it.
//
// Everything runs on loopback against throwaway servers; nothing on the machine is touched.

import {spawn, spawnSync} from 'node:child_process'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {createServer, type Server, type Socket} from 'node:net'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'

import {compareAndDelete, scanByExpiry} from '../src/diagnostics/redis.js'
import {freePort} from '../test/support/ports.js'
import {startRedis} from '../test/support/redis.js'

const REPO = resolve(import.meta.dirname, '..')
const RUN = join(REPO, 'bin', 'run.js')
const quick = process.argv.includes('--quick')

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] as number
}

function wall(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): {ms: number; status: number | null; stdout: string} {
  const started = process.hrtime.bigint()
  const r = spawnSync(cmd, args, {env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024})
  return {ms: Number(process.hrtime.bigint() - started) / 1e6, status: r.status, stdout: r.stdout}
}

function row(label: string, value: string, target: string, ok: boolean | null): void {
  const mark = ok === null ? ' ' : ok ? '✓' : '✗'
  console.log(`  ${mark} ${label.padEnd(66)} ${value.padStart(14)}   target ${target}`)
}

const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`)

async function startup(): Promise<void> {
  console.log('\nStart-up (median wall time)')
  const n = quick ? 7 : 21
  const times = (args: string[], cmd = process.execPath) => {
    wall(cmd, args) // warm the file cache
    return median(Array.from({length: n}, () => wall(cmd, args).ms))
  }
  const bare = times(['-e', '0'])
  const version = times([RUN, '--version'])
  const help = times([RUN, 'diagnose', '--help'])
  row('node -e 0', fmt(bare), '—', null)
  row('opsctl --version', `${fmt(version)} ${(version / bare).toFixed(2)}×`, '≤ 2× node', version / bare <= 2)
  row('opsctl diagnose --help', `${fmt(help)} ${(help / bare).toFixed(2)}×`, '≤ 3× node', help / bare <= 3)
}

/** A TCP server that accepts every connection and never says a word. */
async function blackhole(): Promise<{port: number; close(): Promise<void>}> {
  const sockets = new Set<Socket>()
  const server: Server = createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as {port: number}).port
  return {
    port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  }
}

async function writeConfig(dir: string, ports: {api: number; metrics: number; pg: number; redis: number}, extra = ''): Promise<string> {
  const path = join(dir, `opsctl-${ports.api}.yaml`)
  await writeFile(
    path,
    [
      'version: 1',
      'systems:',
      '  callfs:',
      `    url: https://127.0.0.1:${ports.api}`,
      `    metrics_url: http://127.0.0.1:${ports.metrics}/metrics`,
      `    postgres: postgres://callfs@127.0.0.1:${ports.pg}/callfs`,
      `    redis: redis://127.0.0.1:${ports.redis}/0`,
      `    config_file: ${join(dir, 'absent.yaml')}`,
      `    data_dir: ${dir}`,
      extra,
    ].join('\n'),
  )
  return path
}

async function unreachable(dir: string): Promise<void> {
  console.log('\nopsctl diagnose callfs with unreachable endpoints (median of 5)')
  const env = {...process.env, NO_COLOR: '1', OPSCTL_AUDIT_LOG: join(dir, 'audit.jsonl')}
  const closed = await Promise.all([freePort(), freePort(), freePort(), freePort()])
  const refusing = await writeConfig(dir, {api: closed[0]!, metrics: closed[1]!, pg: closed[2]!, redis: closed[3]!})
  const refusedMs = median(Array.from({length: 5}, () => wall(process.execPath, [RUN, 'diagnose', 'callfs', '--json', '--config', refusing], env).ms))
  row('every endpoint refusing connections', fmt(refusedMs), '< 1 s', refusedMs < 1000)

  const holes = await Promise.all([blackhole(), blackhole(), blackhole(), blackhole()])
  const hung = await writeConfig(dir, {api: holes[0]!.port, metrics: holes[1]!.port, pg: holes[2]!.port, redis: holes[3]!.port})
  const timeout = 2000
  // spawn (not spawnSync): the black holes live in this process and must keep accepting.
  const runOnce = () =>
    new Promise<number>((r) => {
      const started = Date.now()
      const child = spawn(process.execPath, [RUN, 'diagnose', 'callfs', '--json', '--config', hung, '--timeout', `${timeout}ms`], {env, stdio: 'ignore'})
      child.on('close', () => r(Date.now() - started))
    })
  const hungTimes: number[] = []
  for (let i = 0; i < 5; i++) hungTimes.push(await runOnce())
  const hungMs = median(hungTimes)
  row(`every endpoint accepting, never answering (--timeout ${timeout / 1000}s)`, fmt(hungMs), `≤ ${fmt(timeout + 1000)}`, hungMs <= timeout + 1000)
  await Promise.all(holes.map((h) => h.close()))
}

async function orphans(dir: string): Promise<void> {
  const total = quick ? 100_000 : 1_000_000
  const locks = total / 10
  const orphaned = locks / 100
  console.log(`\nOrphaned locks: ${total.toLocaleString('en')} keys, ${locks.toLocaleString('en')} under callfs:lock:, ${orphaned.toLocaleString('en')} without expiry`)
  const redis = await startRedis()
  const r = await redis.client()
  try {
    await r.call('DEBUG', 'POPULATE', String(total - locks), 'callfs:md:')
    const owners = Array.from({length: 8}, (_, i) => i.toString(16).repeat(32))
    for (let base = 0; base < locks; base += 10_000) {
      const p = r.pipeline()
      for (let i = base; i < base + 10_000; i++) {
        const key = `callfs:lock:file:/data/dir${i % 97}/file-${i}.bin`
        if (i % 100 === 7) p.set(key, owners[i % 8] as string)
        else p.set(key, owners[i % 8] as string, 'EX', 3600) // live for the whole bench
      }
      await p.exec()
    }
    // The live locks carry an hour's expiry so none lapses while redis-cli crawls; lock_timeout
    // is set above it so that only the 1 % without expiry are orphans.
    const maxTtlMs = 2 * 3_600_000

    const cliStarted = process.hrtime.bigint()
    const cli = spawnSync('redis-cli', ['-p', String(redis.port), '--scan', '--pattern', 'callfs:lock:*'], {maxBuffer: 256 * 1024 * 1024})
    const cliMs = Number(process.hrtime.bigint() - cliStarted) / 1e6
    const cliKeys = cli.stdout.toString().split('\n').filter(Boolean).length
    row(`redis-cli --scan --pattern 'callfs:lock:*' (${cliKeys.toLocaleString('en')} keys)`, fmt(cliMs), 'reference', null)

    const bareTimes: number[] = []
    for (let k = 0; k < 3; k++) {
      const s = performance.now()
      let c = '0'
      do [c] = await r.scan(c, 'MATCH', 'callfs:lock:*', 'COUNT', 1000)
      while (c !== '0')
      bareTimes.push(performance.now() - s)
    }
    row('bare SCAN loop, COUNT 1000 (no expiry lookups)', fmt(median(bareTimes)), 'reference', null)

    await r.config('SET', 'slowlog-log-slower-than', '0')
    await r.config('SET', 'slowlog-max-len', '1000000')
    const findTimes: number[] = []
    let slowest = 0
    let found = 0
    for (let k = 0; k < 3; k++) {
      await r.slowlog('RESET')
      const s = performance.now()
      const result = await scanByExpiry(r, 'callfs:lock:', {maxTtlMs, count: 1000})
      findTimes.push(performance.now() - s)
      found = result.withoutExpiry.length + result.expiryAbove.length
      const log = (await r.slowlog('GET', 1_000_000)) as Array<[number, number, number, string[]]>
      for (const entry of log) if (!String(entry[3]?.[0]).toUpperCase().startsWith('SLOWLOG')) slowest = Math.max(slowest, entry[2])
    }
    await r.config('SET', 'slowlog-log-slower-than', '10000')
    const findMs = median(findTimes)
    row(`opsctl finds the orphans (found ${found.toLocaleString('en')})`, `${fmt(findMs)} ${(findMs / cliMs).toFixed(2)}×`, '≤ 0.2× redis-cli', findMs / cliMs <= 0.2 && found === orphaned)
    row('slowest single Redis command during the scan (SLOWLOG)', `${(slowest / 1000).toFixed(2)} ms`, '< 10 ms', slowest < 10_000)

    // The whole CLI doing it, for its peak RSS and the check's own duration.
    const config = await writeConfig(dir, {api: await freePort(), metrics: await freePort(), pg: await freePort(), redis: redis.port}, '    lock_timeout: 2h')
    const rssProbe = join(dir, 'rss.mjs')
    await writeFile(rssProbe, "process.on('exit', () => process.stderr.write(`\\nmaxrss_kb=${process.resourceUsage().maxRSS}\\n`))\n")
    const child = spawnSync(process.execPath, ['--import', rssProbe, RUN, 'diagnose', 'callfs', '--json', '--no-fix', '--config', config], {encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, env: {...process.env, NO_COLOR: '1'}})
    const rssKb = Number(/maxrss_kb=(\d+)/.exec(child.stderr)?.[1] ?? NaN)
    const report = JSON.parse(child.stdout) as {systems: Array<{checks: Array<{id: string; durationMs: number; evidence: {count?: number}}>}>}
    const check = report.systems[0]?.checks.find((c) => c.id === 'callfs.redis.orphaned-locks')
    row(`opsctl diagnose callfs: the orphaned-locks check (${check?.evidence.count ?? '?'} found)`, fmt(check?.durationMs ?? NaN), '≤ 0.2× redis-cli', (check?.durationMs ?? Infinity) / cliMs <= 0.2)
    row('peak RSS of that opsctl process', `${(rssKb / 1024).toFixed(0)} MB`, '< 200 MB', rssKb / 1024 < 200)

    const result = await scanByExpiry(r, 'callfs:lock:', {maxTtlMs, count: 1000})
    const items = [...result.withoutExpiry, ...result.expiryAbove].map((k) => ({key: k.keyBytes, value: k.valueBytes ?? Buffer.alloc(0)}))
    const s = performance.now()
    const released = await compareAndDelete(r, items, {maxTtlMs})
    const releaseMs = performance.now() - s
    row(`release the orphans by compare-and-delete (${released.deleted.length.toLocaleString('en')} deleted)`, fmt(releaseMs), 'reported', null)
  } finally {
    r.disconnect()
    await redis.stop()
  }
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'opsctl-bench-'))
  console.log(`opsctl benchmarks — node ${process.version}, ${(await import('node:os')).cpus().length} cores${quick ? ' (quick)' : ''}`)
  try {
    await startup()
    await unreachable(dir)
    await orphans(dir)
  } finally {
    await rm(dir, {recursive: true, force: true})
  }
}

await main()
