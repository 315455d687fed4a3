// Every metric the chart's alert rules and Grafana dashboard name is exported by a running
// cluster: real metadata, block-node, gateway and media processes are scraped after a file goes
// through them, and each name must appear as a metric family (histograms by their _bucket,
// _sum and _count series) in some process's /metrics.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import test from 'ava';
import { parse } from 'yaml';
import { CairnClient } from '../../src/client/index.js';
import { runCli, startServer, tempDir } from '../helpers/cluster.js';
import { waitFor } from '../cluster/harness.js';

const ROOT = join(import.meta.dirname, '..', '..');
/** Not Cairn's: the disk forecast uses the kubelet's volume stats (Cairn exports no capacity). */
const EXTERNAL = new Set(['kubelet_volume_stats_available_bytes', 'kubelet_volume_stats_capacity_bytes']);

function exprs(): string[] {
  const rules = parse(readFileSync(join(ROOT, 'charts', 'cairn', 'files', 'alerts.yaml'), 'utf8')) as { rules: { expr: string }[] }[];
  const out = rules.flatMap((g) => g.rules.map((r) => r.expr));
  const walk = (x: unknown): void => {
    if (Array.isArray(x)) x.forEach(walk);
    else if (typeof x === 'object' && x !== null) {
      for (const [k, v] of Object.entries(x)) {
        if (k === 'expr' && typeof v === 'string') out.push(v);
        else walk(v);
      }
    }
  };
  walk(JSON.parse(readFileSync(join(ROOT, 'charts', 'cairn', 'files', 'dashboard.json'), 'utf8')));
  return out;
}

/** Families on a /metrics page: name → type. */
function families(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
}

test('every metric the alerts and the dashboard use is exported by a running cluster', async (t) => {
  t.timeout(170_000);
  const root = tempDir(t, 'cairn-scrape-');
  const secret = join(root, 'auth.key');
  const shared = ['--auth-secret-file', secret];
  // The secret file is created by the first process that loads it: start metadata first.
  const metadata = await startServer(t, [...shared, '--replication-factor', '1'], { role: 'metadata', dataDir: join(root, 'm') });
  const blocknode = await startServer(t, [...shared, '--metadata-addr', metadata.grpc, '--node-id', 'b1', '--heartbeat-interval-ms', '300', '--reserve-bytes', '0', '--scrub-interval-ms', '0'], { role: 'blocknode', dataDir: join(root, 'b1') });
  const gateway = await startServer(t, [...shared, '--metadata-addr', metadata.grpc], { role: 'gateway', dataDir: join(root, 'g') });
  const media = await startServer(t, [...shared, '--metadata-addr', metadata.grpc], { role: 'media', dataDir: join(root, 'media') });
  const minted = await runCli(['token', 'create', '--auth-secret-file', secret, '--tenant', 'acme', '--role', 'user']);
  t.is(minted.code, 0, minted.stderr);
  const client = new CairnClient({ endpoint: gateway.grpc, token: minted.stdout.trim() });
  t.teardown(() => client.close());
  // Traffic, so labelled series exist where the code only creates them on use.
  await waitFor('the block node in the map', async () => {
    const data = randomBytes(200 * 1024);
    await client.putStream(Readable.from([data]), '/scrape/a.bin', { size: data.length });
    return true;
  }, 60_000, 500);
  for await (const _ of client.read('/scrape/a.bin')) void _;

  const exported = new Map<string, string>();
  for (const s of [metadata, blocknode, gateway, media]) {
    const res = await fetch(`${s.http}/metrics`);
    t.is(res.status, 200);
    for (const [name, type] of families(await res.text())) exported.set(name, type);
  }
  const named = new Set(exprs().flatMap((e) => [...e.matchAll(/\b((?:cairn|grpc_server|kubelet)_[a-z_]+)/g)].map((m) => m[1]!)));
  t.true(named.size >= 10, [...named].join());
  const missing: string[] = [];
  for (const name of [...named].sort()) {
    if (EXTERNAL.has(name)) continue;
    const histogram = /^(.*)_(bucket|sum|count)$/.exec(name);
    if (histogram !== null && exported.get(histogram[1]!) === 'histogram') continue;
    if (exported.has(name)) continue;
    missing.push(name);
  }
  t.deepEqual(missing, [], `exported families: ${[...exported.keys()].filter((n) => n.startsWith('cairn_')).sort().join(', ')}`);
  t.true(named.has('cairn_media_jobs_failed_total') && exported.has('cairn_media_jobs_failed_total'));
});
