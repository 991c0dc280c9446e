import type {ChalkInstance} from 'chalk'

import {flowchartChecks} from '../engine/runner.js'
import type {CheckSpec, FlowNode, RemediationSpec, Runbook, SystemName} from '../engine/types.js'
import {SYSTEM_TITLES} from '../report/human.js'
import {AVAILABLE_SYSTEMS, loadRunbook} from '../runbooks/index.js'

export interface CheckListing {
  id: string
  system: SystemName
  title: string
  severity: string
  /** "A:destructive", "A:safe / M", "M" or "-" as the catalog writes it. */
  fix: string
  remediations: RemediationSpec[]
  docs: string
}

export function fixKind(remediations: RemediationSpec[] | undefined): string {
  if (!remediations || remediations.length === 0) return '-'
  return [...new Set(remediations.map((r) => (r.automated ? `A:${r.risk ?? 'safe'}` : 'M')))].join(' / ')
}

function listing(runbook: Runbook<unknown, unknown>, spec: CheckSpec<unknown>): CheckListing {
  return {
    id: spec.id,
    system: runbook.system,
    title: spec.title,
    severity: spec.severity,
    fix: fixKind(spec.remediations),
    remediations: spec.remediations ?? [],
    docs: `shared guide: ${runbook.title} > ${spec.docs}`,
  }
}

/** Every check of every shipped runbook, in flowchart order per system. */
export async function listChecks(systems: SystemName[] = AVAILABLE_SYSTEMS): Promise<CheckListing[]> {
  const out: CheckListing[] = []
  for (const system of systems) {
    const runbook = await loadRunbook(system)
    const specs = new Map(runbook.checks.map((s) => [s.id, s]))
    const ordered = flowchartChecks(runbook.flow)
    for (const id of [...ordered, ...runbook.checks.map((s) => s.id).filter((i) => !ordered.includes(i))]) {
      const spec = specs.get(id)
      if (spec) out.push(listing(runbook, spec))
    }
  }
  return out
}

export function formatCheckTable(rows: CheckListing[], c: ChalkInstance): string {
  const head = ['ID', 'SYSTEM', 'SEVERITY', 'FIX', 'TITLE']
  const cells = rows.map((r) => [r.id, r.system, r.severity, r.fix, r.title])
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((row) => (row[i] as string).length)))
  const line = (row: string[]) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] as number))).join('  ')
  return [c.bold(line(head)), ...cells.map(line)].join('\n') + '\n'
}

/** The flowchart as a tree, the way the guide draws it: questions, answers, checks, fixes. */
export function formatFlowchart(runbook: Runbook<unknown, unknown>, c: ChalkInstance): string {
  const specs = new Map(runbook.checks.map((s) => [s.id, s]))
  const lines = [`${c.bold(SYSTEM_TITLES[runbook.system])} ${c.dim(`— flowchart of ${runbook.guide}`)}`]
  const label = (node: FlowNode) => {
    const spec = specs.get(node.check)
    const fix = fixKind(spec?.remediations)
    const q = node.question ? ` ${c.yellow(node.question)}` : ''
    return `${c.cyan(node.check)}${q} ${c.dim('— ' + (spec?.title ?? '?'))}${fix === '-' ? '' : c.dim(` [fix ${fix}]`)}`
  }
  const draw = (nodes: FlowNode[], prefix: string) => {
    nodes.forEach((node, i) => {
      const last = i === nodes.length - 1
      lines.push(`${prefix}${last ? '└─ ' : '├─ '}${label(node)}`)
      const childPrefix = prefix + (last ? '   ' : '│  ')
      const branches = node.branches ?? []
      branches.forEach((b, j) => {
        const lastBranch = j === branches.length - 1
        lines.push(`${childPrefix}${lastBranch ? '└─ ' : '├─ '}${c.bold(b.label)} ${c.dim(`(${b.when.status.join('/')}${b.when.evidence ? ', ' + Object.entries(b.when.evidence).map(([k, v]) => `${k}=${v}`).join(', ') : ''})`)}`)
        draw(b.then, childPrefix + (lastBranch ? '   ' : '│  '))
      })
    })
  }
  draw(runbook.flow, '')
  lines.push('', c.dim('Siblings run concurrently; a branch runs when its answer matches. Checks on a branch not taken are skipped.'))
  return lines.join('\n') + '\n'
}
