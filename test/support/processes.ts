// Real processes for the tests: named after a service (a copy of sleep), waited for, reaped.
import {spawn, type ChildProcess} from 'node:child_process'
import {copyFile, mkdtemp, readFile} from 'node:fs/promises'
import {join} from 'node:path'

/** Poll `check` every 10 ms until it holds or `ms` have passed; the last answer counts. */
export async function waitFor(check: () => Promise<boolean> | boolean, ms = 3000): Promise<boolean> {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (await check()) return true
    await new Promise((r) => setTimeout(r, 10))
  }
  return check()
}

/** Like waitFor, but a condition that never holds fails the test. */
export async function waitUntil(check: () => Promise<boolean> | boolean, ms = 3000): Promise<void> {
  if (!(await waitFor(check, ms))) throw new Error('condition not met in time')
}

export const isRunning = (c: ChildProcess): boolean => c.exitCode === null && c.signalCode === null

export async function exited(c: ChildProcess): Promise<void> {
  if (!isRunning(c)) return
  await new Promise((r) => c.once('exit', r))
}

/**
 * A real process whose executable is named `name` (a copy of sleep in a fresh directory under
 * `dir`), so /proc shows that name as its comm; `env` replaces its environment (PATH kept).
 * Resolves once the kernel shows the new name. The caller stops it.
 */
export async function startNamedProcess(name: string, o: {dir: string; env?: Record<string, string>}): Promise<ChildProcess> {
  const bin = join(await mkdtemp(join(o.dir, 'bin-')), name)
  await copyFile('/bin/sleep', bin)
  const child = spawn(bin, ['300'], {stdio: 'ignore', ...(o.env ? {env: {PATH: '/usr/bin:/bin', ...o.env}} : {})})
  await waitUntil(async () => (await readFile(`/proc/${child.pid}/comm`, 'utf8').catch(() => '')).trim() === name.slice(0, 15))
  return child
}
