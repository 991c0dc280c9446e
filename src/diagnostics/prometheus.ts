// Prometheus text exposition format 0.0.4: a lenient parser and the few PromQL-like
// computations the runbooks need (counter sums, histogram buckets, histogram_quantile).

export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped'

export interface MetricFamily {
  name: string
  type: MetricType
  help: string | null
  samples: Sample[]
}

export interface Scrape {
  families: Map<string, MetricFamily>
  sampleCount: number
  errors: Array<{line: number; message: string}>
}

export interface Bucket {
  /** Upper bound; Infinity for the +Inf bucket. */
  le: number
  /** Cumulative count. */
  count: number
}

const TYPES = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped'])
const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/
const FLOAT = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/
const SUFFIXES: Record<string, readonly string[]> = {
  histogram: ['_bucket', '_sum', '_count', '_created'],
  summary: ['_sum', '_count', '_created'],
  counter: ['_total', '_created'],
}

/** Sample value: a float, NaN, +Inf, -Inf (Go's ParseFloat spellings). */
export function parseSampleValue(text: string): number | null {
  const t = text.toLowerCase()
  if (t === 'nan') return Number.NaN
  if (t === '+inf' || t === 'inf' || t === '+infinity' || t === 'infinity') return Infinity
  if (t === '-inf' || t === '-infinity') return -Infinity
  return FLOAT.test(text) ? Number(text) : null
}

function unescapeHelp(text: string): string {
  return text.replace(/\\(\\|n)/g, (_m, c: string) => (c === 'n' ? '\n' : '\\'))
}

class LineError extends Error {}

/** A cursor over one sample line. */
class Cursor {
  pos = 0
  constructor(readonly s: string) {}
  skipSpace(): void {
    while (this.s[this.pos] === ' ' || this.s[this.pos] === '\t') this.pos++
  }
  peek(): string | undefined {
    return this.s[this.pos]
  }
  take(re: RegExp, what: string): string {
    const m = re.exec(this.s.slice(this.pos))
    if (!m) throw new LineError(`expected ${what} at column ${this.pos + 1}`)
    this.pos += m[0].length
    return m[0]
  }
  expect(ch: string): void {
    if (this.s[this.pos] !== ch) throw new LineError(`expected '${ch}' at column ${this.pos + 1}`)
    this.pos++
  }
  /** A double-quoted string with \\, \" and \n escapes; the cursor is on the opening quote. */
  quoted(): string {
    this.expect('"')
    let out = ''
    for (;;) {
      const c = this.s[this.pos++]
      if (c === undefined) throw new LineError('unterminated label value')
      if (c === '"') return out
      if (c === '\\') {
        const e = this.s[this.pos++]
        if (e === 'n') out += '\n'
        else if (e === '\\' || e === '"') out += e
        else throw new LineError(`invalid escape \\${e ?? ''} in label value`)
      } else out += c
    }
  }
}

function parseSampleLine(line: string): {name: string; labels: Record<string, string>; value: number} {
  const c = new Cursor(line)
  let name = ''
  if (c.peek() !== '{') name = c.take(METRIC_NAME, 'a metric name')
  const labels: Record<string, string> = {}
  c.skipSpace()
  if (c.peek() === '{') {
    c.pos++
    for (;;) {
      c.skipSpace()
      if (c.peek() === '}') {
        c.pos++
        break
      }
      let key: string
      if (c.peek() === '"') {
        // Quoted names (UTF-8 names of newer exposition versions): a bare string is the metric name.
        key = c.quoted()
        c.skipSpace()
        if (c.peek() !== '=') {
          if (name !== '') throw new LineError('metric name given twice')
          name = key
          c.skipSpace()
          if (c.peek() === ',') c.pos++
          continue
        }
      } else key = c.take(LABEL_NAME, 'a label name')
      c.skipSpace()
      c.expect('=')
      c.skipSpace()
      if (Object.hasOwn(labels, key)) throw new LineError(`label ${key} given twice`)
      labels[key] = c.quoted()
      c.skipSpace()
      if (c.peek() === ',') c.pos++
      else if (c.peek() !== '}') throw new LineError(`expected ',' or '}' at column ${c.pos + 1}`)
    }
  }
  if (name === '') throw new LineError('sample without a metric name')
  const rest = line.slice(c.pos).trim().split(/[ \t]+/)
  const valueText = rest[0]
  if (valueText === undefined || valueText === '') throw new LineError(`no value for ${name}`)
  const value = parseSampleValue(valueText)
  if (value === null) throw new LineError(`invalid value ${JSON.stringify(valueText.slice(0, 40))} for ${name}`)
  if (rest.length > 2) throw new LineError(`unexpected text after the value of ${name}`)
  if (rest[1] !== undefined && !/^-?\d+$/.test(rest[1])) throw new LineError(`invalid timestamp ${JSON.stringify(rest[1].slice(0, 40))} for ${name}`)
  return {name, labels, value}
}

/**
 * Parse exposition text. Lenient: a bad line is recorded in errors and skipped. Samples named
 * <family>_bucket/_sum/_count (histogram), _sum/_count (summary) join their declared family.
 */
export function parsePrometheusText(text: string): Scrape {
  const families = new Map<string, MetricFamily>()
  const errors: Scrape['errors'] = []
  let sampleCount = 0

  const family = (name: string): MetricFamily => {
    let f = families.get(name)
    if (!f) {
      f = {name, type: 'untyped', help: null, samples: []}
      families.set(name, f)
    }
    return f
  }
  const familyOf = (sampleName: string): MetricFamily => {
    if (families.get(sampleName)?.type !== undefined && families.get(sampleName)?.type !== 'untyped') return family(sampleName)
    for (const [type, suffixes] of Object.entries(SUFFIXES)) {
      for (const suffix of suffixes) {
        if (!sampleName.endsWith(suffix)) continue
        const base = families.get(sampleName.slice(0, -suffix.length))
        if (base?.type === type) return base
      }
    }
    return family(sampleName)
  }

  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').replace(/\r$/, '').trim()
    if (line === '') continue
    if (line.startsWith('#')) {
      const m = /^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$/.exec(line)
      if (!m) continue // an ordinary comment
      const [, keyword, name = '', rest = ''] = m
      if (!METRIC_NAME.test(name) || METRIC_NAME.exec(name)?.[0] !== name) {
        errors.push({line: i + 1, message: `invalid metric name ${JSON.stringify(name.slice(0, 60))} in # ${keyword}`})
        continue
      }
      const f = family(name)
      if (keyword === 'HELP') {
        if (f.help !== null) errors.push({line: i + 1, message: `second HELP line for ${name}`})
        else f.help = unescapeHelp(rest)
      } else {
        const type = rest.trim() as MetricType
        if (!TYPES.has(type)) errors.push({line: i + 1, message: `unknown metric type ${JSON.stringify(rest.trim().slice(0, 30))} for ${name}`})
        else if (f.type !== 'untyped' && f.type !== type) errors.push({line: i + 1, message: `second TYPE line for ${name}`})
        else if (f.samples.length > 0 && f.type === 'untyped' && type !== 'untyped') errors.push({line: i + 1, message: `TYPE for ${name} after its samples`})
        else f.type = type
      }
      continue
    }
    try {
      const s = parseSampleLine(line)
      familyOf(s.name).samples.push(s)
      sampleCount++
    } catch (e) {
      if (!(e instanceof LineError)) throw e
      errors.push({line: i + 1, message: e.message})
    }
  }
  // HELP/TYPE lines without any sample describe nothing in this scrape.
  for (const [name, f] of families) if (f.samples.length === 0) families.delete(name)
  return {families, sampleCount, errors}
}

/** Every sample with exactly this name, whichever family it was filed under. */
export function samplesNamed(s: Scrape, name: string): Sample[] {
  const direct = s.families.get(name)
  if (direct && direct.samples.every((x) => x.name === name)) return direct.samples
  const out: Sample[] = []
  for (const f of s.families.values()) for (const x of f.samples) if (x.name === name) out.push(x)
  return out
}

/**
 * Sum of a counter (or gauge) across the label sets selected by where. `foo` also finds
 * `foo_total`. null when the metric is absent from the scrape; 0 when where selects nothing.
 */
export function sumCounter(s: Scrape, name: string, where?: (labels: Record<string, string>) => boolean): number | null {
  let samples = samplesNamed(s, name)
  if (samples.length === 0 && !name.endsWith('_total')) samples = samplesNamed(s, `${name}_total`)
  if (samples.length === 0) return null
  let sum = 0
  for (const x of samples) if (!where || where(x.labels)) sum += x.value
  return sum
}

/**
 * Cumulative buckets of histogram `name` (its `name_bucket` samples), summed across the label
 * sets selected by where (like `sum by (le)`), sorted by le. null when the histogram is absent.
 */
export function histogramBuckets(s: Scrape, name: string, where?: (labels: Record<string, string>) => boolean): Bucket[] | null {
  const samples = samplesNamed(s, `${name}_bucket`)
  if (samples.length === 0) return null
  const byLe = new Map<number, number>()
  for (const x of samples) {
    if (where && !where(x.labels)) continue
    const le = x.labels['le'] === undefined ? null : parseSampleValue(x.labels['le'])
    if (le === null || Number.isNaN(le)) continue
    byLe.set(le, (byLe.get(le) ?? 0) + x.value)
  }
  return [...byLe].map(([le, count]) => ({le, count})).sort((a, b) => a.le - b.le)
}

/** after − before per bucket; when any bucket went down the histogram was reset: after as is. */
export function bucketDelta(before: Bucket[], after: Bucket[]): Bucket[] {
  const prev = new Map(before.map((b) => [b.le, b.count]))
  const reset = after.some((b) => b.count < (prev.get(b.le) ?? 0))
  if (reset) return after.map((b) => ({...b}))
  return after.map((b) => ({le: b.le, count: b.count - (prev.get(b.le) ?? 0)}))
}

/**
 * Prometheus' histogram_quantile: linear interpolation inside the bucket holding the rank; the
 * first bucket starts at 0 (unless its bound is ≤ 0); a rank in the +Inf bucket answers the
 * highest finite bound. q < 0 → -Infinity, q > 1 → +Infinity. null when there are no
 * observations or the buckets cannot answer (no +Inf bucket, fewer than two buckets).
 */
export function histogramQuantile(q: number, buckets: Bucket[]): number | null {
  if (Number.isNaN(q)) return null
  if (q < 0) return -Infinity
  if (q > 1) return Infinity
  const sorted = [...buckets].filter((b) => !Number.isNaN(b.le)).sort((a, b) => a.le - b.le)
  // Coalesce equal bounds, then force monotonic counts as Prometheus does.
  const bs: Bucket[] = []
  for (const b of sorted) {
    const last = bs.at(-1)
    if (last && last.le === b.le) last.count += b.count
    else bs.push({le: b.le, count: b.count})
  }
  for (let i = 1; i < bs.length; i++) {
    const prev = bs[i - 1] as Bucket
    const cur = bs[i] as Bucket
    if (cur.count < prev.count) cur.count = prev.count
  }
  const top = bs.at(-1)
  if (!top || top.le !== Infinity || bs.length < 2) return null
  const observations = top.count
  if (!(observations > 0)) return null
  let rank = q * observations
  let b = bs.findIndex((x, i) => i < bs.length - 1 && x.count >= rank)
  if (b === -1) b = bs.length - 1
  if (b === bs.length - 1) return (bs[bs.length - 2] as Bucket).le
  const bucket = bs[b] as Bucket
  if (b === 0 && bucket.le <= 0) return bucket.le
  let bucketStart = 0
  let count = bucket.count
  if (b > 0) {
    const prev = bs[b - 1] as Bucket
    bucketStart = prev.le
    count -= prev.count
    rank -= prev.count
  }
  if (count === 0) return bucketStart
  return bucketStart + (bucket.le - bucketStart) * (rank / count)
}
