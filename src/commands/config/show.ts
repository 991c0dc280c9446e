import {OpsctlCommand, commonFlags} from '../../cli/base-command.js'
import {loadConfig} from '../../config/load.js'
import {effectiveConfigJson, effectiveConfigYaml} from '../../config/show.js'

export default class ConfigShow extends OpsctlCommand {
  static override summary = 'Show the effective configuration (defaults merged; secrets masked)'
  static override examples = ['opsctl config show', 'opsctl config show --json']
  static override flags = {config: commonFlags.config, json: commonFlags.json}

  async run(): Promise<void> {
    const {flags} = await this.parse(ConfigShow)
    const config = await loadConfig({configFlag: flags.config, env: process.env})
    if (flags.json) this.printOut(JSON.stringify(effectiveConfigJson(config, process.env), null, 2) + '\n')
    else this.printOut(effectiveConfigYaml(config, process.env))
  }
}
