import {dirname, isAbsolute, resolve} from 'node:path'

import type {CallfsTarget} from '../../config/types.js'
import {CheckContext, type RunSettings} from '../../engine/context.js'
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
      if (value === null || value === undefined) return {state: 'parsed', path, value: {}, positionOf: () => null}
      if (typeof value !== 'object' || Array.isArray(value)) {
        return {state: 'invalid', path, message: 'the file is not a YAML mapping of settings', position: {line: 1, col: 1}}
      }
      return {state: 'parsed', path, value: value as Record<string, unknown>, positionOf: (p) => parsed.value.positionOf(p)}
    })
  }

  /** A path from CallFS's config, resolved against the config file's directory as CallFS does. */
  resolveConfigPath(file: string, configPath: string): string {
    return isAbsolute(file) ? file : resolve(dirname(configPath), file)
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
      return env.ok ? {env: env.value, pid} : {reason: env.error.message}
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
