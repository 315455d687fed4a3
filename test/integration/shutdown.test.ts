// SIGTERM is a graceful stop: calls already in flight finish (and their data is durable),
// then the process exits 0.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ServiceError } from '@grpc/grpc-js';
import { CairnClient } from '../../src/client/index.js';
import { bearer, filesClient } from '../helpers/grpc.js';
import { startServer, tempDir } from '../helpers/cluster.js';

test('SIGTERM finishes in-flight calls and exits 0', async (t) => {
  const dataDir = tempDir(t);
  const server = await startServer(t, [], { dataDir });
  const files = filesClient(server.grpc);
  t.teardown(() => files.close());
  const parts = Array.from({ length: 8 }, () => randomBytes(512 * 1024));
  let uploadError: ServiceError | null = null;
  const done = new Promise<void>((resolve) => {
    const call = files.UploadFile(bearer(server.token), (err) => {
      uploadError = err;
      resolve();
    });
    call.write({ header: { path: '/inflight.bin', size: parts.length * 512 * 1024 } });
    call.write({ data: parts[0] });
    // Signal while the stream is open, then keep sending: the call must still complete.
    sleep(300)
      .then(async () => {
        server.proc.kill('SIGTERM');
        await sleep(500);
        for (const p of parts.slice(1)) call.write({ data: p });
        call.end();
      })
      .catch(() => undefined);
  });
  await done;
  t.is(uploadError, null);
  t.is(await server.exited, 0, server.stderr());

  // Restart on the same data: the upload acknowledged during shutdown is there, intact.
  const again = await startServer(t, [], { dataDir });
  const client = new CairnClient({ endpoint: again.grpc, token: again.token });
  t.teardown(() => client.close());
  const chunks: Buffer[] = [];
  for await (const part of client.read('/inflight.bin')) if ('data' in part) chunks.push(part.data);
  t.true(Buffer.concat(chunks).equals(Buffer.concat(parts)));
});
