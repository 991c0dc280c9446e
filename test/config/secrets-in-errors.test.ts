import {describe, expect, it} from 'vitest'

import {ConfigError, formatConfigError} from '../../src/config/errors.js'
import {parseConfigText} from '../../src/config/load.js'
import {maskUrlPasswords} from '../../src/config/mask.js'

function problems(yaml: string): string {
  try {
    parseConfigText(yaml, '/etc/opsctl/config.yaml')
  } catch (error) {
    if (error instanceof ConfigError) return formatConfigError(error)
    throw error
  }
  throw new Error('expected a configuration error')
}

describe('a password in a broken URL never reaches a configuration error', () => {
  it.each([
    ['redis: "redis://:pa#ss@host:6379/0"', 'pa#ss'],
    ['url: "https://u:pa?ss@h:8443x"', 'pa?ss'],
    ['postgres: "postgres://u:p@ss@host:99999/db"', 'p@ss'],
    ['redis: redis://:pa#ss@host:6379/0: x', 'pa#ss'],
    ['postgres: "postgres://u:pa,ss@host/db"', 'pa,ss'],
  ])('%s', (line, password) => {
    const text = problems(`version: 1\nsystems:\n  callfs:\n    ${line}\n`)
    expect(text).toMatch(/^\/etc\/opsctl\/config\.yaml:4:\d+: systems\.callfs\./)
    expect(text).not.toContain(password)
  })
})

describe('maskUrlPasswords', () => {
  it('masks up to the last @ of the token and stops at whitespace and quotes', () => {
    expect(maskUrlPasswords('postgres://u:p@ss/w#rd@db:5432/x and more')).toBe('postgres://u:****@db:5432/x and more')
    expect(maskUrlPasswords('{"a":"redis://:x@h/0","b":"c@d"}')).toBe('{"a":"redis://:****@h/0","b":"c@d"}')
    expect(maskUrlPasswords('https://localhost:8443/health')).toBe('https://localhost:8443/health')
  })
})

describe('a secret written where a variable name belongs', () => {
  it.each(['sk_live_51HxYzAbCdEf0123456789', 'ghp_0123456789abcdefABCDEF', 'aB3dE5gH7jK9mN1pQ3sT5vX7'])('%s is refused without being echoed', (value) => {
    const text = problems(`version: 1\nsystems:\n  callfs:\n    api_key_env: ${value}\n`)
    expect(text).toBe('/etc/opsctl/config.yaml:4:18: systems.callfs.api_key_env: must be the name of an environment variable (like CALLFS_API_KEY), not the secret itself')
  })

  it('ordinary variable names pass', () => {
    expect(() => parseConfigText('version: 1\nsystems:\n  callfs:\n    api_key_env: CALLFS_PROD_API_KEY_2\n', '/x')).not.toThrow()
  })
})
