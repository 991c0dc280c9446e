import type {Severity, Status} from './types.js'

// The worst status wins upward: fail > unknown > warn > ok > skipped.
const RANK: Record<Status, number> = {skipped: 0, ok: 1, warn: 2, unknown: 3, fail: 4}

export function worst(statuses: Iterable<Status>): Status {
  let result: Status = 'skipped'
  for (const s of statuses) if (RANK[s] > RANK[result]) result = s
  return result
}

/** A run with nothing but skipped checks is healthy as far as anyone can tell: report ok. */
export function overall(statuses: Iterable<Status>): Status {
  const w = worst(statuses)
  return w === 'skipped' ? 'ok' : w
}

export const EXIT = {ok: 0, warn: 1, fail: 2, unknown: 3, usage: 64, software: 70, config: 78} as const

export function exitCodeFor(status: Status): number {
  switch (status) {
    case 'warn':
      return EXIT.warn
    case 'fail':
      return EXIT.fail
    case 'unknown':
      return EXIT.unknown
    default:
      return EXIT.ok
  }
}

const SEVERITY_RANK: Record<Severity, number> = {info: 0, low: 1, medium: 2, high: 3, critical: 4}

export function higherSeverity(a: Severity, b: Severity | undefined): Severity {
  return b && SEVERITY_RANK[b] > SEVERITY_RANK[a] ? b : a
}
