import {Flags} from '@oclif/core'

import {OpsctlCommand, painter, wantsColor} from '../../cli/base-command.js'
import {formatCheckTable, listChecks} from '../../cli/runbook.js'

export default class RunbookList extends OpsctlCommand {
  static override summary = 'List every check: id, title, system, severity and kind of fix'
  static override examples = ['opsctl runbook list', 'opsctl runbook list --json']
  static override flags = {
    json: Flags.boolean({description: 'print {"checks": [...]} on stdout'}),
    'no-color': Flags.boolean({description: 'plain output (NO_COLOR is honoured too)'}),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(RunbookList)
    const checks = await listChecks()
    if (flags.json) this.printOut(JSON.stringify({checks}, null, 2) + '\n')
    else this.printOut(formatCheckTable(checks, painter(wantsColor(flags['no-color']))))
  }
}
