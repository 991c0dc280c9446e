import {setMaxListeners} from 'node:events'

import type {ChalkInstance} from 'chalk'

import {loadConfig} from '../config/load.js'
import type {OpsctlConfig} from '../config/types.js'
import {AuditLog, auditLogPath} from '../engine/audit.js'
import type {RunSettings} from '../engine/context.js'
import {runDiagnosis, selectTargets, type TargetRef} from '../engine/diagnose.js'
import {remediate, type RemediationMode} from '../engine/remediate.js'

import {exitCodeFor} from '../engine/status.js'
import {SYSTEMS, type RunReport, type SystemName} from '../engine/types.js'
import {formatOutcome, formatReport, statusMark} from '../report/human.js'
import {buildRunReport, renderJson} from '../report/json.js'
import {AVAILABLE_SYSTEMS, hasRunbook} from '../runbooks/index.js'
import {UsageError} from './errors.js'
import {formatMs} from '../util/time.js'

export interface DiagnoseFlags {
  config?: string
  json: boolean
  timeout?: number
  verbose: boolean
  yes: boolean
  'dry-run': boolean
  'no-fix': boolean
  'write-probes': boolean
  concurrency: number
  deadline?: number
  target?: string[]
  'prompt-timeout': number
}

export interface DiagnoseIo {
  version: string
  color: ChalkInstance
  /** stdin and stdout are terminals. */
  interactive: boolean
  /** Text for a person; redacted once more on the way out. */
  out(text: string): void
  /** The JSON document, already redacted value by value: written as is. */
  outJson(text: string): void
  env: NodeJS.ProcessEnv
}

/** Validate SYSTEM arguments: known names whose runbooks ship in this version; none → all. */
export function resolveSystems(args: string[]): SystemName[] {
  if (args.length === 0) return [...AVAILABLE_SYSTEMS]
  const chosen: SystemName[] = []
  for (const arg of args) {
    const name = arg.toLowerCase()
    if (!(SYSTEMS as readonly string[]).includes(name)) {
      throw new UsageError(`unknown system "${arg}" (systems: ${SYSTEMS.join(', ')})`)
    }
    if (!hasRunbook(name as SystemName)) {
      throw new UsageError(`${name}: no runbook in this version yet (available: ${AVAILABLE_SYSTEMS.join(', ')})`)
    }
    if (!chosen.includes(name as SystemName)) chosen.push(name as SystemName)
  }
  return chosen
}

function remediationMode(flags: DiagnoseFlags, io: DiagnoseIo, ask: () => Promise<RemediationMode>): Promise<RemediationMode> | RemediationMode {
  if (flags['no-fix']) return {kind: 'no-fix'}
  if (flags['dry-run']) return {kind: 'dry-run'}
  if (flags.yes) return {kind: 'yes'}
  if (flags.json || !io.interactive) return {kind: 'refuse'}
  return ask()
}

/**
 * What was asked for must exist: a named target that matches nothing, or a system named on the
 * command line but switched off, is a usage error — never a silent "ok, no checks".
 */
function checkSelection(config: OpsctlConfig, systems: SystemName[], named: boolean, targets: string[], refs: TargetRef[]): void {
  if (named) {
    const off = systems.filter((s) => !config.systems[s].enabled || config.systems[s].targets.every((t) => !t.enabled))
    if (off.length) throw new UsageError(`${off.join(', ')} ${off.length === 1 ? 'is' : 'are'} switched off (enabled: false) in ${config.source ?? 'the configuration'}`)
  }
  const unmatched = targets.filter((name) => !refs.some((r) => r.target === name))
  if (unmatched.length) throw new UsageError(`no enabled target named ${unmatched.join(', ')} in ${systems.join(', ')}`)
  if (refs.length === 0) throw new UsageError(`nothing to diagnose: every target of ${systems.join(', ')} is switched off in ${config.source ?? 'the configuration'}`)
}

/** Default run deadline: room for a few rounds of probes, never unbounded. */
export function defaultDeadline(timeoutMs: number): number {
  return Math.max(60_000, timeoutMs * 12)
}

/**
 * `opsctl diagnose`: walk each system's flowchart, report, then offer each remediation.
 * Returns the exit code.
 */
export async function diagnoseCommand(args: string[], flags: DiagnoseFlags, io: DiagnoseIo): Promise<number> {
  const exclusive = (['yes', 'dry-run', 'no-fix'] as const).filter((f) => flags[f])
  if (exclusive.length > 1) throw new UsageError(`--${exclusive.join(' and --')} cannot be used together`)
  const systems = resolveSystems(args)
  const config = await loadConfig({configFlag: flags.config, env: io.env})
  const refs = selectTargets(config, systems, flags.target)
  checkSelection(config, systems, args.length > 0, flags.target ?? [], refs)

  const timeoutMs = flags.timeout ?? config.timeout
  const deadlineMs = flags.deadline ?? defaultDeadline(timeoutMs)
  const controller = new AbortController()
  // Every concurrent probe listens on the run's signal; that is by design, not a leak.
  setMaxListeners(0, controller.signal)
  const deadline = setTimeout(() => controller.abort(new Error(`the run deadline (${formatMs(deadlineMs)}, --deadline) passed`)), deadlineMs)
  // Ctrl-C once: during the diagnosis the pending checks end unknown and the report is printed;
  // during remediation the fix in progress is stopped and no further fix is started. Twice: exit.
  const fixes = new AbortController()
  let phase: 'diagnose' | 'fix' = 'diagnose'
  const onInterrupt = () => {
    const current = phase === 'diagnose' ? controller : fixes
    if (current.signal.aborted) process.exit(130)
    current.abort(new Error('interrupted (Ctrl-C)'))
  }
  process.on('SIGINT', onInterrupt)

  const settings: RunSettings = {
    timeoutMs,
    signal: controller.signal,
    verbose: flags.verbose,
    writeProbes: flags['write-probes'],
    env: io.env,
  }
  const startedAt = Date.now()
  const c = io.color
  try {
    const showProgress = io.interactive && !flags.json && refs.length > 0
    const runs = showProgress
      ? await (await import('../report/progress.js')).withProgress(refs, (events) =>
          runDiagnosis(config, refs, settings, flags.concurrency, events),
        )
      : await runDiagnosis(config, refs, settings, flags.concurrency)
    clearTimeout(deadline)

    let report: RunReport = buildRunReport('diagnose', runs.map((r) => r.report), startedAt, io.version)
    if (!flags.json) io.out((showProgress ? '\n' : '') + formatReport(report, c, flags.verbose))

    const mode = await remediationMode(flags, io, async () => {
      const {terminalAsker} = await import('../report/prompt.js')
      return {kind: 'interactive', ask: terminalAsker(c, flags['prompt-timeout'], io.out)}
    })
    const audit = new AuditLog(auditLogPath(io.env), io.version)
    phase = 'fix'
    let decided = 0
    let headed = false
    const heading = () => {
      if (!flags.json && mode.kind !== 'interactive' && !headed) io.out(c.bold('Remediation') + '\n')
      headed = true
    }
    await remediate(runs, mode, audit, timeoutMs, {
      onApplying(item) {
        heading()
        if (!flags.json) io.out(c.dim(`  applying ${item.fix.id} …\n`))
      },
      onOutcome(item, outcome) {
        decided++
        heading()
        if (!flags.json) io.out(`  ${item.check.id}: ${formatOutcome(outcome, c)}\n`)
      },
    }, fixes.signal)

    report = buildRunReport('diagnose', runs.map((r) => r.report), startedAt, io.version)
    if (flags.json) io.outJson(renderJson(report, flags.verbose))
    else if (decided > 0) {
      const applied = runs.some((r) => r.report.checks.some((k) => k.outcome?.decision === 'applied'))
      if (applied) io.out(`\n${statusMark(report.status, c)} ${report.status} after remediation · ${formatMs(report.durationMs)} · exit ${exitCodeFor(report.status)}\n`)
      else if (mode.kind === 'refuse') io.out(c.dim('\nNothing was changed. Re-run on a terminal to be asked, or with --yes to apply.\n'))
      else io.out(c.dim('\nNothing was changed.\n'))
    }
    return exitCodeFor(report.status)
  } finally {
    clearTimeout(deadline)
    process.off('SIGINT', onInterrupt)
  }
}
