// Host checks on a service's data directory: free space, ownership and permissions.

import {chmod, chown, lchown, lstat, mkdir, readdir, realpath} from 'node:fs/promises'
import {dirname, join} from 'node:path'

import {diskUsage, findAccessProblems, findBlockingAncestor, formatMode, lookupGroupName, mayAccess, statPath, type UserInfo} from '../../diagnostics/files.js'
import type {Finding, Fix} from '../../engine/types.js'

function gib(bytes: number): string {
  return bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${(bytes / 1024 ** 2).toFixed(0)} MiB`
}

export interface DiskInput {
  path: string
  warnPercent: number
  failPercent: number
  fixId: string
  cleanupCommands: string[]
}

/** Usage of the filesystem holding `path` (or its nearest existing parent). */
export async function diskFinding(i: DiskInput): Promise<Finding> {
  let path = i.path
  let note = ''
  for (;;) {
    const s = await statPath(path)
    if (s.ok || s.error.kind !== 'not-found' || dirname(path) === path) break
    path = dirname(path)
    note = ` (${i.path} does not exist; measured ${path})`
  }
  const u = await diskUsage(path)
  if (!u.ok) return {status: 'unknown', summary: `could not measure ${path}: ${u.error.message}`}
  const d = u.value
  const evidence: Record<string, unknown> = {
    path,
    usedPercent: Math.round(d.usedPercent * 10) / 10,
    available: gib(d.availBytes),
    total: gib(d.totalBytes),
    inodesUsedPercent: d.inodesUsedPercent === null ? null : Math.round(d.inodesUsedPercent * 10) / 10,
    thresholds: {warn: i.warnPercent, fail: i.failPercent},
  }
  const worstPercent = Math.max(d.usedPercent, d.inodesUsedPercent ?? 0)
  const what = d.inodesUsedPercent !== null && d.inodesUsedPercent > d.usedPercent ? 'inodes' : 'space'
  const summary = `${evidence.usedPercent}% of ${evidence.total} used on the filesystem of ${path}, ${evidence.available} free${what === 'inodes' ? `; inodes ${evidence.inodesUsedPercent}% used` : ''}${note}`
  if (worstPercent < i.warnPercent) return {status: 'ok', summary, evidence}
  return {
    status: worstPercent >= i.failPercent ? 'fail' : 'warn',
    summary,
    evidence,
    fix: {
      id: i.fixId,
      title: `Free disk ${what} under ${path}`,
      plan: [`find what fills ${path} and remove or move it`, 'rotate logs; grow the volume if the data is legitimate'],
      commands: [`df -h ${path}`, `du -xsh ${path}/* | sort -h | tail -20`, ...i.cleanupCommands],
    },
  }
}

export interface DataDirInput {
  dataDir: string
  user: UserInfo
  fixId: string
  maxEntries?: number
}

/** Make `root` and everything under it owned by the user, with owner read/write (and x on dirs). */
async function repairTree(root: string, user: UserInfo, signal: AbortSignal): Promise<{changed: number; visited: number}> {
  let changed = 0
  let visited = 0
  const visit = async (path: string): Promise<void> => {
    if (signal.aborted) throw new Error('stopped at the deadline; part of the tree was repaired')
    const st = await lstat(path)
    visited++
    if (st.isSymbolicLink()) return // never follow links out of the data directory
    const wantMode = st.mode & 0o7777 | (st.isDirectory() ? 0o700 : 0o600)
    if (st.uid !== user.uid || st.gid !== user.gid) {
      await lchown(path, user.uid, user.gid)
      changed++
    }
    if ((st.mode & 0o7777) !== wantMode) {
      await chmod(path, wantMode)
      changed++
    }
    if (st.isDirectory()) for (const entry of await readdir(path)) await visit(join(path, entry))
  }
  await visit(root)
  return {changed, visited}
}

/**
 * The safe fix: create a missing data directory (missing parents 0755, as `install -d` makes
 * them, so the user can reach it), or chown/chmod an existing tree without following links.
 * `linkedFrom`: the configured path is a symbolic link to `dataDir`; the fix works on the target,
 * which is what the check audited (`chown -R` on the link would change only the link).
 */
export function repairOwnershipFix(dataDir: string, user: UserInfo, group: string, id: string, create: boolean, linkedFrom: string | null = null): Fix {
  const via = linkedFrom ? `; ${linkedFrom} links there` : ''
  const plan = create
    ? [`create ${dataDir} (mode 0750; missing parent directories 0755)`, `chown ${user.name}:${group} ${dataDir}`]
    : [`chown -R ${user.name}:${group} ${dataDir} (symbolic links are not followed${via})`, `chmod -R u+rwX ${dataDir} (owner read/write; directories searchable)`]
  return {
    id,
    title: create ? `Create ${dataDir} for ${user.name}` : `Give ${user.name} ownership of ${dataDir}`,
    plan,
    commands: create
      ? [`sudo install -d -m 0750 -o ${user.name} -g ${group} ${dataDir}`]
      : [`sudo chown -R ${user.name}:${group} ${dataDir}`, `sudo chmod -R u+rwX ${dataDir}`],
    async apply(signal) {
      if (create) {
        const exists = await statPath(dataDir)
        if (exists.ok) return {ok: true, detail: `${dataDir} exists now; left alone`}
        await mkdir(dirname(dataDir), {recursive: true, mode: 0o755})
        try {
          await mkdir(dataDir, {mode: 0o750})
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'EEXIST') return {ok: true, detail: `${dataDir} exists now; left alone`}
          throw error
        }
        await chown(dataDir, user.uid, user.gid)
        await chmod(dataDir, 0o750) // whatever the umask
        return {ok: true, detail: `created ${dataDir} owned by ${user.name}`}
      }
      const r = await repairTree(dataDir, user, signal)
      return {ok: true, detail: `${r.changed} ownership/mode changes over ${r.visited} entries`}
    },
  }
}

/** The data directory exists, and the service user owns and may write everything in it. */
export async function dataDirFinding(i: DataDirInput): Promise<Finding> {
  const {dataDir, user} = i
  const groupName = (await lookupGroupName(user.gid)) ?? String(user.gid)
  const st = await statPath(dataDir)
  if (!st.ok) {
    if (st.error.kind === 'not-found') {
      return {
        status: 'fail',
        summary: `data directory ${dataDir} does not exist`,
        evidence: {dataDir, user: user.name},
        fix: repairOwnershipFix(dataDir, user, groupName, i.fixId, true),
      }
    }
    return {status: 'unknown', summary: st.error.message}
  }
  const s = st.value
  const evidence: Record<string, unknown> = {dataDir, user: user.name, owner: s.owner ?? s.uid, group: s.group ?? s.gid, mode: formatMode(s.mode)}
  if (s.type !== 'dir') return {status: 'fail', summary: `${dataDir} is not a directory`, evidence}
  const problems: string[] = []
  if (s.uid !== user.uid) problems.push(`owned by ${s.owner ?? s.uid}, not ${user.name}`)
  if (!mayAccess(s, user, 'w') || !mayAccess(s, user, 'x')) problems.push(`${user.name} may not write into it (${formatMode(s.mode)})`)
  const blocker = await findBlockingAncestor(dataDir, user)
  if (blocker) problems.push(`${user.name} cannot reach it: ${blocker.path} is ${formatMode(blocker.mode)} (owner ${blocker.owner ?? blocker.uid}) — fix that directory by hand`)
  const walk = await findAccessProblems(dataDir, user, {maxEntries: i.maxEntries ?? 10_000})
  if (walk.ok) {
    evidence.checked = walk.value.checked
    if (walk.value.truncated) evidence.truncated = true
    const offenders = walk.value.offenders.filter((o) => o.path !== dataDir)
    const inside = walk.value.offenderCount - (walk.value.offenders.length - offenders.length)
    if (inside > 0) {
      problems.push(`${inside}${walk.value.truncated ? '+' : ''} entries inside are not owned by or not accessible to ${user.name}`)
      evidence.offenders = offenders.slice(0, 10).map((o) => `${o.path} (${o.owner ?? o.uid}, ${formatMode(o.mode)})`)
    }
  }
  // A data_dir configured as a symbolic link: the audit above was of its target; so is the fix.
  const linked = await lstat(dataDir).then((l) => l.isSymbolicLink()).catch(() => false)
  const target = linked ? await realpath(dataDir).catch(() => dataDir) : dataDir
  if (target !== dataDir) evidence.linksTo = target
  if (problems.length === 0) {
    return {status: 'ok', summary: `${dataDir} is owned and writable by ${user.name} (${formatMode(s.mode)}${walk.ok ? `, ${walk.value.checked} entries checked` : ''})`, evidence}
  }
  return {
    status: 'fail',
    summary: `${dataDir}: ${problems.join('; ')}`,
    evidence,
    fix: repairOwnershipFix(target, user, groupName, i.fixId, false, target === dataDir ? null : dataDir),
  }
}
