import {redactValue} from '../engine/redact.js'
import {systemStatus} from '../engine/runner.js'
import {overall} from '../engine/status.js'
import type {RunReport, SystemReport} from '../engine/types.js'

/** The run report of SPEC.md; statuses roll up worst-first, counting verified fixes as healthy. */
export function buildRunReport(command: string, systems: SystemReport[], startedAt: number, version: string): RunReport {
  for (const s of systems) s.status = systemStatus(s)
  return {
    schemaVersion: 1,
    opsctlVersion: version,
    command,
    status: overall(systems.map((s) => s.status)),
    startedAt: new Date(startedAt).toISOString(),
    durationMs: Date.now() - startedAt,
    systems,
  }
}

/** The JSON document for stdout: skipped checks only with --verbose; secrets masked (structurally: the text must not be redacted again). */
export function renderJson(report: RunReport, verbose: boolean): string {
  const view: RunReport = verbose
    ? report
    : {...report, systems: report.systems.map((s) => ({...s, checks: s.checks.filter((c) => c.status !== 'skipped')}))}
  return JSON.stringify(redactValue(view), null, 2) + '\n'
}
