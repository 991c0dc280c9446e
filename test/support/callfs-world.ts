// A CallFS world on loopback for the runbook tests: a throwaway PostgreSQL with the CallFS
// schema, a throwaway Redis, the CallFS simulator over real TLS, a CallFS config.yaml and data
// directory in a scratch dir — and the opsctl target that points at all of it. Each piece is
// optional so a test starts only what it breaks.
//
//   const w = await startCallfsWorld({pg: true, redis: true, sim: {}})
//   afterAll(() => w.stop())
//   const r = await w.check('callfs.redis.orphaned-locks')

import {spawn} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {setMaxListeners} from 'node:events'
import {mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {join, resolve} from 'node:path'

import {parseConfigText} from '../../src/config/load.js'
import type {CallfsTarget} from '../../src/config/types.js'
import {AuditLog} from '../../src/engine/audit.js'
import type {RunSettings} from '../../src/engine/context.js'
import {remediate} from '../../src/engine/remediate.js'
import {runSingleCheck, walkTarget, type TargetRun} from '../../src/engine/runner.js'
import type {CheckReport, Fix} from '../../src/engine/types.js'
import {issueCert, makeCertDir, type PemPair} from '../../src/lab/certs.js'
import {startCallfsSim, type CallfsSim, type CallfsSimOptions} from '../../src/lab/callfs.js'
import {callfsRunbook} from '../../src/runbooks/callfs/index.js'
import {startPostgres, type StartPostgresOptions, type TestPostgres} from './postgres.js'
import {testRoot} from './ports.js'
import {startRedis, type StartRedisOptions, type TestRedis} from './redis.js'

export const API_KEY = 'opsctl-test-key-0123456789abcdef'
export const REPO = resolve(import.meta.dirname, '../..')

/** The CallFS schema as its golang-migrate migrations 001–003 leave it. */
export const CALLFS_SCHEMA = `
CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
CREATE TABLE inodes (
  id bigserial PRIMARY KEY, parent_id bigint, name text NOT NULL, path text NOT NULL UNIQUE, type text NOT NULL,
  size bigint NOT NULL DEFAULT 0, mode text NOT NULL DEFAULT '0644', owner text NOT NULL DEFAULT 'root',
  atime timestamptz NOT NULL DEFAULT now(), mtime timestamptz NOT NULL DEFAULT now(), ctime timestamptz NOT NULL DEFAULT now(),
  backend_type text NOT NULL DEFAULT 'localfs', callfs_instance_id text, symlink_target text,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE single_use_links (
  token text PRIMARY KEY, file_path text NOT NULL, status text NOT NULL DEFAULT 'active', expires_at timestamptz NOT NULL,
  used_at timestamptz, used_by_ip text, hmac_signature text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO schema_migrations (version, dirty) VALUES (3, false);
`

export interface WorldOptions {
  pg?: boolean | StartPostgresOptions
  redis?: boolean | StartRedisOptions
  /** Simulator options (apiKeys default [API_KEY]); false: no CallFS at all. */
  sim?: false | Partial<CallfsSimOptions>
  /** Certificate the simulator serves; default a valid self-signed one, trusted through ca_file. */
  cert?: {notBefore?: Date; notAfter?: Date; san?: string[]; cn?: string}
  /** Contents of CallFS's own config.yaml; default a valid one. null: no file. */
  callfsConfig?: string | null
}

/** One line of the audit log, as a test reads it. */
export interface AuditLine {
  time: string
  user: string
  host: string
  opsctlVersion: string
  system: string
  target: string
  check: string
  remediation: string
  plan: string[]
  decision: string
  result: {ok: boolean; detail: string} | null
  verified: boolean
}

export async function readAudit(path: string): Promise<AuditLine[]> {
  const text = await readFile(path, 'utf8').catch(() => '')
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditLine)
}

export interface CallfsWorld {
  dir: string
  pg: TestPostgres | null
  redis: TestRedis | null
  sim: CallfsSim | null
  cert: PemPair
  dataDir: string
  configFile: string
  /** The opsctl configuration of this world (as a config file would say it), merged with overrides. */
  config(overrides?: Record<string, unknown>): Record<string, unknown>
  target(overrides?: Record<string, unknown>): CallfsTarget
  env: Record<string, string>
  settings(over?: Partial<RunSettings>): RunSettings
  check(id: string, overrides?: Record<string, unknown>, settings?: Partial<RunSettings>): Promise<CheckReport & {fix?: Fix}>
  walk(overrides?: Record<string, unknown>, settings?: Partial<RunSettings>): Promise<TargetRun>
  /** Apply every automated fix of `run` as `--yes` does, into a fresh audit log; its lines. */
  applyYes(run: TargetRun, timeoutMs?: number): Promise<AuditLine[]>
  /** Write an opsctl.yaml for CLI runs; returns its path. */
  writeOpsctlConfig(overrides?: Record<string, unknown>): Promise<string>
  stop(): Promise<void>
}

export function validCallfsConfig(w: {dataDir: string; certFile: string; keyFile: string; dsn: string; redisAddr: string}): string {
  return [
    'server:',
    '  listen_addr: ":8443"',
    '  protocol: https',
    `  cert_file: ${w.certFile}`,
    `  key_file: ${w.keyFile}`,
    'auth:',
    '  api_keys:',
    `    - "${API_KEY}"`,
    `  internal_proxy_secret: "${randomBytes(16).toString('hex')}"`,
    `  single_use_link_secret: "${randomBytes(16).toString('hex')}"`,
    'metadata_store:',
    '  type: postgres',
    `  dsn: "${w.dsn}"`,
    'dlm:',
    '  type: redis',
    `  redis_addr: "${w.redisAddr}"`,
    'backend:',
    `  localfs_root_path: ${w.dataDir}`,
    'metrics:',
    '  listen_addr: ":9090"',
    '',
  ].join('\n')
}

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {...base}
  for (const [k, v] of Object.entries(over)) {
    const b = out[k]
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b) ? deepMerge(b as Record<string, unknown>, v as Record<string, unknown>) : v
  }
  return out
}

/** The simulator authenticates like CallFS does (dlm.redis_password): the password in its URL. */
function redisUrlWithPassword(redis: TestRedis): string {
  return redis.password ? `redis://:${encodeURIComponent(redis.password)}@127.0.0.1:${redis.port}/0` : redis.url
}

export async function startCallfsWorld(o: WorldOptions = {}): Promise<CallfsWorld> {
  const root = await testRoot()
  const dir = await mkdtemp(join(root.dir, 'callfs-world-'))
  const certDir = await makeCertDir()
  const cert = await issueCert(certDir, {name: 'server', ...o.cert})
  const dataDir = join(dir, 'data')
  await mkdir(dataDir, {recursive: true})

  const pg = o.pg ? await startPostgres(o.pg === true ? {} : o.pg) : null
  if (pg) {
    await pg.createRole('callfs')
    await pg.createDatabase('callfs', 'callfs')
    for (const stmt of CALLFS_SCHEMA.split(';').map((s) => s.trim()).filter(Boolean)) await pg.query(stmt, [], 'callfs')
    await pg.query('ALTER TABLE schema_migrations OWNER TO callfs; ALTER TABLE inodes OWNER TO callfs; ALTER TABLE single_use_links OWNER TO callfs', [], 'callfs')
  }
  const redis = o.redis ? await startRedis(o.redis === true ? {} : o.redis) : null
  const sim = o.sim === false || o.sim === undefined
    ? null
    : await startCallfsSim({apiKeys: [API_KEY], tls: {cert: cert.cert, key: cert.key}, redisUrl: redis ? redisUrlWithPassword(redis) : null, ...o.sim})

  const configFile = join(dir, 'config.yaml')
  const callfsConfig =
    o.callfsConfig === undefined
      ? validCallfsConfig({dataDir, certFile: cert.certFile, keyFile: cert.keyFile, dsn: pg ? pg.dsn('callfs', 'callfs') : 'postgres://callfs@127.0.0.1:1/callfs', redisAddr: redis ? `127.0.0.1:${redis.port}` : '127.0.0.1:1'})
      : o.callfsConfig
  if (callfsConfig !== null) await writeFile(configFile, callfsConfig)

  const closed = 'http://127.0.0.1:1'
  const base: Record<string, unknown> = {
    url: sim ? sim.url.replace('127.0.0.1', 'localhost') : 'https://localhost:1',
    metrics_url: sim?.metricsUrl ?? `${closed}/metrics`,
    api_key_env: 'CALLFS_API_KEY',
    tls: {insecure: false, ca_file: cert.certFile},
    config_file: configFile,
    postgres: pg ? pg.dsn('callfs', 'callfs') : 'postgres://callfs@127.0.0.1:1/callfs',
    redis: redis ? redis.url : 'redis://127.0.0.1:1/0',
    data_dir: dataDir,
    service_user: 'root',
    thresholds: {metrics_window: '300ms'},
  }
  const env: Record<string, string> = {CALLFS_API_KEY: API_KEY, PATH: process.env.PATH ?? '/usr/bin:/bin'}
  if (redis?.password) env.CALLFS_REDIS_PASSWORD = redis.password

  const world: CallfsWorld = {
    dir,
    pg,
    redis,
    sim,
    cert,
    dataDir,
    configFile,
    env,
    config: (overrides = {}) => deepMerge(base, overrides),
    target(overrides = {}) {
      const text = JSON.stringify({version: 1, systems: {callfs: world.config(overrides)}})
      const parsed = parseConfigText(text, join(dir, 'opsctl.yaml'))
      return parsed.systems.callfs.targets[0] as CallfsTarget
    },
    settings(over = {}) {
      const signal = new AbortController().signal
      setMaxListeners(0, signal)
      return {timeoutMs: 2000, signal, verbose: false, writeProbes: false, env: world.env, ...over}
    },
    async check(id, overrides = {}, settings = {}) {
      const {report, fix} = await runSingleCheck(callfsRunbook, id, world.target(overrides), world.settings(settings))
      return fix ? {...report, fix} : report
    },
    walk: (overrides = {}, settings = {}) => walkTarget(callfsRunbook, world.target(overrides), world.settings(settings)),
    async applyYes(run, timeoutMs = 2000) {
      const path = join(dir, `audit-${randomBytes(4).toString('hex')}.jsonl`)
      await remediate([run], {kind: 'yes'}, new AuditLog(path, '0.1.0'), timeoutMs)
      return readAudit(path)
    },
    async writeOpsctlConfig(overrides = {}) {
      const path = join(dir, `opsctl-${randomBytes(4).toString('hex')}.yaml`)
      await writeFile(path, JSON.stringify({version: 1, timeout: '2s', systems: {callfs: world.config(overrides)}}, null, 2))
      return path
    },
    async stop() {
      await Promise.allSettled([sim?.stop(), pg?.stop(), redis?.stop()])
      await rm(dir, {recursive: true, force: true})
      await rm(certDir, {recursive: true, force: true})
    },
  }
  return world
}

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
  ms: number
}

/** Run the built CLI (bin/run.js over dist/) the way a user does, without a terminal. */
export function runCli(args: string[], o: {env?: Record<string, string>; timeoutMs?: number; cwd?: string} = {}): Promise<CliResult> {
  const started = Date.now()
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [join(REPO, 'bin', 'run.js'), ...args], {
      cwd: o.cwd ?? REPO,
      env: {HOME: process.env.HOME ?? '/root', PATH: process.env.PATH ?? '/usr/bin:/bin', NO_COLOR: '1', ...o.env},
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 30_000)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolvePromise({code, stdout, stderr, ms: Date.now() - started})
    })
  })
}
