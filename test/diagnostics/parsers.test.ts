import {chmod, mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {dotenvValues, parseDotenv, parseToml, parseYaml, readTextFile} from '../../src/diagnostics/parsers.js'
import {probeAsUser} from './fixtures/local.js'

let root: string
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'opsctl-parsers-'))
  await chmod(root, 0o755)
})
afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

describe('parseYaml', () => {
  // The shape of CallFS's config.yaml.
  const config = [
    'server:', //                                  1
    '  listen_addr: ":8443"', //                   2
    '  protocol: https', //                         3
    'auth:', //                                     4
    '  api_keys:', //                               5
    '    - "0123456789abcdef0123"', //              6
    '    - short', //                               7
    '  internal_proxy_secret: change-me-proxy', //  8
    'metadata_store:', //                           9
    '  type: postgres', //                         10
    '  dsn: "postgres://callfs:s3cret@127.0.0.1:5432/callfs?sslmode=disable"', // 11
    '',
  ].join('\n')

  it('returns the value and where each path is', () => {
    const r = parseYaml(config)
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.value.value).toMatchObject({server: {listen_addr: ':8443'}, auth: {api_keys: ['0123456789abcdef0123', 'short']}})
    expect(r.value.positionOf(['auth', 'api_keys'])).toEqual({line: 5, col: 3})
    expect(r.value.positionOf(['auth', 'api_keys', 1])).toEqual({line: 7, col: 7})
    expect(r.value.positionOf(['metadata_store', 'dsn'])).toEqual({line: 11, col: 3})
    expect(r.value.positionOf([])).toEqual({line: 1, col: 1})
    expect(r.value.positionOf(['auth', 'api_key_users'])).toBeNull()
    expect(r.value.positionOf(['server', 'listen_addr', 'deeper'])).toBeNull()
  })

  it('gives line and column of a syntax error', () => {
    const r = parseYaml('server:\n  listen_addr: ":8443"\n  tls: [a, b\nauth:\n  api_keys: []\n')
    expect(r.ok).toBe(false)
    if (r.ok) return
    expect(r.position).toEqual({line: 4, col: 1})
    expect(r.message).not.toContain('\n')
  })

  it('points at tabs used as indentation and at a value that is itself a mapping', () => {
    expect(parseYaml('server:\n\tport: 1\n')).toMatchObject({ok: false, message: 'Tabs are not allowed as indentation', position: {line: 2, col: 1}})
    expect(parseYaml('a: 1\nkey: value: other\n')).toMatchObject({ok: false, position: {line: 2, col: 6}})
    // An unclosed quoted string runs to the end of the input: that is where the parser notices.
    expect(parseYaml('a: 1\nb: "never closed\nc: 3\n')).toMatchObject({ok: false, message: 'Missing closing "quote', position: {line: 4, col: 1}})
  })

  it('treats duplicate keys as errors, at the second key', () => {
    const r = parseYaml('server:\n  listen_addr: ":8443"\n  protocol: https\n  listen_addr: ":9443"\n')
    expect(r).toMatchObject({ok: false, message: 'Map keys must be unique', position: {line: 4, col: 3}})
  })

  it('bounds alias expansion (billion laughs)', () => {
    const lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for (let i = 1; i < 9; i++) {
      const prev = String.fromCharCode(96 + i)
      const cur = String.fromCharCode(97 + i)
      lines.push(`${cur}: &${cur} [${Array(9).fill(`*${prev}`).join(', ')}]`)
    }
    const r = parseYaml(lines.join('\n'))
    expect(r).toMatchObject({ok: false, position: null})
    if (!r.ok) expect(r.message).toContain('alias')
    // A few aliases are fine.
    expect(parseYaml('base: &b {x: 1}\none: *b\ntwo: *b\n')).toMatchObject({ok: true, value: {value: {one: {x: 1}, two: {x: 1}}}})
  })

  it('handles empty files and refuses a second document', () => {
    expect(parseYaml('# only a comment\n')).toMatchObject({ok: true, value: {value: null}})
    expect(parseYaml('')).toMatchObject({ok: true, value: {value: null}})
    expect(parseYaml('a: 1\n---\nb: 2\n')).toMatchObject({ok: false, position: {line: 2, col: 1}})
  })
})

describe('parseToml', () => {
  it('parses a valid document', () => {
    const r = parseToml('[server]\nhost = "127.0.0.1"\nport = 8080\n\n[monitoring]\nmetrics_path = "/metrics"\n')
    expect(r).toEqual({ok: true, value: {server: {host: '127.0.0.1', port: 8080}, monitoring: {metrics_path: '/metrics'}}})
  })

  it('gives line and column of an error, in one line', () => {
    const r = parseToml('[server]\nhost = "127.0.0.1"\nport = 80 80\n')
    expect(r).toMatchObject({ok: false, position: {line: 3, col: 11}})
    if (!r.ok) expect(r.message).not.toContain('\n')
    const dup = parseToml('[server]\nport = 1\nport = 2\n')
    expect(dup).toMatchObject({ok: false, position: {line: 3, col: 1}})
    if (!dup.ok) expect(dup.message).toBe('trying to redefine an already defined table or value')
  })
})

describe('parseDotenv', () => {
  it('reads comments, export, quotes, escapes, empty values and inline comments', () => {
    const text = [
      '\uFEFF# Toombos settings', //                 1
      'ENVIRONMENT=production', //                   2
      'export DRY_RUN_MODE=false', //                3
      "SINGLE='no $expansion \\n here'", //          4
      'DOUBLE="line1\\nline2 \\"quoted\\""', //      5
      'EMPTY=', //                                   6
      'EMPTY_QUOTED=""', //                          7
      'URL=http://localhost:8002 # the platform', // 8
      'HASH_IN_VALUE=abc#def', //                    9
      'MULTI="first', //                            10
      'second"', //                                 11
      '', //                                        12
      '  INDENTED=yes\r', //                        13
    ].join('\n')
    const r = parseDotenv(text)
    expect(r.problems).toEqual([])
    expect(r.entries).toEqual([
      {key: 'ENVIRONMENT', value: 'production', line: 2},
      {key: 'DRY_RUN_MODE', value: 'false', line: 3},
      {key: 'SINGLE', value: 'no $expansion \\n here', line: 4},
      {key: 'DOUBLE', value: 'line1\nline2 "quoted"', line: 5},
      {key: 'EMPTY', value: '', line: 6},
      {key: 'EMPTY_QUOTED', value: '', line: 7},
      {key: 'URL', value: 'http://localhost:8002', line: 8},
      {key: 'HASH_IN_VALUE', value: 'abc#def', line: 9},
      {key: 'MULTI', value: 'first\nsecond', line: 10},
      {key: 'INDENTED', value: 'yes', line: 13},
    ])
  })

  it('reports the problems the Toombos guide warns about, with lines and without values', () => {
    const text = [
      'API_KEY_ENCRYPTION_KEY = supersecretvalue1234567890abcdef', // 1
      'DRY_RUN_MODE= true', //                    2
      'not a setting', //                         3
      '1BAD=x', //                                4
      'CRM_BASE_URL=http://localhost:8001', //    5
      'CRM_BASE_URL=http://localhost:9001', //    6
      'TOKEN="abc" trailing', //                  7
      'OPEN="never closed', //                    8
      'AFTER=still-read', //                      9
    ].join('\n')
    const r = parseDotenv(text)
    expect(r.problems.map((p) => p.line)).toEqual([1, 2, 3, 4, 6, 7, 8])
    expect(r.problems[0]?.message).toBe(
      "spaces around '=' (API_KEY_ENCRYPTION_KEY = value): the app reads the key as 'API_KEY_ENCRYPTION_KEY ' (write API_KEY_ENCRYPTION_KEY=value)",
    )
    expect(r.problems[1]?.message).toContain("space after '='")
    expect(r.problems[4]?.message).toContain('first on line 5')
    expect(r.problems[6]?.message).toContain('unterminated double quote')
    for (const p of r.problems) {
      expect(p.message).not.toContain('supersecret')
      expect(p.message).not.toContain('abc')
    }
    const values = dotenvValues(r)
    expect(values.get('API_KEY_ENCRYPTION_KEY')).toBe('supersecretvalue1234567890abcdef')
    expect(values.get('CRM_BASE_URL')).toBe('http://localhost:9001')
    expect(values.get('TOKEN')).toBe('abc')
    expect(values.has('OPEN')).toBe(false)
    expect(values.get('AFTER')).toBe('still-read')
  })
})

describe('readTextFile', () => {
  it('reads a file, and refuses a missing one, a directory and one over the limit', async () => {
    const p = join(root, 'config.yaml')
    await writeFile(p, 'héllo: wörld\n')
    expect(await readTextFile(p)).toMatchObject({ok: true, value: 'héllo: wörld\n'})
    expect(await readTextFile(join(root, 'missing.yaml'))).toMatchObject({ok: false, error: {kind: 'not-found', code: 'ENOENT'}})
    await mkdir(join(root, 'a-dir'))
    expect(await readTextFile(join(root, 'a-dir'))).toMatchObject({ok: false, error: {kind: 'other', code: 'EISDIR'}})
    const big = await readTextFile(p, 5)
    expect(big).toMatchObject({ok: false, error: {kind: 'too-large'}})
    if (!big.ok) expect(big.error.message).toBe(`${p} is 15 bytes, over the 5-byte limit for a config or log file`)
    expect(await readTextFile(p, 15)).toMatchObject({ok: true})
  })

  it('caps files whose size stat does not tell (procfs)', async () => {
    const r = await readTextFile('/proc/self/status', 10)
    expect(r).toMatchObject({ok: false, error: {kind: 'too-large'}})
    expect(await readTextFile('/proc/self/status')).toMatchObject({ok: true})
  })

  it('says permission when the OS refuses (as nobody, a root-only 0600 file)', async () => {
    const secret = join(root, 'secret.env')
    await writeFile(secret, 'TOKEN=x\n', {mode: 0o600})
    const out = await probeAsUser('nobody', 'parsers.ts', `m.readTextFile(${JSON.stringify(secret)})`)
    expect(out).toMatchObject({ok: false, error: {kind: 'permission', code: 'EACCES'}})
  })
})
