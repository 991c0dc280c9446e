// Service-level checks every guide has in some form: is the unit running, who holds the port.
// Written once here; each runbook supplies its names (unit, port, how to recognise itself).

import {listenersOnPort, type Listener} from '../../diagnostics/ports.js'
import {runCommand} from '../../diagnostics/exec.js'
import {journalTail, stopProcess, systemdUnitStatus, type ProcessInfo, type UnitStatus} from '../../diagnostics/system.js'
import type {ProbeOptions, ProbeResult} from '../../diagnostics/types.js'
import type {Finding, Fix} from '../../engine/types.js'

export interface UnitCheckInput {
  unit: string
  status: ProbeResult<UnitStatus>
  /** Processes that look like the service, for hosts without systemd. */
  processes: ProcessInfo[]
  probe: ProbeOptions
  restartFixId: string
  /** Manual fix when there is no unit to restart. */
  startFixId: string
  startHint: string
}

function unitEvidence(u: UnitStatus): Record<string, unknown> {
  return {
    unit: u.unit,
    activeState: u.activeState,
    subState: u.subState,
    result: u.result,
    mainPid: u.mainPid,
    execMainStatus: u.execMainStatus,
    since: u.since,
  }
}

/** The probe options of a fix's apply: the check's, stopped also by the fix's own deadline. */
function withFixSignal(probe: ProbeOptions, signal: AbortSignal | undefined): ProbeOptions {
  if (!signal) return probe
  return {...probe, signal: probe.signal ? AbortSignal.any([probe.signal, signal]) : signal}
}

/** Wait until the unit is active or the time runs out; returns the last status seen. */
async function waitActive(unit: string, probe: ProbeOptions, withinMs: number): Promise<UnitStatus | null> {
  const until = Date.now() + withinMs
  let last: UnitStatus | null = null
  while (Date.now() < until && !probe.signal?.aborted) {
    const s = await systemdUnitStatus(unit, probe)
    if (s.ok) {
      last = s.value
      if (s.value.activeState === 'active') return last
      if (s.value.activeState === 'failed') return last
    }
    await new Promise((r) => setTimeout(r, 250))
  }
  return last
}

export function restartUnitFix(unit: string, checkProbe: ProbeOptions, id: string): Fix {
  return {
    id,
    title: `Restart the ${unit} service`,
    plan: [`systemctl restart ${unit} (only if it is still not active), then wait for it to become active`],
    commands: [`sudo systemctl restart ${unit}`, `journalctl -u ${unit} -n 50 --no-pager`],
    async apply(signal) {
      const probe = withFixSignal(checkProbe, signal)
      // Guard: if it came back by itself since the diagnosis, leave it alone.
      const now = await systemdUnitStatus(unit, probe)
      // Without a fresh look at the unit there is no telling whether a restart is still wanted.
      if (!now.ok) return {ok: false, detail: 'could not re-check the unit; nothing restarted'}
      if (now.value.activeState === 'active') return {ok: true, detail: `${unit} is active again; left alone`}
      const r = await runCommand('systemctl', ['restart', unit], probe)
      if (!r.ok) return {ok: false, detail: r.error.message}
      if (r.value.exitCode !== 0) {
        const why = (r.value.stderr || r.value.stdout).trim().split('\n')[0] ?? ''
        return {ok: false, detail: `systemctl restart ${unit} exited ${r.value.exitCode}${why ? `: ${why}` : ''}`}
      }
      const after = await waitActive(unit, probe, probe.timeoutMs)
      return after?.activeState === 'active'
        ? {ok: true, detail: `restarted ${unit}; active (pid ${after.mainPid ?? '?'})`}
        : {ok: false, detail: `restarted ${unit}, but it is ${after?.activeState ?? 'in an unknown state'} (see journalctl -u ${unit})`}
    },
  }
}

/** Is the service running: by its systemd unit, or by its process where there is no systemd. */
export async function unitFinding(i: UnitCheckInput): Promise<Finding> {
  const {unit, status} = i
  const noUnit = !status.ok ? status.error.kind === 'not-found' : status.value.loadState === 'not-found'
  if (noUnit) {
    const how = status.ok ? `no ${unit} unit is installed` : status.error.message
    if (i.processes.length > 0) {
      const p = i.processes[0] as ProcessInfo
      return {status: 'ok', summary: `${p.comm} is running (pid ${p.pid}); ${how}`, evidence: {pids: i.processes.map((x) => x.pid)}}
    }
    return {
      status: 'fail',
      summary: `no ${unit} process is running, and ${how}`,
      evidence: {unit, processes: 0},
      fix: {
        id: i.startFixId,
        title: `Start ${unit}`,
        plan: [`start ${unit} the way this host runs it (a systemd unit named ${unit}, a container, or by hand), then re-run the diagnosis`],
        commands: [i.startHint, `sudo systemctl start ${unit}`],
      },
    }
  }
  if (!status.ok) return {status: 'unknown', summary: status.error.message}
  const u = status.value
  const evidence = unitEvidence(u)
  if (u.activeState === 'active') {
    return {status: 'ok', summary: `unit ${unit} is active (${u.subState}), pid ${u.mainPid ?? '?'}`, evidence}
  }
  const journal = await journalTail(unit, {...i.probe, lines: 15})
  if (journal.ok) evidence.journal = journal.value
  if (u.activeState === 'activating' || u.activeState === 'reloading') {
    return {status: 'warn', summary: `unit ${unit} is ${u.activeState} (${u.subState})`, evidence}
  }
  const why = u.result && u.result !== 'success' ? ` (result ${u.result}${u.execMainStatus ? `, exit status ${u.execMainStatus}` : ''})` : ''
  return {
    status: 'fail',
    summary: `unit ${unit} is ${u.activeState}${why}${u.since ? ` since ${u.since}` : ''}`,
    evidence,
    fix: restartUnitFix(unit, i.probe, i.restartFixId),
  }
}

export interface PortCheckInput {
  port: number
  listeners: ProbeResult<Listener[]>
  /** Does this listener belong to the service itself? */
  isService(l: Listener): boolean
  serviceName: string
  stopFixId: string
  manualFixId: string
  probe: ProbeOptions
  /** How to move the service to another port, for the manual fix. */
  changePortHint: string
}

function describe(l: Listener): string {
  return l.pid ? `${l.command ?? '?'} (pid ${l.pid})` : `a process not visible to opsctl (uid ${l.uid})`
}

/** Who a process is, for a plan and the audit: its name, pid, program and start — never its arguments. */
function identify(l: Listener & {pid: number}): string {
  const name = l.command ?? '?'
  const program = l.argv0 && l.argv0 !== name ? `, ${l.argv0}` : ''
  return `${name} (pid ${l.pid}${program}, started ${l.startedAt ?? 'at an unknown time'})`
}

export function stopProcessFix(l: Listener & {pid: number; startTime: number}, port: number, id: string, graceMs: number, probe: ProbeOptions): Fix {
  const name = l.command ?? String(l.pid)
  return {
    id,
    title: `Stop ${name} (pid ${l.pid}), which holds port ${port}`,
    plan: [
      `send SIGTERM to ${identify(l)} — only while that same process still listens on :${port}`,
      `if it is still running after ${Math.round(graceMs / 1000)}s, send SIGKILL`,
    ],
    commands: [`sudo kill ${l.pid}`, `sudo kill -9 ${l.pid}   # only if it ignores SIGTERM`],
    confirmText: name,
    async apply(signal) {
      // Guard: the same process (pid and start time) must still hold the port.
      const now = await listenersOnPort(port, withFixSignal(probe, signal))
      if (!now.ok) return {ok: false, detail: `could not re-check :${port}: ${now.error.message}`}
      const still = now.value.find((x) => x.pid === l.pid && x.startTime === l.startTime)
      if (!still) return {ok: true, detail: `${name} (pid ${l.pid}) no longer holds :${port}; left alone`}
      const r = await stopProcess(l.pid, l.startTime, graceMs)
      return {ok: r.stopped, detail: r.detail}
    },
  }
}

// Processes that hold a port on behalf of something else: stopping one cuts a container (or every
// socket-activated service) off, and the owner starts it again. Never stopped by opsctl.
const PORT_FORWARDERS = new Set(['docker-proxy', 'rootlessport', 'rootlessport-child', 'conmon', 'slirp4netns', 'pasta'])

function forwarderOf(l: Listener): string | null {
  if (l.pid === 1) return 'init'
  const names = [l.command, l.argv0?.split('/').pop()].filter((n): n is string => Boolean(n)).map((n) => n.replace(/\.avx2$/, ''))
  return names.find((n) => PORT_FORWARDERS.has(n)) ?? null
}

function forwarderFix(l: Listener, forwarder: string, i: PortCheckInput): Fix {
  const what =
    forwarder === 'init'
      ? `pid 1 (${l.command ?? 'init'}) holds :${i.port}: a systemd socket unit, or the init of a container, owns the port — stop that socket or container, not pid 1`
      : `${forwarder} (pid ${l.pid}) forwards :${i.port} to a container: stop or re-map the container that publishes it, not the proxy (its runtime would start it again)`
  return {
    id: i.manualFixId,
    title: `Free port ${i.port} or move ${i.serviceName} to another port`,
    plan: [what, i.changePortHint],
    commands:
      forwarder === 'init'
        ? [`systemctl list-sockets --all | grep ':${i.port}'`, `sudo ss -ltnp 'sport = :${i.port}'`]
        : [`docker ps --filter publish=${i.port}`, `podman ps --filter publish=${i.port}`, `sudo ss -ltnp 'sport = :${i.port}'`],
  }
}

/** Who holds the service's port: nobody (fine), the service (fine), or something else (the conflict). */
export function portFinding(i: PortCheckInput): Finding {
  if (!i.listeners.ok) {
    return {status: 'unknown', summary: `could not list listeners on :${i.port}: ${i.listeners.error.message}`}
  }
  const listeners = i.listeners.value
  const evidence: Record<string, unknown> = {
    port: i.port,
    listeners: listeners.map((l) => ({address: l.address, pid: l.pid, command: l.command, cmdline: l.cmdline, startedAt: l.startedAt})),
  }
  if (listeners.length === 0) return {status: 'ok', summary: `nothing listens on :${i.port}; the port is free for ${i.serviceName}`, evidence}
  const foreign = listeners.filter((l) => !i.isService(l))
  if (foreign.length === 0) return {status: 'ok', summary: `${i.serviceName} listens on :${i.port} (${describe(listeners[0] as Listener)})`, evidence}
  const culprit = foreign[0] as Listener
  const forwarder = forwarderOf(culprit)
  const summary = `port ${i.port} is held by ${describe(culprit)}${forwarder && forwarder !== 'init' ? ', a container port forwarder' : ''}, not ${i.serviceName}`
  if (forwarder) return {status: 'fail', summary, evidence, fix: forwarderFix(culprit, forwarder, i)}
  if (culprit.pid && culprit.startTime !== null && culprit.pid !== process.pid) {
    return {status: 'fail', summary, evidence, fix: stopProcessFix({...culprit, pid: culprit.pid, startTime: culprit.startTime}, i.port, i.stopFixId, i.probe.timeoutMs, i.probe)}
  }
  return {
    status: 'fail',
    summary,
    evidence,
    fix: {
      id: i.manualFixId,
      title: `Free port ${i.port} or move ${i.serviceName} to another port`,
      plan: [`find the process holding :${i.port} and stop it`, i.changePortHint],
      commands: [`sudo ss -ltnp 'sport = :${i.port}'`, `sudo lsof -i :${i.port}`, 'sudo kill <PID>'],
    },
  }
}
