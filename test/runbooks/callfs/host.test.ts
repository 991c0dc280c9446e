// The CallFS host checks against the real filesystem: callfs.disk.space measures the real
// filesystem of data_dir (and a real 1 MiB tmpfs filled to the brim), callfs.data-dir.permissions
// looks at real directories with real owners and modes, and its fix really chowns them —
// never through a symbolic link.
import {execFileSync, spawn} from 'node:child_process'
import {mkdtempSync, readdirSync, rmdirSync} from 'node:fs'
import {chmod, chown, link, lstat, mkdir, mkdtemp, readFile, stat, symlink, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {AuditLog} from '../../../src/engine/audit.js'
import {remediate} from '../../../src/engine/remediate.js'
import type {TargetRun} from '../../../src/engine/runner.js'
import type {CheckReport, Fix, FixResult} from '../../../src/engine/types.js'
import {startCallfsWorld, type CallfsWorld} from '../../support/callfs-world.js'
import {systemUser} from '../../support/ports.js'

const FAKEBIN = join(import.meta.dirname, '..', '..', 'support', 'fakebin')
// systemctl for the unit's User= comes from the fake (this file runs in its own worker).
process.env.PATH = `${FAKEBIN}:${process.env.PATH ?? '/usr/bin:/bin'}`

const NOBODY = systemUser('nobody')
const POSTGRES = systemUser('postgres')
if (!NOBODY || !POSTGRES) throw new Error('these tests need the users nobody and postgres (apt-get install postgresql)')

/**
 * A python3 script that swaps two names in its working directory atomically (renameat2
 * RENAME_EXCHANGE), over and over, for at most 4 s; a side missing for a moment is skipped.
 */
function swapper(cwd: string, a: string, b: string) {
  const script = `
import ctypes, errno, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
end = time.time() + 4
while time.time() < end:
    if libc.renameat2(-100, b'${a}', -100, b'${b}', 2) != 0 and ctypes.get_errno() != errno.ENOENT:
        sys.exit('renameat2: ' + os.strerror(ctypes.get_errno()))
`
  const child = spawn('python3', ['-c', script], {cwd, stdio: ['ignore', 'ignore', 'pipe']})
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  return {stderr: () => stderr, pause: () => child.kill('SIGSTOP'), resume: () => child.kill('SIGCONT'), stop: () => child.kill('SIGKILL')}
}

/** Owner and mode of a file: a decoy outside the data directory must keep root's. */
async function ownerAndMode(path: string): Promise<{uid: number; gid: number; mode: number}> {
  const st = await stat(path)
  return {uid: st.uid, gid: st.gid, mode: st.mode & 0o7777}
}

/**
 * Run a fix over and over for up to `ms` while a swapper races it, until the decoy changes or
 * `enough()` is true; `setUp` runs before each round with the swapper paused. Returns the rounds.
 */
async function race(o: {
  apply: NonNullable<Fix['apply']>
  swap: ReturnType<typeof swapper>
  decoy: string
  ms: number
  setUp?: () => Promise<void>
  onResult?: (r: FixResult) => void
  enough?: () => boolean
}): Promise<number> {
  const original = await ownerAndMode(o.decoy)
  const started = Date.now()
  let rounds = 0
  while (Date.now() - started < o.ms) {
    if (o.setUp) {
      o.swap.pause() // names hold still while the round is set up
      await o.setUp()
      o.swap.resume()
    }
    // A round may fail on an entry that vanished mid-swap; only what happened outside matters.
    const result = await o.apply(new AbortController().signal).catch((e: Error) => ({ok: false, detail: e.message}))
    o.onResult?.(result)
    rounds++
    if (JSON.stringify(await ownerAndMode(o.decoy)) !== JSON.stringify(original) || o.enough?.()) break
  }
  return rounds
}

/** Whether this machine lets us mount a tmpfs (decided while the tests are collected). */
function canMountTmpfs(): boolean {
  const probe = mkdtempSync(join(tmpdir(), 'opsctl-mount-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe], {stdio: 'pipe'})
    execFileSync('umount', [probe], {stdio: 'pipe'})
    return true
  } catch {
    return false
  } finally {
    rmdirSync(probe)
  }
}
const CAN_MOUNT = canMountTmpfs()

let w: CallfsWorld
let n = 0
let small = '' // a 1 MiB tmpfs with 64 inodes (when CAN_MOUNT)

beforeAll(async () => {
  // No CallFS config.yaml: these tests point data_dir at their own directories, and CallFS's
  // own backend.localfs_root_path would win over it (the tests of that write their own config).
  w = await startCallfsWorld({sim: false, callfsConfig: null})
  // mkdtemp made the world 0700: let nobody reach the data directories below it.
  await chmod(w.dir, 0o755)
  if (CAN_MOUNT) {
    const mountPoint = join(w.dir, 'small')
    await mkdir(mountPoint)
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,nr_inodes=64,mode=0755', 'tmpfs', mountPoint], {stdio: 'pipe'})
    small = mountPoint
  }
})

afterAll(async () => {
  if (small) execFileSync('umount', ['-l', small], {stdio: 'pipe'}) // before the world's dir is removed
  await w?.stop()
})

/** A fresh directory under the world: owner and mode as given. */
async function dataDir(o: {owner?: {uid: number; gid: number}; mode?: number} = {}): Promise<string> {
  const dir = join(w.dir, `data-${++n}`)
  await mkdir(dir)
  await chmod(dir, o.mode ?? 0o750)
  if (o.owner) await chown(dir, o.owner.uid, o.owner.gid)
  return dir
}

async function file(path: string, o: {owner?: {uid: number; gid: number}; mode?: number} = {}): Promise<string> {
  await writeFile(path, 'callfs data\n')
  await chmod(path, o.mode ?? 0o640)
  if (o.owner) await chown(path, o.owner.uid, o.owner.gid)
  return path
}

/** A CallFS config.yaml of its own whose backend section says `backend`; returns its path. */
async function callfsConfig(backend: string): Promise<string> {
  const path = join(w.dir, `callfs-config-${++n}.yaml`)
  await writeFile(path, `metadata_store:\n  type: postgres\nbackend:\n${backend}\n`)
  return path
}

/** df's own Use% for a path: the check must agree with it. */
function dfPercent(path: string): number {
  const out = execFileSync('df', ['--output=pcent', path], {encoding: 'utf8'})
  return Number(out.split('\n')[1]?.trim().replace('%', ''))
}

/**
 * Walk the whole flowchart (the way `opsctl diagnose` does), keep only the fix of `checkId`, and
 * apply it as --yes would: returns that check's report (with its outcome) and its audit lines.
 */
async function walkAndFix(checkId: string, overrides: Record<string, unknown>): Promise<{before: CheckReport; run: TargetRun; audit: Array<Record<string, unknown>>}> {
  const run = await w.walk(overrides)
  for (const id of [...run.fixes.keys()]) if (id !== checkId) run.fixes.delete(id)
  const check = run.report.checks.find((c) => c.id === checkId)
  if (!check) throw new Error(`${checkId} is not in the report`)
  const before = structuredClone(check)
  const auditPath = join(w.dir, `audit-${++n}.jsonl`)
  await remediate([run], {kind: 'yes'}, new AuditLog(auditPath, '0.1.0'), 2000)
  const audit = (await readFile(auditPath, 'utf8').catch(() => ''))
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
  return {before, run, audit}
}

function reportOf(run: TargetRun, id: string): CheckReport {
  const c = run.report.checks.find((x) => x.id === id)
  if (!c) throw new Error(`${id} is not in the report`)
  return c
}

describe('callfs.disk.space', () => {
  it('is ok on the real filesystem of data_dir below the default levels, and agrees with df', async () => {
    const r = await w.check('callfs.disk.space')
    const used = dfPercent(w.dataDir)
    expect(used).toBeLessThan(80) // the premise: this machine's disk is not nearly full
    expect(r.status).toBe('ok')
    expect(r.evidence.path).toBe(w.dataDir)
    expect(Math.abs((r.evidence.usedPercent as number) - used)).toBeLessThanOrEqual(1)
    expect(r.evidence.thresholds).toEqual({warn: 80, fail: 95})
    expect(r.summary).toMatch(new RegExp(`^[\\d.]+% of [\\d.]+ [GM]iB used on the filesystem of ${w.dataDir}, [\\d.]+ [GM]iB free$`))
    expect(r.remediation).toBeNull()
  })

  it('warns when the real usage is at the warning level, and fails at the failure level', async () => {
    const used = dfPercent(w.dataDir)
    const warn = await w.check('callfs.disk.space', {thresholds: {disk_warn: Math.max(0, used - 1), disk_fail: 100}})
    expect(warn.status).toBe('warn')
    expect(warn.evidence.thresholds).toEqual({warn: Math.max(0, used - 1), fail: 100})
    expect(warn.remediation).toMatchObject({id: 'callfs.disk.free-space', automated: false, risk: null})
    expect(warn.remediation?.commands).toEqual(expect.arrayContaining([`df -h ${w.dataDir}`, `du -xsh ${w.dataDir}/* | sort -h | tail -20`]))

    const fail = await w.check('callfs.disk.space', {thresholds: {disk_warn: Math.max(0, used - 2), disk_fail: Math.max(0, used - 1)}})
    expect(fail.status).toBe('fail')
    expect(fail.summary).toContain(`on the filesystem of ${w.dataDir}`)
    expect(fail.fix?.apply).toBeUndefined() // freeing disk space is the operator's call
  })

  it('is skipped when CallFS runs on another machine (its disk is not ours to measure)', async () => {
    const r = await w.check('callfs.disk.space', {url: 'https://192.0.2.10:8443'})
    expect(r.status).toBe('skipped')
    expect(r.summary).toBe('192.0.2.10 is not this machine')
  })

  describe('on a real, small filesystem', () => {
    it.skipIf(!CAN_MOUNT)('warns at 85% and fails when it is full, measured on that filesystem (not /)', async () => {
      const dir = join(small, `data-${++n}`)
      await mkdir(dir)
      // tmpfs: 256 pages of 4 KiB; fill about 85% of it.
      await writeFile(join(dir, 'a.bin'), Buffer.alloc(870 * 1024, 1))
      const warn = await w.check('callfs.disk.space', {data_dir: dir})
      expect(warn.status).toBe('warn')
      expect(warn.evidence).toMatchObject({path: dir, total: '1 MiB'})
      expect(warn.evidence.usedPercent).toBeGreaterThanOrEqual(80)
      expect(warn.evidence.usedPercent).toBeLessThan(95)

      // Fill the rest until the kernel says no more.
      await writeFile(join(dir, 'b.bin'), Buffer.alloc(1024 * 1024, 2)).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOSPC') throw e
      })
      const fail = await w.check('callfs.disk.space', {data_dir: dir})
      expect(fail.status).toBe('fail')
      expect(fail.evidence).toMatchObject({path: dir, usedPercent: 100, available: '0 MiB', total: '1 MiB'})
      expect(fail.summary).toBe(`100% of 1 MiB used on the filesystem of ${dir}, 0 MiB free`)
      expect(fail.remediation?.title).toBe(`Free disk space under ${dir}`)
      execFileSync('rm', ['-rf', dir])
    })

    it.skipIf(!CAN_MOUNT)('fails on inodes when the filesystem has space but no inodes left', async () => {
      const dir = join(small, `inodes-${++n}`)
      await mkdir(dir)
      for (let i = 0; ; i++) {
        try {
          await writeFile(join(dir, `f${i}`), '')
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOSPC') break
          throw e
        }
        if (i > 1000) throw new Error('nr_inodes=64 did not limit the tmpfs')
      }
      const r = await w.check('callfs.disk.space', {data_dir: dir})
      expect(r.status).toBe('fail')
      expect(r.evidence.inodesUsedPercent).toBe(100)
      expect(r.evidence.usedPercent as number).toBeLessThan(80)
      expect(r.summary).toMatch(/; inodes 100% used$/)
      expect(r.remediation?.title).toBe(`Free disk inodes under ${dir}`)
      execFileSync('rm', ['-rf', dir])
    })

    it.skipIf(!CAN_MOUNT)('measures the nearest existing parent when data_dir does not exist', async () => {
      const missing = join(small, 'not-yet', 'callfs')
      const r = await w.check('callfs.disk.space', {data_dir: missing})
      expect(r.status).toBe('ok')
      expect(r.evidence).toMatchObject({path: small, total: '1 MiB'}) // the tmpfs, not the disk under it
      expect(r.summary).toMatch(new RegExp(`\\(${missing} does not exist; measured ${small}\\)$`))
    })
  })

  it('measures the nearest existing parent when data_dir does not exist (on the disk)', async () => {
    const missing = join(w.dir, 'no-such', 'data')
    const r = await w.check('callfs.disk.space', {data_dir: missing})
    expect(r.status).toBe('ok')
    expect(r.evidence.path).toBe(w.dir)
    expect(r.summary).toContain(`(${missing} does not exist; measured ${w.dir})`)
  })
})

describe('callfs.data-dir.permissions', () => {
  it('is ok when the service user owns the directory and everything in it', async () => {
    const dir = await dataDir({owner: NOBODY, mode: 0o750})
    await mkdir(join(dir, 'sub'), {mode: 0o750})
    await chown(join(dir, 'sub'), NOBODY.uid, NOBODY.gid)
    await file(join(dir, 'sub', 'a.txt'), {owner: NOBODY, mode: 0o640})
    const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
    expect(r.status).toBe('ok')
    expect(r.summary).toBe(`${dir} is owned and writable by nobody (0750 (rwxr-x---), 3 entries checked)`)
    expect(r.evidence).toMatchObject({dataDir: dir, user: 'nobody', owner: 'nobody', mode: '0750 (rwxr-x---)', checked: 3})
  })

  it('fails when the directory belongs to root with mode 0700, and offers the safe chown', async () => {
    const dir = await dataDir({mode: 0o700})
    const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`${dir}: owned by root, not nobody; nobody may not write into it (0700 (rwx------))`)
    expect(r.evidence).toMatchObject({owner: 'root', group: 'root', mode: '0700 (rwx------)', user: 'nobody'})
    expect(r.remediation).toMatchObject({
      id: 'callfs.data-dir.fix-ownership',
      risk: 'safe',
      automated: true,
      commands: [`sudo chown -R nobody:nogroup ${dir}`, `sudo chmod -R u+rwX ${dir}`],
    })
    expect(r.remediation?.plan[0]).toBe(`chown -R nobody:nogroup ${dir} (symbolic links are not followed)`)
  })

  it('fails on a file inside owned by another user, and names it', async () => {
    const dir = await dataDir({owner: NOBODY})
    await file(join(dir, 'mine.txt'), {owner: NOBODY})
    const theirs = await file(join(dir, 'theirs.txt'), {owner: POSTGRES, mode: 0o644})
    const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`${dir}: 1 entries inside are not owned by or not accessible to nobody`)
    expect(r.evidence.offenders).toEqual([`${theirs} (postgres, 0644 (rw-r--r--))`])
    expect(r.evidence.checked).toBe(3)
  })

  it('fails on a file the service user owns but may not write', async () => {
    const dir = await dataDir({owner: NOBODY})
    const readOnly = await file(join(dir, 'ro.txt'), {owner: NOBODY, mode: 0o440})
    const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
    expect(r.status).toBe('fail')
    expect(r.evidence.offenders).toEqual([`${readOnly} (nobody, 0440 (r--r-----))`])
  })

  it('fails when a parent directory keeps the service user out, and says to fix that one by hand', async () => {
    const parent = await dataDir({mode: 0o700})
    const dir = join(parent, 'data')
    await mkdir(dir, {mode: 0o750})
    await chown(dir, NOBODY.uid, NOBODY.gid)
    const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`${dir}: nobody cannot reach it: ${parent} is 0700 (rwx------) (owner root) — fix that directory by hand`)
  })

  it('fails when the directory does not exist', async () => {
    const dir = join(w.dir, `missing-${++n}`)
    const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`data directory ${dir} does not exist`)
    expect(r.remediation).toMatchObject({automated: true, risk: 'safe', commands: [`sudo install -d -m 0750 -o nobody -g nogroup ${dir}`]})
  })

  it('is skipped when the service user does not exist here', async () => {
    const r = await w.check('callfs.data-dir.permissions', {service_user: 'callfs-nonexistent'})
    expect(r.status).toBe('skipped')
    expect(r.summary).toBe('no user "callfs-nonexistent" on this machine: set systems.callfs.service_user to the user CallFS runs as')
  })

  it('takes the user from the unit\'s User= when service_user is not set', async () => {
    const systemd = await mkdtemp(join(w.dir, 'systemd-'))
    await writeFile(
      join(systemd, 'callfs.service.state'),
      ['MainPID=0', 'Result=success', 'User=postgres', 'ExecMainStatus=0', 'LoadState=loaded', 'ActiveState=inactive', 'SubState=dead', 'ActiveEnterTimestamp=', 'InactiveEnterTimestamp='].join('\n') + '\n',
    )
    process.env.OPSCTL_FAKE_SYSTEMD_DIR = systemd
    try {
      const dir = await dataDir({owner: POSTGRES, mode: 0o700})
      const ok = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: null})
      expect(ok.status).toBe('ok')
      expect(ok.evidence.user).toBe('postgres')
      const wrong = await w.check('callfs.data-dir.permissions', {data_dir: await dataDir({owner: NOBODY}), service_user: null})
      expect(wrong.status).toBe('fail')
      expect(wrong.summary).toContain('owned by nobody, not postgres')
      expect(await readFile(join(systemd, 'calls.log'), 'utf8')).toContain('systemctl show callfs')
    } finally {
      delete process.env.OPSCTL_FAKE_SYSTEMD_DIR
    }
  })

  it('takes root when the unit is loaded without User= (systemd then runs it as root)', async () => {
    const systemd = await mkdtemp(join(w.dir, 'systemd-'))
    await writeFile(
      join(systemd, 'callfs.service.state'),
      ['MainPID=0', 'Result=success', 'User=', 'ExecMainStatus=0', 'LoadState=loaded', 'ActiveState=inactive', 'SubState=dead', 'ActiveEnterTimestamp=', 'InactiveEnterTimestamp='].join('\n') + '\n',
    )
    process.env.OPSCTL_FAKE_SYSTEMD_DIR = systemd
    try {
      const dir = await dataDir({mode: 0o700})
      const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: null})
      expect(r.status).toBe('ok')
      expect(r.evidence.user).toBe('root')
    } finally {
      delete process.env.OPSCTL_FAKE_SYSTEMD_DIR
    }
  })

  it('falls back to a user named like the unit when there is no such unit', async () => {
    const systemd = await mkdtemp(join(w.dir, 'systemd-'))
    process.env.OPSCTL_FAKE_SYSTEMD_DIR = systemd // no state file: LoadState=not-found
    try {
      const r = await w.check('callfs.data-dir.permissions', {service_user: null, unit: 'callfs'})
      expect(r.status).toBe('skipped')
      expect(r.summary).toBe('no user "callfs" on this machine: set systems.callfs.service_user to the user CallFS runs as')
    } finally {
      delete process.env.OPSCTL_FAKE_SYSTEMD_DIR
    }
  })

  it('is skipped when CallFS runs on another machine', async () => {
    const r = await w.check('callfs.data-dir.permissions', {url: 'https://192.0.2.10:8443', service_user: 'nobody'})
    expect(r.status).toBe('skipped')
  })

  describe('which directory: the one CallFS uses', () => {
    it('without data_dir in opsctl\'s config, checks CallFS\'s own backend.localfs_root_path (disk and permissions)', async () => {
      const dir = await dataDir({owner: NOBODY, mode: 0o750})
      const config = await callfsConfig(`  localfs_root_path: ${dir}`)
      const r = await w.check('callfs.data-dir.permissions', {data_dir: undefined, config_file: config, service_user: 'nobody'})
      expect(r.status).toBe('ok')
      expect(r.summary).toBe(`${dir} is owned and writable by nobody (0750 (rwxr-x---), 1 entries checked)`)
      expect(r.evidence).toMatchObject({dataDir: dir, dataDirFrom: `${config} (backend.localfs_root_path)`})
      expect(r.evidence.note).toBeUndefined()
      const disk = await w.check('callfs.disk.space', {data_dir: undefined, config_file: config})
      expect(disk.evidence).toMatchObject({path: dir, dataDirFrom: `${config} (backend.localfs_root_path)`})
    })

    it('when data_dir says another directory, checks (and would fix) CallFS\'s, and says they differ', async () => {
      const callfsDir = await dataDir({mode: 0o700}) // root's: CallFS as nobody cannot write it
      const opsctlDir = await dataDir({owner: NOBODY, mode: 0o750}) // fine, but CallFS does not use it
      const config = await callfsConfig(`  localfs_root_path: "${callfsDir}/"`)
      const r = await w.check('callfs.data-dir.permissions', {data_dir: opsctlDir, config_file: config, service_user: 'nobody'})
      expect(r.status).toBe('fail')
      expect(r.summary).toBe(`${callfsDir}: owned by root, not nobody; nobody may not write into it (0700 (rwx------))`)
      expect(r.evidence).toMatchObject({
        dataDir: callfsDir,
        dataDirFrom: `${config} (backend.localfs_root_path)`,
        opsctlDataDir: opsctlDir,
        note: `systems.callfs.data_dir (${opsctlDir}) is not the directory CallFS uses (${callfsDir}, from ${config}): checked CallFS's`,
      })
      expect(r.remediation?.commands).toEqual([`sudo chown -R nobody:nogroup ${callfsDir}`, `sudo chmod -R u+rwX ${callfsDir}`])
      const disk = await w.check('callfs.disk.space', {data_dir: opsctlDir, config_file: config})
      expect(disk.evidence).toMatchObject({path: callfsDir, opsctlDataDir: opsctlDir})
    })

    it('keeps data_dir when CallFS\'s config names no root path, names a relative one (its working directory is unknown here), or cannot be parsed', async () => {
      const dir = await dataDir({owner: NOBODY, mode: 0o750})
      const noRoot = await callfsConfig('  type: localfs')
      const relative = await callfsConfig('  localfs_root_path: data/callfs')
      const broken = join(w.dir, `broken-${++n}.yaml`)
      await writeFile(broken, 'backend: [unclosed\n')
      for (const config of [noRoot, relative, broken]) {
        const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, config_file: config, service_user: 'nobody'})
        expect({config, status: r.status, dataDir: r.evidence.dataDir, from: r.evidence.dataDirFrom}).toEqual({config, status: 'ok', dataDir: dir, from: undefined})
      }
      const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, config_file: relative, service_user: 'nobody'})
      expect(r.evidence.note).toBe(`CallFS's backend.localfs_root_path (data/callfs, in ${relative}) is relative to its working directory, which opsctl cannot see: checked systems.callfs.data_dir`)
    })
  })

  describe('the fix', () => {
    it('gives the tree to the service user, re-checks ok, and audits the plan — and follows no symbolic link', async () => {
      const dir = await dataDir({mode: 0o700})
      await mkdir(join(dir, 'nested', 'deeper'), {recursive: true, mode: 0o700})
      await file(join(dir, 'nested', 'deeper', 'blob'), {owner: POSTGRES, mode: 0o400})
      await file(join(dir, 'root.txt'), {mode: 0o644})
      // Outside the data directory: a file and a directory that links inside point at. The
      // brief's example is /etc/passwd; a root-owned decoy proves the same without risking it.
      const outside = await mkdtemp(join(w.dir, 'outside-'))
      const decoy = await file(join(outside, 'passwd'), {mode: 0o644})
      await mkdir(join(outside, 'etc'), {mode: 0o755})
      const decoyInDir = await file(join(outside, 'etc', 'shadow'), {mode: 0o600})
      await symlink(decoy, join(dir, 'passwd-link'))
      await symlink(join(outside, 'etc'), join(dir, 'etc-link'))
      const passwdBefore = await stat('/etc/passwd')

      const {before, run, audit} = await walkAndFix('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
      expect(before.status).toBe('fail')
      expect(before.summary).toContain('owned by root, not nobody')
      expect(before.evidence.offenders).toEqual(
        expect.arrayContaining([`${join(dir, 'nested', 'deeper', 'blob')} (postgres, 0400 (r--------))`, `${join(dir, 'root.txt')} (root, 0644 (rw-r--r--))`]),
      )

      const after = reportOf(run, 'callfs.data-dir.permissions')
      expect(after.outcome).toMatchObject({decision: 'applied', ok: true, verified: true})
      expect(after.outcome?.detail).toBe('6 ownership/mode changes over 7 entries; re-check: ok')

      for (const p of [dir, join(dir, 'nested'), join(dir, 'nested', 'deeper')]) {
        const s = await stat(p)
        expect({p, uid: s.uid, gid: s.gid, owner: s.mode & 0o700}).toEqual({p, uid: NOBODY.uid, gid: NOBODY.gid, owner: 0o700})
      }
      const blob = await stat(join(dir, 'nested', 'deeper', 'blob'))
      expect([blob.uid, blob.gid, blob.mode & 0o777]).toEqual([NOBODY.uid, NOBODY.gid, 0o600])
      const rootTxt = await stat(join(dir, 'root.txt'))
      expect([rootTxt.uid, rootTxt.mode & 0o777]).toEqual([NOBODY.uid, 0o644])

      // Nothing the links point at changed hands or mode.
      for (const [p, mode] of [[decoy, 0o644], [decoyInDir, 0o600], [join(outside, 'etc'), 0o755]] as const) {
        const s = await stat(p)
        expect({p, uid: s.uid, gid: s.gid, mode: s.mode & 0o7777}).toEqual({p, uid: 0, gid: 0, mode})
      }
      expect((await lstat(join(dir, 'passwd-link'))).isSymbolicLink()).toBe(true)
      const passwdAfter = await stat('/etc/passwd')
      expect([passwdAfter.uid, passwdAfter.mode]).toEqual([passwdBefore.uid, passwdBefore.mode])

      expect(audit).toHaveLength(1)
      expect(audit[0]).toMatchObject({
        system: 'callfs',
        target: 'default',
        check: 'callfs.data-dir.permissions',
        remediation: 'callfs.data-dir.fix-ownership',
        plan: [`chown -R nobody:nogroup ${dir} (symbolic links are not followed)`, `chmod -R u+rwX ${dir} (owner read/write; directories searchable)`],
        decision: 'applied',
        result: {ok: true},
        verified: true,
        opsctlVersion: '0.1.0',
      })
    })

    it('cannot be turned against files outside by a user who swaps a directory for a symlink while it runs', async () => {
      // The service user owns the tree being repaired and may race the repair: swap data/sub
      // (atomically, renameat2 RENAME_EXCHANGE) with a symlink to a root-owned directory. A path
      // based walk that checked "sub is a directory" then chowns "sub/victim" chowns the decoy.
      const dir = await dataDir({mode: 0o700})
      await mkdir(join(dir, 'sub'), {mode: 0o700})
      await file(join(dir, 'sub', 'victim'), {mode: 0o644})
      const outside = await mkdtemp(join(w.dir, 'outside-'))
      const decoy = await file(join(outside, 'victim'), {mode: 0o640})
      await symlink(outside, join(dir, 'sub.swap'))
      const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
      const apply = r.fix?.apply
      if (!apply) throw new Error('no automated fix offered')

      const swap = swapper(dir, 'sub', 'sub.swap')
      try {
        // The path-based walk lost this race within 0.5 s.
        const rounds = await race({apply, swap, decoy, ms: 1500})
        expect(swap.stderr()).toBe('')
        expect(rounds).toBeGreaterThan(5)
        expect(await ownerAndMode(decoy)).toEqual({uid: 0, gid: 0, mode: 0o640})
      } finally {
        swap.stop()
      }
    })

    it('leaves alone a hard link to a file it does not own, and says so', async () => {
      // Where fs.protected_hardlinks is off, the service user can link /etc/shadow into its tree;
      // chown -R would then hand it over. Here root makes the link to stand in for that.
      const dir = await dataDir({mode: 0o700})
      const outside = await mkdtemp(join(w.dir, 'outside-'))
      const target = await file(join(outside, 'shadow'), {mode: 0o640})
      await link(target, join(dir, 'shadow'))
      const {run} = await walkAndFix('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
      const after = reportOf(run, 'callfs.data-dir.permissions')
      expect(after.outcome).toMatchObject({decision: 'applied', ok: true, verified: false})
      expect(after.outcome?.detail).toMatch(new RegExp(`^1 ownership/mode changes over 2 entries; left alone 1: ${join(dir, 'shadow')} \\(2 hard links\\); re-check: fail`))
      const t = await stat(target)
      expect({uid: t.uid, mode: t.mode & 0o7777}).toEqual({uid: 0, mode: 0o640})
      expect((await stat(dir)).uid).toBe(NOBODY.uid)
    })

    it('creates a missing data directory for the service user', async () => {
      const dir = join(w.dir, `created-${++n}`, 'data')
      const {before, run, audit} = await walkAndFix('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
      expect(before.summary).toBe(`data directory ${dir} does not exist`)
      const after = reportOf(run, 'callfs.data-dir.permissions')
      expect(after.outcome).toMatchObject({decision: 'applied', ok: true, verified: true, detail: `created ${dir} owned by nobody; re-check: ok`})
      const s = await stat(dir)
      expect([s.isDirectory(), s.uid, s.gid, s.mode & 0o7777]).toEqual([true, NOBODY.uid, NOBODY.gid, 0o750])
      // The missing parent was made the way install -d makes it: searchable, so nobody gets in.
      expect((await stat(join(dir, '..'))).mode & 0o7777).toBe(0o755)
      expect(audit[0]).toMatchObject({check: 'callfs.data-dir.permissions', decision: 'applied', plan: [`create ${dir} (mode 0750; missing parent directories 0755)`, `chown nobody:nogroup ${dir}`], verified: true})
    })

    it('creates missing parents 0755 whatever the umask (under 077 they were 0700 and nobody could not reach its new directory)', async () => {
      const top = join(w.dir, `created-${++n}`)
      const dir = join(top, 'a', 'data')
      const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
      const apply = r.fix?.apply
      if (!apply) throw new Error('no automated fix offered')
      const before = process.umask(0o077)
      let result: FixResult
      try {
        result = await apply(new AbortController().signal)
      } finally {
        process.umask(before)
      }
      expect(result).toEqual({ok: true, detail: `created ${dir} owned by nobody`})
      for (const p of [top, join(top, 'a')]) {
        const s = await stat(p)
        expect({p, uid: s.uid, mode: s.mode & 0o7777}).toEqual({p, uid: 0, mode: 0o755})
      }
      const s = await stat(dir)
      expect([s.uid, s.gid, s.mode & 0o7777]).toEqual([NOBODY.uid, NOBODY.gid, 0o750])
      expect((await stat(w.dir)).mode & 0o7777).toBe(0o755) // what existed is left as it was
      const again = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
      expect(again.status).toBe('ok')
    })

    it('a missing parent swapped for a symlink right after mkdir is noticed: nothing is created through it', async () => {
      const parent = await dataDir({owner: NOBODY, mode: 0o755}) // a parent the service user may write into
      const dir = join(parent, 'mid', 'data')
      const outside = await mkdtemp(join(w.dir, 'outside-'))
      const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
      const apply = r.fix?.apply
      if (!apply) throw new Error('no automated fix offered')
      const swap = swapper(parent, 'mid', 'mid.swap')
      try {
        let caught = 0
        await race({
          apply,
          swap,
          decoy: outside,
          ms: 2000,
          async setUp() {
            // SIGSTOP lands between two renames, not at once: a rename may still move a name under rm.
            for (let tries = 0; ; tries++) {
              try {
                execFileSync('rm', ['-rf', join(parent, 'mid'), join(parent, 'mid.swap')], {stdio: 'pipe'})
                break
              } catch (e) {
                if (tries > 20) throw e
                await new Promise((r) => setTimeout(r, 10))
              }
            }
            await symlink(outside, join(parent, 'mid.swap'))
          },
          onResult: (res) => {
            if (/replaced right after it was created/.test(res.detail)) caught++
          },
          enough: () => caught >= 3 || readdirSync(outside).length > 0,
        })
        expect(swap.stderr()).toBe('')
        expect(caught).toBeGreaterThan(0)
        expect(execFileSync('ls', ['-A', outside], {encoding: 'utf8'})).toBe('') // no data directory was made in there
      } finally {
        swap.stop()
      }
    })

    it('creating the directory cannot be turned against a file outside by a swap right after mkdir', async () => {
      const parent = await dataDir({owner: NOBODY, mode: 0o755}) // a parent the service user may write into
      const dir = join(parent, 'data')
      const outside = await mkdtemp(join(w.dir, 'outside-'))
      const decoy = await file(join(outside, 'victim'), {mode: 0o640})
      const r = await w.check('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
      const apply = r.fix?.apply
      if (!apply) throw new Error('no automated fix offered')
      expect(r.remediation?.plan[0]).toBe(`create ${dir} (mode 0750; missing parent directories 0755)`)

      const swap = swapper(parent, 'data', 'data.swap')
      try {
        let caught = 0 // rounds where the swap came between mkdir and chown, and the fix noticed
        const rounds = await race({
          apply,
          swap,
          decoy,
          ms: 2000,
          async setUp() {
            execFileSync('rm', ['-rf', dir, `${dir}.swap`])
            await symlink(decoy, `${dir}.swap`)
          },
          onResult: (res) => {
            if (/replaced right after it was created/.test(res.detail)) caught++
          },
          enough: () => caught >= 3,
        })
        expect(swap.stderr()).toBe('')
        expect(caught, `${rounds} rounds`).toBeGreaterThan(0) // the race was really run, and lost by the attacker
        expect(await ownerAndMode(decoy)).toEqual({uid: 0, gid: 0, mode: 0o640})
      } finally {
        swap.stop()
      }
    })

    it('repairs what a symlinked data_dir points at (the check audits that directory)', async () => {
      const real = await dataDir({mode: 0o700})
      await file(join(real, 'a.txt'), {mode: 0o600})
      const link = join(w.dir, `link-${++n}`)
      await symlink(real, link)
      const {before, run} = await walkAndFix('callfs.data-dir.permissions', {data_dir: link, service_user: 'nobody'})
      expect(before.status).toBe('fail')
      expect(before.evidence.linksTo).toBe(real)
      // chown -R on the link itself would change only the link: the plan names the target.
      expect(before.remediation?.plan[0]).toBe(`chown -R nobody:nogroup ${real} (symbolic links are not followed; ${link} links there)`)
      expect(before.remediation?.commands[0]).toBe(`sudo chown -R nobody:nogroup ${real}`)
      const after = reportOf(run, 'callfs.data-dir.permissions')
      expect(after.outcome).toMatchObject({decision: 'applied', ok: true, verified: true})
      for (const p of [real, join(real, 'a.txt')]) expect((await stat(p)).uid).toBe(NOBODY.uid)
      expect((await lstat(link)).isSymbolicLink()).toBe(true)
    })

    it('does not claim success when a parent directory still keeps the user out', async () => {
      const parent = await dataDir({mode: 0o700})
      const dir = join(parent, 'data')
      await mkdir(dir, {mode: 0o700})
      const {run, audit} = await walkAndFix('callfs.data-dir.permissions', {data_dir: dir, service_user: 'nobody'})
      const after = reportOf(run, 'callfs.data-dir.permissions')
      expect(after.outcome).toMatchObject({decision: 'applied', ok: true, verified: false})
      expect(after.outcome?.detail).toContain(`re-check: fail (${dir}: nobody cannot reach it: ${parent} is 0700`)
      expect((await stat(dir)).uid).toBe(NOBODY.uid) // what it could fix, it fixed
      expect((await stat(parent)).uid).toBe(0) // and it left the parent to the operator
      expect(audit[0]).toMatchObject({decision: 'applied', verified: false})
    })
  })
})
