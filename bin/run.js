#!/usr/bin/env node
// Fast path: `opsctl --version` answers without loading @oclif/core (about 2x the cost of
// bare node otherwise). The text matches oclif's own version output.
const args = process.argv.slice(2)
if (args.length === 1 && (args[0] === '--version' || args[0] === '-v')) {
  const {readFileSync} = await import('node:fs')
  const {version} = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  process.stdout.write(`opsctl/${version} ${process.platform}-${process.arch} node-${process.version}\n`)
} else {
  // npm enforces engines.node at install; oclif's own check re-reads it with semver on every start.
  process.env.OCLIF_DISABLE_ENGINE_WARNING ??= '1'
  const {run, flush, handle} = await import('@oclif/core')
  try {
    await run(args, import.meta.url)
    await flush()
  } catch (error) {
    if (/^command .+ not found$/.test(error?.message ?? '')) {
      // A mistyped command is a usage error (exit 64), said in one line. oclif names it with its
      // arguments joined; name only the words that make the command (topic and command).
      const {readFileSync} = await import('node:fs')
      const read = (file) => JSON.parse(readFileSync(new URL(file, import.meta.url), 'utf8'))
      const {oclif} = read('../package.json')
      const commands = new Set(Object.keys(read('../oclif.manifest.json').commands ?? {}))
      const words = args.filter((a) => !a.startsWith('-'))
      const known = [2, 1].find((n) => words.length > n && commands.has(words.slice(0, n).join(':')))
      const what =
        words.length === 0
          ? `unknown option "${args[0]}"`
          : known
            ? `unexpected argument "${words[known]}" for "${words.slice(0, known).join(' ')}"`
            : `unknown command "${words[0] in (oclif.topics ?? {}) ? words.slice(0, 2).join(' ') : words[0]}"`
      process.stderr.write(`opsctl: ${what}; see \`opsctl --help\`\n`)
      process.exit(64)
    }
    await handle(error)
  }
}
