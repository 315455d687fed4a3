// A kubelet and StatefulSet-controller simulator over the fake API server (test support only):
// StatefulSet pods become real `cairn server` processes built from the pod spec (args, env,
// secret/configMap volumes, one data dir per PVC kept across pod restarts), pod readiness follows
// the process's /readyz, partitioned rolling updates replace one pod at a time, and a test can
// fail a pod (kill its process and keep it down) or lose it with its volume. A scheduler binds
// pods to simulated Nodes (their labels, e.g. zones, set by the test) honouring the pod's zone
// affinity and topology spread; init containers run to completion first (with retries), and
// downward-API volumes and env (annotations, labels, node name) follow the live pod.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI, ROOT } from '../helpers/cluster.js';
import type { FakeApiServer, Obj } from './apiserver.js';
import { reap } from './reaper.js';

interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string } } }[];
  volumeMounts?: { name: string; mountPath: string }[];
}
interface DownwardItem {
  path: string;
  fieldRef: { fieldPath: string };
}
interface Volume {
  name: string;
  secret?: { secretName: string };
  configMap?: { name: string };
  emptyDir?: object;
  persistentVolumeClaim?: { claimName: string };
  downwardAPI?: { items: DownwardItem[] };
}
interface LabelSelector {
  matchLabels?: Record<string, string>;
}
interface PodSpec {
  nodeName?: string;
  initContainers?: Container[];
  containers: Container[];
  volumes?: Volume[];
  affinity?: { nodeAffinity?: { requiredDuringSchedulingIgnoredDuringExecution?: { nodeSelectorTerms: { matchExpressions?: { key: string; operator: string; values?: string[] }[] }[] } } };
  topologySpreadConstraints?: { topologyKey: string; labelSelector?: LabelSelector }[];
}

/** A simulated Kubernetes node. */
export interface SimNode {
  readonly name: string;
  readonly labels?: Readonly<Record<string, string>>;
}

/** A pod's view of one field (downward API): name, namespace, node, labels[...], annotations[...] or all of them. */
export function fieldValue(p: Obj, fieldPath: string): string {
  const spec = p['spec'] as PodSpec;
  if (fieldPath === 'metadata.name') return p.metadata.name;
  if (fieldPath === 'metadata.namespace') return p.metadata.namespace ?? '';
  if (fieldPath === 'metadata.uid') return p.metadata.uid ?? '';
  if (fieldPath === 'spec.nodeName') return spec.nodeName ?? '';
  const one = /^metadata\.(labels|annotations)\['([^']+)'\]$/.exec(fieldPath);
  if (one !== null) return (one[1] === 'labels' ? p.metadata.labels : p.metadata.annotations)?.[one[2]!] ?? '';
  if (fieldPath === 'metadata.labels' || fieldPath === 'metadata.annotations') {
    // The kubelet's format: sorted `key="value"` lines, values quoted like Go's %q.
    const m = (fieldPath === 'metadata.labels' ? p.metadata.labels : p.metadata.annotations) ?? {};
    return Object.keys(m).sort().map((k) => `${k}=${JSON.stringify(m[k])}`).join('\n');
  }
  throw new Error(`unsupported fieldPath ${fieldPath}`);
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
  /** The cluster's nodes (created as Node objects at start); default one node without a zone. */
  readonly nodes?: readonly SimNode[];
}

const baseEnv = (): Record<string, string | undefined> => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CAIRN_')));

function writeIfChanged(file: string, text: string): void {
  let old: string | undefined;
  try {
    old = readFileSync(file, 'utf8');
  } catch {
    old = undefined;
  }
  if (old !== text) writeFileSync(file, text);
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
  /** Downward-API files of pods being started or running, refreshed on every sync. */
  readonly #downward = new Map<string, { uid: string; files: { file: string; fieldPath: string }[] }>();
  #unsubscribe: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #syncing: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  /** Init containers that exited non-zero (each is retried). */
  readonly initFailures: { pod: string; container: string; stderr: string }[] = [];
  /** Every serving transition of a pod's process (probe flips, kills), in order: invariants such as "one pod down at a time". */
  readonly readiness: { pod: string; ready: boolean; at: number }[] = [];

  constructor(options: KubeletOptions) {
    this.#o = options;
  }

  start(): void {
    for (const n of this.#o.nodes ?? [{ name: 'sim-node-0' }]) {
      if (this.#o.api.get('nodes', undefined, n.name) !== undefined) continue;
      this.#o.api.create('nodes', undefined, { metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name, ...n.labels } }, status: { conditions: [{ type: 'Ready', status: 'True' }] } }, 'node-controller');
    }
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
    let pods = api.list('pods', namespace).filter((p) => this.#o.statefulSets.some((s) => p.metadata.name.startsWith(`${s}-`)));
    this.#schedule(pods);
    // Kubelet: run what is bound to a node, stop what is gone or terminating.
    pods = api.list('pods', namespace).filter((p) => this.#o.statefulSets.some((s) => p.metadata.name.startsWith(`${s}-`)) && (p['spec'] as PodSpec).nodeName !== undefined);
    const live = new Map(pods.map((p) => [p.metadata.name, p]));
    for (const [name, d] of this.#downward) {
      const p = live.get(name);
      if (p === undefined || p.metadata.uid !== d.uid) {
        if (!this.#starting.has(name) && !this.#running.has(name)) this.#downward.delete(name);
        continue;
      }
      for (const f of d.files) writeIfChanged(f.file, fieldValue(p, f.fieldPath));
    }
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

  /** The scheduler: each unbound pod goes to an eligible node in the least-used domain of its spread constraint, then the least-used node. */
  #schedule(pods: readonly Obj[]): void {
    const nodes = this.#o.api.list('nodes');
    if (nodes.length === 0) return;
    const bound = pods.filter((p) => (p['spec'] as PodSpec).nodeName !== undefined && p.metadata.deletionTimestamp === undefined);
    for (const p of pods) {
      const spec = p['spec'] as PodSpec;
      if (spec.nodeName !== undefined || p.metadata.deletionTimestamp !== undefined) continue;
      const terms = spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms ?? [];
      const eligible = nodes.filter((n) => terms.length === 0 || terms.some((t) => (t.matchExpressions ?? []).every((e) => e.operator === 'In' && (e.values ?? []).includes(n.metadata.labels?.[e.key] ?? '\u0000'))));
      if (eligible.length === 0) continue; // Pending: unschedulable
      const spread = spec.topologySpreadConstraints?.[0];
      const peers = bound.filter((b) => Object.entries(spread?.labelSelector?.matchLabels ?? {}).every(([k, v]) => b.metadata.labels?.[k] === v));
      const nodeOf = (name: string | undefined) => nodes.find((n) => n.metadata.name === name);
      const domain = (n: Obj | undefined): string => (spread === undefined ? '' : (n?.metadata.labels?.[spread.topologyKey] ?? ''));
      const inDomain = (d: string) => peers.filter((b) => domain(nodeOf((b['spec'] as PodSpec).nodeName)) === d).length;
      const onNode = (n: Obj) => peers.filter((b) => (b['spec'] as PodSpec).nodeName === n.metadata.name).length;
      const best = [...eligible].sort((a, b) => inDomain(domain(a)) - inDomain(domain(b)) || onNode(a) - onNode(b) || (a.metadata.name < b.metadata.name ? -1 : 1))[0]!;
      const next = { ...p, metadata: { ...p.metadata, resourceVersion: '' }, spec: { ...spec, nodeName: best.metadata.name } };
      this.#o.api.update('pods', this.#o.namespace, p.metadata.name, next, { user: 'default-scheduler' });
      bound.push(next);
    }
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

  /** Builds the pod's volumes (directories) from its spec. */
  #volumes(p: Obj): Map<string, string> {
    const { api, namespace } = this.#o;
    const spec = p['spec'] as PodSpec;
    const podDir = join(this.#o.root, 'pods', `${p.metadata.name}-${(p.metadata.uid ?? '').slice(0, 8)}`);
    const dirs = new Map<string, string>();
    const downward: { file: string; fieldPath: string }[] = [];
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
      for (const item of v.downwardAPI?.items ?? []) {
        const file = join(dir, item.path);
        writeFileSync(file, fieldValue(p, item.fieldRef.fieldPath));
        downward.push({ file, fieldPath: item.fieldRef.fieldPath });
      }
      dirs.set(v.name, dir);
    }
    dirs.set('', podDir);
    if (downward.length > 0) this.#downward.set(p.metadata.name, { uid: p.metadata.uid ?? '', files: downward });
    return dirs;
  }

  /** A container's command line and environment, resolved against the pod as it is now. */
  #prepare(p: Obj, c: Container, dirs: ReadonlyMap<string, string>): { command: string[]; env: Record<string, string> } {
    const { api, namespace } = this.#o;
    const podDir = dirs.get('')!;
    const mounts = (c.volumeMounts ?? []).map((m) => ({ path: m.mountPath, dir: dirs.get(m.name) ?? join(podDir, m.name) })).sort((a, b) => b.path.length - a.path.length);
    const env: Record<string, string> = {};
    for (const e of c.env ?? []) {
      let value = e.value ?? '';
      if (e.valueFrom?.fieldRef !== undefined) value = fieldValue(p, e.valueFrom.fieldRef.fieldPath);
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
    // The image's entrypoint is the Cairn CLI; a `node …` command runs plain Node (init containers).
    const command = c.command?.[0] === 'node' ? [...c.command.slice(1), ...(c.args ?? [])] : ['--import', 'tsx', CLI, ...(c.args ?? []), '--log-level', 'warn'];
    return { command, env };
  }

  /** Runs the pod's init containers in order; false when the pod went away meanwhile. A failing one is retried after a pause (kubelet's backoff). */
  async #init(p: Obj, dirs: ReadonlyMap<string, string>): Promise<boolean> {
    const live = () => {
      const now = this.#o.api.get('pods', this.#o.namespace, p.metadata.name);
      return !this.#stopped && now !== undefined && now.metadata.uid === p.metadata.uid && now.metadata.deletionTimestamp === undefined && !this.#held.has(p.metadata.name) ? now : undefined;
    };
    for (const c of (p['spec'] as PodSpec).initContainers ?? []) {
      for (;;) {
        const now = live();
        if (now === undefined) return false;
        const { command, env } = this.#prepare(now, c, dirs);
        const proc = reap(spawn(process.execPath, command, { cwd: ROOT, env: { ...baseEnv(), ...env }, stdio: ['ignore', 'ignore', 'pipe'] }));
        let stderr = '';
        proc.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
        const code = await new Promise<number | null>((resolve) => {
          const check = setInterval(() => {
            if (live() === undefined) proc.kill('SIGKILL');
          }, 500);
          proc.once('exit', (exit) => {
            clearInterval(check);
            resolve(exit);
          });
        });
        if (code === 0) break;
        this.initFailures.push({ pod: p.metadata.name, container: c.name, stderr });
        await sleep(1000);
      }
    }
    return live() !== undefined;
  }

  async #run(p: Obj): Promise<void> {
    let prepared: { command: string[]; env: Record<string, string> };
    try {
      const dirs = this.#volumes(p);
      if (!(await this.#init(p, dirs))) return;
      // Env is resolved when the container starts: annotations set while init ran are seen.
      const now = this.#o.api.get('pods', this.#o.namespace, p.metadata.name);
      if (now === undefined || now.metadata.uid !== p.metadata.uid) return;
      prepared = this.#prepare(now, (now['spec'] as PodSpec).containers[0]!, dirs);
    } catch {
      return; // a volume source is not there yet (like ContainerCreating); the next sync retries
    }
    if (this.#stopped || this.#held.has(p.metadata.name)) return;
    const proc = reap(spawn(process.execPath, prepared.command, { cwd: ROOT, env: { ...baseEnv(), ...prepared.env }, stdio: ['ignore', 'pipe', 'pipe'] }));
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
