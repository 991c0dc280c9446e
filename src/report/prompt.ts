import type {ChalkInstance} from 'chalk'

import type {Asker, PendingFix} from '../engine/remediate.js'
import {formatPlan} from './human.js'
import {formatMs} from '../util/time.js'

/**
 * Asks on the terminal with @inquirer/prompts. The default answer is No; no answer within
 * the time-out is No; Ctrl-C is No for this fix and every fix after it. A destructive plan is
 * confirmed only by typing the name of what it destroys.
 */
export function terminalAsker(c: ChalkInstance, timeoutMs: number, write: (text: string) => void): Asker {
  let interrupted = false
  return {
    async confirm(item: PendingFix) {
      if (interrupted) return {apply: false, reason: 'interrupted'}
      // inquirer colours by the terminal's own rule (NO_COLOR honoured), read when it loads.
      if (c.level === 0) process.env.NO_COLOR ||= '1'
      const {confirm, input} = await import('@inquirer/prompts')
      const r = item.check.remediation
      if (!r) return {apply: false, reason: 'no plan'}
      write(`\n${c.bold(`${item.check.id}`)} ${c.dim(`(${item.run.system} · ${item.run.target})`)}\n`)
      write(formatPlan(r, c, '  ', 1000).join('\n') + '\n')
      const signal = AbortSignal.timeout(timeoutMs)
      try {
        // Anything not declared safe or disruptive is confirmed as destructive.
        if (r.risk !== 'safe' && r.risk !== 'disruptive') {
          const expected = item.fix.confirmText ?? item.fix.id
          const typed = await input(
            {message: `This destroys ${expected}. Type ${c.bold(expected)} to apply it, or press Enter to skip:`, default: ''},
            {signal},
          )
          return typed.trim() === expected ? {apply: true, reason: ''} : {apply: false, reason: 'confirmation not typed'}
        }
        const yes = await confirm({message: `Apply "${r.title}"?`, default: false}, {signal})
        return {apply: yes, reason: yes ? '' : 'answered no'}
      } catch (error) {
        const name = (error as Error).name
        if (name === 'AbortPromptError') return {apply: false, reason: `no answer within ${formatMs(timeoutMs)}`}
        if (name === 'ExitPromptError') {
          interrupted = true
          return {apply: false, reason: 'interrupted'}
        }
        throw error
      }
    },
  }
}
