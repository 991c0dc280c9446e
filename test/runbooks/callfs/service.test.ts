// The CallFS service checks: callfs.process.down (through the fake systemctl/journalctl, and by
// real processes where there is no systemd) and callfs.port.conflict (real processes listening on
// real ports), with their fixes applied, verified and audited.

import {spawn, type ChildProcess} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {access, copyFile, mkdir, mkdtemp, readFile, rm, rmdir, symlink, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {afterAll, afterEach, beforeAll, beforeEach, describe, expect, it} from 'vitest'

import {findProcesses} from '../../../src/diagnostics/system.js'
import {AuditLog} from '../../../src/engine/audit.js'
import {pendingFixes, remediate} from '../../../src/engine/remediate.js'
import type {TargetRun} from '../../../src/engine/runner.js'
import {startCallfsWorld, type CallfsWorld} from '../../support/callfs-world.js'
import {freePort} from '../../support/ports.js'
import {exited, isRunning, startNamedProcess, waitUntil} from '../../support/processes.js'

const FAKEBIN = fileURLToPath(new URL('../../support/fakebin', import.meta.url))
// This file's own unit name (at most 15 characters, the kernel's comm): other test files run at
// the same time and may start, or look for, processes named after their own unit.
const UNIT = `cfs-svc-${randomBytes(3).toString('hex')}`
const NOT_BOOTED = 'systemd is not running on this host (System has not been booted with systemd as init system)'

let w: CallfsWorld
let state: string
const children: ChildProcess[] = []
const savedPath = process.env.PATH

beforeAll(async () => {
  // Every test file runs in its own worker: the fake systemctl/journalctl come first on PATH here.
  process.env.PATH = `${FAKEBIN}:${savedPath ?? '/usr/bin:/bin'}`
  w = await startCallfsWorld({sim: false})
})
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  await w?.stop()
  process.env.PATH = savedPath
})
beforeEach(async () => {
  state = await mkdtemp(join(w.dir, 'systemd-'))
})
afterEach(async () => {
  delete process.env.OPSCTL_FAKE_SYSTEMD_DIR
  // Killed and reaped: an unreaped child would linger as a zombie that still bears the unit's name.
  await Promise.all(children.splice(0).map(async (c) => {
    if (isRunning(c)) {
      c.kill('SIGKILL')
      await exited(c)
    }
  }))
  await rm(state, {recursive: true, force: true})
})

/** systemd state of the unit as `systemctl show` prints it (systemd 252 order). */
function unitState(o: {active: 'active' | 'failed' | 'activating'; pid?: number}): string {
  const failed = o.active === 'failed'
  return [
    `MainPID=${failed ? 0 : (o.pid ?? 4242)}`,
    `Result=${failed ? 'exit-code' : 'success'}`,
    'User=callfs',
    `ExecMainStatus=${failed ? 1 : 0}`,
    'LoadState=loaded',
    `ActiveState=${o.active}`,
    `SubState=${failed ? 'failed' : o.active === 'activating' ? 'start' : 'running'}`,
    'ActiveEnterTimestamp=Tue 2024-03-12 10:15:01 UTC',
    'InactiveEnterTimestamp=Tue 2024-03-12 10:20:44 UTC',
    '',
  ].join('\n')
}

async function systemd(o: {active: 'active' | 'failed' | 'activating'; pid?: number; journal?: string[]}): Promise<void> {
  await writeFile(join(state, `${UNIT}.service.state`), unitState(o))
  if (o.journal) await writeFile(join(state, `${UNIT}.service.journal`), `${o.journal.join('\n')}\n`)
  process.env.OPSCTL_FAKE_SYSTEMD_DIR = state
}

async function calls(): Promise<string[]> {
  const text = await readFile(join(state, 'calls.log'), 'utf8').catch(() => '')
  return text.split('\n').filter(Boolean)
}

function check(id: string, overrides: Record<string, unknown> = {}) {
  return w.check(id, {unit: UNIT, ...overrides})
}

/** Walk the flowchart and keep only the named check's fix on offer (the walk finds others: DB, Redis down). */
async function walkFor(id: string, overrides: Record<string, unknown> = {}, settings: Parameters<CallfsWorld['walk']>[1] = {}): Promise<TargetRun> {
  const run = await w.walk({unit: UNIT, ...overrides}, settings)
  expect(run.fixes.has(id)).toBe(true)
  for (const other of [...run.fixes.keys()]) if (other !== id) run.fixes.delete(other)
  return run
}


function report(run: TargetRun, id: string) {
  const r = run.report.checks.find((c) => c.id === id)
  if (!r) throw new Error(`no report for ${id}`)
  return r
}

/** A real process whose executable is named `name` (a copy of sleep). */
async function startNamedSleeper(name: string): Promise<ChildProcess> {
  const child = await startNamedProcess(name, {dir: w.dir})
  children.push(child)
  return child
}

/**
 * A real node process listening on 127.0.0.1:`port` (0: any), started as `exe` (a symlink named
 * after a unit makes its comm that name). Resolves once it listens, with the port.
 */
async function startListener(port: number, exe = process.execPath): Promise<{child: ChildProcess; port: number}> {
  const script = `const s=require('net').createServer(c=>c.end());s.listen(${port},'127.0.0.1',()=>console.log(s.address().port));process.on('SIGTERM',()=>process.exit(0))`
  const child = spawn(exe, ['-e', script], {stdio: ['ignore', 'pipe', 'inherit']})
  children.push(child)
  const got = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('\n')) resolve(Number(out.trim()))
    })
    child.once('exit', (code) => reject(new Error(`listener exited ${code}`)))
  })
  return {child, port: got}
}

// ---------------------------------------------------------------------------------------------

describe('callfs.process.down with systemd', () => {
  it('ok: the unit is active', async () => {
    await systemd({active: 'active', pid: 31337})
    const r = await check('callfs.process.down')
    expect(r.status).toBe('ok')
    expect(r.summary).toBe(`unit ${UNIT} is active (running), pid 31337`)
    expect(r.evidence).toMatchObject({unit: UNIT, activeState: 'active', mainPid: 31337})
  })

  it('warn: the unit is still activating', async () => {
    await systemd({active: 'activating'})
    const r = await check('callfs.process.down')
    expect(r.status).toBe('warn')
    expect(r.summary).toBe(`unit ${UNIT} is activating (start)`)
  })

  it('fail: the unit failed — the journal lines are the evidence, a restart the fix', async () => {
    const journal = Array.from({length: 20}, (_, i) => `line ${i + 1}`)
    journal.push('Error: failed to connect to metadata store: dial tcp 127.0.0.1:5432: connect: connection refused')
    await systemd({active: 'failed', journal})
    const r = await check('callfs.process.down')
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`unit ${UNIT} is failed (result exit-code, exit status 1) since Tue 2024-03-12 10:20:44 UTC`)
    // The last 15 lines, oldest first.
    expect(r.evidence.journal).toEqual(journal.slice(-15))
    expect(r.evidence).toMatchObject({activeState: 'failed', result: 'exit-code', execMainStatus: 1})
    expect(r.remediation).toMatchObject({id: 'callfs.process.restart', automated: true, risk: 'disruptive', commands: [`sudo systemctl restart ${UNIT}`, `journalctl -u ${UNIT} -n 50 --no-pager`]})
    // Diagnosing changed nothing.
    expect((await calls()).filter((c) => /restart|start|stop/.test(c))).toEqual([])
  })

  it('the restart fix: applied, verified by the re-check, audited', async () => {
    await systemd({active: 'failed', journal: ['boom']})
    await writeFile(join(state, `${UNIT}.service.mainpid`), '5151\n')
    const run = await walkFor('callfs.process.down')
    expect(report(run, 'callfs.api.health').status).toBe('fail')
    expect(pendingFixes([run]).map((p) => p.fix.id)).toEqual(['callfs.process.restart'])

    const audit = await w.applyYes(run)
    const r = report(run, 'callfs.process.down')
    expect(r.outcome).toEqual({decision: 'applied', ok: true, verified: true, detail: `restarted ${UNIT}; active (pid 5151); re-check: ok`})
    expect(await calls()).toContain(`systemctl restart ${UNIT}`)
    expect(await check('callfs.process.down')).toMatchObject({status: 'ok', summary: `unit ${UNIT} is active (running), pid 5151`})
    expect(audit).toEqual([
      expect.objectContaining({
        system: 'callfs',
        check: 'callfs.process.down',
        remediation: 'callfs.process.restart',
        plan: [`systemctl restart ${UNIT} (only if it is still not active), then wait for it to become active`],
        decision: 'applied',
        result: {ok: true, detail: expect.stringContaining(`restarted ${UNIT}`)},
        verified: true,
      }),
    ])
  })

  it('the unit came back by itself before the fix ran: left alone', async () => {
    await systemd({active: 'failed'})
    const run = await walkFor('callfs.process.down')
    await systemd({active: 'active', pid: 777})
    const audit = await w.applyYes(run)
    expect(report(run, 'callfs.process.down').outcome).toEqual({
      decision: 'applied',
      ok: true,
      verified: true,
      detail: `${UNIT} is active again; left alone; re-check: ok`,
    })
    expect((await calls()).filter((c) => c.includes('restart'))).toEqual([])
    expect(audit).toHaveLength(1)
    expect(audit[0]).toMatchObject({decision: 'applied', verified: true, result: {ok: true}})
  })

  it('a restart that fails is reported as failed and not verified', async () => {
    await systemd({active: 'failed'})
    await writeFile(join(state, `${UNIT}.service.start-fails`), '3\n')
    const run = await walkFor('callfs.process.down')
    const audit = await w.applyYes(run)
    const outcome = report(run, 'callfs.process.down').outcome
    expect(outcome).toMatchObject({decision: 'applied', ok: false, verified: false})
    expect(outcome?.detail).toContain(`systemctl restart ${UNIT} exited 1: Job for ${UNIT}.service failed because the control process exited with error code.`)
    expect(outcome?.detail).toContain(`re-check: fail (unit ${UNIT} is failed (result exit-code, exit status 3)`)
    expect(audit[0]).toMatchObject({decision: 'applied', verified: false, result: {ok: false}})
  })
})

describe('callfs.process.down: the restart guard cannot see the unit', () => {
  it('systemctl show fails when the fix runs: nothing is restarted', async () => {
    await systemd({active: 'failed'})
    const run = await walkFor('callfs.process.down')
    // From now on `systemctl show` fails as it does when the bus times out; every other verb is the fake's.
    const brokenDir = await mkdtemp(join(w.dir, 'broken-'))
    await writeFile(
      join(brokenDir, 'systemctl'),
      `#!/usr/bin/env bash\ncase " $* " in *" show "*) echo 'Failed to get properties: Connection timed out' >&2; exit 1 ;; esac\nexec ${join(FAKEBIN, 'systemctl')} "$@"\n`,
      {mode: 0o755},
    )
    const path = process.env.PATH
    process.env.PATH = `${brokenDir}:${path ?? ''}`
    try {
      const audit = await w.applyYes(run)
      const outcome = report(run, 'callfs.process.down').outcome
      expect(outcome).toMatchObject({decision: 'applied', ok: false, verified: false})
      expect(outcome?.detail).toMatch(/^could not re-check the unit; nothing restarted(;|$)/)
      expect(audit[0]).toMatchObject({remediation: 'callfs.process.restart', decision: 'applied', result: {ok: false, detail: expect.stringMatching(/^could not re-check the unit; nothing restarted/)}})
    } finally {
      process.env.PATH = path
    }
    expect((await calls()).filter((c) => /restart|start|stop/.test(c))).toEqual([])
  })
})

describe('callfs.process.down: a restart that hangs', () => {
  it('is stopped at the fix deadline: no systemctl is left running after remediate returns', async () => {
    await systemd({active: 'failed'})
    // A systemctl whose restart never returns (a stop job waiting on a hung process); every other
    // verb is the fake's.
    const hangDir = await mkdtemp(join(w.dir, 'hang-'))
    const marker = `${(Math.random() * 1000 + 1000).toFixed(4)}`
    await writeFile(
      join(hangDir, 'systemctl'),
      `#!/usr/bin/env bash\ncase " $* " in *" restart "*) exec sleep ${marker} ;; esac\nexec ${join(FAKEBIN, 'systemctl')} "$@"\n`,
      {mode: 0o755},
    )
    // The check's probes may take 10 s: only the fix deadline's signal can stop the hung systemctl sooner.
    const run = await walkFor('callfs.process.down', {}, {timeoutMs: 10_000})
    const path = process.env.PATH
    process.env.PATH = `${hangDir}:${path ?? ''}`
    try {
      const auditFile = join(w.dir, `audit-${randomBytes(4).toString('hex')}.jsonl`)
      // Fix deadline: 4 × 300 ms.
      await remediate([run], {kind: 'yes'}, new AuditLog(auditFile, '0.1.0'), 300)
      const outcome = report(run, 'callfs.process.down').outcome
      expect(outcome).toMatchObject({decision: 'applied', ok: false, verified: false})
      expect(outcome?.detail).toMatch(/^did not finish within 1\.2s; stopped/)
      // Killed with its process group when the deadline passed (not 10 s later by its own time-out).
      await waitUntil(async () => (await findProcesses({cmdlineIncludes: `sleep ${marker}`})).length === 0, 1000)
    } finally {
      process.env.PATH = path
      for (const p of await findProcesses({cmdlineIncludes: `sleep ${marker}`})) process.kill(p.pid, 'SIGKILL')
    }
  })
})

describe('callfs.process.down without systemd', () => {
  it('ok: a real process named after the unit is running', async () => {
    const child = await startNamedSleeper(UNIT)
    const r = await check('callfs.process.down')
    expect(r.status).toBe('ok')
    expect(r.summary).toBe(`${UNIT} is running (pid ${child.pid}); ${NOT_BOOTED}; systemctl cannot report units here — check the process directly`)
    expect(r.evidence).toEqual({pids: [child.pid]})
  })

  // BUG (src/diagnostics/system.ts findProcesses, used by CallfsContext.processes): a zombie
  // (exited, not yet reaped by its parent) keeps its comm and is listed like a running process, so
  // a CallFS that died under a parent that never reaps it reads as "running". findProcesses should
  // skip state Z/X (readStat already parses the state). Remove `.fails` once it does.
  it('fail: a dead CallFS left as a zombie is not a running one', async () => {
    const dir = await mkdtemp(join(w.dir, 'bin-'))
    const bin = join(dir, UNIT)
    await copyFile('/bin/sleep', bin)
    // The shell starts CallFS (which exits at once) and does not reap it until its stdin closes.
    const parent = spawn('sh', ['-c', `${bin} 0 & read x; wait`], {stdio: ['pipe', 'ignore', 'ignore']})
    children.push(parent)
    try {
      let zombie = 0
      // findProcesses no longer lists zombies: find the child through the parent's task list.
      await waitUntil(async () => {
        const kids = await readFile(`/proc/${parent.pid}/task/${parent.pid}/children`, 'utf8').catch(() => '')
        for (const pid of kids.trim().split(/\s+/).filter(Boolean).map(Number)) {
          const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
          if (stat.includes(`(${UNIT})`) && /\) Z /.test(stat)) zombie = pid
        }
        return zombie > 0
      })
      const r = await check('callfs.process.down')
      expect(r.summary).not.toContain(`pid ${zombie}`)
      expect(r.status).toBe('fail')
    } finally {
      // Let the shell reap it and leave: no zombie named after the unit outlives this test.
      parent.stdin?.end()
      await exited(parent)
      await waitUntil(async () => (await findProcesses({comm: UNIT})).length === 0)
    }
  })

  it('ok: systemd runs but has no such unit, and the process runs', async () => {
    process.env.OPSCTL_FAKE_SYSTEMD_DIR = state
    const child = await startNamedSleeper(UNIT)
    const r = await check('callfs.process.down')
    expect(r).toMatchObject({status: 'ok', summary: `${UNIT} is running (pid ${child.pid}); no ${UNIT} unit is installed`})
  })

  it('fail: no process, no unit — the manual start fix, nothing automated', async () => {
    const r = await check('callfs.process.down')
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`no ${UNIT} process is running, and ${NOT_BOOTED}; systemctl cannot report units here — check the process directly`)
    expect(r.evidence).toEqual({unit: UNIT, processes: 0})
    expect(r.remediation).toMatchObject({
      id: 'callfs.process.start',
      automated: false,
      risk: null,
      commands: [`callfs server --config ${w.configFile}`, `sudo systemctl start ${UNIT}`],
    })
    expect(r.fix?.apply).toBeUndefined()
  })

  it('skipped for a CallFS on another host', async () => {
    const r = await check('callfs.process.down', {url: 'https://callfs.example.invalid:8443'})
    expect(r.status).toBe('skipped')
  })
})

// ---------------------------------------------------------------------------------------------

describe('callfs.port.conflict', () => {
  it('ok: nothing listens on the port', async () => {
    const port = await freePort()
    const r = await check('callfs.port.conflict', {url: `https://localhost:${port}`})
    expect(r.status).toBe('ok')
    expect(r.summary).toBe(`nothing listens on :${port}; the port is free for CallFS`)
    expect(r.evidence).toEqual({port, listeners: []})
  })

  it('ok: CallFS itself (a process named after the unit) holds the port', async () => {
    const dir = await mkdtemp(join(w.dir, 'bin-'))
    const exe = join(dir, UNIT)
    await symlink(process.execPath, exe)
    const {child, port} = await startListener(0, exe)
    const r = await check('callfs.port.conflict', {url: `https://localhost:${port}`})
    expect(r.status).toBe('ok')
    expect(r.summary).toBe(`CallFS listens on :${port} (${UNIT} (pid ${child.pid}))`)
  })

  it('fail: a foreign process holds the port, named with its pid and command', async () => {
    const {child, port} = await startListener(0)
    const r = await check('callfs.port.conflict', {url: `https://localhost:${port}`})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`port ${port} is held by node (pid ${child.pid}), not CallFS`)
    expect(r.evidence).toMatchObject({port, listeners: [{address: '127.0.0.1', pid: child.pid, command: 'node', cmdline: expect.stringContaining(`${process.execPath} -e`)}]})
    expect(r.remediation).toMatchObject({id: 'callfs.port.stop-process', automated: true, risk: 'destructive', commands: [`sudo kill ${child.pid}`, `sudo kill -9 ${child.pid}   # only if it ignores SIGTERM`]})
    expect(r.fix?.confirmText).toBe('node')
    expect(isRunning(child)).toBe(true)
  })

  it('the stop fix: the foreign process is gone, the re-check passes, the decision is audited', async () => {
    const {child, port} = await startListener(0)
    const run = await walkFor('callfs.port.conflict', {url: `https://localhost:${port}`})
    expect(report(run, 'callfs.api.health').status).toBe('fail')
    expect(report(run, 'callfs.port.conflict').status).toBe('fail')
    const audit = await w.applyYes(run)
    await exited(child)
    expect(isRunning(child)).toBe(false)
    expect(child.exitCode).toBe(0) // it took the SIGTERM
    expect(report(run, 'callfs.port.conflict').outcome).toEqual({
      decision: 'applied',
      ok: true,
      verified: true,
      detail: `process ${child.pid} (node) exited after SIGTERM; re-check: ok`,
    })
    expect(audit).toEqual([
      expect.objectContaining({
        check: 'callfs.port.conflict',
        remediation: 'callfs.port.stop-process',
        plan: [expect.stringContaining(`send SIGTERM to node (pid ${child.pid}`), expect.stringContaining('send SIGKILL')],
        decision: 'applied',
        result: {ok: true, detail: expect.stringContaining('exited after SIGTERM')},
        verified: true,
      }),
    ])
  })

  it('another process holds the port by the time the fix runs: left alone', async () => {
    const first = await startListener(0)
    const port = first.port
    const run = await walkFor('callfs.port.conflict', {url: `https://localhost:${port}`})
    first.child.kill('SIGKILL')
    await exited(first.child)
    const second = await startListener(port)
    const audit = await w.applyYes(run)
    const outcome = report(run, 'callfs.port.conflict').outcome
    expect(outcome).toMatchObject({decision: 'applied', ok: true, verified: false})
    expect(outcome?.detail).toBe(
      `node (pid ${first.child.pid}) no longer holds :${port}; left alone; re-check: fail (port ${port} is held by node (pid ${second.child.pid}), not CallFS)`,
    )
    expect(isRunning(second.child)).toBe(true)
    expect(audit[0]).toMatchObject({remediation: 'callfs.port.stop-process', decision: 'applied', verified: false})
  })
})

// ---------------------------------------------------------------------------------------------

/** A cgroup named like systemd's for the unit (…/<unit>.service) in a writable hierarchy, with `pid` in it; removes it. */
async function inUnitCgroup(pid: number): Promise<() => Promise<void>> {
  const roots = ['/sys/fs/cgroup/systemd', '/sys/fs/cgroup/unified', '/sys/fs/cgroup']
  let root: string | undefined
  for (const r of roots) {
    if (await access(join(r, 'cgroup.procs')).then(() => true, () => false)) {
      root = r
      break
    }
  }
  if (!root) throw new Error('this test needs a writable cgroup hierarchy')
  const parent = join(root, `opsctl-test-${randomBytes(3).toString('hex')}`)
  const leaf = join(parent, `${UNIT}.service`)
  await mkdir(leaf, {recursive: true})
  await writeFile(join(leaf, 'cgroup.procs'), `${pid}\n`)
  return async () => {
    // The process is gone (killed by the caller) before its cgroup can be removed.
    await waitUntil(async () => (await readFile(join(leaf, 'cgroup.procs'), 'utf8').catch(() => '')).trim() === '')
    await rmdir(leaf)
    await rmdir(parent)
  }
}

describe('callfs.port.conflict: who counts as CallFS, who is never stopped', () => {
  it('a process in the unit\'s cgroup (a wrapper\'s child, whatever its name) is CallFS itself', async () => {
    const {child, port} = await startListener(0)
    const removeCgroup = await inUnitCgroup(child.pid as number)
    try {
      const cgroup = await readFile(`/proc/${child.pid}/cgroup`, 'utf8')
      expect(cgroup).toContain(`/${UNIT}.service`)
      const r = await check('callfs.port.conflict', {url: `https://localhost:${port}`})
      expect(r.status).toBe('ok')
      expect(r.summary).toBe(`CallFS listens on :${port} (node (pid ${child.pid}))`)
      expect(r.remediation).toBeNull()
    } finally {
      child.kill('SIGKILL')
      await exited(child)
      await removeCgroup()
    }
  })

  it('docker-proxy holds the port: fail with the manual fix only — opsctl never stops a container\'s proxy', async () => {
    const dir = await mkdtemp(join(w.dir, 'bin-'))
    const exe = join(dir, 'docker-proxy')
    await symlink(process.execPath, exe)
    const {child, port} = await startListener(0, exe)
    const r = await check('callfs.port.conflict', {url: `https://localhost:${port}`})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`port ${port} is held by docker-proxy (pid ${child.pid}), a container port forwarder, not CallFS`)
    expect(r.remediation).toMatchObject({
      id: 'callfs.port.change-port',
      automated: false,
      risk: null,
      plan: [
        `docker-proxy (pid ${child.pid}) forwards :${port} to a container: stop or re-map the container that publishes it, not the proxy (its runtime would start it again)`,
        expect.stringContaining('server.listen_addr'),
      ],
      commands: [`docker ps --filter publish=${port}`, `podman ps --filter publish=${port}`, `sudo ss -ltnp 'sport = :${port}'`],
    })
    expect(r.fix?.apply).toBeUndefined()

    // Walked and run as --yes: nothing is applied, the proxy keeps running.
    const run = await w.walk({unit: UNIT, url: `https://localhost:${port}`})
    expect(pendingFixes([run]).map((p) => p.fix.id)).not.toContain('callfs.port.stop-process')
    expect(isRunning(child)).toBe(true)
  })

  it('the stop plan names the process by name, pid, program and start time — never its arguments', async () => {
    const secret = `hunter2-${randomBytes(6).toString('hex')}`
    const script = `const s=require('net').createServer(c=>c.end());s.listen(0,'127.0.0.1',()=>console.log(s.address().port));process.on('SIGTERM',()=>process.exit(0))`
    const child = spawn(process.execPath, ['-e', script, '--', '--db-url', `postgres://app:${secret}@db/app`, 'positional-secret-arg'], {stdio: ['ignore', 'pipe', 'inherit']})
    children.push(child)
    const port = await new Promise<number>((resolve) => child.stdout?.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))))
    const r = await check('callfs.port.conflict', {url: `https://localhost:${port}`})
    expect(r.status).toBe('fail')
    const plan = r.remediation?.plan ?? []
    expect(plan[0]).toMatch(new RegExp(`^send SIGTERM to node \\(pid ${child.pid}, ${process.execPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, started \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ\\) — only while that same process still listens on :${port}$`))
    const started = Date.parse(/started (\S+)\)/.exec(plan[0] ?? '')?.[1] ?? '')
    expect(Math.abs(started - Date.now())).toBeLessThan(120_000)
    const json = JSON.stringify(plan)
    expect(json).not.toContain('positional-secret-arg')
    expect(json).not.toContain('createServer')
    expect(JSON.stringify(r)).not.toContain(secret)
  })
})
