import {CommandHelp, Help, type Command, type Interfaces} from '@oclif/core'

// oclif passes every string of a help page through ejs (compiling a template each time), about a
// quarter of what `opsctl diagnose --help` costs. opsctl's help texts hold no templates, so plain
// text is shown as is and ejs only sees what really is one.
function skipPlainText(help: {render: (text: string) => string}): void {
  const ejs = help.render
  help.render = (text: string) => (text.includes('<%') ? ejs(text) : text)
}

class OpsctlCommandHelp extends CommandHelp {
  constructor(command: Command.Loadable, config: Interfaces.Config, opts: Interfaces.HelpOptions) {
    super(command, config, opts)
    skipPlainText(this)
  }
}

export default class OpsctlHelp extends Help {
  constructor(config: Interfaces.Config, opts: Partial<Interfaces.HelpOptions> = {}) {
    super(config, opts)
    skipPlainText(this)
  }

  protected override getCommandHelpClass(command: Command.Loadable): CommandHelp {
    return new OpsctlCommandHelp(command, this.config, this.opts)
  }
}
