import type {ProbeError} from './types.js'

/** Errors that say something about the endpoint itself, not about one request to it. */
const ENDPOINT_KINDS = new Set<ProbeError['kind']>(['refused', 'timeout', 'unreachable', 'dns'])

/**
 * Remembers, for one run, which endpoints (host:port) refused or never answered, so that
 * every later probe to the same endpoint fails at once with the first reason instead of
 * waiting out its own time-out. Independent probes still run concurrently; only the ones
 * that start after a failure is known are short-circuited.
 */
export class Reachability {
  private readonly failures = new Map<string, ProbeError>()
  private readonly contacts = new Map<string, Promise<ProbeError | null>>()

  static key(host: string, port: number | string): string {
    const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
    return `${h}:${port}`
  }

  /** The earlier failure of this endpoint in this run, worded as such, if there was one. */
  known(endpoint: string): ProbeError | undefined {
    const first = this.failures.get(endpoint)
    if (!first) return undefined
    return {...first, message: `${first.message} (earlier in this run; not retried)`}
  }

  /** The first contact with an endpoint, made once per run and shared by every probe of it. */
  firstContact(endpoint: string, connect: () => Promise<ProbeError | null>): Promise<ProbeError | null> {
    const earlier = this.contacts.get(endpoint)
    // Whoever made the contact hears what happened; everyone after hears it was earlier.
    if (earlier) return earlier.then((error) => (error ? (this.known(endpoint) ?? error) : null))
    const contact = connect()
    this.contacts.set(endpoint, contact)
    return contact
  }

  record(endpoint: string, error: ProbeError): void {
    if (ENDPOINT_KINDS.has(error.kind) && !this.failures.has(endpoint)) this.failures.set(endpoint, error)
  }
}
