import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import {AuditLog} from '../../src/engine/audit.js'
import {CheckContext, type RunSettings} from '../../src/engine/context.js'
import {clearSecrets, registerSecret} from '../../src/engine/redact.js'
import {remediate, type Asker, type RemediationMode} from '../../src/engine/remediate.js'
import {walkTarget} from '../../src/engine/runner.js'
import type {Finding, Runbook} from '../../src/engine/types.js'

interface Target {
  name: string
}

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'opsctl-remediate-'))
})
afterEach(async () => {
  clearSecrets()
  await rm(dir, {recursive: true, force: true})
})

function settings(): RunSettings {
  return {timeoutMs: 300, signal: new AbortController().signal, verbose: false, writeProbes: false, env: {}}
}

/** A world with one broken thing: `state.broken` until the fix repairs it. */
function world(opts: {applyFails?: boolean; applyHangs?: boolean} = {}) {
  const state = {broken: true, applied: 0}
  const finding = (): Finding =>
    state.broken
      ? {
          status: 'fail',
          summary: 'broken',
          fix: {
            id: 't.repair',
            title: 'Repair it',
            plan: ['repair the thing'],
            commands: ['repair --now'],
            confirmText: 'thing',
            async apply() {
              state.applied++
              if (opts.applyHangs) await new Promise(() => {})
              if (opts.applyFails) throw new Error('disk on fire')
              state.broken = false
              return {ok: true, detail: 'repaired'}
            },
          },
        }
      : {status: 'ok', summary: 'fine'}
  const rb: Runbook<CheckContext<Target>, Target> = {
    system: 'callfs',
    title: 'Guide',
    guide: 'g.md',
    checks: [{id: 't.check', title: 'T', severity: 'high', docs: 'S', remediations: [{id: 't.repair', title: 'Repair it', automated: true, risk: 'destructive'}], run: async () => finding()}],
    flow: [{check: 't.check'}],
    createContext: (t, s) => new CheckContext('callfs', t, s),
  }
  return {state, rb}
}

async function go(mode: RemediationMode, opts: Parameters<typeof world>[0] = {}) {
  const {state, rb} = world(opts)
  const run = await walkTarget(rb, {name: 'default'}, settings())
  const audit = new AuditLog(join(dir, 'state', 'audit.jsonl'), '0.1.0')
  await remediate([run], mode, audit, 100)
  const lines = (await readFile(audit.path, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l))
  return {state, check: run.report.checks[0]!, audit: lines}
}

const asker = (apply: boolean): Asker => ({confirm: async () => ({apply, reason: apply ? '' : 'answered no'})})

describe('remediate', () => {
  it('--yes applies the plan, verifies by re-running the check, and audits it', async () => {
    const {state, check, audit} = await go({kind: 'yes'})
    expect(state.applied).toBe(1)
    expect(check.outcome).toEqual({decision: 'applied', ok: true, verified: true, detail: 'repaired; re-check: ok'})
    expect(audit).toHaveLength(1)
    expect(audit[0]).toMatchObject({system: 'callfs', target: 'default', check: 't.check', remediation: 't.repair', plan: ['repair the thing'], decision: 'applied', result: {ok: true}, verified: true, opsctlVersion: '0.1.0'})
    expect(audit[0].time).toMatch(/^\d{4}-\d\d-\d\dT/)
    expect(typeof audit[0].user).toBe('string')
    expect(typeof audit[0].host).toBe('string')
  })

  it('no terminal (or --json) without --yes: refused, nothing applied, still audited', async () => {
    const {state, check, audit} = await go({kind: 'refuse'})
    expect(state.applied).toBe(0)
    expect(check.outcome).toMatchObject({decision: 'refused', ok: false, verified: false})
    expect(check.outcome?.detail).toMatch(/--yes/)
    expect(audit.map((a) => a.decision)).toEqual(['refused'])
  })

  it('--dry-run changes nothing and audits the dry run', async () => {
    const {state, check, audit} = await go({kind: 'dry-run'})
    expect(state.applied).toBe(0)
    expect(check.outcome?.decision).toBe('dry-run')
    expect(audit.map((a) => a.decision)).toEqual(['dry-run'])
  })

  it('--no-fix decides nothing and writes nothing', async () => {
    const {state, check, audit} = await go({kind: 'no-fix'})
    expect(state.applied).toBe(0)
    expect(check.outcome).toBeNull()
    expect(audit).toEqual([])
  })

  it('asks, and a No is declined and audited', async () => {
    const no = await go({kind: 'interactive', ask: asker(false)})
    expect(no.state.applied).toBe(0)
    expect(no.check.outcome).toMatchObject({decision: 'declined', ok: false})
    expect(no.audit.map((a) => a.decision)).toEqual(['declined'])
    const yes = await go({kind: 'interactive', ask: asker(true)})
    expect(yes.state.applied).toBe(1)
    expect(yes.check.outcome?.verified).toBe(true)
  })

  it('a fix that throws is reported, not verified, and the check re-run shows it still failing', async () => {
    const {check, audit} = await go({kind: 'yes'}, {applyFails: true})
    expect(check.outcome).toMatchObject({decision: 'applied', ok: false, verified: false})
    expect(check.outcome?.detail).toMatch(/failed: disk on fire; re-check: fail/)
    expect(audit[0].result.ok).toBe(false)
  })

  it('a fix that hangs is stopped at its deadline', async () => {
    const started = Date.now()
    const {check} = await go({kind: 'yes'}, {applyHangs: true})
    expect(Date.now() - started).toBeLessThan(2000)
    expect(check.outcome?.detail).toMatch(/did not finish within 400ms/)
  })

  it('applies nothing when the audit log cannot be written', async () => {
    const {state, rb} = world()
    const run = await walkTarget(rb, {name: 'default'}, settings())
    // Root ignores permission bits, so make the log's directory impossible: a path under a file.
    await writeFile(join(dir, 'not-a-dir'), 'x')
    const audit = new AuditLog(join(dir, 'not-a-dir', 'audit.jsonl'), '0.1.0')
    await remediate([run], {kind: 'yes'}, audit, 100)
    expect(state.applied).toBe(0)
    expect(run.report.checks[0]?.outcome).toMatchObject({decision: 'refused'})
    expect(run.report.checks[0]?.outcome?.detail).toMatch(/cannot write the audit log/)
  })

  it('never writes a registered secret into the audit log', async () => {
    registerSecret('hunter2-very-secret')
    const {state, rb} = world()
    rb.checks[0]!.run = async () =>
      state.broken
        ? {status: 'fail', summary: 's', fix: {id: 't.repair', title: 'T', plan: ['use hunter2-very-secret', 'postgres://u:pw-in-url@h/db'], commands: [], apply: async () => ((state.broken = false), {ok: true, detail: 'used hunter2-very-secret'})}}
        : {status: 'ok', summary: 'ok'}
    const run = await walkTarget(rb, {name: 'default'}, settings())
    const audit = new AuditLog(join(dir, 'audit.jsonl'), '0.1.0')
    await remediate([run], {kind: 'yes'}, audit, 100)
    const text = await readFile(audit.path, 'utf8')
    expect(text).not.toContain('hunter2-very-secret')
    expect(text).not.toContain('pw-in-url')
    expect(text).toContain('****')
  })
})

describe('remediate: Ctrl-C and a log that fails mid-way', () => {
  /** Two targets, each with one broken thing and a fix that takes `ms`. */
  async function twoWorlds(ms: number) {
    const a = world({})
    const b = world({})
    for (const w of [a, b]) {
      const run = w.rb.checks[0]!.run
      w.rb.checks[0]!.run = async (ctx) => {
        const f = await run(ctx)
        if (f.fix?.apply) {
          const apply = f.fix.apply
          f.fix.apply = async (signal) => {
            await new Promise((r) => setTimeout(r, ms))
            return signal.aborted ? {ok: false, detail: 'aborted'} : apply(signal)
          }
        }
        return f
      }
    }
    const runs = [await walkTarget(a.rb, {name: 'a'}, settings()), await walkTarget(b.rb, {name: 'b'}, settings())]
    return {a, b, runs}
  }

  it('Ctrl-C stops the fix in progress and starts no other; both decisions are audited', async () => {
    const {a, b, runs} = await twoWorlds(300)
    const stop = new AbortController()
    setTimeout(() => stop.abort(new Error('interrupted (Ctrl-C)')), 100)
    const audit = new AuditLog(join(dir, 'audit.jsonl'), '0.1.0')
    await remediate(runs, {kind: 'yes'}, audit, 1000, {}, stop.signal)
    expect(a.state.broken && b.state.broken).toBe(true)
    expect(runs[0]!.report.checks[0]!.outcome?.detail).toMatch(/^interrupted \(Ctrl-C\) while applying; stopped/)
    expect(runs[1]!.report.checks[0]!.outcome).toMatchObject({decision: 'declined', detail: 'declined (interrupted (Ctrl-C)): nothing changed'})
    const lines = (await readFile(audit.path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l))
    expect(lines.map((l) => [l.target, l.decision])).toEqual([
      ['a', 'applied'],
      ['b', 'declined'],
    ])
  })

  it('a re-check after a fix works even when the diagnosis was cut short by its deadline', async () => {
    const {state, rb} = world()
    const diagnosis = new AbortController()
    const run = await walkTarget(rb, {name: 'default'}, {...settings(), signal: diagnosis.signal})
    diagnosis.abort(new Error('the run deadline (1s, --deadline) passed'))
    await remediate([run], {kind: 'yes'}, new AuditLog(join(dir, 'a.jsonl'), '0.1.0'), 100)
    expect(state.broken).toBe(false)
    expect(run.report.checks[0]?.outcome).toMatchObject({ok: true, verified: true})
  })

  it('when a line cannot reach the log after a change, the outcome says so and no further fix is made', async () => {
    const {a, b, runs} = await twoWorlds(0)
    const audit = new AuditLog('/dev/full', '0.1.0')
    await remediate(runs, {kind: 'yes'}, audit, 1000)
    expect(a.state.broken).toBe(false) // /dev/full opens fine: the first fix was made…
    expect(runs[0]!.report.checks[0]!.outcome?.detail).toMatch(/NOT AUDITED: the audit log \/dev\/full could not be written \(ENOSPC\)/)
    expect(b.state.broken).toBe(true) // …and then nothing else
    expect(runs[1]!.report.checks[0]!.outcome).toMatchObject({decision: 'refused'})
  })
})
