import type {Runbook, SystemName} from '../engine/types.js'

// Runbooks load lazily: `opsctl diagnose callfs` never imports another system's checks.
// A system whose runbook has not shipped yet is simply absent here.
const LOADERS: Partial<Record<SystemName, () => Promise<Runbook<unknown, unknown>>>> = {
  callfs: async () => (await import('./callfs/index.js')).callfsRunbook as unknown as Runbook<unknown, unknown>,
}

export const AVAILABLE_SYSTEMS = Object.keys(LOADERS) as SystemName[]

export function hasRunbook(system: SystemName): boolean {
  return system in LOADERS
}

export async function loadRunbook(system: SystemName): Promise<Runbook<unknown, unknown>> {
  const load = LOADERS[system]
  if (!load) throw new Error(`no runbook for ${system} in this version`)
  return load()
}
