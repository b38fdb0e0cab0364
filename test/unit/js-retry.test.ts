import { describe, expect, it } from 'vitest'
import { isTransientJsError, jsRetry } from '../../core/js-retry.js'
import { NotFoundError, TransportError } from '../../proto/errors.js'

describe('bounded retries of JetStream calls', () => {
  it('treats the answers of a leader election or a reconnect as transient, and nothing else', () => {
    expect(isTransientJsError(new Error('timeout'))).toBe(true)
    expect(isTransientJsError(new Error('jetstream is not enabled'))).toBe(true)
    expect(isTransientJsError(Object.assign(new Error('JetStream system temporarily unavailable'), { api_error: { err_code: 10008 } }))).toBe(true)
    expect(isTransientJsError(new Error('Permissions Violation for Publish to "$JS.API.INFO"'))).toBe(false)
    expect(isTransientJsError(new Error('stream not found'))).toBe(false)
    expect(isTransientJsError(new Error('wrong last sequence: 4'))).toBe(false)
    expect(isTransientJsError(new Error('connection closed'))).toBe(false)
    expect(isTransientJsError(new NotFoundError('FNMESH_ERR_NOT_INITIALIZED', 'x'))).toBe(false)
    expect(isTransientJsError(Object.assign(new TransportError('FNMESH_ERR_NATS_UNAVAILABLE', 'x'), { transient: true }))).toBe(true)
  })

  it('retries a transient failure until the call succeeds', async () => {
    let calls = 0
    const v = await jsRetry(async () => { if (++calls < 3) throw new Error('no responders'); return 'ok' }, { firstPauseMs: 1 })
    expect(v).toBe('ok')
    expect(calls).toBe(3)
  })

  it('gives up after the budget with the last error, and at once on any other error', async () => {
    const start = Date.now()
    await expect(jsRetry(async () => { throw new Error('timeout') }, { budgetMs: 300, firstPauseMs: 50 })).rejects.toThrow('timeout')
    expect(Date.now() - start).toBeLessThan(1500)
    let calls = 0
    await expect(jsRetry(async () => { calls++; throw new Error('stream not found') })).rejects.toThrow('stream not found')
    expect(calls).toBe(1)
  })
})
