import {setMaxListeners} from 'node:events'

import type {RunSettings} from './context.js'
import {redact, redactValue} from './redact.js'
import {higherSeverity, overall} from './status.js'
import type {
  BranchCondition,
  CheckReport,
  CheckSpec,
  Finding,
  Fix,
  FlowNode,
  RemediationReport,
  Runbook,
  Status,
  SystemName,
  SystemReport,
} from './types.js'
import {formatMs} from '../util/time.js'

export interface WalkEvents {
  onCheckStart?(system: SystemName, target: string, checkId: string): void
  onCheckEnd?(system: SystemName, target: string, report: CheckReport): void
}

/** One walk of one target: the report, the fixes its findings carry, and a way to re-check. */
export interface TargetRun {
  system: SystemName
  target: string
  report: SystemReport
  /** checkId → the fix bound to what that check found (failing and warning checks only). */
  fixes: Map<string, Fix>
  /** Run one check again on a fresh context (verification after a fix). */
  recheck(checkId: string): Promise<CheckReport>
}

const DEFAULT_BUDGET_GRACE_MS = 1000

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/**
 * Resolve with the check's finding, or with an `unknown` finding when its budget or the run's
 * deadline passes first. A check never throws past this point.
 */
async function settle<C>(spec: CheckSpec<C>, ctx: C, settings: RunSettings): Promise<Finding> {
  const budget = spec.budgetMs?.(settings.timeoutMs, ctx) ?? settings.timeoutMs + DEFAULT_BUDGET_GRACE_MS
  let timer: NodeJS.Timeout | undefined
  let onAbort: (() => void) | undefined
  const deadline = new Promise<Finding>((resolve) => {
    timer = setTimeout(
      () => resolve({status: 'unknown', summary: `did not finish within ${formatMs(budget)}; the result is unknown`}),
      budget,
    )
    onAbort = () => {
      const reason = settings.signal.reason instanceof Error ? settings.signal.reason.message : 'the run was stopped'
      resolve({status: 'unknown', summary: `${reason} before this check finished`})
    }
    if (settings.signal.aborted) onAbort()
    else settings.signal.addEventListener('abort', onAbort, {once: true})
  })
  const work = (async (): Promise<Finding> => {
    try {
      return await spec.run(ctx)
    } catch (error) {
      const finding: Finding = {status: 'unknown', summary: `the check itself failed: ${errorMessage(error)}`}
      if (settings.verbose && error instanceof Error && error.stack) finding.evidence = {stack: error.stack}
      return finding
    }
  })()
  try {
    return await Promise.race([work, deadline])
  } finally {
    clearTimeout(timer)
    if (onAbort) settings.signal.removeEventListener('abort', onAbort)
  }
}

function remediationReport<C>(runbook: Runbook<C, unknown>, spec: CheckSpec<C>, fix: Fix): RemediationReport {
  // Every fix id is declared by its check (a test walks them all); risk comes from the declaration.
  const declared = spec.remediations?.find((r) => r.id === fix.id)
  const automated = Boolean(fix.apply)
  return {
    id: fix.id,
    title: fix.title,
    risk: automated ? (declared?.risk ?? null) : null,
    automated,
    plan: fix.plan,
    commands: fix.commands,
    docs: `shared guide: ${runbook.title} > ${spec.docs}`,
  }
}

async function runCheck<C>(
  runbook: Runbook<C, unknown>,
  spec: CheckSpec<C>,
  ctx: C,
  settings: RunSettings,
): Promise<{report: CheckReport; fix: Fix | undefined}> {
  const started = Date.now()
  const finding = await settle(spec, ctx, settings)
  const actionable = finding.status === 'fail' || finding.status === 'warn'
  const fix = actionable ? finding.fix : undefined
  const report: CheckReport = {
    id: spec.id,
    status: finding.status,
    severity: higherSeverity(spec.severity, finding.severity),
    title: spec.title,
    summary: redact(finding.summary),
    evidence: redactValue(finding.evidence ?? {}),
    durationMs: Date.now() - started,
    remediation: fix ? redactValue(remediationReport(runbook, spec, fix)) : null,
    outcome: null,
  }
  return {report, fix}
}

function branchTaken(when: BranchCondition, r: CheckReport): boolean {
  if (!when.status.includes(r.status)) return false
  for (const [key, value] of Object.entries(when.evidence ?? {})) if (r.evidence[key] !== value) return false
  return true
}

function checksIn(nodes: FlowNode[], into: string[] = []): string[] {
  for (const node of nodes) {
    into.push(node.check)
    for (const b of node.branches ?? []) checksIn(b.then, into)
  }
  return into
}

/** Every check id the flowchart reaches, in drawing order (each once). */
export function flowchartChecks(flow: FlowNode[]): string[] {
  return [...new Set(checksIn(flow))]
}

/**
 * Walk one target's flowchart: siblings run concurrently, a node's branches are followed by
 * its outcome, and every check on a branch not taken is `skipped` with the reason.
 */
export async function walkTarget<C, T extends {name: string}>(
  runbook: Runbook<C, T>,
  target: T,
  settings: RunSettings,
  events: WalkEvents = {},
): Promise<TargetRun> {
  const started = Date.now()
  const ctx = runbook.createContext(target, settings)
  const specs = new Map(runbook.checks.map((s) => [s.id, s]))
  const runs = new Map<string, Promise<{report: CheckReport; fix: Fix | undefined}>>()
  const notReached = new Map<string, string>()
  const path: string[] = []

  const runOnce = (id: string) => {
    let run = runs.get(id)
    if (!run) {
      const spec = specs.get(id)
      if (!spec) throw new Error(`${runbook.system} flowchart names unknown check ${id}`)
      path.push(id)
      events.onCheckStart?.(runbook.system, target.name, id)
      run = runCheck(runbook, spec, ctx, settings).then((r) => {
        events.onCheckEnd?.(runbook.system, target.name, r.report)
        return r
      })
      runs.set(id, run)
    }
    return run
  }

  const walk = async (nodes: FlowNode[]): Promise<void> => {
    await Promise.all(
      nodes.map(async (node) => {
        const {report} = await runOnce(node.check)
        const taken: FlowNode[][] = []
        for (const b of node.branches ?? []) {
          if (branchTaken(b.when, report)) taken.push(b.then)
          else {
            const reason = `not reached: ${node.check} is ${report.status}, so the "${b.label}" branch was not taken`
            for (const id of checksIn(b.then)) if (!notReached.has(id)) notReached.set(id, reason)
          }
        }
        await Promise.all(taken.map((t) => walk(t)))
      }),
    )
  }

  await walk(runbook.flow)

  const checks: CheckReport[] = []
  const fixes = new Map<string, Fix>()
  for (const spec of runbook.checks) {
    const run = runs.get(spec.id)
    if (run) {
      const {report, fix} = await run
      checks.push(report)
      if (fix) fixes.set(spec.id, fix)
    } else {
      checks.push({
        id: spec.id,
        status: 'skipped',
        severity: spec.severity,
        title: spec.title,
        summary: notReached.get(spec.id) ?? 'not part of the flowchart',
        evidence: {},
        durationMs: 0,
        remediation: null,
        outcome: null,
      })
    }
  }

  const report: SystemReport = {
    system: runbook.system,
    target: target.name,
    status: overall(checks.map((c) => c.status)),
    durationMs: Date.now() - started,
    path,
    checks,
  }

  return {
    system: runbook.system,
    target: target.name,
    report,
    fixes,
    async recheck(checkId: string): Promise<CheckReport> {
      // The diagnosis' signal may have fired (its deadline, Ctrl-C) by now; a re-check after a fix
      // has its own budget instead.
      const fresh = new AbortController().signal
      setMaxListeners(0, fresh)
      return (await runSingleCheck(runbook, checkId, target, {...settings, signal: fresh})).report
    },
  }
}

/** Run one check on its own, on a fresh context: re-checks after a fix, and tests. */
export async function runSingleCheck<C, T>(
  runbook: Runbook<C, T>,
  checkId: string,
  target: T,
  settings: RunSettings,
): Promise<{report: CheckReport; fix: Fix | undefined}> {
  const spec = runbook.checks.find((s) => s.id === checkId)
  if (!spec) throw new Error(`unknown check ${checkId}`)
  return runCheck(runbook as Runbook<C, unknown>, spec, runbook.createContext(target, settings), settings)
}

/** A check counts as healthy once its fix was applied and the check passed again. */
export function effectiveStatus(check: CheckReport): Status {
  return check.outcome?.verified ? 'ok' : check.status
}

export function systemStatus(report: SystemReport): Status {
  return overall(report.checks.map(effectiveStatus))
}

/** Run `fn` over `items` with at most `limit` in flight, keeping the input order in the output. */
export async function mapBounded<I, O>(items: I[], limit: number, fn: (item: I) => Promise<O>): Promise<O[]> {
  const out: O[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i] as I)
    }
  }
  await Promise.all(Array.from({length: Math.max(1, Math.min(limit, items.length))}, worker))
  return out
}
