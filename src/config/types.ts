// The effective configuration (SPEC.md "Configuration"). Durations are milliseconds here;
// in the file they are strings like "5s", "250ms", "2m", "1h".

export interface TlsOptions {
  insecure: boolean
  ca_file: string | null
}

interface TargetBase {
  /** "default" for a system without `targets:`. */
  name: string
  enabled: boolean
  /** Keys of this target the file set (at system or target level), e.g. "config_file", "tls.ca_file". */
  explicit: ReadonlySet<string>
}

export interface HookshotTarget extends TargetBase {
  url: string
  config_file: string
  services_file: string
  secrets_file: string
  hmac_key_env: string
  data_dir: string
  backup_dir: string
  unit: string
}

export interface HotswapTarget extends TargetBase {
  url: string
  token_env: string
  postgres: string
  postgres_password_env: string | null
  kubernetes: {context: string | null; namespace: string; selector: string; deployment: string}
  prometheus_url: string
  vault_addr: string
  vault_token_env: string
}

export interface CallfsThresholds {
  /** A query or transaction running longer than this is reported (callfs.db.long-queries). */
  long_query: number
  /** Idle connections older than this are candidates to terminate (callfs.db.connections). */
  idle_connection: number
  /** Live lock count above which callfs.redis.lock-pressure warns. */
  live_locks: number
  /** Pause between the two metric scrapes of callfs.errors.rate / callfs.latency.p95. */
  metrics_window: number
  /** Certificate expiry warning horizon. */
  cert_expiry_warn: number
  /** Filesystem usage of data_dir, percent: warn and fail levels (callfs.disk.space). */
  disk_warn: number
  disk_fail: number
}

export interface CallfsTarget extends TargetBase {
  url: string
  metrics_url: string
  api_key_env: string
  tls: TlsOptions
  config_file: string
  postgres: string
  postgres_password_env: string | null
  redis: string
  redis_password_env: string | null
  lock_prefix: string
  lock_timeout: number
  data_dir: string
  unit: string
  /** The user CallFS runs as; null: the unit's User=, else "callfs". */
  service_user: string | null
  thresholds: CallfsThresholds
}

export interface ToombosTarget extends TargetBase {
  url: string
  crm_url: string
  platform_url: string
  grafana_url: string
  prometheus_url: string
  project_dir: string
  api_key_env: string
}

export interface TargetBySystem {
  hookshot: HookshotTarget
  hotswap: HotswapTarget
  callfs: CallfsTarget
  toombos: ToombosTarget
}

export interface SystemConfig<T> {
  enabled: boolean
  /** One entry per target; a system without `targets:` has one, named "default". */
  targets: T[]
}

export interface OpsctlConfig {
  version: 1
  /** Per-probe time-out, ms. */
  timeout: number
  /** Where the configuration came from; null when no file was found (all defaults). */
  source: string | null
  systems: {[S in keyof TargetBySystem]: SystemConfig<TargetBySystem[S]>}
}
