import type {CheckSpec, Finding} from '../../engine/types.js'
import {getPath, type CallfsConfigFile, type CallfsContext} from './context.js'

const GUIDE_INVALID = "Service Won't Start > Common Causes and Solutions > Invalid Configuration"

/** The file could not be looked at: the finding that says so (skipped, unknown or fail). */
function unavailable(cfg: Exclude<CallfsConfigFile, {state: 'parsed'}>): Finding {
  switch (cfg.state) {
    case 'absent':
      return cfg.explicit
        ? {status: 'fail', summary: `CallFS config ${cfg.path} does not exist`, evidence: {file: cfg.path}, fix: {
            id: 'callfs.config.fix',
            title: 'Point opsctl at the real CallFS configuration',
            plan: [`create ${cfg.path}, or set systems.callfs.config_file to the file CallFS is started with`],
            commands: ['systemctl cat callfs | grep -- --config'],
          }}
        : {status: 'skipped', summary: `no CallFS config at ${cfg.path} (set systems.callfs.config_file to check one)`}
    case 'unreadable':
      return {status: 'unknown', summary: `cannot read ${cfg.path}: ${cfg.reason}`, evidence: {file: cfg.path}}
    case 'invalid': {
      const at = cfg.position ? `${cfg.path}:${cfg.position.line}:${cfg.position.col}` : cfg.path
      return {
        status: 'fail',
        summary: `${at}: ${cfg.message}`,
        evidence: {file: cfg.path, line: cfg.position?.line ?? null, col: cfg.position?.col ?? null},
        fix: {
          id: 'callfs.config.fix',
          title: 'Correct the YAML of the CallFS configuration',
          plan: [`fix the syntax at ${at}`],
          commands: [`yamllint ${cfg.path}`, `callfs config validate --config ${cfg.path}`],
        },
      }
    }
  }
}

interface Problem {
  path: Array<string | number>
  message: string
}

function where(cfg: Extract<CallfsConfigFile, {state: 'parsed'}>, path: Array<string | number>): string {
  const pos = cfg.positionOf(path)
  const dotted = path.map((p) => (typeof p === 'number' ? `[${p}]` : p)).join('.').replace(/\.\[/g, '[')
  return pos ? `${dotted} (line ${pos.line})` : dotted
}

const MIN_KEY_LENGTH = 16

/** API keys CallFS takes from its environment instead of the file (koanf: CALLFS_ + "__" → "."; lists split at commas). */
const ENV_KEYS = 'CALLFS_AUTH__API_KEYS'

interface EnvKeys {
  keys: string[]
  pid: number
}

/** What CallFS itself refuses at start-up, read from the file (and its environment's API keys, when they replace the file's). */
function configProblems(value: Record<string, unknown>, envKeys: EnvKeys | null): Problem[] {
  const problems: Problem[] = []
  const keys = getPath(value, ['auth', 'api_keys'])
  const users = getPath(value, ['auth', 'api_key_users'])
  const hasUsers = users !== undefined && users !== null && typeof users === 'object' && Object.keys(users as object).length > 0
  if (envKeys) {
    // The environment's keys replace the file's: those are the ones CallFS checks. Named by
    // position and length only, never by value.
    envKeys.keys.forEach((k, i) => {
      if (k.length < MIN_KEY_LENGTH) problems.push({path: [ENV_KEYS, i], message: `is ${k.length} characters (CallFS's environment, pid ${envKeys.pid}); CallFS requires at least ${MIN_KEY_LENGTH}`})
    })
  } else if (keys !== undefined && keys !== null && !Array.isArray(keys)) {
    problems.push({path: ['auth', 'api_keys'], message: 'must be a list of keys'})
  } else if ((!Array.isArray(keys) || keys.length === 0) && !hasUsers) {
    problems.push({path: ['auth', 'api_keys'], message: 'no API keys configured (auth.api_keys is empty): every request will be refused'})
  } else if (Array.isArray(keys)) {
    keys.forEach((k, i) => {
      if (typeof k !== 'string') problems.push({path: ['auth', 'api_keys', i], message: 'is not a string'})
      else if (k.length < MIN_KEY_LENGTH) problems.push({path: ['auth', 'api_keys', i], message: `is ${k.length} characters; CallFS requires at least ${MIN_KEY_LENGTH}`})
    })
  }
  const protocol = getPath(value, ['server', 'protocol'])
  if (protocol !== undefined && !(typeof protocol === 'string' && ['http', 'https', 'auto'].includes(protocol.toLowerCase()))) {
    problems.push({path: ['server', 'protocol'], message: `is ${JSON.stringify(protocol)}; use "https", "http" or "auto"`})
  }
  const listen = getPath(value, ['server', 'listen_addr'])
  if (listen !== undefined && (typeof listen !== 'string' || !/^(\[[0-9a-f:]+\]|[^:\s]*):\d{1,5}$/i.test(listen))) {
    problems.push({path: ['server', 'listen_addr'], message: `is ${JSON.stringify(listen)}; expected host:port or :port`})
  }
  // The store types of current CallFS (config/loader.go validateConfig); it lower-cases them.
  const storeType = getPath(value, ['metadata_store', 'type'])
  if (storeType !== undefined && !(typeof storeType === 'string' && ['postgres', 'sqlite', 'redis', 'raft'].includes(storeType.toLowerCase()))) {
    problems.push({path: ['metadata_store', 'type'], message: `is ${JSON.stringify(storeType)}; expected postgres, sqlite, redis or raft`})
  }
  const dlmType = getPath(value, ['dlm', 'type'])
  if (dlmType !== undefined && !(typeof dlmType === 'string' && ['redis', 'local'].includes(dlmType.toLowerCase()))) {
    problems.push({path: ['dlm', 'type'], message: `is ${JSON.stringify(dlmType)}; expected redis or local`})
  }
  return problems
}

export const configInvalid: CheckSpec<CallfsContext> = {
  id: 'callfs.config.invalid',
  title: 'CallFS configuration is valid',
  severity: 'high',
  docs: GUIDE_INVALID,
  remediations: [{id: 'callfs.config.fix', title: 'Correct the CallFS configuration', automated: false}],
  async run(ctx) {
    const cfg = await ctx.callfsConfig()
    if (cfg.state !== 'parsed') return unavailable(cfg)
    const procEnv = await ctx.processEnv()
    const fromEnv = 'env' in procEnv ? procEnv.env[ENV_KEYS] : undefined
    const envKeys: EnvKeys | null =
      'env' in procEnv && fromEnv !== undefined && fromEnv.trim() !== ''
        ? {keys: fromEnv.split(',').map((k) => k.trim()).filter(Boolean), pid: procEnv.pid}
        : null
    const problems = configProblems(cfg.value, envKeys)
    const keys = getPath(cfg.value, ['auth', 'api_keys'])
    const evidence: Record<string, unknown> = {file: cfg.path, apiKeys: envKeys ? envKeys.keys.length : Array.isArray(keys) ? keys.length : 0}
    if (envKeys) evidence.apiKeysFrom = `${ENV_KEYS} in the environment of pid ${envKeys.pid}`
    if (problems.length === 0) {
      const where = envKeys ? ` from ${ENV_KEYS} (CallFS's environment, pid ${envKeys.pid})` : ''
      return {status: 'ok', summary: `${cfg.path} parses; ${evidence.apiKeys} API key(s)${where}, each at least ${MIN_KEY_LENGTH} characters`, evidence}
    }
    const lines = problems.map((p) => `${where(cfg, p.path)}: ${p.message}`)
    evidence.problems = lines
    return {
      status: 'fail',
      summary: `${cfg.path}: ${lines[0]}${lines.length > 1 ? ` (and ${lines.length - 1} more)` : ''}`,
      evidence,
      fix: {
        id: 'callfs.config.fix',
        title: 'Correct the CallFS configuration',
        plan: lines.map((l) => `fix ${l}`),
        commands: [`callfs config validate --config ${cfg.path}`, `openssl rand -hex 24   # a new API key of 48 characters`],
      },
    }
  },
}

const DEFAULT_SECRET_KEYS = ['internal_proxy_secret', 'single_use_link_secret'] as const

export const configDefaultSecrets: CheckSpec<CallfsContext> = {
  id: 'callfs.config.default-secrets',
  title: 'CallFS does not run with its built-in secrets',
  severity: 'high',
  docs: 'Service Won\'t Start > Invalid Configuration (real system defaults: auth.internal_proxy_secret, auth.single_use_link_secret)',
  remediations: [{id: 'callfs.config.replace-default-secrets', title: 'Replace the default secrets', automated: false}],
  async run(ctx) {
    const cfg = await ctx.callfsConfig()
    if (cfg.state !== 'parsed') return {status: 'skipped', summary: 'the CallFS configuration could not be read (see callfs.config.invalid)'}
    const procEnv = await ctx.processEnv()
    const env = 'env' in procEnv ? procEnv.env : null
    const bad: string[] = []
    const undecided: string[] = []
    for (const key of DEFAULT_SECRET_KEYS) {
      const envName = `CALLFS_AUTH__${key.toUpperCase()}`
      const overridden = env && env[envName] ? !env[envName].startsWith('change-me') : false
      if (overridden) continue
      const value = getPath(cfg.value, ['auth', key])
      if (value === undefined || value === null || value === '') {
        // Not in the file: CallFS may well get it from its environment, which could not be read.
        if (env) bad.push(`auth.${key} is not set, so CallFS uses its built-in change-me default`)
        else undecided.push(`auth.${key} is not in the file and CallFS's environment could not be read (${'reason' in procEnv ? procEnv.reason : ''}): it may come from ${envName}`)
      } else if (typeof value === 'string' && value.startsWith('change-me')) bad.push(`auth.${key} is still the shipped change-me value${cfg.positionOf(['auth', key]) ? ` (line ${cfg.positionOf(['auth', key])?.line})` : ''}`)
    }
    const evidence: Record<string, unknown> = {file: cfg.path, processEnvironment: 'env' in procEnv ? `read from pid ${procEnv.pid}` : procEnv.reason}
    if (bad.length === 0 && undecided.length === 0) return {status: 'ok', summary: 'internal_proxy_secret and single_use_link_secret are set to non-default values', evidence}
    if (bad.length === 0) {
      evidence.undecided = undecided
      return {status: 'unknown', summary: undecided.join('; '), evidence}
    }
    evidence.problems = bad
    if (undecided.length > 0) evidence.undecided = undecided
    return {
      status: 'fail',
      summary: bad.join('; '),
      evidence,
      fix: {
        id: 'callfs.config.replace-default-secrets',
        title: 'Replace the default secrets',
        plan: [
          ...bad.map((b) => `replace: ${b}`),
          'anyone who knows the public default can forge internal-proxy requests and single-use links',
          'put the new values in the file, or in CALLFS_AUTH__INTERNAL_PROXY_SECRET / CALLFS_AUTH__SINGLE_USE_LINK_SECRET, then restart CallFS',
        ],
        commands: ['openssl rand -hex 32', `sudo systemctl restart ${ctx.target.unit}`],
      },
    }
  },
}
