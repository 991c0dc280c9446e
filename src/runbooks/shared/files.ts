// Host checks on a service's data directory: free space, ownership and permissions.

import {constants as fsConstants} from 'node:fs'
import {access, lstat, mkdir, open, opendir, realpath, type FileHandle} from 'node:fs/promises'
import {basename, dirname, join, resolve} from 'node:path'

import {diskUsage, findAccessProblems, findBlockingAncestor, formatMode, lookupGroupName, mayAccess, statPath, type UserInfo} from '../../diagnostics/files.js'
import type {Finding, Fix, FixResult} from '../../engine/types.js'

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

const {O_RDONLY, O_NOFOLLOW, O_NONBLOCK, O_DIRECTORY} = fsConstants

/** `openat(dir, name)` for Node: /proc/self/fd/N is the directory that fd holds, not a path looked up again. */
const at = (dir: FileHandle, name?: string) => (name === undefined ? `/proc/self/fd/${dir.fd}` : `/proc/self/fd/${dir.fd}/${name}`)

const errno = (e: unknown) => (e as NodeJS.ErrnoException).code

/**
 * Make `root` and everything under it owned by the user, with owner read/write (and x on dirs).
 *
 * The service user owns the tree being repaired and may change it while this runs (swap a
 * directory for a symlink to /etc between a check and a chown). So nothing here acts on a path
 * looked up twice: each entry is opened relative to its parent's open descriptor with O_NOFOLLOW
 * (a symlink is never opened), and chown/chmod act on that descriptor — what was checked is
 * what is changed. A regular file with several hard links that the user does not own is left
 * alone: it may be a file from outside linked in.
 */
async function repairTree(root: string, user: UserInfo, signal: AbortSignal): Promise<{changed: number; visited: number; leftAlone: string[]}> {
  let changed = 0
  let visited = 0
  const leftAlone: string[] = []
  try {
    await access('/proc/self/fd')
  } catch {
    throw new Error('repairing safely needs /proc (to act on open descriptors); run the commands shown instead')
  }

  /** Fix one opened entry; true when it is a directory to descend into. */
  const repair = async (h: FileHandle, path: string): Promise<boolean> => {
    const st = await h.stat()
    visited++
    if (!st.isDirectory() && !st.isFile()) {
      leftAlone.push(`${path} (not a file or directory)`)
      return false
    }
    if (st.isFile() && st.nlink > 1 && st.uid !== user.uid) {
      leftAlone.push(`${path} (${st.nlink} hard links)`)
      return false
    }
    if (st.uid !== user.uid || st.gid !== user.gid) {
      await h.chown(user.uid, user.gid)
      changed++
    }
    const wantMode = (st.mode & 0o7777) | (st.isDirectory() ? 0o700 : 0o600)
    if ((st.mode & 0o7777) !== wantMode) {
      await h.chmod(wantMode)
      changed++
    }
    return st.isDirectory()
  }

  const descend = async (dir: FileHandle, path: string): Promise<void> => {
    const listing = await opendir(at(dir))
    for await (const entry of listing) {
      if (signal.aborted) throw new Error('stopped at the deadline; part of the tree was repaired')
      const child = join(path, entry.name)
      if (entry.isSymbolicLink()) {
        visited++ // never followed out of the data directory
        continue
      }
      if (entry.isSocket() || entry.isFIFO() || entry.isBlockDevice() || entry.isCharacterDevice()) {
        visited++
        leftAlone.push(`${child} (not a file or directory)`)
        continue
      }
      let h: FileHandle
      try {
        h = await open(at(dir, entry.name), O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
      } catch (e) {
        if (errno(e) === 'ELOOP') visited++ // it became a symlink since it was listed
        else if (errno(e) !== 'ENOENT') throw e // ENOENT: removed meanwhile
        continue
      }
      try {
        if (await repair(h, child)) await descend(h, child)
      } finally {
        await h.close()
      }
    }
  }

  let top: FileHandle
  try {
    top = await open(root, O_RDONLY | O_NOFOLLOW | O_DIRECTORY)
  } catch (e) {
    if (errno(e) === 'ELOOP' || errno(e) === 'ENOTDIR') throw new Error(`${root} is no longer a directory (${errno(e)}); nothing changed`)
    throw e
  }
  try {
    if (await repair(top, root)) await descend(top, root)
  } finally {
    await top.close()
  }
  return {changed, visited, leftAlone}
}

/**
 * Create `dataDir` for the user (0750) and its missing parents (0755, as `install -d` makes them,
 * so the user can reach it). Modes are set explicitly: mkdir's are cut by the umask (under 077
 * the parents ended 0700 and the service user could not reach its own directory).
 *
 * Each directory is made relative to its parent's open descriptor and opened with O_NOFOLLOW
 * before it is changed or descended into: whoever may write a parent cannot swap in a symlink and
 * have a directory made, chowned or chmodded somewhere else. Only what this created is changed.
 */
async function createDataDir(dataDir: string, user: UserInfo): Promise<FixResult> {
  const names: string[] = []
  let base = resolve(dataDir)
  for (;;) {
    const s = await statPath(base)
    if (s.ok) break
    if (s.error.kind !== 'not-found' || dirname(base) === base) return {ok: false, detail: `cannot create ${dataDir}: ${s.error.message}`}
    names.unshift(basename(base))
    base = dirname(base)
  }
  if (names.length === 0) return {ok: true, detail: `${dataDir} exists now; left alone`}
  let dir: FileHandle
  try {
    dir = await open(base, O_RDONLY | O_DIRECTORY)
  } catch (e) {
    return {ok: false, detail: `cannot open ${base} to create ${dataDir} in it (${errno(e) ?? String(e)}); nothing changed`}
  }
  try {
    let path = base
    for (const [k, name] of names.entries()) {
      const last = k === names.length - 1
      path = join(path, name)
      let created = true
      try {
        await mkdir(at(dir, name), {mode: last ? 0o750 : 0o755})
      } catch (e) {
        if (errno(e) !== 'EEXIST') throw e
        if (last) return {ok: true, detail: `${dataDir} exists now; left alone`}
        created = false // made by someone else meanwhile: used, never changed
      }
      let next: FileHandle
      try {
        next = await open(at(dir, name), O_RDONLY | O_NOFOLLOW | O_DIRECTORY)
      } catch (e) {
        const code = errno(e)
        if (code === 'ELOOP' || code === 'ENOTDIR' || code === 'ENOENT') {
          return {ok: false, detail: created ? `${path} was replaced right after it was created (${code}); left alone` : `${path} appeared meanwhile and is not a directory (${code}); left alone`}
        }
        throw e
      }
      await dir.close()
      dir = next
      if (last) {
        await dir.chown(user.uid, user.gid)
        await dir.chmod(0o750) // whatever the umask
      } else if (created) {
        await dir.chmod(0o755) // whatever the umask: the service user must be able to pass through
      }
    }
  } finally {
    await dir.close()
  }
  return {ok: true, detail: `created ${dataDir} owned by ${user.name}`}
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
      if (create) return createDataDir(dataDir, user)
      const r = await repairTree(dataDir, user, signal)
      const left = r.leftAlone.length ? `; left alone ${r.leftAlone.length}: ${r.leftAlone.slice(0, 5).join(', ')}${r.leftAlone.length > 5 ? ', …' : ''}` : ''
      return {ok: true, detail: `${r.changed} ownership/mode changes over ${r.visited} entries${left}`}
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
