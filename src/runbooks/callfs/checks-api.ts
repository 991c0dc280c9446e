import {createHash, randomBytes} from 'node:crypto'

import {bodyExcerpt, jsonBody, type HttpResponse} from '../../diagnostics/http.js'
import type {ProbeResult} from '../../diagnostics/types.js'
import type {CheckSpec, Finding, Fix} from '../../engine/types.js'
import {getPath, type CallfsContext} from './context.js'

/** The real server serves the file API at /v1/files/; the guide writes /api/v1/files/. */
export const FILES_PATHS = ['/v1/files/', '/api/v1/files/'] as const

function errorCode(res: HttpResponse): string | null {
  const body = jsonBody(res)
  if (!body.ok) return null
  const code = getPath(body.value, ['code'])
  return typeof code === 'string' ? code : null
}

/**
 * GET the file API's root, trying the real path first and the guide's second (when the first
 * is 404). Memoised per auth mode.
 */
function filesRoot(ctx: CallfsContext, auth: 'none' | 'key'): Promise<{path: string; result: ProbeResult<HttpResponse>}> {
  return ctx.memo(`files-root-${auth}`, async () => {
    let last: {path: string; result: ProbeResult<HttpResponse>} | null = null
    for (const path of FILES_PATHS) {
      const result = await ctx.request(path, {auth})
      last = {path, result}
      if (!result.ok || result.value.status !== 404) break
    }
    return last as {path: string; result: ProbeResult<HttpResponse>}
  })
}

export const authRequired: CheckSpec<CallfsContext> = {
  id: 'callfs.auth.required',
  title: 'The file API refuses requests without a key',
  severity: 'critical',
  docs: 'Authentication Failures > Diagnostic Commands (test without authentication: should fail)',
  remediations: [{id: 'callfs.auth.enable', title: 'Require API keys', automated: false}],
  budgetMs: (t) => t * 2 + 1000,
  async run(ctx) {
    const {path, result} = await filesRoot(ctx, 'none')
    if (!result.ok) return {status: 'unknown', summary: `GET ${path} without a key: ${result.error.message}`}
    const res = result.value
    const code = errorCode(res)
    const evidence = {path, status: res.status, code}
    if (res.status === 401) return {status: 'ok', summary: `GET ${path} without a key → 401${code ? ` ${code}` : ''}`, evidence}
    if (res.status === 404) return {status: 'unknown', summary: `no file API at ${FILES_PATHS.join(' or ')} (404): is this CallFS?`, evidence}
    if (res.status === 429) return {status: 'unknown', summary: `GET ${path} was rate limited (429); try again later`, evidence}
    const open = res.status >= 200 && res.status < 300
    return {
      status: 'fail',
      severity: 'critical',
      summary: open
        ? `GET ${path} without any key answered ${res.status}: the file API is open to anyone who can reach it`
        : `GET ${path} without a key answered ${res.status}${code ? ` ${code}` : ''}, expected 401`,
      evidence: {...evidence, body: bodyExcerpt(res.body)},
      fix: {
        id: 'callfs.auth.enable',
        title: 'Require API keys',
        plan: [
          `configure auth.api_keys (each at least 16 characters) in ${ctx.target.config_file} and restart CallFS`,
          'check that no proxy in front of CallFS answers for it or strips the Authorization header',
        ],
        commands: [`curl -k -i ${new URL(path, ctx.url)}`, `grep -A5 api_keys ${ctx.target.config_file}`],
      },
    }
  },
}

const OVERRIDE_VARS = ['CALLFS_AUTH__API_KEYS', 'CALLFS_AUTH_API_KEYS']

function sha(s: string): string {
  return createHash('sha256').update(s).digest('hex')
}

/** Why a key might be refused, worked out without ever showing a key. */
async function keyHints(ctx: CallfsContext, key: string): Promise<string[]> {
  const hints: string[] = []
  const envName = ctx.target.api_key_env
  if (/^bearer\s/i.test(key.trim())) hints.push(`${envName} starts with "Bearer ": put only the key in the variable; opsctl adds the "Bearer " prefix`)
  if (key !== key.trim()) hints.push(`${envName} has leading or trailing whitespace (a newline from a file?)`)
  // The key as it should have been given: without the prefix and the whitespace hinted above,
  // so that a key that is right apart from those is not also called unknown.
  const bare = sha(key.trim().replace(/^bearer\s+/i, '').trim())
  const cfg = await ctx.callfsConfig()
  if (cfg.state === 'parsed') {
    const keys = getPath(cfg.value, ['auth', 'api_keys'])
    if (Array.isArray(keys)) {
      const known = keys.filter((k): k is string => typeof k === 'string').map(sha)
      if (!known.includes(bare)) hints.push(`the key in ${envName} is not one of the ${known.length} keys in ${cfg.path} auth.api_keys`)
    }
  }
  const procEnv = await ctx.processEnv()
  if ('env' in procEnv) {
    for (const name of OVERRIDE_VARS) {
      const value = procEnv.env[name]
      if (value !== undefined) {
        const listed = value.split(',').map((s) => s.trim())
        const ours = listed.map(sha).includes(bare)
        hints.push(
          `${name} is set in the CallFS process environment (pid ${procEnv.pid}) and overrides auth.api_keys from the file; ${ours ? 'your key is in it' : 'your key is NOT in it'}`,
        )
      }
    }
  }
  for (const name of OVERRIDE_VARS) {
    if (ctx.settings.env[name] !== undefined) hints.push(`${name} is set in this shell: a CallFS started from it would use it instead of the file's keys`)
  }
  return hints
}

export const authKey: CheckSpec<CallfsContext> = {
  id: 'callfs.auth.key',
  title: 'The configured API key is accepted',
  severity: 'high',
  docs: 'Authentication Failures',
  remediations: [
    {id: 'callfs.auth.fix-key', title: 'Use a key CallFS accepts', automated: false},
    {id: 'callfs.auth.grant-access', title: 'Give the key access to the file API', automated: false},
  ],
  budgetMs: (t) => t * 3 + 1000,
  async run(ctx) {
    const envName = ctx.target.api_key_env
    const key = ctx.apiKey
    if (!key) return {status: 'skipped', summary: `${envName} is not set; set it to the CallFS API key to check authentication`}
    if (/[\r\n\0]/.test(key)) {
      // No HTTP client can put this in a header (undici refuses it before sending): say why, send nothing.
      const summary = `${envName} contains a line break (a newline from a file?): no client can send that in an Authorization header; remove it from the variable`
      return {status: 'fail', summary, evidence: {keyVariable: envName}, fix: fixKey(ctx, [summary])}
    }
    const {path, result} = await filesRoot(ctx, 'key')
    if (!result.ok) return {status: 'unknown', summary: `GET ${path} with the key: ${result.error.message}`}
    const res = result.value
    const code = errorCode(res)
    const evidence: Record<string, unknown> = {path, status: res.status, code, keyVariable: envName}
    if (res.status >= 200 && res.status < 300) return {status: 'ok', summary: `GET ${path} with Bearer $${envName} → ${res.status}`, evidence}
    if (res.status === 429) return {status: 'warn', summary: `GET ${path} was rate limited (429 RATE_LIMIT_EXCEEDED)`, evidence}
    if (res.status === 404) return {status: 'unknown', summary: `no file API at ${FILES_PATHS.join(' or ')} (404)`, evidence}
    // Only a 401 says the key itself is refused (CATALOG: fail on 401 AUTHENTICATION_FAILED).
    if (res.status === 403) {
      return {
        status: 'warn',
        summary: `key accepted; access denied (${code ?? '403'}) on ${path}`,
        evidence,
        fix: {
          id: 'callfs.auth.grant-access',
          title: 'Give the key access to the file API',
          plan: [
            `CallFS knows the key in ${envName} but refuses it ${path}: give its identity access (auth.api_key_users, or the owner and mode of the directory), or use a key that has it`,
          ],
          commands: [`curl -k -i -H "Authorization: Bearer $${envName}" ${new URL(path, ctx.url)}`, `grep -A10 '^auth:' ${ctx.target.config_file}`],
        },
      }
    }
    if (res.status >= 500) {
      evidence.body = bodyExcerpt(res.body)
      return {status: 'unknown', summary: `GET ${path} with the key answered ${res.status}${code ? ` ${code}` : ''}: a server error, not the key — see callfs.api.health and the CallFS log`, evidence}
    }
    if (res.status !== 401) {
      evidence.body = bodyExcerpt(res.body)
      return {status: 'unknown', summary: `GET ${path} with the key answered ${res.status}${code ? ` ${code}` : ''}: neither accepted nor refused`, evidence}
    }
    const hints = await keyHints(ctx, key)
    evidence.hints = hints
    const finding: Finding = {
      status: 'fail',
      summary: `the key in ${envName} is refused: 401 ${code ?? ''}`.trim() + (hints[0] ? ` — ${hints[0]}` : ''),
      evidence,
      fix: fixKey(ctx, hints, path),
    }
    return finding
  },
}

function fixKey(ctx: CallfsContext, hints: string[], path: string = FILES_PATHS[0]): Fix {
  const envName = ctx.target.api_key_env
  return {
    id: 'callfs.auth.fix-key',
    title: 'Use a key CallFS accepts',
    plan: [
      ...hints,
      'clients send "Authorization: Bearer <key>" as the guide shows (CallFS strips one "Bearer " prefix; a doubled prefix or stray whitespace breaks the key)',
      `if an environment variable overrides the file's keys, unset it in the unit (systemctl edit ${ctx.target.unit}) or add the key there, then restart`,
    ],
    commands: [
      `curl -k -i -H "Authorization: Bearer $${envName}" ${new URL(path, ctx.url)}`,
      'env | grep CALLFS_AUTH',
      `systemctl show ${ctx.target.unit} -p Environment`,
      'unset CALLFS_AUTH_API_KEYS CALLFS_AUTH__API_KEYS',
    ],
  }
}

export const filesRoundtrip: CheckSpec<CallfsContext> = {
  id: 'callfs.files.roundtrip',
  title: 'A file can be written, read back intact and deleted',
  severity: 'high',
  docs: 'File Upload/Download Issues',
  remediations: [{id: 'callfs.files.investigate', title: 'Investigate the storage backend', automated: false}],
  budgetMs: (t) => t * 4 + 1000,
  async run(ctx) {
    if (!ctx.settings.writeProbes) return {status: 'skipped', summary: 'writes a canary file: run with --write-probes to include it'}
    if (!ctx.apiKey) return {status: 'skipped', summary: `${ctx.target.api_key_env} is not set`}
    // The file API where the auth checks found it: /v1/files/ (the real server) or the guide's
    // /api/v1/files/ (a proxy that maps it).
    const root = await filesRoot(ctx, 'key')
    if (root.result.ok && root.result.value.status === 404) return {status: 'unknown', summary: `no file API at ${FILES_PATHS.join(' or ')} (404)`}
    const name = `.opsctl-canary-${randomBytes(6).toString('hex')}`
    const path = `${root.path}${name}`
    const content = `opsctl canary ${new Date().toISOString()} ${randomBytes(16).toString('hex')}\n`
    const expected = sha(content)
    const evidence: Record<string, unknown> = {path, bytes: content.length}
    const fail = (summary: string): Finding => ({
      status: 'fail',
      summary,
      evidence,
      fix: {
        id: 'callfs.files.investigate',
        title: 'Investigate the storage backend',
        plan: ['check free space and permissions of the backend (callfs.disk.space, callfs.data-dir.permissions)', 'read the CallFS log around the failed request'],
        commands: [`journalctl -u ${ctx.target.unit} --since "10 min ago" | grep -i error`, `df -h ${ctx.target.data_dir}`, `ls -la ${ctx.target.data_dir}`],
      },
    })
    // PUT creates (201) or replaces (200), as the guide's upload test does.
    const put = await ctx.request(path, {auth: 'key', method: 'PUT', body: content, headers: {'content-type': 'application/octet-stream'}})
    if (!put.ok) return fail(`PUT ${path}: ${put.error.message}`)
    evidence.write = put.value.status
    if (put.value.status >= 300) return fail(`PUT ${path} answered ${put.value.status} ${errorCode(put.value) ?? ''}`.trim())
    try {
      const get = await ctx.request(path, {auth: 'key'})
      if (!get.ok) return fail(`GET ${path}: ${get.error.message}`)
      evidence.read = get.value.status
      if (get.value.status !== 200) return fail(`GET ${path} answered ${get.value.status} ${errorCode(get.value) ?? ''}`.trim())
      const got = createHash('sha256').update(get.value.body).digest('hex')
      evidence.sha256Equal = got === expected
      if (got !== expected) return fail(`read back ${get.value.body.length} bytes that differ from the ${content.length} written (sha256 mismatch)`)
    } finally {
      const del = await ctx.request(path, {auth: 'key', method: 'DELETE'})
      evidence.delete = del.ok ? del.value.status : del.error.kind
    }
    if (typeof evidence.delete !== 'number' || evidence.delete >= 300) return fail(`DELETE ${path} answered ${evidence.delete}; the canary may be left behind`)
    return {status: 'ok', summary: `wrote, read back (sha256 equal) and deleted ${path}`, evidence}
  },
}
