// Desired Kubernetes objects for a CairnCluster: pure builders, one per workload. Reconcile
// decides the moving parts (block replicas, partition, PDB budget) and passes them in.
import { API_VERSION, GRPC_PORT, HTTP_PORT, KIND, ZONE_ANNOTATION, type CairnCluster, type KubeObject, type ResourcesSpec } from './types.js';

export const DEFAULT_TOPOLOGY_KEY = 'topology.kubernetes.io/zone';

export type Component = 'blocknode' | 'metadata' | 'gateway' | 'media';

export const names = (c: CairnCluster) => ({
  config: `${c.metadata.name}-config`,
  auth: `${c.metadata.name}-auth`,
  master: `${c.metadata.name}-master`,
  blocknode: `${c.metadata.name}-blocknode`,
  metadata: `${c.metadata.name}-metadata`,
  gateway: `${c.metadata.name}-gateway`,
  media: `${c.metadata.name}-media`,
});

export function blockPodName(c: CairnCluster, ordinal: number): string {
  return `${names(c).blocknode}-${ordinal}`;
}

function selector(c: CairnCluster, component: Component): Record<string, string> {
  return { 'app.kubernetes.io/name': 'cairn', 'app.kubernetes.io/instance': c.metadata.name, 'app.kubernetes.io/component': component };
}

function meta(c: CairnCluster, name: string, component: Component | 'config') {
  return {
    name,
    namespace: c.metadata.namespace,
    labels: { 'app.kubernetes.io/name': 'cairn', 'app.kubernetes.io/instance': c.metadata.name, 'app.kubernetes.io/component': component, 'app.kubernetes.io/managed-by': 'cairn-operator' },
    // Garbage collection removes everything with the cluster; volumes follow volumeReclaimPolicy.
    ownerReferences: [{ apiVersion: API_VERSION, kind: KIND, name: c.metadata.name, uid: c.metadata.uid, controller: true, blockOwnerDeletion: true }],
  };
}

const RESTRICTED_CONTAINER = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};
const POD_SECURITY = { runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' } };

function resources(r: ResourcesSpec | undefined): Record<string, unknown> {
  return { requests: { cpu: '100m', memory: '256Mi', ...r?.requests }, ...(r?.limits ? { limits: { ...r.limits } } : {}) };
}

function tlsEnv(c: CairnCluster): { env: Record<string, unknown>[]; volumes: Record<string, unknown>[]; mounts: Record<string, unknown>[] } {
  if (c.spec.tls === undefined) return { env: [{ name: 'CAIRN_ALLOW_PLAINTEXT', value: 'true' }], volumes: [], mounts: [] };
  return {
    env: [
      { name: 'CAIRN_TLS_CERT', value: '/etc/cairn/tls/tls.crt' },
      { name: 'CAIRN_TLS_KEY', value: '/etc/cairn/tls/tls.key' },
      { name: 'CAIRN_TLS_CA', value: '/etc/cairn/tls/ca.crt' },
    ],
    volumes: [{ name: 'tls', secret: { secretName: c.spec.tls.secretName, defaultMode: 0o440 } }],
    mounts: [{ name: 'tls', mountPath: '/etc/cairn/tls', readOnly: true }],
  };
}

function container(c: CairnCluster, role: Component, extraEnv: Record<string, unknown>[], r: ResourcesSpec | undefined, extraMounts: Record<string, unknown>[]) {
  const tls = tlsEnv(c);
  return {
    name: 'cairn',
    image: `${c.spec.image.repository}:${c.spec.image.tag}`,
    imagePullPolicy: c.spec.image.pullPolicy ?? 'IfNotPresent',
    args: ['server', '--role', role],
    env: [
      { name: 'CAIRN_HOST', value: '0.0.0.0' },
      { name: 'CAIRN_GRPC_PORT', value: String(GRPC_PORT) },
      { name: 'CAIRN_HTTP_PORT', value: String(HTTP_PORT) },
      { name: 'CAIRN_DATA_DIR', value: '/var/lib/cairn' },
      { name: 'CAIRN_AUTH_SECRET_FILE', value: '/etc/cairn/auth/auth.key' },
      ...tls.env,
      ...extraEnv,
    ],
    ports: [{ name: 'grpc', containerPort: GRPC_PORT }, { name: 'http', containerPort: HTTP_PORT }],
    readinessProbe: { httpGet: { path: '/readyz', port: 'http' }, periodSeconds: 5 },
    livenessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 10, failureThreshold: 6 },
    resources: resources(r),
    securityContext: RESTRICTED_CONTAINER,
    volumeMounts: [
      { name: 'auth', mountPath: '/etc/cairn/auth', readOnly: true },
      { name: 'tmp', mountPath: '/tmp' },
      ...tls.mounts,
      ...extraMounts,
    ],
  };
}

function podSpec(c: CairnCluster, role: Component, extraEnv: Record<string, unknown>[], r: ResourcesSpec | undefined, extraMounts: Record<string, unknown>[], extraVolumes: Record<string, unknown>[], extra: Record<string, unknown> = {}) {
  return {
    securityContext: POD_SECURITY,
    automountServiceAccountToken: false,
    containers: [container(c, role, extraEnv, r, extraMounts)],
    volumes: [
      // 0440: readable by the pod's group (fsGroup 10001), not by the world.
      { name: 'auth', secret: { secretName: names(c).auth, defaultMode: 0o440 } },
      { name: 'tmp', emptyDir: {} },
      ...tlsEnv(c).volumes,
      ...extraVolumes,
    ],
    ...extra,
  };
}

function metadataAddr(c: CairnCluster): string {
  return `${names(c).metadata}.${c.metadata.namespace}.svc:${GRPC_PORT}`;
}

function pvc(s: { size: string; storageClassName?: string }) {
  return {
    metadata: { name: 'data' },
    spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: s.size } }, ...(s.storageClassName !== undefined ? { storageClassName: s.storageClassName } : {}) },
  };
}

export function configMap(c: CairnCluster): KubeObject {
  const config = { replicationFactor: c.spec.replicationFactor, writeQuorum: c.spec.writeQuorum, failoverDelayMs: c.spec.failoverDelaySeconds * 1000 };
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta(c, names(c).config, 'config'), data: { 'config.json': JSON.stringify(config, null, 2) } };
}

const configMount = { name: 'config', mountPath: '/etc/cairn/config', readOnly: true };
const configEnv = { name: 'CAIRN_CONFIG', value: '/etc/cairn/config/config.json' };
const configVolume = (c: CairnCluster) => ({ name: 'config', configMap: { name: names(c).config } });

/** The pod's annotations as a downward-API file: kubelet rewrites it when they change. */
const PODINFO_VOLUME = { name: 'podinfo', downwardAPI: { items: [{ path: 'annotations', fieldRef: { fieldPath: 'metadata.annotations' } }] } };
const PODINFO_FILE = '/etc/cairn/podinfo/annotations';

/**
 * Waits (≤ 120 s, then exits 1 so kubelet retries with backoff) until the pod carries
 * ZONE_ANNOTATION. The downward-API file lists annotations as `key="value"` lines; an empty value
 * is a node without a zone label. Plain `node -e` in the Cairn image: no API access in the pod.
 */
export const ZONE_WAIT_SCRIPT = [
  "const fs = require('node:fs');",
  'const file = process.env.CAIRN_PODINFO_FILE;',
  `const key = '${ZONE_ANNOTATION}=';`,
  'const until = Date.now() + 120000;',
  '(function poll() {',
  "  let text = '';",
  "  try { text = fs.readFileSync(file, 'utf8'); } catch {}",
  "  const line = text.split('\\n').find((l) => l.startsWith(key));",
  "  if (line !== undefined) { console.log('zone ' + line.slice(key.length)); process.exit(0); }",
  "  if (Date.now() > until) { console.error('no ' + key.slice(0, -1) + ' annotation after 120 s: the operator sets it once the pod is scheduled'); process.exit(1); }",
  '  setTimeout(poll, 500);',
  '})();',
].join('\n');

function zoneInitContainer(c: CairnCluster) {
  return {
    name: 'zone',
    image: `${c.spec.image.repository}:${c.spec.image.tag}`,
    imagePullPolicy: c.spec.image.pullPolicy ?? 'IfNotPresent',
    command: ['node', '-e', ZONE_WAIT_SCRIPT],
    env: [{ name: 'CAIRN_PODINFO_FILE', value: PODINFO_FILE }],
    resources: { requests: { cpu: '10m', memory: '48Mi' }, limits: { memory: '128Mi' } },
    securityContext: RESTRICTED_CONTAINER,
    volumeMounts: [{ name: 'podinfo', mountPath: '/etc/cairn/podinfo', readOnly: true }],
  };
}

/** The block-node StatefulSet: `replicas` and `partition` come from reconcile's scale and upgrade gates. */
export function blockStatefulSet(c: CairnCluster, replicas: number, partition: number): KubeObject {
  const b = c.spec.blocknodes;
  const topologyKey = b.topologyKey ?? DEFAULT_TOPOLOGY_KEY;
  const sel = selector(c, 'blocknode');
  const env = [
    configEnv,
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'CAIRN_NODE_ID', value: '$(POD_NAME)' },
    { name: 'CAIRN_METADATA_ADDR', value: metadataAddr(c) },
    { name: 'CAIRN_ADVERTISE_ADDR', value: `$(POD_NAME).${names(c).blocknode}.${c.metadata.namespace}.svc:${GRPC_PORT}` },
    // The node's failure domain, copied onto the pod by the operator; resolved when the container
    // starts, which is after the zone init container saw the annotation.
    { name: 'CAIRN_ZONE', valueFrom: { fieldRef: { fieldPath: `metadata.annotations['${ZONE_ANNOTATION}']` } } },
  ];
  const zones = b.zones ?? [];
  const affinity: Record<string, unknown> = {
    // One block node per Kubernetes node where possible: two replicas on one host share its fate.
    podAntiAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 100, podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: sel } } }] },
    ...(zones.length > 0 ? { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: topologyKey, operator: 'In', values: [...zones] }] }] } } } : {}),
  };
  const retain = (c.spec.volumeReclaimPolicy ?? 'Retain') === 'Retain';
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: meta(c, names(c).blocknode, 'blocknode'),
    spec: {
      replicas,
      serviceName: names(c).blocknode,
      // Pods start together; order is kept by the operator's drain and upgrade gates instead.
      podManagementPolicy: 'Parallel',
      selector: { matchLabels: sel },
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition } },
      // A scaled-away pod was drained first, so its volume holds nothing needed; a later scale-up
      // then starts empty and registers under a new incarnation.
      persistentVolumeClaimRetentionPolicy: { whenDeleted: retain ? 'Retain' : 'Delete', whenScaled: 'Delete' },
      template: {
        metadata: { labels: sel },
        spec: podSpec(c, 'blocknode', env, b.resources, [{ name: 'data', mountPath: '/var/lib/cairn' }, configMount], [configVolume(c), PODINFO_VOLUME], {
          affinity,
          topologySpreadConstraints: [{ maxSkew: 1, topologyKey, whenUnsatisfiable: 'ScheduleAnyway', labelSelector: { matchLabels: sel } }],
          initContainers: [zoneInitContainer(c)],
          terminationGracePeriodSeconds: 60,
        }),
      },
      volumeClaimTemplates: [pvc(b.storage)],
    },
  };
}

/** LevelDB: one StatefulSet pod with a volume; PostgreSQL: a stateless Deployment reading the URL from a Secret. */
export function metadataWorkload(c: CairnCluster): KubeObject {
  const m = c.spec.metadata;
  const sel = selector(c, 'metadata');
  const env: Record<string, unknown>[] = [configEnv, { name: 'CAIRN_REPLICATION_FACTOR', value: String(c.spec.replicationFactor) }, { name: 'CAIRN_FAILOVER_DELAY_MS', value: String(c.spec.failoverDelaySeconds * 1000) }];
  if (m.backend === 'postgres' && m.postgres !== undefined) {
    env.push({ name: 'CAIRN_POSTGRES_URL', valueFrom: { secretKeyRef: { name: m.postgres.secretRef.name, key: m.postgres.secretRef.key } } });
    return {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta(c, names(c).metadata, 'metadata'),
      spec: {
        replicas: m.replicas ?? 2,
        selector: { matchLabels: sel },
        template: { metadata: { labels: sel }, spec: podSpec(c, 'metadata', env, m.resources, [{ name: 'data', mountPath: '/var/lib/cairn' }, configMount], [{ name: 'data', emptyDir: {} }, configVolume(c)]) },
      },
    };
  }
  const retain = (c.spec.volumeReclaimPolicy ?? 'Retain') === 'Retain';
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: meta(c, names(c).metadata, 'metadata'),
    spec: {
      replicas: 1,
      serviceName: names(c).metadata,
      selector: { matchLabels: sel },
      persistentVolumeClaimRetentionPolicy: { whenDeleted: retain ? 'Retain' : 'Delete', whenScaled: 'Retain' },
      template: { metadata: { labels: sel }, spec: podSpec(c, 'metadata', env, m.resources, [{ name: 'data', mountPath: '/var/lib/cairn' }, configMount], [configVolume(c)]) },
      volumeClaimTemplates: [pvc(m.storage ?? { size: '10Gi' })],
    },
  };
}

export function statelessDeployment(c: CairnCluster, role: 'gateway' | 'media', replicas: number, r: ResourcesSpec | undefined): KubeObject {
  const sel = selector(c, role);
  // Every gateway of a cluster must seal with the same master key: one Secret, never a per-pod file.
  const env = [configEnv, { name: 'CAIRN_METADATA_ADDR', value: metadataAddr(c) }, { name: 'CAIRN_MASTER_KEY_FILE', value: '/etc/cairn/master/master.key' }];
  const mounts = [{ name: 'data', mountPath: '/var/lib/cairn' }, configMount, { name: 'master', mountPath: '/etc/cairn/master', readOnly: true }];
  const volumes = [{ name: 'data', emptyDir: {} }, configVolume(c), { name: 'master', secret: { secretName: names(c).master, defaultMode: 0o440 } }];
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(c, names(c)[role], role),
    spec: {
      replicas,
      selector: { matchLabels: sel },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: { metadata: { labels: sel }, spec: podSpec(c, role, env, r, mounts, volumes) },
    },
  };
}

export function service(c: CairnCluster, component: Component, headless: boolean): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(c, names(c)[component], component),
    spec: {
      selector: selector(c, component),
      ports: [{ name: 'grpc', port: GRPC_PORT, targetPort: 'grpc' }, { name: 'http', port: HTTP_PORT, targetPort: 'http' }],
      // Block nodes register their per-pod DNS name before they are Ready, so it must resolve early.
      ...(headless ? { clusterIP: 'None', publishNotReadyAddresses: true } : {}),
    },
  };
}

export function pdb(c: CairnCluster, component: Component, maxUnavailable: number): KubeObject {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: meta(c, names(c)[component], component),
    spec: { maxUnavailable, selector: { matchLabels: selector(c, component) } },
  };
}
