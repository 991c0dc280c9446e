import {OpsctlCommand, commonFlags} from '../../cli/base-command.js'
import {loadConfig} from '../../config/load.js'

export default class ConfigValidate extends OpsctlCommand {
  static override summary = 'Validate the configuration file (exit 78 when it is invalid)'
  static override examples = ['opsctl config validate', 'opsctl config validate --config ./opsctl.yaml']
  static override flags = {config: commonFlags.config, json: commonFlags.json}

  async run(): Promise<void> {
    const {flags} = await this.parse(ConfigValidate)
    const config = await loadConfig({configFlag: flags.config, env: process.env})
    const targets = Object.values(config.systems).reduce((n, s) => n + (s.enabled ? s.targets.filter((t) => t.enabled).length : 0), 0)
    const source = config.source ?? 'no configuration file found: the built-in defaults'
    if (flags.json) this.printOut(JSON.stringify({valid: true, source: config.source, targets}) + '\n')
    else this.printOut(`${source} is valid (${targets} enabled target${targets === 1 ? '' : 's'})\n`)
  }
}
