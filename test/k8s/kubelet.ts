// A kubelet and StatefulSet-controller simulator over the fake API server (test support only):
// StatefulSet pods become real `cairn server` processes built from the pod spec (args, env,
// secret/configMap volumes, one data dir per PVC kept across pod restarts), pod readiness follows
// the process's /readyz, partitioned rolling updates replace one pod at a time, and a test can
// fail a pod (kill its process and keep it down) or lose it with its volume.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI, ROOT } from '../helpers/cluster.js';
import type { FakeApiServer, Obj } from './apiserver.js';

interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string } } }[];
  volumeMounts?: { name: string; mountPath: string }[];
}
interface PodSpec {
  containers: Container[];
  volumes?: { name: string; secret?: { secretName: string }; configMap?: { name: string }; emptyDir?: object; persistentVolumeClaim?: { claimName: string } }[];
}
interface StsSpec {
  replicas?: number;
  selector: { matchLabels: Record<string, string> };
  updateStrategy?: { rollingUpdate?: { partition?: number } };
  persistentVolumeClaimRetentionPolicy?: { whenScaled?: string; whenDeleted?: string };
  template: { metadata?: { labels?: Record<string, string> }; spec: PodSpec };
  volumeClaimTemplates?: { metadata: { name: string }; spec: Record<string, unknown> }[];
}

interface Running {
  readonly pod: string;
  readonly uid: string;
  readonly proc: ChildProcess;
  readonly exited: Promise<void>;
  grpc: string | undefined;
  http: string | undefined;
  ready: boolean;
  stopping: boolean;
  stderr: string;
}

export interface KubeletOptions {
  readonly api: FakeApiServer;
  readonly namespace: string;
  /** Names of the StatefulSets whose pods this simulator runs. */
  readonly statefulSets: readonly string[];
  /** Where pod and volume directories live. */
  readonly root: string;
  /** Service DNS names → real addresses (e.g. the metadata Service → the test's metadata process). */
  readonly dns: ReadonlyMap<string, string>;
  /** Extra environment for every container (test tuning such as heartbeat periods). */
  readonly extraEnv?: Readonly<Record<string, string>>;
}

const revisionOf = (template: unknown): string => createHash('sha256').update(JSON.stringify(template)).digest('hex').slice(0, 10);
const ordinalOf = (name: string): number => Number(/-(\d+)$/.exec(name)?.[1] ?? -1);

export class KubeletSim {
  readonly #o: KubeletOptions;
  readonly #running = new Map<string, Running>();
  /** Pods whose container must stay down (a failed node). */
  readonly #held = new Set<string>();
  /** Templates by revision, so pods below the partition keep the old one. */
  readonly #templates = new Map<string, StsSpec['template']>();
  readonly #starting = new Set<string>();
  #unsubscribe: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #syncing: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  /** Every serving transition of a pod's process (probe flips, kills), in order: invariants such as "one pod down at a time". */
  readonly readiness: { pod: string; ready: boolean; at: number }[] = [];

  constructor(options: KubeletOptions) {
    this.#o = options;
  }

  start(): void {
    this.#unsubscribe = this.#o.api.subscribe((_type, plural, obj) => {
      if (obj.metadata.namespace !== this.#o.namespace) return;
      if (plural === 'statefulsets' || plural === 'pods' || plural === 'persistentvolumeclaims') this.kick();
    });
    this.#timer = setInterval(() => this.kick(), 300);
    this.kick();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unsubscribe?.();
    clearInterval(this.#timer);
    await this.#syncing;
    await Promise.all([...this.#running.values()].map((r) => this.#kill(r, 'SIGKILL')));
  }

  /** The gRPC address of a running pod. */
  addr(pod: string): string | undefined {
    return this.#running.get(pod)?.grpc;
  }

  running(): string[] {
    return [...this.#running.keys()].sort();
  }

  stderr(pod: string): string {
    return this.#running.get(pod)?.stderr ?? '';
  }

  /** The node under the pod fails: its process dies and stays down; the pod turns NotReady. */
  async fail(pod: string): Promise<void> {
    this.#held.add(pod);
    const r = this.#running.get(pod);
    if (r !== undefined) await this.#kill(r, 'SIGKILL');
    this.kick();
  }

  /** The failed node comes back with its disk. */
  recover(pod: string): void {
    this.#held.delete(pod);
    this.kick();
  }

  /** The node and its local volume are gone for good: the pod and PVC are deleted, the StatefulSet makes new ones. */
  async lose(pod: string): Promise<void> {
    await this.fail(pod);
    const { api, namespace } = this.#o;
    const claim = `data-${pod}`;
    const pvc = api.get('persistentvolumeclaims', namespace, claim);
    if (pvc !== undefined) {
      rmSync(this.#pvcDir(pvc), { recursive: true, force: true });
      api.delete('persistentvolumeclaims', namespace, claim, 'node-lifecycle');
    }
    if (api.get('pods', namespace, pod) !== undefined) api.delete('pods', namespace, pod, 'node-lifecycle');
    this.#held.delete(pod);
    this.kick();
  }

  kick(): void {
    if (this.#stopped) return;
    if (this.#syncing !== undefined) {
      this.#again = true;
      return;
    }
    // Set before the first await: a sync's own writes call back into kick() synchronously.
    let release!: () => void;
    this.#syncing = new Promise<void>((resolve) => (release = resolve));
    void this.#sync()
      .catch((err: unknown) => void process.stderr.write(`kubelet sim: ${String(err)}\n`))
      .finally(() => {
        release();
        this.#syncing = undefined;
        if (this.#again) {
          this.#again = false;
          this.kick();
        }
      });
  }

  #pvcDir(pvc: Obj): string {
    return join(this.#o.root, 'pvc', `${pvc.metadata.name}-${(pvc.metadata.uid ?? '').slice(0, 8)}`);
  }

  async #sync(): Promise<void> {
    const { api, namespace } = this.#o;
    for (const name of this.#o.statefulSets) {
      const sts = api.get('statefulsets', namespace, name);
      if (sts === undefined) continue;
      this.#syncStatefulSet(sts);
    }
    // Kubelet: run what exists, stop what is gone or terminating.
    const pods = api.list('pods', namespace).filter((p) => this.#o.statefulSets.some((s) => p.metadata.name.startsWith(`${s}-`)));
    const live = new Map(pods.map((p) => [p.metadata.name, p]));
    for (const r of [...this.#running.values()]) {
      const p = live.get(r.pod);
      if (p === undefined || p.metadata.uid !== r.uid || p.metadata.deletionTimestamp !== undefined) await this.#kill(r, 'SIGTERM');
    }
    for (const p of pods) {
      if (p.metadata.deletionTimestamp !== undefined || this.#held.has(p.metadata.name) || this.#running.has(p.metadata.name) || this.#starting.has(p.metadata.name)) continue;
      this.#starting.add(p.metadata.name);
      void this.#run(p).finally(() => this.#starting.delete(p.metadata.name));
    }
    for (const p of pods) this.#reportStatus(p);
  }

  #syncStatefulSet(sts: Obj): void {
    const { api, namespace } = this.#o;
    const spec = sts['spec'] as StsSpec;
    const replicas = spec.replicas ?? 1;
    const partition = spec.updateStrategy?.rollingUpdate?.partition ?? 0;
    const update = revisionOf(spec.template);
    this.#templates.set(update, spec.template);
    const status = (sts['status'] ?? {}) as { currentRevision?: string };
    const current = status.currentRevision ?? update;
    const name = sts.metadata.name;
    const pods = api.list('pods', namespace).filter((p) => (p.metadata.ownerReferences ?? []).some((r) => r.uid === sts.metadata.uid));
    const byOrdinal = new Map(pods.map((p) => [ordinalOf(p.metadata.name), p]));
    for (let i = 0; i < replicas; i++) {
      if (byOrdinal.has(i)) continue;
      const podName = `${name}-${i}`;
      for (const t of spec.volumeClaimTemplates ?? []) {
        const claim = `${t.metadata.name}-${podName}`;
        if (api.get('persistentvolumeclaims', namespace, claim) === undefined) {
          api.create('persistentvolumeclaims', namespace, { metadata: { name: claim, labels: { ...spec.selector.matchLabels } }, spec: t.spec }, 'statefulset-controller');
          const pvc = api.get('persistentvolumeclaims', namespace, claim)!;
          api.update('persistentvolumeclaims', namespace, claim, { ...pvc, status: { phase: 'Bound' } }, { subresource: 'status', user: 'statefulset-controller' });
        }
      }
      const revision = i >= partition ? update : current;
      const template = this.#templates.get(revision) ?? spec.template;
      const volumes = [...(template.spec.volumes ?? []), ...(spec.volumeClaimTemplates ?? []).map((t) => ({ name: t.metadata.name, persistentVolumeClaim: { claimName: `${t.metadata.name}-${podName}` } }))];
      api.create(
        'pods',
        namespace,
        {
          metadata: { name: podName, labels: { ...template.metadata?.labels, 'controller-revision-hash': revision, 'statefulset.kubernetes.io/pod-name': podName }, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'StatefulSet', name, uid: sts.metadata.uid!, controller: true } as never] },
          spec: { ...template.spec, volumes, hostname: podName, subdomain: name },
          status: { phase: 'Pending', conditions: [{ type: 'Ready', status: 'False', lastTransitionTime: new Date().toISOString() }] },
        },
        'statefulset-controller',
      );
    }
    // Parallel pod management: every pod above the size goes at once; its claim too when whenScaled is Delete.
    for (const [i, p] of byOrdinal) {
      if (i < replicas) continue;
      if (p.metadata.deletionTimestamp === undefined) api.delete('pods', namespace, p.metadata.name, 'statefulset-controller');
    }
    // Claims of ordinals above the size, once their pod and process are gone.
    if (spec.persistentVolumeClaimRetentionPolicy?.whenScaled === 'Delete') {
      for (const t of spec.volumeClaimTemplates ?? []) {
        for (const pvc of api.list('persistentvolumeclaims', namespace)) {
          const m = new RegExp(`^${t.metadata.name}-(${name}-(\\d+))$`).exec(pvc.metadata.name);
          if (m === null || Number(m[2]) < replicas || byOrdinal.has(Number(m[2])) || this.#running.has(m[1]!)) continue;
          rmSync(this.#pvcDir(pvc), { recursive: true, force: true });
          api.delete('persistentvolumeclaims', namespace, pvc.metadata.name, 'statefulset-controller');
        }
      }
    }
    // Rolling update: the highest outdated pod at or above the partition, once every other pod is Ready.
    const inRange = [...byOrdinal].filter(([i]) => i < replicas);
    const allReady = inRange.every(([, p]) => this.#isReady(p));
    const outdated = inRange.filter(([i, p]) => i >= partition && p.metadata.labels?.['controller-revision-hash'] !== update).sort((a, b) => b[0] - a[0]);
    if (outdated.length > 0 && allReady) api.delete('pods', namespace, outdated[0]![1].metadata.name, 'statefulset-controller');
    const ready = inRange.filter(([, p]) => this.#isReady(p)).length;
    const updated = inRange.filter(([, p]) => p.metadata.labels?.['controller-revision-hash'] === update).length;
    const next = { replicas: inRange.length, readyReplicas: ready, updatedReplicas: updated, currentRevision: updated === replicas ? update : current, updateRevision: update, observedGeneration: sts.metadata.generation };
    if (JSON.stringify(sts['status']) !== JSON.stringify(next)) api.update('statefulsets', namespace, name, { ...sts, metadata: { ...sts.metadata, resourceVersion: '' }, status: next }, { subresource: 'status', user: 'statefulset-controller' });
  }

  #isReady(p: Obj): boolean {
    const conds = ((p['status'] as { conditions?: { type: string; status: string }[] } | undefined)?.conditions ?? []);
    return p.metadata.deletionTimestamp === undefined && conds.some((c) => c.type === 'Ready' && c.status === 'True');
  }

  #reportStatus(p: Obj): void {
    const r = this.#running.get(p.metadata.name);
    const ready = r !== undefined && r.uid === p.metadata.uid && r.ready && !r.stopping;
    if (this.#isReady(p) === ready || p.metadata.deletionTimestamp !== undefined) return;
    const container = (p['spec'] as PodSpec).containers[0]!;
    const status = {
      phase: 'Running',
      podIP: '127.0.0.1',
      conditions: [{ type: 'Ready', status: ready ? 'True' : 'False', lastTransitionTime: new Date().toISOString() }],
      containerStatuses: [{ name: container.name, image: container.image, ready, restartCount: 0 }],
    };
    this.#o.api.update('pods', this.#o.namespace, p.metadata.name, { ...p, metadata: { ...p.metadata, resourceVersion: '' }, status }, { subresource: 'status', user: 'kubelet' });
  }

  /** Builds the container's files and environment from the pod spec. */
  #prepare(p: Obj): { args: string[]; env: Record<string, string> } {
    const { api, namespace } = this.#o;
    const spec = p['spec'] as PodSpec;
    const c = spec.containers[0]!;
    const podDir = join(this.#o.root, 'pods', `${p.metadata.name}-${(p.metadata.uid ?? '').slice(0, 8)}`);
    const dirs = new Map<string, string>();
    for (const v of spec.volumes ?? []) {
      let dir = join(podDir, v.name);
      if (v.persistentVolumeClaim !== undefined) {
        const pvc = api.get('persistentvolumeclaims', namespace, v.persistentVolumeClaim.claimName);
        if (pvc === undefined) throw new Error(`claim ${v.persistentVolumeClaim.claimName} missing`);
        dir = this.#pvcDir(pvc);
      }
      mkdirSync(dir, { recursive: true });
      const source = v.secret !== undefined ? api.get('secrets', namespace, v.secret.secretName) : v.configMap !== undefined ? api.get('configmaps', namespace, v.configMap.name) : undefined;
      if ((v.secret !== undefined || v.configMap !== undefined) && source === undefined) throw new Error(`volume ${v.name}: source missing`);
      if (v.secret !== undefined) for (const [k, val] of Object.entries((source!['data'] ?? {}) as Record<string, string>)) writeFileSync(join(dir, k), Buffer.from(val, 'base64'), { mode: 0o600 });
      if (v.configMap !== undefined) for (const [k, val] of Object.entries((source!['data'] ?? {}) as Record<string, string>)) writeFileSync(join(dir, k), val);
      dirs.set(v.name, dir);
    }
    const mounts = (c.volumeMounts ?? []).map((m) => ({ path: m.mountPath, dir: dirs.get(m.name) ?? join(podDir, m.name) })).sort((a, b) => b.path.length - a.path.length);
    const env: Record<string, string> = {};
    for (const e of c.env ?? []) {
      let value = e.value ?? '';
      if (e.valueFrom?.fieldRef !== undefined) value = e.valueFrom.fieldRef.fieldPath === 'metadata.namespace' ? namespace : p.metadata.name;
      if (e.valueFrom?.secretKeyRef !== undefined) {
        const s = api.get('secrets', namespace, e.valueFrom.secretKeyRef.name);
        value = Buffer.from(((s?.['data'] ?? {}) as Record<string, string>)[e.valueFrom.secretKeyRef.key] ?? '', 'base64').toString('utf8');
      }
      value = value.replace(/\$\(([A-Z_][A-Z0-9_]*)\)/g, (_, v: string) => env[v] ?? '');
      const m = mounts.find((x) => value === x.path || value.startsWith(`${x.path}/`));
      if (m !== undefined) value = m.dir + value.slice(m.path.length);
      env[e.name] = value;
    }
    // The simulated network: loopback, ports picked by the process, Service names resolved here.
    env['CAIRN_HOST'] = '127.0.0.1';
    env['CAIRN_GRPC_PORT'] = '0';
    env['CAIRN_HTTP_PORT'] = '0';
    delete env['CAIRN_ADVERTISE_ADDR'];
    for (const [k, v] of Object.entries(env)) if (this.#o.dns.has(v)) env[k] = this.#o.dns.get(v)!;
    Object.assign(env, this.#o.extraEnv);
    return { args: c.args ?? [], env };
  }

  async #run(p: Obj): Promise<void> {
    let prepared: { args: string[]; env: Record<string, string> };
    try {
      prepared = this.#prepare(p);
    } catch {
      return; // a volume source is not there yet (like ContainerCreating); the next sync retries
    }
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CAIRN_')));
    const proc = spawn(process.execPath, ['--import', 'tsx', CLI, ...prepared.args, '--log-level', 'warn'], { cwd: ROOT, env: { ...base, ...prepared.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const r: Running = { pod: p.metadata.name, uid: p.metadata.uid!, proc, exited: new Promise((resolve) => proc.once('exit', () => resolve())), grpc: undefined, http: undefined, ready: false, stopping: false, stderr: '' };
    this.#running.set(r.pod, r);
    let stdout = '';
    proc.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      const line = stdout.split('\n').find((l) => l.includes('ready'));
      if (line !== undefined && r.grpc === undefined) {
        r.grpc = /grpc=(\S+)/.exec(line)?.[1];
        r.http = /http=(\S+)/.exec(line)?.[1];
      }
    });
    proc.stderr.on('data', (d: Buffer) => {
      r.stderr = (r.stderr + d.toString()).slice(-20_000);
    });
    void r.exited.then(() => {
      if (this.#running.get(r.pod) === r) this.#running.delete(r.pod);
      r.ready = false;
      this.kick();
    });
    // Readiness probe.
    while (!this.#stopped && this.#running.get(r.pod) === r && proc.exitCode === null) {
      let ready = false;
      if (r.http !== undefined) {
        try {
          const res = await fetch(`${r.http}/readyz`, { signal: AbortSignal.timeout(2000) });
          ready = res.status === 200;
          await res.body?.cancel();
        } catch {
          ready = false;
        }
      }
      if (ready !== r.ready && !r.stopping) {
        r.ready = ready;
        this.readiness.push({ pod: r.pod, ready, at: Date.now() });
        this.kick();
      }
      await sleep(250);
    }
  }

  async #kill(r: Running, signal: NodeJS.Signals): Promise<void> {
    if (r.ready) this.readiness.push({ pod: r.pod, ready: false, at: Date.now() });
    r.stopping = true;
    r.ready = false;
    if (r.proc.exitCode === null && r.proc.signalCode === null) r.proc.kill(signal);
    const timer = setTimeout(() => r.proc.kill('SIGKILL'), 15_000);
    await r.exited;
    clearTimeout(timer);
    if (this.#running.get(r.pod) === r) this.#running.delete(r.pod);
  }
}
