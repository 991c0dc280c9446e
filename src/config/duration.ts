// Durations as the configuration file and the --timeout flag write them: "250ms", "5s", "2m",
// "1h", "14d", or a bare number of seconds. Stored as whole milliseconds.

const UNIT_MS = {ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000} as const
const DURATION = /^(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?$/

/** What a user may write, for messages. */
export const DURATION_HINT = 'use 250ms, 5s, 2m, 1h, 14d or a number of seconds'

/**
 * Milliseconds for a positive duration ("5s", "250ms", 1.5, "30"); null when the text is not a
 * duration or is not greater than zero (also after rounding to whole milliseconds).
 */
export function parseDuration(text: string | number): number | null {
  const ms = Math.round(durationMs(text))
  return ms > 0 && ms <= Number.MAX_SAFE_INTEGER ? ms : null
}

/** The written value in milliseconds, unrounded and unchecked; NaN when it is not a duration at all. */
export function durationMs(text: string | number): number {
  if (typeof text === 'number') return text * 1000
  const m = DURATION.exec(text.trim())
  if (!m) return Number.NaN
  return Number(m[1]) * UNIT_MS[(m[2] ?? 's') as keyof typeof UNIT_MS]
}

/** The shortest exact spelling: 300000 → "5m", 1209600000 → "14d", 1500 → "1.5s", 250 → "250ms". */
export function formatDuration(ms: number): string {
  const n = Math.round(ms)
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = UNIT_MS[unit]
    if (n !== 0 && n % size === 0) return `${n / size}${unit}`
  }
  return n >= 1000 ? `${n / 1000}s` : `${n}ms`
}
