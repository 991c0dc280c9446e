// The commands around diagnose, spawned as a user runs them (no terminal, NO_COLOR): runbook
// list/show, config init/validate/show, --version and --help. Stdout, stderr and exit codes.
// Run `npm run build` first: these tests run bin/run.js over dist/.
import {mkdtemp, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {runCli, type CliResult} from '../support/callfs-world.js'

/** The CallFS checks as CATALOG.md lists them, with the kind of fix it names (A:risk or M or —). */
const CATALOG: Record<string, string> = {
  'callfs.config.invalid': 'M',
  'callfs.config.default-secrets': 'M',
  'callfs.api.health': '-',
  'callfs.process.down': 'A:disruptive',
  'callfs.port.conflict': 'A:destructive / M',
  'callfs.tls.cert': 'A:safe / M',
  'callfs.auth.required': 'M',
  'callfs.auth.key': 'M',
  'callfs.files.roundtrip': 'M',
  'callfs.disk.space': 'M',
  'callfs.data-dir.permissions': 'A:safe',
  'callfs.db.reachable': 'M',
  'callfs.db.connections': 'A:destructive',
  'callfs.db.migrations': 'M',
  'callfs.db.long-queries': 'A:destructive',
  'callfs.redis.ping': 'M',
  'callfs.redis.memory': 'M',
  'callfs.redis.orphaned-locks': 'A:destructive',
  'callfs.redis.lock-pressure': 'M',
  'callfs.metrics.endpoint': 'M',
  'callfs.errors.rate': 'M',
  'callfs.latency.p95': 'M',
}
const IDS = Object.keys(CATALOG)
const ESC = String.fromCharCode(27) // no colour codes without a terminal and with NO_COLOR
const STACK = /^\s+at .+[:(]\d+/m

/**
 * The fix column agrees with the catalog: the same automated risk first (manual fallbacks may
 * follow, each remediation listed once), or exactly M / -.
 */
function expectFixKind(id: string, fix: string): void {
  const want = CATALOG[id] ?? '?'
  if (!want.startsWith('A:')) {
    expect(fix, id).toBe(want)
    return
  }
  expect(new Set(fix.split(' / ')).size, `${id}: each kind once`).toBe(fix.split(' / ').length)
  const [first, ...rest] = fix.split(' / ')
  expect(first, id).toBe(want.split(' / ')[0])
  expect(rest.every((k) => k === 'M'), `${id}: ${fix}`).toBe(true)
  if (want.endsWith(' / M')) expect(rest.length, `${id}: ${fix}`).toBeGreaterThan(0)
}

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'opsctl-commands-'))
})
afterAll(() => rm(dir, {recursive: true, force: true}))

/** Runs with no configuration anywhere it could be found: HOME and XDG dirs point into the scratch dir. */
function opsctl(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return runCli(args, {cwd: dir, env: {HOME: dir, XDG_CONFIG_HOME: join(dir, 'xdg'), XDG_STATE_HOME: join(dir, 'state'), ...env}})
}

describe('runbook list', () => {
  it('lists all 22 CallFS checks with system, severity, fix kind and title', async () => {
    const r = await opsctl(['runbook', 'list'])
    expect(r.code).toBe(0)
    expect(r.stderr).toBe('')
    expect(r.stdout).not.toContain(ESC)
    const [header, ...rows] = r.stdout.trimEnd().split('\n')
    expect(header?.split(/\s{2,}/)).toEqual(['ID', 'SYSTEM', 'SEVERITY', 'FIX', 'TITLE'])
    expect(rows).toHaveLength(22)
    const seen: string[] = []
    for (const row of rows) {
      const [id = '', system, severity, fix = '', title] = row.split(/\s{2,}/)
      seen.push(id)
      expect(system, id).toBe('callfs')
      expect(['critical', 'high', 'medium', 'low', 'info'], id).toContain(severity)
      expectFixKind(id, fix)
      expect(title, id).toMatch(/^\S.{10,}$/)
    }
    expect(seen.sort()).toEqual([...IDS].sort())
    expect(rows[0]).toMatch(/^callfs\.config\.invalid\s/) // flowchart order: the config is read first
    expect(r.stdout).toMatch(/^callfs\.redis\.orphaned-locks\s+callfs\s+high\s+A:destructive\s+Orphaned CallFS locks in Redis$/m)
  })

  it('--json is one document listing every id with its remediations and guide section', async () => {
    const r = await opsctl(['runbook', 'list', '--json'])
    expect(r.code).toBe(0)
    const doc = JSON.parse(r.stdout) as {checks: Array<{id: string; system: string; title: string; severity: string; fix: string; remediations: Array<{id: string; automated: boolean; risk?: string}>; docs: string}>}
    expect(doc.checks.map((c) => c.id).sort()).toEqual([...IDS].sort())
    for (const c of doc.checks) {
      expect(c.system, c.id).toBe('callfs')
      expectFixKind(c.id, c.fix)
      expect(c.docs, c.id).toMatch(/^shared guide: CallFS Troubleshooting > /)
    }
    const perms = doc.checks.find((c) => c.id === 'callfs.data-dir.permissions')
    expect(perms?.remediations).toEqual([{id: 'callfs.data-dir.fix-ownership', title: 'Give the CallFS user its data directory', automated: true, risk: 'safe'}])
  })
})

describe('runbook show', () => {
  it('draws the CallFS flowchart as a tree with the guide\'s questions and the answers that lead on', async () => {
    const r = await opsctl(['runbook', 'show', 'callfs'])
    expect(r.code).toBe(0)
    expect(r.stderr).toBe('')
    expect(r.stdout).not.toContain(ESC)
    const lines = r.stdout.split('\n')
    expect(lines[0]).toBe('CallFS — flowchart of shared/seeds/callfs-troubleshooting.md')
    for (const id of IDS) expect(r.stdout, id).toContain(id)
    for (const q of ['config valid?', 'health?', 'refuses anonymous requests?', 'key accepted?', 'metrics served?', 'PostgreSQL reachable?', 'Redis answers?']) {
      expect(r.stdout, q).toContain(` ${q} — `)
    }
    const at = (re: RegExp) => {
      const i = lines.findIndex((l) => re.test(l))
      expect(i, String(re)).toBeGreaterThan(0)
      return i
    }
    // health? — no → the service branch; yes → TLS, auth, metrics. Each under its answer.
    const health = at(/^├─ callfs\.api\.health health\? — /)
    const no = at(/^│ {2}├─ no \(fail\/unknown\)$/)
    const down = at(/^│ {2}│ {2}├─ callfs\.process\.down — /)
    const yes = at(/^│ {2}└─ yes \(ok\/warn\)$/)
    const errors = at(/^│ {11}├─ callfs\.errors\.rate — /)
    expect([health < no, no < down, down < yes, yes < errors]).toEqual([true, true, true, true])
    at(/^│ {2}└─ no: too many clients \(fail, reason=too-many-connections\)$/)
    at(/^│ {2}└─ parsed \(ok\/warn\)$/)
    expect(r.stdout).toContain('callfs.data-dir.permissions — The data directory belongs to the CallFS user [fix A:safe]')
  })

  it('--json gives the flowchart as data', async () => {
    const r = await opsctl(['runbook', 'show', 'callfs', '--json'])
    expect(r.code).toBe(0)
    const doc = JSON.parse(r.stdout) as {system: string; flow: Array<{check: string; question?: string; branches?: Array<{label: string}>}>; checks: Array<{id: string}>}
    expect(doc.system).toBe('callfs')
    expect(doc.flow.map((n) => n.check)).toEqual(['callfs.config.invalid', 'callfs.api.health', 'callfs.db.reachable', 'callfs.redis.ping', 'callfs.disk.space', 'callfs.data-dir.permissions'])
    expect(doc.flow[1]).toMatchObject({question: 'health?', branches: [{label: 'no'}, {label: 'yes'}]})
    expect(doc.checks.map((c) => c.id).sort()).toEqual([...IDS].sort())
  })

  it('exits 64 for a system without a runbook, an unknown one, or none', async () => {
    const [hookshot, nosuch, none] = await Promise.all([opsctl(['runbook', 'show', 'hookshot']), opsctl(['runbook', 'show', 'nosuch']), opsctl(['runbook', 'show'])])
    for (const r of [hookshot, nosuch, none]) {
      expect(r.code).toBe(64)
      expect(r.stdout).toBe('')
      expect(r.stderr).not.toMatch(STACK)
      expect(r.stderr.trimEnd().split('\n').at(-1)).toBe('See `opsctl runbook show --help`.')
    }
    expect(hookshot.stderr).toMatch(/^opsctl: hookshot: no runbook in this version yet \(available: callfs\)\n/)
    expect(nosuch.stderr).toMatch(/^opsctl: unknown system "nosuch"/)
    expect(none.stderr).toMatch(/^opsctl: Missing 1 required arg: system/)
  })
})

describe('config init / validate / show', () => {
  it('init writes a starter file that validates, refuses to overwrite it, and replaces it with --force', async () => {
    const file = join(dir, 'etc', 'opsctl.yaml') // its directory does not exist yet
    const first = await opsctl(['config', 'init', file])
    expect(first.code).toBe(0)
    expect(first.stdout).toBe(`wrote ${file}; check it with: opsctl config validate --config ${file}\n`)
    const starter = await readFile(file, 'utf8')
    expect(starter).toMatch(/^# opsctl configuration, written by `opsctl config init`\./)
    expect(starter).toContain('api_key_env: CALLFS_API_KEY')
    expect((await stat(file)).mode & 0o777).toBe(0o644)

    const validate = await opsctl(['config', 'validate', '--config', file])
    expect(validate.code).toBe(0)
    expect(validate.stdout).toBe(`${file} is valid (4 enabled targets)\n`)
    const validateJson = await opsctl(['config', 'validate', '--config', file, '--json'])
    expect(JSON.parse(validateJson.stdout)).toEqual({valid: true, source: file, targets: 4})

    await writeFile(file, starter + '# my own note\n')
    const again = await opsctl(['config', 'init', file])
    expect(again.code).toBe(78)
    expect(again.stdout).toBe('')
    expect(again.stderr).toBe(`opsctl: ${file}: already exists; not overwritten: pass --force to replace it, or choose another path\n`)
    expect(await readFile(file, 'utf8')).toBe(starter + '# my own note\n')

    const forced = await opsctl(['config', 'init', file, '--force'])
    expect(forced.code).toBe(0)
    expect(await readFile(file, 'utf8')).toBe(starter)
  })

  it('init without a path writes to $OPSCTL_CONFIG when it is set', async () => {
    const file = join(dir, 'from-env', 'config.yaml')
    const r = await opsctl(['config', 'init'], {OPSCTL_CONFIG: file})
    expect(r).toMatchObject({code: 0, stdout: `wrote ${file}; check it with: opsctl config validate --config ${file}\n`})
    expect(await readFile(file, 'utf8')).toMatch(/^# opsctl configuration/)
  })

  it('an extra argument is named as one, not as an unknown command', async () => {
    const r = await opsctl(['config', 'show', 'extra'])
    expect(r).toMatchObject({code: 64, stdout: ''})
    expect(r.stderr).toBe('opsctl: unexpected argument "extra" for "config show"; see `opsctl --help`\n')
  })

  it('validate exits 78 with file:line:col for each problem, and for a --config that does not exist', async () => {
    const file = join(dir, 'invalid.yaml')
    await writeFile(file, 'version: 1\ntimeout: soon\nsystems:\n  callfs:\n    redis: "http://127.0.0.1:6379"\n')
    const missing = join(dir, 'nope.yaml')
    const [bad, absent] = await Promise.all([opsctl(['config', 'validate', '--config', file]), opsctl(['config', 'validate', '--config', missing])])
    expect(bad.code).toBe(78)
    expect(bad.stdout).toBe('')
    const lines = bad.stderr.trimEnd().split('\n')
    expect(lines).toHaveLength(2)
    expect(lines[0]).toMatch(new RegExp(`^opsctl: ${file}:2:10: timeout: `))
    expect(lines[1]).toMatch(new RegExp(`^opsctl: ${file}:5:12: systems\\.callfs\\.redis: `))
    expect(absent.code).toBe(78)
    expect(absent.stderr).toBe(`opsctl: --config: ${missing} does not exist: check the --config path, or run \`opsctl config init ${missing}\` to write a starter file there\n`)
  })

  it('validate finds ./opsctl.yaml and $OPSCTL_CONFIG on its own', async () => {
    const cwd = await mkdtemp(join(dir, 'cwd-'))
    await writeFile(join(cwd, 'opsctl.yaml'), 'version: 1\nsystems:\n  hookshot: {enabled: false}\n')
    const fromEnv = join(dir, 'env.yaml')
    await writeFile(fromEnv, 'version: 1\nsystems:\n  hotswap: {enabled: false}\n  toombos: {enabled: false}\n')
    const env = {HOME: dir, XDG_CONFIG_HOME: join(dir, 'xdg')}
    const [local, viaEnv] = await Promise.all([
      runCli(['config', 'validate'], {cwd, env}),
      runCli(['config', 'validate'], {cwd: dir, env: {...env, OPSCTL_CONFIG: fromEnv}}),
    ])
    expect(local.stdout).toBe(`${join(cwd, 'opsctl.yaml')} is valid (3 enabled targets)\n`)
    expect(viaEnv.stdout).toBe(`${fromEnv} is valid (2 enabled targets)\n`)
  })

  it('show prints the effective configuration with secrets out of sight', async () => {
    const file = join(dir, 'show.yaml')
    await writeFile(file, 'version: 1\ntimeout: 3s\nsystems:\n  callfs:\n    redis_password_env: CALLFS_REDIS_PASSWORD\n    thresholds: {disk_warn: 70}\n')
    const secrets = {CALLFS_API_KEY: 'ck-live-9d8c7b6a5f4e3d2c', CALLFS_REDIS_PASSWORD: 'redis-pw-0f1e2d3c', HOTSWAP_TOKEN: ''}
    const [yaml, json] = await Promise.all([opsctl(['config', 'show', '--config', file], secrets), opsctl(['config', 'show', '--config', file, '--json'], secrets)])
    expect(yaml.code).toBe(0)
    expect(yaml.stdout).toMatch(new RegExp(`^# opsctl effective configuration from ${file}\n`))
    expect(yaml.stdout).toContain('timeout: 3s\n')
    expect(yaml.stdout).toContain('api_key_env: CALLFS_API_KEY # (set)\n')
    expect(yaml.stdout).toContain('redis_password_env: CALLFS_REDIS_PASSWORD # (set)\n')
    expect(yaml.stdout).toContain('token_env: HOTSWAP_TOKEN # (not set: empty)\n')
    expect(yaml.stdout).toContain('hmac_key_env: HOOKSHOT_HMAC_KEY # (not set)\n')
    expect(yaml.stdout).toMatch(/disk_warn: 70\n\s+disk_fail: 95\n/)
    const doc = JSON.parse(json.stdout) as {source: string; systems: {callfs: {targets: Array<Record<string, unknown>>}}}
    expect(doc.source).toBe(file)
    expect(doc.systems.callfs.targets[0]).toMatchObject({
      api_key_env: {variable: 'CALLFS_API_KEY', set: true},
      redis_password_env: {variable: 'CALLFS_REDIS_PASSWORD', set: true},
    })
    for (const out of [yaml.stdout, yaml.stderr, json.stdout, json.stderr]) {
      for (const secret of Object.values(secrets).filter(Boolean)) expect(out).not.toContain(secret)
    }
  })
})

describe('--version and --help', () => {
  it('--version names opsctl, its version, the platform and Node', async () => {
    const r = await opsctl(['--version'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/^opsctl\/0\.1\.0 linux-\w+ node-v20\.\d+\.\d+\n$/)
    expect(r.stderr).toBe('')
  })

  it('diagnose --help shows the usage, the fix flags and the exit codes', async () => {
    const r = await opsctl(['diagnose', '--help'])
    expect(r.code).toBe(0)
    expect(r.stderr).toBe('')
    expect(r.stdout).toMatch(/^Walk each system's troubleshooting flowchart, report, then offer the fixes\n/)
    expect(r.stdout).toMatch(/USAGE\n\s+\$ opsctl diagnose \[SYSTEM\.\.\.\]/)
    for (const flag of ['-y, --yes', '--dry-run', '--no-fix', '--json', '--timeout=DURATION', '--config=FILE', '--verbose', '--write-probes']) {
      expect(r.stdout, flag).toContain(flag)
    }
    expect(r.stdout.replace(/\s+/g, ' ')).toContain('Exit codes: 0 ok, 1 warn, 2 fail, 3 unknown, 64 usage error, 78 configuration error.')
    expect(r.stdout).toContain('$ opsctl diagnose callfs --dry-run')
  })
})
