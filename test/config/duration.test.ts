import {describe, expect, it} from 'vitest'

import {formatDuration, parseDuration} from '../../src/config/duration.js'

describe('parseDuration', () => {
  it.each([
    ['250ms', 250],
    ['5s', 5000],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['14d', 1_209_600_000],
    ['1.5s', 1500],
    [' 30 ', 30_000],
    ['30', 30_000],
    ['.5s', 500],
    [2, 2000],
    [0.25, 250],
  ] as const)('%j → %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms)
  })

  it.each(['', '5 seconds', '5S', '-5s', '5x', 's', '1e3', 'five', '0', '0s', '0.0001s', '0.4ms'])('rejects %j', (text) => {
    expect(parseDuration(text)).toBeNull()
  })

  it('rejects numbers that are not positive and finite', () => {
    for (const n of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) expect(parseDuration(n)).toBeNull()
  })
})

describe('formatDuration', () => {
  it.each([
    [250, '250ms'],
    [1000, '1s'],
    [1500, '1.5s'],
    [60_000, '1m'],
    [90_000, '90s'],
    [300_000, '5m'],
    [3_600_000, '1h'],
    [1_209_600_000, '14d'],
  ])('%d ms → %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text)
  })

  it('round-trips through parseDuration', () => {
    for (const ms of [1, 999, 1001, 61_000, 86_400_001, 5000]) expect(parseDuration(formatDuration(ms))).toBe(ms)
  })
})
