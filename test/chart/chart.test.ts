// The Helm chart with the real helm binary: lint --strict and template for three values files;
// every rendered object validates against the Kubernetes schemas, the CRD rejects invalid specs,
// pods are restricted, RBAC is narrow, alerts link existing runbooks and name exported metrics.
// The CRD's CEL rules run through the same validator the fake API server uses (test/k8s/crd.ts).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { parseAllDocuments } from 'yaml';
import { cluster } from '../operator/sim.js';
import { findHelm, requireHelm } from './helm.js';
import { validateCustomResource } from '../k8s/crd.js';
import { crdValidator, validateKubeObject } from './validate.js';

const ROOT = join(import.meta.dirname, '..', '..');
const CHART = join(ROOT, 'charts', 'cairn');
const VALUES = { default: undefined, full: join(import.meta.dirname, 'values', 'full.yaml'), minimal: join(import.meta.dirname, 'values', 'minimal.yaml') } as const;

type Obj = { apiVersion: string; kind: string; metadata: { name: string; annotations?: Record<string, string> }; [k: string]: unknown };

function helm(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(findHelm() ?? 'helm', args, { encoding: 'utf8', timeout: 60_000, env: { ...process.env, HELM_CACHE_HOME: '/tmp/cairn-helm-cache', HELM_CONFIG_HOME: '/tmp/cairn-helm-config', HELM_DATA_HOME: '/tmp/cairn-helm-data' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function render(values: string | undefined, extra: string[] = []): Obj[] {
  const r = helm(['template', 'cairn', CHART, '--namespace', 'cairn-system', ...(values ? ['-f', values] : []), ...extra]);
  if (r.status !== 0) throw new Error(`helm template failed: ${r.stderr}`);
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj | null).filter((o): o is Obj => o !== null);
}

function crd(): Obj {
  const o = render(undefined).find((x) => x.kind === 'CustomResourceDefinition');
  if (o === undefined) throw new Error('no CRD rendered');
  return o;
}

function crdSchema(c: Obj) {
  const versions = (c['spec'] as { versions: { schema: { openAPIV3Schema: Record<string, unknown> } }[] }).versions;
  return versions[0]!.schema.openAPIV3Schema;
}

/**
 * Validate a CairnCluster object like the API server would: the schema (ajv, and the fake API
 * server's structural validator), then the CEL rules, evaluated by a real CEL implementation.
 */
function admit(schema: Record<string, unknown>, obj: unknown): string[] {
  const validate = crdValidator(schema);
  const errors = validate(obj) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message ?? ''}`);
  const causes = validateCustomResource(schema, obj as Record<string, unknown>, undefined, undefined);
  return [...errors, ...causes.map((c) => `${c.field}: ${c.message}`)];
}

for (const [name, file] of Object.entries(VALUES)) {
  test(`helm lint --strict and every rendered object validates: ${name} values`, async (t) => {
    if (!requireHelm(t)) return;
    const lint = helm(['lint', '--strict', CHART, ...(file ? ['-f', file] : [])]);
    t.is(lint.status, 0, lint.stdout + lint.stderr);
    const objects = render(file);
    t.true(objects.length >= 6);
    const schema = crdSchema(crd());
    for (const o of objects) {
      const id = `${o.kind}/${o.metadata.name}`;
      if (o.apiVersion === 'cairn.dev/v1alpha1') t.deepEqual(admit(schema, o), [], id);
      // Prometheus Operator and cert-manager kinds have no built-in schema: check their shape.
      else if (o.apiVersion === 'monitoring.coreos.com/v1' || o.apiVersion === 'cert-manager.io/v1') t.truthy(o['spec'], id);
      else await t.notThrowsAsync(validateKubeObject(o), id);
    }
  });
}

test('the CRD is valid, kept on uninstall, has printer columns, a status subresource and the conditions', async (t) => {
  if (!requireHelm(t)) return;
  const c = crd();
  await t.notThrowsAsync(validateKubeObject(c));
  t.is(c.metadata.annotations?.['helm.sh/resource-policy'], 'keep');
  const v = (c['spec'] as { versions: { subresources: unknown; additionalPrinterColumns: { name: string }[] }[] }).versions[0]!;
  t.deepEqual(v.subresources, { status: {} });
  t.true(v.additionalPrinterColumns.map((x) => x.name).includes('Ready'));
  t.regex(JSON.stringify(crdSchema(c)), /"ScaleDownBlocked"/);
  t.false(render(VALUES.minimal).some((o) => o.kind === 'CustomResourceDefinition'));
});

test('the CRD accepts the operator test fixtures and rejects invalid specs', (t) => {
  if (!requireHelm(t)) return;
  const schema = crdSchema(crd());
  const good = cluster();
  t.deepEqual(admit(schema, good), []);
  t.deepEqual(admit(schema, cluster({ metadata: { backend: 'postgres', replicas: 2, postgres: { secretRef: { name: 'pg', key: 'url' } } } })), []);
  const bad: [string, Record<string, unknown>][] = [
    ['replicas < replicationFactor', { blocknodes: { replicas: 2, storage: { size: '1Gi' } } }],
    ['writeQuorum > replicationFactor', { writeQuorum: 4 }],
    ['postgres without a secret', { metadata: { backend: 'postgres' } }],
    ['unknown backend', { metadata: { backend: 'sqlite' } }],
    ['bad storage size', { blocknodes: { replicas: 3, storage: { size: 'lots' } } }],
    ['replicationFactor 0', { replicationFactor: 0, writeQuorum: 0 }],
    ['negative gateways', { gateway: { replicas: -1 } }],
    ['failover delay too short', { failoverDelaySeconds: 1 }],
    ['fractional replicas', { blocknodes: { replicas: 3.5, storage: { size: '1Gi' } } }],
  ];
  for (const [why, spec] of bad) t.not(admit(schema, { ...good, spec: { ...good.spec, ...spec } }).length, 0, why);
  // The CEL rules themselves (not only the schema) carry the cross-field checks.
  t.true(admit(schema, { ...good, spec: { ...good.spec, blocknodes: { replicas: 2, storage: { size: '1Gi' } } } }).includes('spec.blocknodes.replicas: Invalid value: "object": blocknodes.replicas must be at least replicationFactor'));
  t.true(admit(schema, { ...good, spec: { ...good.spec, writeQuorum: 4 } }).includes('spec.writeQuorum: Invalid value: "object": writeQuorum must not exceed replicationFactor'));
  const { image: _image, ...noImage } = good.spec;
  t.not(admit(schema, { ...good, spec: noImage }).length, 0, 'missing image');
});

test('a cert-manager Certificate covers every listener and the default cluster uses its Secret', (t) => {
  if (!requireHelm(t)) return;
  const objects = render(VALUES.full);
  const cert = objects.find((o) => o.kind === 'Certificate');
  const spec = cert?.['spec'] as { secretName: string; dnsNames: string[]; usages: string[] };
  t.is(spec.secretName, 'store-tls');
  for (const dns of ['store-gateway.cairn-system.svc', 'store-metadata.cairn-system.svc', '*.store-blocknode.cairn-system.svc', 'files.example.com']) t.true(spec.dnsNames.includes(dns), dns);
  t.true(spec.usages.includes('client auth'));
  const cluster = objects.find((o) => o.kind === 'CairnCluster');
  t.deepEqual((cluster?.['spec'] as { tls: unknown }).tls, { secretName: 'store-tls' });
  t.false(render(VALUES.minimal).some((o) => o.kind === 'Certificate'));
});

test('values.schema.json rejects invalid values', (t) => {
  if (!requireHelm(t)) return;
  for (const set of ['operator.replicas=0', 'image.pullPolicy=Sometimes', 'metrics.prometheusRule.grpcErrorRatio=2', 'operator.unknownKey=1']) {
    const r = helm(['template', 'cairn', CHART, '--set', set]);
    t.not(r.status, 0, set);
  }
});

test('every pod runs restricted: non-root, read-only root, no capabilities, RuntimeDefault seccomp', (t) => {
  if (!requireHelm(t)) return;
  for (const file of Object.values(VALUES)) {
    for (const o of render(file).filter((x) => x.kind === 'Deployment' || x.kind === 'StatefulSet')) {
      const pod = (o['spec'] as { template: { spec: { securityContext: Record<string, unknown>; containers: { securityContext: Record<string, unknown>; resources: unknown }[] } } }).template.spec;
      t.like(pod.securityContext, { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
      for (const c of pod.containers) {
        t.like(c.securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
        t.truthy(c.resources);
      }
    }
  }
});

test('RBAC is least privilege: no wildcards, secrets only get/create, nodes read-only, pods read and patched for zones, no deletes but volumes of deleted clusters', (t) => {
  if (!requireHelm(t)) return;
  const rules = render(undefined).filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role').flatMap((o) => o['rules'] as { apiGroups: string[]; resources: string[]; verbs: string[] }[]);
  for (const r of rules) {
    t.false([...r.apiGroups, ...r.resources, ...r.verbs].includes('*'));
    t.false(r.verbs.includes('deletecollection'), r.resources.join());
    // The only delete: PVCs, for volumeReclaimPolicy: Delete.
    if (r.verbs.includes('delete')) t.deepEqual(r.resources, ['persistentvolumeclaims']);
    if (r.resources.includes('secrets')) t.deepEqual(r.verbs, ['get', 'create']);
    // Pods: read, plus patch for the zone annotation (rack awareness); nodes: read-only.
    if (r.resources.includes('pods')) t.deepEqual(r.verbs, ['get', 'list', 'watch', 'patch']);
    if (r.resources.includes('nodes')) t.deepEqual(r.verbs, ['get', 'list', 'watch']);
  }
  const resources = new Set(rules.flatMap((r) => r.resources));
  for (const need of ['cairnclusters', 'cairnclusters/status', 'statefulsets', 'deployments', 'services', 'poddisruptionbudgets', 'configmaps', 'pods', 'nodes', 'persistentvolumeclaims', 'leases', 'events']) t.true(resources.has(need), need);
  // Nodes are cluster-scoped: only a ClusterRole (bound by a ClusterRoleBinding) can grant them.
  const objects = render(undefined);
  const nodeRole = objects.find((o) => o.kind === 'ClusterRole' && (o['rules'] as { resources: string[] }[]).some((r) => r.resources.includes('nodes')));
  t.truthy(nodeRole, 'a ClusterRole grants nodes');
  t.true(objects.some((o) => o.kind === 'ClusterRoleBinding' && (o['roleRef'] as { name: string }).name === nodeRole?.metadata.name));
});

/** Metric names Cairn registers (name: '…' in src), plus the process metrics prom-client adds. */
function exportedMetrics(): Set<string> {
  const out = new Set<string>();
  const walk = (dir: string) => {
    for (const f of readdirSync(dir)) {
      const p = join(dir, f);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith('.ts')) for (const m of readFileSync(p, 'utf8').matchAll(/name: '((?:cairn|grpc_server)_[a-z_]+)'/g)) out.add(m[1]!);
    }
  };
  walk(join(ROOT, 'src'));
  return out;
}

/** Metric names in a PromQL expression, with histogram suffixes folded to the family. */
function metricsIn(expr: string): string[] {
  return [...expr.matchAll(/\b((?:cairn|grpc_server|kubelet)_[a-z_]+)/g)].map((m) => m[1]!.replace(/_(bucket|sum|count)$/, ''));
}

test('alerts link existing runbooks and, with the dashboard, name only metrics Cairn exports', (t) => {
  if (!requireHelm(t)) return;
  const objects = render(VALUES.full);
  const rule = objects.find((o) => o.kind === 'PrometheusRule');
  const groups = (rule?.['spec'] as { groups: { rules: { alert: string; expr: string; annotations: Record<string, string> }[] }[] }).groups;
  const alerts = groups.flatMap((g) => g.rules);
  t.deepEqual(alerts.map((a) => a.alert).sort(), ['CairnBlockNodeDiskFilling', 'CairnBlockNodeDown', 'CairnGrpcErrorRatio', 'CairnMetadataUnavailable', 'CairnThumbnailFailureRatio', 'CairnUnderReplicatedPartitions']);
  const exported = exportedMetrics();
  // Cairn exports no volume capacity; the disk forecast uses the kubelet's volume stats.
  const external = new Set(['kubelet_volume_stats_available_bytes', 'kubelet_volume_stats_capacity_bytes']);
  for (const a of alerts) {
    const url = a.annotations['runbook_url'] ?? '';
    t.regex(url, new RegExp(`/docs/runbooks/${a.alert}\\.md$`));
    t.true(existsSync(join(ROOT, 'docs', 'runbooks', `${a.alert}.md`)), a.alert);
    for (const m of metricsIn(a.expr)) t.true(exported.has(m) || external.has(m), `${a.alert}: ${m}`);
    t.notRegex(a.expr, /RUNBOOK_BASE|GRPC_ERROR_RATIO|DISK_FILL_SECONDS/);
  }
  const dashboard = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name.endsWith('-dashboard'));
  const json = JSON.parse((dashboard?.['data'] as Record<string, string>)['cairn.json']!) as { panels: { targets: { expr: string }[] }[] };
  const named = json.panels.flatMap((p) => p.targets.flatMap((x) => metricsIn(x.expr)));
  t.true(named.length >= 10);
  for (const m of named) t.true(exported.has(m), `dashboard: ${m}`);
});
