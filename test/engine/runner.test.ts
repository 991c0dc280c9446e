import {describe, expect, it} from 'vitest'

import {CheckContext, type RunSettings} from '../../src/engine/context.js'
import {effectiveStatus, flowchartChecks, mapBounded, walkTarget} from '../../src/engine/runner.js'
import {clearSecrets} from '../../src/engine/redact.js'
import type {CheckSpec, Finding, Runbook} from '../../src/engine/types.js'

interface Target {
  name: string
}

function settings(over: Partial<RunSettings> = {}): RunSettings {
  return {timeoutMs: 200, signal: new AbortController().signal, verbose: false, writeProbes: false, env: {}, ...over}
}

function check(id: string, run: (ctx: CheckContext<Target>) => Promise<Finding> | Finding, extra: Partial<CheckSpec<CheckContext<Target>>> = {}): CheckSpec<CheckContext<Target>> {
  return {id, title: id, severity: 'medium', docs: 'Section', run: async (ctx) => run(ctx), ...extra}
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function runbook(checks: CheckSpec<CheckContext<Target>>[], flow: Runbook<CheckContext<Target>, Target>['flow']): Runbook<CheckContext<Target>, Target> {
  return {system: 'callfs', title: 'Test Guide', guide: 'test.md', checks, flow, createContext: (t, s) => new CheckContext('callfs', t, s)}
}

describe('walkTarget', () => {
  it('follows the branch matching the outcome and skips the other with a reason', async () => {
    const rb = runbook(
      [
        check('root', () => ({status: 'fail', summary: 'down'})),
        check('when-down', () => ({status: 'ok', summary: 'looked'})),
        check('when-up', () => ({status: 'ok', summary: 'never'})),
        check('deeper', () => ({status: 'ok', summary: 'never'})),
      ],
      [
        {
          check: 'root',
          branches: [
            {label: 'no', when: {status: ['fail']}, then: [{check: 'when-down'}]},
            {label: 'yes', when: {status: ['ok']}, then: [{check: 'when-up', branches: [{label: 'x', when: {status: ['ok']}, then: [{check: 'deeper'}]}]}]},
          ],
        },
      ],
    )
    const run = await walkTarget(rb, {name: 'default'}, settings())
    const by = Object.fromEntries(run.report.checks.map((c) => [c.id, c]))
    expect(run.report.path).toEqual(['root', 'when-down'])
    expect(by['when-down']?.status).toBe('ok')
    expect(by['when-up']?.status).toBe('skipped')
    expect(by['when-up']?.summary).toBe('not reached: root is fail, so the "yes" branch was not taken')
    expect(by.deeper?.status).toBe('skipped')
    expect(run.report.status).toBe('fail')
  })

  it('takes a branch narrowed by an evidence field only when the field matches', async () => {
    const make = (reason: string) =>
      runbook(
        [check('db', () => ({status: 'fail', summary: 'x', evidence: {reason}})), check('conn', () => ({status: 'fail', summary: 'full'}))],
        [{check: 'db', branches: [{label: 'full', when: {status: ['fail'], evidence: {reason: 'too-many'}}, then: [{check: 'conn'}]}]}],
      )
    const hit = await walkTarget(make('too-many'), {name: 'a'}, settings())
    const miss = await walkTarget(make('refused'), {name: 'a'}, settings())
    expect(hit.report.checks.find((c) => c.id === 'conn')?.status).toBe('fail')
    expect(miss.report.checks.find((c) => c.id === 'conn')?.status).toBe('skipped')
  })

  it('runs siblings concurrently and a check named on two paths only once', async () => {
    let runs = 0
    const slow = (id: string) => check(id, async () => (await sleep(150), {status: 'ok', summary: id}))
    const rb = runbook(
      [slow('a'), slow('b'), slow('c'), check('shared', () => (runs++, {status: 'ok', summary: 'once'}))],
      [
        {check: 'a', branches: [{label: 'y', when: {status: ['ok']}, then: [{check: 'shared'}]}]},
        {check: 'b', branches: [{label: 'y', when: {status: ['ok']}, then: [{check: 'shared'}]}]},
        {check: 'c'},
      ],
    )
    const started = Date.now()
    await walkTarget(rb, {name: 'a'}, settings({timeoutMs: 1000}))
    expect(Date.now() - started).toBeLessThan(400)
    expect(runs).toBe(1)
  })

  it('turns a check that overruns its budget into unknown, on time', async () => {
    const rb = runbook([check('hang', () => new Promise<Finding>(() => {}), {budgetMs: () => 150})], [{check: 'hang'}])
    const started = Date.now()
    const run = await walkTarget(rb, {name: 'a'}, settings())
    expect(Date.now() - started).toBeLessThan(500)
    expect(run.report.checks[0]?.status).toBe('unknown')
    expect(run.report.checks[0]?.summary).toMatch(/did not finish within 150ms/)
  })

  it('ends every pending check as unknown when the run is aborted', async () => {
    const controller = new AbortController()
    const rb = runbook([check('hang', () => new Promise<Finding>(() => {}), {budgetMs: () => 60_000})], [{check: 'hang'}])
    setTimeout(() => controller.abort(new Error('interrupted (Ctrl-C)')), 100)
    const run = await walkTarget(rb, {name: 'a'}, settings({signal: controller.signal}))
    expect(run.report.checks[0]?.status).toBe('unknown')
    expect(run.report.checks[0]?.summary).toBe('interrupted (Ctrl-C) before this check finished')
  })

  it('turns a throwing check into unknown with its message, without a stack unless verbose', async () => {
    const rb = runbook([check('boom', () => Promise.reject(new Error('kaput')))], [{check: 'boom'}])
    const quiet = await walkTarget(rb, {name: 'a'}, settings())
    expect(quiet.report.checks[0]).toMatchObject({status: 'unknown', summary: 'the check itself failed: kaput', evidence: {}})
    const loud = await walkTarget(rb, {name: 'a'}, settings({verbose: true}))
    expect(String(loud.report.checks[0]?.evidence.stack)).toMatch(/kaput/)
  })

  it('raises severity but never lowers it, and carries the fix only for warn and fail', async () => {
    const fix = {id: 'x.fix', title: 'Fix', plan: ['p'], commands: ['c'], apply: async () => ({ok: true, detail: 'd'})}
    const rb = runbook(
      [
        check('up', () => ({status: 'fail', summary: 's', severity: 'critical', fix}), {remediations: [{id: 'x.fix', title: 'Fix', automated: true, risk: 'safe'}]}),
        check('down', () => ({status: 'ok', summary: 's', severity: 'low', fix}), {remediations: [{id: 'x.fix', title: 'Fix', automated: true, risk: 'safe'}]}),
      ],
      [{check: 'up'}, {check: 'down'}],
    )
    const run = await walkTarget(rb, {name: 'a'}, settings())
    const [up, down] = run.report.checks
    expect(up?.severity).toBe('critical')
    expect(up?.remediation).toEqual({id: 'x.fix', title: 'Fix', risk: 'safe', automated: true, plan: ['p'], commands: ['c'], docs: 'shared guide: Test Guide > Section'})
    expect(down?.severity).toBe('medium')
    expect(down?.remediation).toBeNull()
    expect(run.fixes.has('up')).toBe(true)
    expect(run.fixes.has('down')).toBe(false)
  })

  it('recheck runs one check again on a fresh context', async () => {
    let n = 0
    const rb = runbook([check('flip', (ctx) => ctx.memo('k', async () => (n++ === 0 ? {status: 'fail', summary: 'first'} : {status: 'ok', summary: 'second'})))], [{check: 'flip'}])
    const run = await walkTarget(rb, {name: 'a'}, settings())
    expect(run.report.checks[0]?.status).toBe('fail')
    expect((await run.recheck('flip')).status).toBe('ok')
  })
})

describe('secrets named by the target', () => {
  it('are masked from the first check on, even when no check reads them', async () => {
    const rb: Runbook<CheckContext<{name: string; token_env: string}>, {name: string; token_env: string}> = {
      system: 'callfs',
      title: 'Test Guide',
      guide: 'test.md',
      checks: [check('leaky', () => ({status: 'fail', summary: 'the server said: bad token Tok-0123456789-secret'})) as never],
      flow: [{check: 'leaky'}],
      createContext: (t, s) => new CheckContext('callfs', t, s),
    }
    const run = await walkTarget(rb, {name: 'a', token_env: 'MY_TOKEN'}, settings({env: {MY_TOKEN: 'Tok-0123456789-secret'}}))
    expect(run.report.checks[0]?.summary).toBe('the server said: bad token ****')
    clearSecrets()
  })
})

describe('helpers', () => {
  it('flowchartChecks lists each check once in drawing order', () => {
    expect(flowchartChecks([{check: 'a', branches: [{label: 'x', when: {status: ['ok']}, then: [{check: 'b'}, {check: 'a'}]}]}, {check: 'c'}])).toEqual(['a', 'b', 'c'])
  })

  it('effectiveStatus counts a verified fix as ok', () => {
    const base = {id: 'x', status: 'fail' as const, severity: 'high' as const, title: '', summary: '', evidence: {}, durationMs: 0, remediation: null}
    expect(effectiveStatus({...base, outcome: {decision: 'applied', ok: true, verified: true, detail: ''}})).toBe('ok')
    expect(effectiveStatus({...base, outcome: {decision: 'applied', ok: true, verified: false, detail: ''}})).toBe('fail')
    expect(effectiveStatus({...base, outcome: null})).toBe('fail')
  })

  it('mapBounded keeps order and never exceeds the limit', async () => {
    let inFlight = 0
    let peak = 0
    const out = await mapBounded([1, 2, 3, 4, 5, 6], 2, async (n) => {
      inFlight++
      peak = Math.max(peak, inFlight)
      await sleep(20)
      inFlight--
      return n * 10
    })
    expect(out).toEqual([10, 20, 30, 40, 50, 60])
    expect(peak).toBe(2)
  })
})
