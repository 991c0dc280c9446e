// `opsctl diagnose` on a terminal: the built CLI runs under a real pseudo-terminal
// (`script -qfec CMD /dev/null`), the test reads the screen and types answers once the question
// is on it. Default No, time-out No, Ctrl-C No for every fix after it; a destructive plan only
// with the name of what it destroys typed out.
import {spawn} from 'node:child_process'
import {chown, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {REPO, startCallfsWorld, type CallfsWorld} from '../support/callfs-world.js'

const FAKEBIN = join(REPO, 'test', 'support', 'fakebin')
const NOBODY = 65534
const OWNER = 'c0ffee00c0ffee00c0ffee00c0ffee00'
const LOCK_A = 'callfs:lock:file:/invoices/2026-11.pdf'
const LOCK_B = 'callfs:lock:file:/invoices/2026-12.pdf'

let w: CallfsWorld
let audit: string
let config: string

beforeAll(async () => {
  w = await startCallfsWorld({pg: true, redis: true, sim: {}})
  audit = join(w.dir, 'audit.jsonl')
  config = await w.writeOpsctlConfig()
  // The default probe time-out: a busy machine must not turn a slow answer into another finding.
  await writeFile(config, (await readFile(config, 'utf8')).replace('"timeout": "2s"', '"timeout": "5s"'))
  expect(await readFile(config, 'utf8')).toContain('"timeout": "5s"')
})
afterAll(() => w?.stop())
afterEach(async () => {
  await chown(w.dataDir, 0, 0)
  await w.redis!.cli('DEL', LOCK_A, LOCK_B)
  await rm(audit, {force: true})
})

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;?]*[A-Za-z]|\u001b[()][A-Z0-9]|\r/g

interface Terminal {
  /** The screen so far, without escape sequences and carriage returns. */
  screen(): string
  /** Resolves when the screen (after `from`) matches; fails with the screen after `ms`. */
  waitFor(re: RegExp, ms?: number): Promise<void>
  type(keys: string): void
  exited: Promise<{code: number | null; ms: number}>
}

const quote = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`

/** The built CLI under a pseudo-terminal: stdin and stdout are TTYs, as for a person. */
function onTerminal(args: string[], extraEnv: Record<string, string> = {}): Terminal {
  const command = [process.execPath, join(REPO, 'bin', 'run.js'), ...args].map(quote).join(' ')
  const started = Date.now()
  const child = spawn('script', ['-qfec', command, '/dev/null'], {
    env: {
      ...w.env,
      HOME: process.env.HOME ?? '/root',
      PATH: `${FAKEBIN}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      SHELL: '/bin/sh',
      TERM: 'xterm',
      NO_COLOR: '1',
      OPSCTL_AUDIT_LOG: audit,
      ...extraEnv,
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let raw = ''
  const waiters = new Set<() => void>()
  const onData = (d: Buffer) => {
    raw += d.toString()
    for (const wake of waiters) wake()
  }
  child.stdout.on('data', onData)
  child.stderr.on('data', onData)
  const killer = setTimeout(() => child.kill('SIGKILL'), 25_000)
  const exited = new Promise<{code: number | null; ms: number}>((resolve) => {
    child.on('close', (code) => {
      clearTimeout(killer)
      for (const wake of waiters) wake()
      resolve({code, ms: Date.now() - started})
    })
  })
  let closed = false
  void exited.then(() => (closed = true))
  const screen = () => raw.replace(ANSI, '')
  return {
    screen,
    waitFor(re, ms = 15_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (re.test(screen())) {
            cleanup()
            resolve()
          } else if (closed) {
            cleanup()
            reject(new Error(`opsctl exited before ${re} appeared:\n${screen()}`))
          }
        }
        const timer = setTimeout(() => {
          cleanup()
          reject(new Error(`${re} did not appear within ${ms}ms:\n${screen()}`))
        }, ms)
        const cleanup = () => {
          clearTimeout(timer)
          waiters.delete(check)
        }
        waiters.add(check)
        check()
      })
    },
    type(keys) {
      child.stdin.write(keys)
    },
    exited,
  }
}

interface AuditLine {
  check: string
  remediation: string
  decision: string
  plan: string[]
  result: {ok: boolean; detail: string} | null
  verified: boolean
}

async function auditLines(): Promise<AuditLine[]> {
  const text = await readFile(audit, 'utf8')
  return text.trim().split('\n').map((l) => JSON.parse(l) as AuditLine)
}

async function lockExists(key: string): Promise<boolean> {
  return (await w.redis!.cli('EXISTS', key)) === '1'
}

const DIAGNOSE = () => ['diagnose', 'callfs', '--config', config, '--prompt-timeout', '10s']
const CONFIRM_PROMPT = /Apply\s+"Give\s+root\s+ownership\s+of\s+\S+"\?\s+\(y\/N\)/
// The question wraps at the terminal's width: any run of white space may be a line break.
const DESTROY_PROMPT = /This\s+destroys\s+(\S+(?:\s+locks)?)\.\s+Type\s+(\S+(?:\s+locks)?)\s+to\s+apply\s+it,\s+or\s+press\s+Enter\s+to\s+skip:/

describe('diagnose on a terminal asks before each fix', () => {
  it('Enter at a confirm is No (the default); a wrong text at a destructive fix is No: nothing changes, both decisions audited', async () => {
    await chown(w.dataDir, NOBODY, NOBODY)
    await w.redis!.cli('SET', LOCK_A, OWNER)
    const t = onTerminal(DIAGNOSE())
    await t.waitFor(CONFIRM_PROMPT)
    // The plan is on the screen before the question: exactly what would be done.
    expect(t.screen()).toContain(`- chown -R root:root ${w.dataDir} (symbolic links are not followed)`)
    // `script` without a terminal of its own gives the pseudo-terminal a 0×0 size, as some CI
    // runners and serial consoles do: the progress line must still be one line, not a letter a line.
    expect(t.screen()).toMatch(/CallFS · default: fail · \d+ checks · \S+/)
    t.type('\r')
    await t.waitFor(DESTROY_PROMPT)
    expect(t.screen().match(DESTROY_PROMPT)?.slice(1)).toEqual([LOCK_A, LOCK_A]) // one lock: its key is the confirmation
    expect(t.screen()).toContain(`- compare-and-delete ${LOCK_A} (owner c0ffee00…)`)
    t.type('yes\r')
    const {code} = await t.exited
    expect(t.screen()).toMatch(/callfs\.data-dir\.permissions: declined \(answered no\): nothing changed/)
    expect(t.screen()).toMatch(/callfs\.redis\.orphaned-locks: declined \(confirmation not typed\): nothing changed/)
    expect(code).toBe(2)
    expect((await stat(w.dataDir)).uid).toBe(NOBODY)
    expect(await lockExists(LOCK_A)).toBe(true)
    expect(await auditLines()).toEqual([
      expect.objectContaining({check: 'callfs.data-dir.permissions', remediation: 'callfs.data-dir.fix-ownership', decision: 'declined', result: null, verified: false}),
      expect.objectContaining({check: 'callfs.redis.orphaned-locks', decision: 'declined', plan: [`compare-and-delete ${LOCK_A} (owner c0ffee00…)`], verified: false}),
    ])
  })

  it('"y" applies a safe fix; typing "2 locks" applies the destructive one: both re-checked, verified and audited', async () => {
    await chown(w.dataDir, NOBODY, NOBODY)
    await w.redis!.cli('SET', LOCK_A, OWNER)
    await w.redis!.cli('SET', LOCK_B, OWNER)
    const t = onTerminal(DIAGNOSE())
    await t.waitFor(CONFIRM_PROMPT)
    t.type('y\r')
    await t.waitFor(DESTROY_PROMPT)
    expect(t.screen().match(DESTROY_PROMPT)?.slice(1).map((m) => m.replace(/\s+/, ' '))).toEqual(['2 locks', '2 locks'])
    t.type('2 locks\r')
    const {code} = await t.exited
    expect(t.screen()).toMatch(/callfs\.data-dir\.permissions: applied, verified — 1 ownership\/mode changes over 1 entries; re-check: ok/)
    expect(t.screen()).toMatch(/callfs\.redis\.orphaned-locks: applied, verified — released 2 of 2 locks; re-check: ok/)
    expect(t.screen()).toMatch(/✓ ok after remediation · .* · exit 0/)
    expect(code).toBe(0)
    expect((await stat(w.dataDir)).uid).toBe(0)
    expect(await lockExists(LOCK_A)).toBe(false)
    expect(await lockExists(LOCK_B)).toBe(false)
    expect(await auditLines()).toEqual([
      expect.objectContaining({check: 'callfs.data-dir.permissions', decision: 'applied', result: {ok: true, detail: '1 ownership/mode changes over 1 entries; re-check: ok'}, verified: true}),
      expect.objectContaining({
        check: 'callfs.redis.orphaned-locks',
        remediation: 'callfs.redis.release-orphaned-locks',
        decision: 'applied',
        result: {ok: true, detail: 'released 2 of 2 locks; re-check: ok'},
        verified: true,
      }),
    ])
    // SCAN order: either lock may come first.
    expect((await auditLines())[1]?.plan.sort()).toEqual([`compare-and-delete ${LOCK_A} (owner c0ffee00…)`, `compare-and-delete ${LOCK_B} (owner c0ffee00…)`])
  })

  it('no answer within --prompt-timeout 1s is No: declined, the lock stays', async () => {
    await w.redis!.cli('SET', LOCK_A, OWNER)
    const t = onTerminal(['diagnose', 'callfs', '--config', config, '--prompt-timeout', '1s'])
    await t.waitFor(DESTROY_PROMPT)
    const asked = Date.now()
    const {code} = await t.exited
    expect(Date.now() - asked).toBeGreaterThanOrEqual(900)
    expect(Date.now() - asked).toBeLessThan(4000)
    expect(t.screen()).toMatch(/callfs\.redis\.orphaned-locks: declined \(no answer within 1s\): nothing changed/)
    expect(code).toBe(2)
    expect(await lockExists(LOCK_A)).toBe(true)
    expect(await auditLines()).toEqual([expect.objectContaining({check: 'callfs.redis.orphaned-locks', decision: 'declined', verified: false})])
  })

  it('Ctrl-C at the first question is No for it and for every fix after it', async () => {
    await chown(w.dataDir, NOBODY, NOBODY)
    await w.redis!.cli('SET', LOCK_A, OWNER)
    const t = onTerminal(DIAGNOSE())
    await t.waitFor(CONFIRM_PROMPT)
    t.type('\u0003')
    const {code} = await t.exited
    expect(t.screen()).toMatch(/callfs\.data-dir\.permissions: declined \(interrupted\): nothing changed/)
    expect(t.screen()).toMatch(/callfs\.redis\.orphaned-locks: declined \(interrupted\): nothing changed/)
    expect(t.screen()).not.toMatch(/This destroys/) // not even asked
    expect(code).toBe(2)
    expect((await stat(w.dataDir)).uid).toBe(NOBODY)
    expect(await lockExists(LOCK_A)).toBe(true)
    expect((await auditLines()).map((l) => [l.check, l.decision])).toEqual([
      ['callfs.data-dir.permissions', 'declined'],
      ['callfs.redis.orphaned-locks', 'declined'],
    ])
  })
})
