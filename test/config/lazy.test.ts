// Its own file, so its own process: nothing else here has parsed YAML yet.
import {existsSync} from 'node:fs'
import {createRequire} from 'node:module'
import {describe, expect, it} from 'vitest'

import {defaultConfig, loadConfig, parseConfigText} from '../../src/config/load.js'
import {effectiveConfigJson} from '../../src/config/show.js'

const yamlLoaded = (): boolean => Object.keys(createRequire(import.meta.url).cache).some((k) => k.includes('/node_modules/yaml/'))

describe('start-up cost', () => {
  it('loads the yaml library only when a file is parsed', async () => {
    expect(yamlLoaded()).toBe(false)
    defaultConfig()
    effectiveConfigJson(defaultConfig(), {})
    await loadConfig({cwd: '/nonexistent', env: {HOME: '/nonexistent', XDG_CONFIG_HOME: '/nonexistent'}}).catch(() => undefined)
    // A machine with /etc/opsctl/config.yaml makes loadConfig parse it.
    expect(yamlLoaded()).toBe(existsSync('/etc/opsctl/config.yaml'))
    parseConfigText('timeout: 1s\n', 'x.yaml')
    expect(yamlLoaded()).toBe(true)
  })
})
