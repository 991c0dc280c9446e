import {Args, Flags} from '@oclif/core'

import {OpsctlCommand, painter, wantsColor} from '../../cli/base-command.js'
import {resolveSystems} from '../../cli/diagnose.js'
import {formatFlowchart} from '../../cli/runbook.js'
import {loadRunbook} from '../../runbooks/index.js'

export default class RunbookShow extends OpsctlCommand {
  static override summary = 'Draw a system\'s flowchart as a tree, the way its guide draws it'
  static override examples = ['opsctl runbook show callfs']
  static override args = {
    system: Args.string({description: 'hookshot, hotswap, callfs or toombos', required: true}),
  }
  static override flags = {
    json: Flags.boolean({description: 'print the flowchart as data'}),
    'no-color': Flags.boolean({description: 'plain output (NO_COLOR is honoured too)'}),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parse(RunbookShow)
    const [system] = resolveSystems([args.system])
    const runbook = await loadRunbook(system!)
    if (flags.json) {
      const checks = runbook.checks.map(({id, title, severity, docs, remediations}) => ({id, title, severity, docs, remediations}))
      this.printOut(JSON.stringify({system: runbook.system, guide: runbook.guide, flow: runbook.flow, checks}, null, 2) + '\n')
    } else this.printOut(formatFlowchart(runbook, painter(wantsColor(flags['no-color']))))
  }
}
