import {readFileSync} from 'node:fs'
import {describe, expect, it} from 'vitest'

import {
  bucketDelta,
  histogramBuckets,
  histogramQuantile,
  parsePrometheusText,
  sumCounter,
  type Bucket,
} from '../../src/diagnostics/prometheus.js'

// A client_golang /metrics page as CallFS serves it on :9090.
const callfs = readFileSync(new URL('./fixtures/callfs-metrics.txt', import.meta.url), 'utf8')

describe('parsePrometheusText on a client_golang page', () => {
  const s = parsePrometheusText(callfs)

  it('parses every sample without errors and groups them into families', () => {
    expect(s.errors).toEqual([])
    // Every line that is not a comment is a sample.
    expect(s.sampleCount).toBe(callfs.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length)
    expect(s.sampleCount).toBe(54)
    const h = s.families.get('callfs_http_request_duration_seconds')
    expect(h?.type).toBe('histogram')
    expect(h?.help).toBe('Duration of HTTP requests in seconds')
    // 2 label sets × (12 buckets + _sum + _count)
    expect(h?.samples).toHaveLength(28)
    expect(s.families.has('callfs_http_request_duration_seconds_bucket')).toBe(false)
    const gc = s.families.get('go_gc_duration_seconds')
    expect(gc?.type).toBe('summary')
    expect(gc?.samples.map((x) => x.name)).toContain('go_gc_duration_seconds_count')
    expect(s.families.get('callfs_http_requests_total')?.type).toBe('counter')
    expect(s.families.get('process_max_fds')?.samples[0]?.value).toBe(1048576)
    expect(s.families.get('go_info')?.samples[0]?.labels).toEqual({version: 'go1.22.5'})
  })

  it('sums counters with and without a label filter', () => {
    expect(sumCounter(s, 'callfs_http_requests_total')).toBe(2480)
    expect(sumCounter(s, 'callfs_http_requests_total', (l) => /^5..$/.test(l['status_code'] ?? ''))).toBe(50)
    // The OpenMetrics-style family name finds the _total samples too.
    expect(sumCounter(s, 'callfs_http_requests')).toBe(2480)
    expect(sumCounter(s, 'callfs_http_requests_total', (l) => l['method'] === 'PATCH')).toBe(0)
    expect(sumCounter(s, 'callfs_no_such_metric_total')).toBeNull()
    expect(sumCounter(s, 'callfs_active_locks')).toBe(3)
  })

  it('sums histogram buckets across label sets and computes p95 like histogram_quantile', () => {
    const buckets = histogramBuckets(s, 'callfs_http_request_duration_seconds')
    expect(buckets?.map((b) => b.count)).toEqual([10, 30, 60, 100, 150, 300, 600, 850, 960, 990, 1000, 1000])
    expect(buckets?.at(-1)?.le).toBe(Infinity)
    // By hand: 1000 observations, rank 950 falls in (1, 2.5] holding 850..960:
    // 1 + (2.5 − 1) × (950 − 850) / (960 − 850) = 2.363636…
    expect(histogramQuantile(0.95, buckets ?? [])).toBeCloseTo(1 + 1.5 * (100 / 110), 10)
    // Only GET: 650 observations, rank 617.5 in (1, 2.5] holding 550..620.
    const get = histogramBuckets(s, 'callfs_http_request_duration_seconds', (l) => l['method'] === 'GET')
    expect(histogramQuantile(0.95, get ?? [])).toBeCloseTo(1 + 1.5 * (67.5 / 70), 10)
    // Median: rank 500 in (0.25, 0.5] holding 300..600 → 0.25 + 0.25 × 200/300.
    expect(histogramQuantile(0.5, buckets ?? [])).toBeCloseTo(0.25 + 0.25 * (200 / 300), 10)
    expect(histogramBuckets(s, 'callfs_missing_seconds')).toBeNull()
    expect(histogramBuckets(s, 'callfs_http_request_duration_seconds', () => false)).toEqual([])
  })

  it('computes the error share and p95 between two scrapes', () => {
    const later = parsePrometheusText(
      callfs
        .replace('status_code="500"} 40', 'status_code="500"} 140')
        .replace('status_code="201"} 300', 'status_code="201"} 400')
        .replace(/(method="PUT",path="\/v1\/files\/\*",le="(?:5|10|\+Inf)"\} )(\d+)/g, (_m, p: string, n: string) => `${p}${Number(n) + 100}`),
    )
    const is5xx = (l: Record<string, string>): boolean => (l['status_code'] ?? '').startsWith('5')
    const errors = (sumCounter(later, 'callfs_http_requests_total', is5xx) ?? 0) - (sumCounter(s, 'callfs_http_requests_total', is5xx) ?? 0)
    const total = (sumCounter(later, 'callfs_http_requests_total') ?? 0) - (sumCounter(s, 'callfs_http_requests_total') ?? 0)
    expect(errors / total).toBe(0.5)
    // 100 new PUTs, all slower than 2.5 s and at most 5 s: p95 of the window is inside (2.5, 5].
    const delta = bucketDelta(
      histogramBuckets(s, 'callfs_http_request_duration_seconds') ?? [],
      histogramBuckets(later, 'callfs_http_request_duration_seconds') ?? [],
    )
    expect(delta.map((b) => b.count)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 100, 100])
    expect(histogramQuantile(0.95, delta)).toBeCloseTo(2.5 + 2.5 * 0.95, 10)
  })
})

describe('parsePrometheusText edge cases', () => {
  it('handles escapes, special values, timestamps and comments', () => {
    const s = parsePrometheusText(
      [
        '# A free comment line',
        '# HELP weird_total Help with a \\\\ backslash and a \\n newline',
        '# TYPE weird_total counter',
        'weird_total{path="/a \\"quoted\\" name",dir="C:\\\\tmp",msg="line1\\nline2",} 1 1712000000000',
        'weird_total{path="plain"} +Inf',
        '',
        'temps{sensor="a"} NaN',
        'temps{sensor="b"} -Inf',
        'temps{sensor="c"}\t-1.5e-3\t-1712000000',
        'no_labels 42',
        '{"dotted.name", zone="x"} 7',
      ].join('\r\n'),
    )
    expect(s.errors).toEqual([])
    const w = s.families.get('weird_total')
    expect(w?.help).toBe('Help with a \\ backslash and a \n newline')
    expect(w?.samples[0]?.labels).toEqual({path: '/a "quoted" name', dir: 'C:\\tmp', msg: 'line1\nline2'})
    expect(w?.samples[1]?.value).toBe(Infinity)
    const t = s.families.get('temps')
    expect(t?.type).toBe('untyped')
    expect(Number.isNaN(t?.samples[0]?.value)).toBe(true)
    expect(t?.samples[1]?.value).toBe(-Infinity)
    expect(t?.samples[2]?.value).toBe(-0.0015)
    expect(s.families.get('dotted.name')?.samples[0]).toEqual({name: 'dotted.name', labels: {zone: 'x'}, value: 7})
    expect(s.sampleCount).toBe(7)
  })

  it('records bad lines with their numbers and keeps the rest', () => {
    const s = parsePrometheusText(
      [
        'good 1', // 1
        'bad_value 12abc', // 2
        'unclosed{a="b" 1', // 3
        'bad_escape{a="x\\q"} 1', // 4
        '# TYPE odd bogus', // 5
        'no_value{a="b"}', // 6
        'dup{a="1",a="2"} 1', // 7
        'trailing 1 2 3', // 8
        '9starts_with_digit 1', // 9
        'also_good{x="y"} 2', // 10
      ].join('\n'),
    )
    expect(s.errors.map((e) => e.line)).toEqual([2, 3, 4, 5, 6, 7, 8, 9])
    expect(s.errors[0]?.message).toContain('invalid value "12abc"')
    expect(s.errors[3]?.message).toContain('unknown metric type')
    expect(s.sampleCount).toBe(2)
    expect(sumCounter(s, 'good')).toBe(1)
    expect(sumCounter(s, 'also_good')).toBe(2)
  })

  it('keeps untyped _bucket samples findable when no TYPE line was sent', () => {
    const s = parsePrometheusText('lat_bucket{le="1"} 1\nlat_bucket{le="+Inf"} 2\n')
    expect(histogramBuckets(s, 'lat')).toEqual([
      {le: 1, count: 1},
      {le: Infinity, count: 2},
    ])
  })
})

describe('histogramQuantile semantics', () => {
  const b = (pairs: Array<[number, number]>): Bucket[] => pairs.map(([le, count]) => ({le, count}))

  it('returns null without observations or without a +Inf bucket', () => {
    expect(histogramQuantile(0.95, [])).toBeNull()
    expect(histogramQuantile(0.95, b([[1, 0], [Infinity, 0]]))).toBeNull()
    expect(histogramQuantile(0.95, b([[1, 5], [2, 10]]))).toBeNull()
    expect(histogramQuantile(0.95, b([[Infinity, 10]]))).toBeNull()
  })

  it('answers the highest finite bound when the rank is in the +Inf bucket', () => {
    expect(histogramQuantile(0.99, b([[0.5, 10], [1, 50], [Infinity, 100]]))).toBe(1)
  })

  it('interpolates the first bucket from 0, unless its bound is not positive', () => {
    expect(histogramQuantile(0.5, b([[2, 10], [Infinity, 10]]))).toBe(1)
    expect(histogramQuantile(0.5, b([[-1, 10], [Infinity, 10]]))).toBe(-1)
  })

  it('follows Prometheus for q out of range and unsorted, non-monotonic input', () => {
    expect(histogramQuantile(-0.1, b([[1, 1], [Infinity, 1]]))).toBe(-Infinity)
    expect(histogramQuantile(1.1, b([[1, 1], [Infinity, 1]]))).toBe(Infinity)
    // Unsorted, and 'le=2' dipped below 'le=1' (scrape race): treated as monotonic (10).
    expect(histogramQuantile(0.5, b([[Infinity, 20], [2, 9], [1, 10]]))).toBe(1)
  })

  it('bucketDelta subtracts, and treats a reset as a fresh histogram', () => {
    const before = b([[1, 5], [Infinity, 10]])
    expect(bucketDelta(before, b([[1, 7], [Infinity, 15]]))).toEqual(b([[1, 2], [Infinity, 5]]))
    expect(bucketDelta(before, b([[1, 1], [Infinity, 2]]))).toEqual(b([[1, 1], [Infinity, 2]]))
  })
})
