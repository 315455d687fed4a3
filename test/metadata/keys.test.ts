// Key tuples: parts joined by 0x00, strings as UTF-8 — the same bytes as concatenating the parts.
import test from 'ava';
import fc from 'fast-check';
import { tuple } from '../../src/metadata/model/keys.js';

const reference = (...parts: Array<string | Buffer>): Buffer => Buffer.concat(parts.flatMap((p, i) => [...(i > 0 ? [Buffer.of(0)] : []), typeof p === 'string' ? Buffer.from(p, 'utf8') : p]));

test('tuple writes the parts in place exactly as concatenation would', (t) => {
  // ASCII strings on both sides of the 64-character fast path, and any Unicode (lone surrogates too).
  const part = fc.oneof(fc.string({ unit: 'grapheme', maxLength: 20 }), fc.string({ unit: 'binary', maxLength: 80 }), fc.string({ minLength: 60, maxLength: 70 }), fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)));
  t.notThrows(() =>
    fc.assert(
      fc.property(fc.array(part, { maxLength: 6 }), (parts) => tuple(...parts).equals(reference(...parts))),
      { numRuns: 1000 },
    ),
  );
  t.is(tuple().length, 0);
  t.deepEqual([...tuple('a', Buffer.of(1, 2), 'é')], [0x61, 0, 1, 2, 0, 0xc3, 0xa9]);
});
