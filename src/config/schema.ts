// What the configuration file may hold, and the one pass that checks a parsed YAML document
// against it and merges it over the defaults. Every problem found is collected (with its line,
// column and key path) so that a user fixes a file in one round, not one error per run.
import type {Document, LineCounter} from 'yaml'

import {DEFAULTS, SYSTEM_NAMES, type SystemName, type TargetSettings} from './defaults.js'
import {DURATION_HINT, durationMs, formatDuration, parseDuration} from './duration.js'
import {ConfigError, type ConfigProblem} from './errors.js'
import {maskUrlPasswords, urlHasPassword} from './mask.js'
import type {CallfsTarget, OpsctlConfig, SystemConfig, TargetBySystem} from './types.js'
import type {YamlLib} from './yaml-lib.js'

// ---------------------------------------------------------------------------------------------
// The schema: one table serves validation, the starter file and `config show`.

export type LeafType =
  | 'http-url'
  | 'postgres-url'
  | 'redis-url'
  | 'text'
  | 'nullable-text'
  | 'env'
  | 'nullable-env'
  | 'duration'
  /** A duration opsctl waits for (a probe's deadline, a pause): at most an hour. */
  | 'wait'
  | 'count'
  | 'percent'
  | 'boolean'

export interface LeafField {
  type: LeafType
  /** One line for the starter file. */
  doc: string
}

export interface SectionField<V> {
  type: 'section'
  doc: string
  fields: {[K in keyof V]-?: LeafField}
}

export type Field = LeafField | SectionField<Record<string, unknown>>

type FieldFor<V> = [V] extends [object] ? SectionField<V> : LeafField

export type SystemFields<S extends SystemName> = {[K in keyof TargetSettings<S>]-?: FieldFor<TargetSettings<S>[K]>}

export interface SystemSchema<S extends SystemName> {
  doc: string
  fields: SystemFields<S>
}

export const TOP_LEVEL_DOCS = {
  version: 'format of this file; must be 1',
  timeout: 'deadline of each probe (250ms, 5s, 2m, 1h, 14d)',
  systems: 'the four systems; a system without keys uses every default',
} as const

/** Longest a probe deadline or a pause may be (timers hold at most 2^31 − 1 ms anyway). */
export const MAX_WAIT_MS = 3_600_000

/**
 * A value that is a valid variable name but reads like a credential: a known token prefix, or a
 * long mix of lower case, upper case and digits that no one names a variable.
 */
export function looksLikeSecret(v: string): boolean {
  if (/^(sk|pk|rk)_(live|test)_|^gh[pousr]_|^xox[abprs]-|^AKIA[0-9A-Z]{12}|^glpat-|^eyJ/.test(v)) return true
  return v.length >= 20 && /[a-z]/.test(v) && /[A-Z]/.test(v) && /\d/.test(v)
}

export const SYSTEMS: {[S in SystemName]: SystemSchema<S>} = {
  hookshot: {
    doc: 'deployment webhook receiver',
    fields: {
      url: {type: 'http-url', doc: "Hookshot's HTTP listener ([server] listen)"},
      config_file: {type: 'text', doc: "Hookshot's config.toml"},
      services_file: {type: 'text', doc: 'services.toml: the services Hookshot may deploy'},
      secrets_file: {type: 'text', doc: 'the secrets file (should be mode 0600)'},
      hmac_key_env: {type: 'env', doc: 'variable holding the webhook HMAC key (signed test deliveries)'},
      data_dir: {type: 'text', doc: 'state directory (state.redb, locks/)'},
      backup_dir: {type: 'text', doc: 'where Hookshot backups are written'},
      unit: {type: 'text', doc: 'systemd unit'},
    },
  },
  hotswap: {
    doc: 'deployment orchestration API on Kubernetes',
    fields: {
      url: {type: 'http-url', doc: 'Hotswap API'},
      token_env: {type: 'env', doc: 'variable holding the API bearer token'},
      postgres: {type: 'postgres-url', doc: "Hotswap's database (no password here)"},
      postgres_password_env: {type: 'nullable-env', doc: 'variable holding the database password; null: none, or PGPASSWORD/.pgpass'},
      kubernetes: {
        type: 'section',
        doc: 'where the API runs',
        fields: {
          context: {type: 'nullable-text', doc: "kubectl context; null: kubectl's current context"},
          namespace: {type: 'text', doc: 'namespace of the API'},
          selector: {type: 'text', doc: 'label selector of the API pods'},
          deployment: {type: 'text', doc: "the API's Deployment"},
        },
      },
      prometheus_url: {type: 'http-url', doc: 'Prometheus that scrapes Hotswap'},
      vault_addr: {type: 'http-url', doc: 'Vault holding the deployment secrets'},
      vault_token_env: {type: 'env', doc: 'variable holding the Vault token'},
    },
  },
  callfs: {
    doc: 'file API server',
    fields: {
      url: {type: 'http-url', doc: 'CallFS API'},
      metrics_url: {type: 'http-url', doc: 'Prometheus metrics endpoint (unauthenticated)'},
      api_key_env: {type: 'env', doc: 'variable holding a CallFS API key'},
      tls: {
        type: 'section',
        doc: 'TLS to the CallFS API',
        fields: {
          insecure: {type: 'boolean', doc: "true: don't verify the certificate (self-signed lab certificates only)"},
          ca_file: {type: 'nullable-text', doc: 'PEM file of the CA to trust; null: the system CAs'},
        },
      },
      config_file: {type: 'text', doc: "CallFS's config.yaml"},
      postgres: {type: 'postgres-url', doc: 'metadata database (no password here)'},
      postgres_password_env: {type: 'nullable-env', doc: 'variable holding the database password; null: none, or PGPASSWORD/.pgpass'},
      redis: {type: 'redis-url', doc: 'Redis holding the locks (no password here)'},
      redis_password_env: {type: 'nullable-env', doc: 'variable holding the Redis password; null: none'},
      lock_prefix: {type: 'text', doc: 'key prefix of CallFS locks in Redis'},
      lock_timeout: {type: 'duration', doc: "CallFS's lock time-to-live; a lock held longer is stale"},
      data_dir: {type: 'text', doc: 'root of the localfs backend'},
      unit: {type: 'text', doc: 'systemd unit'},
      service_user: {type: 'nullable-text', doc: 'user CallFS runs as; null: the unit\'s User=, else "callfs"'},
      thresholds: {
        type: 'section',
        doc: 'when a finding turns into a warning',
        fields: {
          long_query: {type: 'duration', doc: 'queries or transactions running longer are reported'},
          idle_connection: {type: 'duration', doc: 'idle connections older are candidates to terminate'},
          live_locks: {type: 'count', doc: 'more live locks than this warns'},
          metrics_window: {type: 'wait', doc: 'pause between the two metric scrapes of rate checks'},
          cert_expiry_warn: {type: 'duration', doc: 'warn when the certificate expires within this'},
          disk_warn: {type: 'percent', doc: 'data_dir filesystem usage (%) that warns'},
          disk_fail: {type: 'percent', doc: 'data_dir filesystem usage (%) that fails; not below disk_warn'},
        },
      },
    },
  },
  toombos: {
    doc: 'Halcytone content generator with its mock CRM and Platform',
    fields: {
      url: {type: 'http-url', doc: 'Halcytone API'},
      crm_url: {type: 'http-url', doc: 'mock CRM service'},
      platform_url: {type: 'http-url', doc: 'mock Platform service'},
      grafana_url: {type: 'http-url', doc: 'Grafana'},
      prometheus_url: {type: 'http-url', doc: 'Prometheus'},
      project_dir: {type: 'text', doc: 'holds .env and logs/app.log'},
      api_key_env: {type: 'env', doc: 'variable holding the Halcytone API key'},
    },
  },
}

/** A system's fields, for code that walks every system alike. */
export function fieldsOf(system: SystemName): Record<string, Field> {
  return SYSTEMS[system].fields as unknown as Record<string, Field>
}

// ---------------------------------------------------------------------------------------------
// Building targets (also used for a configuration with no file).

type Settings = Record<string, unknown>

/** defaults ← each layer in turn; sections (tls, kubernetes, thresholds) merge key by key. */
function mergeSettings(system: SystemName, layers: Settings[]): Settings {
  const out = structuredClone(DEFAULTS.systems[system]) as Settings
  const fields = fieldsOf(system)
  for (const layer of layers) {
    for (const [key, value] of Object.entries(layer)) {
      out[key] = fields[key]?.type === 'section' ? {...(out[key] as Settings), ...(value as Settings)} : value
    }
  }
  return out
}

function makeTarget<S extends SystemName>(
  system: S,
  name: string,
  enabled: boolean,
  explicit: Iterable<string>,
  layers: Settings[],
): TargetBySystem[S] {
  const settings = mergeSettings(system, layers)
  return {...settings, name, enabled, explicit: new Set(explicit)} as unknown as TargetBySystem[S]
}

/** The configuration opsctl uses when no file is found: every default, one target per system. */
export function defaultConfig(): OpsctlConfig {
  const systems = {} as Record<SystemName, SystemConfig<TargetBySystem[SystemName]>>
  for (const s of SYSTEM_NAMES) systems[s] = {enabled: true, targets: [makeTarget(s, 'default', true, [], [])]}
  return {version: 1, timeout: DEFAULTS.timeout, source: null, systems: systems as OpsctlConfig['systems']}
}

// ---------------------------------------------------------------------------------------------
// Checking a parsed document.

const TARGET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
const SECRETISH = /(^|_)(password|passwd|pass|pwd|token|secret|secrets|key|apikey|credential|credentials)$/i
const INVALID = Symbol('invalid')
type Checked<T> = T | typeof INVALID

const URL_SCHEMES: Record<'http-url' | 'postgres-url' | 'redis-url', string[]> = {
  'http-url': ['http', 'https'],
  'postgres-url': ['postgres', 'postgresql'],
  'redis-url': ['redis', 'rediss'],
}

interface Entry {
  key: string
  /** The key's node, where "unknown key" problems point. */
  keyNode: unknown
  /** The value's node as written (an alias stays an alias), where value problems point. */
  at: unknown
  /** The value's node with aliases resolved; null for a missing value. */
  value: unknown
}

/**
 * Check a parsed YAML document (syntax errors already reported by the caller) and build the
 * effective configuration. Throws ConfigError listing every problem found.
 */
export function checkDocument(y: YamlLib, doc: Document, lc: LineCounter, file: string): OpsctlConfig {
  const checker = new Checker(y, doc, lc)
  const config = checker.root(doc.contents, file)
  if (checker.problems.length > 0 || config === INVALID) throw new ConfigError(inFileOrder(checker.problems), file)
  return config
}

/** Problems sorted by place (the check visits a system's targets after its other keys). */
function inFileOrder(problems: ConfigProblem[]): ConfigProblem[] {
  const place = (p: ConfigProblem): number => (p.line ?? 0) * 1e6 + (p.col ?? 0)
  return [...problems].sort((a, b) => place(a) - place(b))
}

class Checker {
  readonly problems: ConfigProblem[] = []

  constructor(
    private readonly y: YamlLib,
    private readonly doc: Document,
    private readonly lc: LineCounter,
  ) {}

  root(node: unknown, file: string): Checked<OpsctlConfig> {
    const config = defaultConfig()
    config.source = file
    const root = this.deref(node)
    if (this.isNull(root)) return config // empty file: all defaults
    if (!this.y.isMap(root)) {
      this.report('', `the file must be a mapping of keys (version, timeout, systems), got ${this.describe(root)}`, node)
      return INVALID
    }
    for (const e of this.entries(root, '')) {
      switch (e.key) {
        case 'version': {
          const v = e.value
          if (!(this.y.isScalar(v) && v.value === 1)) {
            this.report('version', `this opsctl reads configuration version 1, got ${this.describe(v)}; write version: 1`, e.at)
          }
          break
        }
        case 'timeout': {
          const ms = this.leaf('wait', e, 'timeout', DEFAULTS.timeout)
          if (typeof ms === 'number') config.timeout = ms
          break
        }
        case 'systems':
          this.systems(e, config)
          break
        default:
          this.unknownKey(e, '', Object.keys(TOP_LEVEL_DOCS))
      }
    }
    return config
  }

  private systems(e: Entry, config: OpsctlConfig): void {
    if (this.isNull(e.value)) return
    if (!this.y.isMap(e.value)) {
      this.report('systems', `expected a mapping of systems (${SYSTEM_NAMES.join(', ')}), got ${this.describe(e.value)}`, e.at)
      return
    }
    for (const se of this.entries(e.value, 'systems')) {
      const system = SYSTEM_NAMES.find((s) => s === se.key)
      if (system === undefined) {
        this.unknownKey(se, 'systems', [...SYSTEM_NAMES])
        continue
      }
      const checked = this.system(system, se, `systems.${system}`)
      if (checked !== INVALID) (config.systems as Record<SystemName, SystemConfig<unknown>>)[system] = checked
    }
  }

  private system<S extends SystemName>(system: S, e: Entry, path: string): Checked<SystemConfig<TargetBySystem[S]>> {
    if (this.isNull(e.value)) return {enabled: true, targets: [makeTarget(system, 'default', true, [], [])]}
    if (!this.y.isMap(e.value)) {
      this.report(path, `expected a mapping of ${system}'s keys, got ${this.describe(e.value)}`, e.at)
      return INVALID
    }
    const fields = fieldsOf(system)
    let enabled = true
    const base: Settings = {}
    const baseExplicit: string[] = []
    let targetsEntry: Entry | undefined
    let ok = true
    for (const se of this.entries(e.value, path)) {
      const p = `${path}.${se.key}`
      if (se.key === 'enabled') {
        const v = this.leaf('boolean', se, p, true)
        if (typeof v === 'boolean') enabled = v
        else ok = false
      } else if (se.key === 'targets') {
        targetsEntry = se
      } else if (!this.setting(system, fields, se, path, base, baseExplicit)) {
        ok = false
      }
    }
    if (targetsEntry === undefined) {
      if (!ok) return INVALID
      const target = makeTarget(system, 'default', enabled, baseExplicit, [base])
      return this.consistent(system, target, path, e.at) ? {enabled, targets: [target]} : INVALID
    }
    const targets = this.targets(system, targetsEntry, `${path}.targets`, enabled, base, baseExplicit)
    return ok && targets !== INVALID ? {enabled, targets} : INVALID
  }

  private targets<S extends SystemName>(
    system: S,
    e: Entry,
    path: string,
    systemEnabled: boolean,
    base: Settings,
    baseExplicit: string[],
  ): Checked<TargetBySystem[S][]> {
    if (this.isNull(e.value) || (this.y.isSeq(e.value) && e.value.items.length === 0)) {
      this.report(path, 'no targets listed: list at least one (each with a name), or remove targets: to use one target', e.at)
      return INVALID
    }
    if (!this.y.isSeq(e.value)) {
      this.report(path, `expected a list of targets (lines starting with "- name: …"), got ${this.describe(e.value)}`, e.at)
      return INVALID
    }
    const fields = fieldsOf(system)
    const targets: TargetBySystem[S][] = []
    const seen = new Map<string, number>()
    let ok = true
    e.value.items.forEach((itemAt, i) => {
      const tp = `${path}[${i}]`
      const item = this.deref(itemAt)
      if (!this.y.isMap(item)) {
        this.report(tp, `expected a mapping with the target's name and the keys that differ for it, got ${this.describe(item)}`, itemAt)
        ok = false
        return
      }
      let name: string | undefined
      let enabled = true
      const own: Settings = {}
      const explicit = [...baseExplicit]
      let itemOk = true
      for (const te of this.entries(item, tp)) {
        const p = `${tp}.${te.key}`
        if (te.key === 'name') {
          const v = this.leaf('text', te, p, undefined)
          if (typeof v !== 'string') {
            itemOk = false
          } else if (!TARGET_NAME.test(v)) {
            this.report(p, `${show(v)} is not a valid target name: use letters, digits, ".", "_" and "-" (up to 64, starting with a letter or digit)`, te.at)
            itemOk = false
          } else if (seen.has(v)) {
            this.report(p, `duplicate target name ${show(v)} (also ${path}[${seen.get(v)}]); names must be unique within ${system}`, te.at)
            itemOk = false
          } else {
            seen.set(v, i)
            name = v
          }
        } else if (te.key === 'enabled') {
          const v = this.leaf('boolean', te, p, true)
          if (typeof v === 'boolean') enabled = v
          else itemOk = false
        } else if (te.key === 'targets') {
          this.report(p, `targets cannot be nested: list every target of ${system} in one targets: list`, te.keyNode)
          itemOk = false
        } else if (!this.setting(system, fields, te, tp, own, explicit)) {
          itemOk = false
        }
      }
      if (name === undefined && itemOk) {
        this.report(tp, 'this target has no name: give each target a unique name (e.g. name: eu-1)', itemAt)
        itemOk = false
      }
      if (!itemOk || name === undefined) {
        ok = false
        return
      }
      const target = makeTarget(system, name, systemEnabled && enabled, explicit, [base, own])
      if (this.consistent(system, target, tp, itemAt)) targets.push(target)
      else ok = false
    })
    return ok ? targets : INVALID
  }

  /** Rules between keys, checked on the merged target (its keys may come from two levels). */
  private consistent(system: SystemName, target: TargetBySystem[SystemName], path: string, at: unknown): boolean {
    if (system !== 'callfs') return true
    const {disk_warn: warn, disk_fail: fail} = (target as CallfsTarget).thresholds
    if (warn <= fail) return true
    this.report(`${path}.thresholds`, `disk_warn (${warn}) is above disk_fail (${fail}): the warning level must not be above the failure level`, at)
    return false
  }

  /** One key of a system or target: check it and record its value; false when it is wrong. */
  private setting(system: SystemName, fields: Record<string, Field>, e: Entry, path: string, into: Settings, explicit: string[]): boolean {
    const p = path === '' ? e.key : `${path}.${e.key}`
    const field = fields[e.key]
    const defaults = DEFAULTS.systems[system] as unknown as Settings
    if (field === undefined) {
      this.unknownKey(e, path, [...Object.keys(fields), 'enabled', 'targets', ...(path.includes('[') ? ['name'] : [])], system)
      return false
    }
    if (field.type !== 'section') {
      const v = this.leaf(field.type, e, p, defaults[e.key], fields)
      if (v === INVALID) return false
      into[e.key] = v
      explicit.push(e.key)
      return true
    }
    if (this.isNull(e.value)) return true // an empty section: its defaults
    if (!this.y.isMap(e.value)) {
      this.report(p, `expected a mapping (${Object.keys(field.fields).join(', ')}), got ${this.describe(e.value)}`, e.at)
      return false
    }
    const sectionDefaults = defaults[e.key] as Settings
    const section: Settings = {}
    let ok = true
    for (const se of this.entries(e.value, p)) {
      const sub = field.fields[se.key]
      if (sub === undefined) {
        this.unknownKey(se, p, Object.keys(field.fields))
        ok = false
        continue
      }
      const v = this.leaf(sub.type, se, `${p}.${se.key}`, sectionDefaults[se.key])
      if (v === INVALID) {
        ok = false
        continue
      }
      section[se.key] = v
      explicit.push(`${e.key}.${se.key}`)
    }
    if (ok) into[e.key] = {...((into[e.key] as Settings | undefined) ?? {}), ...section}
    return ok
  }

  /** A scalar value of the given type; reports and returns INVALID when it is not one. */
  private leaf(type: LeafType, e: Entry, path: string, fallback: unknown, siblings?: Record<string, Field>): Checked<unknown> {
    const node = e.value
    const nullable = type === 'nullable-text' || type === 'nullable-env'
    if (this.isNull(node)) {
      if (nullable) return null
      const usual = fallback === undefined ? '' : ` or remove the key to use the default (${showDefault(type, fallback)})`
      this.report(path, `has no value: give it ${expected(type)}${usual}`, e.keyNode)
      return INVALID
    }
    const secret = type === 'env' || type === 'nullable-env'
    const v = this.y.isScalar(node) ? node.value : undefined
    const typeError = (hint = ''): typeof INVALID => {
      this.report(path, `expected ${expected(type)}, got ${this.describe(node, secret)}${hint}`, e.at)
      return INVALID
    }
    switch (type) {
      case 'boolean':
        if (typeof v === 'boolean') return v
        return typeError(typeof v === 'string' && /^(yes|no|on|off|y|n)$/i.test(v) ? ' (write true or false)' : '')
      case 'count':
        if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v
        return typeError()
      case 'percent':
        if (typeof v === 'number' && v >= 0 && v <= 100) return v
        return typeError(typeof v === 'string' && /^\s*[\d.]+\s*%\s*$/.test(v) ? ` (write ${v.replace(/[\s%]/g, '')}, without %)` : '')
      case 'duration':
      case 'wait': {
        if (typeof v !== 'number' && typeof v !== 'string') return typeError()
        const ms = parseDuration(v)
        if (ms !== null && type === 'wait' && ms > MAX_WAIT_MS) {
          this.report(path, `${typeof v === 'number' ? String(v) : show(v)} is far too long to wait (at most 1h)`, e.at)
          return INVALID
        }
        if (ms !== null) return ms
        const raw = durationMs(v)
        const what = Number.isNaN(raw) ? 'a duration' : raw < 0.5 ? 'a duration greater than zero' : 'a duration opsctl can use (far too long)'
        this.report(path, `${typeof v === 'number' ? String(v) : show(v)} is not ${what} (${DURATION_HINT})`, e.at)
        return INVALID
      }
      case 'text':
      case 'nullable-text':
        if (typeof v !== 'string') return typeError(typeof v === 'number' || typeof v === 'boolean' ? ' (quote it)' : '')
        if (v.trim() === '') {
          this.report(path, `is empty: give it a value${fallback == null ? '' : ` or remove the key to use the default (${showDefault(type, fallback)})`}`, e.at)
          return INVALID
        }
        return v
      case 'env':
      case 'nullable-env':
        if (typeof v !== 'string') return typeError()
        if (!ENV_NAME.test(v) || looksLikeSecret(v)) {
          // Never echo the value: it may be the secret itself, written here by mistake.
          this.report(path, 'must be the name of an environment variable (like CALLFS_API_KEY), not the secret itself', e.at)
          return INVALID
        }
        return v
      case 'http-url':
      case 'postgres-url':
      case 'redis-url':
        if (typeof v !== 'string') return typeError()
        return this.url(type, v, e, path, fallback, siblings)
    }
  }

  private url(type: 'http-url' | 'postgres-url' | 'redis-url', text: string, e: Entry, path: string, fallback: unknown, siblings?: Record<string, Field>): Checked<string> {
    const example = typeof fallback === 'string' ? ` (e.g. ${fallback})` : ''
    const schemes = URL_SCHEMES[type]
    let url: URL
    try {
      url = new URL(text)
    } catch {
      this.report(path, `${show(text)} is not a URL${example}`, e.at)
      return INVALID
    }
    const scheme = url.protocol.replace(/:$/, '')
    if (!schemes.includes(scheme)) {
      this.report(path, `${show(text)} has scheme ${scheme}; expected ${schemes.join(' or ')}${example}`, e.at)
      return INVALID
    }
    if (urlHasPassword(url)) {
      const envKey = `${e.key}_password_env`
      const where = siblings?.[envKey] !== undefined
        ? `put the password in the environment variable named by ${envKey}`
        : 'keep credentials in environment variables (keys ending in _env name them)'
      this.report(path, `the URL holds a password; secrets are never written in the file: remove it from the URL and ${where}`, e.at)
      return INVALID
    }
    if (type === 'http-url' && url.hostname === '') {
      this.report(path, `${show(text)} has no host${example}`, e.at)
      return INVALID
    }
    if (type === 'redis-url' && !/^\/?\d*$/.test(url.pathname)) {
      this.report(path, `${show(text)}: the database after the last / must be a number${example}`, e.at)
      return INVALID
    }
    return text
  }

  private unknownKey(e: Entry, path: string, known: string[], system?: SystemName): void {
    const p = path === '' ? e.key : `${path}.${e.key}`
    this.report(p, unknownKeyMessage(e.key, known, system), e.keyNode)
  }

  /** The pairs of a mapping whose keys are names; other keys are reported. */
  private entries(map: unknown, path: string): Entry[] {
    if (!this.y.isMap(map)) return []
    const out: Entry[] = []
    for (const pair of map.items) {
      const key = this.deref(pair.key)
      if (!(this.y.isScalar(key) && typeof key.value === 'string' && key.value !== '')) {
        this.report(path, `keys must be names, got ${this.describe(key)}`, pair.key ?? pair.value)
        continue
      }
      out.push({key: key.value, keyNode: pair.key, at: pair.value ?? pair.key, value: this.deref(pair.value)})
    }
    return out
  }

  private deref(node: unknown): unknown {
    return this.y.isAlias(node) ? (node.resolve(this.doc) ?? null) : (node ?? null)
  }

  private isNull(node: unknown): boolean {
    return node === null || node === undefined || (this.y.isScalar(node) && node.value === null)
  }

  private describe(node: unknown, secret = false): string {
    if (this.isNull(node)) return 'nothing (null)'
    if (this.y.isMap(node)) return 'a mapping'
    if (this.y.isSeq(node)) return 'a list'
    if (!this.y.isScalar(node)) return 'something else'
    const v = node.value
    if (typeof v === 'boolean') return secret ? 'true or false' : String(v)
    if (typeof v === 'number') return secret ? 'a number' : `the number ${node.source ?? String(v)}`
    if (typeof v === 'string') return secret ? 'a string' : show(v)
    return 'something else'
  }

  private report(path: string, message: string, at: unknown): void {
    let line: number | null = null
    let col: number | null = null
    const node = this.y.isPair(at) ? at.key : at
    if (this.y.isNode(node) && node.range) {
      const pos = this.lc.linePos(node.range[0])
      line = Math.max(pos.line, 1)
      col = pos.col
    }
    this.problems.push({path, message, line, col})
  }
}

function expected(type: LeafType): string {
  switch (type) {
    case 'boolean':
      return 'true or false'
    case 'count':
      return 'a whole number (0 or more)'
    case 'percent':
      return 'a percentage from 0 to 100'
    case 'duration':
    case 'wait':
      return `a duration (${DURATION_HINT})`
    case 'text':
      return 'a string'
    case 'nullable-text':
      return 'a string or null'
    case 'env':
      return 'the name of an environment variable'
    case 'nullable-env':
      return 'the name of an environment variable or null'
    case 'http-url':
      return 'an http(s) URL'
    case 'postgres-url':
      return 'a postgres:// URL'
    case 'redis-url':
      return 'a redis:// URL'
  }
}

function showDefault(type: LeafType, value: unknown): string {
  if ((type === 'duration' || type === 'wait') && typeof value === 'number') return formatDuration(value)
  return typeof value === 'string' ? JSON.stringify(value) : String(value)
}

/** A value quoted for a message: passwords in URLs masked, long values cut. */
export function show(value: string): string {
  const masked = maskUrlPasswords(value)
  return JSON.stringify(masked.length > 80 ? `${masked.slice(0, 77)}...` : masked)
}

// ---------------------------------------------------------------------------------------------
// Unknown keys: the near miss, the secret written in the file, the key that lives elsewhere.

function unknownKeyMessage(key: string, known: string[], system?: SystemName): string {
  if (key === '<<') {
    return 'YAML merge keys (<<) are not supported: put keys shared by every target at the system level; each target inherits them'
  }
  if (SECRETISH.test(key) && !key.endsWith('_env')) {
    const stem = key.toLowerCase()
    const words = new Set(stem.split(/[_-]/).map((w) => (/^(passwd|pass|pwd)$/.test(w) ? 'password' : w === 'apikey' ? 'key' : w)))
    const exact = known.find((k) => k === `${stem}_env`)
    const related = exact ? [exact] : known.filter((k) => k.endsWith('_env') && k.split('_').some((w) => words.has(w)))
    const fix = related.length > 0
      ? `put it in an environment variable and set ${related.join(' or ')} to that variable's name`
      : 'keep it in an environment variable (keys ending in _env name the variable)'
    return `unknown key; secrets are never written in the file: ${fix}`
  }
  const near = closest(key, known)
  if (near !== undefined) return `unknown key; did you mean "${near}"?`
  if (system !== undefined) {
    if (key in TOP_LEVEL_DOCS) return `unknown key; ${key} is set at the top level only, for every system`
    const owner = SYSTEM_NAMES.find((s) => s !== system && key in SYSTEMS[s].fields)
    if (owner !== undefined) return `unknown key for ${system} (${key} is a ${owner} key); known here: ${known.join(', ')}`
  }
  return `unknown key; known here: ${known.join(', ')}`
}

/** The known key nearest to a misspelt one, if it is near enough to be what was meant. */
export function closest(key: string, known: string[]): string | undefined {
  const norm = (s: string): string => s.toLowerCase().replace(/-/g, '_')
  const k = norm(key)
  const limit = k.length <= 4 ? 1 : 2
  let best: string | undefined
  let bestDistance = Infinity
  for (const candidate of known) {
    const d = editDistance(k, norm(candidate))
    if (d <= limit && d < bestDistance) {
      best = candidate
      bestDistance = d
    }
  }
  return best
}

/** Optimal-string-alignment distance: insertions, deletions, substitutions, adjacent swaps. */
function editDistance(a: string, b: string): number {
  const rows: number[][] = []
  for (let i = 0; i <= a.length; i++) rows.push(Array.from({length: b.length + 1}, (_, j) => (i === 0 ? j : j === 0 ? i : 0)))
  const at = (i: number, j: number): number => rows[i]?.[j] ?? Infinity
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let d = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, at(i - 2, j - 2) + 1)
      const row = rows[i]
      if (row) row[j] = d
    }
  }
  return at(a.length, b.length)
}
