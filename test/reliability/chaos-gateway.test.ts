// kill -9 a gateway mid-upload on a `cairn dev cluster` (three block nodes, RF 3, W 2, two
// gateways): the client resumes through the other gateway with its chunk cache, the file is
// byte-identical, and what was acknowledged before the kill is not sent again.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/cluster.js';
import { clientFor, sha256, startDevCluster } from './harness.js';

test('kill -9 a gateway mid-upload: the client resumes through another gateway, byte-identical', async (t) => {
  t.timeout(170_000);
  const cluster = await startDevCluster(t, { gateways: 2 });
  const [c1, c2] = [await clientFor(t, cluster, 0), await clientFor(t, cluster, 1)];
  const dir = tempDir(t, 'cairn-chaos-gw-');
  const data = randomBytes(24 * 1024 * 1024 + 13);
  const src = join(dir, 'big.bin');
  writeFileSync(src, data);
  const cacheDir = join(dir, 'cache');
  const streams = 4;
  let sentBefore = 0;
  let killed: Promise<void> | undefined;
  const first = c1.upload(src, '/chaos/big.bin', {
    cacheDir,
    streams,
    retries: 0,
    batchBytes: 1,
    onSent: (n) => {
      sentBefore += n;
      if (sentBefore >= 60 && killed === undefined) killed = cluster.kill('gateway-1');
    },
  });
  await t.throwsAsync(first);
  await killed;
  const res = await c2.upload(src, '/chaos/big.bin', { cacheDir, streams });
  t.is(res.info.size, data.length);
  const parts: Buffer[] = [];
  for await (const p of c2.read('/chaos/big.bin')) if ('data' in p) parts.push(p.data);
  t.is(sha256(Buffer.concat(parts)), sha256(data));
  const resent = sentBefore + res.chunksSent - res.chunks;
  t.log(`sent ${sentBefore} chunks before the kill, ${res.chunksSent} of ${res.chunks} after; resent ${resent}`);
  t.true(sentBefore < res.chunks, 'the kill came before the end');
  t.true(resent <= streams, `no more than one chunk per stream is sent twice (resent ${resent})`);
});
