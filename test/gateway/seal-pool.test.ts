// The seal pool gives exactly what inline sealing gives (sealing is deterministic per tenant key
// and chunk), in order, for batches sealed inline and batches spread over worker threads.
import test from 'ava';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { seal, unseal } from '../../src/gateway/seal.js';
import { sealMany } from '../../src/gateway/seal-pool.js';

const sha = (b: Buffer): Buffer => createHash('sha256').update(b).digest();

for (const [name, count, size] of [['small (inline)', 3, 10_000], ['large (worker threads)', 200, 64 * 1024]] as const) {
  test(`${name} batches seal exactly as seal() does, in order`, async (t) => {
    const key = randomBytes(32);
    const items = Array.from({ length: count }, (_, i) => {
      // Every third chunk compresses, so both codecs cross the thread boundary.
      const data = i % 3 === 0 ? Buffer.alloc(size + randomInt(0, 1000), i) : randomBytes(size + randomInt(0, 1000));
      return { hash: sha(data), data };
    });
    const out = await sealMany(key, items);
    t.is(out.length, items.length);
    out.forEach((o, i) => {
      const want = seal(key, items[i]!.hash, items[i]!.data);
      t.true(Buffer.isBuffer(o.sealed) && Buffer.isBuffer(o.address));
      t.true(o.address.equals(want.address), `address of item ${i}`);
      t.true(o.sealed.equals(want.sealed));
      t.true(unseal(key, items[i]!.hash, o.sealed).equals(items[i]!.data));
    });
  });
}

test('chunks cut from one large message, and chunks larger than a task, seal exactly; the caller keeps its buffers', async (t) => {
  const key = randomBytes(32);
  // As UploadChunks hands them over: views into one message buffer, plus two 4 MiB chunks.
  const message = randomBytes(6 * 1024 * 1024);
  const items = [
    ...Array.from({ length: 40 }, (_, i) => message.subarray(i * 100_000, i * 100_000 + 60_000 + i)),
    randomBytes(4 * 1024 * 1024),
    Buffer.alloc(4 * 1024 * 1024, 7),
  ].map((data) => ({ hash: sha(data), data }));
  const copies = items.map((c) => Buffer.from(c.data));
  const out = await sealMany(key, items);
  t.is(out.length, items.length);
  out.forEach((o, i) => {
    t.true(o.address.equals(seal(key, items[i]!.hash, items[i]!.data).address), `address of item ${i}`);
    t.true(unseal(key, items[i]!.hash, o.sealed).equals(copies[i]!));
    // The address is a buffer of its own, not a view pinning the worker's whole result.
    t.is(o.address.length, 32);
    t.not(o.address.buffer, o.sealed.buffer);
  });
  // Nothing the caller passed was transferred away (a detached buffer reads as empty).
  t.is(message.length, 6 * 1024 * 1024);
  items.forEach((c, i) => t.true(c.data.equals(copies[i]!), `item ${i} intact`));
});

for (const [name, count] of [['inline', 4], ['worker threads', 60]] as const) {
  test(`with verification (${name}), the first chunk whose bytes do not match its hash fails the batch`, async (t) => {
    const key = randomBytes(32);
    const items = Array.from({ length: count }, () => {
      const data = randomBytes(64 * 1024);
      return { hash: sha(data), data };
    });
    // Verified and sealed as without verification when every hash matches.
    const ok = await sealMany(key, items, { mismatch: (i) => new Error(`bad ${i}`) });
    ok.forEach((o, i) => t.true(o.address.equals(seal(key, items[i]!.hash, items[i]!.data).address)));
    const bad = new Set([count - 3, count - 1]);
    const tampered = items.map((c, i) => (bad.has(i) ? { hash: c.hash, data: randomBytes(c.data.length) } : c));
    await t.throwsAsync(sealMany(key, tampered, { mismatch: (i) => new Error(`bad ${i}`) }), { message: `bad ${count - 3}` });
  });
}
