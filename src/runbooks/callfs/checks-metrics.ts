import {bodyExcerpt, httpRequest} from '../../diagnostics/http.js'
import {STATUS_CODES} from 'node:http'

import {bucketDelta, histogramBuckets, type Bucket, histogramQuantile, parsePrometheusText, samplesNamed, sumCounter, type Scrape} from '../../diagnostics/prometheus.js'
import type {ProbeResult} from '../../diagnostics/types.js'

import type {CheckSpec, Finding, Fix} from '../../engine/types.js'
import type {CallfsContext} from './context.js'
import {formatMs} from '../../util/time.js'

const GUIDE = 'Monitoring and Alerting > Key Metrics to Monitor'
const REQUESTS = 'callfs_http_requests_total'
const DURATION = 'callfs_http_request_duration_seconds'

interface TimedScrape {
  at: number
  scrape: Scrape
}

async function scrapeOnce(ctx: CallfsContext): Promise<ProbeResult<{scrape: Scrape; status: number; contentType: string | null; excerpt: string}>> {
  const r = await httpRequest(
    {url: ctx.target.metrics_url, maxBodyBytes: 8 * 1024 * 1024, tls: {insecure: ctx.target.tls.insecure, caFile: ctx.target.tls.ca_file}},
    ctx.probe(),
  )
  if (!r.ok) return r
  const text = r.value.body.toString('utf8')
  return {...r, value: {scrape: parsePrometheusText(text), status: r.value.status, contentType: r.value.contentType, excerpt: bodyExcerpt(r.value.body)}}
}

function firstScrape(ctx: CallfsContext) {
  return ctx.memo('scrape-1', async () => ({at: Date.now(), result: await scrapeOnce(ctx)}))
}

/** Two scrapes `metrics_window` apart, so rates describe now rather than since start-up. */
function scrapePair(ctx: CallfsContext): Promise<{before: TimedScrape; after: TimedScrape | null; reason: string | null}> {
  return ctx.memo('scrape-pair', async () => {
    const first = await firstScrape(ctx)
    if (!first.result.ok) throw new Error(first.result.error.message)
    const before = {at: first.at, scrape: first.result.value.scrape}
    const wait = ctx.target.thresholds.metrics_window - (Date.now() - first.at)
    if (wait > 0) await new Promise((r) => setTimeout(r, wait))
    const second = await scrapeOnce(ctx)
    if (!second.ok) return {before, after: null, reason: `second scrape failed: ${second.error.message}`}
    return {before, after: {at: Date.now(), scrape: second.value.scrape}, reason: null}
  })
}

const budget = (t: number, ctx: CallfsContext) => ctx.target.thresholds.metrics_window + t * 2 + 1000

export const metricsEndpoint: CheckSpec<CallfsContext> = {
  id: 'callfs.metrics.endpoint',
  title: 'Prometheus metrics are served',
  severity: 'low',
  docs: GUIDE,
  remediations: [{id: 'callfs.metrics.enable', title: 'Serve the metrics endpoint', automated: false}],
  async run(ctx) {
    const url = ctx.target.metrics_url
    const fix = (why: string): Fix => ({
      id: 'callfs.metrics.enable',
      title: 'Serve the metrics endpoint',
      plan: [why, `CallFS serves unauthenticated metrics on metrics.listen_addr (default :9090); point systems.callfs.metrics_url there`],
      commands: [`curl -s ${url} | head`, `grep -A2 '^metrics:' ${ctx.target.config_file}`],
    })
    const {result} = await firstScrape(ctx)
    if (!result.ok) return {status: 'warn', summary: `GET ${url}: ${result.error.message}`, evidence: {url, error: result.error.kind}, fix: fix('make the metrics server reachable from here')}
    const {scrape, status, contentType, excerpt} = result.value
    const evidence: Record<string, unknown> = {url, status, contentType, samples: scrape.sampleCount}
    if (status === 401 || status === 403) return {status: 'warn', summary: `GET ${url} needs credentials (${status}): that is the main port's /metrics`, evidence, fix: fix('use the separate, unauthenticated metrics server')}
    if (status !== 200) return {status: 'warn', summary: `GET ${url} answered ${status}`, evidence: {...evidence, body: excerpt}, fix: fix(`${url} does not serve metrics`)}
    const callfs = [...scrape.families.keys()].filter((n) => n.startsWith('callfs_'))
    if (scrape.sampleCount === 0 || callfs.length === 0) {
      return {status: 'warn', summary: `GET ${url} answered 200 but no callfs_ metrics (${scrape.sampleCount} samples; ${contentType ?? 'no content type'})`, evidence: {...evidence, body: excerpt}, fix: fix('this is not the CallFS metrics server')}
    }
    evidence.callfsFamilies = callfs.length
    return {status: 'ok', summary: `${scrape.sampleCount} samples, ${callfs.length} callfs_ metric families at ${url}`, evidence}
  },
}

// Server errors by label, as the real server writes them: "503" — or, in one CallFS version,
// Go's status text ("Service Unavailable"). The guide's queries say `status`, the code `status_code`.
const SERVER_ERROR_TEXTS = new Set(Object.entries(STATUS_CODES).filter(([code]) => code.startsWith('5')).map(([, text]) => text))
const isServerError = (labels: Record<string, string>) => {
  const v = labels.status_code ?? labels.status ?? labels.code ?? ''
  return /^5\d\d$/.test(v) || SERVER_ERROR_TEXTS.has(v)
}

/**
 * The real GET handler counts each file read twice (its route and again as path="/files/*");
 * count each request once when both series are present. Decided over both scrapes: the first
 * file reads may happen between them, so only the second shows the doubling.
 */
function requestFilter(...scrapes: Scrape[]): (labels: Record<string, string>) => boolean {
  const doubled = scrapes.some((s) => samplesNamed(s, REQUESTS).some((x) => x.labels.path === '/v1/files/*'))
  return (labels) => !(doubled && labels.path === '/files/*')
}

/** A CallFS metrics server: client_golang leaves a labelled vector out until its first observation. */
const servesCallfs = (s: Scrape) => [...s.families.keys()].some((n) => n.startsWith('callfs_'))

/** A counter's sum; 0 when the family is absent from a CallFS scrape (nothing counted yet); null when this is not CallFS. */
function requestCount(s: Scrape, where: (labels: Record<string, string>) => boolean): number | null {
  return sumCounter(s, REQUESTS, where) ?? (servesCallfs(s) ? 0 : null)
}

function durationBuckets(s: Scrape, where: (labels: Record<string, string>) => boolean): Bucket[] | null {
  return histogramBuckets(s, DURATION, where) ?? (servesCallfs(s) ? [] : null)
}

/** What both rate checks start from: the two scrapes and which samples count, or why not. */
async function scrapeWindow(ctx: CallfsContext): Promise<{pair: Awaited<ReturnType<typeof scrapePair>>; counted: (labels: Record<string, string>) => boolean} | Finding> {
  try {
    const pair = await scrapePair(ctx)
    return {pair, counted: requestFilter(pair.before.scrape, ...(pair.after ? [pair.after.scrape] : []))}
  } catch (error) {
    return {status: 'unknown', summary: (error as Error).message}
  }
}

export const errorsRate: CheckSpec<CallfsContext> = {
  id: 'callfs.errors.rate',
  title: 'HTTP 5xx error rate is below 10%',
  severity: 'high',
  docs: 'Monitoring and Alerting > Alert Rules > HighErrorRate',
  remediations: [{id: 'callfs.errors.investigate', title: 'Find the source of the 5xx responses', automated: false}],
  budgetMs: budget,
  async run(ctx) {
    const window = await scrapeWindow(ctx)
    if ('status' in window) return window
    const {pair, counted} = window
    const isError = (l: Record<string, string>) => counted(l) && isServerError(l)
    const total0 = requestCount(pair.before.scrape, counted)
    if (total0 === null) return {status: 'unknown', summary: `${REQUESTS} is not among the metrics, nor any callfs_ metric: is ${ctx.target.metrics_url} the CallFS metrics server?`}
    const err0 = requestCount(pair.before.scrape, isError) ?? 0
    let requests = total0
    let errors = err0
    let basis = 'since CallFS started'
    if (pair.after) {
      const dTotal = (requestCount(pair.after.scrape, counted) ?? 0) - total0
      const dErr = (requestCount(pair.after.scrape, isError) ?? 0) - err0
      if (dTotal > 0) {
        requests = dTotal
        errors = Math.max(0, dErr)
        basis = `over the last ${formatMs(pair.after.at - pair.before.at)}`
      } else basis = `since CallFS started (no requests during the ${formatMs(pair.after.at - pair.before.at)} window)`
    }
    const ratio = requests > 0 ? errors / requests : 0
    const percent = Math.round(ratio * 1000) / 10
    const evidence = {requests, errors, errorPercent: percent, basis, threshold: '10%'}
    if (requests === 0) return {status: 'ok', summary: 'no requests served yet', evidence}
    const summary = `${percent}% of requests answered 5xx ${basis} (${errors} of ${requests})`
    if (ratio <= 0.1) return {status: 'ok', summary, evidence}
    return {
      status: 'fail',
      summary,
      evidence,
      fix: {
        id: 'callfs.errors.investigate',
        title: 'Find the source of the 5xx responses',
        plan: ['read the errors CallFS logs for the failing requests', 'check the backends it depends on: the database, Redis, the storage backend (the checks above)'],
        commands: [`journalctl -u ${ctx.target.unit} --since "15 min ago" | grep -i error | tail -50`, `curl -s ${ctx.target.metrics_url} | grep -E '^callfs_(http_requests_total|errors_total).*5[0-9][0-9]'`],
      },
    }
  },
}

export const latencyP95: CheckSpec<CallfsContext> = {
  id: 'callfs.latency.p95',
  title: 'p95 response time is below 2 s',
  severity: 'medium',
  docs: 'Monitoring and Alerting > Alert Rules > HighResponseTime',
  remediations: [{id: 'callfs.latency.investigate', title: 'Find what makes requests slow', automated: false}],
  budgetMs: budget,
  async run(ctx) {
    const window = await scrapeWindow(ctx)
    if ('status' in window) return window
    const {pair, counted} = window
    const before = durationBuckets(pair.before.scrape, counted)
    if (!before) return {status: 'unknown', summary: `${DURATION} is not among the metrics, nor any callfs_ metric: is ${ctx.target.metrics_url} the CallFS metrics server?`}
    let buckets = before
    let basis = 'since CallFS started'
    if (pair.after) {
      const after = durationBuckets(pair.after.scrape, counted)
      if (after) {
        const delta = bucketDelta(before, after)
        const observed = delta.at(-1)?.count ?? 0
        if (observed > 0) {
          buckets = delta
          basis = `over the last ${formatMs(pair.after.at - pair.before.at)}`
        }
      }
    }
    const observations = buckets.at(-1)?.count ?? 0
    const p95 = histogramQuantile(0.95, buckets)
    const evidence = {p95Seconds: p95 === null ? null : Math.round(p95 * 1000) / 1000, observations, basis, threshold: '2s'}
    if (p95 === null || observations === 0) return {status: 'ok', summary: 'no requests observed yet', evidence}
    const summary = `p95 ${formatMs(Math.round(p95 * 1000))} ${basis} (${observations} requests)`
    if (p95 <= 2) return {status: 'ok', summary, evidence}
    return {
      status: 'warn',
      summary,
      evidence,
      fix: {
        id: 'callfs.latency.investigate',
        title: 'Find what makes requests slow',
        plan: ['look for slow database queries and lock waits (the PostgreSQL and Redis checks)', 'profile CallFS as the guide shows'],
        commands: ['go tool pprof -http=:8080 http://localhost:8443/debug/pprof/profile?seconds=30', 'iostat -x 1 5'],
      },
    }
  },
}
