import type {AuditLog} from './audit.js'
import {redact} from './redact.js'
import {type TargetRun} from './runner.js'
import type {CheckReport, Decision, Fix, FixResult, Outcome} from './types.js'
import {formatMs} from '../util/time.js'

/** One automated remediation waiting for a decision. */
export interface PendingFix {
  run: TargetRun
  check: CheckReport
  fix: Fix
}

export interface Asker {
  /** Show the plan and ask. Resolves false on "no", on time-out and on Ctrl-C. */
  confirm(item: PendingFix): Promise<{apply: boolean; reason: string}>
}

export type RemediationMode =
  | {kind: 'no-fix'}
  | {kind: 'dry-run'}
  | {kind: 'yes'}
  | {kind: 'interactive'; ask: Asker}
  /** No terminal, or --json, without --yes: never prompt, never apply. */
  | {kind: 'refuse'}

export interface RemediationEvents {
  onApplying?(item: PendingFix): void
  onOutcome?(item: PendingFix, outcome: Outcome): void
}

export const REFUSED_HINT = 'not applied: nobody could confirm it here (no terminal, or --json); re-run with --yes to apply'

/** Automated fixes waiting for a decision, in report order. */
export function pendingFixes(runs: TargetRun[]): PendingFix[] {
  const pending: PendingFix[] = []
  for (const run of runs) {
    for (const check of run.report.checks) {
      const fix = run.fixes.get(check.id)
      if (fix?.apply && check.remediation?.automated) pending.push({run, check, fix})
    }
  }
  return pending
}

async function applyWithDeadline(fix: Fix, timeoutMs: number, stop?: AbortSignal): Promise<FixResult> {
  const apply = fix.apply
  if (!apply) return {ok: false, detail: 'nothing to apply: this remediation is manual'}
  const budget = fix.applyTimeoutMs ?? timeoutMs * 4
  const controller = new AbortController()
  let timer: NodeJS.Timeout | undefined
  let onStop: (() => void) | undefined
  const deadline = new Promise<FixResult>((resolve) => {
    timer = setTimeout(() => {
      controller.abort()
      resolve({ok: false, detail: `did not finish within ${formatMs(budget)}; stopped (check the state before retrying)`})
    }, budget)
    onStop = () => {
      controller.abort()
      resolve({ok: false, detail: `${reasonOf(stop)} while applying; stopped (check the state before retrying)`})
    }
    if (stop?.aborted) onStop()
    else stop?.addEventListener('abort', onStop, {once: true})
  })
  try {
    return await Promise.race([
      apply(controller.signal).catch((error: unknown) => ({
        ok: false,
        detail: `failed: ${error instanceof Error ? error.message : String(error)}`,
      })),
      deadline,
    ])
  } finally {
    clearTimeout(timer)
    if (onStop) stop?.removeEventListener('abort', onStop)
  }
}

function reasonOf(signal: AbortSignal | undefined): string {
  return signal?.reason instanceof Error ? signal.reason.message : 'stopped'
}

/**
 * Offer every automated remediation according to the mode, apply the accepted ones exactly as
 * planned, verify each by running its check again, and append every decision to the audit log.
 * Outcomes are written onto the check reports.
 */
export async function remediate(
  runs: TargetRun[],
  mode: RemediationMode,
  audit: AuditLog,
  timeoutMs: number,
  events: RemediationEvents = {},
  /** Ctrl-C: the fix in progress is stopped and no further fix is started. */
  stop?: AbortSignal,
): Promise<void> {
  if (mode.kind === 'no-fix') return
  const pending = pendingFixes(runs)
  if (pending.length === 0) return

  let auditProblem: string | null = null
  try {
    await audit.ensureWritable()
  } catch (error) {
    auditProblem = (error as Error).message
  }

  for (const item of pending) {
    let decision: Decision
    let outcome: Outcome
    if (auditProblem) {
      // A change that cannot be audited is not made.
      decision = 'refused'
      outcome = {decision, ok: false, verified: false, detail: `not applied: ${auditProblem}`}
      item.check.outcome = outcome
      events.onOutcome?.(item, outcome)
      continue
    }

    let reason = ''
    if (stop?.aborted && mode.kind !== 'dry-run' && mode.kind !== 'refuse') {
      decision = 'declined'
      reason = reasonOf(stop)
    } else if (mode.kind === 'dry-run') decision = 'dry-run'
    else if (mode.kind === 'refuse') decision = 'refused'
    else if (mode.kind === 'yes') decision = 'applied'
    else {
      const answer = await mode.ask.confirm(item)
      decision = answer.apply ? 'applied' : 'declined'
      reason = answer.reason
    }

    if (decision === 'applied') {
      events.onApplying?.(item)
      const result = await applyWithDeadline(item.fix, timeoutMs, stop)
      const recheck = await item.run.recheck(item.check.id)
      const verified = recheck.status === 'ok'
      outcome = {
        decision,
        ok: result.ok,
        verified,
        detail: redact(`${result.detail}; re-check: ${recheck.status}${verified ? '' : ` (${recheck.summary})`}`),
      }
    } else {
      const detail =
        decision === 'dry-run'
          ? 'dry run: nothing changed'
          : decision === 'refused'
            ? REFUSED_HINT
            : `declined${reason ? ` (${reason})` : ''}: nothing changed`
      outcome = {decision, ok: false, verified: false, detail}
    }

    try {
      await audit.append({
        system: item.run.system,
        target: item.run.target,
        check: item.check.id,
        remediation: item.fix.id,
        plan: item.fix.plan,
        decision,
        result: decision === 'applied' ? {ok: outcome.ok, detail: outcome.detail} : null,
        verified: outcome.verified,
      })
    } catch (error) {
      // The log was writable when checked but this line did not reach it (a full disk): say so
      // in the outcome, and make no further change that could not be audited either.
      const why = `${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`
      auditProblem = `the audit log ${audit.path} could not be written (${why})`
      outcome = {...outcome, detail: `${outcome.detail}; NOT AUDITED: ${auditProblem}`}
    }
    item.check.outcome = outcome
    events.onOutcome?.(item, outcome)
  }
}
