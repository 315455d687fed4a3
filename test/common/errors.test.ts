// Every registered error code is documented in docs/errors.md with its real gRPC status and
// HTTP code, and status details round-trip through google.rpc.Status.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Metadata, status } from '@grpc/grpc-js';
import { CairnError, ERROR_CODES, isErrorCode, type ErrorCode } from '../../src/common/errors.js';
import { decodeStatus, encodeStatus, fromServiceError, toServiceError } from '../../src/common/status.js';
import { EXIT, exitCodeFor } from '../../src/cli/exit.js';
import { ROOT } from '../helpers/cluster.js';

const doc = readFileSync(join(ROOT, 'docs', 'errors.md'), 'utf8');
const rows = new Map<string, string[]>();
for (const line of doc.split('\n')) {
  const m = /^\| `(CAIRN_[A-Z_]+)` \|(.*)\|$/.exec(line);
  if (m?.[1] !== undefined && m[2] !== undefined) rows.set(m[1], m[2].split('|').map((c) => c.trim()));
}

test('every registered error code is documented with its gRPC status, HTTP code and CLI exit', (t) => {
  const undocumented = Object.keys(ERROR_CODES).filter((c) => !rows.has(c));
  t.deepEqual(undocumented, [], `undocumented codes in docs/errors.md: ${undocumented.join(', ')}`);
  for (const [code, spec] of Object.entries(ERROR_CODES)) {
    const [grpcName, http, retry, , exit] = rows.get(code) ?? [];
    t.is(grpcName, status[spec.grpc], `${code}: gRPC status`);
    t.is(Number(http), spec.http, `${code}: HTTP status`);
    t.is(retry, spec.retryable ? 'yes' : 'no', `${code}: retryable`);
    t.is(Number(exit), exitCodeFor(new CairnError(code as ErrorCode, 'x')), `${code}: CLI exit code`);
  }
});

test('the docs document no code that does not exist', (t) => {
  t.deepEqual([...rows.keys()].filter((c) => !isErrorCode(c)), []);
});

test('a CairnError survives the trip through google.rpc.Status with ErrorInfo, RetryInfo and BadRequest', (t) => {
  const err = new CairnError('CAIRN_RATE_LIMITED', 'slow down', { retryAfterMs: 1500, metadata: { limit: '100' }, fieldViolations: [{ field: 'path', description: 'too long' }] });
  const decoded = decodeStatus(encodeStatus(err));
  t.is(decoded.code, status.RESOURCE_EXHAUSTED);
  t.is(decoded.reason, 'CAIRN_RATE_LIMITED');
  t.is(decoded.domain, 'cairn.dev');
  t.is(decoded.retryAfterMs, 1500);
  t.deepEqual(decoded.metadata, { limit: '100' });
  t.deepEqual(decoded.fieldViolations, [{ field: 'path', description: 'too long' }]);
  const back = fromServiceError({ ...toServiceError(err), message: 'x', name: 'Error' });
  t.is(back.code, 'CAIRN_RATE_LIMITED');
  t.is(back.retryAfterMs, 1500);
});

test('an error without Cairn details falls back on its gRPC status', (t) => {
  t.is(fromServiceError({ code: status.UNAVAILABLE, details: 'connect failed', metadata: new Metadata() }).code, 'CAIRN_UNAVAILABLE');
  t.is(fromServiceError(new Error('boom')).code, 'CAIRN_INTERNAL');
});

test('unknown codes are a programmer error', (t) => {
  t.throws(() => new CairnError('CAIRN_NOPE' as ErrorCode, 'x'), { instanceOf: TypeError });
  t.is(exitCodeFor(new CairnError('CAIRN_NOT_FOUND', 'x')), EXIT.NOT_FOUND);
});
