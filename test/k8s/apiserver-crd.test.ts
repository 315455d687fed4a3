// The fake API server admits custom resources like a real one, seen through the real
// @kubernetes/client-node: the CRD's pruning, defaults, OpenAPI schema and x-kubernetes-validations CEL
// rules on create, update, merge patch, server-side apply and the status subresource — invalid
// writes get 422 Invalid with the rule's message and change nothing; valid ones are stored.
import test from 'ava';
import { ApiException, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { CairnClusterSpec } from '../../src/operator/index.js';
import { cluster } from '../operator/sim.js';
import { FakeApiServer } from './apiserver.js';
import { validate, type Schema } from './crd.js';

const NS = 'store';
const G = { group: 'cairn.dev', version: 'v1alpha1', namespace: NS, plural: 'cairnclusters' };

async function fake(t: { teardown(fn: () => Promise<void>): void }): Promise<{ api: FakeApiServer; custom: CustomObjectsApi }> {
  const api = new FakeApiServer();
  await api.listen();
  t.teardown(() => api.close());
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig('admin'));
  return { api, custom: kc.makeApiClient(CustomObjectsApi) };
}

function body(spec: Record<string, unknown> = {}, name = 'demo') {
  const c = cluster();
  return { apiVersion: 'cairn.dev/v1alpha1', kind: 'CairnCluster', metadata: { name }, spec: { ...c.spec, ...spec } };
}

/** The Status body of a rejected call. */
async function rejected(t: { fail(m: string): void }, call: Promise<unknown>): Promise<{ code: number; reason: string; message: string; details?: { causes?: { field: string; reason: string; message: string }[] } }> {
  try {
    await call;
  } catch (err) {
    if (err instanceof ApiException) return { ...(JSON.parse(String(err.body)) as { reason: string; message: string }), code: err.code };
    throw err;
  }
  t.fail('the write was accepted');
  return { code: 0, reason: '', message: '' };
}

test('create: CEL rules reject replicas < replicationFactor and writeQuorum > replicationFactor with the rule message', async (t) => {
  const { api, custom } = await fake(t);
  const low = await rejected(t, custom.createNamespacedCustomObject({ ...G, body: body({ blocknodes: { replicas: 2, storage: { size: '1Gi' } } }) }));
  t.is(low.code, 422);
  t.is(low.reason, 'Invalid');
  t.is(low.message, 'CairnCluster.cairn.dev "demo" is invalid: spec.blocknodes.replicas: Invalid value: "object": blocknodes.replicas must be at least replicationFactor');
  t.deepEqual(low.details?.causes, [{ reason: 'FieldValueInvalid', field: 'spec.blocknodes.replicas', message: 'Invalid value: "object": blocknodes.replicas must be at least replicationFactor' }]);
  const quorum = await rejected(t, custom.createNamespacedCustomObject({ ...G, body: body({ writeQuorum: 4, replicationFactor: 3 }) }));
  t.is(quorum.code, 422);
  t.regex(quorum.message, /spec\.writeQuorum: Invalid value: "object": writeQuorum must not exceed replicationFactor/);
  const pg = await rejected(t, custom.createNamespacedCustomObject({ ...G, body: body({ metadata: { backend: 'postgres' } }) }));
  t.regex(pg.message, /spec\.metadata: Invalid value: "object": the postgres backend needs postgres\.secretRef/);
  t.is(api.get('cairnclusters', NS, 'demo'), undefined, 'nothing stored');
  // Valid specs are stored, with the schema's defaults filled in.
  await custom.createNamespacedCustomObject({ ...G, body: body() });
  await custom.createNamespacedCustomObject({ ...G, body: body({ replicationFactor: 2, writeQuorum: 2, metadata: { backend: 'postgres', replicas: 2, postgres: { secretRef: { name: 'pg', key: 'url' } } } }, 'pg') });
  const stored = api.get('cairnclusters', NS, 'demo')!;
  t.is((stored['spec'] as { volumeReclaimPolicy?: string }).volumeReclaimPolicy, 'Retain', 'default applied');
  t.truthy(api.get('cairnclusters', NS, 'pg'));
  // Unknown fields are pruned, like a real server does; maps with additionalProperties keep their keys.
  await custom.createNamespacedCustomObject({ ...G, body: { ...body({ blocknodes: { replicas: 3, storage: { size: '1Gi', speed: 'fast' }, resources: { requests: { cpu: '1', 'example.com/gpu': '1' } } }, typo: true }, 'pruned'), extra: 1 } });
  const pruned = api.get('cairnclusters', NS, 'pruned')!;
  t.false('typo' in (pruned['spec'] as object));
  t.false('extra' in pruned);
  t.deepEqual((pruned['spec'] as { blocknodes: unknown }).blocknodes, { replicas: 3, storage: { size: '1Gi' }, resources: { requests: { cpu: '1', 'example.com/gpu': '1' } } });
});

test('create: the OpenAPI schema checks types, minimum/maximum, required, enum and patterns; every violation is listed', async (t) => {
  const { api, custom } = await fake(t);
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['replicationFactor 0', { replicationFactor: 0, writeQuorum: 0 }, /spec\.replicationFactor: Invalid value: 0: spec\.replicationFactor in body should be greater than or equal to 1/],
    ['replicationFactor 8', { replicationFactor: 8, blocknodes: { replicas: 8, storage: { size: '1Gi' } } }, /spec\.replicationFactor in body should be less than or equal to 7/],
    ['fractional replicas', { blocknodes: { replicas: 3.5, storage: { size: '1Gi' } } }, /spec\.blocknodes\.replicas: Invalid value: 3\.5: spec\.blocknodes\.replicas in body must be of type integer: "number"/],
    ['string rf', { replicationFactor: 'three' }, /spec\.replicationFactor in body must be of type integer: "string"/],
    ['unknown backend', { metadata: { backend: 'sqlite' } }, /spec\.metadata\.backend: Unsupported value: "sqlite": supported values: "level", "postgres"/],
    ['bad storage size', { blocknodes: { replicas: 3, storage: { size: 'lots' } } }, /spec\.blocknodes\.storage\.size: Invalid value: "lots": spec\.blocknodes\.storage\.size in body should match/],
    ['missing storage', { blocknodes: { replicas: 3 } }, /spec\.blocknodes\.storage: Required value/],
    ['failover delay too short', { failoverDelaySeconds: 1 }, /spec\.failoverDelaySeconds in body should be greater than or equal to 30/],
    ['duplicate zones', { blocknodes: { replicas: 3, storage: { size: '1Gi' }, zones: ['a', 'a'] } }, /spec\.blocknodes\.zones\[1\]: Duplicate value: "a"/],
  ];
  for (const [why, spec, message] of cases) {
    const r = await rejected(t, custom.createNamespacedCustomObject({ ...G, body: body(spec) }));
    t.is(r.code, 422, why);
    t.regex(r.message, message, why);
  }
  const { image: _image, ...noImage } = body().spec;
  t.regex((await rejected(t, custom.createNamespacedCustomObject({ ...G, body: { ...body(), spec: noImage } }))).message, /spec\.image: Required value/);
  // Two violations at once: both reported, as a bracketed list.
  const two = await rejected(t, custom.createNamespacedCustomObject({ ...G, body: body({ gateway: { replicas: -1 }, metadata: { backend: 'sqlite' } }) }));
  t.is(two.details?.causes?.length, 2);
  t.regex(two.message, /is invalid: \[spec\.gateway\.replicas: .*, spec\.metadata\.backend: .*\]/);
  // Schema errors first: CEL rules do not run over a spec whose fields are of the wrong type.
  const typed = await rejected(t, custom.createNamespacedCustomObject({ ...G, body: body({ replicationFactor: 'x' }) }));
  t.notRegex(typed.message, /writeQuorum must not exceed/);
  t.deepEqual(api.list('cairnclusters', NS), []);
});

test('update, merge patch and server-side apply are validated; a rejected write leaves the object and its generation as they were', async (t) => {
  const { api, custom } = await fake(t);
  await custom.createNamespacedCustomObject({ ...G, body: body() });
  const before = api.get('cairnclusters', NS, 'demo')!;
  const bad = { ...before, spec: { ...(before['spec'] as object), writeQuorum: 5, replicationFactor: 4 } };
  const put = await rejected(t, custom.replaceNamespacedCustomObject({ ...G, name: 'demo', body: bad }));
  t.is(put.code, 422);
  t.regex(put.message, /writeQuorum must not exceed replicationFactor|blocknodes\.replicas must be at least replicationFactor/);
  const merge = await rejected(t, custom.patchNamespacedCustomObject({ ...G, name: 'demo', body: { spec: { blocknodes: { replicas: 1 } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)));
  t.is(merge.code, 422);
  t.regex(merge.message, /spec\.blocknodes\.replicas: Invalid value: "object": blocknodes\.replicas must be at least replicationFactor/);
  const apply = await rejected(
    t,
    custom.patchNamespacedCustomObject({ ...G, name: 'demo', body: { apiVersion: 'cairn.dev/v1alpha1', kind: 'CairnCluster', metadata: { name: 'demo' }, spec: { ...body().spec, writeQuorum: 9 } }, fieldManager: 'kubectl', force: true }, setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply)),
  );
  t.is(apply.code, 422);
  t.regex(apply.message, /spec\.writeQuorum in body should be less than or equal to 7/);
  const after = api.get('cairnclusters', NS, 'demo')!;
  t.is(after.metadata.resourceVersion, before.metadata.resourceVersion);
  t.is(after.metadata.generation, 1);
  // A valid scale-up goes through and bumps the generation.
  await custom.patchNamespacedCustomObject({ ...G, name: 'demo', body: { spec: { blocknodes: { replicas: 5, storage: { size: '1Gi' } } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  t.is(api.get('cairnclusters', NS, 'demo')!.metadata.generation, 2);
});

test('the status subresource validates status: bad enums, dates, missing fields and duplicate condition types are refused, the stored status unchanged', async (t) => {
  const { api, custom } = await fake(t);
  await custom.createNamespacedCustomObject({ ...G, body: body() });
  const condition = { type: 'Ready', status: 'True', reason: 'AllNodesUp', message: '', lastTransitionTime: '2026-01-01T00:00:00Z', observedGeneration: 1 };
  const ok = { observedGeneration: 1, readyBlockNodes: 3, bytesToMove: 0, conditions: [condition], nodes: [{ id: 'demo-blocknode-0', pod: 'demo-blocknode-0', state: 'up', blocks: 1, soleCopies: 0 }] };
  await custom.patchNamespacedCustomObjectStatus({ ...G, name: 'demo', body: { status: ok } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  t.is((api.get('cairnclusters', NS, 'demo')!['status'] as { readyBlockNodes: number }).readyBlockNodes, 3);
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ conditions: [{ ...condition, status: 'Maybe' }] }, /status\.conditions\[0\]\.status: Unsupported value: "Maybe"/],
    [{ conditions: [{ ...condition, lastTransitionTime: 'yesterday' }] }, /status\.conditions\[0\]\.lastTransitionTime: Invalid value: "yesterday": .* must be of type date-time/],
    [{ conditions: [condition, condition] }, /status\.conditions\[1\]: Duplicate value: \{"type":"Ready"\}/],
    [{ conditions: [{ type: 'Ready', status: 'True' }] }, /status\.conditions\[0\]\.reason: Required value/],
    [{ nodes: [{ id: 'x', state: 'lost' }] }, /status\.nodes\[0\]\.state: Unsupported value: "lost"/],
    [{ readyBlockNodes: 'three' }, /status\.readyBlockNodes in body must be of type integer/],
  ];
  for (const [status, message] of cases) {
    const r = await rejected(t, custom.replaceNamespacedCustomObjectStatus({ ...G, name: 'demo', body: { ...api.get('cairnclusters', NS, 'demo')!, status: { ...ok, ...status } } }));
    t.is(r.code, 422, JSON.stringify(status));
    t.regex(r.message, message);
  }
  t.deepEqual(api.get('cairnclusters', NS, 'demo')!['status'], ok);
});

test('transition rules see oldSelf on updates only; evaluation errors are reported, not accepted', (t) => {
  const schema: Schema = {
    type: 'object',
    properties: {
      backend: { type: 'string', 'x-kubernetes-validations': [{ rule: 'self == oldSelf', message: 'backend is immutable' }] },
      replicas: { type: 'integer' },
      limits: { type: 'object', properties: { max: { type: 'integer' } }, 'x-kubernetes-validations': [{ rule: 'self.max >= 1', message: 'max must be at least 1' }] },
    },
    'x-kubernetes-validations': [{ rule: 'self.replicas <= 10 || self.backend == "postgres"', message: 'more than 10 replicas need postgres' }],
  };
  t.deepEqual(validate(schema, { backend: 'level', replicas: 3 }, 'spec'), [], 'create: the transition rule is skipped');
  t.deepEqual(validate(schema, { backend: 'level', replicas: 3 }, 'spec', { backend: 'level', replicas: 1 }), []);
  t.deepEqual(validate(schema, { backend: 'postgres', replicas: 3 }, 'spec', { backend: 'level', replicas: 3 }).map((c) => `${c.field}: ${c.message}`), ['spec.backend: Invalid value: "postgres": backend is immutable']);
  t.deepEqual(validate(schema, { backend: 'level', replicas: 11 }, 'spec').map((c) => c.message), ['Invalid value: "object": more than 10 replicas need postgres']);
  t.deepEqual(validate(schema, { backend: 'postgres', replicas: 11 }, 'spec'), []);
  // self.max on an object without max: a CEL evaluation error, which the API server reports as invalid.
  const missing = validate(schema, { backend: 'level', replicas: 1, limits: {} }, 'spec');
  t.is(missing.length, 1);
  t.regex(missing[0]!.message, /rule "self\.max >= 1": evaluation error: No such key: max/);
});

test('every CairnClusterSpec field the operator reads is in the CRD: a full spec is stored unpruned', async (t) => {
  const { api, custom } = await fake(t);
  const full = {
    image: { repository: 'ghcr.io/cairn-dev/cairn', tag: '0.2.0', pullPolicy: 'Always' },
    replicationFactor: 3,
    writeQuorum: 2,
    failoverDelaySeconds: 120,
    blocknodes: { replicas: 4, storage: { size: '10Gi', storageClassName: 'fast' }, zones: ['a', 'b', 'c'], topologyKey: 'example.com/rack', resources: { requests: { cpu: '500m' }, limits: { memory: '2Gi' } } },
    gateway: { replicas: 2, resources: { requests: { cpu: '250m' } } },
    media: { replicas: 1, resources: { limits: { memory: '1Gi' } } },
    metadata: { backend: 'postgres', replicas: 2, postgres: { secretRef: { name: 'pg', key: 'url' } }, resources: { requests: { memory: '512Mi' } } },
    upgrade: { paused: true },
    tls: { secretName: 'store-tls' },
    volumeReclaimPolicy: 'Delete',
  } satisfies Required<CairnClusterSpec>;
  await custom.createNamespacedCustomObject({ ...G, body: { apiVersion: 'cairn.dev/v1alpha1', kind: 'CairnCluster', metadata: { name: 'full' }, spec: full } });
  t.deepEqual(api.get('cairnclusters', NS, 'full')!['spec'], full);
});
