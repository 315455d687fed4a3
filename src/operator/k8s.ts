// The operator's writes to Kubernetes on @kubernetes/client-node 1.4: server-side apply with the
// cairn-operator field manager, the CairnCluster status subresource and finalizer, Secrets,
// events.k8s.io/v1 Events, pod zone annotations, PVC deletion, and the Lease calls leader election needs.
import { randomBytes } from 'node:crypto';
import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  EventsV1Api,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type KubernetesObject,
  type V1Lease,
} from '@kubernetes/client-node';
import { FIELD_MANAGER, GROUP, VERSION, type CairnCluster, type CairnClusterStatus, type KubeObject } from './types.js';

export const PLURAL = 'cairnclusters';
/** Held on every CairnCluster until the operator has cleaned up after it. */
export const FINALIZER = 'cairn.dev/cleanup';

/** The HTTP status of a client-node error (ApiException.code), if any. */
export function statusOf(err: unknown): number | undefined {
  if (typeof err === 'object' && err !== null) {
    const e = err as { code?: unknown; statusCode?: unknown };
    if (typeof e.code === 'number') return e.code;
    if (typeof e.statusCode === 'number') return e.statusCode;
  }
  return undefined;
}

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

export interface EventInput {
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  /** What the operator did, e.g. Drain, Scale, MarkDown. */
  readonly action: string;
  readonly note: string;
}

export class KubeClient {
  readonly #objects: KubernetesObjectApi;
  readonly #custom: CustomObjectsApi;
  readonly #core: CoreV1Api;
  readonly #events: EventsV1Api;
  readonly #coordination: CoordinationV1Api;
  readonly #identity: string;

  constructor(kc: KubeConfig, identity: string) {
    this.#objects = KubernetesObjectApi.makeApiClient(kc);
    this.#custom = kc.makeApiClient(CustomObjectsApi);
    this.#core = kc.makeApiClient(CoreV1Api);
    this.#events = kc.makeApiClient(EventsV1Api);
    this.#coordination = kc.makeApiClient(CoordinationV1Api);
    this.#identity = identity;
  }

  /** Server-side apply: the operator owns exactly the fields it sends and takes them back by force. */
  async apply(object: KubeObject): Promise<KubernetesObject> {
    return this.#objects.patch(object as KubernetesObject, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
  }

  async writeStatus(c: CairnCluster, status: CairnClusterStatus): Promise<void> {
    await this.#custom.patchNamespacedCustomObjectStatus(
      { group: GROUP, version: VERSION, namespace: c.metadata.namespace, plural: PLURAL, name: c.metadata.name, body: { status }, fieldManager: FIELD_MANAGER },
      mergePatch,
    );
  }

  /**
   * Sets the finalizer list, conditional on the resourceVersion the decision was made on
   * (a merge patch carrying metadata.resourceVersion fails with 409 if the object moved on).
   */
  async setFinalizers(c: CairnCluster & { metadata: { resourceVersion?: string; finalizers?: readonly string[] } }, finalizers: readonly string[]): Promise<void> {
    await this.#custom.patchNamespacedCustomObject(
      {
        group: GROUP,
        version: VERSION,
        namespace: c.metadata.namespace,
        plural: PLURAL,
        name: c.metadata.name,
        body: { metadata: { finalizers: [...finalizers], ...(c.metadata.resourceVersion !== undefined ? { resourceVersion: c.metadata.resourceVersion } : {}) } },
        fieldManager: FIELD_MANAGER,
      },
      mergePatch,
    );
  }

  async secretExists(namespace: string, name: string): Promise<boolean> {
    try {
      await this.#core.readNamespacedSecret({ namespace, name });
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw err;
    }
  }

  /** A key file's contents, or undefined when the Secret or key does not exist. */
  async readSecretKey(namespace: string, name: string, key: string): Promise<Buffer | undefined> {
    try {
      const s = await this.#core.readNamespacedSecret({ namespace, name });
      const v = s.data?.[key];
      return v === undefined ? undefined : Buffer.from(v, 'base64');
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  /** Creates the Secret with `bytes` random bytes under `key`; an existing one is left alone. */
  async ensureSecret(c: CairnCluster, name: string, key: string, bytes: number, ownerReferences: readonly unknown[]): Promise<boolean> {
    const value = randomBytes(bytes).toString('base64url');
    try {
      await this.#core.createNamespacedSecret({
        namespace: c.metadata.namespace,
        body: {
          apiVersion: 'v1',
          kind: 'Secret',
          metadata: { name, namespace: c.metadata.namespace, labels: { 'app.kubernetes.io/name': 'cairn', 'app.kubernetes.io/instance': c.metadata.name, 'app.kubernetes.io/managed-by': 'cairn-operator' }, ownerReferences: ownerReferences as never },
          type: 'Opaque',
          data: { [key]: Buffer.from(value).toString('base64') },
        },
        fieldManager: FIELD_MANAGER,
      });
      return true;
    } catch (err) {
      if (statusOf(err) === 409) return false;
      throw err;
    }
  }

  /** Merge-patches a pod's annotations (a pod gone meanwhile is not an error: its successor gets its own). */
  async annotatePod(namespace: string, name: string, annotations: Readonly<Record<string, string>>): Promise<void> {
    try {
      await this.#core.patchNamespacedPod({ namespace, name, body: { metadata: { annotations: { ...annotations } } }, fieldManager: FIELD_MANAGER }, mergePatch);
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
    }
  }

  async deletePvc(namespace: string, name: string): Promise<void> {
    try {
      await this.#core.deleteNamespacedPersistentVolumeClaim({ namespace, name });
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
    }
  }

  async event(c: CairnCluster, e: EventInput): Promise<void> {
    const now = new Date();
    await this.#events.createNamespacedEvent({
      namespace: c.metadata.namespace,
      body: {
        apiVersion: 'events.k8s.io/v1',
        kind: 'Event',
        metadata: { generateName: `${c.metadata.name}.`, namespace: c.metadata.namespace },
        eventTime: now,
        reportingController: 'cairn.dev/operator',
        reportingInstance: this.#identity,
        action: e.action,
        reason: e.reason,
        note: e.note.slice(0, 1024),
        type: e.type,
        regarding: { apiVersion: c.apiVersion, kind: c.kind, name: c.metadata.name, namespace: c.metadata.namespace, uid: c.metadata.uid },
      },
    });
  }

  // ---- Lease (leader election) ----

  async readLease(namespace: string, name: string): Promise<V1Lease | undefined> {
    try {
      return await this.#coordination.readNamespacedLease({ namespace, name });
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  createLease(namespace: string, lease: V1Lease): Promise<V1Lease> {
    return this.#coordination.createNamespacedLease({ namespace, body: lease });
  }

  /** PUT with the resourceVersion read: 409 when another replica wrote in between. */
  replaceLease(namespace: string, lease: V1Lease): Promise<V1Lease> {
    return this.#coordination.replaceNamespacedLease({ namespace, name: lease.metadata?.name ?? '', body: lease });
  }
}
