// CallFS, made executable from shared/seeds/callfs-troubleshooting.md.
//
// Flowchart (CATALOG.md): config → health? — no → service / port / TLS branch; yes → TLS, auth,
// files, metrics and error rate. PostgreSQL, Redis and the disk are walked on both branches:
// they are independent of the API answering, and when it does not, the guide's "Service Won't
// Start" names the database among the first suspects — so they run from the start, concurrently.

import type {CallfsTarget} from '../../config/types.js'
import type {FlowNode, Runbook, Status} from '../../engine/types.js'
import {TOO_MANY_CONNECTIONS} from '../shared/postgres.js'
import {authKey, authRequired, filesRoundtrip} from './checks-api.js'
import {configDefaultSecrets, configInvalid} from './checks-config.js'
import {dbConnections, dbLongQueries, dbMigrations, dbReachable} from './checks-db.js'
import {dataDirPermissions, diskSpace} from './checks-host.js'
import {errorsRate, latencyP95, metricsEndpoint} from './checks-metrics.js'
import {redisLockPressure, redisMemory, redisOrphanedLocks, redisPing} from './checks-redis.js'
import {apiHealth, portConflict, processDown, tlsCert} from './checks-service.js'
import {createCallfsContext, type CallfsContext} from './context.js'

const UP: Status[] = ['ok', 'warn']
const DOWN: Status[] = ['fail', 'unknown']
const ANSWERED: Status[] = ['ok', 'warn', 'fail']

const flow: FlowNode[] = [
  {
    check: 'callfs.config.invalid',
    question: 'config valid?',
    branches: [{label: 'parsed', when: {status: UP}, then: [{check: 'callfs.config.default-secrets'}]}],
  },
  {
    check: 'callfs.api.health',
    question: 'health?',
    branches: [
      {
        label: 'no',
        when: {status: DOWN},
        then: [{check: 'callfs.process.down'}, {check: 'callfs.port.conflict'}, {check: 'callfs.tls.cert'}],
      },
      {
        label: 'yes',
        when: {status: UP},
        then: [
          {check: 'callfs.tls.cert'},
          {
            check: 'callfs.auth.required',
            question: 'refuses anonymous requests?',
            branches: [
              {
                label: 'answered',
                when: {status: ANSWERED},
                then: [
                  {
                    check: 'callfs.auth.key',
                    question: 'key accepted?',
                    branches: [{label: 'yes', when: {status: ['ok']}, then: [{check: 'callfs.files.roundtrip'}]}],
                  },
                ],
              },
            ],
          },
          {
            check: 'callfs.metrics.endpoint',
            question: 'metrics served?',
            branches: [{label: 'yes', when: {status: ['ok']}, then: [{check: 'callfs.errors.rate'}, {check: 'callfs.latency.p95'}]}],
          },
        ],
      },
    ],
  },
  {
    check: 'callfs.db.reachable',
    question: 'PostgreSQL reachable?',
    branches: [
      {label: 'yes', when: {status: UP}, then: [{check: 'callfs.db.connections'}, {check: 'callfs.db.migrations'}, {check: 'callfs.db.long-queries'}]},
      {label: 'no: too many clients', when: {status: ['fail'], evidence: {reason: TOO_MANY_CONNECTIONS}}, then: [{check: 'callfs.db.connections'}]},
    ],
  },
  {
    check: 'callfs.redis.ping',
    question: 'Redis answers?',
    branches: [
      {label: 'yes', when: {status: UP}, then: [{check: 'callfs.redis.memory'}, {check: 'callfs.redis.orphaned-locks'}, {check: 'callfs.redis.lock-pressure'}]},
    ],
  },
  {check: 'callfs.disk.space'},
  {check: 'callfs.data-dir.permissions'},
]

export const callfsRunbook: Runbook<CallfsContext, CallfsTarget> = {
  system: 'callfs',
  title: 'CallFS Troubleshooting',
  guide: 'shared/seeds/callfs-troubleshooting.md',
  checks: [
    configInvalid,
    configDefaultSecrets,
    apiHealth,
    processDown,
    portConflict,
    tlsCert,
    authRequired,
    authKey,
    filesRoundtrip,
    diskSpace,
    dataDirPermissions,
    dbReachable,
    dbConnections,
    dbMigrations,
    dbLongQueries,
    redisPing,
    redisMemory,
    redisOrphanedLocks,
    redisLockPressure,
    metricsEndpoint,
    errorsRate,
    latencyP95,
  ],
  flow,
  createContext: createCallfsContext,
}
