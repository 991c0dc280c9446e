// Every key's default (SPEC.md "Configuration", plus the keys opsctl adds), so opsctl runs with
// no file against the systems' documented local defaults. Durations in milliseconds.
import type {TargetBySystem} from './types.js'

export type SystemName = keyof TargetBySystem

/** A target's settings: everything but its identity and bookkeeping. */
export type TargetSettings<S extends SystemName> = Omit<TargetBySystem[S], 'name' | 'enabled' | 'explicit'>

export interface Defaults {
  timeout: number
  systems: {[S in SystemName]: TargetSettings<S>}
}

export const SYSTEM_NAMES: readonly SystemName[] = Object.freeze(['hookshot', 'hotswap', 'callfs', 'toombos'])

const SECOND = 1000
const MINUTE = 60 * SECOND
const DAY = 24 * 60 * MINUTE

/** Frozen (deeply): take a copy before changing anything. */
export const DEFAULTS: Defaults = deepFreeze({
  timeout: 5 * SECOND,
  systems: {
    hookshot: {
      url: 'http://127.0.0.1:8080',
      config_file: '/etc/hookshot/config.toml',
      services_file: '/etc/hookshot/services.toml',
      secrets_file: '/etc/hookshot/secrets',
      hmac_key_env: 'HOOKSHOT_HMAC_KEY',
      data_dir: '/var/lib/hookshot',
      backup_dir: '/var/backups/hookshot',
      unit: 'hookshot',
    },
    hotswap: {
      url: 'http://127.0.0.1:5000',
      token_env: 'HOTSWAP_TOKEN',
      postgres: 'postgres://hotswap@127.0.0.1:5432/hotswap',
      postgres_password_env: null,
      kubernetes: {context: null, namespace: 'default', selector: 'app=hotswap-api', deployment: 'hotswap-api'},
      prometheus_url: 'http://127.0.0.1:9090',
      vault_addr: 'http://127.0.0.1:8200',
      vault_token_env: 'VAULT_TOKEN',
    },
    callfs: {
      url: 'https://localhost:8443',
      metrics_url: 'http://127.0.0.1:9090/metrics',
      api_key_env: 'CALLFS_API_KEY',
      tls: {insecure: false, ca_file: null},
      config_file: '/etc/callfs/config.yaml',
      postgres: 'postgres://callfs@127.0.0.1:5432/callfs',
      postgres_password_env: null,
      redis: 'redis://127.0.0.1:6379/0',
      redis_password_env: null,
      lock_prefix: 'callfs:lock:',
      lock_timeout: 60 * SECOND,
      data_dir: '/var/lib/callfs',
      unit: 'callfs',
      service_user: null,
      thresholds: {
        long_query: 5 * MINUTE,
        idle_connection: 10 * MINUTE,
        live_locks: 1000,
        metrics_window: 2 * SECOND,
        cert_expiry_warn: 14 * DAY,
        disk_warn: 80,
        disk_fail: 95,
      },
    },
    toombos: {
      url: 'http://127.0.0.1:8000',
      crm_url: 'http://127.0.0.1:8001',
      platform_url: 'http://127.0.0.1:8002',
      grafana_url: 'http://127.0.0.1:3000',
      prometheus_url: 'http://127.0.0.1:9090',
      project_dir: '.',
      api_key_env: 'TOOMBOS_API_KEY',
    },
  },
})

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
}
