import {isAbsolute, resolve} from 'node:path'

import {lookupUser} from '../../diagnostics/files.js'
import type {CheckSpec, Finding} from '../../engine/types.js'
import {dataDirFinding, diskFinding} from '../shared/files.js'
import {getPath, type CallfsContext} from './context.js'

/**
 * The directory CallFS keeps its files in: its own config's backend.localfs_root_path when the
 * config is readable and names an absolute one (that is the directory CallFS uses, whatever
 * opsctl's data_dir says: a difference is noted in the evidence); else systems.callfs.data_dir.
 * A relative root path is relative to CallFS's working directory, which opsctl cannot see.
 */
export async function callfsDataDir(ctx: CallfsContext): Promise<{path: string; evidence: Record<string, unknown>}> {
  const own = ctx.target.data_dir
  const cfg = await ctx.callfsConfig()
  if (cfg.state !== 'parsed') return {path: own, evidence: {}}
  const root = getPath(cfg.value, ['backend', 'localfs_root_path'])
  if (typeof root !== 'string' || root.trim() === '') return {path: own, evidence: {}}
  const setting = ctx.target.explicit.has('data_dir') ? 'systems.callfs.data_dir' : `the default data_dir (${own})`
  if (!isAbsolute(root)) {
    return {path: own, evidence: {note: `CallFS's backend.localfs_root_path (${root}, in ${cfg.path}) is relative to its working directory, which opsctl cannot see: checked ${setting}`}}
  }
  const path = resolve(root)
  const evidence: Record<string, unknown> = {dataDirFrom: `${cfg.path} (backend.localfs_root_path)`}
  if (ctx.target.explicit.has('data_dir') && resolve(own) !== path) {
    evidence.opsctlDataDir = own
    evidence.note = `systems.callfs.data_dir (${own}) is not the directory CallFS uses (${path}, from ${cfg.path}): checked CallFS's`
  }
  return {path, evidence}
}

const withEvidence = (f: Finding, extra: Record<string, unknown>): Finding =>
  Object.keys(extra).length === 0 ? f : {...f, evidence: {...f.evidence, ...extra}}

export const diskSpace: CheckSpec<CallfsContext> = {
  id: 'callfs.disk.space',
  title: 'The data directory has free disk space',
  severity: 'high',
  docs: 'File Upload/Download Issues > Common Causes and Solutions > Insufficient Disk Space',
  remediations: [{id: 'callfs.disk.free-space', title: 'Free disk space', automated: false}],
  async run(ctx) {
    if (!(await ctx.isLocal())) return {status: 'skipped', summary: `${ctx.url.hostname} is not this machine`}
    const dir = await callfsDataDir(ctx)
    const f = await diskFinding({
      path: dir.path,
      warnPercent: ctx.target.thresholds.disk_warn,
      failPercent: ctx.target.thresholds.disk_fail,
      fixId: 'callfs.disk.free-space',
      cleanupCommands: ["find /tmp -name 'callfs-*' -mtime +1 -delete", 'journalctl --vacuum-time=7d'],
    })
    return withEvidence(f, dir.evidence)
  },
}

export const dataDirPermissions: CheckSpec<CallfsContext> = {
  id: 'callfs.data-dir.permissions',
  title: 'The data directory belongs to the CallFS user',
  severity: 'high',
  docs: 'File Upload/Download Issues > Common Causes and Solutions > File Permission Issues',
  remediations: [{id: 'callfs.data-dir.fix-ownership', title: 'Give the CallFS user its data directory', automated: true, risk: 'safe'}],
  budgetMs: (t) => t * 2 + 1000,
  async run(ctx) {
    if (!(await ctx.isLocal())) return {status: 'skipped', summary: `${ctx.url.hostname} is not this machine`}
    // With no unit to ask, a user named after the unit is the best guess for ownership.
    const {name} = await ctx.serviceUserName()
    const user = await lookupUser(name)
    if (!user) return {status: 'skipped', summary: `no user "${name}" on this machine: set systems.callfs.service_user to the user CallFS runs as`}
    const dir = await callfsDataDir(ctx)
    const f = await dataDirFinding({dataDir: dir.path, user, fixId: 'callfs.data-dir.fix-ownership'})
    return withEvidence(f, dir.evidence)
  },
}
