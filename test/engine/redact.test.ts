import {afterEach, describe, expect, it} from 'vitest'

import {clearSecrets, redact, redactValue, registerSecret} from '../../src/engine/redact.js'

afterEach(() => clearSecrets())

describe('redact', () => {
  it('masks registered secrets wherever they appear, also JSON-escaped and URL-encoded', () => {
    registerSecret('s3cr"et/key')
    expect(redact('key is s3cr"et/key.')).toBe('key is ****.')
    expect(redact(JSON.stringify({k: 's3cr"et/key'}))).toBe('{"k":"****"}')
    expect(redact('x=s3cr%22et%2Fkey')).toBe('x=****')
  })

  it('masks credentials by shape even when nobody registered them', () => {
    expect(redact('postgres://callfs:pa55w0rd@db:5432/callfs')).toBe('postgres://callfs:****@db:5432/callfs')
    expect(redact('redis://:topsecret@127.0.0.1:6379/0')).toBe('redis://:****@127.0.0.1:6379/0')
    expect(redact('Authorization: Bearer abcdef0123456789')).toBe('Authorization: Bearer ****')
    expect(redact('host=db password=hunter2 user=x')).toBe('host=db password=**** user=x')
  })

  it('leaves ordinary URLs and JSON structure intact', () => {
    const doc = {url: 'https://localhost:8443/health', list: ['http://h:8443', 'a@b'], n: 1}
    expect(redactValue(doc)).toEqual(doc)
  })

  it('ignores values too short to be credentials', () => {
    registerSecret('ab')
    expect(redact('about a tab')).toBe('about a tab')
  })
})

describe('redact: passwords inside URLs', () => {
  it('masks a password that contains a slash, and stops at JSON delimiters', () => {
    expect(redact('postgres://u:pa/ss@h/db')).toBe('postgres://u:****@h/db')
    expect(redact('{"a":"postgres://u:x@h","b":"c@d"}')).toBe('{"a":"postgres://u:****@h","b":"c@d"}')
  })
})

describe('redaction never breaks what it masks', () => {
  it('a secret that reads like JSON syntax or a number leaves the document valid and its numbers alone', () => {
    registerSecret('true00')
    registerSecret('100000')
    const doc = {automated: true, count: 100000, text: 'key true00 here', list: [true, null, 100000]}
    expect(redactValue(doc)).toEqual({automated: true, count: 100000, text: 'key **** here', list: [true, null, 100000]})
  })

  it('masks a short secret only as a whole token; a long one wherever it appears', () => {
    registerSecret('callfs')
    expect(redact('callfs')).toBe('****')
    expect(redact('mycallfs2 callfs_x')).toBe('mycallfs2 callfs_x')
    expect(redact('"callfs"')).toBe('"****"')
    registerSecret('k3y-0123456789abcdef')
    expect(redact('xk3y-0123456789abcdefx')).toBe('x****x')
  })

  it('leaves prose about authentication alone', () => {
    expect(redact('Bearer authentication is required')).toBe('Bearer authentication is required')
    expect(redact('WWW-Authenticate: Bearer realm="callfs"')).toBe('WWW-Authenticate: Bearer realm="callfs"')
  })
})
