import {Command, Flags} from '@oclif/core'
import {Chalk, type ChalkInstance} from 'chalk'

import {ConfigError, formatConfigError} from '../config/errors.js'
import {formatDuration, parseDuration} from '../config/duration.js'
import {redact} from '../engine/redact.js'
import {EXIT} from '../engine/status.js'
import {UsageError} from './errors.js'

/** A duration flag (250ms, 5s, 2m) up to `maxMs`: every duration opsctl takes becomes a timer. */
export function durationFlag(maxMs: number) {
  return Flags.custom<number>({
    helpValue: 'DURATION',
    async parse(input, _ctx, opts) {
      const ms = parseDuration(input)
      if (ms === null) {
        const zero = /^\s*0+(\.0+)?\s*(ms|s|m|h|d)?\s*$/.test(input)
        throw new Error(zero ? `--${opts.name} must be greater than zero` : `--${opts.name}: "${input}" is not a duration (use 250ms, 5s, 2m, 1h)`)
      }
      if (ms > maxMs) throw new Error(`--${opts.name}: ${input} is far too long (at most ${formatDuration(maxMs)})`)
      return ms
    },
  })
}

export const HOUR = 3_600_000

/** Flags shared by every command that reads systems (SPEC.md "Common flags"). */
export const commonFlags = {
  config: Flags.string({
    description: 'configuration file (else $OPSCTL_CONFIG, ./opsctl.yaml, $XDG_CONFIG_HOME/opsctl/config.yaml, /etc/opsctl/config.yaml)',
    helpValue: 'FILE',
  }),
  json: Flags.boolean({description: 'print the JSON document on stdout and nothing else'}),
  timeout: durationFlag(HOUR)({description: 'deadline of each probe [default: config timeout, 5s]'}),
  verbose: Flags.boolean({description: 'list skipped checks and all evidence; stack traces for internal errors'}),
  'no-color': Flags.boolean({description: 'plain output (NO_COLOR is honoured too)'}),
}

export function wantsColor(noColorFlag: boolean, stream: NodeJS.WriteStream = process.stdout): boolean {
  // no-color.org: NO_COLOR counts when present and not empty.
  if (noColorFlag || process.env.NO_COLOR) return false
  if (process.env.FORCE_COLOR && process.env.FORCE_COLOR !== '0') return true
  return Boolean(stream.isTTY) && process.env.TERM !== 'dumb'
}

export function painter(color: boolean): ChalkInstance {
  return new Chalk({level: color ? 1 : 0})
}

/** oclif's parse errors, without its "Parsing --flag" prefix and "See more help" tail (we add our own). */
export function usageMessage(message: string): string {
  return message
    .replace(/^Parsing --[\w-]+\s+/, '')
    .replace(/\s*See more help with --help\s*$/, '')
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' ')
}

/** oclif's parser throws some argument errors as plain CLIErrors ("Flag --x expects a value"). */
function fromParser(error: Error): boolean {
  return /[\\/]@oclif[\\/]core[\\/]lib[\\/]parser[\\/]/.test(error.stack ?? '')
}

/**
 * The one place errors become what a user sees: a line saying what is wrong and what to do,
 * and the exit code of SPEC.md. A stack trace only with --verbose.
 */
export abstract class OpsctlCommand extends Command {
  protected printErr(line: string): void {
    process.stderr.write(redact(line) + '\n')
  }

  protected printOut(text: string): void {
    process.stdout.write(redact(text))
  }

  protected override async catch(error: Error & {exitCode?: number; oclif?: {exit?: number}; code?: string}): Promise<unknown> {
    if (error.code === 'EEXIT') throw error // this.exit(): already decided
    let exit: number
    if (error instanceof ConfigError) {
      for (const line of formatConfigError(error).split('\n')) this.printErr(`opsctl: ${line}`)
      exit = EXIT.config
    } else if (error instanceof UsageError) {
      this.printErr(`opsctl: ${error.message}`)
      this.printErr(`See \`opsctl ${this.id?.replaceAll(':', ' ') ?? ''} --help\`.`)
      exit = EXIT.usage
    } else if (error.oclif?.exit === EXIT.usage || fromParser(error)) {
      this.printErr(`opsctl: ${usageMessage(error.message)}`)
      this.printErr(`See \`opsctl ${this.id?.replaceAll(':', ' ') ?? ''} --help\`.`)
      exit = EXIT.usage
    } else {
      this.printErr(`opsctl: internal error: ${error.message}`)
      if (this.argv.includes('--verbose') && error.stack) this.printErr(error.stack)
      else this.printErr('Run again with --verbose for the details, and report it with the output.')
      exit = EXIT.software
    }
    this.exit(exit)
  }
}
