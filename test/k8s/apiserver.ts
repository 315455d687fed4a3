// A fake Kubernetes API server for tests: the subset of the real REST and watch protocol the
// operator and @kubernetes/client-node use — discovery, LIST/WATCH with resourceVersion and 410
// Gone, create/update with 409 conflicts, merge and server-side-apply patches with managedFields,
// the status subresource, generation, finalizers and deletionTimestamp, owner-reference GC, and
// for custom resources the CRD's defaults, OpenAPI schema and CEL rules (422 Invalid, test/k8s/crd.ts).
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isDeepStrictEqual } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { applyDefaults, chartCrd, crdSchema, prune, validateCustomResource, type Cause, type Schema } from './crd.js';

export interface ResourceType {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly kind: string;
  readonly namespaced: boolean;
  readonly status: boolean;
}

export const RESOURCES: readonly ResourceType[] = [
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true, status: true },
  { group: '', version: 'v1', plural: 'persistentvolumeclaims', kind: 'PersistentVolumeClaim', namespaced: true, status: true },
  { group: '', version: 'v1', plural: 'services', kind: 'Service', namespaced: true, status: true },
  { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap', namespaced: true, status: false },
  { group: '', version: 'v1', plural: 'secrets', kind: 'Secret', namespaced: true, status: false },
  { group: '', version: 'v1', plural: 'namespaces', kind: 'Namespace', namespaced: false, status: true },
  { group: '', version: 'v1', plural: 'nodes', kind: 'Node', namespaced: false, status: true },
  { group: 'apps', version: 'v1', plural: 'statefulsets', kind: 'StatefulSet', namespaced: true, status: true },
  { group: 'apps', version: 'v1', plural: 'deployments', kind: 'Deployment', namespaced: true, status: true },
  { group: 'policy', version: 'v1', plural: 'poddisruptionbudgets', kind: 'PodDisruptionBudget', namespaced: true, status: true },
  { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', kind: 'Lease', namespaced: true, status: false },
  { group: 'events.k8s.io', version: 'v1', plural: 'events', kind: 'Event', namespaced: true, status: false },
  { group: 'cairn.dev', version: 'v1alpha1', plural: 'cairnclusters', kind: 'CairnCluster', namespaced: true, status: true },
];

export type Obj = Record<string, unknown> & { metadata: Meta; apiVersion?: string; kind?: string };
export interface Meta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  finalizers?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: { uid: string; kind: string; name: string }[];
  managedFields?: unknown[];
  [k: string]: unknown;
}

export type WatchType = 'ADDED' | 'MODIFIED' | 'DELETED';
interface StoredEvent {
  readonly rv: number;
  readonly type: WatchType;
  readonly object: Obj;
}

/** Who made a write: the bearer token of the request (tests give each client its own). */
export interface WriteRecord {
  readonly user: string;
  readonly method: string;
  readonly path: string;
  readonly kind: string;
  readonly name: string;
}

class HttpError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string, readonly details?: Record<string, unknown>) {
    super(message);
  }
}

const clone = <T>(x: T): T => structuredClone(x);
const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const apiVersionOf = (r: ResourceType): string => (r.group === '' ? r.version : `${r.group}/${r.version}`);

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return clone(patch);
  const out: Record<string, unknown> = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Leaf paths of an applied configuration (objects recurse; lists are atomic, as with `x-kubernetes-list-type: atomic`). */
function leafPaths(x: unknown, prefix: string[] = [], out: string[][] = []): string[][] {
  if (isObject(x) && Object.keys(x).length > 0) for (const [k, v] of Object.entries(x)) leafPaths(v, [...prefix, k], out);
  else out.push(prefix);
  return out;
}

function getPath(x: unknown, path: readonly string[]): unknown {
  let cur = x;
  for (const p of path) {
    if (!isObject(cur)) return undefined;
    cur = cur[p];
  }
  return cur;
}

function deletePath(x: Record<string, unknown>, path: readonly string[]): void {
  const parents: Record<string, unknown>[] = [x];
  let cur: unknown = x;
  for (const p of path.slice(0, -1)) {
    if (!isObject(cur)) return;
    cur = cur[p];
    if (!isObject(cur)) return;
    parents.push(cur);
  }
  const last = parents[parents.length - 1]!;
  delete last[path[path.length - 1]!];
  // Drop objects the removal left empty.
  for (let i = parents.length - 1; i > 0; i--) {
    if (Object.keys(parents[i]!).length === 0) delete parents[i - 1]![path[i - 1]!];
  }
}

function deepMerge(target: unknown, src: unknown): unknown {
  if (!isObject(src) || !isObject(target)) return clone(src);
  const out: Record<string, unknown> = { ...target };
  for (const [k, v] of Object.entries(src)) out[k] = deepMerge(out[k], v);
  return out;
}

const SERVER_META = new Set(['name', 'namespace', 'uid', 'resourceVersion', 'generation', 'creationTimestamp', 'deletionTimestamp', 'managedFields']);
const pathKey = (p: readonly string[]): string => p.join('\u0000');

/** fieldsV1 as the real server renders it: nested `f:<name>` keys, `.` for a leaf. */
function fieldsV1(paths: readonly string[][]): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const p of paths) {
    let cur = root;
    for (const seg of p) cur = (cur[`f:${seg}`] ??= {}) as Record<string, unknown>;
  }
  return root;
}

function matchesSelector(labels: Record<string, string> | undefined, selector: string | null): boolean {
  if (selector === null || selector === '') return true;
  return selector.split(',').every((term) => {
    const ne = /^([^!=]+)!=(.*)$/.exec(term);
    if (ne) return labels?.[ne[1]!.trim()] !== ne[2]!.trim();
    const eq = /^([^=]+)==?(.*)$/.exec(term);
    if (eq) return labels?.[eq[1]!.trim()] === eq[2]!.trim();
    return labels?.[term.trim()] !== undefined;
  });
}

interface Watcher {
  readonly type: ResourceType;
  readonly namespace: string | undefined;
  readonly selector: string | null;
  readonly res: ServerResponse;
}

export interface Fault {
  /** Matches method and path (e.g. /apis/apps/v1/statefulsets?watch=true). */
  readonly match: (method: string, url: string) => boolean;
  readonly status: number;
  remaining: number;
}

export class FakeApiServer {
  readonly #server: Server;
  /** Objects by `plural/namespace/name`. */
  readonly #objects = new Map<string, Obj>();
  /** Structural schemas of custom resources by plural (the chart's CairnCluster CRD is installed). */
  readonly #schemas = new Map<string, { schema: Schema; group: string }>();
  /** Per object: manager → the leaf paths it applied (server-side apply ownership). */
  readonly #owners = new Map<string, Map<string, { paths: string[][]; operation: 'Apply' | 'Update' }>>();
  readonly #events: StoredEvent[] = [];
  readonly #watchers = new Set<Watcher>();
  readonly #listeners = new Set<(type: WatchType, plural: string, obj: Obj) => void>();
  #rv = 1;
  /** Events older than this resourceVersion are compacted away: a watch from before gets 410. */
  #compactedRv = 0;
  readonly writes: WriteRecord[] = [];
  readonly faults: Fault[] = [];
  port = 0;

  constructor() {
    this.installCrd(chartCrd());
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        if (err instanceof HttpError) return this.#status(res, err.code, err.reason, err.message, err.details);
        this.#status(res, 500, 'InternalError', String(err));
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    const a = this.#server.address();
    this.port = typeof a === 'object' && a !== null ? a.port : 0;
    return this.url;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A kubeconfig for this server; `user` becomes the bearer token (and so the writer's name in `writes`). */
  kubeconfig(user = 'test'): string {
    return JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      // Plain HTTP on loopback: client-node allows it only with TLS verification switched off.
      clusters: [{ name: 'fake', cluster: { server: this.url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: user, user: { token: user } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user, namespace: 'default' } }],
      'current-context': 'fake',
    });
  }

  async close(): Promise<void> {
    for (const w of this.#watchers) w.res.destroy();
    this.#watchers.clear();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Ends every open watch (clients must re-watch from their resourceVersion). */
  dropWatches(): void {
    for (const w of this.#watchers) w.res.end();
    this.#watchers.clear();
  }

  /** Forgets the event history: every watch from an older resourceVersion gets 410 Gone. */
  compact(): void {
    this.#compactedRv = this.#rv;
    this.#events.length = 0;
    this.dropWatches();
  }

  /** In-process subscription for simulated controllers (the kubelet simulator). */
  subscribe(fn: (type: WatchType, plural: string, obj: Obj) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Registers a CustomResourceDefinition's schema: writes of its kind are defaulted and validated from then on. */
  installCrd(crd: Record<string, unknown>): void {
    const spec = crd['spec'] as { group: string; names: { plural: string } };
    this.type(spec.names.plural);
    this.#schemas.set(spec.names.plural, { schema: crdSchema(crd), group: spec.group });
  }

  /** Defaulting and validation of a custom resource write; throws 422 Invalid with the causes. */
  #admit(t: ResourceType, obj: Obj, old: Obj | undefined, subresource: 'status' | undefined): void {
    const crd = this.#schemas.get(t.plural);
    if (crd === undefined) return;
    for (const k of Object.keys(obj)) if (crd.schema.properties?.[k] === undefined && k !== 'apiVersion' && k !== 'kind' && k !== 'metadata') delete obj[k];
    for (const [k, sub] of Object.entries(crd.schema.properties ?? {})) {
      if (k === 'metadata' || obj[k] === undefined || (k === 'status') !== (subresource === 'status')) continue;
      // Unknown fields are dropped (the real server's pruning; it only warns), then defaults filled.
      prune(sub, obj[k], k);
      applyDefaults(sub, obj[k]);
    }
    const causes: Cause[] = validateCustomResource(crd.schema, obj, old, subresource);
    if (causes.length === 0) return;
    const each = causes.map((c) => `${c.field}: ${c.message}`);
    const message = `${t.kind}.${crd.group} "${obj.metadata.name}" is invalid: ${each.length === 1 ? each[0]! : `[${each.join(', ')}]`}`;
    throw new HttpError(422, 'Invalid', message, { name: obj.metadata.name, group: crd.group, kind: t.kind, causes });
  }

  // ---- the store, also used in-process by simulated controllers ----

  type(plural: string): ResourceType {
    const t = RESOURCES.find((r) => r.plural === plural);
    if (t === undefined) throw new TypeError(`unknown resource ${plural}`);
    return t;
  }

  get(plural: string, namespace: string | undefined, name: string): Obj | undefined {
    const o = this.#objects.get(`${plural}/${namespace ?? ''}/${name}`);
    return o === undefined ? undefined : clone(o);
  }

  list(plural: string, namespace?: string, selector: string | null = null): Obj[] {
    const out: Obj[] = [];
    for (const [k, o] of this.#objects) {
      if (!k.startsWith(`${plural}/`)) continue;
      if (namespace !== undefined && o.metadata.namespace !== namespace) continue;
      if (!matchesSelector(o.metadata.labels, selector)) continue;
      out.push(clone(o));
    }
    return out.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
  }

  create(plural: string, namespace: string | undefined, body: Obj, user = 'system'): Obj {
    const t = this.type(plural);
    const name = body.metadata?.name ?? (typeof body.metadata?.['generateName'] === 'string' ? `${body.metadata['generateName']}${randomUUID().slice(0, 5)}` : undefined);
    if (name === undefined) throw new HttpError(422, 'Invalid', 'metadata.name is required');
    const key = `${plural}/${t.namespaced ? (namespace ?? '') : ''}/${name}`;
    if (this.#objects.has(key)) throw new HttpError(409, 'AlreadyExists', `${plural} "${name}" already exists`);
    this.writes.push({ user, method: 'POST', path: key, kind: t.kind, name });
    const obj = clone(body);
    obj.apiVersion = apiVersionOf(t);
    obj.kind = t.kind;
    obj.metadata = { ...obj.metadata, name, uid: randomUUID(), creationTimestamp: new Date().toISOString(), generation: 1 };
    if (t.namespaced) obj.metadata.namespace = namespace ?? '';
    else delete obj.metadata.namespace;
    delete obj.metadata.resourceVersion;
    delete obj.metadata.deletionTimestamp;
    if (t.status && t.kind === 'CairnCluster') delete obj['status'];
    this.#admit(t, obj, undefined, undefined);
    this.#recordUpdate(key, user, body);
    return this.#commit(key, 'ADDED', obj);
  }

  /** PUT semantics: resourceVersion must match when given; the status subresource writes only status. */
  update(plural: string, namespace: string | undefined, name: string, body: Obj, options: { subresource?: 'status'; user?: string } = {}): Obj {
    const t = this.type(plural);
    const key = `${plural}/${t.namespaced ? (namespace ?? '') : ''}/${name}`;
    const live = this.#objects.get(key);
    if (live === undefined) throw new HttpError(404, 'NotFound', `${plural} "${name}" not found`);
    const rv = body.metadata?.resourceVersion;
    if (rv !== undefined && rv !== '' && rv !== live.metadata.resourceVersion) {
      throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on ${plural} "${name}": the object has been modified; please apply your changes to the latest version and try again`);
    }
    return this.#replace(t, key, live, body, options.subresource, options.user ?? 'system', 'Update');
  }

  /** A patch (merge, strategic-as-merge, or server-side apply). */
  patch(plural: string, namespace: string | undefined, name: string, contentType: string, raw: string, options: { subresource?: 'status'; user?: string; fieldManager?: string; force?: boolean } = {}): Obj {
    const t = this.type(plural);
    const key = `${plural}/${t.namespaced ? (namespace ?? '') : ''}/${name}`;
    const live = this.#objects.get(key);
    const user = options.user ?? 'system';
    if (contentType.startsWith('application/apply-patch+yaml')) {
      const manager = options.fieldManager;
      if (manager === undefined || manager === '') throw new HttpError(422, 'Invalid', 'fieldManager is required for apply patch');
      const applied = parseYaml(raw) as Obj;
      if (!isObject(applied) || !isObject(applied.metadata)) throw new HttpError(400, 'BadRequest', 'apply patch needs an object with metadata');
      if (live === undefined) {
        if (options.subresource === 'status') throw new HttpError(404, 'NotFound', `${plural} "${name}" not found`);
        const created = this.create(plural, namespace, { ...applied, metadata: { ...applied.metadata, name } }, user);
        this.#owners.set(key, new Map([[manager, { paths: this.#ownedPaths(applied, t, undefined), operation: 'Apply' }]]));
        return this.#withManagedFields(key, t, created);
      }
      return this.#apply(t, key, live, applied, manager, options.force === true, options.subresource, user);
    }
    if (live === undefined) throw new HttpError(404, 'NotFound', `${plural} "${name}" not found`);
    let patch: unknown;
    try {
      patch = JSON.parse(raw);
    } catch {
      throw new HttpError(400, 'BadRequest', 'patch body is not JSON');
    }
    if (contentType.startsWith('application/json-patch+json')) throw new HttpError(415, 'UnsupportedMediaType', 'JSON patch is not supported by the fake server');
    const rv = isObject(patch) && isObject(patch['metadata']) ? patch['metadata']['resourceVersion'] : undefined;
    if (typeof rv === 'string' && rv !== live.metadata.resourceVersion) throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on ${plural} "${name}": the object has been modified`);
    const next = mergePatch(live, patch) as Obj;
    return this.#replace(t, key, live, next, options.subresource, user, 'Update', options.fieldManager);
  }

  delete(plural: string, namespace: string | undefined, name: string, user = 'system'): Obj {
    const t = this.type(plural);
    const key = `${plural}/${t.namespaced ? (namespace ?? '') : ''}/${name}`;
    const live = this.#objects.get(key);
    if (live === undefined) throw new HttpError(404, 'NotFound', `${plural} "${name}" not found`);
    this.writes.push({ user, method: 'DELETE', path: key, kind: t.kind, name });
    if ((live.metadata.finalizers ?? []).length > 0) {
      if (live.metadata.deletionTimestamp !== undefined) return clone(live);
      const next = clone(live);
      next.metadata.deletionTimestamp = new Date().toISOString();
      return this.#commit(key, 'MODIFIED', next);
    }
    return this.#remove(key, live);
  }

  // ---- internals ----

  #remove(key: string, live: Obj): Obj {
    this.#objects.delete(key);
    this.#owners.delete(key);
    const gone = clone(live);
    gone.metadata.resourceVersion = String(++this.#rv);
    this.#emit(key.split('/')[0]!, 'DELETED', gone);
    // Garbage collection: dependents whose owner is gone are deleted too (background propagation).
    const uid = live.metadata.uid;
    for (const [k, o] of [...this.#objects]) {
      if ((o.metadata.ownerReferences ?? []).some((r) => r.uid === uid)) {
        const [plural, ns] = k.split('/');
        this.delete(plural!, ns === '' ? undefined : ns, o.metadata.name, 'garbage-collector');
      }
    }
    return gone;
  }

  #ownedPaths(applied: Obj, t: ResourceType, subresource: 'status' | undefined): string[][] {
    return leafPaths(applied).filter((p) => {
      if (p[0] === 'apiVersion' || p[0] === 'kind') return false;
      if (p[0] === 'metadata' && (p[1] === 'name' || p[1] === 'namespace' || p[1] === 'resourceVersion' || p[1] === 'managedFields')) return false;
      if (!t.status) return true;
      return subresource === 'status' ? p[0] === 'status' : p[0] !== 'status';
    });
  }

  #apply(t: ResourceType, key: string, live: Obj, applied: Obj, manager: string, force: boolean, subresource: 'status' | undefined, user: string): Obj {
    const owners = this.#owners.get(key) ?? new Map<string, { paths: string[][]; operation: 'Apply' | 'Update' }>();
    const paths = this.#ownedPaths(applied, t, subresource);
    // Conflicts: a field another manager set to a different value.
    const conflicts: string[] = [];
    for (const [other, entry] of owners) {
      if (other === manager) continue;
      for (const p of entry.paths) {
        if (!paths.some((q) => pathKey(q) === pathKey(p))) continue;
        if (!isDeepStrictEqual(getPath(live, p), getPath(applied, p))) conflicts.push(`${other}: .${p.join('.')}`);
      }
    }
    if (conflicts.length > 0 && !force) throw new HttpError(409, 'Conflict', `Apply failed with ${conflicts.length} conflicts: conflicts with ${conflicts.join(', ')}`);
    let next = clone(live) as Record<string, unknown>;
    // Fields this manager applied before and no longer applies are removed (unless another manager owns them).
    const previous = owners.get(manager)?.paths ?? [];
    for (const p of previous) {
      if (paths.some((q) => pathKey(q) === pathKey(p))) continue;
      if ([...owners].some(([m, e]) => m !== manager && e.paths.some((q) => pathKey(q) === pathKey(p)))) continue;
      deletePath(next, p);
    }
    const body = clone(applied) as Record<string, unknown>;
    delete (body['metadata'] as Record<string, unknown>)['resourceVersion'];
    if (t.status) {
      if (subresource === 'status') delete body['spec'];
      else delete body['status'];
    }
    next = deepMerge(next, body) as Record<string, unknown>;
    for (const [other, entry] of owners) {
      if (other !== manager) entry.paths = entry.paths.filter((p) => !paths.some((q) => pathKey(q) === pathKey(p)));
    }
    owners.set(manager, { paths, operation: 'Apply' });
    this.#owners.set(key, owners);
    return this.#replace(t, key, live, next as Obj, subresource, user, 'Apply', manager, true);
  }

  #recordUpdate(key: string, manager: string, body: Obj): void {
    const owners = this.#owners.get(key) ?? new Map<string, { paths: string[][]; operation: 'Apply' | 'Update' }>();
    const t = this.type(key.split('/')[0]!);
    const paths = this.#ownedPaths(body, t, undefined);
    for (const entry of owners.values()) entry.paths = entry.paths.filter((p) => !paths.some((q) => pathKey(q) === pathKey(p)));
    owners.set(manager, { paths: [...(owners.get(manager)?.paths ?? []), ...paths], operation: 'Update' });
    this.#owners.set(key, owners);
  }

  #replace(t: ResourceType, key: string, live: Obj, body: Obj, subresource: 'status' | undefined, user: string, operation: 'Apply' | 'Update', manager?: string, ownershipDone = false): Obj {
    const next = clone(body);
    next.apiVersion = apiVersionOf(t);
    next.kind = t.kind;
    // Immutable or server-owned metadata.
    next.metadata = { ...next.metadata, name: live.metadata.name, uid: live.metadata.uid!, creationTimestamp: live.metadata.creationTimestamp!, generation: live.metadata.generation ?? 1 };
    if (t.namespaced) next.metadata.namespace = live.metadata.namespace ?? '';
    if (live.metadata.deletionTimestamp !== undefined) next.metadata.deletionTimestamp = live.metadata.deletionTimestamp;
    else delete next.metadata.deletionTimestamp;
    delete next.metadata.managedFields;
    if (t.status) {
      if (subresource === 'status') {
        // The status subresource ignores everything but status.
        const status = next['status'];
        Object.assign(next, clone(live));
        next.metadata = clone(live.metadata);
        if (status === undefined) delete next['status'];
        else next['status'] = status;
      } else if ('status' in live) next['status'] = clone(live['status']);
      else delete next['status'];
    }
    this.#admit(t, next, live, subresource);
    if (!isDeepStrictEqual(next['spec'], live['spec'])) next.metadata.generation = (live.metadata.generation ?? 1) + 1;
    if (!ownershipDone && operation === 'Update') {
      const changed = leafPaths(next).filter((p) => !(p[0] === 'metadata' && SERVER_META.has(p[1] ?? '')) && !isDeepStrictEqual(getPath(next, p), getPath(live, p)));
      if (changed.length > 0) this.#claim(key, manager ?? user, changed);
    }
    this.writes.push({ user, method: subresource === 'status' ? 'PUT status' : operation, path: key, kind: t.kind, name: live.metadata.name });
    const stripped = { ...next, metadata: { ...next.metadata, resourceVersion: live.metadata.resourceVersion } };
    const liveStripped = { ...live, metadata: { ...live.metadata, managedFields: undefined } };
    delete (liveStripped.metadata as Meta).managedFields;
    if (isDeepStrictEqual(stripped, liveStripped)) return this.#withManagedFields(key, t, clone(live)); // no-op: no new resourceVersion
    if (next.metadata.deletionTimestamp !== undefined && (next.metadata.finalizers ?? []).length === 0) return this.#remove(key, next);
    return this.#withManagedFields(key, t, this.#commit(key, 'MODIFIED', next));
  }

  #claim(key: string, manager: string, changed: string[][]): void {
    const owners = this.#owners.get(key) ?? new Map<string, { paths: string[][]; operation: 'Apply' | 'Update' }>();
    this.#owners.set(key, owners);
    for (const [m, e] of owners) if (m !== manager) e.paths = e.paths.filter((p) => !changed.some((q) => pathKey(q) === pathKey(p)));
    const mine = owners.get(manager) ?? { paths: [], operation: 'Update' as const };
    owners.set(manager, mine);
    for (const p of changed) if (!mine.paths.some((q) => pathKey(q) === pathKey(p))) mine.paths.push(p);
  }

  #withManagedFields(key: string, t: ResourceType, obj: Obj): Obj {
    const owners = this.#owners.get(key);
    if (owners !== undefined) {
      obj.metadata.managedFields = [...owners].map(([manager, e]) => ({ manager, operation: e.operation, apiVersion: apiVersionOf(t), fieldsType: 'FieldsV1', fieldsV1: fieldsV1(e.paths) }));
    }
    return obj;
  }

  #commit(key: string, type: WatchType, obj: Obj): Obj {
    obj.metadata.resourceVersion = String(++this.#rv);
    delete obj.metadata.managedFields;
    this.#objects.set(key, obj);
    this.#emit(key.split('/')[0]!, type, obj);
    return this.#withManagedFields(key, this.type(key.split('/')[0]!), clone(obj));
  }

  #emit(plural: string, type: WatchType, obj: Obj): void {
    const event: StoredEvent = { rv: Number(obj.metadata.resourceVersion), type, object: clone(obj) };
    this.#events.push(event);
    if (this.#events.length > 5000) {
      const dropped = this.#events.splice(0, 1000);
      this.#compactedRv = dropped[dropped.length - 1]!.rv;
    }
    for (const w of this.#watchers) if (w.type.plural === plural) this.#send(w, event);
    for (const fn of this.#listeners) fn(type, plural, clone(obj));
  }

  #send(w: Watcher, e: StoredEvent): void {
    if (w.namespace !== undefined && e.object.metadata.namespace !== w.namespace) return;
    if (!matchesSelector(e.object.metadata.labels, w.selector)) return;
    w.res.write(JSON.stringify({ type: e.type, object: this.#withManagedFields(`${w.type.plural}/${e.object.metadata.namespace ?? ''}/${e.object.metadata.name}`, w.type, clone(e.object)) }) + '\n');
  }

  #status(res: ServerResponse, code: number, reason: string, message: string, details?: Record<string, unknown>): void {
    if (res.headersSent) {
      res.end();
      return;
    }
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details !== undefined ? { details } : {}), code }));
  }

  #json(res: ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://x');
    const fault = this.faults.find((f) => f.remaining > 0 && f.match(method, req.url ?? '/'));
    if (fault !== undefined) {
      fault.remaining--;
      return this.#status(res, fault.status, 'InternalError', 'injected fault');
    }
    const user = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? 'anonymous';
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const parts = url.pathname.split('/').filter((p) => p !== '');

    // Discovery.
    if (method === 'GET' && url.pathname === '/api') return this.#json(res, 200, { kind: 'APIVersions', versions: ['v1'] });
    if (method === 'GET' && url.pathname === '/apis') {
      const groups = [...new Set(RESOURCES.filter((r) => r.group !== '').map((r) => `${r.group}/${r.version}`))];
      return this.#json(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: groups.map((gv) => ({ name: gv.split('/')[0], versions: [{ groupVersion: gv, version: gv.split('/')[1] }], preferredVersion: { groupVersion: gv, version: gv.split('/')[1] } })) });
    }
    let group: string;
    let version: string;
    let rest: string[];
    if (parts[0] === 'api' && parts.length >= 2) {
      group = '';
      version = parts[1]!;
      rest = parts.slice(2);
    } else if (parts[0] === 'apis' && parts.length >= 3) {
      group = parts[1]!;
      version = parts[2]!;
      rest = parts.slice(3);
    } else throw new HttpError(404, 'NotFound', `no route ${url.pathname}`);
    const inGroup = RESOURCES.filter((r) => r.group === group && r.version === version);
    if (inGroup.length === 0) throw new HttpError(404, 'NotFound', `no API ${group}/${version}`);
    if (rest.length === 0 && method === 'GET') {
      return this.#json(res, 200, {
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: group === '' ? version : `${group}/${version}`,
        resources: inGroup.flatMap((r) => [
          { name: r.plural, singularName: r.kind.toLowerCase(), namespaced: r.namespaced, kind: r.kind, verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'] },
          ...(r.status ? [{ name: `${r.plural}/status`, singularName: '', namespaced: r.namespaced, kind: r.kind, verbs: ['get', 'patch', 'update'] }] : []),
        ]),
      });
    }
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const t = inGroup.find((r) => r.plural === rest[0]);
    if (t === undefined) throw new HttpError(404, 'NotFound', `no resource ${rest[0]}`);
    const name = rest[1];
    const sub = rest[2];
    if (sub !== undefined && (sub !== 'status' || !t.status)) throw new HttpError(404, 'NotFound', `no subresource ${sub}`);
    const subresource = sub === 'status' ? ('status' as const) : undefined;
    const q = url.searchParams;

    if (method === 'GET' && name === undefined) {
      if (q.get('watch') === 'true' || q.get('watch') === '1') return this.#watch(t, namespace, q, res);
      const items = this.list(t.plural, namespace, q.get('labelSelector')).map((o) => this.#withManagedFields(`${t.plural}/${o.metadata.namespace ?? ''}/${o.metadata.name}`, t, o));
      return this.#json(res, 200, { kind: `${t.kind}List`, apiVersion: apiVersionOf(t), metadata: { resourceVersion: String(this.#rv) }, items });
    }
    if (name === undefined && method === 'POST') {
      const created = this.create(t.plural, namespace, JSON.parse(raw) as Obj, user);
      return this.#json(res, 201, created);
    }
    if (name === undefined) throw new HttpError(405, 'MethodNotAllowed', `${method} on a collection`);
    if (method === 'GET') {
      const o = this.get(t.plural, namespace, name);
      if (o === undefined) throw new HttpError(404, 'NotFound', `${t.plural} "${name}" not found`);
      return this.#json(res, 200, this.#withManagedFields(`${t.plural}/${namespace ?? ''}/${name}`, t, o));
    }
    if (method === 'PUT') return this.#json(res, 200, this.update(t.plural, namespace, name, JSON.parse(raw) as Obj, { ...(subresource ? { subresource } : {}), user }));
    if (method === 'PATCH') {
      const force = q.get('force') === 'true';
      const fieldManager = q.get('fieldManager') ?? undefined;
      const out = this.patch(t.plural, namespace, name, req.headers['content-type'] ?? '', raw, { ...(subresource ? { subresource } : {}), user, ...(fieldManager !== undefined ? { fieldManager } : {}), force });
      return this.#json(res, 200, out);
    }
    if (method === 'DELETE') return this.#json(res, 200, this.delete(t.plural, namespace, name, user));
    throw new HttpError(405, 'MethodNotAllowed', method);
  }

  #watch(t: ResourceType, namespace: string | undefined, q: URLSearchParams, res: ServerResponse): void {
    const w: Watcher = { type: t, namespace, selector: q.get('labelSelector'), res };
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const from = q.get('resourceVersion');
    if (from === null || from === '' || from === '0') {
      // No resourceVersion: synthetic ADDED events for the current state, then changes.
      for (const o of this.list(t.plural, namespace, w.selector)) this.#send(w, { rv: Number(o.metadata.resourceVersion), type: 'ADDED', object: o });
    } else {
      const rv = Number(from);
      if (!Number.isFinite(rv) || rv < this.#compactedRv) {
        res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${from} (${this.#compactedRv})`, reason: 'Expired', code: 410 } }) + '\n');
        return;
      }
      for (const e of this.#events) if (e.rv > rv && e.object.kind === t.kind) this.#send(w, e);
    }
    this.#watchers.add(w);
    res.on('close', () => this.#watchers.delete(w));
    const timeout = Number(q.get('timeoutSeconds') ?? '0');
    if (timeout > 0) setTimeout(() => res.end(), timeout * 1000).unref();
  }
}
