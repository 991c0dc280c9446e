import {mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {DEFAULTS, SYSTEM_NAMES} from '../../src/config/defaults.js'
import {ConfigError} from '../../src/config/errors.js'
import {defaultConfig, loadConfig, parseConfigText} from '../../src/config/load.js'
import {fieldsOf} from '../../src/config/schema.js'
import {starterConfigYaml, writeStarterConfig} from '../../src/config/starter.js'

/** The starter with every commented line below `version: 1` switched on, as a user would. */
function uncommentEverything(text: string): string {
  const lines = text.split('\n')
  const start = lines.findIndex((l) => l.startsWith('version: 1'))
  expect(start).toBeGreaterThan(0)
  return lines.map((l, i) => (i > start ? l.replace(/^(\s*)# /, '$1') : l)).join('\n')
}

describe('the starter file', () => {
  const text = starterConfigYaml()

  it('validates and, as written, behaves exactly like no file at all', () => {
    const c = parseConfigText(text, 'opsctl.yaml')
    expect({...c, source: null}).toEqual(defaultConfig())
  })

  it('lists every key with its default and a comment: switched on, it still means the defaults', () => {
    const on = uncommentEverything(text)
    const c = parseConfigText(on, 'opsctl.yaml')
    const defaults = defaultConfig()
    expect(c.timeout).toBe(DEFAULTS.timeout)
    for (const system of SYSTEM_NAMES) {
      const keys = Object.entries(fieldsOf(system)).flatMap(([k, f]) => (f.type === 'section' ? Object.keys(f.fields).map((s) => `${k}.${s}`) : [k]))
      for (const target of c.systems[system].targets) {
        // Every key appears in the file, so every key is explicit...
        for (const key of keys) expect(target.explicit, `${system}.${key}`).toContain(key)
        // ...and, but for what the targets example changes, holds the default.
        const expected = {...defaults.systems[system].targets[0], name: target.name, enabled: target.enabled, explicit: target.explicit}
        if (system === 'callfs') Object.assign(expected, {url: target.url, postgres: (target as {postgres: string}).postgres})
        expect(target).toEqual(expected)
      }
    }
    // The targets example is under callfs, with one target switched off.
    expect(c.systems.callfs.targets.map((t) => [t.name, t.enabled, t.url])).toEqual([
      ['eu-1', true, 'https://callfs-eu-1.internal:8443'],
      ['us-1', false, 'https://callfs-us-1.internal:8443'],
    ])
    // One comment per key line.
    for (const line of on.split('\n')) {
      if (/^\s*[a-z_]+:/.test(line) && !/^\s*(systems|name|url|postgres):/.test(line)) expect(line, line).toMatch(/ # \S/)
    }
  })

  it('says where secrets go and names no secret', () => {
    expect(text).toMatch(/a key ending in _env names the environment variable/)
    expect(text).not.toMatch(/password:|api_key:|token:/)
  })
})

describe('writeStarterConfig', () => {
  let root: string
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'opsctl-starter-'))
  })
  afterAll(async () => {
    await rm(root, {recursive: true, force: true})
  })

  it('creates missing directories and writes the file world-readable whatever the umask', async () => {
    const file = path.join(root, 'a', 'b', 'opsctl.yaml')
    const old = process.umask(0o077)
    try {
      await writeStarterConfig(file, {force: false})
    } finally {
      process.umask(old)
    }
    expect(await readFile(file, 'utf8')).toBe(starterConfigYaml())
    expect((await stat(file)).mode & 0o777).toBe(0o644)
    expect((await loadConfig({configFlag: file})).source).toBe(file)
  })

  it('refuses to overwrite an existing file without force, leaving it untouched', async () => {
    const file = path.join(root, 'existing.yaml')
    await writeFile(file, 'timeout: 9s\n')
    const error = await writeStarterConfig(file, {force: false}).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).message).toBe(`${file}: already exists; not overwritten: pass --force to replace it, or choose another path`)
    expect(await readFile(file, 'utf8')).toBe('timeout: 9s\n')
  })

  it('replaces it with force, leaving no temporary file behind', async () => {
    const dir = path.join(root, 'forced')
    await mkdir(dir)
    const file = path.join(dir, 'opsctl.yaml')
    await writeFile(file, 'timeout: 9s\n', {mode: 0o600})
    await writeStarterConfig(file, {force: true})
    expect(await readFile(file, 'utf8')).toBe(starterConfigYaml())
    expect((await stat(file)).mode & 0o777).toBe(0o644)
    expect(await readdir(dir)).toEqual(['opsctl.yaml'])
  })

  it('reports a directory in the way, or a file where a directory should be', async () => {
    const dir = path.join(root, 'is-a-dir')
    await mkdir(dir)
    const asDir = await writeStarterConfig(dir, {force: true}).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(asDir).toBeInstanceOf(ConfigError)
    expect((asDir as ConfigError).message).toBe(`${dir}: is a directory: give the path of a file`)
    expect(await readdir(root)).not.toContainEqual(expect.stringMatching(/\.tmp$/))

    const plain = path.join(root, 'plain-file')
    await writeFile(plain, 'x')
    const underFile = await writeStarterConfig(path.join(plain, 'opsctl.yaml'), {force: false}).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(underFile).toBeInstanceOf(ConfigError)
    expect((underFile as ConfigError).message).toMatch(/cannot create its directory .*plain-file \((EEXIST|ENOTDIR)\)/)
  })
})
