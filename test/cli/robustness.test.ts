// The CLI against a world that misbehaves the way production does: a server that accepts and
// never answers, an endless body, a proxy's HTML page, a Redis that is SIGSTOPped, a PostgreSQL
// with every slot taken, and nothing listening at all. Each run ends within its deadline, says
// in one line what failed, and shows no stack trace.
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {REPO, runCli, startCallfsWorld, type CallfsWorld, type CliResult} from '../support/callfs-world.js'

const FAKEBIN = join(REPO, 'test', 'support', 'fakebin')
const TIMEOUT_MS = 1000
/** What a whole run may take beyond its probe time-out on an idle machine: start-up, imports, report. */
const SLACK_MS = 1500
/** `opsctl runbook list` on an idle machine (Node, oclif, every runbook module): ~300–400 ms. */
const IDLE_STARTUP_MS = 400

/**
 * Asserts a run ends within `timeoutMs` + `slackMs`. Two test files run at once on two cores
 * and other work may share them: a CPU-bound start-up that takes 400 ms idle takes 1.2 s then,
 * without opsctl waiting on anything longer. So, as benchmarks do, a run over budget is run
 * again (twice at most) and the fastest counts; if even that is over, it is judged against the
 * machine as it is: `opsctl runbook list` (the same start-up, no I/O) is timed and the slack
 * stretched by how much slower than idle it was. A run that really waits (a time-out not
 * honoured, a retry loop) is over budget every time. Idle, the budget is timeoutMs + slackMs.
 */
async function expectWithin(first: CliResult, again: () => Promise<CliResult>, timeoutMs: number, slackMs: number, detail = ''): Promise<void> {
  const idleBudget = timeoutMs + slackMs
  const times = [first.ms]
  while (Math.min(...times) > idleBudget && times.length < 3) times.push((await again()).ms)
  const best = Math.min(...times)
  if (best <= idleBudget) return
  const startup: number[] = []
  for (let i = 0; i < 2; i++) {
    const cal = await runCli(['runbook', 'list'], {env})
    expect(cal.code).toBe(0)
    startup.push(cal.ms)
  }
  const budget = timeoutMs + Math.round(slackMs * Math.max(1, Math.max(...startup) / IDLE_STARTUP_MS))
  expect(best, `runs took ${times.join('/')}ms, over ${idleBudget}ms; busy machine (runbook list ${startup.join('/')}ms) allows ${budget}ms. ${detail}`).toBeLessThanOrEqual(budget)
}

let w: CallfsWorld
let env: Record<string, string>
beforeAll(async () => {
  // max_connections 8, 3 reserved for superusers: five connections fill it.
  w = await startCallfsWorld({pg: {maxConnections: 8}, redis: true, sim: {}})
  // systemctl answers like in a container (no systemd), wherever the tests run.
  env = {...w.env, PATH: `${FAKEBIN}:${process.env.PATH ?? '/usr/bin:/bin'}`}
})
afterAll(() => w?.stop())

interface JsonCheck {
  id: string
  status: string
  summary: string
  evidence: Record<string, unknown>
  durationMs: number
}

interface Parsed extends CliResult {
  /** The same command once more (for timing). */
  again(): Promise<CliResult>
  checks: Record<string, JsonCheck>
  status: string
  /** The run as opsctl timed it (from after the configuration is loaded). */
  durationMs: number
}

/** `diagnose callfs --json --no-fix`: stdout must be the JSON document and nothing else. */
async function diagnoseJson(overrides: Record<string, unknown> = {}, flags: string[]): Promise<Parsed> {
  const config = await w.writeOpsctlConfig(overrides)
  const args = ['diagnose', 'callfs', '--config', config, '--json', '--no-fix', ...flags]
  const r = await runCli(args, {env})
  let doc: {status: string; durationMs: number; systems: Array<{checks: JsonCheck[]}>}
  try {
    doc = JSON.parse(r.stdout) as typeof doc
  } catch {
    throw new Error(`stdout is not one JSON document (exit ${r.code}):\n${r.stdout.slice(0, 2000)}\nstderr:\n${r.stderr.slice(0, 2000)}`)
  }
  const checks = Object.fromEntries((doc.systems[0]?.checks ?? []).map((c) => [c.id, c]))
  return {...r, checks, status: doc.status, durationMs: doc.durationMs, again: () => runCli(args, {env})}
}

/** Ended within `timeoutMs` + slack, exit 2 (fail), nothing on stderr, every summary one line. */
async function expectCleanFailure(r: Parsed, timeoutMs: number, slackMs = SLACK_MS): Promise<void> {
  expect(r.stderr).toBe('')
  expect(r.code).toBe(2)
  expect(r.status).toBe('fail')
  for (const c of Object.values(r.checks)) {
    expect(c.summary, c.id).not.toContain('\n')
    expect(c.summary, c.id).not.toMatch(/\bat .+\.[cm]?js:\d+/) // no stack frame in a summary
  }
  const timing = `run ${r.durationMs}ms inside opsctl; checks: ${Object.values(r.checks).map((c) => `${c.id} ${c.durationMs}ms`).join(', ')}`
  await expectWithin(r, r.again, timeoutMs, slackMs, timing)
}

describe('diagnose callfs against a broken world ends in time, with one clear line', () => {
  it('a stuck server (accepts, never answers /health): the whole run ends within --timeout 1s + slack', async () => {
    w.sim!.setHealthFault('hang')
    try {
      const config = await w.writeOpsctlConfig()
      const args = ['diagnose', 'callfs', '--config', config, '--timeout', '1s', '--no-fix']
      const port = new URL(w.sim!.url).port
      const hung = new RegExp(`^ {2}✗ callfs\\.api\\.health +GET https://localhost:${port}/health: localhost:${port} accepted the connection but sent no response within 1s: the service is hung or overloaded$`, 'm')
      let r = await runCli(args, {env})
      // On a very busy machine even the TLS handshake may not finish within 1s (then the line
      // says so, correctly). Up to two more tries; a wrong diagnosis is wrong every time.
      for (let i = 0; i < 2 && !hung.test(r.stdout) && /TLS handshake within|connect timed out/.test(r.stdout); i++) r = await runCli(args, {env})
      // The human report: the reason on the check's own line, and the verdict.
      expect(r.stdout, r.stdout.split('\n').find((l) => l.includes('callfs.api.health'))).toMatch(hung)
      await expectWithin(r, () => runCli(args, {env}), TIMEOUT_MS, SLACK_MS)
      expect(r.code).toBe(2)
      expect(r.stderr).toBe('')
      expect(r.stdout).toMatch(/^✗ fail · .* · exit 2$/m)
      expect(r.stdout).not.toMatch(/\bat .+\.[cm]?js:\d+/)
      // The run went on past the stuck server: the database and Redis were examined to the end
      // (answered, or failed on their own time-out on a busy machine), not stopped with it.
      expect(r.stdout).toMatch(/^ {2}[✓✗] callfs\.db\.reachable /m)
      expect(r.stdout).toMatch(/^ {2}[✓✗] callfs\.redis\.ping /m)
      expect(r.stdout).not.toContain('the run was stopped')
    } finally {
      w.sim!.setHealthFault('none')
    }
  })

  it('a 1 GiB /health body: read up to the cap, then given up, not parsed', async () => {
    w.sim!.setHealthFault('huge-body')
    try {
      const r = await diagnoseJson({}, ['--timeout', '3s'])
      await expectCleanFailure(r, 3000)
      expect(r.checks['callfs.api.health']).toMatchObject({
        status: 'fail',
        summary: expect.stringMatching(/answered 200 but the body exceeded the 1048576-byte cap and was cut off: not parsed as JSON/),
        evidence: expect.objectContaining({status: 200, contentType: 'application/json'}),
      })
      // The excerpt in the evidence is short: the report never carries the megabyte.
      expect(String(r.checks['callfs.api.health']?.evidence.body).length).toBeLessThan(1000)
      expect(r.stdout.length).toBeLessThan(100_000)
    } finally {
      w.sim!.setHealthFault('none')
    }
  })

  it('a body that trickles one byte at a time: the deadline covers the body, not each read', async () => {
    w.sim!.setHealthFault('slow-loris')
    try {
      const r = await diagnoseJson({}, ['--timeout', '1s'])
      await expectCleanFailure(r, 1000)
      expect(r.checks['callfs.api.health']).toMatchObject({status: 'fail', evidence: expect.objectContaining({error: 'timeout'})})
      expect(r.checks['callfs.api.health']?.summary).toMatch(/within 1s/)
    } finally {
      w.sim!.setHealthFault('none')
    }
  })

  it("HTML where JSON was expected (a proxy's sign-in page): named as such, with the page's title", async () => {
    w.sim!.setHealthFault('html')
    try {
      const r = await diagnoseJson({}, ['--timeout', '3s'])
      await expectCleanFailure(r, 3000)
      expect(r.checks['callfs.api.health']).toMatchObject({
        status: 'fail',
        summary: expect.stringMatching(/answered 200 but answered HTML, not JSON: <title>Sign in - Access Gateway<\/title> — is something other than CallFS on this port\?$/),
        evidence: expect.objectContaining({status: 200, contentType: 'text/html'}),
      })
    } finally {
      w.sim!.setHealthFault('none')
    }
  })

  it('a SIGSTOPped Redis (accepts, never answers): ping fails at the time-out (2s); the lock checks are not attempted', async () => {
    w.redis!.pause()
    try {
      const r = await diagnoseJson({}, ['--timeout', '2s'])
      await expectCleanFailure(r, 2000)
      expect(r.checks['callfs.redis.ping']).toMatchObject({
        status: 'fail',
        summary: expect.stringMatching(/^redis:\/\/127\.0\.0\.1:\d+\/0: Redis at 127\.0\.0\.1:\d+ accepted the connection but did not answer within 2s/),
        evidence: expect.objectContaining({error: 'timeout'}),
      })
      expect(r.checks['callfs.redis.orphaned-locks']).toBeUndefined() // skipped: not listed without --verbose
      // Everything not behind Redis still answered.
      expect(r.checks['callfs.api.health']?.status).toBe('ok')
      expect(r.checks['callfs.db.reachable']?.status).toBe('ok')
    } finally {
      w.redis!.resume()
    }
  })

  it('a PostgreSQL at max_connections: refused with SQLSTATE 53300, said plainly, the connections branch taken', async () => {
    const pg = w.pg!
    const held: Array<{release(): Promise<void>}> = []
    try {
      // Take every slot a non-superuser may have, one by one, until the server refuses.
      for (let i = 0; i < 20; i++) {
        try {
          held.push(await pg.hold(1, {user: 'callfs', db: 'callfs'}))
        } catch (error) {
          expect(String(error)).toMatch(/connection slots are reserved|too many clients/)
          break
        }
      }
      expect(held.length).toBe(5)
      const r = await diagnoseJson({}, ['--timeout', '3s'])
      await expectCleanFailure(r, 3000)
      expect(r.checks['callfs.db.reachable']).toMatchObject({
        status: 'fail',
        summary: expect.stringMatching(/server has no free connection slots \(max_connections reached\) — find idle or leaked connections in pg_stat_activity, or raise max_connections$/),
        evidence: expect.objectContaining({code: '53300', reason: 'too-many-connections'}),
      })
      expect(r.checks['callfs.db.connections']).toMatchObject({status: 'fail', evidence: expect.objectContaining({code: '53300'})})
      expect(r.checks['callfs.db.migrations']).toBeUndefined()
    } finally {
      await Promise.all(held.map((h) => h.release()))
    }
  })

  it('every endpoint refusing (API, metrics, PostgreSQL, Redis): all reported within ~1.5 s, at the default 5s time-out', async () => {
    const closed = {
      url: 'https://localhost:1',
      metrics_url: 'http://127.0.0.1:1/metrics',
      postgres: 'postgres://callfs@127.0.0.1:1/callfs',
      redis: 'redis://127.0.0.1:1/0',
    }
    const r = await diagnoseJson(closed, ['--timeout', '5s'])
    await expectCleanFailure(r, 0, 1500)
    for (const id of ['callfs.api.health', 'callfs.db.reachable', 'callfs.redis.ping']) {
      expect(r.checks[id], id).toMatchObject({
        status: 'fail',
        // The endpoints share 127.0.0.1:1: the first to try says so, the others that it was earlier.
        summary: expect.stringMatching(/nothing listens on (localhost|127\.0\.0\.1):1 \(connection refused\): start the service or check the port( \(earlier in this run; not retried\))?$/),
        evidence: expect.objectContaining({error: 'refused'}),
      })
    }
  })
})
