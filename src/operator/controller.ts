// The operator's main loop: informers feed a cache, the Lease holder reconciles every
// CairnCluster in its namespace (pure reconcile over what the caches and the metadata Admin API
// report) and executes the actions — server-side apply, Admin calls, status, Events, finalizer.
import { credentials as grpcCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { ServiceTokenSource } from '../common/auth.js';
import type { Logger } from '../common/log.js';
import { AdminClient } from '../metadata/index.js';
import { ResilientInformer, errorText, type InformerState } from './informer.js';
import { FINALIZER, KubeClient, type EventInput } from './k8s.js';
import { LeaderElector } from './leader.js';
import { names } from './objects.js';
import { observeNode, observeNodeZones, observePods, trackMissing } from './observe.js';
import { reconcile } from './reconcile.js';
import { API_VERSION, GRPC_PORT, KIND, ZONE_ANNOTATION, objectKey, type Action, type CairnCluster, type KubeObject, type Observed, type ObservedMetadata } from './types.js';

export interface OperatorOptions {
  readonly kubeConfig: KubeConfig;
  /** The namespace whose CairnClusters this operator manages; '' = every namespace. */
  readonly namespace: string;
  /** Where the leader-election Lease lives (default: `namespace`, or `default` when that is ''). */
  readonly leaseNamespace?: string;
  /** This replica's name in the Lease (the pod name in a cluster). */
  readonly identity: string;
  readonly leaseName?: string;
  readonly leaseDurationSeconds?: number;
  /** Metadata Admin address for every cluster; default the cluster's metadata Service. */
  readonly metadataAddr?: string;
  /** Period of the reconcile pass besides the informer-triggered ones (default 5 s). */
  readonly intervalMs?: number;
  /** Every this long all objects are applied again, whatever the caches say (default 5 min). */
  readonly resyncMs?: number;
  /** Deadline of each Admin call (default 5 s). */
  readonly adminTimeoutMs?: number;
  readonly log: Logger;
  readonly registry?: Registry;
  readonly now?: () => number;
}

export interface Operator {
  start(): void;
  stop(): Promise<void>;
  isLeader(): boolean;
  /** Every informer has listed and is watching. */
  ready(): boolean;
}

type Cluster = CairnCluster & { readonly metadata: CairnCluster['metadata'] & { readonly resourceVersion?: string; readonly finalizers?: readonly string[] } };

interface ClusterState {
  /** What we applied, by objectKey, with the generation the server gave it. */
  readonly memo: Map<string, { readonly object: KubeObject; readonly generation: number | undefined }>;
  readonly secrets: Set<string>;
  readonly missing: Map<string, number>;
  readonly events: Map<string, number>;
  lastResyncMs: number;
  admin: { readonly key: string; readonly client: AdminClient } | undefined;
}

interface OperatorMetrics {
  readonly passes: Counter<'result'>;
  readonly actions: Counter<'kind' | 'result'>;
  readonly passSeconds: Histogram;
  readonly leader: Gauge;
  readonly informerRestarts: Counter<'kind'>;
  readonly metadataReachable: Gauge<'cluster'>;
}

function operatorMetrics(registry: Registry | undefined): OperatorMetrics {
  const registers = registry === undefined ? [] : [registry];
  return {
    passes: new Counter({ name: 'cairn_operator_reconcile_total', help: 'Reconcile passes over one CairnCluster, by result.', labelNames: ['result'], registers }),
    actions: new Counter({ name: 'cairn_operator_actions_total', help: 'Actions the operator executed, by kind and result.', labelNames: ['kind', 'result'], registers }),
    passSeconds: new Histogram({ name: 'cairn_operator_reconcile_seconds', help: 'Duration of one reconcile pass over one CairnCluster.', buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 30], registers }),
    leader: new Gauge({ name: 'cairn_operator_leader', help: '1 while this replica holds the leader Lease.', registers }),
    informerRestarts: new Counter({ name: 'cairn_operator_informer_restarts_total', help: 'Informer restarts after errors, by kind.', labelNames: ['kind'], registers }),
    metadataReachable: new Gauge({ name: 'cairn_operator_metadata_reachable', help: '1 when the last Admin ListNodes of a cluster succeeded.', labelNames: ['cluster'], registers }),
  };
}

const ownerRef = (c: CairnCluster) => ({ apiVersion: API_VERSION, kind: KIND, name: c.metadata.name, uid: c.metadata.uid, controller: true, blockOwnerDeletion: true });

type Spec = { replicas?: number; updateStrategy?: { rollingUpdate?: { partition?: number } } };

export function createOperator(options: OperatorOptions): Operator {
  const log = options.log.child({ component: 'operator' });
  const now = options.now ?? Date.now;
  const ns = options.namespace;
  const kube = new KubeClient(options.kubeConfig, options.identity);
  const metrics = operatorMetrics(options.registry);
  const states = new Map<string, ClusterState>();
  const intervalMs = options.intervalMs ?? 5000;
  const resyncMs = options.resyncMs ?? 300_000;

  let timer: NodeJS.Timeout | undefined;
  let debounce: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let dirty = false;
  let stopped = true;

  const kick = (): void => {
    if (stopped || debounce !== undefined) return;
    debounce = setTimeout(() => {
      debounce = undefined;
      runPass();
    }, 100);
  };
  const onState = (state: InformerState, kind: string): void => {
    if (state === 'backoff') metrics.informerRestarts.inc({ kind });
  };
  const informer = <T extends KubernetesObject>(apiVersion: string, kind: string, plural: string, labelSelector?: string) =>
    new ResilientInformer<T>({ kubeConfig: options.kubeConfig, apiVersion, kind, plural, namespace: ns, log, onChange: kick, onState, ...(labelSelector !== undefined ? { labelSelector } : {}) });
  const clusters = informer<KubernetesObject>(API_VERSION, KIND, 'cairnclusters');
  const statefulSets = informer<KubernetesObject & { spec?: Spec }>('apps/v1', 'StatefulSet', 'statefulsets', 'app.kubernetes.io/managed-by=cairn-operator');
  const deployments = informer<KubernetesObject>('apps/v1', 'Deployment', 'deployments', 'app.kubernetes.io/managed-by=cairn-operator');
  const pods = informer<KubernetesObject>('v1', 'Pod', 'pods', 'app.kubernetes.io/name=cairn');
  const pvcs = informer<KubernetesObject>('v1', 'PersistentVolumeClaim', 'persistentvolumeclaims');
  // Nodes are cluster-scoped: their zone labels become the block-node pods' zone annotations.
  const k8sNodes = new ResilientInformer<KubernetesObject>({ kubeConfig: options.kubeConfig, apiVersion: 'v1', kind: 'Node', plural: 'nodes', namespace: '', log, onChange: kick, onState });
  const informers = [clusters, statefulSets, deployments, pods, pvcs, k8sNodes];

  const leader = new LeaderElector({
    client: kube,
    namespace: options.leaseNamespace ?? (ns === '' ? 'default' : ns),
    name: options.leaseName ?? 'cairn-operator',
    identity: options.identity,
    leaseDurationSeconds: options.leaseDurationSeconds ?? 15,
    log,
    now,
    onChange: (isLeader) => {
      metrics.leader.set(isLeader ? 1 : 0);
      // A new term starts from what the API server holds, not from a previous term's memory.
      if (isLeader) {
        for (const s of states.values()) s.memo.clear();
        kick();
      }
    },
  });

  function stateOf(c: CairnCluster): ClusterState {
    let s = states.get(c.metadata.uid);
    if (s === undefined) {
      s = { memo: new Map(), secrets: new Set(), missing: new Map(), events: new Map(), lastResyncMs: now(), admin: undefined };
      states.set(c.metadata.uid, s);
    }
    return s;
  }

  async function event(c: CairnCluster, s: ClusterState, e: EventInput): Promise<void> {
    const key = `${e.reason}\u0000${e.note}`;
    const last = s.events.get(key);
    if (last !== undefined && now() - last < 300_000) return;
    s.events.set(key, now());
    await kube.event(c, e).catch((err: unknown) => log.warn({ err: errorText(err) }, 'could not record an event'));
  }

  async function adminFor(c: CairnCluster, s: ClusterState): Promise<AdminClient | undefined> {
    const addr = options.metadataAddr ?? `${names(c).metadata}.${c.metadata.namespace}.svc:${GRPC_PORT}`;
    const tlsName = c.spec.tls?.secretName ?? '';
    const key = `${addr}\u0000${tlsName}`;
    if (s.admin?.key === key) return s.admin.client;
    s.admin?.client.close();
    s.admin = undefined;
    // The operator signs its Admin tokens with the cluster's own secret, read from the API server.
    const secretText = await kube.readSecretKey(c.metadata.namespace, names(c).auth, 'auth.key');
    if (secretText === undefined) return undefined;
    const secret = Buffer.from(secretText.toString('utf8').trim(), 'base64url');
    let creds: ChannelCredentials = grpcCredentials.createInsecure();
    if (tlsName !== '') {
      const [ca, crt, tlsKey] = await Promise.all(['ca.crt', 'tls.crt', 'tls.key'].map((k) => kube.readSecretKey(c.metadata.namespace, tlsName, k)));
      if (crt === undefined || tlsKey === undefined) return undefined;
      creds = grpcCredentials.createSsl(ca ?? null, tlsKey, crt);
    }
    const tokens = new ServiceTokenSource(secret);
    const client = new AdminClient({ address: addr, credentials: creds, token: () => tokens.token(), timeoutMs: options.adminTimeoutMs ?? 5000 });
    s.admin = { key, client };
    return client;
  }

  async function observeMetadata(c: CairnCluster, s: ClusterState): Promise<ObservedMetadata> {
    try {
      const admin = await adminFor(c, s);
      if (admin === undefined) throw new Error('no auth secret yet');
      const nodes = await admin.listNodes();
      metrics.metadataReachable.set({ cluster: c.metadata.name }, 1);
      return { reachable: true, nodes: nodes.map(observeNode) };
    } catch (err) {
      metrics.metadataReachable.set({ cluster: c.metadata.name }, 0);
      log.debug({ cluster: c.metadata.name, err: errorText(err) }, 'metadata unreachable');
      return { reachable: false };
    }
  }

  /** Drops memory of objects someone else changed or deleted, so reconcile applies them again. */
  function invalidate(s: ClusterState): void {
    if (now() - s.lastResyncMs >= resyncMs) {
      s.memo.clear();
      s.secrets.clear();
      s.lastResyncMs = now();
      return;
    }
    for (const [key, m] of s.memo) {
      const cache = m.object.kind === 'StatefulSet' ? statefulSets : m.object.kind === 'Deployment' ? deployments : undefined;
      if (cache === undefined) continue;
      const live = cache.get(m.object.metadata.name, m.object.metadata.namespace ?? '');
      if (live === undefined || (m.generation !== undefined && live.metadata?.generation !== m.generation)) s.memo.delete(key);
    }
  }

  async function execute(c: CairnCluster, s: ClusterState, o: Observed, a: Action): Promise<void> {
    const admin = s.admin?.client;
    switch (a.kind) {
      case 'apply': {
        const live = await kube.apply(a.object);
        s.memo.set(objectKey(a.object), { object: a.object, generation: live.metadata?.generation });
        if (a.object.kind === 'StatefulSet' && a.object.metadata.name === names(c).blocknode && o.blockStatefulSet !== undefined) {
          const spec = a.object['spec'] as Required<Spec>;
          const partition = spec.updateStrategy.rollingUpdate?.partition ?? 0;
          if (spec.replicas !== o.blockStatefulSet.replicas) await event(c, s, { type: 'Normal', reason: 'Scaled', action: 'Scale', note: `block-node StatefulSet ${o.blockStatefulSet.replicas} → ${spec.replicas} replicas` });
          if (partition !== o.blockStatefulSet.partition) await event(c, s, { type: 'Normal', reason: 'UpgradeStep', action: 'Upgrade', note: `block-node partition ${o.blockStatefulSet.partition} → ${partition}` });
        }
        return;
      }
      case 'ensureSecret':
        if (await kube.ensureSecret(c, a.name, a.key, a.bytes, [ownerRef(c)])) await event(c, s, { type: 'Normal', reason: 'SecretCreated', action: 'Create', note: `created Secret ${a.name}` });
        s.secrets.add(a.name);
        return;
      case 'status':
        await kube.writeStatus(c, a.status);
        return;
      case 'annotateZone':
        await kube.annotatePod(c.metadata.namespace, a.pod, { [ZONE_ANNOTATION]: a.zone });
        await event(c, s, { type: 'Normal', reason: 'ZoneAssigned', action: 'Annotate', note: `${a.pod}: zone ${a.zone === '' ? '(none: its node has no zone label)' : a.zone}` });
        return;
      case 'markDown':
      case 'admit':
      case 'drain':
      case 'remove': {
        if (admin === undefined) throw new Error('metadata client gone');
        // MarkNodeDown is capped at RF − 1 down by the metadata service too, so a stale decision
        // cannot take more nodes down than reconcile allowed.
        const call = { admit: () => admin.markNodeUp(a.nodeId), drain: () => admin.drainNode(a.nodeId), remove: () => admin.removeNode(a.nodeId), markDown: () => admin.markNodeDown(a.nodeId) }[a.kind];
        await call();
        const said = {
          admit: { type: 'Normal', reason: 'NodeAdmitted', note: `admitted block node ${a.nodeId}` },
          drain: { type: 'Normal', reason: 'NodeDraining', note: `draining block node ${a.nodeId}` },
          remove: { type: 'Normal', reason: 'NodeRemoved', note: `removed drained block node ${a.nodeId}` },
          markDown: { type: 'Warning', reason: 'NodeMarkedDown', note: `${a.nodeId} NotReady or missing for ${c.spec.failoverDelaySeconds}s: marked down, re-replication starts` },
        } as const;
        await event(c, s, { ...said[a.kind], action: a.kind });
        return;
      }
    }
  }

  async function finalize(c: Cluster, s: ClusterState | undefined): Promise<void> {
    if ((c.spec.volumeReclaimPolicy ?? 'Retain') === 'Delete') {
      const prefixes = [`data-${names(c).blocknode}-`, `data-${names(c).metadata}-`];
      const doomed = pvcs.list().filter((p) => p.metadata?.namespace === c.metadata.namespace && prefixes.some((x) => (p.metadata?.name ?? '').startsWith(x)));
      for (const p of doomed) await kube.deletePvc(c.metadata.namespace, p.metadata?.name ?? '');
      if (s !== undefined && doomed.length > 0) await event(c, s, { type: 'Normal', reason: 'VolumesDeleted', action: 'Delete', note: `deleted ${doomed.length} PersistentVolumeClaims (volumeReclaimPolicy: Delete)` });
    }
    await kube.setFinalizers(c, (c.metadata.finalizers ?? []).filter((f) => f !== FINALIZER));
    s?.admin?.client.close();
    states.delete(c.metadata.uid);
    log.info({ cluster: c.metadata.name }, 'cluster deleted; finalizer removed');
  }

  async function reconcileCluster(c: Cluster): Promise<void> {
    const finalizers = c.metadata.finalizers ?? [];
    if (c.metadata.deletionTimestamp !== undefined) {
      if (finalizers.includes(FINALIZER)) await finalize(c, states.get(c.metadata.uid));
      return;
    }
    const s = stateOf(c);
    if (!finalizers.includes(FINALIZER)) await kube.setFinalizers(c, [...finalizers, FINALIZER]);
    invalidate(s);
    const nowMs = now();
    const sts = statefulSets.get(names(c).blocknode, c.metadata.namespace);
    const blockStatefulSet = sts === undefined ? undefined : { replicas: sts.spec?.replicas ?? 1, partition: sts.spec?.updateStrategy?.rollingUpdate?.partition ?? 0 };
    const blockPods = observePods(c, pods.list(), nowMs);
    const missingSinceMs = trackMissing(c, blockStatefulSet?.replicas ?? 0, blockPods, s.missing, nowMs);
    for (const name of [names(c).auth, names(c).master]) if (!s.secrets.has(name) && (await kube.secretExists(c.metadata.namespace, name))) s.secrets.add(name);
    const metadata = await observeMetadata(c, s);
    const observed: Observed = {
      nowMs,
      objects: new Map([...s.memo].map(([k, v]) => [k, v.object])),
      secrets: s.secrets,
      blockPods,
      missingSinceMs,
      nodeZones: observeNodeZones(c, k8sNodes.list()),
      ...(blockStatefulSet !== undefined ? { blockStatefulSet } : {}),
      metadata,
      ...(c.status !== undefined ? { status: c.status } : {}),
    };
    // Cluster-map changes go first: the StatefulSet shrinks only after RemoveNode succeeded in
    // this same pass (reconcile already required the drain to be done).
    const order: Record<Action['kind'], number> = { ensureSecret: 0, admit: 1, markDown: 1, drain: 1, remove: 1, apply: 2, annotateZone: 2, status: 3 };
    const actions = reconcile(c, observed).sort((x, y) => order[x.kind] - order[y.kind]);
    let removeFailed = false;
    for (const a of actions) {
      // Leadership is checked before every write: a replica that lost the Lease stops mid-pass.
      if (!leader.isLeader()) return;
      if (removeFailed && a.kind === 'apply' && a.object.kind === 'StatefulSet' && a.object.metadata.name === names(c).blocknode) continue;
      try {
        await execute(c, s, observed, a);
        metrics.actions.inc({ kind: a.kind, result: 'ok' });
      } catch (err) {
        metrics.actions.inc({ kind: a.kind, result: 'error' });
        if (a.kind === 'remove') removeFailed = true;
        const what = a.kind === 'apply' ? `${a.kind} ${a.object.kind}/${a.object.metadata.name}` : 'nodeId' in a ? `${a.kind} ${a.nodeId}` : a.kind;
        log.warn({ cluster: c.metadata.name, action: what, err: errorText(err) }, 'action failed');
        if (a.kind !== 'apply' && a.kind !== 'status') await event(c, s, { type: 'Warning', reason: 'ActionFailed', action: a.kind, note: `${what}: ${errorText(err)}` });
        // The next pass starts from fresh observations.
        if (a.kind === 'apply') s.memo.delete(objectKey(a.object));
      }
    }
  }

  async function pass(): Promise<void> {
    if (!leader.isLeader() || !informers.every((i) => i.synced)) return;
    for (const raw of clusters.list()) {
      if (stopped || !leader.isLeader()) return;
      const c = raw as unknown as Cluster;
      const end = metrics.passSeconds.startTimer();
      try {
        await reconcileCluster(c);
        metrics.passes.inc({ result: 'ok' });
      } catch (err) {
        metrics.passes.inc({ result: 'error' });
        log.warn({ cluster: c.metadata.name, err: errorText(err) }, 'reconcile pass failed');
      } finally {
        end();
      }
    }
    // Clusters that disappeared without our finalizer (e.g. removed by hand).
    const live = new Set(clusters.list().map((c) => c.metadata?.uid));
    for (const [uid, s] of states) {
      if (!live.has(uid)) {
        s.admin?.client.close();
        states.delete(uid);
      }
    }
  }

  function runPass(): void {
    if (running !== undefined) {
      dirty = true;
      return;
    }
    running = pass()
      .catch((err: unknown) => log.error({ err: errorText(err) }, 'operator pass failed'))
      .finally(() => {
        running = undefined;
        if (dirty && !stopped) {
          dirty = false;
          runPass();
        }
      });
  }

  return {
    start() {
      stopped = false;
      for (const i of informers) i.start();
      leader.start();
      timer = setInterval(runPass, intervalMs);
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      clearTimeout(debounce);
      await running;
      await leader.stop();
      await Promise.all(informers.map((i) => i.stop()));
      for (const s of states.values()) s.admin?.client.close();
      states.clear();
      metrics.leader.set(0);
    },
    isLeader: () => leader.isLeader(),
    ready: () => informers.every((i) => i.synced),
  };
}
