// Config-file parsers that say where a problem is (line and column), used by every runbook.
import {open} from 'node:fs/promises'
import {createRequire} from 'node:module'

import {fsError} from './files.js'
import {probeFail, probeOk, type ProbeResult} from './types.js'

/** 1-based. */
export interface Position {
  line: number
  col: number
}

export type Parsed<T> = {ok: true; value: T} | {ok: false; message: string; position: Position | null}

export interface YamlParsed {
  value: unknown
  /**
   * Where a path points in the text: the key of a mapping entry, the item of a sequence
   * (numbers index sequences). [] is the document's root. null when the path does not exist.
   */
  positionOf(path: Array<string | number>): Position | null
}

/** Aliases expanded per document: enough for any config, not enough for a billion laughs. */
export const YAML_MAX_ALIAS_COUNT = 100

/** Offsets → 1-based line/col. */
function lineStarts(text: string): number[] {
  const starts = [0]
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) starts.push(i + 1)
  return starts
}

function positionAt(starts: number[], offset: number): Position {
  let lo = 0
  let hi = starts.length - 1
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if ((starts[mid] ?? 0) <= offset) lo = mid
    else hi = mid - 1
  }
  return {line: lo + 1, col: offset - (starts[lo] ?? 0) + 1}
}

type YamlModule = typeof import('yaml')
type TomlModule = typeof import('smol-toml')

// Loaded on first use, synchronously (the parsers are synchronous), so that --help and
// --version never pay for them.
const requireLazy = createRequire(import.meta.url)
let yamlModule: YamlModule | undefined
let tomlModule: TomlModule | undefined
const yamlLib = (): YamlModule => (yamlModule ??= requireLazy('yaml') as YamlModule)
const tomlLib = (): TomlModule => (tomlModule ??= requireLazy('smol-toml') as TomlModule)

/** Parse YAML (one document). Duplicate keys are errors; alias expansion is bounded. */
export function parseYaml(text: string): Parsed<YamlParsed> {
  const yaml = yamlLib()
  const starts = lineStarts(text)
  const docs = yaml.parseAllDocuments(text, {uniqueKeys: true, prettyErrors: false})
  // An empty stream (only comments/whitespace) still carries stream-level errors.
  const streamError = 'empty' in docs ? docs.errors[0] : undefined
  if (streamError) return {ok: false, message: firstLine(streamError.message), position: positionAt(starts, streamError.pos[0])}
  for (const d of docs) {
    const err = d.errors[0]
    if (err) return {ok: false, message: firstLine(err.message), position: positionAt(starts, err.pos[0])}
  }
  const second = docs[1]
  if (second) {
    return {ok: false, message: 'more than one YAML document (---) in a file that holds one', position: positionAt(starts, second.range[0])}
  }
  const doc = docs[0]
  if (!doc) return {ok: true, value: {value: null, positionOf: () => null}}
  let value: unknown
  try {
    value = doc.toJS({maxAliasCount: YAML_MAX_ALIAS_COUNT})
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e)
    return {ok: false, message: /alias/i.test(message) ? `too many YAML alias expansions (over ${YAML_MAX_ALIAS_COUNT}): ${message}` : message, position: null}
  }
  const positionOf = (path: Array<string | number>): Position | null => {
    let node: unknown = doc.contents
    let at: number | undefined = (node as {range?: [number, number, number]} | null)?.range?.[0]
    for (const seg of path) {
      if (yaml.isAlias(node)) node = node.resolve(doc)
      if (yaml.isMap(node)) {
        const pair = node.items.find((p) => {
          const k = yaml.isScalar(p.key) ? p.key.value : p.key
          return k === seg || String(k) === String(seg)
        })
        if (!pair) return null
        at = (pair.key as {range?: [number, number, number]} | null)?.range?.[0]
        node = pair.value
      } else if (yaml.isSeq(node) && typeof seg === 'number') {
        const item: unknown = node.items[seg]
        if (item === undefined) return null
        at = (item as {range?: [number, number, number]} | null)?.range?.[0]
        node = item
      } else return null
    }
    return at === undefined ? null : positionAt(starts, at)
  }
  return {ok: true, value: {value, positionOf}}
}

/** Parse TOML; errors carry smol-toml's line/col. */
export function parseToml(text: string): Parsed<unknown> {
  const toml = tomlLib()
  try {
    return {ok: true, value: toml.parse(text)}
  } catch (e) {
    if (e instanceof toml.TomlError) {
      return {ok: false, message: firstLine(e.message).replace(/^Invalid TOML document: /, ''), position: {line: e.line, col: e.column}}
    }
    return {ok: false, message: e instanceof Error ? firstLine(e.message) : String(e), position: null}
  }
}

function firstLine(text: string): string {
  return text.split('\n')[0]?.trim() ?? ''
}

// ---- dotenv ----

export interface DotenvEntry {
  key: string
  value: string
  line: number
}

export interface DotenvProblem {
  line: number
  message: string
}

const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/
const DOUBLE_QUOTE_ESCAPES: Record<string, string> = {n: '\n', r: '\r', t: '\t', '"': '"', '\\': '\\', $: '$'}

/**
 * Parse a .env file the way python-dotenv reads it, and report what other readers (shells,
 * docker --env-file, systemd EnvironmentFile) would read differently. Problems never quote a
 * value: values are often secrets. Supports comments, `export KEY=…`, single quotes (literal),
 * double quotes (\n \t \" \\ escapes, may span lines), inline ` # comments` after unquoted
 * values, empty values. The last assignment of a key wins.
 */
export function parseDotenv(text: string): {entries: DotenvEntry[]; problems: DotenvProblem[]} {
  const entries: DotenvEntry[] = []
  const problems: DotenvProblem[] = []
  const firstSeen = new Map<string, number>()
  const lines = text.replace(/^\uFEFF/, '').split('\n').map((l) => l.replace(/\r$/, ''))

  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1
    const raw = lines[i] ?? ''
    const trimmed = raw.trim()
    if (trimmed === '' || trimmed.startsWith('#')) continue
    const body = raw.trimStart().replace(/^export[ \t]+/, '')
    const eq = body.indexOf('=')
    if (eq < 0) {
      problems.push({line: lineNo, message: `no '=' on this line (expected KEY=value); it is ignored`})
      continue
    }
    const rawKey = body.slice(0, eq)
    const key = rawKey.trim()
    let rest = body.slice(eq + 1)
    if (!ENV_KEY.test(key)) {
      problems.push({line: lineNo, message: `invalid variable name ${JSON.stringify(key.slice(0, 60))}: use letters, digits and _ (not starting with a digit)`})
      continue
    }
    if (rawKey !== key) {
      problems.push({line: lineNo, message: `spaces around '=' (${key} = value): the app reads the key as '${key} ' (write ${key}=value)`})
    } else if (/^[ \t]/.test(rest) && rest.trim() !== '') {
      problems.push({line: lineNo, message: `space after '=' (${key}= value): some loaders keep it in the value (write ${key}=value)`})
    }
    rest = rest.replace(/^[ \t]+/, '')

    let value: string
    const quote = rest[0]
    if (quote === '"' || quote === "'") {
      // Find the closing quote, possibly on a later line.
      let buf = rest.slice(1)
      let endLine = i
      let close = findClosingQuote(buf, quote)
      while (close < 0 && endLine + 1 < lines.length) {
        endLine++
        buf += `\n${lines[endLine] ?? ''}`
        close = findClosingQuote(buf, quote)
      }
      if (close < 0) {
        // python-dotenv skips the line and goes on; a shell would swallow the rest of the file.
        problems.push({line: lineNo, message: `unterminated ${quote === '"' ? 'double' : 'single'} quote in ${key}'s value: ${key} is not set`})
        continue
      }
      const inner = buf.slice(0, close)
      const after = buf.slice(close + 1).trim()
      if (after !== '' && !after.startsWith('#')) {
        problems.push({line: endLine + 1, message: `text after the closing quote of ${key}'s value is ignored`})
      }
      value = quote === '"' ? inner.replace(/\\(.)/gs, (m, c: string) => DOUBLE_QUOTE_ESCAPES[c] ?? m) : inner
      i = endLine
    } else {
      // Unquoted: an inline comment needs whitespace before '#'.
      const hash = rest.search(/[ \t]#/)
      value = (hash >= 0 ? rest.slice(0, hash) : rest).trim()
      if (/["']$/.test(value)) {
        problems.push({line: lineNo, message: `unbalanced quote in ${key}'s value`})
      }
    }

    const first = firstSeen.get(key)
    if (first !== undefined) problems.push({line: lineNo, message: `${key} is set again (first on line ${first}); this later value wins`})
    else firstSeen.set(key, lineNo)
    entries.push({key, value, line: lineNo})
  }
  return {entries, problems}
}

function findClosingQuote(text: string, quote: string): number {
  for (let j = 0; j < text.length; j++) {
    const c = text[j]
    if (quote === '"' && c === '\\') {
      j++
      continue
    }
    if (c === quote) return j
  }
  return -1
}

/** The effective value of each key (the last assignment wins). */
export function dotenvValues(parsed: {entries: DotenvEntry[]}): Map<string, string> {
  return new Map(parsed.entries.map((e) => [e.key, e.value]))
}

// ---- files ----

export const DEFAULT_MAX_TEXT_BYTES = 4 * 1024 * 1024

/** Read a text file (UTF-8): ENOENT → 'not-found', EACCES → 'permission', over maxBytes → 'too-large'. */
export async function readTextFile(path: string, maxBytes: number = DEFAULT_MAX_TEXT_BYTES): Promise<ProbeResult<string>> {
  const startedAt = Date.now()
  const tooLarge = (size: string): ProbeResult<string> =>
    probeFail({kind: 'too-large', message: `${path} is ${size} bytes, over the ${maxBytes}-byte limit for a config or log file`}, startedAt)
  let handle: Awaited<ReturnType<typeof open>> | undefined
  try {
    handle = await open(path, 'r')
    const s = await handle.stat()
    if (s.isDirectory()) return probeFail({kind: 'other', message: `${path} is a directory, not a file`, code: 'EISDIR'}, startedAt)
    if (s.size > maxBytes) return tooLarge(String(s.size))
    // Read until EOF but never past maxBytes + 1: stat may lie (procfs, a file growing meanwhile).
    const chunks: Buffer[] = []
    let total = 0
    for (;;) {
      const want = Math.min(64 * 1024, maxBytes + 1 - total)
      if (want <= 0) return tooLarge('more than ' + String(maxBytes))
      const chunk = Buffer.alloc(want)
      const {bytesRead} = await handle.read(chunk, 0, want, null)
      if (bytesRead === 0) break
      chunks.push(chunk.subarray(0, bytesRead))
      total += bytesRead
    }
    return probeOk(Buffer.concat(chunks).toString('utf8'), startedAt)
  } catch (e) {
    return probeFail(fsError(e, path, 'read'), startedAt)
  } finally {
    await handle?.close().catch(() => undefined)
  }
}
