// The pure parts of the HTTP endpoint and the limits, tested exhaustively: Range parsing against
// RFC 9110's rules, presigned signatures (round trip; any changed field, method or expiry is
// refused), and token buckets (never more than capacity + rate × elapsed).
import test from 'ava';
import fc from 'fast-check';
import { isCairnError, type CairnError } from '../../src/common/errors.js';
import { parseRange } from '../../src/gateway/http.js';
import { TenantLimiter, TokenBucket } from '../../src/gateway/limits.js';
import { presignKey, signedPathAndQuery, verifyPresigned, type PresignClaims } from '../../src/gateway/presign.js';

test('parseRange: first-last, open-ended and suffix ranges; unsatisfiable and ignored forms', (t) => {
  fc.assert(
    fc.property(fc.nat(5000), fc.nat(6000), fc.nat(6000), (size, a, b) => {
      const r = parseRange(`bytes=${a}-${b}`, size);
      if (b < a) return r.kind === 'none';
      if (a >= size) return r.kind === 'unsatisfiable';
      return r.kind === 'range' && r.start === a && r.end === Math.min(b, size - 1) + 1;
    }),
  );
  fc.assert(
    fc.property(fc.nat(5000), fc.nat(6000), (size, n) => {
      const r = parseRange(`bytes=-${n}`, size);
      if (n === 0 || size === 0) return r.kind === 'unsatisfiable';
      return r.kind === 'range' && r.start === Math.max(0, size - n) && r.end === size;
    }),
  );
  fc.assert(
    fc.property(fc.nat(5000), fc.nat(6000), (size, a) => {
      const r = parseRange(`bytes=${a}-`, size);
      return a >= size ? r.kind === 'unsatisfiable' : r.kind === 'range' && r.start === a && r.end === size;
    }),
  );
  for (const h of [undefined, 'bytes=-', 'pages=0-1', 'bytes=a-b', 'bytes 0-1', 'bytes=0-1,x', 'bytes=0-1,9-3', `bytes=${Array.from({ length: 65 }, (_, i) => `${i * 3}-${i * 3}`).join(',')}`]) {
    t.deepEqual(parseRange(h, 1000), { kind: 'none' }, String(h).slice(0, 40));
  }
});

test('parseRange: several ranges are sorted, coalesced where they overlap or touch, and unsatisfiable ones dropped', (t) => {
  t.deepEqual(parseRange('bytes=0-1,3-4', 100), { kind: 'ranges', ranges: [{ start: 0, end: 2 }, { start: 3, end: 5 }] });
  t.deepEqual(parseRange('bytes=50-59, 0-9', 100), { kind: 'ranges', ranges: [{ start: 0, end: 10 }, { start: 50, end: 60 }] }, 'sorted');
  t.deepEqual(parseRange('bytes=0-9,5-14,15-19', 100), { kind: 'range', start: 0, end: 20 }, 'overlapping and touching ranges become one');
  t.deepEqual(parseRange('bytes=0-4,200-300,-5', 100), { kind: 'ranges', ranges: [{ start: 0, end: 5 }, { start: 95, end: 100 }] }, 'past the end dropped; suffix');
  t.deepEqual(parseRange('bytes=200-300,400-', 100), { kind: 'unsatisfiable' });
  t.deepEqual(parseRange(`bytes=${Array.from({ length: 64 }, (_, i) => `${i * 3}-${i * 3}`).join(',')}`, 1000).kind, 'ranges', '64 ranges are served');
  fc.assert(
    fc.property(fc.nat(3000), fc.array(fc.tuple(fc.nat(3500), fc.nat(400)), { minLength: 1, maxLength: 10 }), (size, specs) => {
      const r = parseRange(`bytes=${specs.map(([a, n]) => `${a}-${a + n}`).join(',')}`, size);
      const covered = new Set<number>();
      for (const [a, n] of specs) for (let i = a; i <= Math.min(a + n, size - 1); i++) covered.add(i);
      if (covered.size === 0) return r.kind === 'unsatisfiable';
      const parts = r.kind === 'range' ? [r] : r.kind === 'ranges' ? r.ranges : [];
      const got = new Set<number>();
      for (let i = 0; i < parts.length; i++) {
        const p = parts[i]!;
        if (p.start >= p.end || (i > 0 && p.start <= parts[i - 1]!.end)) return false;
        for (let x = p.start; x < p.end; x++) got.add(x);
      }
      return got.size === covered.size && [...covered].every((x) => got.has(x)) && (r.kind === 'range') === (parts.length === 1);
    }),
  );
});

const claimsArb = fc.record({
  method: fc.constantFrom<'GET' | 'PUT'>('GET', 'PUT'),
  tenant: fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,20}$/),
  path: fc.array(fc.stringMatching(/^[A-Za-z0-9 ._~é-]{1,12}$/).filter((s) => s !== '.' && s !== '..'), { minLength: 1, maxLength: 4 }).map((segs) => '/' + segs.join('/')),
  version: fc.nat(1000),
  expires: fc.integer({ min: 2_000_000_000, max: 2_100_000_000 }),
  user: fc.constantFrom('', 'bob@globex'),
});

function check(key: Buffer, method: string, pq: string, nowMs: number): PresignClaims {
  const u = new URL(pq, 'http://x');
  return verifyPresigned(key, method, u.pathname, u.searchParams, nowMs);
}

test('presigned URLs verify as signed and fail on any change, another method, another key or expiry', (t) => {
  const key = presignKey(Buffer.alloc(32, 7));
  const otherKey = presignKey(Buffer.alloc(32, 8));
  const now = 1_900_000_000_000;
  fc.assert(
    fc.property(claimsArb, fc.nat(5), (c, which) => {
      const pq = signedPathAndQuery(key, c);
      const back = check(key, c.method, pq, now);
      if (JSON.stringify(back) !== JSON.stringify(c)) return false;
      if (c.method === 'GET' && check(key, 'HEAD', pq, now).path !== c.path) return false;
      const refused = (f: () => unknown): boolean => {
        try {
          f();
          return false;
        } catch (err) {
          return isCairnError(err, 'CAIRN_PERMISSION_DENIED') || isCairnError(err, 'CAIRN_INVALID_ARGUMENT');
        }
      };
      const mutated: PresignClaims[] = [
        { ...c, tenant: c.tenant + 'x' },
        { ...c, path: c.path + 'x' },
        { ...c, version: c.version + 1 },
        { ...c, expires: c.expires + 1 },
        { ...c, user: c.user === '' ? 'eve@globex' : '' },
        { ...c, method: c.method === 'GET' ? 'PUT' : 'GET' },
      ];
      // A URL signed for other claims, presented with these claims' fields, is refused.
      const m = mutated[which]!;
      const forged = new URL(signedPathAndQuery(key, m), 'http://x');
      const original = new URL(pq, 'http://x');
      forged.searchParams.set('s', original.searchParams.get('s')!);
      return (
        refused(() => check(key, m.method, forged.pathname + forged.search, now)) &&
        refused(() => check(key, c.method === 'GET' ? 'PUT' : 'GET', pq, now)) &&
        refused(() => check(otherKey, c.method, pq, now)) &&
        refused(() => check(key, c.method, pq, c.expires * 1000)) &&
        refused(() => check(key, 'DELETE', pq, now))
      );
    }),
  );
  t.pass();
});

test('a token bucket never grants more than its capacity plus rate × elapsed time', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: 50 }), fc.array(fc.nat(300), { minLength: 1, maxLength: 200 }), (rate, capacity, gaps) => {
      let now = 0;
      const bucket = new TokenBucket(rate, capacity, now);
      let granted = 0;
      for (const gap of gaps) {
        now += gap;
        const wait = bucket.tryTake(1, now);
        if (wait === 0) granted++;
        else if (wait < 0) return false;
      }
      return granted <= capacity + (rate * now) / 1000 + 1e-9;
    }),
  );
  t.pass();
});

test('the limiter refuses with the delay after which the call is admitted', (t) => {
  let now = 0;
  const limiter = new TenantLimiter({ requestsPerSecond: 10, burstSeconds: 0.1 }, { now: () => now });
  limiter.admit('a');
  const err = t.throws(() => limiter.admit('a'));
  t.true(isCairnError(err, 'CAIRN_RATE_LIMITED'));
  t.is((err as CairnError | undefined)?.retryAfterMs, 100);
  limiter.admit('b');
  now += 99;
  t.throws(() => limiter.admit('a'));
  now += 1;
  t.notThrows(() => limiter.admit('a'));
  // Bytes: a charge beyond the bucket puts the tenant in debt until repaid.
  const bytes = new TenantLimiter({ requestsPerSecond: 0, bytesPerSecond: 1000, burstSeconds: 1 }, { now: () => now });
  t.is(bytes.charge('a', 3000), 2000);
  t.true(isCairnError(t.throws(() => bytes.admit('a')), 'CAIRN_RATE_LIMITED'));
  now += 2000;
  t.notThrows(() => bytes.admit('a'));
  t.throws(() => new TenantLimiter({ bytesPerSecond: Number.NaN }), { instanceOf: RangeError });
});
