// `opsctl diagnose` end to end: the built CLI spawned without a terminal (stdin closed) against a
// CallFS world over real TLS with a real PostgreSQL and Redis, holding one orphaned lock. What is
// on stdout, stderr and the exit code, whether the lock survives, and what the audit log says.
// Run `npm run build` first: these tests run bin/run.js over dist/.
import {readFile, symlink, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {REPO, runCli, startCallfsWorld, validCallfsConfig, type CallfsWorld, type CliResult} from '../support/callfs-world.js'

const FAKEBIN = join(REPO, 'test', 'support', 'fakebin')
const LOCK = 'callfs:lock:file:/a.txt'
const OWNER = '9f3c0a1b2c3d4e5f60718293a4b5c6d7'
const CHECK_KEYS = ['durationMs', 'evidence', 'id', 'outcome', 'remediation', 'severity', 'status', 'summary', 'title']
const STACK = /^\s+at .+[:(]\d+/m

let w: CallfsWorld
let env: Record<string, string>
let healthyConfig: string
let redisDb = 0
let auditN = 0

beforeAll(async () => {
  w = await startCallfsWorld({pg: true, redis: true, sim: {}})
  // systemctl answers like in a container (no systemd), wherever the tests run.
  env = {...w.env, PATH: `${FAKEBIN}:${process.env.PATH ?? '/usr/bin:/bin'}`}
  healthyConfig = await w.writeOpsctlConfig({redis: redisIn(++redisDb)})
})
afterAll(() => w?.stop())

function redisIn(db: number): string {
  if (!w.redis) throw new Error('no Redis in this world')
  return w.redis.url.replace(/\/0$/, `/${db}`)
}

async function redisDo<T>(db: number, fn: (r: Awaited<ReturnType<NonNullable<CallfsWorld['redis']>['client']>>) => Promise<T>): Promise<T> {
  if (!w.redis) throw new Error('no Redis in this world')
  const client = await w.redis.client()
  try {
    await client.select(db)
    return await fn(client)
  } finally {
    await client.quit()
  }
}

/**
 * A Redis database of its own holding one orphaned lock (no expiry), and an opsctl config
 * pointing at it — so tests that fix it do not race each other.
 */
async function lockedWorld(): Promise<{config: string; redisUrl: string; audit: string; lockExists(): Promise<boolean>}> {
  const db = ++redisDb
  if (db > 15) throw new Error('out of Redis databases: give this test its own Redis')
  await redisDo(db, (r) => r.set(LOCK, OWNER))
  return {
    config: await w.writeOpsctlConfig({redis: redisIn(db)}),
    redisUrl: redisIn(db),
    audit: join(w.dir, `audit-${++auditN}.jsonl`),
    lockExists: () => redisDo(db, async (r) => (await r.exists(LOCK)) === 1),
  }
}

/** Two CLI runs at a time: a diagnose run is CPU-bound for about a second, and CI has two cores. */
const slots: Array<() => void> = []
let running = 0
async function cli(args: string[], o: {env: Record<string, string>}): Promise<CliResult> {
  if (running >= 2) await new Promise<void>((resolve) => slots.push(resolve))
  running++
  try {
    return await runCli(args, o)
  } finally {
    running--
    slots.shift()?.()
  }
}

function diagnose(config: string, flags: string[], audit = join(w.dir, `audit-${++auditN}.jsonl`)): Promise<CliResult> {
  // A generous probe time-out: nothing in this world hangs, but the runs share the cores.
  return cli(['diagnose', 'callfs', '--config', config, '--timeout', '5s', ...flags], {env: {...env, OPSCTL_AUDIT_LOG: audit}})
}

async function auditLines(path: string): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? '' : Promise.reject(e)))
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

interface JsonCheck {
  id: string
  status: string
  severity: string
  title: string
  summary: string
  evidence: Record<string, unknown>
  durationMs: number
  remediation: Record<string, unknown> | null
  outcome: {decision: string; ok: boolean; verified: boolean; detail: string} | null
}
interface JsonDoc {
  schemaVersion: number
  opsctlVersion: string
  command: string
  status: string
  startedAt: string
  durationMs: number
  systems: Array<{system: string; target: string; status: string; durationMs: number; path: string[]; checks: JsonCheck[]}>
}

/** stdout must be exactly one JSON document (as opsctl writes it) and nothing else. */
function parseJson(r: CliResult): JsonDoc {
  let doc: JsonDoc
  try {
    doc = JSON.parse(r.stdout) as JsonDoc
  } catch {
    throw new Error(`stdout is not one JSON document (exit ${r.code}):\n${r.stdout.slice(0, 2000)}\nstderr:\n${r.stderr.slice(0, 2000)}`)
  }
  expect(r.stdout).toBe(JSON.stringify(doc, null, 2) + '\n')
  return doc
}

function checkOf(doc: JsonDoc, id: string): JsonCheck {
  const c = doc.systems[0]?.checks.find((x) => x.id === id)
  if (!c) throw new Error(`${id} is not in the report: ${doc.systems[0]?.checks.map((x) => x.id).join(', ')}`)
  return c
}

/** Everything but `except` is ok (skipped checks are left out of --json without --verbose). */
function expectOthersOk(doc: JsonDoc, except: string[]): void {
  const others = (doc.systems[0]?.checks ?? []).filter((c) => !except.includes(c.id) && c.status !== 'ok').map((c) => `${c.id}: ${c.status} ${c.summary}`)
  expect(others).toEqual([])
}

// Every test has its own Redis database, audit log and config: they run concurrently.
describe.concurrent('diagnose callfs --json, with one orphaned lock, no terminal', () => {
  it('prints one JSON document of SPEC.md\'s shape, refuses the fix with the --yes hint, exits 2 and leaves the lock', async () => {
    const world = await lockedWorld()
    const r = await diagnose(world.config, ['--json'], world.audit)
    const doc = parseJson(r)
    expect(r.stderr).toBe('')
    expect(r.code).toBe(2)

    expect(Object.keys(doc).sort()).toEqual(['command', 'durationMs', 'opsctlVersion', 'schemaVersion', 'startedAt', 'status', 'systems'])
    expect(doc).toMatchObject({schemaVersion: 1, opsctlVersion: '0.1.0', command: 'diagnose', status: 'fail'})
    expect(new Date(doc.startedAt).toISOString()).toBe(doc.startedAt)
    expect(Date.now() - Date.parse(doc.startedAt)).toBeLessThan(60_000)
    expect(Number.isInteger(doc.durationMs) && doc.durationMs > 0).toBe(true)

    expect(doc.systems).toHaveLength(1)
    const system = doc.systems[0]
    if (!system) throw new Error('no system in the report')
    expect(Object.keys(system).sort()).toEqual(['checks', 'durationMs', 'path', 'status', 'system', 'target'])
    expect(system).toMatchObject({system: 'callfs', target: 'default', status: 'fail'})
    expect(system.durationMs).toBeLessThanOrEqual(doc.durationMs)
    // path: the walk in the order it happened; every check in it ran and is reported.
    expect(system.path[0]).toBe('callfs.config.invalid')
    expect(system.path).toContain('callfs.redis.orphaned-locks')
    expect(system.path.indexOf('callfs.redis.ping')).toBeLessThan(system.path.indexOf('callfs.redis.orphaned-locks'))
    // Without --verbose the JSON leaves out what was skipped: here the write probe (no --write-probes).
    const listed = system.checks.map((c) => c.id)
    expect(system.path.filter((id) => !listed.includes(id))).toEqual(['callfs.files.roundtrip'])
    expect(listed.filter((id) => !system.path.includes(id))).toEqual([])
    for (const c of system.checks) {
      expect(Object.keys(c).sort(), c.id).toEqual(CHECK_KEYS)
      expect(['ok', 'warn', 'fail', 'unknown'], c.id).toContain(c.status)
      expect(['critical', 'high', 'medium', 'low', 'info'], c.id).toContain(c.severity)
      expect(typeof c.title === 'string' && typeof c.summary === 'string' && typeof c.durationMs === 'number', c.id).toBe(true)
    }
    expectOthersOk(doc, ['callfs.redis.orphaned-locks'])

    const lock = checkOf(doc, 'callfs.redis.orphaned-locks')
    expect(lock).toMatchObject({status: 'fail', severity: 'high', title: 'Orphaned CallFS locks in Redis', summary: expect.stringMatching(/^1 lock key under callfs:lock: ha(s|ve) no expiry$/) as unknown as string})
    expect(lock.evidence).toMatchObject({keys: [LOCK], count: 1, owners: {[OWNER]: 1}, scanned: 1, live: 0})
    expect(lock.remediation).toEqual({
      id: 'callfs.redis.release-orphaned-locks',
      title: 'Release the 1 orphaned lock',
      risk: 'destructive',
      automated: true,
      plan: [`compare-and-delete ${LOCK} (owner 9f3c0a1b…)`],
      commands: [`redis-cli -u ${world.redisUrl} DEL ${LOCK}`],
      docs: 'shared guide: CallFS Troubleshooting > Redis/Distributed Locking Issues > Common Causes and Solutions > Orphaned Locks',
    })
    expect(lock.outcome).toEqual({decision: 'refused', ok: false, verified: false, detail: expect.stringContaining('re-run with --yes to apply') as unknown as string})

    expect(await world.lockExists()).toBe(true)
    const audit = await auditLines(world.audit)
    expect(audit).toHaveLength(1)
    expect(audit[0]).toMatchObject({
      opsctlVersion: '0.1.0',
      system: 'callfs',
      target: 'default',
      check: 'callfs.redis.orphaned-locks',
      remediation: 'callfs.redis.release-orphaned-locks',
      plan: [`compare-and-delete ${LOCK} (owner 9f3c0a1b…)`],
      decision: 'refused',
      result: null,
      verified: false,
    })
    expect(typeof audit[0]?.user === 'string' && typeof audit[0]?.host === 'string' && typeof audit[0]?.time === 'string').toBe(true)
  })
})

describe.concurrent('remediation without a terminal', () => {
  it('asks nothing and applies nothing without --yes: the audit says refused', async () => {
    const world = await lockedWorld()
    const r = await diagnose(world.config, [], world.audit)
    expect(r.code).toBe(2)
    expect(r.stderr).toBe('')
    expect(r.ms).toBeLessThan(20_000) // a question would wait for its 120 s time-out
    expect(r.stdout).not.toMatch(/Apply "|Type .* to apply|\? /)
    expect(r.stdout).toMatch(/callfs\.redis\.orphaned-locks: refused\b.*not applied: nobody could confirm it here \(no terminal, or --json\); re-run with --yes to apply\n/)
    expect(r.stdout).toContain('Nothing was changed. Re-run on a terminal to be asked, or with --yes to apply.')
    expect(r.stdout).not.toMatch(/after remediation/) // nothing was applied: no second verdict
    expect(r.stdout).toMatch(/\nNothing was changed\. Re-run on a terminal to be asked, or with --yes to apply\.\n$/)
    expect(await world.lockExists()).toBe(true)
    expect((await auditLines(world.audit)).map((a) => a.decision)).toEqual(['refused'])
  })

  it('applies the fix with --yes, verifies it, audits it, and exits with the healthy state\'s code', async () => {
    const world = await lockedWorld()
    const r = await diagnose(world.config, ['--yes'], world.audit)
    expect(r.stderr).toBe('')
    expect(r.stdout).toMatch(/callfs\.redis\.orphaned-locks: applied, verified\b.*released 1 of 1 locks; re-check: ok\n/)
    expect(r.stdout).toMatch(/✓ ok after remediation · .* · exit 0\n$/)
    expect(r.code).toBe(0)
    expect(await world.lockExists()).toBe(false)
    const audit = await auditLines(world.audit)
    expect(audit).toHaveLength(1)
    expect(audit[0]).toMatchObject({
      check: 'callfs.redis.orphaned-locks',
      remediation: 'callfs.redis.release-orphaned-locks',
      plan: [`compare-and-delete ${LOCK} (owner 9f3c0a1b…)`],
      decision: 'applied',
      result: {ok: true, detail: 'released 1 of 1 locks; re-check: ok'},
      verified: true,
    })
  })

  it('--json --yes: the outcome is in the document and the exit code follows the state after the fix', async () => {
    const world = await lockedWorld()
    const r = await diagnose(world.config, ['--json', '--yes'], world.audit)
    const doc = parseJson(r)
    const lock = checkOf(doc, 'callfs.redis.orphaned-locks')
    expect(lock.status).toBe('fail') // what was found stays on record
    expect(lock.outcome).toEqual({decision: 'applied', ok: true, verified: true, detail: 'released 1 of 1 locks; re-check: ok'})
    expect(doc.status).toBe('ok')
    expect(r.code).toBe(0)
    expect(await world.lockExists()).toBe(false)
  })

  it('--dry-run shows the plan, changes nothing and audits dry-run', async () => {
    const world = await lockedWorld()
    const r = await diagnose(world.config, ['--dry-run'], world.audit)
    expect(r.code).toBe(2)
    expect(r.stdout).toContain(`- compare-and-delete ${LOCK} (owner 9f3c0a1b…)`)
    expect(r.stdout).toContain(`$ redis-cli -u ${world.redisUrl} DEL ${LOCK}`)
    expect(r.stdout).toMatch(/callfs\.redis\.orphaned-locks: dry-run\b.*nothing changed\n/)
    expect(await world.lockExists()).toBe(true)
    const audit = await auditLines(world.audit)
    expect(audit).toHaveLength(1)
    expect(audit[0]).toMatchObject({decision: 'dry-run', result: null, verified: false, plan: [`compare-and-delete ${LOCK} (owner 9f3c0a1b…)`]})
  })

  it('--no-fix reports only: no outcome, no audit line, the lock stays', async () => {
    const world = await lockedWorld()
    const json = await diagnose(world.config, ['--json', '--no-fix'], world.audit)
    const doc = parseJson(json)
    expect(json.code).toBe(2)
    expect(checkOf(doc, 'callfs.redis.orphaned-locks').outcome).toBeNull()
    expect(checkOf(doc, 'callfs.redis.orphaned-locks').remediation?.id).toBe('callfs.redis.release-orphaned-locks') // still shown
    expect(await world.lockExists()).toBe(true)
    expect(await auditLines(world.audit)).toEqual([])
  })
})

describe.concurrent('exit codes', () => {
  it('0 when everything is ok (and --verbose lists the skipped checks too)', async () => {
    const r = await diagnose(healthyConfig, ['--json', '--no-fix', '--verbose'])
    const doc = parseJson(r)
    expect(r.stderr).toBe('')
    const checks = doc.systems[0]?.checks ?? []
    expect(checks).toHaveLength(22)
    expect(checks.filter((c) => c.status === 'skipped').map((c) => c.id).sort()).toEqual(['callfs.files.roundtrip', 'callfs.port.conflict', 'callfs.process.down'])
    expect(checks.filter((c) => c.status !== 'ok' && c.status !== 'skipped')).toEqual([])
    expect(doc.status).toBe('ok')
    expect(r.code).toBe(0)
  })

  it('1 when the worst is a warning (the real disk above a warning level set below its usage)', async () => {
    const config = await w.writeOpsctlConfig({redis: redisIn(1), thresholds: {disk_warn: 1, disk_fail: 100}})
    const r = await diagnose(config, ['--json'])
    const doc = parseJson(r)
    expect(checkOf(doc, 'callfs.disk.space').status).toBe('warn')
    expectOthersOk(doc, ['callfs.disk.space'])
    expect(doc.status).toBe('warn')
    expect(r.code).toBe(1)
  })

  it('3 when the worst is unknown (a data_dir that is a symlink loop cannot be measured)', async () => {
    const loop = join(w.dir, 'loop-a')
    await symlink(join(w.dir, 'loop-b'), loop)
    await symlink(loop, join(w.dir, 'loop-b'))
    // CallFS's own config names the directory it really uses (backend.localfs_root_path): the loop.
    const callfsConfig = join(w.dir, 'loop-config.yaml')
    const pg = w.pg as NonNullable<CallfsWorld['pg']>
    await writeFile(
      callfsConfig,
      validCallfsConfig({dataDir: loop, certFile: w.cert.certFile, keyFile: w.cert.keyFile, dsn: pg.dsn('callfs', 'callfs'), redisAddr: `127.0.0.1:${w.redis?.port}`}),
    )
    const config = await w.writeOpsctlConfig({redis: redisIn(1), data_dir: loop, config_file: callfsConfig})
    const r = await diagnose(config, ['--json'])
    const doc = parseJson(r)
    expect(checkOf(doc, 'callfs.disk.space')).toMatchObject({status: 'unknown', summary: expect.stringContaining(loop) as unknown as string})
    expect(checkOf(doc, 'callfs.data-dir.permissions')).toMatchObject({status: 'unknown', summary: `${loop} is a symlink loop`})
    expectOthersOk(doc, ['callfs.disk.space', 'callfs.data-dir.permissions'])
    expect(doc.status).toBe('unknown')
    expect(r.code).toBe(3)
  })

  /** A usage error: exit 64, nothing on stdout, a line saying what is wrong and where to look. */
  function expectUsage(r: CliResult, message: RegExp): void {
    expect(r.code).toBe(64)
    expect(r.stdout).toBe('')
    const lines = r.stderr.trimEnd().split('\n')
    expect(lines[0]).toMatch(message)
    expect(lines.at(-1)).toBe('See `opsctl diagnose --help`.')
    expect(lines).toHaveLength(2)
    expect(r.stderr).not.toMatch(STACK)
  }

  it('64 for a bad flag, an unknown system, a system without a runbook, a bad --timeout, or two fix modes', async () => {
    const [flag, system, hookshot, timeout, zero, modes, command] = await Promise.all([
      cli(['diagnose', 'callfs', '--bogus'], {env}),
      cli(['diagnose', 'nosuch'], {env}),
      cli(['diagnose', 'hookshot'], {env}),
      cli(['diagnose', 'callfs', '--timeout', 'banana'], {env}),
      cli(['diagnose', 'callfs', '--timeout', '0s'], {env}),
      cli(['diagnose', 'callfs', '--yes', '--dry-run'], {env}),
      cli(['diagnoze', 'callfs'], {env}),
    ])
    expectUsage(flag, /^opsctl: Nonexistent flag: --bogus$/)
    expectUsage(system, /^opsctl: unknown system "nosuch" \(systems: hookshot, hotswap, callfs, toombos\)$/)
    expectUsage(hookshot, /^opsctl: hookshot: no runbook in this version yet \(available: callfs\)$/)
    expectUsage(timeout, /^opsctl: --timeout: "banana" is not a duration \(use 250ms, 5s, 2m, 1h\)$/)
    expectUsage(zero, /^opsctl: --timeout must be greater than zero$/)
    const [long, novalue] = await Promise.all([cli(['diagnose', 'callfs', '--timeout', '2h'], {env}), cli(['diagnose', 'callfs', '--target'], {env})])
    expectUsage(long, /^opsctl: --timeout: 2h is far too long \(at most 1h\)$/)
    expectUsage(novalue, /^opsctl: Flag --target expects a value$/)
    expectUsage(modes, /^opsctl: --yes and --dry-run cannot be used together$/)
    expect(command).toMatchObject({code: 64, stdout: '', stderr: 'opsctl: unknown command "diagnoze"; see `opsctl --help`\n'})
  })

  describe('78 for a broken configuration: one line per problem, file:line:col, no stack trace', () => {
    async function configFile(name: string, text: string): Promise<string> {
      const path = join(w.dir, name)
      await writeFile(path, text)
      return path
    }

    it('a YAML syntax error points at its line and column', async () => {
      // A mis-indented key on line 5: the parser reports it, and what it makes of the rest.
      const file = await configFile('broken.yaml', 'version: 1\nsystems:\n  callfs:\n    url: https://localhost:8443\n   redis: [unclosed\n')
      const r = await cli(['diagnose', 'callfs', '--config', file], {env})
      expect(r.code).toBe(78)
      expect(r.stdout).toBe('')
      expect(r.stderr).not.toMatch(STACK)
      const lines = r.stderr.trimEnd().split('\n')
      expect(lines[0]).toBe(`opsctl: ${file}:5:1: systems: YAML syntax error: All mapping items must start at the same column`)
      for (const line of lines) expect(line).toMatch(new RegExp(`^opsctl: ${file}:\\d+:\\d+: (systems: )?YAML syntax error: `))
    })

    it('an unknown key and a bad URL are each reported, in one run, with or without --verbose', async () => {
      const file = await configFile('keys.yaml', 'version: 1\nsystems:\n  callfs:\n    colour: blue\n    url: "not a url"\n')
      for (const extra of [[], ['--verbose']]) {
        const r = await cli(['diagnose', 'callfs', '--config', file, ...extra], {env})
        expect(r.code).toBe(78)
        expect(r.stdout).toBe('')
        expect(r.stderr).not.toMatch(STACK)
        expect(r.stderr.trimEnd().split('\n')).toEqual([
          expect.stringMatching(new RegExp(`^opsctl: ${file}:4:5: systems\\.callfs\\.colour: unknown key; known here: url, `)),
          `opsctl: ${file}:5:10: systems.callfs.url: "not a url" is not a URL (e.g. https://localhost:8443)`,
        ])
      }
    })

    it('a password in a URL is refused without being echoed', async () => {
      const file = await configFile('secret.yaml', 'version: 1\nsystems:\n  callfs:\n    postgres: "postgres://callfs:hunter2-s3cret@db:5432/callfs"\n')
      const r = await cli(['diagnose', 'callfs', '--config', file], {env})
      expect(r.code).toBe(78)
      expect(r.stderr).toContain(`${file}:4:15: systems.callfs.postgres: the URL holds a password`)
      expect(r.stderr + r.stdout).not.toContain('hunter2-s3cret')
    })
  })

  it('an internal error is one line and a hint; --verbose adds the stack', async () => {
    // A real failure inside the command: Node refuses the Ctrl-C handler diagnose installs.
    const inject = join(w.dir, 'refuse-sigint.mjs')
    await writeFile(
      inject,
      "const on = process.on.bind(process)\nprocess.on = (event, listener) => {\n  if (event === 'SIGINT') throw new Error('injected fault: cannot watch for Ctrl-C')\n  return on(event, listener)\n}\n",
    )
    const faulty = {...env, NODE_OPTIONS: `--import=${inject}`}
    const [plain, verbose] = await Promise.all([
      cli(['diagnose', 'callfs', '--config', healthyConfig], {env: faulty}),
      cli(['diagnose', 'callfs', '--config', healthyConfig, '--verbose'], {env: faulty}),
    ])
    expect(plain.stderr.trimEnd().split('\n')).toEqual([
      'opsctl: internal error: injected fault: cannot watch for Ctrl-C',
      'Run again with --verbose for the details, and report it with the output.',
    ])
    expect(plain.code).toBe(70)
    expect(verbose.code).toBe(70)
    expect(verbose.stderr).toMatch(/^opsctl: internal error: injected fault: cannot watch for Ctrl-C\n/)
    expect(verbose.stderr).toMatch(STACK)
    expect(verbose.stderr).toContain('diagnoseCommand')
  })
})

describe.concurrent('fleets: targets, --target and enabled: false', () => {
  /** An opsctl.yaml whose callfs block holds `targets:`; the world's keys are shared by all. */
  async function fleetConfig(targets: Array<Record<string, unknown>>): Promise<string> {
    const {url, ...shared} = w.config({redis: redisIn(++redisDb)})
    const path = join(w.dir, `fleet-${redisDb}.yaml`)
    await writeFile(path, JSON.stringify({version: 1, systems: {callfs: {...shared, targets: targets.map((t) => ({url, ...t}))}}}))
    return path
  }

  it('walks every enabled target, each reported under its own name', async () => {
    const config = await fleetConfig([
      {name: 'blue'},
      {name: 'green', url: 'https://localhost:1'},
      {name: 'retired', enabled: false},
    ])
    const r = await diagnose(config, ['--json', '--no-fix'])
    const doc = JSON.parse(r.stdout) as {status: string; systems: Array<{system: string; target: string; status: string; checks: Array<{id: string; status: string}>}>}
    expect(doc.systems.map((s) => [s.target, s.status])).toEqual([
      ['blue', 'ok'],
      ['green', 'fail'],
    ])
    expect(doc.systems[1]?.checks.find((c) => c.id === 'callfs.api.health')?.status).toBe('fail')
    expect(doc.status).toBe('fail')
    expect(r.code).toBe(2)
  })

  it('--target narrows the run to the named targets; an unknown name is a usage error', async () => {
    const config = await fleetConfig([{name: 'blue'}, {name: 'green', url: 'https://localhost:1'}])
    const [blue, nosuch] = await Promise.all([diagnose(config, ['--json', '--no-fix', '--target', 'blue']), diagnose(config, ['--target', 'purple'])])
    expect((JSON.parse(blue.stdout) as {systems: Array<{target: string}>}).systems.map((s) => s.target)).toEqual(['blue'])
    expect(blue.code).toBe(0)
    expect(nosuch.code).toBe(64)
    expect(nosuch.stderr).toMatch(/^opsctl: no enabled target named purple in callfs\n/)
    // one name matching is not enough: every name asked for must exist
    const typo = await diagnose(config, ['--target', 'blue', '--target', 'bleu'])
    expect(typo.code).toBe(64)
    expect(typo.stderr).toMatch(/^opsctl: no enabled target named bleu in callfs\n/)
  })

  it('a system named on the command line but switched off is a usage error, not "ok, no checks"', async () => {
    const path = join(w.dir, 'off.yaml')
    await writeFile(path, JSON.stringify({version: 1, systems: {callfs: {enabled: false}}}))
    const [named, all] = await Promise.all([diagnose(path, []), cli(['diagnose', '--config', path], {env})])
    expect(named.code).toBe(64)
    expect(named.stderr).toMatch(/^opsctl: callfs is switched off \(enabled: false\) in .*off\.yaml\n/)
    expect(all.code).toBe(64)
    expect(all.stderr).toMatch(/^opsctl: nothing to diagnose: every target of callfs is switched off in .*off\.yaml\n/)
  })
})
