// TLS on every listener from certificate files, and mTLS when a CA is configured: a client that
// trusts the CA round-trips; one without a client certificate is refused.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { CairnClient } from '../../src/client/index.js';
import { startServer, tempDir } from '../helpers/cluster.js';
import { makePki } from '../helpers/pki.js';

async function roundTrip(client: CairnClient, path: string): Promise<boolean> {
  const data = randomBytes(300_000);
  const { Readable } = await import('node:stream');
  await client.putStream(Readable.from([data]), path, { size: data.length });
  const parts: Buffer[] = [];
  for await (const p of client.read(path)) if ('data' in p) parts.push(p.data);
  return Buffer.concat(parts).equals(data);
}

function httpsStatus(url: string, ca: string, cert?: { cert: string; key: string }): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { servername: 'localhost', ca: readFileSync(ca), ...(cert ? { cert: readFileSync(cert.cert), key: readFileSync(cert.key) } : {}) }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

test('TLS: a client trusting the CA round-trips; one trusting another CA is refused', async (t) => {
  const pki = makePki(tempDir(t));
  const server = await startServer(t, ['--tls-cert', pki.serverCert, '--tls-key', pki.serverKey]);
  t.true(server.http.startsWith('https://'));
  const good = new CairnClient({ endpoint: server.grpc, token: server.token, tlsCa: pki.ca });
  t.teardown(() => good.close());
  t.true(await roundTrip(good, '/tls/a.bin'));
  const wrongCa = new CairnClient({ endpoint: server.grpc, token: server.token, tlsCa: pki.otherCa });
  t.teardown(() => wrongCa.close());
  const err = await t.throwsAsync(wrongCa.stat('/tls/a.bin'));
  t.is((err as { code?: string }).code, 'CAIRN_UNAVAILABLE');
  const plain = new CairnClient({ endpoint: server.grpc, token: server.token });
  t.teardown(() => plain.close());
  await t.throwsAsync(plain.stat('/tls/a.bin'));
  t.is(await httpsStatus(`${server.http}/healthz`, pki.ca), 200);
});

test('mTLS: a client with a certificate from the CA round-trips; one without is refused', async (t) => {
  const pki = makePki(tempDir(t));
  const server = await startServer(t, ['--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-ca', pki.ca]);
  const withCert = new CairnClient({ endpoint: server.grpc, token: server.token, tlsCa: pki.ca, tlsCert: pki.clientCert, tlsKey: pki.clientKey });
  t.teardown(() => withCert.close());
  t.true(await roundTrip(withCert, '/mtls/a.bin'));
  const withoutCert = new CairnClient({ endpoint: server.grpc, token: server.token, tlsCa: pki.ca });
  t.teardown(() => withoutCert.close());
  const err = await t.throwsAsync(withoutCert.stat('/mtls/a.bin'));
  t.is((err as { code?: string }).code, 'CAIRN_UNAVAILABLE');
  t.is(await httpsStatus(`${server.http}/metrics`, pki.ca, { cert: pki.clientCert, key: pki.clientKey }), 200);
  await t.throwsAsync(httpsStatus(`${server.http}/metrics`, pki.ca));
});

test('plaintext on a non-loopback address is refused unless allowed', async (t) => {
  const err = await t.throwsAsync(startServer(t, ['--host', '0.0.0.0']));
  t.regex(err?.message ?? '', /refusing to serve plaintext/);
});
