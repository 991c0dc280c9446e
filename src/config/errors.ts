// Configuration problems are values: each says where (file:line:col and the key path), what is
// wrong and what to do. A ConfigError carries all problems found in one pass.
import {maskUrlPasswords} from './mask.js'

export interface ConfigProblem {
  /** Key path, e.g. "systems.callfs.targets[1].redis"; "" for the file as a whole. */
  path: string
  message: string
  /** 1-based; null when the problem has no place in a file (flags, environment, I/O). */
  line: number | null
  col: number | null
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError'

  constructor(
    readonly problems: ConfigProblem[],
    /** The configuration file concerned; null for --config / $OPSCTL_CONFIG problems. */
    readonly file: string | null,
  ) {
    super('')
    this.message = formatConfigError(this)
  }
}

/** One line per problem: `file:line:col: path: message` (parts that are unknown are left out). */
export function formatConfigError(e: ConfigError): string {
  return e.problems.map((p) => formatProblem(p, e.file)).join('\n')
}

function formatProblem(p: ConfigProblem, file: string | null): string {
  let where = file ?? ''
  if (where !== '' && p.line !== null) where += `:${p.line}:${p.col ?? 1}`
  // A key path or a message may quote a URL from the file (a YAML error inside one, an
  // unparseable URL): whatever it quotes, its password is masked.
  return maskUrlPasswords([where, p.path, p.message].filter((part) => part !== '').join(': '))
}

/** A ConfigError with one problem that has no place inside a file. */
export function configError(file: string | null, path: string, message: string): ConfigError {
  return new ConfigError([{path, message, line: null, col: null}], file)
}

/** The errno code of a Node.js system error ("ENOENT"), if it is one. */
export function errnoCode(error: unknown): string | undefined {
  if (error !== null && typeof error === 'object' && 'code' in error && typeof error.code === 'string') return error.code
  return undefined
}
