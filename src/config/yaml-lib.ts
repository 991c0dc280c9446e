// The `yaml` library, loaded on first use so that commands which never read configuration
// (`--version`, `--help`) don't pay for it. createRequire rather than `await import()` because
// parseConfigText and effectiveConfigYaml are synchronous by contract; yaml's Node entry is
// CommonJS, so this is the same module instance an `import('yaml')` elsewhere would get.
import {createRequire} from 'node:module'

export type YamlLib = typeof import('yaml')

let lib: YamlLib | undefined

export function yamlLib(): YamlLib {
  lib ??= createRequire(import.meta.url)('yaml') as YamlLib
  return lib
}
