import {appendFile, mkdir, open} from 'node:fs/promises'
import {homedir, hostname, userInfo} from 'node:os'
import {dirname, join} from 'node:path'

import {redactValue} from './redact.js'
import type {Decision, SystemName} from './types.js'

export interface AuditEntry {
  system: SystemName
  target: string
  check: string
  remediation: string
  plan: string[]
  decision: Decision
  result: {ok: boolean; detail: string} | null
  verified: boolean
}

/** `$OPSCTL_AUDIT_LOG`, else `$XDG_STATE_HOME/opsctl/audit.jsonl` (`~/.local/state/opsctl/audit.jsonl`). */
export function auditLogPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.OPSCTL_AUDIT_LOG) return env.OPSCTL_AUDIT_LOG
  const state = env.XDG_STATE_HOME || join(homedir(), '.local', 'state')
  return join(state, 'opsctl', 'audit.jsonl')
}

function currentUser(): string {
  try {
    return userInfo().username
  } catch {
    return String(process.getuid?.() ?? 'unknown')
  }
}

export class AuditLog {
  constructor(
    readonly path: string,
    private readonly version: string,
  ) {}

  /**
   * Make sure the log can be written before anything is changed: a fix that could not be
   * audited is not applied. Throws an Error with an actionable message.
   */
  async ensureWritable(): Promise<void> {
    try {
      await mkdir(dirname(this.path), {recursive: true, mode: 0o700})
      const handle = await open(this.path, 'a', 0o600)
      await handle.close()
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'error'
      throw new Error(`cannot write the audit log ${this.path} (${code}); set OPSCTL_AUDIT_LOG to a writable file`)
    }
  }

  async append(entry: AuditEntry): Promise<void> {
    const record = {
      time: new Date().toISOString(),
      user: currentUser(),
      host: hostname(),
      opsctlVersion: this.version,
      ...entry,
    }
    await mkdir(dirname(this.path), {recursive: true, mode: 0o700})
    await appendFile(this.path, JSON.stringify(redactValue(record)) + '\n', {mode: 0o600})
  }
}
