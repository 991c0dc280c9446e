import {execFileSync} from 'node:child_process'
import {chmod, chown, mkdir, mkdtemp, rm, symlink, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {
  diskUsage,
  findAccessProblems,
  findBlockingAncestor,
  formatMode,
  lookupGroupName,
  lookupUser,
  mayAccess,
  statPath,
  type PathStat,
  type UserInfo,
} from '../../src/diagnostics/files.js'
import {probeAsUser} from './fixtures/local.js'

// Real users of this machine: root, postgres (with a supplementary group), nobody.
const idOf = (user: string, flag: '-u' | '-g' | '-G'): number[] =>
  execFileSync('id', [flag, user], {encoding: 'utf8'}).trim().split(/\s+/).map(Number)
const PG_UID = idOf('postgres', '-u')[0] as number
const PG_GID = idOf('postgres', '-g')[0] as number
const PG_GROUPS = idOf('postgres', '-G')
const PG_SUPPLEMENTARY = PG_GROUPS.find((g) => g !== PG_GID)

let root: string
let users: Record<'root' | 'postgres' | 'nobody', UserInfo>

async function file(path: string, mode: number, uid: number, gid: number, body = 'x'): Promise<string> {
  await writeFile(path, body)
  await chown(path, uid, gid)
  await chmod(path, mode)
  return path
}
async function dir(path: string, mode: number, uid: number, gid: number): Promise<string> {
  await mkdir(path)
  await chown(path, uid, gid)
  await chmod(path, mode)
  return path
}
async function mustStat(path: string): Promise<PathStat> {
  const r = await statPath(path)
  if (!r.ok) throw new Error(r.error.message)
  return r.value
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'opsctl-files-'))
  await chmod(root, 0o755) // other users must be able to reach what is inside
  const [r, p, n] = await Promise.all([lookupUser('root'), lookupUser('postgres'), lookupUser('nobody')])
  if (!r || !p || !n) throw new Error('test needs the root, postgres and nobody users')
  users = {root: r, postgres: p, nobody: n}
})
afterAll(async () => {
  await rm(root, {recursive: true, force: true})
})

describe('users and groups', () => {
  it('reads users by name and uid with primary and supplementary groups, like id(1)', async () => {
    expect(users.postgres).toMatchObject({name: 'postgres', uid: PG_UID, gid: PG_GID})
    expect([...users.postgres.groups].sort((a, b) => a - b)).toEqual([...PG_GROUPS].sort((a, b) => a - b))
    expect(users.postgres.groups[0]).toBe(PG_GID)
    expect(await lookupUser(65534)).toMatchObject({name: 'nobody', uid: 65534})
    expect(await lookupUser('65534')).toMatchObject({name: 'nobody'})
    expect(await lookupUser('opsctl-no-such-user')).toBeNull()
    expect(await lookupGroupName(PG_GID)).toBe(execFileSync('id', ['-gn', 'postgres'], {encoding: 'utf8'}).trim())
    expect(await lookupGroupName(987_654)).toBeNull()
  })
})

describe('statPath', () => {
  it('describes a real file with owner and group names', async () => {
    const p = await file(join(root, 'stat.txt'), 0o640, PG_UID, PG_GID, 'hello')
    const s = await mustStat(p)
    expect(s).toMatchObject({path: p, type: 'file', mode: 0o640, uid: PG_UID, gid: PG_GID, owner: 'postgres', size: 5})
    expect(s.group).toBe(await lookupGroupName(PG_GID))
    expect(Math.abs(s.mtimeMs - Date.now())).toBeLessThan(60_000)
  })

  it('keeps special bits, follows symlinks unless told not to, and reports missing paths', async () => {
    const d = await dir(join(root, 'sticky'), 0o1777, 0, 0)
    expect((await mustStat(d)).mode).toBe(0o1777)
    const link = join(root, 'link-to-stat')
    await symlink(join(root, 'stat.txt'), link)
    expect(await mustStat(link)).toMatchObject({path: link, type: 'file', mode: 0o640, owner: 'postgres'})
    const itself = await statPath(link, {follow: false})
    expect(itself.ok && itself.value.type).toBe('symlink')
    expect(await statPath(join(root, 'missing'))).toMatchObject({ok: false, error: {kind: 'not-found', code: 'ENOENT'}})
    const dangling = join(root, 'dangling')
    await symlink(join(root, 'nowhere'), dangling)
    expect(await statPath(dangling)).toMatchObject({
      ok: false,
      error: {kind: 'not-found', message: `${dangling} is a symlink to ${join(root, 'nowhere')}, which does not exist`},
    })
  })
})

describe('mayAccess agrees with the kernel', () => {
  it('for root, postgres (incl. a supplementary group) and nobody on real files and dirs', async () => {
    const base = await dir(join(root, 'perm'), 0o755, 0, 0)
    const paths = [
      await file(join(base, 'pg-640'), 0o640, PG_UID, PG_GID),
      await file(join(base, 'pg-077'), 0o077, PG_UID, PG_GID), // owner class denies though others may
      await file(join(base, 'root-644'), 0o644, 0, 0),
      await file(join(base, 'root-600'), 0o600, 0, 0),
      await file(join(base, 'root-000'), 0o000, 0, 0),
      await file(join(base, 'root-010'), 0o010, 0, 0),
      await file(join(base, 'nobody-755'), 0o755, 65534, 65534),
      await dir(join(base, 'root-dir-000'), 0o000, 0, 0),
      await dir(join(base, 'pg-dir-750'), 0o750, PG_UID, PG_GID),
      await dir(join(base, 'root-dir-1733'), 0o1733, 0, 0),
    ]
    if (PG_SUPPLEMENTARY !== undefined) {
      paths.push(await file(join(base, 'root-supp-640'), 0o640, 0, PG_SUPPLEMENTARY))
      paths.push(await dir(join(base, 'root-supp-dir-070'), 0o070, 0, PG_SUPPLEMENTARY))
    }
    // One shell per user asks the kernel (coreutils test → access(2)) about every path.
    const script = 'for p in "$@"; do for a in r w x; do if /usr/bin/test -$a "$p"; then echo 1; else echo 0; fi; done; done'
    for (const who of ['root', 'postgres', 'nobody'] as const) {
      const kernel = execFileSync('runuser', ['-u', who, '--', '/bin/sh', '-c', script, 'sh', ...paths], {encoding: 'utf8'}).trim().split('\n')
      const ours: string[] = []
      for (const p of paths) {
        const s = await mustStat(p)
        for (const a of ['r', 'w', 'x'] as const) ours.push(mayAccess(s, users[who], a) ? '1' : '0')
      }
      const label = (i: number): string => `${who} ${['r', 'w', 'x'][i % 3]} ${paths[Math.floor(i / 3)]}`
      expect(ours.map((v, i) => `${label(i)}=${v}`)).toEqual(kernel.map((v, i) => `${label(i)}=${v}`))
    }
  })
})

describe('formatMode', () => {
  it('prints octal and ls-style letters, special bits included', () => {
    expect(formatMode(0o750)).toBe('0750 (rwxr-x---)')
    expect(formatMode(0o400)).toBe('0400 (r--------)')
    expect(formatMode(0o4755)).toBe('4755 (rwsr-xr-x)')
    expect(formatMode(0o2750)).toBe('2750 (rwxr-s---)')
    expect(formatMode(0o1777)).toBe('1777 (rwxrwxrwt)')
    expect(formatMode(0o1666)).toBe('1666 (rw-rw-rwT)')
    expect(formatMode(0o100644)).toBe('0644 (rw-r--r--)')
  })
})

describe('diskUsage', () => {
  it('matches df for the filesystem of a real path', async () => {
    const r = await diskUsage(root)
    expect(r.ok).toBe(true)
    if (!r.ok) return
    const [size, used, avail, pcent] = execFileSync('df', ['-B1', '--output=size,used,avail,pcent', root], {encoding: 'utf8'})
      .trim()
      .split('\n')[1]
      ?.trim()
      .split(/\s+/) ?? []
    expect(r.value.totalBytes).toBe(Number(size))
    const tolerance = 64 * 1024 * 1024 // other writers between the two calls
    expect(Math.abs(r.value.availBytes - Number(avail))).toBeLessThan(tolerance)
    expect(Math.abs(r.value.totalBytes - r.value.freeBytes - Number(used))).toBeLessThan(tolerance)
    expect(r.value.freeBytes).toBeGreaterThanOrEqual(r.value.availBytes)
    // df rounds the percentage up.
    expect(Math.abs(Math.ceil(r.value.usedPercent) - Number(pcent?.replace('%', '')))).toBeLessThanOrEqual(1)
    expect(r.value.usedPercent).toBeGreaterThan(0)
    expect(r.value.usedPercent).toBeLessThanOrEqual(100)
    if (r.value.inodesUsedPercent !== null) expect(r.value.inodesUsedPercent).toBeGreaterThan(0)
  })

  it('reports a missing path as not-found', async () => {
    expect(await diskUsage(join(root, 'no', 'such'))).toMatchObject({ok: false, error: {kind: 'not-found'}})
  })
})

describe('findAccessProblems', () => {
  it('lists entries the service user does not own or may not read and write', async () => {
    const data = await dir(join(root, 'data'), 0o750, PG_UID, PG_GID)
    await file(join(data, 'ok.txt'), 0o640, PG_UID, PG_GID)
    await file(join(data, 'root-owned.txt'), 0o644, 0, 0)
    await file(join(data, 'read-only.txt'), 0o440, PG_UID, PG_GID)
    const sub = await dir(join(data, 'sub'), 0o500, PG_UID, PG_GID)
    await file(join(sub, 'deep-ok.txt'), 0o600, PG_UID, PG_GID)
    await file(join(sub, 'deep-nobody.txt'), 0o666, 65534, 65534)
    await symlink('/etc/passwd', join(data, 'link'))
    const r = await findAccessProblems(data, users.postgres)
    expect(r.ok).toBe(true)
    if (!r.ok) return
    expect(r.value.checked).toBe(8)
    expect(r.value.truncated).toBe(false)
    expect(r.value.offenders.map((o) => o.path).sort()).toEqual(
      [join(data, 'read-only.txt'), join(data, 'root-owned.txt'), sub, join(sub, 'deep-nobody.txt')].sort(),
    )
    expect(r.value.offenderCount).toBe(4)
    // Everything is fine for root's own tree.
    const mine = await dir(join(root, 'mine'), 0o700, 0, 0)
    await file(join(mine, 'a'), 0o600, 0, 0)
    expect(await findAccessProblems(mine, users.root)).toMatchObject({ok: true, value: {checked: 2, offenders: []}})
  })

  it('stops at maxEntries and keeps at most 50 offenders while counting them all', async () => {
    const big = await dir(join(root, 'big'), 0o755, PG_UID, PG_GID)
    for (let i = 0; i < 60; i++) await writeFile(join(big, `f${i}`), '') // root-owned: all offenders
    const capped = await findAccessProblems(big, users.postgres, {maxEntries: 10})
    expect(capped).toMatchObject({ok: true, value: {checked: 10, truncated: true}})
    const all = await findAccessProblems(big, users.postgres)
    expect(all.ok && all.value.offenders).toHaveLength(50)
    expect(all).toMatchObject({ok: true, value: {checked: 61, truncated: false, offenderCount: 60}})
  })

  it('audits what a symlinked root points at', async () => {
    const real = await dir(join(root, 'real-data'), 0o700, PG_UID, PG_GID)
    await file(join(real, 'root-owned'), 0o644, 0, 0)
    const link = join(root, 'data-link')
    await symlink(real, link)
    const r = await findAccessProblems(link, users.postgres)
    expect(r).toMatchObject({ok: true, value: {checked: 2, offenderCount: 1}})
    expect(r.ok && r.value.offenders[0]?.path).toBe(join(link, 'root-owned'))
  })

  it('reports a missing root as not-found', async () => {
    expect(await findAccessProblems(join(root, 'nope'), users.postgres)).toMatchObject({ok: false, error: {kind: 'not-found'}})
  })
})

describe('findBlockingAncestor and permission errors as an unprivileged user', () => {
  it('finds the directory that makes a path unreachable', async () => {
    const locked = await dir(join(root, 'locked'), 0o700, 0, 0)
    const inner = await dir(join(locked, 'inner'), 0o777, PG_UID, PG_GID)
    const target = await file(join(inner, 'f'), 0o666, PG_UID, PG_GID)
    expect((await findBlockingAncestor(target, users.postgres))?.path).toBe(locked)
    expect(await findBlockingAncestor(target, users.root)).toBeNull()
    expect(await findBlockingAncestor(join(root, 'stat.txt'), users.nobody)).toBeNull()
  })

  it('statPath and findAccessProblems say permission when the OS refuses', async () => {
    const target = join(root, 'locked', 'inner', 'f')
    const inner = join(root, 'locked', 'inner')
    const nobody = JSON.stringify(users.nobody)
    const out = await probeAsUser('nobody', 'files.ts', `Promise.all([m.statPath(${JSON.stringify(target)}), m.findAccessProblems(${JSON.stringify(inner)}, ${nobody})])`)
    const [stat, walk] = out as unknown[]
    expect(stat).toMatchObject({ok: false, error: {kind: 'permission', code: 'EACCES'}})
    expect(walk).toMatchObject({ok: false, error: {kind: 'permission', code: 'EACCES'}})
  })
})
