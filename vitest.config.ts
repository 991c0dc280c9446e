import {defineConfig} from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores in CI: files run two at a time; each file gets its own servers.
    poolOptions: {forks: {maxForks: 2, minForks: 1}},
    reporters: ['default'],
  },
})
