import { describe, expect, it } from 'vitest'
import { decode, encode } from '../../proto/codec.js'
import {
  AuthError, CapacityError, CATALOGUE, FnmeshError, fnmeshError, formatErrorLine, fromErrorInfo, FunctionError, InputError,
  InternalError, isErrorCode, NotFoundError, toErrorInfo, TransportError, UnsupportedError, UsageError,
  type ErrorCode, type ErrorFamily
} from '../../proto/errors.js'

const CLASS_OF: Record<ErrorFamily, typeof FnmeshError> = {
  usage: UsageError,
  input: InputError,
  'not-found': NotFoundError,
  capacity: CapacityError,
  transport: TransportError,
  function: FunctionError,
  unsupported: UnsupportedError,
  internal: InternalError,
  auth: AuthError
}
const CODES = Object.keys(CATALOGUE) as ErrorCode[]

describe('error catalogue', () => {
  it('names every code FNMESH_ERR_ followed by capitals and underscores', () => {
    expect(CODES.length).toBeGreaterThanOrEqual(25)
    for (const code of CODES) expect(code).toMatch(/^FNMESH_ERR_[A-Z_]+$/)
  })

  it('gives every code a one-line summary that starts with a capital and has no trailing period', () => {
    for (const code of CODES) {
      const { summary } = CATALOGUE[code]
      expect(summary, code).toMatch(/^[A-Z]/)
      expect(summary, code).not.toMatch(/\.$|\n/)
    }
  })

  it.each(CODES)('builds %s as the class of its family', (code) => {
    const err = fnmeshError(code, `Something about "${code}"`)
    const Class = CLASS_OF[CATALOGUE[code].family]
    expect(err).toBeInstanceOf(Class)
    expect(err).toBeInstanceOf(FnmeshError)
    expect(err).toBeInstanceOf(Error)
    expect(err.constructor).toBe(Class)
    expect(err.code).toBe(code)
    expect(err.family).toBe(CATALOGUE[code].family)
    expect(err.name).toBe(Class.name)
    expect(err.errorType).toBe(Class.name)
    expect(err.message).toBe(`Something about "${code}"`)
  })

  it('maps the families the README promises to the codes that belong to them', () => {
    expect(fnmeshError('FNMESH_ERR_TIMEOUT', 'x')).toBeInstanceOf(FunctionError)
    expect(fnmeshError('FNMESH_ERR_BUSY', 'x')).toBeInstanceOf(CapacityError)
    expect(fnmeshError('FNMESH_ERR_DISK_FULL', 'x')).toBeInstanceOf(CapacityError)
    expect(fnmeshError('FNMESH_ERR_METER_UNAVAILABLE', 'x')).toBeInstanceOf(InternalError)
    expect(fnmeshError('FNMESH_ERR_DECODE', 'x')).toBeInstanceOf(InputError)
    expect(fnmeshError('FNMESH_ERR_NOT_FOUND', 'x')).toBeInstanceOf(NotFoundError)
    expect(fnmeshError('FNMESH_ERR_BAD_USAGE', 'x')).toBeInstanceOf(UsageError)
    expect(fnmeshError('FNMESH_ERR_UNSUPPORTED', 'x')).toBeInstanceOf(UnsupportedError)
    expect(fnmeshError('FNMESH_ERR_CLIENT_TIMEOUT', 'x')).toBeInstanceOf(TransportError)
  })

  it('passes the cause through', () => {
    const cause = new Error('disk full')
    expect(fnmeshError('FNMESH_ERR_METER_UNAVAILABLE', 'Cannot record usage', { cause }).cause).toBe(cause)
    expect('cause' in fnmeshError('FNMESH_ERR_INTERNAL', 'x')).toBe(false)
  })

  it('tells catalogue codes from other strings', () => {
    expect(isErrorCode('FNMESH_ERR_TIMEOUT')).toBe(true)
    expect(isErrorCode('FNMESH_ERR_NOPE')).toBe(false)
    expect(isErrorCode('toString')).toBe(false)
    expect(isErrorCode(undefined)).toBe(false)
  })

  it.each(CODES)('keeps code, errorType, message and trace of %s through the wire', (code) => {
    const trace = ['Error: boom', '    at handler (/var/task/index.js:1:7)']
    const original = fnmeshError(code, `Line one of ${code}`, { errorType: 'Runtime.Custom', trace })
    const info = decode('ErrorInfo', encode('ErrorInfo', toErrorInfo(original)))
    const rebuilt = fromErrorInfo(info)
    expect(rebuilt).toBeInstanceOf(CLASS_OF[CATALOGUE[code].family])
    expect(rebuilt.code).toBe(code)
    expect(rebuilt.errorType).toBe('Runtime.Custom')
    expect(rebuilt.message).toBe(`Line one of ${code}`)
    expect(rebuilt.trace).toEqual(trace)
  })

  it('serialises to the Lambda error shape plus the code', () => {
    const err = new FunctionError('FNMESH_ERR_FUNCTION_ERROR', 'boom', { errorType: 'TypeError', trace: ['TypeError: boom'] })
    expect(JSON.parse(JSON.stringify(err))).toEqual({ errorType: 'TypeError', errorMessage: 'boom', trace: ['TypeError: boom'], code: 'FNMESH_ERR_FUNCTION_ERROR' })
  })

  it('rebuilds an unknown code as FNMESH_ERR_INTERNAL keeping its text', () => {
    const err = fromErrorInfo({ code: 'FNMESH_ERR_FROM_THE_FUTURE', errorType: 'Future', errorMessage: 'Something new went wrong', trace: ['t'] })
    expect(err).toBeInstanceOf(InternalError)
    expect(err.code).toBe('FNMESH_ERR_INTERNAL')
    expect(err.errorType).toBe('Future')
    expect(err.message).toBe('Something new went wrong')
    expect(err.trace).toEqual(['t'])
  })

  it('rebuilds a missing or empty ErrorInfo with the catalogue summary as message', () => {
    for (const info of [null, undefined, {}, { code: '', errorMessage: '' }]) {
      const err = fromErrorInfo(info)
      expect(err.code).toBe('FNMESH_ERR_INTERNAL')
      expect(err.message).toBe(CATALOGUE.FNMESH_ERR_INTERNAL.summary)
      expect(err.trace).toEqual([])
    }
    expect(fromErrorInfo({ code: 'FNMESH_ERR_BUSY' }).message).toBe(CATALOGUE.FNMESH_ERR_BUSY.summary)
  })

  it('turns a plain Error into FNMESH_ERR_INTERNAL keeping its name, message and stack', () => {
    const err = new RangeError('index 9 is out of range')
    const info = toErrorInfo(err)
    expect(info.code).toBe('FNMESH_ERR_INTERNAL')
    expect(info.errorType).toBe('RangeError')
    expect(info.errorMessage).toBe('index 9 is out of range')
    expect(info.trace[0]).toBe('RangeError: index 9 is out of range')
    expect(info.trace.length).toBeGreaterThan(1)
  })

  it.each([
    ['a string', 'disk on fire', 'disk on fire'],
    ['a number', 42, '42'],
    ['undefined', undefined, 'undefined'],
    ['null', null, 'null'],
    ['a plain object', { code: 'FNMESH_ERR_TIMEOUT' }, '[object Object]']
  ])('turns a thrown %s into FNMESH_ERR_INTERNAL', (_what, value, message) => {
    const info = toErrorInfo(value)
    expect(info.code).toBe('FNMESH_ERR_INTERNAL')
    expect(info.errorType).toBe('Error')
    expect(info.errorMessage).toBe(message)
    expect(fromErrorInfo(info)).toBeInstanceOf(InternalError)
  })

  it('formats an error as one line: code, colon, message', () => {
    const err = new NotFoundError('FNMESH_ERR_NOT_FOUND', 'Function "resize" is not deployed')
    expect(formatErrorLine(err)).toBe('FNMESH_ERR_NOT_FOUND: Function "resize" is not deployed')
  })

  it('formats a multi-line message on one line', () => {
    const line = formatErrorLine(new FunctionError('FNMESH_ERR_FUNCTION_ERROR', 'first line\n   second line\r\nthird'))
    expect(line).toBe('FNMESH_ERR_FUNCTION_ERROR: first line second line third')
    expect(line).not.toMatch(/[\r\n]/)
    expect(formatErrorLine('plain\nthrow')).toBe('FNMESH_ERR_INTERNAL: plain throw')
  })
})
