import type {ChalkInstance} from 'chalk'

import {exitCodeFor} from '../engine/status.js'
import type {CheckReport, Outcome, RemediationReport, RunReport, Status, SystemName, SystemReport} from '../engine/types.js'
import {formatMs} from '../util/time.js'

export const SYSTEM_TITLES: Record<SystemName, string> = {
  hookshot: 'Hookshot',
  hotswap: 'Hotswap',
  callfs: 'CallFS',
  toombos: 'Toombos',
}

const SYMBOL: Record<Status, string> = {ok: '✓', warn: '!', fail: '✗', unknown: '?', skipped: '-'}

export function statusMark(status: Status, c: ChalkInstance): string {
  const s = SYMBOL[status]
  switch (status) {
    case 'ok':
      return c.green(s)
    case 'warn':
      return c.yellow(s)
    case 'fail':
      return c.red(s)
    case 'unknown':
      return c.magenta(s)
    default:
      return c.dim(s)
  }
}

function statusWord(status: Status, c: ChalkInstance): string {
  return `${statusMark(status, c)} ${status}`
}

/** Evidence as short `key: value` lines; long lists are cut with a count of what is left. */
export function formatEvidence(evidence: Record<string, unknown>, maxItems = 5, maxWidth = 110): string[] {
  const lines: string[] = []
  for (const [key, value] of Object.entries(evidence)) {
    if (value === undefined) continue
    let text: string
    if (Array.isArray(value)) {
      const shown = value.slice(0, maxItems).map((v) => (typeof v === 'string' ? v : JSON.stringify(v)))
      text = shown.join(', ') + (value.length > maxItems ? `, … ${value.length - maxItems} more` : '')
      if (value.length === 0) text = '(none)'
    } else if (value !== null && typeof value === 'object') {
      text = JSON.stringify(value)
    } else {
      text = String(value)
    }
    if (text.length > maxWidth) text = text.slice(0, maxWidth - 1) + '…'
    lines.push(`${key}: ${text}`)
  }
  return lines
}

export function formatPlan(r: RemediationReport, c: ChalkInstance, indent: string, maxLines = 10): string[] {
  const lines: string[] = []
  const kind = r.automated ? `automated · ${r.risk ?? 'unrated'}` : 'manual'
  lines.push(`${indent}${c.bold('fix')} ${r.title} ${c.dim(`(${kind} · ${r.id})`)}`)
  const plan = r.plan.slice(0, maxLines)
  for (const step of plan) lines.push(`${indent}  - ${step}`)
  if (r.plan.length > plan.length) lines.push(`${indent}  … ${r.plan.length - plan.length} more steps (--json lists every one)`)
  const commands = r.commands.slice(0, maxLines)
  for (const cmd of commands) lines.push(`${indent}  ${c.cyan('$ ' + cmd)}`)
  if (r.commands.length > commands.length) lines.push(`${indent}  … ${r.commands.length - commands.length} more commands`)
  lines.push(`${indent}  ${c.dim('docs: ' + r.docs)}`)
  return lines
}

export function formatOutcome(o: Outcome, c: ChalkInstance): string {
  if (o.decision !== 'applied') {
    // A detail that already opens with the decision ("declined (answered no): …", "dry run: …")
    // is the whole line; saying the decision twice reads like a stutter.
    const lead = new RegExp(`^${o.decision.replace('-', '[- ]')}\\b`, 'i').exec(o.detail)
    if (lead) return `${c.dim(o.decision)}${o.detail.slice(lead[0].length)}`
    return `${c.dim(o.decision)} — ${o.detail}`
  }
  const head = o.ok && o.verified ? c.green('applied, verified') : o.ok ? c.yellow('applied, not verified') : c.red('applied, failed')
  return `${head} — ${o.detail}`
}

function checkLines(check: CheckReport, c: ChalkInstance, verbose: boolean, idWidth: number): string[] {
  const lines = [`  ${statusMark(check.status, c)} ${check.id.padEnd(idWidth)}  ${check.summary}`]
  const detail = verbose || (check.status !== 'ok' && check.status !== 'skipped')
  const indent = ' '.repeat(6)
  if (detail) {
    for (const line of formatEvidence(check.evidence, verbose ? 50 : 5, verbose ? 400 : 110)) {
      lines.push(`${indent}${c.dim(line)}`)
    }
  }
  if (check.remediation && check.status !== 'ok') lines.push(...formatPlan(check.remediation, c, indent, verbose ? 1000 : 10))
  if (check.outcome) lines.push(`${indent}${c.bold('outcome')} ${formatOutcome(check.outcome, c)}`)
  return lines
}

export function formatSystem(s: SystemReport, c: ChalkInstance, verbose: boolean): string[] {
  const shown = s.checks.filter((k) => verbose || k.status !== 'skipped')
  const skipped = s.checks.length - shown.length
  const idWidth = Math.max(0, ...shown.map((k) => k.id.length))
  const title = `${SYSTEM_TITLES[s.system]} ${c.dim('·')} ${s.target}`
  const lines = [`${c.bold(title)}  ${statusWord(s.status, c)}  ${c.dim(formatMs(s.durationMs))}`]
  for (const check of shown) lines.push(...checkLines(check, c, verbose, idWidth))
  if (skipped > 0) lines.push(c.dim(`  ${skipped} skipped (not reached or not configured; --verbose lists them)`))
  return lines
}

function counts(report: RunReport): string {
  const n: Record<Status, number> = {ok: 0, warn: 0, fail: 0, unknown: 0, skipped: 0}
  for (const s of report.systems) for (const k of s.checks) n[k.status]++
  const parts = (['fail', 'unknown', 'warn', 'ok', 'skipped'] as Status[]).filter((s) => n[s] > 0).map((s) => `${n[s]} ${s}`)
  return parts.join(', ') || 'no checks'
}

/** The whole report, grouped by system: every finding with its evidence, plan and commands. */
export function formatReport(report: RunReport, c: ChalkInstance, verbose: boolean): string {
  const lines: string[] = []
  for (const s of report.systems) {
    lines.push(...formatSystem(s, c, verbose), '')
  }
  const fixed = report.systems.flatMap((s) => s.checks).filter((k) => k.outcome?.verified).length
  const tail = fixed > 0 ? `, ${fixed} fixed and verified` : ''
  lines.push(
    `${statusWord(report.status, c)} ${c.dim('·')} ${counts(report)}${tail} ${c.dim('·')} ${formatMs(report.durationMs)} ${c.dim(`· exit ${exitCodeFor(report.status)}`)}`,
  )
  return lines.join('\n') + '\n'
}
