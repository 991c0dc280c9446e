import type {OpsctlConfig} from '../config/types.js'
import {loadRunbook} from '../runbooks/index.js'
import type {RunSettings} from './context.js'
import {mapBounded, walkTarget, type TargetRun, type WalkEvents} from './runner.js'
import type {SystemName, SystemReport} from './types.js'

export interface TargetRef {
  system: SystemName
  target: string
}

export interface DiagnoseEvents extends WalkEvents {
  onTargetEnd?(ref: TargetRef, report: SystemReport): void
}

/** The enabled targets of the chosen systems, optionally narrowed to some target names. */
export function selectTargets(config: OpsctlConfig, systems: SystemName[], names?: string[]): TargetRef[] {
  const refs: TargetRef[] = []
  for (const system of systems) {
    const sys = config.systems[system]
    if (!sys.enabled) continue
    for (const t of sys.targets) {
      if (!t.enabled) continue
      if (names && names.length > 0 && !names.includes(t.name)) continue
      refs.push({system, target: t.name})
    }
  }
  return refs
}

/** Walk every selected target's flowchart, targets concurrently up to `concurrency`. */
export async function runDiagnosis(
  config: OpsctlConfig,
  refs: TargetRef[],
  settings: RunSettings,
  concurrency: number,
  events: DiagnoseEvents = {},
): Promise<TargetRun[]> {
  return mapBounded(refs, concurrency, async (ref) => {
    const runbook = await loadRunbook(ref.system)
    const target = config.systems[ref.system].targets.find((t) => t.name === ref.target)
    if (!target) throw new Error(`no target ${ref.target} for ${ref.system}`)
    const run = await walkTarget(runbook, target as {name: string}, settings, events)
    events.onTargetEnd?.(ref, run.report)
    return run
  })
}
