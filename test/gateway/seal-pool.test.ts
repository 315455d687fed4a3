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
