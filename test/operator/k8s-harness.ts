// One Cairn-on-Kubernetes world for the operator scenarios: the fake API server, a real metadata
// process, the kubelet simulator running the block-node StatefulSet as real processes, the real
// operator (in-process through client-node, or as `cairn operator` processes), a real gateway and
// a writer that remembers every acknowledged file. Test support only.
import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { credentials } from '@grpc/grpc-js';
import { KubeConfig } from '@kubernetes/client-node';
import { ServiceTokenSource } from '../../src/common/auth.js';
import { createLogger } from '../../src/common/log.js';
import { CairnClient } from '../../src/client/index.js';
import { AdminClient, type AdminNode } from '../../src/metadata/index.js';
import { createOperator, type CairnClusterSpec, type Condition, type Operator } from '../../src/operator/index.js';
import { FakeApiServer, type Obj } from '../k8s/apiserver.js';
import { KubeletSim, type SimNode } from '../k8s/kubelet.js';
import { reap } from '../k8s/reaper.js';
import { waitFor } from '../cluster/harness.js';
import { CLI, ROOT, runCli, tempDir, type Scope } from '../helpers/cluster.js';

export { waitFor };
export const NS = 'store';
export const NAME = 'demo';
export const FULL = process.env['CAIRN_TEST_FULL'] === '1';

export interface Started {
  readonly grpc: string;
  readonly http: string;
}

/**
 * `cairn server --role <role>` like test/helpers' startServer, with a ready deadline that
 * survives a machine shared by many suites (process start under tsx can take a minute there).
 */
export async function startRole(t: Scope, role: string, args: readonly string[], dataDir: string, readyWithinMs = 120_000): Promise<Started> {
  const proc = reap(spawn(process.execPath, ['--import', 'tsx', CLI, 'server', '--role', role, '--data-dir', dataDir, '--grpc-port', '0', '--http-port', '0', '--log-level', 'warn', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }));
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-10_000)));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${role} not ready in ${readyWithinMs} ms; stderr:\n${stderr}`)), readyWithinMs);
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const ready = out.split('\n').find((l) => l.includes('ready'));
      if (ready !== undefined) {
        clearTimeout(timer);
        resolve(ready);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${role} exited with ${code} before ready; stderr:\n${stderr}`));
    });
  });
  const grpc = /grpc=(\S+)/.exec(line)?.[1];
  const http = /http=(\S+)/.exec(line)?.[1];
  if (grpc === undefined || http === undefined) throw new Error(`unexpected ready line: ${line}`);
  return { grpc, http };
}

export interface World {
  readonly api: FakeApiServer;
  readonly root: string;
  readonly secretPath: string;
  readonly metadata: Started;
  readonly kubelet: KubeletSim;
  readonly admin: AdminClient;
  kubeconfig(user: string): string;
  /** Starts an operator in this process (the real main loop through client-node). */
  operator(identity: string, extra?: { leaseDurationSeconds?: number }): Operator;
  createCluster(spec: Partial<CairnClusterSpec>): void;
  patchSpec(patch: Record<string, unknown>): void;
  cluster(): Obj | undefined;
  condition(type: string): Condition | undefined;
  nodes(): Promise<AdminNode[]>;
  gateway(): Promise<CairnClient>;
}

export function spec(over: Partial<CairnClusterSpec> = {}): CairnClusterSpec {
  return {
    image: { repository: 'ghcr.io/cairn-dev/cairn', tag: '0.1.0' },
    replicationFactor: 3,
    writeQuorum: 2,
    blocknodes: { replicas: 3, storage: { size: '1Gi' } },
    gateway: { replicas: 1 },
    metadata: { backend: 'level' },
    failoverDelaySeconds: 30,
    ...over,
  };
}

export async function world(t: Scope, options: { rf: number; failoverDelaySeconds?: number; detectorDelaySeconds?: number; nodes?: readonly SimNode[] }): Promise<World> {
  const root = tempDir(t, 'cairn-k8s-');
  const api = new FakeApiServer();
  await api.listen();
  t.teardown(() => api.close());
  // The cluster's token-signing Secret exists up front (as if from a previous operator pass), so
  // the metadata process the test runs shares it.
  const secretText = randomBytes(32).toString('base64url');
  const secretPath = join(root, 'auth.key');
  writeFileSync(secretPath, secretText + '\n', { mode: 0o600 });
  api.create('secrets', NS, { metadata: { name: `${NAME}-auth` }, data: { 'auth.key': Buffer.from(secretText).toString('base64') } });
  const metadata = await startRole(t, 'metadata', ['--auth-secret-file', secretPath, '--replication-factor', String(options.rf), '--failover-delay-ms', String((options.detectorDelaySeconds ?? options.failoverDelaySeconds ?? 30) * 1000)], join(root, 'metadata'));
  const kubelet = new KubeletSim({
    api,
    namespace: NS,
    statefulSets: [`${NAME}-blocknode`],
    root,
    dns: new Map([[`${NAME}-metadata.${NS}.svc:7400`, metadata.grpc]]),
    ...(options.nodes !== undefined ? { nodes: options.nodes } : {}),
    extraEnv: { CAIRN_HEARTBEAT_INTERVAL_MS: '300', CAIRN_ANTI_ENTROPY_INTERVAL_MS: '300', CAIRN_REBALANCE_SETTLE_MS: '1500', CAIRN_SCRUB_INTERVAL_MS: '0', CAIRN_RESERVE_BYTES: '0', CAIRN_SHUTDOWN_TIMEOUT_MS: '3000' },
  });
  kubelet.start();
  t.teardown(() => kubelet.stop());
  const tokens = new ServiceTokenSource(Buffer.from(secretText, 'base64url'));
  const admin = new AdminClient({ address: metadata.grpc, credentials: credentials.createInsecure(), token: () => tokens.token() });
  t.teardown(() => admin.close());
  const kubeconfig = (user: string): string => {
    const path = join(root, `kubeconfig-${user}.json`);
    writeFileSync(path, api.kubeconfig(user));
    return path;
  };
  let gatewayClient: CairnClient | undefined;
  const w: World = {
    api,
    root,
    secretPath,
    metadata,
    kubelet,
    admin,
    kubeconfig,
    operator(identity, extra = {}) {
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfig(identity));
      const op = createOperator({
        kubeConfig: kc,
        namespace: NS,
        identity,
        metadataAddr: metadata.grpc,
        intervalMs: 500,
        leaseDurationSeconds: extra.leaseDurationSeconds ?? 3,
        log: createLogger({ level: process.env['CAIRN_TEST_OPERATOR_LOG'] === '1' ? 'info' : 'warn', name: `operator-${identity}` }),
      });
      op.start();
      t.teardown(() => op.stop());
      return op;
    },
    createCluster(over) {
      api.create('cairnclusters', NS, { apiVersion: 'cairn.dev/v1alpha1', kind: 'CairnCluster', metadata: { name: NAME }, spec: spec(over) }, 'admin');
    },
    patchSpec(patch) {
      api.patch('cairnclusters', NS, NAME, 'application/merge-patch+json', JSON.stringify({ spec: patch }), { user: 'admin', fieldManager: 'kubectl' });
    },
    cluster: () => api.get('cairnclusters', NS, NAME),
    condition(type) {
      const status = api.get('cairnclusters', NS, NAME)?.['status'] as { conditions?: Condition[] } | undefined;
      return status?.conditions?.find((c) => c.type === type);
    },
    nodes: () => admin.listNodes(),
    async gateway() {
      if (gatewayClient !== undefined) return gatewayClient;
      const gw = await startRole(t, 'gateway', ['--auth-secret-file', secretPath, '--metadata-addr', metadata.grpc], join(root, 'gateway'));
      const minted = await runCli(['token', 'create', '--auth-secret-file', secretPath, '--tenant', 'acme', '--role', 'user']);
      if (minted.code !== 0) throw new Error(minted.stderr);
      const client = new CairnClient({ endpoint: gw.grpc, token: minted.stdout.trim() });
      t.teardown(() => client.close());
      gatewayClient = client;
      return client;
    },
  };
  return w;
}

/** The cluster is settled: Ready, not progressing, `n` block nodes up in the map. */
export async function settled(w: World, n: number, timeoutMs = 120_000): Promise<void> {
  await waitFor(
    `a settled cluster of ${n} block nodes`,
    async () => {
      const c = w.cluster();
      const status = c?.['status'] as { observedGeneration?: number } | undefined;
      if (status?.observedGeneration !== c?.metadata.generation) return false;
      if (w.condition('Ready')?.status !== 'True' || w.condition('Progressing')?.status !== 'False') return false;
      const nodes = (await w.nodes()).filter((x) => x.state !== 'removed');
      return nodes.length === n && nodes.every((x) => x.state === 'up');
    },
    timeoutMs,
    250,
  );
}

/** Logs a scenario step with the seconds since the first step (slow machines: where did time go). */
export function stepper(t: { log(...values: unknown[]): void }): (what: string) => void {
  const start = Date.now();
  return (what) => {
    const line = `[${((Date.now() - start) / 1000).toFixed(1)}s] ${what}`;
    t.log(line);
    if (process.env['CAIRN_TEST_OPERATOR_LOG'] === '1') process.stderr.write(line + '\n');
  };
}

export interface Written {
  readonly path: string;
  readonly data: Buffer;
  readonly chunks: number;
}

/** Writes files in the background until stopped; only acknowledged writes are remembered. */
export function writer(client: CairnClient, prefix: string): { readonly acked: Written[]; failures: number; stop(): Promise<void> } {
  const acked: Written[] = [];
  const state = { acked, failures: 0, stop: async () => {} };
  let running = true;
  const loop = (async () => {
    for (let i = 0; running; i++) {
      const data = randomBytes(randomInt(32 * 1024, 400 * 1024));
      const path = `${prefix}/f${i}.bin`;
      try {
        const info = await client.putStream(Readable.from([data]), path, { size: data.length });
        acked.push({ path, data, chunks: info.chunkCount });
      } catch {
        state.failures++;
      }
      await sleep(150);
    }
  })();
  state.stop = async () => {
    running = false;
    await loop;
  };
  return state;
}

export async function readBack(client: CairnClient, path: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of client.read(path)) if ('data' in p) parts.push(p.data);
  return Buffer.concat(parts);
}

/** Paths of acknowledged files that do not read back intact. */
export async function unreadable(client: CairnClient, files: readonly Written[]): Promise<string[]> {
  const bad: string[] = [];
  for (const f of files) {
    const got = await readBack(client, f.path).catch(() => undefined);
    if (got === undefined || !got.equals(f.data)) bad.push(f.path);
  }
  return bad;
}

/** Every chunk written has RF copies on the nodes in the map, and no node reports under-replication. */
export async function atRf(w: World, files: readonly Written[], rf: number): Promise<boolean> {
  const chunks = files.reduce((s, f) => s + f.chunks, 0);
  const nodes = (await w.nodes()).filter((n) => n.state !== 'removed');
  const blocks = nodes.reduce((s, n) => s + (n.stats?.blocks ?? 0), 0);
  return nodes.every((n) => n.state === 'up' && (n.stats?.underReplicatedPartitions ?? 1) === 0) && blocks === rf * chunks;
}
