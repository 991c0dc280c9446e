import type {DiagnoseEvents, TargetRef} from '../engine/diagnose.js'

import type {SystemReport} from '../engine/types.js'
import {SYSTEM_TITLES} from './human.js'
import {formatMs} from '../util/time.js'

interface Tracker {
  started: number
  finished: number
  running: Set<string>
  update?: () => void
  done: Promise<SystemReport>
  resolve: (r: SystemReport) => void
}

/**
 * A listr2 task list on the terminal while the probes run: one line per target, showing how
 * many checks finished and which are still running.
 */
export async function withProgress<T>(refs: TargetRef[], work: (events: DiagnoseEvents) => Promise<T>): Promise<T> {
  const {Listr} = await import('listr2')
  // listr2 wraps each line at process.stdout.columns. A pseudo-terminal that reports no size
  // (0 columns: `script` without a terminal, some CI runners and serial consoles) would get one
  // letter per line; 80 is what every other terminal program assumes there.
  if (process.stdout.isTTY && !(process.stdout.columns > 0)) process.stdout.columns = 80
  const key = (system: string, target: string) => `${system}/${target}`
  const trackers = new Map<string, Tracker>()
  for (const ref of refs) {
    let resolve!: (r: SystemReport) => void
    const done = new Promise<SystemReport>((r) => (resolve = r))
    trackers.set(key(ref.system, ref.target), {started: 0, finished: 0, running: new Set(), done, resolve})
  }
  const events: DiagnoseEvents = {
    onCheckStart(system, target, id) {
      const t = trackers.get(key(system, target))
      if (!t) return
      t.started++
      t.running.add(id)
      t.update?.()
    },
    onCheckEnd(system, target, report) {
      const t = trackers.get(key(system, target))
      if (!t) return
      t.finished++
      t.running.delete(report.id)
      t.update?.()
    },
    onTargetEnd(ref, report) {
      trackers.get(key(ref.system, ref.target))?.resolve(report)
    },
  }
  const list = new Listr(
    refs.map((ref) => ({
      title: `${SYSTEM_TITLES[ref.system]} · ${ref.target}`,
      task: async (_ctx: unknown, task: {title: string; output: string}) => {
        const t = trackers.get(key(ref.system, ref.target)) as Tracker
        const name = `${SYSTEM_TITLES[ref.system]} · ${ref.target}`
        t.update = () => {
          task.title = `${name}: ${t.finished} checks done`
          task.output = [...t.running].join(', ')
        }
        const report = await t.done
        task.title = `${name}: ${report.status} · ${t.finished} checks · ${formatMs(report.durationMs)}`
      },
    })),
    // Ctrl-C is opsctl's to handle (the pending checks end unknown and the report is printed);
    // listr2 would otherwise exit the process on it.
    {concurrent: true, exitOnError: false, registerSignalListeners: false, rendererOptions: {collapseSubtasks: false}},
  )
  const [, result] = await Promise.all([list.run(), work(events)])
  return result
}
