// Every secret opsctl reads is registered here the moment it is read, and every byte opsctl
// writes for a person or a file (report, JSON, audit log, errors) passes through `redact`.
// Evidence is built never to hold secrets; this is the second line of defence.

import {maskUrlPasswords} from '../config/mask.js'

const MASK = '****'
const secrets = new Set<string>()
let pattern: RegExp | null = null

// Secrets shorter than this would mangle ordinary text; no real credential is that short.
const MIN_SECRET_LENGTH = 4

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
    const sorted = [...secrets].sort((a, b) => b.length - a.length).map(escapeRegExp)
    pattern = new RegExp(sorted.join('|'), 'g')
  }
  return pattern
}

// Credentials that look like credentials even when nobody registered them (URLs with a
// password are masked by maskUrlPasswords).
const SHAPES: Array<[RegExp, string]> = [
  // Authorization: Bearer xxx / Basic xxx
  [/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{4,}/g, `$1 ${MASK}`],
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

/** Deep-redact a JSON-able value (strings inside objects and arrays). */
export function redactValue<T>(value: T): T {
  return JSON.parse(redact(JSON.stringify(value))) as T
}

/** For tests: forget registered secrets. */
export function clearSecrets(): void {
  secrets.clear()
  pattern = null
}
