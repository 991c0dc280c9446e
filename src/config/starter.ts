// The starter file `opsctl config init` writes. It is generated from the schema and DEFAULTS so
// that it can never disagree with them. Keys are commented out on purpose: a key the file sets
// is "explicit" (checks then treat, say, a missing config_file as a failure rather than skip
// it), so a fresh file must behave exactly like no file at all until the user edits it.
import {chmod, mkdir, rename, rm, writeFile} from 'node:fs/promises'
import path from 'node:path'

import {DEFAULTS, SYSTEM_NAMES} from './defaults.js'
import {formatDuration} from './duration.js'
import {configError, errnoCode} from './errors.js'
import {fieldsOf, SYSTEMS, TOP_LEVEL_DOCS, type LeafType} from './schema.js'
import {yamlLib} from './yaml-lib.js'

const COMMENT_COLUMN = 48

const HEADER = `# opsctl configuration, written by \`opsctl config init\`.
#
# Every key is listed with its default, commented out: opsctl uses the default for any key
# that is absent, so uncomment and change only what differs on your hosts.
# Secrets are never written here: a key ending in _env names the environment variable that
# holds the secret (export CALLFS_API_KEY=... in the shell or service that runs opsctl).
# Durations: 250ms, 5s, 2m, 1h, 14d, or a number of seconds.
# \`opsctl config validate\` checks this file; \`opsctl config show\` prints what opsctl will use.
# Looked for in order: --config, $OPSCTL_CONFIG, ./opsctl.yaml,
# $XDG_CONFIG_HOME/opsctl/config.yaml (default ~/.config/opsctl/config.yaml), /etc/opsctl/config.yaml.
`

// Several instances of one system: shown once, under callfs, where fleets are most common.
const TARGETS_EXAMPLE = [
  'targets:                                  # several instances; the keys above are shared by all',
  '  - name: eu-1                            # unique within the system',
  '    url: https://callfs-eu-1.internal:8443',
  '    postgres: postgres://callfs@db-eu-1.internal:5432/callfs',
  '  - name: us-1',
  '    url: https://callfs-us-1.internal:8443',
  '    postgres: postgres://callfs@db-us-1.internal:5432/callfs',
  '    enabled: false                        # switch one target off',
]

/** The commented starter file: every key with its default and a one-line comment. */
export function starterConfigYaml(): string {
  const lines = [HEADER]
  lines.push(commented('', `version: 1`, TOP_LEVEL_DOCS.version, false))
  lines.push(commented('', `timeout: ${formatDuration(DEFAULTS.timeout)}`, TOP_LEVEL_DOCS.timeout))
  lines.push('', commented('', 'systems:', TOP_LEVEL_DOCS.systems, false))
  for (const system of SYSTEM_NAMES) {
    const defaults = DEFAULTS.systems[system] as unknown as Record<string, unknown>
    lines.push(commented('  ', `${system}:`, SYSTEMS[system].doc, false))
    lines.push(commented('    ', 'enabled: true', `false: leave ${system} out of every command`))
    for (const [key, field] of Object.entries(fieldsOf(system))) {
      if (field.type !== 'section') {
        lines.push(commented('    ', `${key}: ${scalar(field.type, defaults[key])}`, field.doc))
        continue
      }
      lines.push(commented('    ', `${key}:`, field.doc))
      const sectionDefaults = defaults[key] as Record<string, unknown>
      for (const [sub, subField] of Object.entries(field.fields)) {
        lines.push(commented('    ', `  ${sub}: ${scalar(subField.type, sectionDefaults[sub])}`, subField.doc))
      }
    }
    if (system === 'callfs') for (const line of TARGETS_EXAMPLE) lines.push(`    # ${line}`)
    lines.push('')
  }
  return lines.join('\n')
}

function commented(indent: string, text: string, doc: string, comment = true): string {
  const line = `${indent}${comment ? '# ' : ''}${text}`
  return `${line.padEnd(COMMENT_COLUMN - 1)} # ${doc}`
}

function scalar(type: LeafType, value: unknown): string {
  if ((type === 'duration' || type === 'wait') && typeof value === 'number') return formatDuration(value)
  return yamlLib().stringify(value).trimEnd()
}

/**
 * Write the starter file to `file`, creating its directory. Refuses to replace an existing file
 * unless `force`; a forced write replaces the file in one step (never a half-written file).
 */
export async function writeStarterConfig(file: string, o: {force: boolean}): Promise<void> {
  const text = starterConfigYaml()
  const dir = path.dirname(file)
  try {
    await mkdir(dir, {recursive: true})
  } catch (error) {
    throw configError(file, '', `cannot create its directory ${dir} (${codeOf(error)}): choose another path`)
  }
  if (!o.force) {
    try {
      await writeFile(file, text, {flag: 'wx', mode: 0o644})
    } catch (error) {
      const code = codeOf(error)
      if (code === 'EEXIST') throw configError(file, '', 'already exists; not overwritten: pass --force to replace it, or choose another path')
      throw configError(file, '', `cannot be written (${code}): choose another path`)
    }
  } else {
    const temporary = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`)
    try {
      await writeFile(temporary, text, {flag: 'wx', mode: 0o644})
      await rename(temporary, file)
    } catch (error) {
      await rm(temporary, {force: true}).catch(() => undefined)
      const code = codeOf(error)
      throw configError(file, '', code === 'EISDIR' ? 'is a directory: give the path of a file' : `cannot be written (${code}): choose another path`)
    }
  }
  // The mode given at creation is reduced by the umask; the file is meant to be world-readable.
  await chmod(file, 0o644).catch((error: unknown) => {
    throw configError(file, '', `was written but its mode could not be set to 0644 (${codeOf(error)})`)
  })
}

function codeOf(error: unknown): string {
  return errnoCode(error) ?? String(error)
}
