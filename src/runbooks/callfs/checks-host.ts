import {lookupUser} from '../../diagnostics/files.js'
import type {CheckSpec} from '../../engine/types.js'
import {dataDirFinding, diskFinding} from '../shared/files.js'
import type {CallfsContext} from './context.js'

export const diskSpace: CheckSpec<CallfsContext> = {
  id: 'callfs.disk.space',
  title: 'The data directory has free disk space',
  severity: 'high',
  docs: 'File Upload/Download Issues > Common Causes and Solutions > Insufficient Disk Space',
  remediations: [{id: 'callfs.disk.free-space', title: 'Free disk space', automated: false}],
  async run(ctx) {
    if (!(await ctx.isLocal())) return {status: 'skipped', summary: `${ctx.url.hostname} is not this machine`}
    return diskFinding({
      path: ctx.target.data_dir,
      warnPercent: ctx.target.thresholds.disk_warn,
      failPercent: ctx.target.thresholds.disk_fail,
      fixId: 'callfs.disk.free-space',
      cleanupCommands: ["find /tmp -name 'callfs-*' -mtime +1 -delete", 'journalctl --vacuum-time=7d'],
    })
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
    let name = ctx.target.service_user
    if (!name) {
      // A loaded unit without User= runs as root; with no unit to ask, assume a user named after it.
      const unit = await ctx.unit()
      name = unit.ok && unit.value.loadState === 'loaded' ? (unit.value.user ?? 'root') : ctx.target.unit
    }
    const user = await lookupUser(name)
    if (!user) return {status: 'skipped', summary: `no user "${name}" on this machine: set systems.callfs.service_user to the user CallFS runs as`}
    return dataDirFinding({dataDir: ctx.target.data_dir, user, fixId: 'callfs.data-dir.fix-ownership'})
  },
}
