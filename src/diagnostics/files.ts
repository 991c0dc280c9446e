// Files, disks, users and POSIX permissions — evaluated the way the kernel evaluates them.
import type {Stats} from 'node:fs'
import {lstat, opendir, readFile, readlink, stat, statfs} from 'node:fs/promises'
import {dirname, join, resolve} from 'node:path'

import {probeFail, probeOk, type ProbeError, type ProbeResult} from './types.js'

export interface PathStat {
  path: string
  type: 'file' | 'dir' | 'symlink' | 'other'
  /** Permission bits only (mask 0o7777). */
  mode: number
  uid: number
  gid: number
  owner: string | null
  group: string | null
  size: number
  mtimeMs: number
}

export interface DiskUsage {
  path: string
  totalBytes: number
  freeBytes: number
  /** Free for unprivileged users (excludes the root reserve). */
  availBytes: number
  /** Like df: used / (used + avail) × 100. */
  usedPercent: number
  inodesUsedPercent: number | null
}

export interface UserInfo {
  name: string
  uid: number
  gid: number
  home: string
  /** Primary gid first, then supplementary groups from /etc/group. */
  groups: number[]
}

/** Turn an fs error into a ProbeError that names the path and what to do; verb: "read", "stat"… */
export function fsError(e: unknown, path: string, verb: string): ProbeError {
  const code = (e as NodeJS.ErrnoException | undefined)?.code
  switch (code) {
    case 'ENOENT':
      return {kind: 'not-found', message: `${path} does not exist`, code}
    case 'ENOTDIR':
      return {kind: 'not-found', message: `${path} does not exist (a parent is not a directory)`, code}
    case 'EACCES':
    case 'EPERM':
      return {kind: 'permission', message: `permission denied: cannot ${verb} ${path}; run opsctl as root or as the owning user`, code}
    case 'ELOOP':
      return {kind: 'other', message: `${path} is a symlink loop`, code}
    default:
      return {kind: 'other', message: `cannot ${verb} ${path}: ${code ?? String(e)}`, ...(code ? {code} : {})}
  }
}

// ---- users and groups (/etc/passwd, /etc/group) ----

interface PasswdEntry {
  name: string
  uid: number
  gid: number
  home: string
}
interface GroupEntry {
  name: string
  gid: number
  members: string[]
}

async function readDb(path: string): Promise<string[][]> {
  const text = await readFile(path, 'utf8').catch(() => '')
  return text
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.split(':'))
}

async function passwd(): Promise<PasswdEntry[]> {
  return (await readDb('/etc/passwd'))
    .filter((f) => f.length >= 7)
    .map((f) => ({name: f[0] ?? '', uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? ''}))
    .filter((e) => e.name !== '' && Number.isInteger(e.uid) && Number.isInteger(e.gid))
}

async function groups(): Promise<GroupEntry[]> {
  return (await readDb('/etc/group'))
    .filter((f) => f.length >= 3)
    .map((f) => ({name: f[0] ?? '', gid: Number(f[2]), members: (f[3] ?? '').split(',').filter((m) => m !== '')}))
    .filter((e) => e.name !== '' && Number.isInteger(e.gid))
}

/** A user by name or uid (a numeric string is a uid), with primary and supplementary groups. */
export async function lookupUser(nameOrUid: string | number): Promise<UserInfo | null> {
  const byUid = typeof nameOrUid === 'number' || /^\d+$/.test(nameOrUid)
  const users = await passwd()
  const u = byUid ? users.find((e) => e.uid === Number(nameOrUid)) : users.find((e) => e.name === nameOrUid)
  if (!u) return null
  const supplementary = (await groups()).filter((g) => g.members.includes(u.name)).map((g) => g.gid)
  return {name: u.name, uid: u.uid, gid: u.gid, home: u.home, groups: [...new Set([u.gid, ...supplementary])]}
}

export async function lookupGroupName(gid: number): Promise<string | null> {
  return (await groups()).find((g) => g.gid === gid)?.name ?? null
}

/** Name lookups for many stats in one pass over the databases. */
async function nameMaps(): Promise<{users: Map<number, string>; groups: Map<number, string>}> {
  const [u, g] = await Promise.all([passwd(), groups()])
  const users = new Map<number, string>()
  for (const e of u) if (!users.has(e.uid)) users.set(e.uid, e.name)
  const gs = new Map<number, string>()
  for (const e of g) if (!gs.has(e.gid)) gs.set(e.gid, e.name)
  return {users, groups: gs}
}

// ---- stat ----

type NodeStats = Stats

function toPathStat(path: string, s: NodeStats, names: {users: Map<number, string>; groups: Map<number, string>}): PathStat {
  const type = s.isSymbolicLink() ? 'symlink' : s.isDirectory() ? 'dir' : s.isFile() ? 'file' : 'other'
  return {
    path,
    type,
    mode: s.mode & 0o7777,
    uid: s.uid,
    gid: s.gid,
    owner: names.users.get(s.uid) ?? null,
    group: names.groups.get(s.gid) ?? null,
    size: s.size,
    mtimeMs: s.mtimeMs,
  }
}

/**
 * Stat a path like fs.stat: a symlink is followed, because every permission question is about
 * its target. {follow: false} describes the link itself (type 'symlink'). A dangling link is
 * 'not-found' and says so.
 */
export async function statPath(path: string, opts: {follow?: boolean} = {}): Promise<ProbeResult<PathStat>> {
  const startedAt = Date.now()
  const follow = opts.follow ?? true
  try {
    const s = await (follow ? stat(path) : lstat(path))
    return probeOk(toPathStat(path, s, await nameMaps()), startedAt)
  } catch (e) {
    if (follow && (e as NodeJS.ErrnoException).code === 'ENOENT') {
      const target = await readlink(path).catch(() => null)
      if (target !== null) return probeFail({kind: 'not-found', message: `${path} is a symlink to ${target}, which does not exist`, code: 'ENOENT'}, startedAt)
    }
    return probeFail(fsError(e, path, 'stat'), startedAt)
  }
}

// ---- disk ----

export async function diskUsage(path: string): Promise<ProbeResult<DiskUsage>> {
  const startedAt = Date.now()
  try {
    const s = await statfs(path)
    const totalBytes = s.blocks * s.bsize
    const freeBytes = s.bfree * s.bsize
    const availBytes = s.bavail * s.bsize
    const used = totalBytes - freeBytes
    const usedPercent = used + availBytes > 0 ? (used / (used + availBytes)) * 100 : 0
    const inodesUsedPercent = s.files > 0 ? ((s.files - s.ffree) / s.files) * 100 : null
    return probeOk({path, totalBytes, freeBytes, availBytes, usedPercent, inodesUsedPercent}, startedAt)
  } catch (e) {
    return probeFail(fsError(e, path, 'check disk usage of'), startedAt)
  }
}

// ---- permissions ----

const BITS = {r: 4, w: 2, x: 1} as const

/**
 * POSIX permission evaluation for a user (ACLs and capabilities other than root's are not
 * considered). The owner class applies to the owner even when group or other grant more.
 * Root may read and write anything and search any directory, but may execute a file only when
 * at least one x bit is set — exactly the kernel's rule.
 */
export function mayAccess(stat: PathStat, user: UserInfo, access: 'r' | 'w' | 'x'): boolean {
  const bit = BITS[access]
  if (user.uid === 0) {
    if (access !== 'x' || stat.type === 'dir') return true
    return (stat.mode & 0o111) !== 0
  }
  if (stat.uid === user.uid) return ((stat.mode >> 6) & bit) !== 0
  if (user.groups.includes(stat.gid) || user.gid === stat.gid) return ((stat.mode >> 3) & bit) !== 0
  return (stat.mode & bit) !== 0
}

/** 0o750 → "0750 (rwxr-x---)"; special bits like ls: 0o4755 → "4755 (rwsr-xr-x)". */
export function formatMode(mode: number): string {
  const m = mode & 0o7777
  const triplet = (shift: number, special: boolean, specialChar: string): string => {
    const v = (m >> shift) & 7
    const x = v & 1 ? (special ? specialChar : 'x') : special ? specialChar.toUpperCase() : '-'
    return `${v & 4 ? 'r' : '-'}${v & 2 ? 'w' : '-'}${x}`
  }
  const text = triplet(6, (m & 0o4000) !== 0, 's') + triplet(3, (m & 0o2000) !== 0, 's') + triplet(0, (m & 0o1000) !== 0, 't')
  return `${m.toString(8).padStart(4, '0')} (${text})`
}

/**
 * The first ancestor directory of path (from / down) the user cannot search (no x), which makes
 * everything below unreachable whatever its own mode; null when every ancestor is searchable.
 */
export async function findBlockingAncestor(path: string, user: UserInfo): Promise<PathStat | null> {
  const chain: string[] = []
  for (let dir = dirname(resolve(path)); ; dir = dirname(dir)) {
    chain.unshift(dir)
    if (dir === dirname(dir)) break
  }
  const names = await nameMaps()
  for (const dir of chain) {
    const s = await stat(dir).catch(() => null)
    if (!s) return null
    const ps = toPathStat(dir, s, names)
    if (!mayAccess(ps, user, 'x')) return ps
  }
  return null
}

const MAX_OFFENDERS = 50

/**
 * Walk a tree (symlinks below root are not followed) up to maxEntries (default 10000) and list entries not
 * owned by the user or that the user may not read and write (directories: also search).
 * offenders holds the first 50; offenderCount counts all of them among the checked entries.
 */
export async function findAccessProblems(
  root: string,
  user: UserInfo,
  opts: {maxEntries?: number} = {},
): Promise<ProbeResult<{checked: number; truncated: boolean; offenders: PathStat[]; offenderCount: number}>> {
  const startedAt = Date.now()
  const maxEntries = opts.maxEntries ?? 10_000
  const names = await nameMaps()
  let rootStat: NodeStats
  try {
    rootStat = await stat(root) // a data dir configured as a symlink: audit what it points at
  } catch (e) {
    return probeFail(fsError(e, root, 'read'), startedAt)
  }

  const offenders: PathStat[] = []
  let offenderCount = 0
  let checked = 0
  let truncated = false
  const consider = (ps: PathStat): void => {
    checked++
    if (ps.type === 'symlink') return // a link's own mode means nothing; its target is checked where it lives
    const bad =
      ps.uid !== user.uid ||
      !mayAccess(ps, user, 'r') ||
      !mayAccess(ps, user, 'w') ||
      (ps.type === 'dir' && !mayAccess(ps, user, 'x'))
    if (bad) {
      offenderCount++
      if (offenders.length < MAX_OFFENDERS) offenders.push(ps)
    }
  }

  consider(toPathStat(root, rootStat, names))
  const queue: string[] = rootStat.isDirectory() ? [root] : []
  walk: while (queue.length > 0) {
    const dir = queue.shift() as string
    let handle: Awaited<ReturnType<typeof opendir>>
    try {
      handle = await opendir(dir)
    } catch {
      continue // unreadable (listed as an offender already when it matters) or vanished meanwhile
    }
    try {
      for await (const entry of handle) {
        if (checked >= maxEntries) {
          truncated = true
          break walk
        }
        const path = join(dir, entry.name)
        const s = await lstat(path).catch(() => null)
        if (!s) continue
        const ps = toPathStat(path, s, names)
        consider(ps)
        if (ps.type === 'dir') queue.push(path)
      }
    } catch {
      // the directory changed under us; keep what was read
    }
  }
  return probeOk({checked, truncated, offenders, offenderCount}, startedAt)
}
