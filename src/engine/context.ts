import {Reachability} from '../diagnostics/reach.js'
import type {ProbeOptions} from '../diagnostics/types.js'
import {registerSecret} from './redact.js'
import type {SystemName} from './types.js'

export interface RunSettings {
  /** Per-probe time-out, ms. */
  timeoutMs: number
  /** The run's deadline and Ctrl-C. */
  signal: AbortSignal
  verbose: boolean
  /** `--write-probes`: checks that write (a canary file) may run. */
  writeProbes: boolean
  env: NodeJS.ProcessEnv
}

/**
 * What every check of one target shares during one walk: the target's configuration, the
 * deadlines, the memory of unreachable endpoints, and memoised probes (one /health request
 * serves every check that needs it).
 */
export class CheckContext<T> {
  readonly reach = new Reachability()
  private readonly memos = new Map<string, Promise<unknown>>()

  constructor(
    readonly system: SystemName,
    readonly target: T,
    readonly settings: RunSettings,
  ) {
    // Every secret this target names is masked from the start, even one whose check never runs
    // or runs late: nothing printed before it is read can carry it.
    for (const [key, value] of Object.entries(target as object)) {
      if (key.endsWith('_env') && typeof value === 'string') this.secret(value)
    }
  }

  get timeoutMs(): number {
    return this.settings.timeoutMs
  }

  get signal(): AbortSignal {
    return this.settings.signal
  }

  /** Options for one probe: the per-probe time-out, the run's signal, the reachability memory. */
  probe(overrides: Partial<ProbeOptions> = {}): ProbeOptions {
    return {timeoutMs: this.settings.timeoutMs, signal: this.settings.signal, reach: this.reach, ...overrides}
  }

  /** Run `fn` once per key for this walk; every caller gets the same promise. */
  memo<V>(key: string, fn: () => Promise<V>): Promise<V> {
    let p = this.memos.get(key) as Promise<V> | undefined
    if (!p) {
      p = fn()
      this.memos.set(key, p)
    }
    return p
  }

  /** Read a secret from the environment variable a `*_env` key names; it is masked from then on. */
  secret(envName: string | null | undefined): string | undefined {
    if (!envName) return undefined
    const value = this.settings.env[envName]
    if (value === undefined || value === '') return undefined
    registerSecret(value)
    return value
  }
}
