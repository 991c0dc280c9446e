// Masking of secrets that can hide inside connection strings, for anything opsctl shows.

const MASK = '****'
// scheme://user:PASSWORD@ — the password is what follows the first ":" of the userinfo, up to
// the LAST "@" of the token: people write "/", "#", "?", "," and "@" in passwords unencoded.
// Whitespace and quotes end it, so masking inside JSON text never eats a delimiter. It may
// over-mask an "@" later in a path (http://h:80/x?e=a@b); it never under-masks.
const URL_PASSWORD = /\b([a-z][a-z0-9+.-]*:\/\/[^\s:/?#@"']*:)[^\s"']*@/gi
// ...?password=PASSWORD (libpq and redis clients accept it as a query parameter)
const QUERY_PASSWORD = /([?&](?:password|pass|pwd|passwd)=)[^&#\s"',]*/gi

/** `postgres://u:secret@h/db?password=x` → `postgres://u:****@h/db?password=****`; other text unchanged. */
export function maskUrlPasswords(text: string): string {
  return text.replace(URL_PASSWORD, `$1${MASK}@`).replace(QUERY_PASSWORD, `$1${MASK}`)
}

/** True when a URL carries a password in its userinfo or as a `password` query parameter. */
export function urlHasPassword(url: URL): boolean {
  if (url.password !== '') return true
  for (const key of url.searchParams.keys()) if (/^(password|pass|pwd|passwd)$/i.test(key)) return true
  return false
}
