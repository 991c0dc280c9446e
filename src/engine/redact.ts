// Every secret opsctl reads is registered here the moment it is read, and every byte opsctl
// writes for a person or a file (report, JSON, audit log, errors) passes through `redact`.
// Evidence is built never to hold secrets; this is the second line of defence.

import {maskUrlPasswords} from '../config/mask.js'

const MASK = '****'
const secrets = new Set<string>()
let pattern: RegExp | null = null

// Secrets shorter than this would mangle ordinary text (and masking every "callfs" would itself
// tell the reader the secret). They are still never put into output on purpose.
const MIN_SECRET_LENGTH = 6
// A short secret is masked as a whole token, never as the middle of a longer word.
const WORD = 'A-Za-z0-9_'
const ANYWHERE_LENGTH = 12

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** Remember a secret value so that it is masked wherever it would appear. */
export function registerSecret(value: string | undefined | null): void {
  if (!value || value.length < MIN_SECRET_LENGTH) return
  const forms = [value, JSON.stringify(value).slice(1, -1), encodeURIComponent(value)]
  for (const form of forms) if (!secrets.has(form)) {
    secrets.add(form)
    pattern = null
  }
}

function secretPattern(): RegExp | null {
  if (secrets.size === 0) return null
  if (!pattern) {
    // Long secrets are masked wherever they appear; short ones only as whole tokens, where they
    // cannot be mistaken for part of an ordinary word.
    const sorted = [...secrets].sort((a, b) => b.length - a.length)
    const long = sorted.filter((x) => x.length >= ANYWHERE_LENGTH).map(escapeRegExp)
    const short = sorted.filter((x) => x.length < ANYWHERE_LENGTH).map(escapeRegExp)
    const parts = [...long, ...(short.length ? [`(?<![${WORD}])(?:${short.join('|')})(?![${WORD}])`] : [])]
    pattern = new RegExp(parts.join('|'), 'g')
  }
  return pattern
}

// Credentials that look like credentials even when nobody registered them (URLs with a
// password are masked by maskUrlPasswords).
const SHAPES: Array<[RegExp, string]> = [
  // Authorization: Bearer xxx / Basic xxx — a token-like word (12+ characters with a digit), not prose
  [/\b(Bearer|Basic)\s+(?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/-]{12,}=*/g, `$1 ${MASK}`],
  // password=xxx in keyword/value DSNs ("host=db password=x")
  [/\b(password|passwd|pwd)=([^\s&;"',]+)/gi, `$1=${MASK}`],
]

export function redact(text: string): string {
  let out = text
  const p = secretPattern()
  if (p) out = out.replace(p, MASK)
  out = maskUrlPasswords(out)
  for (const [re, replacement] of SHAPES) out = out.replace(re, replacement)
  return out
}

/**
 * Redact a JSON-able value structurally: every string (and object key) is masked, numbers,
 * booleans and null are left as they are — so a secret that happens to read "true" or "1000"
 * can never break the document.
 */
export function redactValue<T>(value: T): T {
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return redact(v)
    if (Array.isArray(v)) return v.map(walk)
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [redact(k), walk(x)]))
    }
    return v
  }
  return walk(value) as T
}

/** For tests: forget registered secrets. */
export function clearSecrets(): void {
  secrets.clear()
  pattern = null
}
