// Two real `cairn operator` processes on one cluster: only the Lease holder writes anything; when
// it dies without releasing the Lease, the standby takes over after the lease duration and acts.
import test from 'ava';
import { spawn } from 'node:child_process';
import { CLI, ROOT } from '../helpers/cluster.js';
import { settled, waitFor, world, type World } from './k8s-harness.js';

async function operatorProcess(t: { teardown(fn: () => void): void }, w: World, identity: string): Promise<{ kill(): void; http: string }> {
  const proc = spawn(
    process.execPath,
    ['--import', 'tsx', CLI, 'operator', '--kubeconfig', w.kubeconfig(identity), '--namespace', 'store', '--lease-namespace', 'store', '--identity', identity, '--metadata-addr', w.metadata.grpc, '--lease-duration-seconds', '3', '--interval-ms', '500', '--host', '127.0.0.1', '--http-port', '0', '--log-level', 'warn'],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  });
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`operator ${identity} not ready; stderr:\n${stderr}`)), 60_000);
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const l = out.split('\n').find((x) => x.includes('ready'));
      if (l !== undefined) {
        clearTimeout(timer);
        resolve(l);
      }
    });
    proc.once('exit', (code) => reject(new Error(`operator ${identity} exited ${code}: ${stderr}`)));
  });
  return { kill: () => proc.kill('SIGKILL'), http: `http://${/http=(\S+)/.exec(line)![1]!}` };
}

test('two operator processes: only the Lease holder acts; the standby takes over when it dies', async (t) => {
  t.timeout(175_000);
  const w = await world(t, { rf: 3 });
  const a = await operatorProcess(t, w, 'op-a');
  const b = await operatorProcess(t, w, 'op-b');
  w.createCluster({});
  await settled(w, 3);
  const holder = (w.api.get('leases', 'store', 'cairn-operator')?.['spec'] as { holderIdentity: string }).holderIdentity;
  t.true(holder === 'op-a' || holder === 'op-b');
  const standby = holder === 'op-a' ? 'op-b' : 'op-a';
  const writers = new Set(w.api.writes.map((x) => x.user));
  t.true(writers.has(holder));
  // The standby only read: not one write, not even to the Lease.
  t.deepEqual(w.api.writes.filter((x) => x.user === standby), []);
  for (const p of [a, b]) {
    const metrics = await (await fetch(`${p.http}/metrics`)).text();
    t.regex(metrics, /^cairn_operator_leader \d$/m);
    t.is((await fetch(`${p.http}/readyz`)).status, 200);
  }
  const leaderMetric = async (p: { http: string }) => /^cairn_operator_leader (\d)$/m.exec(await (await fetch(`${p.http}/metrics`)).text())?.[1];
  t.is(await leaderMetric(holder === 'op-a' ? a : b), '1');
  t.is(await leaderMetric(holder === 'op-a' ? b : a), '0');

  // The holder dies without releasing: the standby waits out the lease, takes it, and acts.
  (holder === 'op-a' ? a : b).kill();
  w.patchSpec({ gateway: { replicas: 2 } });
  await waitFor('the standby holds the Lease', async () => (w.api.get('leases', 'store', 'cairn-operator')?.['spec'] as { holderIdentity: string }).holderIdentity === standby, 60_000);
  await waitFor('the standby applied the change', async () => (w.api.get('deployments', 'store', 'demo-gateway')?.['spec'] as { replicas: number }).replicas === 2, 60_000);
  t.true(w.api.writes.some((x) => x.user === standby && x.kind === 'Deployment' && x.name === 'demo-gateway'));
  t.is((w.api.get('leases', 'store', 'cairn-operator')?.['spec'] as { leaseTransitions: number }).leaseTransitions, 1);
});
