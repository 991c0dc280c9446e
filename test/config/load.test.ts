import {execFileSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {ConfigError} from '../../src/config/errors.js'
import {configCandidates, defaultConfig, defaultInitPath, findConfigFile, loadConfig} from '../../src/config/load.js'

let root: string
let n = 0
/** A fresh directory layout per test: a working directory, a home and an XDG config home. */
async function layout(): Promise<{cwd: string; home: string; xdg: string; env: NodeJS.ProcessEnv}> {
  const base = path.join(root, String(n++))
  const dirs = {cwd: path.join(base, 'work'), home: path.join(base, 'home'), xdg: path.join(base, 'xdg')}
  for (const d of Object.values(dirs)) await mkdir(d, {recursive: true})
  return {...dirs, env: {HOME: dirs.home, XDG_CONFIG_HOME: dirs.xdg}}
}

async function rejection(p: Promise<unknown>): Promise<ConfigError> {
  const error = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(ConfigError)
  return error as ConfigError
}

const ETC_CONFIG = '/etc/opsctl/config.yaml'

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'opsctl-config-'))
})
afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

describe('where opsctl looks', () => {
  it('searches ./opsctl.yaml, $XDG_CONFIG_HOME, /etc in that order', () => {
    const list = configCandidates({cwd: '/w', env: {HOME: '/h', XDG_CONFIG_HOME: '/x'}})
    expect(list).toEqual([
      {path: '/w/opsctl.yaml', explicit: false, origin: 'working directory'},
      {path: '/x/opsctl/config.yaml', explicit: false, origin: 'user'},
      {path: ETC_CONFIG, explicit: false, origin: 'system'},
    ])
  })

  it('uses ~/.config without $XDG_CONFIG_HOME, or when it is relative (the XDG spec says to ignore it)', () => {
    for (const env of [{HOME: '/h'}, {HOME: '/h', XDG_CONFIG_HOME: ''}, {HOME: '/h', XDG_CONFIG_HOME: 'rel/dir'}]) {
      expect(configCandidates({cwd: '/w', env})[1]?.path).toBe('/h/.config/opsctl/config.yaml')
    }
  })

  it('takes --config over $OPSCTL_CONFIG over the search, relative to the working directory', () => {
    const env = {HOME: '/h', OPSCTL_CONFIG: 'env.yaml'}
    expect(configCandidates({cwd: '/w', env, configFlag: 'flag.yaml'})).toEqual([{path: '/w/flag.yaml', explicit: true, origin: '--config'}])
    expect(configCandidates({cwd: '/w', env})).toEqual([{path: '/w/env.yaml', explicit: true, origin: '$OPSCTL_CONFIG'}])
    expect(defaultInitPath({cwd: '/w', env})).toBe('/w/env.yaml')
    expect(defaultInitPath({cwd: '/w', env: {}})).toBe('/w/opsctl.yaml')
    expect(defaultInitPath({cwd: '/w', env: {}, configFlag: '/abs/c.yaml'})).toBe('/abs/c.yaml')
  })

  it('finds the first file that exists, skipping missing ones', async () => {
    const l = await layout()
    const xdgFile = path.join(l.xdg, 'opsctl', 'config.yaml')
    await mkdir(path.dirname(xdgFile))
    await writeFile(xdgFile, 'timeout: 7s\n')
    expect(await findConfigFile({cwd: l.cwd, env: l.env})).toEqual({path: xdgFile, explicit: false, origin: 'user'})
    expect((await loadConfig({cwd: l.cwd, env: l.env})).timeout).toBe(7000)

    await writeFile(path.join(l.cwd, 'opsctl.yaml'), 'timeout: 3s\n')
    const c = await loadConfig({cwd: l.cwd, env: l.env})
    expect(c.timeout).toBe(3000)
    expect(c.source).toBe(path.join(l.cwd, 'opsctl.yaml'))
  })

  it.skipIf(existsSync(ETC_CONFIG))('falls back to every default when no file exists', async () => {
    const l = await layout()
    expect(await findConfigFile({cwd: l.cwd, env: l.env})).toBeNull()
    expect(await loadConfig({cwd: l.cwd, env: l.env})).toEqual(defaultConfig())
  })

  it('returns a named file even when it is missing (config init writes there); loading it fails', async () => {
    const l = await layout()
    const missing = path.join(l.cwd, 'nope.yaml')
    expect(await findConfigFile({cwd: l.cwd, env: l.env, configFlag: 'nope.yaml'})).toEqual({path: missing, explicit: true, origin: '--config'})
    const e = await rejection(loadConfig({cwd: l.cwd, env: l.env, configFlag: 'nope.yaml'}))
    expect(e.file).toBeNull()
    expect(e.message).toBe(`--config: ${missing} does not exist: check the --config path, or run \`opsctl config init ${missing}\` to write a starter file there`)
  })

  it('fails on a missing $OPSCTL_CONFIG rather than silently using defaults', async () => {
    const l = await layout()
    await writeFile(path.join(l.cwd, 'opsctl.yaml'), 'timeout: 3s\n')
    const e = await rejection(loadConfig({cwd: l.cwd, env: {...l.env, OPSCTL_CONFIG: '/nonexistent/opsctl.yaml'}}))
    expect(e.problems).toEqual([
      {
        path: '$OPSCTL_CONFIG',
        line: null,
        col: null,
        message: '/nonexistent/opsctl.yaml does not exist: fix or unset OPSCTL_CONFIG, or run `opsctl config init /nonexistent/opsctl.yaml` to write a starter file there',
      },
    ])
  })
})

describe('reading the file', () => {
  it('says so when the path is a directory', async () => {
    const l = await layout()
    const e = await rejection(loadConfig({cwd: l.cwd, env: l.env, configFlag: l.xdg}))
    expect(e.message).toBe(`--config: ${l.xdg} is a directory, not a file: check the --config path`)
  })

  it('says so when a searched location is a directory, naming that file', async () => {
    const l = await layout()
    await mkdir(path.join(l.cwd, 'opsctl.yaml'))
    const e = await rejection(loadConfig({cwd: l.cwd, env: l.env}))
    expect(e.file).toBe(path.join(l.cwd, 'opsctl.yaml'))
    expect(e.message).toBe(`${path.join(l.cwd, 'opsctl.yaml')}: is a directory, not a file: fix or remove it`)
  })

  it('says so when part of the path is a file', async () => {
    const l = await layout()
    const file = path.join(l.cwd, 'plain')
    await writeFile(file, 'x')
    const e = await rejection(loadConfig({cwd: l.cwd, env: l.env, configFlag: path.join(file, 'config.yaml')}))
    expect(e.message).toMatch(/^--config: .*plain\/config\.yaml cannot exist: part of the path is a file, not a directory/)
  })

  it('refuses a FIFO without blocking on it', async () => {
    const l = await layout()
    const fifo = path.join(l.cwd, 'fifo.yaml')
    execFileSync('mkfifo', [fifo])
    const e = await rejection(loadConfig({cwd: l.cwd, env: l.env, configFlag: fifo}))
    expect(e.message).toMatch(/is not a regular file/)
  })

  it('refuses a file far larger than any configuration', async () => {
    const l = await layout()
    const big = path.join(l.cwd, 'big.yaml')
    await writeFile(big, `# ${'x'.repeat(1024 * 1024)}\n`)
    const e = await rejection(loadConfig({cwd: l.cwd, env: l.env, configFlag: big}))
    expect(e.message).toMatch(/more than a configuration file ever needs \(1 MiB\)/)
  })

  it('refuses an empty --config', async () => {
    const e = await rejection(loadConfig({configFlag: ''}))
    expect(e.message).toBe('--config: needs the path of a configuration file')
  })

  it('names the file in every problem', async () => {
    const l = await layout()
    const file = path.join(l.cwd, 'opsctl.yaml')
    await writeFile(file, 'version: 1\nsystems:\n  callfs:\n    lock_timeout: 5 seconds\n')
    const e = await rejection(loadConfig({cwd: l.cwd, env: l.env}))
    expect(e.file).toBe(file)
    expect(e.message).toBe(`${file}:4:19: systems.callfs.lock_timeout: "5 seconds" is not a duration (use 250ms, 5s, 2m, 1h, 14d or a number of seconds)`)
  })
})
