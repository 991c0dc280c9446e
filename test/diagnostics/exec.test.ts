import {chmod, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {formatCommand, runCommand, startDetached} from '../../src/diagnostics/exec.js'
import {waitFor} from './fixtures/local.js'

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'opsctl-exec-'))
})
afterAll(async () => {
  await rm(dir, {recursive: true, force: true})
})

/** /proc/<pid>/stat fields we need, or null when the process is gone or a zombie. */
async function liveStat(pid: number): Promise<{pgrp: number} | null> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null)
  if (text === null) return null
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  if (fields[0] === 'Z' || fields[0] === 'X') return null
  return {pgrp: Number(fields[2])}
}

async function liveMembersOfGroup(pgid: number): Promise<number[]> {
  const {readdir} = await import('node:fs/promises')
  const pids = (await readdir('/proc')).filter((e) => /^\d+$/.test(e)).map(Number)
  const out: number[] = []
  for (const pid of pids) if ((await liveStat(pid))?.pgrp === pgid) out.push(pid)
  return out
}

async function pidsFrom(file: string): Promise<number[]> {
  const text = await readFile(file, 'utf8').catch(() => '')
  return text.split(/\s+/).filter(Boolean).map(Number)
}

describe('runCommand', () => {
  it('captures stdout, stderr and a non-zero exit code without calling it an error', async () => {
    const r = await runCommand('sh', ['-c', 'echo out; echo err >&2; exit 3'], {timeoutMs: 5000})
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.value).toMatchObject({exitCode: 3, stdout: 'out\n', stderr: 'err\n', timedOut: false, signal: null})
    expect(r.value.command).toBe("sh -c 'echo out; echo err >&2; exit 3'")
  })

  it('reports a missing binary as not-found, a non-executable one as permission', async () => {
    const missing = await runCommand('opsctl-no-such-binary', ['x'], {timeoutMs: 2000})
    expect(missing).toMatchObject({ok: false, error: {kind: 'not-found', message: 'opsctl-no-such-binary not found on PATH'}})
    const script = join(dir, 'not-exec.sh')
    await writeFile(script, '#!/bin/sh\necho hi\n', {mode: 0o644})
    const denied = await runCommand(script, [], {timeoutMs: 2000})
    expect(denied).toMatchObject({ok: false, error: {kind: 'permission', code: 'EACCES'}})
  })

  it('says a missing working directory is missing (spawn would blame the binary)', async () => {
    const r = await runCommand('true', [], {timeoutMs: 2000, cwd: join(dir, 'nope')})
    expect(r).toMatchObject({ok: false, error: {kind: 'not-found'}})
    if (!r.ok) expect(r.error.message).toContain('working directory')
  })

  it('passes input, cwd and environment (undefined removes a variable)', async () => {
    process.env['OPSCTL_EXEC_TEST_INHERITED'] = 'parent'
    try {
      const r = await runCommand('sh', ['-c', 'cat; echo; pwd; echo "${OPSCTL_A}:${OPSCTL_EXEC_TEST_INHERITED-unset}:${HOME:+home}"'], {
        timeoutMs: 5000,
        input: 'from stdin',
        cwd: dir,
        env: {OPSCTL_A: 'set', OPSCTL_EXEC_TEST_INHERITED: undefined},
      })
      expect(r.ok && r.value.stdout).toBe(`from stdin\n${dir}\nset:unset:home\n`)
    } finally {
      delete process.env['OPSCTL_EXEC_TEST_INHERITED']
    }
  })

  it('closes stdin when there is no input, so a prompt cannot hang the run', async () => {
    const r = await runCommand('sh', ['-c', 'read answer; echo "got:$answer"'], {timeoutMs: 2000})
    expect(r.ok && r.value.stdout).toBe('got:\n')
  })

  it('caps output, marks the cut, and still lets the process finish', async () => {
    const r = await runCommand('sh', ['-c', 'head -c 300000 /dev/zero | tr "\\0" a; echo done >&2'], {timeoutMs: 5000, maxOutputBytes: 1000})
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.value.exitCode).toBe(0)
    expect(r.value.stdout.startsWith('a'.repeat(1000))).toBe(true)
    expect(r.value.stdout).toContain('output truncated: 299000 more bytes')
    expect(r.value.stderr).toBe('done\n')
  })

  it('reports a process killed by a signal with the signal and no exit code', async () => {
    const r = await runCommand('sh', ['-c', 'kill -KILL $$'], {timeoutMs: 2000})
    expect(r.ok && r.value).toMatchObject({exitCode: null, signal: 'SIGKILL'})
  })

  it('on time-out kills the whole process group: nothing the script forked survives', async () => {
    const pidFile = join(dir, 'timeout.pids')
    const started = Date.now()
    const r = await runCommand('sh', ['-c', `sleep 1000 & echo $$ $! > ${pidFile}; sleep 1000`], {timeoutMs: 300})
    expect(Date.now() - started).toBeLessThan(2000)
    expect(r).toMatchObject({ok: false, error: {kind: 'timeout'}})
    if (!r.ok) expect(r.error.message).toBe(`\`sh -c 'sleep 1000 & echo $$ $! > ${pidFile}; sleep 1000'\` did not finish within 300ms; killed`)
    const [leader, child] = await pidsFrom(pidFile)
    expect(leader).toBeGreaterThan(0)
    expect(child).toBeGreaterThan(0)
    expect(await waitFor(async () => (await liveMembersOfGroup(leader as number)).length === 0, 1000)).toBe(true)
    expect(await liveStat(child as number)).toBeNull()
  })

  it('on abort kills the group and says the run was cancelled', async () => {
    const pidFile = join(dir, 'abort.pids')
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 150)
    const r = await runCommand('sh', ['-c', `sleep 1000 & echo $$ $! > ${pidFile}; wait`], {timeoutMs: 10_000, signal: ac.signal})
    expect(r).toMatchObject({ok: false, error: {kind: 'aborted'}})
    const [leader, child] = await pidsFrom(pidFile)
    expect(await waitFor(async () => (await liveMembersOfGroup(leader as number)).length === 0, 1000)).toBe(true)
    expect(await liveStat(child as number)).toBeNull()
  })

  it('does not start anything when already aborted', async () => {
    const marker = join(dir, 'should-not-exist')
    const r = await runCommand('touch', [marker], {timeoutMs: 1000, signal: AbortSignal.abort()})
    expect(r).toMatchObject({ok: false, error: {kind: 'aborted'}})
    await expect(readFile(marker)).rejects.toThrow()
  })

  it('returns on time-out even when a descendant escaped the group and holds the pipes', async () => {
    const pidFile = join(dir, 'escape.pid')
    const started = Date.now()
    const r = await runCommand('sh', ['-c', `setsid sh -c 'echo $$ > ${pidFile}; exec sleep 1000' & sleep 1000`], {timeoutMs: 300})
    const escaped = (await pidsFrom(pidFile))[0]
    try {
      expect(r).toMatchObject({ok: false, error: {kind: 'timeout'}})
      expect(Date.now() - started).toBeLessThan(3000)
    } finally {
      if (escaped) process.kill(escaped, 'SIGKILL')
    }
  })
})

describe('startDetached', () => {
  it('starts a process that outlives the call, with output in the log file', async () => {
    const log = join(dir, 'detached.log')
    const script = join(dir, 'svc.sh')
    await writeFile(script, '#!/bin/sh\necho "started $OPSCTL_SVC"\nexec sleep 1000\n')
    await chmod(script, 0o755)
    const r = await startDetached(script, [], {cwd: dir, env: {OPSCTL_SVC: 'mock'}, logFile: log})
    expect(r.ok).toBe(true)
    if (!r.ok) return
    try {
      expect(await waitFor(async () => (await readFile(log, 'utf8').catch(() => '')) === 'started mock\n', 2000)).toBe(true)
      expect(await liveStat(r.value.pid)).not.toBeNull()
    } finally {
      process.kill(r.value.pid, 'SIGKILL')
    }
    const missing = await startDetached('opsctl-no-such-binary', [], {})
    expect(missing).toMatchObject({ok: false, error: {kind: 'not-found'}})
  })
})

describe('formatCommand', () => {
  it('quotes what a shell would need quoted', () => {
    expect(formatCommand('systemctl', ['show', 'callfs.service', '--property=A,B'])).toBe('systemctl show callfs.service --property=A,B')
    expect(formatCommand('sh', ['-c', "echo 'hi' $X", ''])).toBe(`sh -c 'echo '\\''hi'\\'' $X' ''`)
  })
})
