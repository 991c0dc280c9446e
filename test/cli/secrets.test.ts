// No secret value ever reaches a person or a file: the API key, the PostgreSQL password (scram
// server), the Redis password, and a password written into the opsctl configuration itself.
// Every run is the built CLI; stdout, stderr and the audit log are searched for each value.
import {chown, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {afterAll, beforeAll, beforeEach, describe, expect, it} from 'vitest'

import {API_KEY, REPO, runCli, startCallfsWorld, validCallfsConfig, type CallfsWorld, type CliResult} from '../support/callfs-world.js'

const FAKEBIN = join(REPO, 'test', 'support', 'fakebin')
// Base64-looking on purpose: "+", "/" and "=" have URL-encoded forms that must be masked too.
const PG_PASSWORD = 'Vx7+Kq2/Lm9Rt4w='
const REDIS_PASSWORD = 'rdpw-Hs3Nf8Wc1Yz6'
const LOCK = 'callfs:lock:file:/reports/q3.xlsx'
const NOBODY = 65534

let w: CallfsWorld
let audit: string
let env: Record<string, string>
let config: string

/** Every form a value could be written in: as is, URL-encoded, JSON-escaped. */
function forms(secret: string): string[] {
  return [...new Set([secret, encodeURIComponent(secret), JSON.stringify(secret).slice(1, -1)])]
}

function expectNoSecrets(where: string, text: string, secrets: string[]): void {
  for (const secret of secrets) {
    for (const form of forms(secret)) {
      const at = text.indexOf(form)
      expect(at, `${where} holds a secret: …${text.slice(Math.max(0, at - 60), at + form.length + 20)}…`).toBe(-1)
    }
  }
}

/** What went wrong in a run, for assertion messages: exit code, stderr, every check not ok. */
function explain(r: CliResult): string {
  const lines = r.stdout.split('\n').filter((l) => /^ {2}[✗?!] |"status": "(fail|unknown|warn)"|"summary"/.test(l))
  return `exit ${r.code}; stderr: ${r.stderr.slice(0, 500)}\n${lines.join('\n').slice(0, 3000)}`
}

function expectClean(r: CliResult, secrets: string[]): void {
  expectNoSecrets('stdout', r.stdout, secrets)
  expectNoSecrets('stderr', r.stderr, secrets)
  expect(r.stderr).not.toMatch(/^\s+at /m) // no stack trace either
}

const SECRETS = [API_KEY, PG_PASSWORD, REDIS_PASSWORD]

beforeAll(async () => {
  // The simulator takes no locks here (the harness hands it the Redis URL without the password).
  w = await startCallfsWorld({pg: {auth: 'scram-sha-256'}, redis: {password: REDIS_PASSWORD}, sim: {redisUrl: null}})
  const pg = w.pg!
  const redis = w.redis!
  await pg.query(`ALTER ROLE callfs PASSWORD '${PG_PASSWORD}'`)
  // CallFS's own config.yaml holds its credentials the way a real one does: in the DSN and in
  // dlm.redis_password. opsctl reads this file; nothing of it may come out.
  const text = validCallfsConfig({
    dataDir: w.dataDir,
    certFile: w.cert.certFile,
    keyFile: w.cert.keyFile,
    dsn: `postgres://callfs:${encodeURIComponent(PG_PASSWORD)}@127.0.0.1:${pg.port}/callfs?sslmode=disable`,
    redisAddr: `127.0.0.1:${redis.port}`,
  }).replace('  type: redis\n', `  type: redis\n  redis_password: "${REDIS_PASSWORD}"\n`)
  expect(text).toContain(REDIS_PASSWORD)
  await writeFile(w.configFile, text)
  audit = join(w.dir, 'audit.jsonl')
  env = {...w.env, CALLFS_PG_PASSWORD: PG_PASSWORD, OPSCTL_AUDIT_LOG: audit, PATH: `${FAKEBIN}:${process.env.PATH ?? '/usr/bin:/bin'}`}
  config = await w.writeOpsctlConfig({postgres_password_env: 'CALLFS_PG_PASSWORD', redis_password_env: 'CALLFS_REDIS_PASSWORD'})
  // The default probe time-out: this file is about what is printed, not about time, and a busy
  // machine must not turn a slow answer into a different finding.
  await writeFile(config, (await readFile(config, 'utf8')).replace('"timeout": "2s"', '"timeout": "5s"'))
  expect(await readFile(config, 'utf8')).toContain('"timeout": "5s"')
})
afterAll(() => w?.stop())

/** Two automated fixes to apply with --yes, so the audit log gets lines with plans. */
async function plantProblems(): Promise<void> {
  await w.redis!.cli('SET', LOCK, 'a3f09c2e5b7d41e8a3f09c2e5b7d41e8')
  await chown(w.dataDir, NOBODY, NOBODY)
}

beforeEach(async () => {
  await rm(audit, {force: true})
})

type JsonCheck = {id: string; status: string; summary: string; evidence: Record<string, unknown>; outcome: {decision: string; verified: boolean} | null}
function checksOf(stdout: string): Record<string, JsonCheck> {
  const doc = JSON.parse(stdout) as {systems: Array<{checks: JsonCheck[]}>}
  return Object.fromEntries((doc.systems[0]?.checks ?? []).map((c) => [c.id, c]))
}

describe('secrets never leave opsctl', () => {
  it('diagnose --yes (human, then --json --verbose): stdout, stderr and the audit log hold none of them', async () => {
    const runs: CliResult[] = []
    for (const flags of [[], ['--json', '--verbose']]) {
      await plantProblems()
      const r = await runCli(['diagnose', 'callfs', '--config', config, '--yes', ...flags], {env})
      expectClean(r, SECRETS)
      runs.push(r)
    }
    const [human, json] = runs as [CliResult, CliResult]
    // The fixes really ran (the log below is not empty by accident): both applied and verified.
    expect(human.stdout).toMatch(/callfs\.redis\.orphaned-locks: applied, verified — released 1 of 1 locks/)
    expect(human.stdout).toMatch(/callfs\.data-dir\.permissions: applied, verified/)
    expect(human.code, explain(human)).toBe(0)
    const by = checksOf(json.stdout)
    // The secrets were really used: the scram login, the Redis AUTH and the API key all worked.
    for (const id of ['callfs.db.reachable', 'callfs.db.connections', 'callfs.redis.ping', 'callfs.auth.key', 'callfs.config.invalid']) {
      expect(by[id]?.status, id).toBe('ok')
    }
    expect(by['callfs.redis.orphaned-locks']?.outcome).toMatchObject({decision: 'applied', verified: true})
    expect(by['callfs.redis.orphaned-locks']?.evidence.keys).toEqual([LOCK])
    expect(json.code, explain(json)).toBe(0)
    // --verbose: skipped checks are listed too.
    expect(by['callfs.process.down']?.status).toBe('skipped')

    const log = await readFile(audit, 'utf8')
    expectNoSecrets('audit log', log, SECRETS)
    const lines = log.trim().split('\n').map((l) => JSON.parse(l) as {check: string; decision: string; plan: string[]; verified: boolean})
    expect(lines).toHaveLength(4)
    expect(lines.filter((l) => l.check === 'callfs.redis.orphaned-locks').map((l) => [l.decision, l.verified, l.plan[0]])).toEqual(
      Array(2).fill(['applied', true, `compare-and-delete ${LOCK} (owner a3f09c2e…)`]),
    )
    expect((await stat(w.dataDir)).uid).toBe(0)
  })

  it('wrong secrets, in error paths (refused login, WRONGPASS, 401): none of the values shown', async () => {
    const wrong = {pg: 'Zz9+wrong/Pg=Pass', redis: 'wrong-redis-Pw-77', key: 'wrong-api-key-0123456789abcdef'}
    const badEnv = {
      ...env,
      CALLFS_PG_PASSWORD: wrong.pg,
      CALLFS_REDIS_PASSWORD: wrong.redis,
      CALLFS_API_KEY: wrong.key,
      // A shell variable that would override CallFS's keys: named in a hint, its value never shown.
      CALLFS_AUTH__API_KEYS: API_KEY,
    }
    const all = [...SECRETS, wrong.pg, wrong.redis, wrong.key]
    const json = await runCli(['diagnose', 'callfs', '--config', config, '--json', '--verbose', '--no-fix'], {env: badEnv})
    const human = await runCli(['diagnose', 'callfs', '--config', config, '--verbose', '--no-fix'], {env: badEnv})
    expectClean(json, all)
    expectClean(human, all)
    const by = checksOf(json.stdout)
    expect(by['callfs.db.reachable']).toMatchObject({status: 'fail', evidence: expect.objectContaining({error: 'auth'})})
    expect(by['callfs.redis.ping']).toMatchObject({status: 'fail', evidence: expect.objectContaining({error: 'auth'})})
    expect(by['callfs.auth.key']?.status).toBe('fail')
    expect(by['callfs.auth.key']?.summary).toMatch(/the key in CALLFS_API_KEY is refused: 401/)
    expect(human.stdout).toMatch(/CALLFS_AUTH__API_KEYS is set in this shell/)
    expect(json.code, explain(json)).toBe(2)
  })

  it('config show (YAML and --json) says whether each variable is set, never what it holds', async () => {
    for (const flags of [[], ['--json']]) {
      const r = await runCli(['config', 'show', '--config', config, ...flags], {env})
      expect(r.code).toBe(0)
      expectClean(r, SECRETS)
      if (flags.length === 0) expect(r.stdout).toMatch(/postgres_password_env: CALLFS_PG_PASSWORD # \(set\)/)
      else expect(r.stdout).toMatch(/"variable": "CALLFS_PG_PASSWORD",\s*"set": true/)
    }
  })

  it('a password written into the opsctl configuration is rejected (exit 78) by every command, and never echoed', async () => {
    const file = join(w.dir, 'with-secrets.yaml')
    const inFile = ['DsnSecret-Pg-31337', 'RedisUserinfo-Secret-42', 'QueryParam-Secret-43', 'RawKey-Secret-44-abcdef']
    await writeFile(
      file,
      [
        'version: 1',
        'systems:',
        '  callfs:',
        `    postgres: postgres://callfs:${inFile[0]}@127.0.0.1:${w.pg!.port}/callfs`,
        `    redis: redis://:${inFile[1]}@127.0.0.1:${w.redis!.port}/0?password=${inFile[2]}`,
        `    api_key: ${inFile[3]}`,
        '',
      ].join('\n'),
    )
    const runs = [
      await runCli(['config', 'validate', '--config', file], {env}),
      await runCli(['config', 'show', '--config', file], {env}),
      await runCli(['diagnose', 'callfs', '--config', file, '--yes', '--verbose'], {env}),
      await runCli(['diagnose', 'callfs', '--config', file, '--json'], {env}),
    ]
    for (const r of runs) {
      expect(r.code).toBe(78)
      expect(r.stdout).toBe('')
      expectClean(r, [...SECRETS, ...inFile])
      expect(r.stderr).toContain(`${file}:4:15: systems.callfs.postgres: the URL holds a password; secrets are never written in the file`)
      expect(r.stderr).toContain('postgres_password_env')
      expect(r.stderr).toContain(`${file}:5:12: systems.callfs.redis: the URL holds a password`)
      expect(r.stderr).toContain(`${file}:6:5: systems.callfs.api_key: unknown key; secrets are never written in the file: put it in an environment variable and set api_key_env`)
    }
    // Nothing was applied, so nothing was audited.
    await expect(stat(audit)).rejects.toMatchObject({code: 'ENOENT'})
  })
})
