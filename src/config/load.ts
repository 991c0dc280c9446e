// Finding, reading and parsing the configuration file. Everything that goes wrong becomes a
// ConfigError that says where and what to do; nothing else is thrown.
import {readFile, stat} from 'node:fs/promises'
import {homedir} from 'node:os'
import path from 'node:path'
import type {Document, LineCounter, YAMLError} from 'yaml'

import {configError, ConfigError, errnoCode, type ConfigProblem} from './errors.js'
import {checkDocument, defaultConfig} from './schema.js'
import type {OpsctlConfig} from './types.js'
import {yamlLib} from './yaml-lib.js'

export {defaultConfig} from './schema.js'

export interface LoadOptions {
  /** The --config flag, as given (relative to cwd). */
  configFlag?: string
  /** Defaults to process.env. */
  env?: NodeJS.ProcessEnv
  /** Defaults to process.cwd(). */
  cwd?: string
}

export type ConfigOrigin = '--config' | '$OPSCTL_CONFIG' | 'working directory' | 'user' | 'system'

export interface ConfigCandidate {
  /** Absolute. */
  path: string
  /** Named by --config or $OPSCTL_CONFIG: it must exist. */
  explicit: boolean
  origin: ConfigOrigin
}

/** A configuration file is small; anything larger is the wrong file. */
const MAX_CONFIG_BYTES = 1024 * 1024

/**
 * Where opsctl looks, in order: --config, $OPSCTL_CONFIG (either one alone when given),
 * ./opsctl.yaml, $XDG_CONFIG_HOME/opsctl/config.yaml (~/.config without it), /etc/opsctl/config.yaml.
 */
export function configCandidates(o: LoadOptions = {}): ConfigCandidate[] {
  const env = o.env ?? process.env
  const cwd = o.cwd ?? process.cwd()
  if (o.configFlag !== undefined) return [{path: path.resolve(cwd, o.configFlag), explicit: true, origin: '--config'}]
  if (env.OPSCTL_CONFIG) return [{path: path.resolve(cwd, env.OPSCTL_CONFIG), explicit: true, origin: '$OPSCTL_CONFIG'}]
  const xdg = env.XDG_CONFIG_HOME
  // The XDG spec says a relative $XDG_CONFIG_HOME is invalid and is to be ignored.
  const configHome = xdg && path.isAbsolute(xdg) ? xdg : path.join(env.HOME || homedir(), '.config')
  return [
    {path: path.join(cwd, 'opsctl.yaml'), explicit: false, origin: 'working directory'},
    {path: path.join(configHome, 'opsctl', 'config.yaml'), explicit: false, origin: 'user'},
    {path: '/etc/opsctl/config.yaml', explicit: false, origin: 'system'},
  ]
}

/**
 * The file to read: the explicit one (whether or not it exists: loading it then says it is
 * missing), else the first searched location that exists; null when there is none.
 */
export async function findConfigFile(o: LoadOptions = {}): Promise<{path: string; explicit: boolean; origin: ConfigOrigin} | null> {
  for (const candidate of configCandidates(o)) {
    if (candidate.explicit) return candidate
    try {
      await stat(candidate.path)
      return candidate
    } catch (error) {
      const code = errnoCode(error)
      // Missing: look further. Anything else (a directory we may not enter…) is reported on load.
      if (code !== 'ENOENT' && code !== 'ENOTDIR') return candidate
    }
  }
  return null
}

/** Where `opsctl config init` writes: --config, else $OPSCTL_CONFIG, else ./opsctl.yaml. */
export function defaultInitPath(o: LoadOptions = {}): string {
  const first = configCandidates(o)[0]
  return first?.explicit ? first.path : path.join(o.cwd ?? process.cwd(), 'opsctl.yaml')
}

/** The effective configuration: the file found (see findConfigFile) over the defaults. */
export async function loadConfig(o: LoadOptions = {}): Promise<OpsctlConfig> {
  if (o.configFlag === '') throw configError(null, '--config', 'needs the path of a configuration file')
  const found = await findConfigFile(o)
  if (found === null) return defaultConfig()
  const text = await readConfigFile(found)
  return parseConfigText(text, found.path)
}

async function readConfigFile(found: ConfigCandidate): Promise<string> {
  const p = found.path
  // Problems with a file the user named are the flag's or the variable's; with one we found, the file's.
  const fail = (message: string): ConfigError =>
    found.explicit ? configError(null, found.origin, `${p} ${message}`) : configError(p, '', message)
  const fix = found.origin === '--config' ? 'check the --config path' : found.origin === '$OPSCTL_CONFIG' ? 'fix or unset OPSCTL_CONFIG' : 'fix or remove it'
  try {
    const info = await stat(p)
    if (info.isDirectory()) throw fail(`is a directory, not a file: ${fix}`)
    if (!info.isFile()) throw fail(`is not a regular file: ${fix}`)
    if (info.size > MAX_CONFIG_BYTES) throw fail(`is ${info.size} bytes, more than a configuration file ever needs (1 MiB): ${fix}`)
    return await readFile(p, 'utf8')
  } catch (error) {
    if (error instanceof ConfigError) throw error
    switch (errnoCode(error)) {
      case 'ENOENT':
        throw fail(`does not exist: ${fix}, or run \`opsctl config init ${p}\` to write a starter file there`)
      case 'ENOTDIR':
        throw fail(`cannot exist: part of the path is a file, not a directory: ${fix}`)
      case 'EACCES':
      case 'EPERM':
        throw fail(`cannot be read (permission denied): make it readable by this user (chmod 644), or ${fix}`)
      case 'EISDIR':
        throw fail(`is a directory, not a file: ${fix}`)
      default:
        throw fail(`cannot be read (${errnoCode(error) ?? String(error)}): ${fix}`)
    }
  }
}

/** Parse and check the text of a configuration file; `file` names it in problems and `source`. */
export function parseConfigText(text: string, file: string): OpsctlConfig {
  const y = yamlLib()
  const lc = new y.LineCounter()
  const doc = y.parseDocument(text, {lineCounter: lc, prettyErrors: true, uniqueKeys: true})
  const issues = [...doc.errors, ...doc.warnings]
  if (issues.length > 0) throw new ConfigError(issues.map((e) => syntaxProblem(e, doc, lc)), file)
  return checkDocument(y, doc, lc, file)
}

function syntaxProblem(e: YAMLError, doc: Document, lc: LineCounter): ConfigProblem {
  const pos = e.linePos?.[0] ?? lc.linePos(e.pos[0])
  const first = (e.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?\s*$/, '')
  let message: string
  switch (e.code) {
    case 'DUPLICATE_KEY':
      message = 'duplicate key: each key may appear once in a mapping (remove or merge the repeated one)'
      break
    case 'MULTIPLE_DOCS':
      message = 'the file holds more than one YAML document (a second "---"): opsctl reads exactly one'
      break
    case 'TAG_RESOLVE_FAILED':
      message = `${first}: opsctl reads plain YAML, remove the tag`
      break
    default:
      message = `YAML syntax error: ${first}`
  }
  return {path: pathAt(doc, e.pos[0]), message, line: Math.max(pos.line, 1), col: pos.col}
}

/** The key path of the deepest key or item at a character offset, e.g. "systems.callfs.url". */
function pathAt(doc: Document, offset: number): string {
  const y = yamlLib()
  const within = (node: unknown): boolean =>
    y.isNode(node) && node.range !== undefined && node.range !== null && node.range[0] <= offset && offset < Math.max(node.range[2], node.range[0] + 1)
  let node: unknown = doc.contents
  let out = ''
  for (;;) {
    let next: unknown
    if (y.isMap(node)) {
      for (const pair of node.items) {
        const key = y.isScalar(pair.key) ? String(pair.key.value) : '?'
        if (within(pair.key)) return out === '' ? key : `${out}.${key}`
        if (within(pair.value)) {
          out = out === '' ? key : `${out}.${key}`
          next = pair.value
          break
        }
      }
    } else if (y.isSeq(node)) {
      const i = node.items.findIndex((item) => within(item))
      if (i >= 0) {
        out = `${out}[${i}]`
        next = node.items[i]
      }
    }
    if (next === undefined) return out
    node = next
  }
}
