// CallFS's own config.yaml: callfs.config.invalid and callfs.config.default-secrets, on real
// files, and — for secrets overridden in the environment — a real process named after the unit.

import type {ChildProcess} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {access, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {DEFAULTS} from '../../../src/config/defaults.js'
import {redact} from '../../../src/engine/redact.js'
import {startCallfsWorld, validCallfsConfig, type CallfsWorld} from '../../support/callfs-world.js'
import {startNamedProcess} from '../../support/processes.js'

// This file's own unit name (at most 15 characters): other files run concurrently and may start
// or look for processes named after theirs.
const UNIT = `cfs-cfg-${randomBytes(3).toString('hex')}`

let w: CallfsWorld
const children: ChildProcess[] = []
beforeAll(async () => {
  w = await startCallfsWorld({sim: false})
})
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  await w?.stop()
})

function check(id: string, overrides: Record<string, unknown> = {}) {
  return w.check(id, {unit: UNIT, ...overrides})
}

/** The world's valid config with some lines replaced; written to a fresh file whose path is returned. */
async function configFile(text: string): Promise<string> {
  const path = join(w.dir, `config-${randomBytes(4).toString('hex')}.yaml`)
  await writeFile(path, text)
  return path
}

function valid(): string {
  return validCallfsConfig({dataDir: w.dataDir, certFile: w.cert.certFile, keyFile: w.cert.keyFile, dsn: 'postgres://callfs@127.0.0.1:1/callfs', redisAddr: '127.0.0.1:1'})
}

/** Replace the one line matching `re` (asserting there is exactly one). */
function replaceLine(text: string, re: RegExp, by: string[]): string {
  const lines = text.split('\n')
  const at = lines.flatMap((l, i) => (re.test(l) ? [i] : []))
  if (at.length !== 1) throw new Error(`expected one line matching ${re}, found ${at.length}`)
  lines.splice(at[0] as number, 1, ...by)
  return lines.join('\n')
}

/** 1-based line number of the first line containing `needle`. */
function lineOf(text: string, needle: string): number {
  const i = text.split('\n').findIndex((l) => l.includes(needle))
  if (i < 0) throw new Error(`no line contains ${needle}`)
  return i + 1
}

/** Kill and reap: an unreaped child would linger as a zombie that still bears the unit's name. */
async function stop(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return
  const gone = new Promise((r) => c.once('exit', r))
  c.kill('SIGKILL')
  await gone
}

/** A real process named `name`, started with `env`. */
async function startNamed(name: string, env: Record<string, string>): Promise<ChildProcess> {
  const child = await startNamedProcess(name, {dir: w.dir, env})
  children.push(child)
  return child
}

// ---------------------------------------------------------------------------------------------

describe('callfs.config.invalid', () => {
  it('ok: the world config parses, with one key of at least 16 characters', async () => {
    const r = await check('callfs.config.invalid')
    expect(r.status).toBe('ok')
    expect(r.summary).toBe(`${w.configFile} parses; 1 API key(s), each at least 16 characters`)
    expect(r.evidence).toEqual({file: w.configFile, apiKeys: 1})
  })

  it('a YAML syntax error fails with file:line:col', async () => {
    // An unterminated quote: the parser reports the end of that line.
    const text = replaceLine(valid(), /^ {2}protocol: https$/, ['  protocol: "https'])
    const file = await configFile(text)
    const line = lineOf(text, 'protocol: "https')
    const r = await check('callfs.config.invalid', {config_file: file})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`${file}:${line}:19: Missing closing "quote`)
    expect(r.evidence).toEqual({file, line, col: 19})
    expect(r.remediation).toMatchObject({id: 'callfs.config.fix', automated: false, plan: [`fix the syntax at ${file}:${line}:19`]})
  })

  it('a tab-indented line fails at its exact line and column', async () => {
    const text = 'server:\n  listen_addr: ":8443"\n\tprotocol: https\n'
    const file = await configFile(text)
    const r = await check('callfs.config.invalid', {config_file: file})
    expect(r.status).toBe('fail')
    expect(r.evidence).toMatchObject({file, line: 3, col: 1})
    expect(r.summary).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3:1: `))
  })

  it('empty auth.api_keys fails: every request would be refused', async () => {
    const text = replaceLine(replaceLine(valid(), /^ {2}api_keys:$/, ['  api_keys: []']), /^ {4}- "opsctl-test-key/, [])
    const file = await configFile(text)
    const r = await check('callfs.config.invalid', {config_file: file})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(
      `${file}: auth.api_keys (line ${lineOf(text, 'api_keys: []')}): no API keys configured (auth.api_keys is empty): every request will be refused`,
    )
    expect(r.evidence).toMatchObject({apiKeys: 0})
  })

  it('a key shorter than 16 characters fails naming auth.api_keys[i] and its line, never the key', async () => {
    const short = `s${randomBytes(4).toString('hex')}` // 9 characters
    const text = replaceLine(valid(), /^ {4}- "opsctl-test-key/, ['    - "opsctl-test-key-0123456789abcdef"', `    - "${short}"`])
    const file = await configFile(text)
    const r = await check('callfs.config.invalid', {config_file: file})
    expect(r.status).toBe('fail')
    const line = lineOf(text, short)
    expect(r.summary).toBe(`${file}: auth.api_keys[1] (line ${line}): is 9 characters; CallFS requires at least 16`)
    expect(r.evidence).toMatchObject({apiKeys: 2, problems: [`auth.api_keys[1] (line ${line}): is 9 characters; CallFS requires at least 16`]})
    expect(JSON.stringify(r)).not.toContain(short)
  })

  it('several problems: the first in the summary, all in the evidence and the plan', async () => {
    let text = replaceLine(valid(), /^ {2}protocol: https$/, ['  protocol: ftp'])
    text = replaceLine(text, /^ {2}listen_addr: ":8443"$/, ['  listen_addr: "8443"'])
    const file = await configFile(text)
    const r = await check('callfs.config.invalid', {config_file: file})
    expect(r.status).toBe('fail')
    const problems = [
      `server.protocol (line ${lineOf(text, 'protocol: ftp')}): is "ftp"; use "https", "http" or "auto"`,
      `server.listen_addr (line ${lineOf(text, 'listen_addr: "8443"')}): is "8443"; expected host:port or :port`,
    ]
    expect(r.evidence.problems).toEqual(problems)
    expect(r.summary).toBe(`${file}: ${problems[0]} (and 1 more)`)
    expect(r.remediation?.plan).toEqual(problems.map((p) => `fix ${p}`))
  })

  it('no file at the default path: skipped', async () => {
    const defaultPath = DEFAULTS.systems.callfs.config_file
    await expect(access(defaultPath), `this test needs ${defaultPath} to be absent`).rejects.toThrow()
    const target = w.target({unit: UNIT, config_file: undefined})
    expect(target.config_file).toBe(defaultPath)
    expect(target.explicit.has('config_file')).toBe(false)
    const r = await check('callfs.config.invalid', {config_file: undefined})
    expect(r.status).toBe('skipped')
    expect(r.summary).toBe(`no CallFS config at ${defaultPath} (set systems.callfs.config_file to check one)`)
  })

  it('an explicitly configured file that does not exist: fail', async () => {
    const file = join(w.dir, 'nowhere', 'config.yaml')
    const r = await check('callfs.config.invalid', {config_file: file})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`CallFS config ${file} does not exist`)
    expect(r.remediation).toMatchObject({id: 'callfs.config.fix', automated: false})
  })
})

// ---------------------------------------------------------------------------------------------

describe('callfs.config.default-secrets', () => {
  const withSecrets = (proxy: string[], link: string[]): string =>
    replaceLine(replaceLine(valid(), /^ {2}internal_proxy_secret:/, proxy), /^ {2}single_use_link_secret:/, link)

  it('ok: both secrets are set to non-default values', async () => {
    const r = await check('callfs.config.default-secrets')
    expect(r.status).toBe('ok')
    expect(r.summary).toBe('internal_proxy_secret and single_use_link_secret are set to non-default values')
    expect(r.evidence).toEqual({file: w.configFile, processEnvironment: 'no running CallFS process found'})
  })

  it('the shipped change-me value fails, with its line', async () => {
    const text = withSecrets(['  internal_proxy_secret: "change-me-internal-proxy-secret"'], ['  single_use_link_secret: "0f1e2d3c4b5a69788796a5b4c3d2e1f0"'])
    const file = await configFile(text)
    const r = await check('callfs.config.default-secrets', {config_file: file})
    expect(r.status).toBe('fail')
    expect(r.severity).toBe('high')
    expect(r.summary).toBe(`auth.internal_proxy_secret is still the shipped change-me value (line ${lineOf(text, 'internal_proxy_secret')})`)
    expect(r.remediation).toMatchObject({id: 'callfs.config.replace-default-secrets', automated: false})
  })

  it('absent secrets with the environment of the running CallFS read (and not setting them): fail, CallFS falls back to its built-in defaults', async () => {
    const file = await configFile(withSecrets([], []))
    const child = await startNamed(UNIT, {CALLFS_LOG__LEVEL: 'info'})
    try {
      const r = await check('callfs.config.default-secrets', {config_file: file})
      expect(r.status).toBe('fail')
      expect(r.evidence.problems).toEqual([
        'auth.internal_proxy_secret is not set, so CallFS uses its built-in change-me default',
        'auth.single_use_link_secret is not set, so CallFS uses its built-in change-me default',
      ])
      expect(r.summary).toBe((r.evidence.problems as string[]).join('; '))
      expect(r.evidence.processEnvironment).toBe(`read from pid ${child.pid}`)
    } finally {
      await stop(child)
    }
  })

  it('absent secrets while the environment of CallFS cannot be read: unknown, not "not set" — they may come from CALLFS_AUTH__*', async () => {
    const file = await configFile(withSecrets([], []))
    const r = await check('callfs.config.default-secrets', {config_file: file})
    expect(r.status).toBe('unknown')
    expect(r.evidence.undecided).toEqual([
      "auth.internal_proxy_secret is not in the file and CallFS's environment could not be read (no running CallFS process found): it may come from CALLFS_AUTH__INTERNAL_PROXY_SECRET",
      "auth.single_use_link_secret is not in the file and CallFS's environment could not be read (no running CallFS process found): it may come from CALLFS_AUTH__SINGLE_USE_LINK_SECRET",
    ])
    expect(r.summary).toBe((r.evidence.undecided as string[]).join('; '))
    expect(r.summary).not.toContain('is not set')
  })

  it('a change-me value in the file still fails when the environment cannot be read', async () => {
    const text = withSecrets(['  internal_proxy_secret: "change-me-internal-proxy-secret"'], [])
    const r = await check('callfs.config.default-secrets', {config_file: await configFile(text)})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`auth.internal_proxy_secret is still the shipped change-me value (line ${lineOf(text, 'internal_proxy_secret')})`)
    expect(r.evidence.undecided).toHaveLength(1)
  })

  it('overridden in the environment of the running CallFS (found by its process name): ok', async () => {
    const file = await configFile(withSecrets(['  internal_proxy_secret: "change-me-internal-proxy-secret"'], []))
    const proxy = randomBytes(16).toString('hex')
    const link = randomBytes(16).toString('hex')
    const child = await startNamed(UNIT, {CALLFS_AUTH__INTERNAL_PROXY_SECRET: proxy, CALLFS_AUTH__SINGLE_USE_LINK_SECRET: link})
    try {
      const r = await check('callfs.config.default-secrets', {config_file: file})
      expect(r.status).toBe('ok')
      expect(r.evidence).toEqual({file, processEnvironment: `read from pid ${child.pid}`})
      const json = JSON.stringify(r)
      expect(json).not.toContain(proxy)
      expect(json).not.toContain(link)
    } finally {
      await stop(child)
    }
  })

  it('an environment override that is itself change-me, or only one of the two, still fails', async () => {
    const text = withSecrets(['  internal_proxy_secret: "change-me-internal-proxy-secret"'], [])
    const file = await configFile(text)
    const child = await startNamed(UNIT, {CALLFS_AUTH__INTERNAL_PROXY_SECRET: 'change-me-too'})
    try {
      const r = await check('callfs.config.default-secrets', {config_file: file})
      expect(r.status).toBe('fail')
      expect(r.evidence.problems).toEqual([
        `auth.internal_proxy_secret is still the shipped change-me value (line ${lineOf(text, 'internal_proxy_secret')})`,
        'auth.single_use_link_secret is not set, so CallFS uses its built-in change-me default',
      ])
      expect(r.evidence.processEnvironment).toBe(`read from pid ${child.pid}`)
    } finally {
      await stop(child)
    }
  })

  it('skipped when the config cannot be read', async () => {
    const r = await check('callfs.config.default-secrets', {config_file: join(w.dir, 'absent.yaml')})
    expect(r.status).toBe('skipped')
  })
})

// ---------------------------------------------------------------------------------------------

describe('callfs.config.invalid: what current CallFS accepts', () => {
  it('API keys from CALLFS_AUTH__API_KEYS in the environment of the running CallFS stand in for an empty auth.api_keys', async () => {
    const text = replaceLine(replaceLine(valid(), /^ {2}api_keys:$/, ['  api_keys: []']), /^ {4}- "opsctl-test-key/, [])
    const file = await configFile(text)
    const keys = [`env-key-${randomBytes(8).toString('hex')}`, `env-key-${randomBytes(8).toString('hex')}`]
    const child = await startNamed(UNIT, {CALLFS_AUTH__API_KEYS: keys.join(',')})
    try {
      const r = await check('callfs.config.invalid', {config_file: file})
      expect(r.status).toBe('ok')
      expect(r.summary).toBe(`${file} parses; 2 API key(s) from CALLFS_AUTH__API_KEYS (CallFS's environment, pid ${child.pid}), each at least 16 characters`)
      expect(r.evidence).toEqual({file, apiKeys: 2, apiKeysFrom: `CALLFS_AUTH__API_KEYS in the environment of pid ${child.pid}`})
      for (const k of keys) expect(JSON.stringify(r)).not.toContain(k)
    } finally {
      await stop(child)
    }
  })

  it('a short key in CALLFS_AUTH__API_KEYS fails, named by position, never by value', async () => {
    const short = `s${randomBytes(4).toString('hex')}`
    const child = await startNamed(UNIT, {CALLFS_AUTH__API_KEYS: `opsctl-test-key-0123456789abcdef,${short}`})
    try {
      const r = await check('callfs.config.invalid')
      expect(r.status).toBe('fail')
      expect(r.summary).toBe(`${w.configFile}: CALLFS_AUTH__API_KEYS[1]: is 9 characters (CallFS's environment, pid ${child.pid}); CallFS requires at least 16`)
      expect(JSON.stringify(r)).not.toContain(short)
    } finally {
      await stop(child)
    }
  })

  it('protocol auto, and metadata stores redis and raft, are valid', async () => {
    let text = replaceLine(valid(), /^ {2}protocol: https$/, ['  protocol: auto'])
    text = replaceLine(text, /^ {2}type: postgres$/, ['  type: redis'])
    expect((await check('callfs.config.invalid', {config_file: await configFile(text)})).status).toBe('ok')
    const raft = replaceLine(valid(), /^ {2}type: postgres$/, ['  type: raft'])
    expect((await check('callfs.config.invalid', {config_file: await configFile(raft)})).status).toBe('ok')
    const bad = replaceLine(valid(), /^ {2}type: postgres$/, ['  type: mysql'])
    const r = await check('callfs.config.invalid', {config_file: await configFile(bad)})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`${r.evidence.file}: metadata_store.type (line ${lineOf(bad, 'type: mysql')}): is "mysql"; expected postgres, sqlite, redis or raft`)
  })
})

describe('secrets of CallFS\'s own config.yaml', () => {
  it('are masked in anything opsctl prints from the moment the file is parsed', async () => {
    const dsnPassword = `pg-${randomBytes(8).toString('hex')}`
    const redisPassword = `rd-${randomBytes(8).toString('hex')}`
    const apiKey = `api-${randomBytes(10).toString('hex')}`
    const proxy = `px-${randomBytes(10).toString('hex')}`
    const link = `ln-${randomBytes(10).toString('hex')}`
    let text = replaceLine(valid(), /^ {2}dsn:/, [`  dsn: "postgres://callfs:${dsnPassword}@127.0.0.1:1/callfs"`])
    text = replaceLine(text, /^ {2}redis_addr:/, ['  redis_addr: "127.0.0.1:1"', `  redis_password: "${redisPassword}"`])
    text = replaceLine(text, /^ {4}- "opsctl-test-key/, [`    - "${apiKey}"`])
    text = replaceLine(text, /^ {2}internal_proxy_secret:/, [`  internal_proxy_secret: "${proxy}"`])
    text = replaceLine(text, /^ {2}single_use_link_secret:/, [`  single_use_link_secret: "${link}"`])
    const line = `dsn password ${dsnPassword}, redis ${redisPassword}, key ${apiKey}, proxy ${proxy}, link ${link}`
    // Nothing read yet: nothing registered.
    expect(redact(line)).toBe(line)
    const r = await check('callfs.config.invalid', {config_file: await configFile(text)})
    expect(r.status).toBe('ok')
    expect(redact(line)).toBe('dsn password ****, redis ****, key ****, proxy ****, link ****')
  })
})
