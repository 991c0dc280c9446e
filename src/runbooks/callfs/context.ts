import {readlink} from 'node:fs/promises'
import {isAbsolute, resolve} from 'node:path'

import type {CallfsTarget} from '../../config/types.js'
import {CheckContext, type RunSettings} from '../../engine/context.js'
import {registerSecret} from '../../engine/redact.js'
import {lookupUser, type UserInfo} from '../../diagnostics/files.js'
import {httpRequest, type HttpRequest, type HttpResponse} from '../../diagnostics/http.js'
import {parseYaml, readTextFile, type Position} from '../../diagnostics/parsers.js'
import {withPostgres, type SqlRunner} from '../../diagnostics/postgres.js'
import {withRedis} from '../../diagnostics/redis.js'
import {findProcesses, processEnvironment, systemdUnitStatus, type ProcessInfo, type UnitStatus} from '../../diagnostics/system.js'
import {isLocalHost} from '../../diagnostics/tcp.js'
import type {ProbeOptions, ProbeResult} from '../../diagnostics/types.js'
import type {Redis} from 'ioredis'

/** CallFS's own config.yaml, as far as opsctl could read it. */
export type CallfsConfigFile =
  | {state: 'absent'; path: string; explicit: boolean}
  | {state: 'unreadable'; path: string; reason: string}
  | {state: 'invalid'; path: string; message: string; position: Position | null}
  | {state: 'parsed'; path: string; value: Record<string, unknown>; positionOf(path: Array<string | number>): Position | null}

export type Auth = 'none' | 'key'

export function getPath(value: unknown, path: string[]): unknown {
  let v: unknown = value
  for (const key of path) {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined
    v = (v as Record<string, unknown>)[key]
  }
  return v
}

/** A string value, or nothing. */
function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined
}

/** The password of a PostgreSQL DSN, URL form (postgres://u:p@h/db) or keyword form (password=p). */
function dsnPassword(dsn: string): string[] {
  const found: string[] = []
  try {
    const u = new URL(dsn)
    if (u.password) {
      found.push(u.password)
      try {
        found.push(decodeURIComponent(u.password))
      } catch {
        // not percent-encoded after all
      }
    }
  } catch {
    // not a URL: keyword/value
  }
  const kw = /\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)/i.exec(dsn)
  if (kw?.[1]) found.push(kw[1].startsWith("'") ? kw[1].slice(1, -1).replace(/\\(.)/g, '$1') : kw[1])
  return found
}

/**
 * Every secret CallFS's config.yaml holds, registered the moment it is parsed, so nothing opsctl
 * prints can carry one: the DSN password, Redis passwords, API keys, the internal secrets.
 */
export function registerCallfsConfigSecrets(value: Record<string, unknown>): void {
  const dsn = str(getPath(value, ['metadata_store', 'dsn']))
  if (dsn) for (const p of dsnPassword(dsn)) registerSecret(p)
  for (const path of [
    ['dlm', 'redis_password'],
    ['metadata_store', 'redis_password'],
    ['auth', 'internal_proxy_secret'],
    ['auth', 'single_use_link_secret'],
    ['backend', 's3_secret_key'],
  ]) {
    registerSecret(str(getPath(value, path)))
  }
  const keys = getPath(value, ['auth', 'api_keys'])
  if (Array.isArray(keys)) for (const k of keys) registerSecret(str(k))
}

// CALLFS_* variables of the running CallFS that hold secrets (the same settings as above); of a
// DSN only the password is one.
const SECRET_ENV = /^CALLFS_.*(KEYS?|SECRET|PASSWORD)$/

export class CallfsContext extends CheckContext<CallfsTarget> {
  get url(): URL {
    return new URL(this.target.url)
  }

  get apiKey(): string | undefined {
    return this.secret(this.target.api_key_env)
  }

  /** Is the CallFS server on this machine (so its process, port, files and disk are ours to look at)? */
  isLocal(): Promise<boolean> {
    return this.memo('local', () => isLocalHost(this.url.hostname))
  }

  /** One request to the CallFS API; with `auth: 'key'` the Bearer key from api_key_env. */
  request(path: string, o: {auth?: Auth; method?: string; body?: string | Buffer; headers?: Record<string, string>} = {}): Promise<ProbeResult<HttpResponse>> {
    const headers: Record<string, string> = {...o.headers}
    if (o.auth === 'key' && this.apiKey) headers.authorization = `Bearer ${this.apiKey}`
    const req: HttpRequest = {
      url: new URL(path, this.url).toString(),
      method: o.method ?? 'GET',
      headers,
      body: o.body,
      tls: {insecure: this.target.tls.insecure, caFile: this.target.tls.ca_file},
    }
    return httpRequest(req, this.probe())
  }

  health(): Promise<ProbeResult<HttpResponse>> {
    return this.memo('health', () => this.request('/health'))
  }

  callfsConfig(): Promise<CallfsConfigFile> {
    return this.memo('callfs-config', async (): Promise<CallfsConfigFile> => {
      const path = this.target.config_file
      const read = await readTextFile(path)
      if (!read.ok) {
        if (read.error.kind === 'not-found') return {state: 'absent', path, explicit: this.target.explicit.has('config_file')}
        return {state: 'unreadable', path, reason: read.error.message}
      }
      const parsed = await parseYaml(read.value)
      if (!parsed.ok) return {state: 'invalid', path, message: parsed.message, position: parsed.position}
      const value = parsed.value.value
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) registerCallfsConfigSecrets(value as Record<string, unknown>)
      if (value === null || value === undefined) return {state: 'parsed', path, value: {}, positionOf: () => null}
      if (typeof value !== 'object' || Array.isArray(value)) {
        return {state: 'invalid', path, message: 'the file is not a YAML mapping of settings', position: {line: 1, col: 1}}
      }
      return {state: 'parsed', path, value: value as Record<string, unknown>, positionOf: (p) => parsed.value.positionOf(p)}
    })
  }

  /**
   * A path from CallFS's config as CallFS opens it: a relative one against the working directory
   * of the running CallFS (Go opens cert_file/key_file relative to it), which is known only when
   * its process is — otherwise the reason why the path cannot be resolved.
   */
  async resolveCallfsPath(file: string): Promise<{path: string} | {unknown: string}> {
    if (isAbsolute(file)) return {path: file}
    const cwd = await this.callfsCwd()
    return cwd ? {path: resolve(cwd, file)} : {unknown: `${file}: relative path, CallFS's working directory unknown (no running CallFS process to read it from)`}
  }

  /** The working directory of the running CallFS (/proc/<pid>/cwd), if there is one and it is readable. */
  callfsCwd(): Promise<string | null> {
    return this.memo('cwd', async () => {
      const pid = await this.callfsPid()
      if (!pid) return null
      return readlink(`/proc/${pid}/cwd`).catch(() => null)
    })
  }

  /**
   * The user CallFS runs as: systems.callfs.service_user, else the User= of its (loaded) unit,
   * root when the unit sets none; null when neither is known or the user does not exist here.
   */
  /**
   * The user CallFS runs as: systems.callfs.service_user, else the unit's User= (root when the
   * unit sets none), else — a guess, said as such — a user named after the unit.
   */
  serviceUserName(): Promise<{name: string; guessed: boolean}> {
    return this.memo('service-user-name', async () => {
      if (this.target.service_user) return {name: this.target.service_user, guessed: false}
      const unit = await this.unit()
      if (unit.ok && unit.value.loadState === 'loaded') return {name: unit.value.user ?? 'root', guessed: false}
      return {name: this.target.unit, guessed: true}
    })
  }

  /** The service user when it is known (not guessed) and exists here. */
  serviceUser(): Promise<UserInfo | null> {
    return this.memo('service-user', async () => {
      const {name, guessed} = await this.serviceUserName()
      return guessed ? null : lookupUser(name)
    })
  }

  unit(): Promise<ProbeResult<UnitStatus>> {
    return this.memo('unit', () => systemdUnitStatus(this.target.unit, this.probe()))
  }

  /** Processes that look like CallFS: comm or argv[0] named after the unit. */
  processes(): Promise<ProcessInfo[]> {
    return this.memo('processes', async () => {
      const name = this.target.unit
      const byComm = await findProcesses({comm: name})
      if (byComm.length > 0) return byComm
      return (await findProcesses({cmdlineIncludes: name})).filter((p) => {
        const argv0 = p.cmdline.split(' ')[0] ?? ''
        return argv0 === name || argv0.endsWith(`/${name}`)
      })
    })
  }

  /** The pid CallFS runs as: the unit's MainPID, else a process named like it. */
  callfsPid(): Promise<number | null> {
    return this.memo('pid', async () => {
      const unit = await this.unit()
      if (unit.ok && unit.value.mainPid) return unit.value.mainPid
      const procs = await this.processes()
      return procs[0]?.pid ?? null
    })
  }

  /** The environment of the running CallFS process (for CALLFS_* overrides), if readable. */
  processEnv(): Promise<{env: Record<string, string>; pid: number} | {reason: string}> {
    return this.memo('process-env', async () => {
      const pid = await this.callfsPid()
      if (!pid) return {reason: 'no running CallFS process found'}
      const env = await processEnvironment(pid)
      if (!env.ok) return {reason: env.error.message}
      for (const [name, value] of Object.entries(env.value)) {
        if (/^CALLFS_.*DSN$/.test(name)) for (const p of dsnPassword(value)) registerSecret(p)
        if (!SECRET_ENV.test(name)) continue
        registerSecret(value)
        for (const k of value.split(',')) registerSecret(k.trim())
      }
      return {env: env.value, pid}
    })
  }

  postgresPassword(): string | undefined {
    return this.secret(this.target.postgres_password_env) ?? this.secret('PGPASSWORD')
  }

  /** One PostgreSQL session; a fix passes its own signal so the deadline of apply() stops it. */
  pg<T>(fn: (sql: SqlRunner) => Promise<T>, o: {signal?: AbortSignal} = {}): Promise<ProbeResult<T>> {
    return withPostgres({dsn: this.target.postgres, password: this.postgresPassword()}, this.probe(o.signal ? {signal: o.signal} : {}), fn)
  }

  redis<T>(fn: (r: Redis) => Promise<T>, o: {timeoutMs?: number; signal?: AbortSignal} = {}): Promise<ProbeResult<T>> {
    const password = this.secret(this.target.redis_password_env) ?? this.secret('REDISCLI_AUTH')
    const overrides: Partial<ProbeOptions> = {}
    if (o.timeoutMs) overrides.timeoutMs = o.timeoutMs
    if (o.signal) overrides.signal = o.signal
    return withRedis({url: this.target.redis, password}, this.probe(overrides), fn)
  }
}

export function createCallfsContext(target: CallfsTarget, settings: RunSettings): CallfsContext {
  return new CallfsContext('callfs', target, settings)
}
