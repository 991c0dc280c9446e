// The result model of SPEC.md "Results" and the shape of a runbook: a flowchart held as data.

export const STATUSES = ['ok', 'warn', 'fail', 'unknown', 'skipped'] as const
export type Status = (typeof STATUSES)[number]
export type Severity = 'critical' | 'high' | 'medium' | 'low' | 'info'
export type Risk = 'safe' | 'disruptive' | 'destructive'
export type Decision = 'applied' | 'declined' | 'dry-run' | 'refused'
export type SystemName = 'hookshot' | 'hotswap' | 'callfs' | 'toombos'
export const SYSTEMS: readonly SystemName[] = ['hookshot', 'hotswap', 'callfs', 'toombos']

/** Escalation levels of the Toombos guide. */
export const ESCALATION: Record<Severity, string> = {critical: 'P0', high: 'P1', medium: 'P2', low: 'P3', info: 'P3'}

export interface Outcome {
  decision: Decision
  /** The action itself succeeded (false when declined, refused, dry-run or it failed). */
  ok: boolean
  /** The originating check was run again afterwards and passed. */
  verified: boolean
  detail: string
}

/** A remediation as reported (SPEC.md JSON): concrete, filled in with what was found. */
export interface RemediationReport {
  id: string
  title: string
  risk: Risk | null
  automated: boolean
  plan: string[]
  commands: string[]
  docs: string
}

export interface CheckReport {
  id: string
  status: Status
  severity: Severity
  title: string
  summary: string
  evidence: Record<string, unknown>
  durationMs: number
  remediation: RemediationReport | null
  outcome: Outcome | null
}

export interface SystemReport {
  system: SystemName
  target: string
  status: Status
  durationMs: number
  path: string[]
  checks: CheckReport[]
}

export interface RunReport {
  schemaVersion: 1
  opsctlVersion: string
  command: string
  status: Status
  startedAt: string
  durationMs: number
  systems: SystemReport[]
}

// ---------------------------------------------------------------------------------------
// Runbooks

/** What a check's run returns: the status and the facts behind it. */
export interface Finding {
  status: Status
  summary: string
  evidence?: Record<string, unknown>
  /** Raise (never lower) the check's default severity for this finding. */
  severity?: Severity
  /** The remediation, bound to exactly what was found. Absent when there is nothing to fix. */
  fix?: Fix
}

export interface FixResult {
  ok: boolean
  detail: string
}

/**
 * A concrete remediation. `plan` is what is shown and `apply` does exactly that plan, with
 * guards that re-check the precondition atomically at the moment of acting.
 */
export interface Fix {
  id: string
  title: string
  /** Exact actions, one per line, shown before asking. */
  plan: string[]
  /** Equivalent shell commands (real names, ports, keys; secrets masked). */
  commands: string[]
  /**
   * For destructive plans: what the user types to confirm (the name of what is destroyed).
   * Defaults to the remediation id.
   */
  confirmText?: string
  /** Present when opsctl can carry the plan out itself. */
  apply?: (signal: AbortSignal) => Promise<FixResult>
  /** How long apply may take, in ms; defaults to the probe time-out times four. */
  applyTimeoutMs?: number
}

export interface RemediationSpec {
  id: string
  title: string
  automated: boolean
  risk?: Risk
}

export interface CheckSpec<C> {
  id: string
  title: string
  severity: Severity
  /** The guide section it comes from: "CallFS Troubleshooting > Service Won't Start > Port Already in Use". */
  docs: string
  /** The remediations a finding of this check may carry (a Fix's id is one of these). */
  remediations?: RemediationSpec[]
  /**
   * How long the check may take, in ms, given the per-probe time-out. Checks that probe in
   * sequence (two scrapes, a fallback path) say so here. Default: timeout + 1 s.
   */
  budgetMs?(timeoutMs: number, ctx: C): number
  run(ctx: C): Promise<Finding>
}

/** When a branch is taken: by the parent's status, optionally narrowed by an evidence field. */
export interface BranchCondition {
  status: Status[]
  /** All listed evidence fields must equal the given values. */
  evidence?: Record<string, string | number | boolean>
}

export interface FlowBranch {
  /** The answer as the guide words it: "no", "yes", "too many clients". */
  label: string
  when: BranchCondition
  then: FlowNode[]
}

/** A node is a check; its branches are followed by outcome. Siblings run concurrently. */
export interface FlowNode {
  check: string
  /** A question the guide asks at this node ("health?"); drawn by `runbook show`. */
  question?: string
  branches?: FlowBranch[]
}

export interface Runbook<C, T = unknown> {
  system: SystemName
  /** The guide's title, as cited in `docs`: "CallFS Troubleshooting". */
  title: string
  /** The guide file in shared/seeds. */
  guide: string
  checks: CheckSpec<C>[]
  flow: FlowNode[]
  /** A fresh context for one walk (or one re-check) of one target. */
  createContext(target: T, settings: import('./context.js').RunSettings): C
}
