import {describe, expect, it} from 'vitest'

import {DEFAULTS} from '../../src/config/defaults.js'
import {ConfigError, formatConfigError, type ConfigProblem} from '../../src/config/errors.js'
import {defaultConfig, parseConfigText} from '../../src/config/load.js'

function problems(text: string): ConfigProblem[] {
  try {
    parseConfigText(text, 'opsctl.yaml')
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return (error as ConfigError).problems
  }
  throw new Error('expected a ConfigError')
}

function only(text: string): ConfigProblem {
  const list = problems(text)
  expect(list, JSON.stringify(list)).toHaveLength(1)
  return list[0] as ConfigProblem
}

const yaml = (lines: string[]): string => `${lines.join('\n')}\n`

describe('an empty or absent configuration', () => {
  it('is all defaults for an empty file, a comment-only file and empty sections', () => {
    for (const text of ['', '# nothing here\n', 'systems:\n', 'version: 1\nsystems:\n  callfs:\n  hookshot: {}\n']) {
      const c = parseConfigText(text, 'f.yaml')
      expect(c.source).toBe('f.yaml')
      expect({...c, source: null}).toEqual(defaultConfig())
    }
  })

  it('has one enabled "default" target per system with the SPEC defaults and nothing explicit', () => {
    const c = defaultConfig()
    expect(c.timeout).toBe(5000)
    expect(c.source).toBeNull()
    const callfs = c.systems.callfs.targets
    expect(callfs).toHaveLength(1)
    expect(callfs[0]).toMatchObject({
      name: 'default',
      enabled: true,
      url: 'https://localhost:8443',
      redis: 'redis://127.0.0.1:6379/0',
      lock_prefix: 'callfs:lock:',
      lock_timeout: 60_000,
      tls: {insecure: false, ca_file: null},
      postgres_password_env: null,
      redis_password_env: null,
      service_user: null,
      thresholds: {long_query: 300_000, idle_connection: 600_000, live_locks: 1000, metrics_window: 2000, cert_expiry_warn: 1_209_600_000},
    })
    expect(callfs[0]?.explicit.size).toBe(0)
    expect(c.systems.hotswap.targets[0]?.kubernetes).toEqual({context: null, namespace: 'default', selector: 'app=hotswap-api', deployment: 'hotswap-api'})
    expect(c.systems.hookshot.targets[0]?.hmac_key_env).toBe('HOOKSHOT_HMAC_KEY')
    expect(c.systems.toombos.targets[0]?.project_dir).toBe('.')
  })

  it('hands out copies: changing one configuration leaves DEFAULTS and the next one alone', () => {
    const a = defaultConfig()
    const t = a.systems.callfs.targets[0]
    if (!t) throw new Error('no target')
    t.thresholds.live_locks = 1
    t.tls.insecure = true
    expect(DEFAULTS.systems.callfs.thresholds.live_locks).toBe(1000)
    expect(defaultConfig().systems.callfs.targets[0]?.tls.insecure).toBe(false)
    expect(() => {
      ;(DEFAULTS.systems.callfs.tls as {insecure: boolean}).insecure = true
    }).toThrow(TypeError)
  })
})

describe('values', () => {
  it('reads durations, URLs, booleans and counts and records what the file set', () => {
    const c = parseConfigText(
      yaml([
        'version: 1',
        'timeout: 250ms',
        'systems:',
        '  callfs:',
        '    url: https://callfs.internal:8443',
        '    lock_timeout: 90',
        '    tls: {ca_file: /etc/ssl/ca.pem}',
        '    thresholds:',
        '      live_locks: 0',
        '      cert_expiry_warn: 30d',
        '    postgres_password_env: CALLFS_PG_PASSWORD',
        '    redis: rediss://redis.internal:6380/2',
        '  hotswap:',
        '    enabled: false',
        '    postgres: postgresql://hotswap@db/hotswap?sslmode=require',
        '    kubernetes: {context: prod}',
      ]),
      'opsctl.yaml',
    )
    expect(c.timeout).toBe(250)
    const t = c.systems.callfs.targets[0]
    expect(t).toMatchObject({
      url: 'https://callfs.internal:8443',
      lock_timeout: 90_000,
      tls: {insecure: false, ca_file: '/etc/ssl/ca.pem'},
      thresholds: {live_locks: 0, cert_expiry_warn: 30 * 86_400_000, long_query: 300_000},
      postgres_password_env: 'CALLFS_PG_PASSWORD',
      redis: 'rediss://redis.internal:6380/2',
      config_file: '/etc/callfs/config.yaml',
    })
    expect([...(t?.explicit ?? [])].sort()).toEqual(
      ['lock_timeout', 'postgres_password_env', 'redis', 'thresholds.cert_expiry_warn', 'thresholds.live_locks', 'tls.ca_file', 'url'].sort(),
    )
    expect(c.systems.hotswap.enabled).toBe(false)
    expect(c.systems.hotswap.targets[0]?.enabled).toBe(false)
    expect(c.systems.hotswap.targets[0]?.kubernetes).toEqual({context: 'prod', namespace: 'default', selector: 'app=hotswap-api', deployment: 'hotswap-api'})
  })

  it('follows YAML anchors and aliases', () => {
    const c = parseConfigText(
      yaml(['systems:', '  hotswap:', '    prometheus_url: &prom http://prom.internal:9090', '  toombos:', '    prometheus_url: *prom']),
      'f',
    )
    expect(c.systems.toombos.targets[0]?.prometheus_url).toBe('http://prom.internal:9090')
  })

  it('points at the line and column of a bad duration, with the key path', () => {
    const p = only(yaml(['version: 1', 'systems:', '  callfs:', '    lock_timeout: 5 seconds']))
    expect(p).toEqual({
      path: 'systems.callfs.lock_timeout',
      line: 4,
      col: 19,
      message: '"5 seconds" is not a duration (use 250ms, 5s, 2m, 1h, 14d or a number of seconds)',
    })
  })

  it('rejects durations that are not greater than zero', () => {
    expect(only('timeout: 0s\n').message).toMatch(/^"0s" is not a duration greater than zero/)
    expect(only('timeout: 0\n').message).toMatch(/^0 is not a duration greater than zero/)
    expect(only('timeout: -5\n').path).toBe('timeout')
    expect(only('timeout: 0.1ms\n').message).toMatch(/^"0.1ms" is not a duration greater than zero/)
    expect(only('timeout: 99999999999999d\n').message).toMatch(/^"99999999999999d" is not a duration opsctl can use \(far too long\)/)
    expect(only('timeout: .inf\n').message).toMatch(/^Infinity is not a duration opsctl can use/)
    expect(only('timeout: 5 seconds\n').message).toMatch(/^"5 seconds" is not a duration \(/)
  })

  it('rejects wrong types with what was expected and what was found', () => {
    expect(only('systems:\n  callfs:\n    tls: {insecure: yes}\n')).toMatchObject({
      path: 'systems.callfs.tls.insecure',
      message: 'expected true or false, got "yes" (write true or false)',
    })
    expect(only('systems:\n  callfs:\n    thresholds: {live_locks: 1.5}\n').message).toBe('expected a whole number (0 or more), got the number 1.5')
    expect(only('systems:\n  callfs:\n    tls: [true]\n').message).toBe('expected a mapping (insecure, ca_file), got a list')
    expect(only('systems:\n  toombos:\n    project_dir: 5\n').message).toBe('expected a string, got the number 5 (quote it)')
    expect(only('systems:\n  hookshot: [1]\n')).toMatchObject({path: 'systems.hookshot', message: "expected a mapping of hookshot's keys, got a list"})
    expect(only('systems: [hookshot]\n').path).toBe('systems')
    expect(only('systems:\n  callfs:\n    enabled: "false"\n').message).toBe('expected true or false, got "false"')
  })

  it('rejects null where a value is required and accepts it where null means "none"', () => {
    expect(only('systems:\n  callfs:\n    url:\n')).toEqual({
      path: 'systems.callfs.url',
      line: 3,
      col: 5,
      message: 'has no value: give it an http(s) URL or remove the key to use the default ("https://localhost:8443")',
    })
    expect(only('systems:\n  callfs:\n    lock_timeout: null\n').path).toBe('systems.callfs.lock_timeout')
    expect(only('systems:\n  callfs:\n    api_key_env: ~\n').path).toBe('systems.callfs.api_key_env')
    const c = parseConfigText('systems:\n  callfs:\n    tls: {ca_file: null}\n    service_user: null\n  hotswap:\n    kubernetes: {context: ~}\n', 'f')
    expect(c.systems.callfs.targets[0]?.tls.ca_file).toBeNull()
    expect(c.systems.callfs.targets[0]?.explicit.has('tls.ca_file')).toBe(true)
    expect(c.systems.hotswap.targets[0]?.kubernetes.context).toBeNull()
  })

  it('checks URL syntax and scheme per key', () => {
    expect(only('systems:\n  callfs:\n    url: not a url\n').message).toBe('"not a url" is not a URL (e.g. https://localhost:8443)')
    expect(only('systems:\n  callfs:\n    url: ftp://x\n').message).toBe('"ftp://x" has scheme ftp; expected http or https (e.g. https://localhost:8443)')
    expect(only('systems:\n  callfs:\n    postgres: mysql://x/db\n').message).toMatch(/has scheme mysql; expected postgres or postgresql/)
    expect(only('systems:\n  callfs:\n    redis: http://x:6379\n').message).toMatch(/has scheme http; expected redis or rediss/)
    expect(only('systems:\n  callfs:\n    redis: redis://x:6379/zero\n').message).toMatch(/database after the last \/ must be a number/)
    expect(only('systems:\n  toombos:\n    crm_url: redis://x\n').path).toBe('systems.toombos.crm_url')
    expect(only('systems:\n  hotswap:\n    vault_addr: vault.internal\n').path).toBe('systems.hotswap.vault_addr')
  })

  it('reads disk thresholds as percentages, the warning level not above the failure level', () => {
    expect(defaultConfig().systems.callfs.targets[0]?.thresholds).toMatchObject({disk_warn: 80, disk_fail: 95})
    const c = parseConfigText('systems:\n  callfs:\n    thresholds: {disk_warn: 70.5, disk_fail: 90}\n', 'f')
    expect(c.systems.callfs.targets[0]?.thresholds).toMatchObject({disk_warn: 70.5, disk_fail: 90})
    expect(only('systems:\n  callfs:\n    thresholds: {disk_warn: 101}\n').message).toBe('expected a percentage from 0 to 100, got the number 101')
    expect(only('systems:\n  callfs:\n    thresholds: {disk_warn: 85%}\n').message).toBe('expected a percentage from 0 to 100, got "85%" (write 85, without %)')
    expect(only('systems:\n  callfs:\n    thresholds: {disk_warn: 96}\n')).toMatchObject({
      path: 'systems.callfs.thresholds',
      message: 'disk_warn (96) is above disk_fail (95): the warning level must not be above the failure level',
    })
    // The two levels may come from different places: the system sets one, a target the other.
    const fleet = 'systems:\n  callfs:\n    thresholds: {disk_fail: 90}\n    targets:\n      - name: a\n      - name: b\n        thresholds: {disk_warn: 91}\n'
    expect(only(fleet)).toMatchObject({path: 'systems.callfs.targets[1].thresholds', line: 6})
  })

  it('requires version 1 when version is present', () => {
    expect(only('version: 2\n')).toMatchObject({path: 'version', line: 1, col: 10, message: 'this opsctl reads configuration version 1, got the number 2; write version: 1'})
    expect(only('version: "1"\n').path).toBe('version')
    expect(parseConfigText('version: 1\n', 'f').version).toBe(1)
  })
})

describe('unknown keys', () => {
  it('suggests the key that was probably meant', () => {
    expect(only('timout: 5s\n')).toEqual({path: 'timout', line: 1, col: 1, message: 'unknown key; did you mean "timeout"?'})
    expect(only('systems:\n  callfs:\n    ulr: http://x\n').message).toBe('unknown key; did you mean "url"?')
    expect(only('systems:\n  callf: {}\n').message).toBe('unknown key; did you mean "callfs"?')
    expect(only('systems:\n  callfs:\n    tls: {ca-file: x}\n')).toMatchObject({path: 'systems.callfs.tls.ca-file', message: 'unknown key; did you mean "ca_file"?'})
    expect(only('systems:\n  callfs:\n    thresholds: {live_lock: 3}\n').message).toBe('unknown key; did you mean "live_locks"?')
  })

  it('lists the known keys when nothing is close, and says where a misplaced key belongs', () => {
    expect(only('colour: red\n').message).toBe('unknown key; known here: version, timeout, systems')
    expect(only('systems:\n  callfs:\n    timeout: 5s\n').message).toBe('unknown key; timeout is set at the top level only, for every system')
    expect(only('systems:\n  hookshot:\n    metrics_url: http://x\n').message).toMatch(/^unknown key for hookshot \(metrics_url is a callfs key\); known here: url, /)
    expect(only('systems:\n  toombos:\n    <<: {url: http://x}\n').message).toMatch(/merge keys \(<<\) are not supported/)
  })

  it('never accepts a secret: a secret-looking key is unknown, with the _env key to use instead', () => {
    const list = problems(yaml(['systems:', '  callfs:', '    api_key: sk-live-123456', '    password: hunter2', '  hotswap:', '    token: abc', '  hookshot:', '    secret: x']))
    expect(list.map((p) => [p.path, p.line, p.message])).toEqual([
      ['systems.callfs.api_key', 3, "unknown key; secrets are never written in the file: put it in an environment variable and set api_key_env to that variable's name"],
      ['systems.callfs.password', 4, "unknown key; secrets are never written in the file: put it in an environment variable and set postgres_password_env or redis_password_env to that variable's name"],
      ['systems.hotswap.token', 6, "unknown key; secrets are never written in the file: put it in an environment variable and set token_env to that variable's name"],
      ['systems.hookshot.secret', 8, 'unknown key; secrets are never written in the file: keep it in an environment variable (keys ending in _env name the variable)'],
    ])
    const text = formatConfigError(new ConfigError(list, 'opsctl.yaml'))
    for (const secret of ['sk-live-123456', 'hunter2', 'abc']) expect(text).not.toContain(secret)
  })

  it('refuses a password inside a postgres or redis URL without repeating it', () => {
    const list = problems(
      yaml(['systems:', '  callfs:', '    postgres: postgres://callfs:pg-s3cret@db/callfs', '    redis: redis://:rd-s3cret@127.0.0.1:6379/0', '  hotswap:', '    postgres: postgres://h@db/h?password=q-s3cret']),
    )
    expect(list.map((p) => [p.path, p.message])).toEqual([
      ['systems.callfs.postgres', 'the URL holds a password; secrets are never written in the file: remove it from the URL and put the password in the environment variable named by postgres_password_env'],
      ['systems.callfs.redis', 'the URL holds a password; secrets are never written in the file: remove it from the URL and put the password in the environment variable named by redis_password_env'],
      ['systems.hotswap.postgres', 'the URL holds a password; secrets are never written in the file: remove it from the URL and put the password in the environment variable named by postgres_password_env'],
    ])
    expect(JSON.stringify(list)).not.toMatch(/s3cret/)
  })

  it('masks a password echoed back from a URL that has other problems', () => {
    const p = only('systems:\n  callfs:\n    url: ftp://u:ftp-s3cret@host/\n')
    expect(p.message).toBe('"ftp://u:****@host/" has scheme ftp; expected http or https (e.g. https://localhost:8443)')
  })

  it('wants *_env values to be variable names and never echoes them', () => {
    const p = only('systems:\n  callfs:\n    api_key_env: "sk-live-9f8e7d"\n')
    expect(p).toMatchObject({path: 'systems.callfs.api_key_env', line: 3, col: 18})
    expect(p.message).toBe('must be the name of an environment variable (like CALLFS_API_KEY), not the secret itself')
    expect(only('systems:\n  callfs:\n    redis_password_env: 1234567\n').message).toBe('expected the name of an environment variable or null, got a number')
    expect(parseConfigText('systems:\n  callfs:\n    api_key_env: _Callfs_KEY2\n', 'f').systems.callfs.targets[0]?.api_key_env).toBe('_Callfs_KEY2')
  })
})

describe('YAML itself', () => {
  it('reports syntax errors with their line and column', () => {
    const p = only('systems:\n  callfs: [1\n')
    expect(p.line).toBe(3)
    expect(p.message).toMatch(/^YAML syntax error: Flow sequence/)
    expect(only('a: b: c\n').message).toMatch(/^YAML syntax error: /)
  })

  it('reports duplicate keys at the repeated key, with its path', () => {
    expect(only('systems:\n  callfs:\n    url: http://a\n    url: http://b\n')).toEqual({
      path: 'systems.callfs.url',
      line: 4,
      col: 5,
      message: 'duplicate key: each key may appear once in a mapping (remove or merge the repeated one)',
    })
  })

  it('wants one document that is a mapping', () => {
    expect(only('- hookshot\n')).toEqual({path: '', line: 1, col: 1, message: 'the file must be a mapping of keys (version, timeout, systems), got a list'})
    expect(only('just text\n').message).toMatch(/got "just text"$/)
    expect(only('version: 1\n---\nversion: 1\n')).toMatchObject({line: 2, message: 'the file holds more than one YAML document (a second "---"): opsctl reads exactly one'})
    expect(only('1: x\n').message).toBe('keys must be names, got the number 1')
  })

  it('rejects custom tags', () => {
    expect(only('timeout: !secret 5s\n').message).toMatch(/tag/)
  })
})

describe('targets', () => {
  const fleet = yaml([
    'systems:',
    '  callfs:',
    '    postgres_password_env: PG_PASSWORD',
    '    tls: {insecure: true}',
    '    thresholds: {live_locks: 50}',
    '    targets:',
    '      - name: eu-1',
    '        url: https://eu-1:8443',
    '        tls: {ca_file: /ca.pem}',
    '      - name: us-1',
    '        enabled: false',
    '        tls: {insecure: false}',
    '        thresholds: {long_query: 1m}',
  ])

  it('merges defaults ← system-level keys ← target keys, nested sections key by key', () => {
    const c = parseConfigText(fleet, 'f')
    const [eu, us] = c.systems.callfs.targets
    expect(c.systems.callfs.targets.map((t) => t.name)).toEqual(['eu-1', 'us-1'])
    expect(eu).toMatchObject({
      name: 'eu-1',
      enabled: true,
      url: 'https://eu-1:8443',
      postgres_password_env: 'PG_PASSWORD',
      tls: {insecure: true, ca_file: '/ca.pem'},
      thresholds: {live_locks: 50, long_query: 300_000},
    })
    expect(us).toMatchObject({
      name: 'us-1',
      enabled: false,
      url: 'https://localhost:8443',
      tls: {insecure: false, ca_file: null},
      thresholds: {live_locks: 50, long_query: 60_000, idle_connection: 600_000},
    })
    expect([...(eu?.explicit ?? [])].sort()).toEqual(['postgres_password_env', 'thresholds.live_locks', 'tls.ca_file', 'tls.insecure', 'url'])
    expect([...(us?.explicit ?? [])].sort()).toEqual(['postgres_password_env', 'thresholds.live_locks', 'thresholds.long_query', 'tls.insecure'])
    // Targets are independent objects: changing one does not reach the other.
    if (eu) eu.tls.ca_file = 'changed'
    expect(us?.tls.ca_file).toBeNull()
  })

  it('switches every target off with the system', () => {
    const c = parseConfigText(fleet.replace('  callfs:\n', '  callfs:\n    enabled: false\n'), 'f')
    expect(c.systems.callfs.enabled).toBe(false)
    expect(c.systems.callfs.targets.map((t) => t.enabled)).toEqual([false, false])
  })

  it('reports each bad target with its index', () => {
    const list = problems(
      yaml([
        'systems:',
        '  callfs:',
        '    targets:',
        '      - name: a',
        '        redis: http://x',
        '      - url: http://y',
        '      - name: a',
        '      - name: "eu west"',
        '      - name: 7',
        '      - just-a-name',
        '      - name: b',
        '        targets: []',
      ]),
    )
    expect(list.map((p) => [p.path, p.line, p.col, p.message])).toEqual([
      ['systems.callfs.targets[0].redis', 5, 16, '"http://x" has scheme http; expected redis or rediss (e.g. redis://127.0.0.1:6379/0)'],
      ['systems.callfs.targets[1]', 6, 9, 'this target has no name: give each target a unique name (e.g. name: eu-1)'],
      ['systems.callfs.targets[2].name', 7, 15, 'duplicate target name "a" (also systems.callfs.targets[0]); names must be unique within callfs'],
      ['systems.callfs.targets[3].name', 8, 15, '"eu west" is not a valid target name: use letters, digits, ".", "_" and "-" (up to 64, starting with a letter or digit)'],
      ['systems.callfs.targets[4].name', 9, 15, 'expected a string, got the number 7 (quote it)'],
      ['systems.callfs.targets[5]', 10, 9, 'expected a mapping with the target\'s name and the keys that differ for it, got "just-a-name"'],
      ['systems.callfs.targets[6].targets', 12, 9, 'targets cannot be nested: list every target of callfs in one targets: list'],
    ])
  })

  it('wants targets to be a non-empty list', () => {
    expect(only('systems:\n  callfs:\n    targets: {eu: {url: http://x}}\n')).toMatchObject({
      path: 'systems.callfs.targets',
      message: 'expected a list of targets (lines starting with "- name: …"), got a mapping',
    })
    expect(only('systems:\n  callfs:\n    targets: []\n').message).toMatch(/^no targets listed/)
    expect(only('systems:\n  callfs:\n    targets:\n').message).toMatch(/^no targets listed/)
  })

  it('allows the same target name in different systems', () => {
    const c = parseConfigText('systems:\n  callfs:\n    targets: [{name: prod}]\n  hookshot:\n    targets: [{name: prod}]\n', 'f')
    expect(c.systems.callfs.targets[0]?.name).toBe('prod')
    expect(c.systems.hookshot.targets[0]?.name).toBe('prod')
  })
})

describe('problems', () => {
  it('are all collected in one pass and listed in file order', () => {
    const list = problems(
      yaml(['systems:', '  callfs:', '    targets:', '      - name: x', '        url: nope', '    lock_timeout: soon', 'timout: 1s', 'version: 3']),
    )
    expect(list.map((p) => p.line)).toEqual([5, 6, 7, 8])
  })

  it('render as file:line:col: path: message, one line each', () => {
    const e = new ConfigError(
      [
        {path: 'systems.callfs.timeout', message: '"5 seconds" is not a duration', line: 12, col: 5},
        {path: '', message: 'the file must be a mapping', line: null, col: null},
      ],
      'opsctl.yaml',
    )
    expect(formatConfigError(e)).toBe('opsctl.yaml:12:5: systems.callfs.timeout: "5 seconds" is not a duration\nopsctl.yaml: the file must be a mapping')
    expect(e.message).toBe(formatConfigError(e))
    expect(e.name).toBe('ConfigError')
    expect(formatConfigError(new ConfigError([{path: '--config', message: 'x does not exist', line: null, col: null}], null))).toBe('--config: x does not exist')
  })
})
