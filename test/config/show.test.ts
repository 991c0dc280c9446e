import {describe, expect, it} from 'vitest'

import {defaultConfig, parseConfigText} from '../../src/config/load.js'
import {maskUrlPasswords} from '../../src/config/mask.js'
import {effectiveConfigJson, effectiveConfigYaml} from '../../src/config/show.js'

const fleet = `version: 1
timeout: 2s
systems:
  callfs:
    api_key_env: CALLFS_KEY
    redis_password_env: REDIS_PW
    targets:
      - name: eu-1
        url: https://eu-1:8443
      - name: us-1
        enabled: false
        thresholds: {long_query: 90s}
`

describe('effectiveConfigYaml', () => {
  const env = {CALLFS_KEY: 'ck-live-0123456789', REDIS_PW: '', HOOKSHOT_HMAC_KEY: 'hmac-0123456789'}

  it('shows each variable name with whether it is set, never its value', () => {
    const out = effectiveConfigYaml(parseConfigText(fleet, '/etc/opsctl/config.yaml'), env)
    expect(out).toMatch(/^# opsctl effective configuration from \/etc\/opsctl\/config\.yaml\n/)
    expect(out).toContain('api_key_env: CALLFS_KEY # (set)\n')
    expect(out).toContain('redis_password_env: REDIS_PW # (not set: empty)\n')
    expect(out).toContain('hmac_key_env: HOOKSHOT_HMAC_KEY # (set)\n')
    expect(out).toContain('token_env: HOTSWAP_TOKEN # (not set)\n')
    expect(out).toContain('postgres_password_env: null\n')
    for (const secret of Object.values(env)) if (secret !== '') expect(out).not.toContain(secret)
  })

  it('is itself a valid configuration that means the same', () => {
    const c = parseConfigText(fleet, 'f.yaml')
    const again = parseConfigText(effectiveConfigYaml(c, env), 'g.yaml')
    const strip = (x: typeof c): unknown =>
      Object.fromEntries(Object.entries(x.systems).map(([s, sc]) => [s, {...sc, targets: sc.targets.map((t) => ({...t, explicit: null}))}]))
    expect(strip(again)).toEqual(strip(c))
    expect(again.timeout).toBe(2000)
    expect(again.systems.callfs.targets.map((t) => [t.name, t.enabled, t.thresholds.long_query])).toEqual([
      ['eu-1', true, 300_000],
      ['us-1', false, 90_000],
    ])
  })

  it('writes durations as in the file and says when there is no file', () => {
    const out = effectiveConfigYaml(defaultConfig(), {})
    expect(out).toMatch(/^# opsctl effective configuration: no configuration file found, built-in defaults\n/)
    expect(out).toContain('timeout: 5s\n')
    expect(out).toContain('lock_timeout: 1m\n')
    expect(out).toContain('cert_expiry_warn: 14d\n')
    expect(out).toContain('lock_prefix: "callfs:lock:"\n')
  })

  it('masks a password in any URL it shows', () => {
    const c = defaultConfig()
    const t = c.systems.callfs.targets[0]
    if (!t) throw new Error('no target')
    t.postgres = 'postgres://callfs:pg-s3cret@db:5432/callfs'
    t.redis = 'redis://:rd-s3cret@127.0.0.1:6379/0'
    t.url = 'https://u:h-s3cret@callfs:8443/?x=1&password=q-s3cret'
    const out = effectiveConfigYaml(c, {})
    expect(out).not.toMatch(/s3cret/)
    expect(out).toContain('postgres: postgres://callfs:****@db:5432/callfs\n')
    expect(out).toContain('redis: redis://:****@127.0.0.1:6379/0\n')
    expect(JSON.stringify(effectiveConfigJson(c, {}))).not.toMatch(/s3cret/)
  })
})

describe('effectiveConfigJson', () => {
  it('gives the same settings as data, with {variable, set} for each *_env key and the explicit keys', () => {
    const data = effectiveConfigJson(parseConfigText(fleet, '/x/opsctl.yaml'), {CALLFS_KEY: 'ck-live-0123456789', REDIS_PW: ''}) as {
      source: string
      timeout: string
      systems: {callfs: {enabled: boolean; targets: Record<string, unknown>[]}}
    }
    expect(data.source).toBe('/x/opsctl.yaml')
    expect(data.timeout).toBe('2s')
    const [eu, us] = data.systems.callfs.targets
    expect(eu).toMatchObject({
      name: 'eu-1',
      enabled: true,
      url: 'https://eu-1:8443',
      api_key_env: {variable: 'CALLFS_KEY', set: true},
      redis_password_env: {variable: 'REDIS_PW', set: false},
      postgres_password_env: null,
      lock_timeout: '1m',
      tls: {insecure: false, ca_file: null},
      explicit: ['api_key_env', 'redis_password_env', 'url'],
    })
    expect(us).toMatchObject({enabled: false, thresholds: {long_query: '90s', live_locks: 1000}, explicit: ['api_key_env', 'redis_password_env', 'thresholds.long_query']})
    expect(JSON.stringify(data)).not.toContain('ck-live')
    expect(JSON.parse(JSON.stringify(data))).toEqual(data)
  })
})

describe('maskUrlPasswords', () => {
  it.each([
    ['postgres://u:p@h/db', 'postgres://u:****@h/db'],
    ['redis://:p@h:6379/0', 'redis://:****@h:6379/0'],
    ['connect to postgresql://a:b%40c@h:5432/x failed', 'connect to postgresql://a:****@h:5432/x failed'],
    ['postgres://h/db?sslmode=require&password=p', 'postgres://h/db?sslmode=require&password=****'],
    ['postgres://u@h/db', 'postgres://u@h/db'],
    ['http://127.0.0.1:8080/path', 'http://127.0.0.1:8080/path'],
    ['no urls here: a:b@c', 'no urls here: a:b@c'],
  ])('%s', (text, masked) => {
    expect(maskUrlPasswords(text)).toBe(masked)
  })
})
