// Sealing: convergent within a tenant, opaque across tenants, compressed only when worth it,
// authenticated (tampering, swapping blocks or keys is detected), keys wrapped by the master key.
import test from 'ava';
import { createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { SEAL_OVERHEAD, newTenantKey, seal, unseal, unwrapKey, wrapKey } from '../../src/gateway/seal.js';

const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest();

test('seal/unseal round-trips any chunk; the address is sha256 of the sealed bytes', (t) => {
  const key = newTenantKey();
  t.notThrows(() =>
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 70_000 }), (plain) => {
        const s = seal(key, sha(plain), plain);
        return s.address.equals(sha(s.sealed)) && unseal(key, sha(plain), s.sealed).equals(Buffer.from(plain));
      }),
      { numRuns: 60 },
    ),
  );
});

test('convergent inside a tenant, different across tenants', (t) => {
  const plain = randomBytes(65_536);
  const a = newTenantKey();
  const b = newTenantKey();
  t.true(seal(a, sha(plain), plain).address.equals(seal(a, sha(plain), plain).address));
  t.false(seal(a, sha(plain), plain).address.equals(seal(b, sha(plain), plain).address));
});

test('compression is used when it saves at least 10%, skipped otherwise', (t) => {
  const key = newTenantKey();
  const text = Buffer.from('the quick brown fox jumps over the lazy dog\n'.repeat(2000));
  const s = seal(key, sha(text), text);
  t.is(s.codec, 'snappy');
  t.true(s.sealed.length < text.length / 2);
  const random = randomBytes(65_536);
  const r = seal(key, sha(random), random);
  t.is(r.codec, 'none');
  t.is(r.sealed.length, random.length + SEAL_OVERHEAD);
});

test('large chunks are compressed when a sample of them compresses, whatever their head looks like', (t) => {
  const key = newTenantKey();
  // Incompressible head, compressible body: the spread sample sees the body.
  const mixed = Buffer.concat([randomBytes(4096), Buffer.from('column,value,another column\n'.repeat(4000))]);
  t.is(seal(key, sha(mixed), mixed).codec, 'snappy');
  // Mostly random with a short compressible run: not worth it, and the rule says so too.
  const mostlyRandom = Buffer.concat([randomBytes(60_000), Buffer.alloc(2000)]);
  const r = seal(key, sha(mostlyRandom), mostlyRandom);
  t.is(r.codec, 'none');
  t.true(unseal(key, sha(mostlyRandom), r.sealed).equals(mostlyRandom));
});

test('evenly spread bytes skip compression unless they repeat within the sample', (t) => {
  const key = newTenantKey();
  // One random 1 KiB block, repeated: its bytes look random, but the sample's repeats show.
  const block = randomBytes(1024);
  const repeated = Buffer.concat(Array.from({ length: 64 }, () => block));
  const s = seal(key, sha(repeated), repeated);
  t.is(s.codec, 'snappy');
  t.true(unseal(key, sha(repeated), s.sealed).equals(repeated));
  // Random chunks of every size the chunker makes stay uncompressed.
  for (const size of [32 * 1024, 64 * 1024, 100_000, 256 * 1024]) {
    const random = randomBytes(size);
    t.is(seal(key, sha(random), random).codec, 'none', `random chunk of ${size} bytes`);
  }
});

test('the block format is fixed: HKDF-SHA256 key and nonce, [1][codec] header and chunk name as AAD, tag last', (t) => {
  // Decrypts with an independent implementation of the derivation (node's hkdfSync), so a change
  // to how seal derives keys cannot strand the blocks already stored.
  const key = newTenantKey();
  for (const plain of [randomBytes(70_000), Buffer.from('compress me '.repeat(500))]) {
    const hash = sha(plain);
    const s = seal(key, hash, plain);
    const okm = Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), Buffer.concat([Buffer.from('cairn/v1/chunk'), hash]), 44));
    const d = createDecipheriv('aes-256-gcm', okm.subarray(0, 32), okm.subarray(32, 44));
    d.setAAD(Buffer.concat([s.sealed.subarray(0, 2), hash]));
    d.setAuthTag(s.sealed.subarray(s.sealed.length - 16));
    const body = Buffer.concat([d.update(s.sealed.subarray(2, s.sealed.length - 16)), d.final()]);
    t.is(s.sealed[0], 1);
    t.is(s.sealed[1], s.codec === 'snappy' ? 1 : 0);
    if (s.codec === 'none') t.true(body.equals(plain));
    else t.true(body.length < plain.length);
  }
});

test('a flipped bit, another tenant key, or another chunk name is DATA_LOSS', (t) => {
  const key = newTenantKey();
  const plain = randomBytes(10_000);
  const s = seal(key, sha(plain), plain);
  for (const i of [0, 1, 2, 500, s.sealed.length - 1]) {
    const bad = Buffer.from(s.sealed);
    bad[i] = (bad[i] ?? 0) ^ 0x01;
    t.is(t.throws(() => unseal(key, sha(plain), bad))?.name, 'CairnError', `byte ${i}`);
  }
  t.throws(() => unseal(newTenantKey(), sha(plain), s.sealed), { message: /authentication/ });
  t.throws(() => unseal(key, sha(randomBytes(5)), s.sealed), { message: /authentication/ });
  t.throws(() => unseal(key, sha(plain), Buffer.alloc(3)), { message: /not a sealed chunk/ });
});

test('tenant keys are wrapped by the master key and bound to their tenant', (t) => {
  const master = randomBytes(32);
  const tk = newTenantKey();
  const wrapped = wrapKey(master, tk, 'acme');
  t.true(unwrapKey(master, wrapped, 'acme').equals(tk));
  t.throws(() => unwrapKey(randomBytes(32), wrapped, 'acme'));
  t.throws(() => unwrapKey(master, wrapped, 'other'));
  t.throws(() => seal(randomBytes(16), sha(Buffer.alloc(1)), Buffer.alloc(1)), { instanceOf: RangeError });
});
