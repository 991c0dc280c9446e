#!/usr/bin/env node
// Runs the TypeScript sources directly (no build) for development.
const {register} = await import('tsx/esm/api')
register()
const {execute} = await import('@oclif/core')
await execute({development: true, dir: import.meta.url})
