// Suite-wide setup: one scratch root per run for the throwaway PostgreSQL and Redis servers
// (see ports.ts, postgres.ts, redis.ts), handed to the workers with provide/inject and an
// environment variable. The PostgreSQL template (initdb, ~1.5 s) is built in the background
// while vitest collects the files; startPostgres() waits for it, tests that need no PostgreSQL
// never do. Teardown kills any server a test left running (or a crashed worker left behind)
// and removes the root.
import {rm} from 'node:fs/promises'
import type {TestProject} from 'vitest/node'
import {buildPostgresTemplate} from './postgres.js'
import {makeRoot, reapServers, ROOT_ENV} from './ports.js'

export default function setup(project: TestProject): () => Promise<void> {
  const root = makeRoot()
  project.provide('opsctlTestRoot', root)
  process.env[ROOT_ENV] = root
  // Failure is written to <root>/pg-template.error, which startPostgres() reports.
  const template = buildPostgresTemplate(root).catch(() => undefined)
  return async () => {
    await template
    await reapServers(root)
    await rm(root, {recursive: true, force: true, maxRetries: 3})
  }
}
