import {Args, Flags} from '@oclif/core'

import {commonFlags, durationFlag, HOUR, OpsctlCommand, painter, wantsColor} from '../cli/base-command.js'
import {diagnoseCommand} from '../cli/diagnose.js'

export default class Diagnose extends OpsctlCommand {
  static override summary = 'Walk each system\'s troubleshooting flowchart, report, then offer the fixes'
  static override description = `Runs every check of the chosen systems (all when none is named), concurrently where the flowchart allows, and reports each finding with its evidence. Then, for each automated fix, shows the exact plan and asks before applying it (default No; a destructive plan is confirmed by typing the name of what it destroys). Every decision goes to the audit log.

Without a terminal, or with --json, nothing is asked and nothing is applied unless --yes.

Exit codes: 0 ok, 1 warn, 2 fail, 3 unknown, 64 usage error, 78 configuration error.`

  static override examples = [
    'opsctl diagnose callfs',
    'opsctl diagnose callfs --dry-run',
    'opsctl diagnose --json --no-fix > report.json',
    'opsctl diagnose callfs --yes --timeout 2s',
  ]

  static override strict = false
  static override args = {
    system: Args.string({description: 'systems to diagnose: hookshot, hotswap, callfs, toombos (default: all)'}),
  }

  static override flags = {
    ...commonFlags,
    yes: Flags.boolean({char: 'y', description: 'apply every automated fix without asking'}),
    'dry-run': Flags.boolean({description: 'show every fix\'s plan; change nothing'}),
    'no-fix': Flags.boolean({description: 'report only; offer no fixes'}),
    'write-probes': Flags.boolean({description: 'also run checks that write (e.g. a canary file round trip)'}),
    concurrency: Flags.integer({description: 'targets diagnosed at once', default: 16, min: 1, max: 256}),
    deadline: durationFlag(24 * HOUR)({description: 'deadline of the diagnosis; each fix has its own [default: max(60s, 12 × --timeout)]'}),
    target: Flags.string({description: 'only these targets (by name)', multiple: true}),
    'prompt-timeout': durationFlag(24 * HOUR)({description: 'an unanswered question counts as No after this', default: 120_000, defaultHelp: async () => '2m'}),
  }

  async run(): Promise<void> {
    const {argv, flags} = await this.parse(Diagnose)
    const code = await diagnoseCommand(argv as string[], flags, {
      version: this.config.version,
      color: painter(wantsColor(flags['no-color'])),
      interactive: Boolean(process.stdin.isTTY && process.stdout.isTTY),
      out: (text) => this.printOut(text),
      outJson: (text) => process.stdout.write(text),
      env: process.env,
    })
    // Exit explicitly: the report is out, and nothing left behind may keep opsctl alive.
    this.exit(code)
  }
}
