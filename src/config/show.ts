// `opsctl config show`: the effective configuration, every target after merging, with secrets
// out of sight. Values of *_env keys are variable names; whether each variable is set is shown,
// never its value. Durations are written as in the file ("5s") so the YAML can be used as one.
import type {Scalar} from 'yaml'

import {SYSTEM_NAMES} from './defaults.js'
import {formatDuration} from './duration.js'
import {maskUrlPasswords} from './mask.js'
import {fieldsOf, type LeafType} from './schema.js'
import type {OpsctlConfig} from './types.js'
import {yamlLib} from './yaml-lib.js'

type EnvState = 'set' | 'empty' | 'not set'

interface EnvRef {
  /** Path of the *_env key in the plain object, and the variable it names. */
  path: (string | number)[]
  variable: string
}

/** The effective configuration as YAML, with "# (set)" / "# (not set)" beside each *_env key. */
export function effectiveConfigYaml(c: OpsctlConfig, env: NodeJS.ProcessEnv): string {
  const refs: EnvRef[] = []
  const data = plain(c, (variable, path) => {
    refs.push({path, variable})
    return variable
  })
  const y = yamlLib()
  const doc = new y.Document(data)
  doc.commentBefore = c.source === null
    ? ' opsctl effective configuration: no configuration file found, built-in defaults'
    : ` opsctl effective configuration from ${c.source}`
  for (const ref of refs) {
    const node = doc.getIn(ref.path, true) as Scalar | undefined
    const state = envState(env, ref.variable)
    if (node) node.comment = state === 'empty' ? ' (not set: empty)' : ` (${state})`
  }
  return doc.toString({lineWidth: 0})
}

/**
 * The same, as data for --json: each *_env key becomes {variable, set} (set: holds a non-empty
 * value), and each target lists the keys the file set in `explicit`.
 */
export function effectiveConfigJson(c: OpsctlConfig, env: NodeJS.ProcessEnv): object {
  return {source: c.source, ...plain(c, (variable) => ({variable, set: envState(env, variable) === 'set'}), true)}
}

function envState(env: NodeJS.ProcessEnv, variable: string): EnvState {
  const value = env[variable]
  return value === undefined ? 'not set' : value === '' ? 'empty' : 'set'
}

type EnvRender = (variable: string, path: (string | number)[]) => unknown

function plain(c: OpsctlConfig, renderEnv: EnvRender, withExplicit = false): Record<string, unknown> {
  const systems: Record<string, unknown> = {}
  for (const system of SYSTEM_NAMES) {
    const sc = c.systems[system]
    const fields = fieldsOf(system)
    const targets = sc.targets.map((target, i) => {
      const t = target as unknown as Record<string, unknown>
      const at = ['systems', system, 'targets', i]
      const out: Record<string, unknown> = {name: target.name, enabled: target.enabled}
      for (const [key, field] of Object.entries(fields)) {
        if (field.type !== 'section') {
          out[key] = value(field.type, t[key], renderEnv, [...at, key])
          continue
        }
        const section = (t[key] ?? {}) as Record<string, unknown>
        const sub: Record<string, unknown> = {}
        for (const [subKey, subField] of Object.entries(field.fields)) {
          sub[subKey] = value(subField.type, section[subKey], renderEnv, [...at, key, subKey])
        }
        out[key] = sub
      }
      if (withExplicit) out.explicit = [...target.explicit].sort()
      return out
    })
    systems[system] = {enabled: sc.enabled, targets}
  }
  return {version: c.version, timeout: formatDuration(c.timeout), systems}
}

function value(type: LeafType, v: unknown, renderEnv: EnvRender, path: (string | number)[]): unknown {
  if (v === null || v === undefined) return null
  if ((type === 'duration' || type === 'wait') && typeof v === 'number') return formatDuration(v)
  if ((type === 'env' || type === 'nullable-env') && typeof v === 'string') return renderEnv(v, path)
  // The file cannot hold a password in a URL, but a configuration built elsewhere might.
  if (typeof v === 'string') return maskUrlPasswords(v)
  return v
}
