import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {callfsRunbook} from '../../../src/runbooks/callfs/index.js'
import {flowchartChecks} from '../../../src/engine/runner.js'
import {startCallfsWorld, type CallfsWorld} from '../../support/callfs-world.js'

let w: CallfsWorld
beforeAll(async () => {
  w = await startCallfsWorld({pg: true, redis: true, sim: {}})
})
afterAll(() => w?.stop())

describe('a healthy CallFS', () => {
  it('walks the whole "yes" side of the flowchart and finds nothing wrong', async () => {
    const run = await w.walk({}, {writeProbes: true})
    const by = Object.fromEntries(run.report.checks.map((c) => [c.id, c]))
    const notOk = run.report.checks.filter((c) => c.status !== 'ok').map((c) => `${c.id}: ${c.status} ${c.summary}`)
    // Only the down branch and the local-service checks (no callfs unit or process here) are skipped.
    expect(notOk.sort()).toEqual([
      expect.stringMatching(/^callfs\.port\.conflict: skipped not reached/),
      expect.stringMatching(/^callfs\.process\.down: skipped not reached/),
    ])
    expect(by['callfs.api.health']?.summary).toMatch(/\{"status":"ok"\}/)
    expect(run.report.status).toBe('ok')
    expect(run.report.path[0]).toBe('callfs.config.invalid')
  })

  it('lists every check in the flowchart exactly once', () => {
    expect(flowchartChecks(callfsRunbook.flow).sort()).toEqual(callfsRunbook.checks.map((c) => c.id).sort())
  })
})
