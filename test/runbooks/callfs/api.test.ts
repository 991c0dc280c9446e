// The CallFS API checks against the simulator over real TLS: callfs.api.health (and every way a
// /health can go wrong on the wire), callfs.auth.required, callfs.auth.key and
// callfs.files.roundtrip.

import type {ChildProcess} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {createServer, type IncomingMessage, type ServerResponse} from 'node:http'
import type {AddressInfo} from 'node:net'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {startCallfsSim, type CallfsRequestLog, type CallfsSim} from '../../../src/lab/callfs.js'
import {callfsRunbook} from '../../../src/runbooks/callfs/index.js'
import {freePort} from '../../support/ports.js'
import {API_KEY, startCallfsWorld, type CallfsWorld} from '../../support/callfs-world.js'
import {startNamedProcess} from '../../support/processes.js'

// A unit name of this file alone: other test files run at the same time and may start (or
// look for) processes named after their own CallFS unit. At most 15 characters (comm).
const UNIT = `cfs-api-${randomBytes(3).toString('hex')}`

let w: CallfsWorld
let sim: CallfsSim
const children: ChildProcess[] = []
const stops: Array<() => Promise<void>> = []

beforeAll(async () => {
  w = await startCallfsWorld({sim: {}})
  sim = w.sim as CallfsSim
})
afterEach(() => {
  sim.setHealthFault('none')
  sim.setFilesFault(null)
})
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  await Promise.allSettled(stops.map((s) => s()))
  await w?.stop()
})

/** A real process named `name` with the given environment; its pid. */
async function startNamed(name: string, env: Record<string, string>): Promise<number> {
  const child = await startNamedProcess(name, {dir: w.dir, env})
  children.push(child)
  return child.pid as number
}

/** A check of this file's world, with this file's unit name. */
function check(id: string, overrides: Record<string, unknown> = {}, settings: Parameters<CallfsWorld['check']>[2] = {}) {
  return w.check(id, {unit: UNIT, ...overrides}, settings)
}

/** Kill and reap: an unreaped child would linger as a zombie that still bears the unit's name. */
async function stop(pid: number): Promise<void> {
  const c = children.find((x) => x.pid === pid)
  if (!c || c.exitCode !== null || c.signalCode !== null) return
  const gone = new Promise((r) => c.once('exit', r))
  c.kill('SIGKILL')
  await gone
}

// ---------------------------------------------------------------------------------------------

describe('callfs.api.health', () => {
  const TIMEOUT = 300

  it('ok: GET /health → {"status":"ok"} over verified TLS', async () => {
    const r = await check('callfs.api.health')
    expect(r.status).toBe('ok')
    expect(r.summary).toMatch(/^GET https:\/\/localhost:\d+\/health → \{"status":"ok"\} in \d+ms$/)
    expect(r.evidence).toMatchObject({status: 200, contentType: 'application/json'})
    expect(r.remediation).toBeNull()
  })

  it('refused: nothing listens on the port', async () => {
    const port = await freePort()
    const r = await check('callfs.api.health', {url: `https://localhost:${port}`})
    expect(r.status).toBe('fail')
    expect(r.summary).toContain(`GET https://localhost:${port}/health: nothing listens on`)
    expect(r.summary).toContain('connection refused')
    expect(r.evidence).toMatchObject({error: 'refused', code: 'ECONNREFUSED'})
  })

  it('HTML instead of JSON: a proxy sign-in page on 200 fails with the page title', async () => {
    sim.setHealthFault('html')
    const r = await check('callfs.api.health')
    expect(r.status).toBe('fail')
    expect(r.summary).toContain('answered 200 but answered HTML, not JSON: <title>Sign in - Access Gateway</title>')
    expect(r.summary).toContain('is something other than CallFS on this port?')
    expect(r.evidence).toMatchObject({status: 200, contentType: 'text/html'})
    expect(String(r.evidence.body)).toMatch(/^<!DOCTYPE html>/)
  })

  // A probe that ignored its deadline would run into the check's budget (time-out + 1 s) and end
  // 'unknown' with "did not finish": the summaries below are the probe's own, so its deadline fired.
  it('a hung server: ends within the time-out plus a small margin, and says it hung', async () => {
    sim.setHealthFault('hang')
    const started = Date.now()
    const r = await check('callfs.api.health', {}, {timeoutMs: TIMEOUT})
    const took = Date.now() - started
    expect(r.status).toBe('fail')
    expect(r.summary).toContain(`accepted the connection but sent no response within ${TIMEOUT}ms: the service is hung or overloaded`)
    expect(r.evidence).toMatchObject({error: 'timeout'})
    expect(took).toBeGreaterThanOrEqual(TIMEOUT - 20)
    expect(took).toBeLessThan(TIMEOUT + 1000)
  })

  it('a 1 GiB body: read up to the cap only, fast, and reported as not JSON', async () => {
    sim.setHealthFault('huge-body')
    const started = Date.now()
    const r = await check('callfs.api.health', {}, {timeoutMs: 2000})
    const took = Date.now() - started
    expect(r.status).toBe('fail')
    expect(r.summary).toMatch(/answered 200 but the body exceeded the \d+-byte cap and was cut off: not parsed as JSON/)
    expect(r.evidence).toMatchObject({status: 200})
    // The cap is 1 MiB: the probe stops reading far before 1 GiB, and well within its time-out.
    expect(took).toBeLessThan(1500)
    expect(String(r.evidence.body).length).toBeLessThanOrEqual(121)
  })

  it('slow-loris: headers, then a byte now and then — cut at the time-out', async () => {
    sim.setHealthFault('slow-loris')
    const started = Date.now()
    const r = await check('callfs.api.health', {}, {timeoutMs: TIMEOUT})
    const took = Date.now() - started
    expect(r.status).toBe('fail')
    expect(r.summary).toMatch(new RegExp(`answered 200 but the body did not finish within ${TIMEOUT}ms \\(\\d+ bytes read\\): the server is slow or stalled`))
    expect(r.evidence).toMatchObject({error: 'timeout'})
    expect(took).toBeLessThan(TIMEOUT + 1000)
  })

  it('500: fails with the status and the body', async () => {
    sim.setHealthFault('error-500')
    const r = await check('callfs.api.health')
    expect(r.status).toBe('fail')
    expect(r.summary).toMatch(/^GET https:\/\/localhost:\d+\/health answered 500 \(answered text\/plain, not JSON/)
    expect(r.evidence).toMatchObject({status: 500, body: 'Internal Server Error\\n'})
  })

  it('garbage bytes instead of HTTP: fails', async () => {
    sim.setHealthFault('garbage')
    const r = await check('callfs.api.health')
    expect(r.status).toBe('fail')
    expect(r.summary).toMatch(/^GET https:\/\/localhost:\d+\/health: /)
    expect(r.summary).toContain('did not answer valid HTTP')
  })

  // undici 7's HTTPParserError carries no `code` of its own: the probe must still see it as a
  // protocol failure (the connection and the TLS handshake succeeded).
  it('garbage bytes instead of HTTP: a protocol failure that asks whether this is the right port', async () => {
    sim.setHealthFault('garbage')
    const r = await check('callfs.api.health')
    expect(r.status).toBe('fail')
    expect(r.evidence).toMatchObject({error: 'protocol'})
    expect(r.summary).toMatch(/did not answer valid HTTP \(HPE_[A-Z_]+\): is this the right port, and does it speak HTTPS\?/)
  })

  it('TLS failure: an expired certificate fails, and the summary names the reason', async () => {
    const expired = await startCallfsWorld({
      sim: {},
      cert: {notBefore: new Date(Date.now() - 40 * 86_400_000), notAfter: new Date(Date.now() - 10 * 86_400_000)},
    })
    stops.push(() => expired.stop())
    const r = await expired.check('callfs.api.health', {unit: UNIT})
    expect(r.status).toBe('fail')
    expect(r.summary).toContain('is not trusted (CERT_HAS_EXPIRED)')
    expect(r.summary).toMatch(/expired/i)
    expect(r.evidence).toMatchObject({error: 'tls', code: 'CERT_HAS_EXPIRED'})
  })
})

// ---------------------------------------------------------------------------------------------

describe('callfs.auth.required', () => {
  it('ok: the file API answers 401 AUTHENTICATION_FAILED without a key', async () => {
    const before = sim.requests.length
    const r = await check('callfs.auth.required')
    expect(r.status).toBe('ok')
    expect(r.summary).toBe('GET /v1/files/ without a key → 401 AUTHENTICATION_FAILED')
    expect(r.evidence).toEqual({path: '/v1/files/', status: 401, code: 'AUTHENTICATION_FAILED'})
    // It really asked without a key.
    expect(sim.requests.slice(before)).toEqual([{method: 'GET', path: '/v1/files/', status: 401, auth: 'none'}])
  })

  it('fail, critical: a CallFS that serves /v1/files/ to anyone', async () => {
    const open = await startCallfsSim({apiKeys: [API_KEY], tls: {cert: w.cert.cert, key: w.cert.key}, metricsPort: null, openAccess: true})
    stops.push(() => open.stop())
    const r = await check('callfs.auth.required', {url: open.url.replace('127.0.0.1', 'localhost')})
    expect(r.status).toBe('fail')
    expect(r.severity).toBe('critical')
    expect(r.summary).toBe('GET /v1/files/ without any key answered 200: the file API is open to anyone who can reach it')
    expect(r.evidence).toMatchObject({path: '/v1/files/', status: 200, body: 'null\\n'})
    expect(r.remediation).toMatchObject({id: 'callfs.auth.enable', automated: false})
    expect(open.requests).toEqual([{method: 'GET', path: '/v1/files/', status: 200, auth: 'none'}])
  })
})

// ---------------------------------------------------------------------------------------------

describe('callfs.auth.key', () => {
  it('ok: the key from CALLFS_API_KEY is accepted', async () => {
    const before = sim.requests.length
    const r = await check('callfs.auth.key')
    expect(r.status).toBe('ok')
    expect(r.summary).toBe('GET /v1/files/ with Bearer $CALLFS_API_KEY → 200')
    expect(sim.requests.slice(before)).toEqual([{method: 'GET', path: '/v1/files/', status: 200, auth: 'valid'}])
  })

  it('a wrong key fails with the hint that it is not among config.yaml keys, and never shows the key', async () => {
    const wrong = `wrong-key-${randomBytes(12).toString('hex')}`
    const env = {...w.env, CALLFS_API_KEY: wrong}
    const r = await check('callfs.auth.key', {}, {env})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(`the key in CALLFS_API_KEY is refused: 401 AUTHENTICATION_FAILED — the key in CALLFS_API_KEY is not one of the 1 keys in ${w.configFile} auth.api_keys`)
    expect(r.evidence).toMatchObject({status: 401, code: 'AUTHENTICATION_FAILED', keyVariable: 'CALLFS_API_KEY'})
    expect(r.remediation).toMatchObject({id: 'callfs.auth.fix-key', automated: false})
    const json = JSON.stringify(r)
    expect(json).not.toContain(wrong)
    expect(json).not.toContain(API_KEY)

    // And not only thanks to the redaction of the report: the finding itself holds no key.
    const spec = callfsRunbook.checks.find((c) => c.id === 'callfs.auth.key')
    const finding = await spec?.run(callfsRunbook.createContext(w.target({unit: UNIT}), w.settings({env})))
    expect(finding?.status).toBe('fail')
    const raw = JSON.stringify({...finding, fix: {...finding?.fix, apply: undefined}})
    expect(raw).not.toContain(wrong)
    expect(raw).not.toContain(API_KEY)
  })

  it('a variable holding "Bearer <key>": fails with the hint to drop the prefix', async () => {
    const r = await check('callfs.auth.key', {}, {env: {...w.env, CALLFS_API_KEY: `Bearer ${API_KEY}`}})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(
      'the key in CALLFS_API_KEY is refused: 401 AUTHENTICATION_FAILED — CALLFS_API_KEY starts with "Bearer ": put only the key in the variable; opsctl adds the "Bearer " prefix',
    )
    // The key itself is one of the file's: no "not one of the keys" hint.
    expect(r.evidence.hints).toEqual([expect.stringContaining('starts with "Bearer "')])
    expect(JSON.stringify(r)).not.toContain(API_KEY)
  })

  it('a variable holding the key and a newline (read from a file): fails with the hint, without sending it', async () => {
    const before = sim.requests.length
    const r = await check('callfs.auth.key', {}, {env: {...w.env, CALLFS_API_KEY: `${API_KEY}\n`}})
    expect(r.status).toBe('fail')
    expect(r.summary).toBe(
      'CALLFS_API_KEY contains a line break (a newline from a file?): no client can send that in an Authorization header; remove it from the variable',
    )
    expect(r.remediation).toMatchObject({id: 'callfs.auth.fix-key', automated: false})
    expect(sim.requests.length).toBe(before)
    expect(JSON.stringify(r)).not.toContain(API_KEY)
  })

  it('CALLFS_AUTH__API_KEYS in the environment of the running CallFS overrides the file: hinted', async () => {
    // CallFS (a real process named after the unit) was started with other keys in its environment;
    // the server answers with those, not with the file's.
    const envKey = `env-override-key-${randomBytes(8).toString('hex')}`
    const pid = await startNamed(UNIT, {CALLFS_AUTH__API_KEYS: envKey})
    const served = await startCallfsSim({apiKeys: [envKey], tls: {cert: w.cert.cert, key: w.cert.key}, metricsPort: null})
    stops.push(() => served.stop())
    try {
      const r = await check('callfs.auth.key', {unit: UNIT, url: served.url.replace('127.0.0.1', 'localhost')})
      expect(r.status).toBe('fail')
      expect(r.evidence.hints).toEqual([
        `CALLFS_AUTH__API_KEYS is set in the CallFS process environment (pid ${pid}) and overrides auth.api_keys from the file; your key is NOT in it`,
      ])
      expect(r.summary).toContain(`CALLFS_AUTH__API_KEYS is set in the CallFS process environment (pid ${pid})`)
      const json = JSON.stringify(r)
      expect(json).not.toContain(envKey)
      expect(json).not.toContain(API_KEY)
    } finally {
      await stop(pid)
    }
  })

  it('skipped when CALLFS_API_KEY is not set', async () => {
    const before = sim.requests.length
    const r = await check('callfs.auth.key', {}, {env: {PATH: w.env.PATH ?? ''}})
    expect(r.status).toBe('skipped')
    expect(r.summary).toBe('CALLFS_API_KEY is not set; set it to the CallFS API key to check authentication')
    expect(sim.requests.length).toBe(before)
  })
})

// ---------------------------------------------------------------------------------------------

describe('callfs.files.roundtrip', () => {
  function canaryRequests(from: number): CallfsRequestLog[] {
    return sim.requests.slice(from).filter((q) => q.path.startsWith('/v1/files/.opsctl-canary-'))
  }

  it('skipped without --write-probes, and writes nothing', async () => {
    const before = sim.requests.length
    const r = await check('callfs.files.roundtrip')
    expect(r.status).toBe('skipped')
    expect(r.summary).toBe('writes a canary file: run with --write-probes to include it')
    expect(sim.requests.length).toBe(before)
  })

  it('ok with --write-probes: PUT, GET, DELETE of one canary, which is gone afterwards', async () => {
    const before = sim.requests.length
    const r = await check('callfs.files.roundtrip', {}, {writeProbes: true})
    expect(r.status).toBe('ok')
    expect(r.evidence).toMatchObject({write: 201, read: 200, sha256Equal: true, delete: 204})
    const path = String(r.evidence.path)
    expect(path).toMatch(/^\/v1\/files\/\.opsctl-canary-[0-9a-f]{12}$/)
    expect(r.summary).toBe(`wrote, read back (sha256 equal) and deleted ${path}`)
    expect(canaryRequests(before)).toEqual([
      {method: 'PUT', path, status: 201, auth: 'valid'},
      {method: 'GET', path, status: 200, auth: 'valid'},
      {method: 'DELETE', path, status: 204, auth: 'valid'},
    ])
    // The directory listing is empty again (a nil Go slice: null).
    expect(await fetchListing()).toBe('null\n')
  })

  it('fail when the backend answers 500', async () => {
    sim.setFilesFault({status: 500})
    const before = sim.requests.length
    const r = await check('callfs.files.roundtrip', {}, {writeProbes: true})
    expect(r.status).toBe('fail')
    expect(r.summary).toMatch(/^PUT \/v1\/files\/\.opsctl-canary-[0-9a-f]{12} answered 500 INTERNAL_ERROR$/)
    expect(r.evidence).toMatchObject({write: 500})
    expect(r.remediation).toMatchObject({id: 'callfs.files.investigate', automated: false})
    expect(canaryRequests(before).map((q) => q.method)).toEqual(['PUT'])
  })

  it('a read that fails still deletes the canary', async () => {
    // Every third files request fails: the look at the file API's root (where is it?) and the PUT
    // succeed, the GET gets a 500, the DELETE succeeds.
    sim.setFilesFault({status: 500, everyNth: 3})
    const before = sim.requests.length
    const r = await check('callfs.files.roundtrip', {}, {writeProbes: true})
    expect(r.status).toBe('fail')
    expect(r.summary).toMatch(/^GET \/v1\/files\/\.opsctl-canary-[0-9a-f]{12} answered 500 INTERNAL_ERROR$/)
    expect(r.evidence).toMatchObject({write: 201, read: 500, delete: 204})
    expect(canaryRequests(before).map((q) => `${q.method} ${q.status}`)).toEqual(['PUT 201', 'GET 500', 'DELETE 204'])
    sim.setFilesFault(null)
    expect(await fetchListing()).toBe('null\n')
  })
})

/** The file API root, listed with the key (over the world's CA). */
async function fetchListing(): Promise<string> {
  const {httpRequest} = await import('../../../src/diagnostics/http.js')
  const r = await httpRequest(
    {url: `${w.config().url as string}/v1/files/`, headers: {authorization: `Bearer ${API_KEY}`}, tls: {caFile: w.cert.certFile}},
    {timeoutMs: 2000},
  )
  if (!r.ok) throw new Error(r.error.message)
  return r.value.body.toString('utf8')
}

// ---------------------------------------------------------------------------------------------

/**
 * A CallFS as the guide describes it: the file API under /api/v1/files/ (a proxy maps it there;
 * /v1/ answers chi's plain 404), Bearer keys, CallFS's JSON errors. `rootStatus` makes the
 * listing of / answer as CallFS does for a key without permission (403) or a broken backend (500).
 */
async function guideCallfs(o: {rootStatus?: 403 | 500} = {}): Promise<{url: string; requests: string[]}> {
  const files = new Map<string, Buffer>()
  const requests: string[] = []
  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, {'content-type': 'application/json'})
    res.end(`${JSON.stringify(body)}\n`)
  }
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const path = req.url ?? '/'
      requests.push(`${req.method} ${path}`)
      if (path === '/health') return json(res, 200, {status: 'ok'})
      if (!path.startsWith('/api/v1/')) {
        res.writeHead(404, {'content-type': 'text/plain; charset=utf-8'})
        return res.end('404 page not found\n')
      }
      if (req.headers.authorization !== `Bearer ${API_KEY}`) return json(res, 401, {code: 'AUTHENTICATION_FAILED', message: 'invalid API key'})
      const name = path.slice('/api/v1/files/'.length)
      if (name === '' && o.rootStatus === 403) return json(res, 403, {code: 'PERMISSION_DENIED', message: 'permission denied'})
      if (name === '' && o.rootStatus === 500) return json(res, 500, {code: 'INTERNAL_ERROR', message: 'failed to list directory'})
      if (name === '') return json(res, 200, [...files.keys()].map((n) => ({name: n})))
      if (req.method === 'PUT') {
        const existed = files.has(name)
        files.set(name, Buffer.concat(chunks))
        return json(res, existed ? 200 : 201, {name})
      }
      const body = files.get(name)
      if (!body) return json(res, 404, {code: 'FILE_NOT_FOUND', message: 'not found'})
      if (req.method === 'DELETE') {
        files.delete(name)
        res.writeHead(204)
        return res.end()
      }
      res.writeHead(200, {'content-type': 'application/octet-stream'})
      res.end(body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  stops.push(() => new Promise((resolve) => server.close(() => resolve())))
  return {url: `http://localhost:${(server.address() as AddressInfo).port}`, requests}
}

describe('callfs.auth.key: what the answer says about the key', () => {
  it('403 PERMISSION_DENIED: warn — the key is accepted, its identity may not list the directory', async () => {
    const api = await guideCallfs({rootStatus: 403})
    const r = await check('callfs.auth.key', {url: api.url})
    expect(r.status).toBe('warn')
    expect(r.summary).toBe('key accepted; access denied (PERMISSION_DENIED) on /api/v1/files/')
    expect(r.remediation).toMatchObject({id: 'callfs.auth.grant-access', automated: false})
    expect(JSON.stringify(r)).not.toContain(API_KEY)
  })

  it('500 from the file API: unknown — a server error says nothing about the key', async () => {
    sim.setFilesFault({status: 500})
    const r = await check('callfs.auth.key')
    expect(r.status).toBe('unknown')
    expect(r.summary).toBe('GET /v1/files/ with the key answered 500 INTERNAL_ERROR: a server error, not the key — see callfs.api.health and the CallFS log')
    expect(r.remediation).toBeNull()
  })

  it('503 as well', async () => {
    sim.setFilesFault({status: 503})
    const r = await check('callfs.auth.key')
    expect(r.status).toBe('unknown')
    expect(r.summary).toMatch(/^GET \/v1\/files\/ with the key answered 503/)
  })
})

describe('callfs.files.roundtrip on the path the auth checks found', () => {
  it('a file API under /api/v1/files/: the canary goes there, in a walk and alone', async () => {
    const api = await guideCallfs()
    const run = await w.walk({unit: UNIT, url: api.url}, {writeProbes: true})
    const report = run.report.checks.find((c) => c.id === 'callfs.files.roundtrip')
    expect(run.report.checks.find((c) => c.id === 'callfs.auth.key')?.summary).toBe('GET /api/v1/files/ with Bearer $CALLFS_API_KEY → 200')
    expect(report?.status).toBe('ok')
    const path = String(report?.evidence.path)
    expect(path).toMatch(/^\/api\/v1\/files\/\.opsctl-canary-[0-9a-f]{12}$/)
    expect(api.requests.filter((q) => q.includes('.opsctl-canary-'))).toEqual([`PUT ${path}`, `GET ${path}`, `DELETE ${path}`])

    const alone = await check('callfs.files.roundtrip', {url: api.url}, {writeProbes: true})
    expect(alone.status).toBe('ok')
    expect(String(alone.evidence.path)).toMatch(/^\/api\/v1\/files\/\.opsctl-canary-/)
  })
})
