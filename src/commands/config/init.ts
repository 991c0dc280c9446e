import {Args, Flags} from '@oclif/core'

import {OpsctlCommand} from '../../cli/base-command.js'
import {defaultInitPath} from '../../config/load.js'
import {writeStarterConfig} from '../../config/starter.js'

export default class ConfigInit extends OpsctlCommand {
  static override summary = 'Write a commented starter configuration file'
  static override description = 'Every key with its default and a comment. Refuses to overwrite an existing file without --force.'
  static override examples = ['opsctl config init', 'opsctl config init /etc/opsctl/config.yaml --force']
  static override args = {file: Args.string({description: 'where to write it [default: $OPSCTL_CONFIG, else ./opsctl.yaml]'})}
  static override flags = {force: Flags.boolean({description: 'overwrite an existing file'})}

  async run(): Promise<void> {
    const {args, flags} = await this.parse(ConfigInit)
    const file = args.file ?? defaultInitPath({env: process.env})
    await writeStarterConfig(file, {force: flags.force})
    this.printOut(`wrote ${file}; check it with: opsctl config validate --config ${file}\n`)
  }
}
