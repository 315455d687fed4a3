// Reliability-test harness: the user-facing DevCluster (`cairn dev cluster`) started from source
// for a test, torn down with it, plus an acknowledged-writes ledger that checks every byte.
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { Readable } from 'node:stream';
import { credentials } from '@grpc/grpc-js';
import { ServiceTokenSource, loadOrCreateSecret } from '../../src/common/auth.js';
import { BlockClient } from '../../src/blocknode/index.js';
import { CairnClient } from '../../src/client/index.js';
import { DevCluster, type DevClusterOptions } from '../../src/cli/dev-cluster.js';
import { CLI, tempDir, type Scope } from '../helpers/cluster.js';

export async function startDevCluster(t: Scope, options: Partial<DevClusterOptions> = {}): Promise<DevCluster> {
  const cluster = await DevCluster.start({
    dataDir: tempDir(t, 'cairn-rel-'),
    nodes: 3,
    replicationFactor: 3,
    writeQuorum: 2,
    gateways: 1,
    mediaWorkers: 0,
    backend: 'level',
    metadataReplicas: 1,
    heartbeatIntervalMs: 300,
    logLevel: 'warn',
    entry: { execPath: process.execPath, args: ['--import', 'tsx', CLI] },
    extraArgs: { blocknode: ['--anti-entropy-interval-ms', '500', '--rebalance-settle-ms', '1000', '--scrub-interval-ms', '0', '--reserve-bytes', '0'] },
    ...options,
  });
  t.teardown(() => cluster.stop(2000));
  return cluster;
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Files whose upload was acknowledged, by path, with the SHA-256 of what was sent. */
export class Ledger {
  readonly acked = new Map<string, string>();
  /** Every upload attempted (acknowledged or not), by path: what a visible file must equal. */
  readonly sent = new Map<string, string>();
  failures = 0;
  readonly errors: string[] = [];

  /** Uploads random files until `signal` aborts; records only acknowledged ones. */
  async writeUntil(client: CairnClient, prefix: string, signal: AbortSignal, maxBytes = 600_000): Promise<void> {
    for (let i = 0; !signal.aborted; i++) {
      const data = randomBytes(randomInt(1, maxBytes));
      const path = `${prefix}/f${i}.bin`;
      this.sent.set(path, sha256(data));
      try {
        await client.putStream(Readable.from([data]), path, { size: data.length });
        this.acked.set(path, sha256(data));
      } catch (err) {
        this.failures++;
        this.errors.push(`${path}: ${(err as Error).message}`);
      }
    }
  }

  /**
   * Waits until at least `count` uploads are acknowledged and `minMs` have passed (a busy machine
   * gets more time instead of a weaker check); fails after `capMs`.
   */
  async ackedAtLeast(count: number, minMs = 0, capMs = 120_000): Promise<void> {
    const start = Date.now();
    while (this.acked.size < count || Date.now() - start < minMs) {
      if (Date.now() - start > capMs) throw new Error(`only ${this.acked.size} of ${count} uploads acknowledged in ${capMs} ms; last errors: ${this.errors.slice(-3).join('; ')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Reads every acknowledged file; returns the paths that are missing or differ. */
  async verify(client: CairnClient): Promise<string[]> {
    const bad: string[] = [];
    for (const [path, want] of this.acked) {
      try {
        const parts: Buffer[] = [];
        for await (const p of client.read(path)) if ('data' in p) parts.push(p.data);
        if (sha256(Buffer.concat(parts)) !== want) bad.push(`${path}: content differs`);
      } catch (err) {
        bad.push(`${path}: ${(err as Error).message}`);
      }
    }
    return bad;
  }
}

/** Block counts per block node, asked directly with a service token. */
export async function blockCounts(t: Scope, cluster: DevCluster): Promise<Map<string, number>> {
  const tokens = new ServiceTokenSource(loadOrCreateSecret(cluster.secretPath));
  const out = new Map<string, number>();
  for (const p of cluster.processes.values()) {
    if (p.role !== 'blocknode' || p.proc.exitCode !== null || p.proc.signalCode !== null) continue;
    const c = new BlockClient({ address: p.grpc, credentials: credentials.createInsecure(), token: () => tokens.token(), timeoutMs: 10_000 });
    try {
      out.set(p.name, Number((await c.stats()).blocks));
    } finally {
      c.close();
    }
  }
  void t;
  return out;
}

export async function clientFor(t: Scope, cluster: DevCluster, gateway = 0, tenant = 'chaos'): Promise<CairnClient> {
  const endpoint = cluster.gatewayEndpoints[gateway];
  if (endpoint === undefined) throw new Error(`no gateway ${gateway}`);
  const client = new CairnClient({ endpoint, token: await cluster.token(tenant, 'user') });
  t.teardown(() => client.close());
  return client;
}
