import {spawn, type ChildProcess} from 'node:child_process'
import {chmod, copyFile, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {afterAll, afterEach, beforeAll, beforeEach, describe, expect, it} from 'vitest'

import {
  findProcesses,
  journalTail,
  processEnvironment,
  processInfo,
  stopProcess,
  systemdUnitStatus,
} from '../../src/diagnostics/system.js'
import {probeAsUser, waitFor} from './fixtures/local.js'

const FAKEBIN = fileURLToPath(new URL('../support/fakebin', import.meta.url))
const PROPS = 'LoadState,ActiveState,SubState,MainPID,Result,User,ExecMainStatus,ActiveEnterTimestamp,InactiveEnterTimestamp'
const probe = {timeoutMs: 3000}

let root: string
const children: ChildProcess[] = []
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'opsctl-system-'))
})
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  await rm(root, {recursive: true, force: true})
})

function track(c: ChildProcess): ChildProcess {
  children.push(c)
  return c
}

describe('systemdUnitStatus and journalTail against the fake systemctl/journalctl', () => {
  let state: string
  let savedPath: string | undefined
  beforeEach(async () => {
    state = await mkdtemp(join(root, 'systemd-'))
    savedPath = process.env['PATH']
    process.env['PATH'] = `${FAKEBIN}:${savedPath ?? ''}`
    process.env['OPSCTL_FAKE_SYSTEMD_DIR'] = state
  })
  afterEach(() => {
    process.env['PATH'] = savedPath
    delete process.env['OPSCTL_FAKE_SYSTEMD_DIR']
  })

  // What systemd 252 prints for `systemctl show callfs.service --property=…` (bus order, not request order).
  const failedUnit = [
    'MainPID=0',
    'Result=exit-code',
    'User=callfs',
    'ExecMainStatus=1',
    'LoadState=loaded',
    'ActiveState=failed',
    'SubState=failed',
    'ActiveEnterTimestamp=Tue 2024-03-12 10:15:01 UTC',
    'InactiveEnterTimestamp=Tue 2024-03-12 10:20:44 UTC',
    '',
  ].join('\n')

  it('parses a failed unit and runs exactly the documented command', async () => {
    await writeFile(join(state, 'callfs.service.state'), failedUnit)
    const r = await systemdUnitStatus('callfs', probe)
    expect(r).toMatchObject({
      ok: true,
      value: {
        unit: 'callfs',
        loadState: 'loaded',
        activeState: 'failed',
        subState: 'failed',
        mainPid: null,
        result: 'exit-code',
        user: 'callfs',
        execMainStatus: 1,
        since: 'Tue 2024-03-12 10:20:44 UTC',
      },
    })
    expect(await readFile(join(state, 'calls.log'), 'utf8')).toBe(`systemctl show callfs --no-pager --property=${PROPS}\n`)
  })

  it('sees a restart through the fake: active, MainPID, ActiveEnterTimestamp', async () => {
    await writeFile(join(state, 'callfs.service.state'), failedUnit)
    await writeFile(join(state, 'callfs.service.mainpid'), '31337\n')
    const {runCommand} = await import('../../src/diagnostics/exec.js')
    const restart = await runCommand('systemctl', ['restart', 'callfs.service'], probe)
    expect(restart.ok && restart.value.exitCode).toBe(0)
    const r = await systemdUnitStatus('callfs.service', probe)
    expect(r.ok && r.value).toMatchObject({activeState: 'active', subState: 'running', mainPid: 31337, result: 'success', execMainStatus: 0})
    expect(r.ok && r.value.since).toMatch(/^\w{3} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+$/)
  })

  it('reports a unit that does not exist as loadState not-found, like systemctl (exit 0)', async () => {
    const r = await systemdUnitStatus('nope', probe)
    expect(r.ok && r.value).toEqual({
      unit: 'nope',
      loadState: 'not-found',
      activeState: 'inactive',
      subState: 'dead',
      mainPid: null,
      result: 'success',
      user: null,
      execMainStatus: 0,
      since: null,
    })
  })

  it('turns "not booted with systemd" (containers) into not-found with that reason', async () => {
    await writeFile(join(state, 'not-booted'), '')
    const r = await systemdUnitStatus('callfs', probe)
    expect(r).toMatchObject({ok: false, error: {kind: 'not-found'}})
    if (!r.ok) expect(r.error.message).toContain('System has not been booted with systemd')
  })

  it('reports systemctl missing from PATH as not-found', async () => {
    const empty = await mkdtemp(join(root, 'emptybin-'))
    process.env['PATH'] = empty
    const r = await systemdUnitStatus('callfs', probe)
    expect(r).toMatchObject({ok: false, error: {kind: 'not-found', message: 'systemctl not found on PATH (not a systemd host?)'}})
  })

  it('times out on a systemctl that hangs, and refuses option-like unit names', async () => {
    const bin = await mkdtemp(join(root, 'hangbin-'))
    await writeFile(join(bin, 'systemctl'), '#!/bin/sh\nexec /bin/sleep 30\n', {mode: 0o755})
    process.env['PATH'] = bin
    const r = await systemdUnitStatus('callfs', {timeoutMs: 300})
    expect(r).toMatchObject({ok: false, error: {kind: 'timeout'}})
    expect(await systemdUnitStatus('--all', probe)).toMatchObject({ok: false, error: {kind: 'other'}})
  })

  it('journalTail returns the last N lines, and nothing for an empty journal', async () => {
    await writeFile(join(state, 'callfs.service.journal'), 'starting callfs\nlistening on :8443\nERROR failed to connect to postgres\n')
    const r = await journalTail('callfs', {...probe, lines: 2, since: '-1h'})
    expect(r).toMatchObject({ok: true, value: ['listening on :8443', 'ERROR failed to connect to postgres']})
    expect(await readFile(join(state, 'calls.log'), 'utf8')).toBe('journalctl -u callfs -n 2 --no-pager -o cat --since -1h\n')
    expect(await journalTail('other', probe)).toMatchObject({ok: true, value: []})
  })

  it('journalTail: no journal → not-found; permission refused → permission', async () => {
    expect(await journalTail('denied-unit', probe)).toMatchObject({ok: false, error: {kind: 'permission'}})
    await writeFile(join(state, 'no-journal'), '')
    expect(await journalTail('callfs', probe)).toMatchObject({ok: false, error: {kind: 'not-found'}})
  })
})

describe('processes in /proc', () => {
  it('finds a real process by comm (cut to 15 chars) and by command line', async () => {
    const bin = join(root, 'opsctl-test-sleeper-long-name')
    await copyFile('/bin/sleep', bin)
    await chmod(bin, 0o755)
    const child = track(spawn(bin, ['1000'], {stdio: 'ignore'}))
    const pid = child.pid as number
    expect(await waitFor(async () => (await processInfo(pid))?.comm === 'opsctl-test-sle', 2000)).toBe(true)
    const info = await processInfo(pid)
    expect(info).toMatchObject({pid, ppid: process.pid, comm: 'opsctl-test-sle', cmdline: `${bin} 1000`, uid: 0})
    expect(info?.startTime).toBeGreaterThan(0)

    const byComm = await findProcesses({comm: 'opsctl-test-sleeper-long-name'})
    expect(byComm.map((p) => p.pid)).toEqual([pid])
    const byCmdline = await findProcesses({cmdlineIncludes: 'opsctl-test-sleeper-long-name 1000'})
    expect(byCmdline.map((p) => p.pid)).toEqual([pid])
    expect(await findProcesses({comm: 'opsctl-test-sle', cmdlineIncludes: 'not-this'})).toEqual([])
    child.kill('SIGKILL')
  })

  it('never lists opsctl itself', async () => {
    const self = await findProcesses({cmdlineIncludes: process.argv[1] ?? 'node'})
    expect(self.map((p) => p.pid)).not.toContain(process.pid)
  })

  it('processInfo of a PID that does not exist is null', async () => {
    expect(await processInfo(2 ** 22 + 7)).toBeNull()
    expect(await processInfo(-1)).toBeNull()
  })

  it('reads a process environment; a missing process is not-found', async () => {
    const child = track(spawn('sleep', ['1000'], {stdio: 'ignore', env: {PATH: process.env['PATH'], OPSCTL_ENV_TEST: 'a=b=c'}}))
    const r = await processEnvironment(child.pid as number)
    expect(r.ok && r.value['OPSCTL_ENV_TEST']).toBe('a=b=c')
    child.kill('SIGKILL')
    expect(await processEnvironment(2 ** 22 + 7)).toMatchObject({ok: false, error: {kind: 'not-found'}})
  })

  it("reading another user's process environment as an unprivileged user is a permission error", async () => {
    // Run the probe as `nobody` against this (root) test process: the kernel refuses.
    const out = await probeAsUser('nobody', 'system.ts', `m.processEnvironment(${process.pid})`)
    expect(out).toMatchObject({ok: false, error: {kind: 'permission', code: 'EACCES'}})
  })
})

describe('stopProcess', () => {
  async function startTimeOf(pid: number): Promise<number> {
    expect(await waitFor(async () => (await processInfo(pid)) !== null, 2000)).toBe(true)
    return (await processInfo(pid))?.startTime as number
  }

  it('stops a process that honours SIGTERM', async () => {
    const child = track(spawn('sleep', ['1000'], {stdio: 'ignore'}))
    const pid = child.pid as number
    const r = await stopProcess(pid, await startTimeOf(pid), 2000)
    expect(r).toMatchObject({stopped: true, signalSent: 'SIGTERM'})
    await waitFor(async () => child.signalCode !== null, 1000)
    expect(child.signalCode).toBe('SIGTERM')
  })

  it('kills a process that ignores SIGTERM once the grace period is over', async () => {
    // An ignored signal stays ignored across exec: `sleep` itself ignores TERM.
    const child = track(spawn('sh', ['-c', "trap '' TERM; exec sleep 1000"], {stdio: 'ignore'}))
    const pid = child.pid as number
    expect(await waitFor(async () => (await processInfo(pid))?.comm === 'sleep', 2000)).toBe(true)
    const started = Date.now()
    const r = await stopProcess(pid, await startTimeOf(pid), 300)
    expect(r).toMatchObject({stopped: true, signalSent: 'SIGKILL'})
    expect(Date.now() - started).toBeGreaterThanOrEqual(300)
    await waitFor(async () => child.signalCode !== null, 1000)
    expect(child.signalCode).toBe('SIGKILL')
  })

  it('does not touch a PID whose start time differs (PID reuse)', async () => {
    const child = track(spawn('sleep', ['1000'], {stdio: 'ignore'}))
    const pid = child.pid as number
    const r = await stopProcess(pid, (await startTimeOf(pid)) - 1, 300)
    expect(r).toMatchObject({stopped: false, signalSent: null})
    expect(r.detail).toContain('now belongs to another process')
    expect(await processInfo(pid)).not.toBeNull()
    child.kill('SIGKILL')
  })

  it('reports a process that is already gone', async () => {
    const r = await stopProcess(2 ** 22 + 7, 12345, 300)
    expect(r).toMatchObject({stopped: false, signalSent: null})
    expect(r.detail).toContain('already exited')
  })
})
