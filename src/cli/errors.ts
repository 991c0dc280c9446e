/** A bad flag or argument the user can correct: exit 64. */
export class UsageError extends Error {
  readonly exitCode = 64
}
