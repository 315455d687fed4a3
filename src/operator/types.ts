// The CairnCluster custom resource (cairn.dev/v1alpha1) as TypeScript types, and the shapes the
// pure reconcile consumes (Observed) and produces (Action). The CRD schema lives in the chart.

export const GROUP = 'cairn.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'CairnCluster';
/** Field manager for server-side apply: the operator owns exactly the fields it sets. */
export const FIELD_MANAGER = 'cairn-operator';
/**
 * Pod annotation holding a block node's failure domain, copied by the operator from the label
 * `topologyKey` of the node the pod is scheduled on; the pod reads it through the downward API.
 */
export const ZONE_ANNOTATION = 'cairn.dev/zone';
/** Ports every Cairn process listens on inside a pod (README "Server options"). */
export const GRPC_PORT = 7400;
export const HTTP_PORT = 7480;

export interface StorageSpec {
  /** A Kubernetes quantity, e.g. "100Gi". */
  readonly size: string;
  /** Absent: the cluster's default StorageClass. */
  readonly storageClassName?: string;
}

export interface ResourcesSpec {
  readonly requests?: Readonly<Record<string, string>>;
  readonly limits?: Readonly<Record<string, string>>;
}

export interface BlockNodesSpec {
  readonly replicas: number;
  readonly storage: StorageSpec;
  /** Restrict block nodes to these zones (node label `topologyKey`); empty = any zone. */
  readonly zones?: readonly string[];
  /** Node label that names a failure domain; default topology.kubernetes.io/zone. */
  readonly topologyKey?: string;
  readonly resources?: ResourcesSpec;
}

export interface MetadataSpec {
  readonly backend: 'level' | 'postgres';
  /** postgres only: metadata Deployment replicas (level always runs one StatefulSet pod). */
  readonly replicas?: number;
  /** level only: the volume holding the LevelDB store. */
  readonly storage?: StorageSpec;
  /** postgres only: the Secret key holding the connection URL. */
  readonly postgres?: { readonly secretRef: { readonly name: string; readonly key: string } };
  readonly resources?: ResourcesSpec;
}

export interface CairnClusterSpec {
  readonly image: { readonly repository: string; readonly tag: string; readonly pullPolicy?: 'Always' | 'IfNotPresent' | 'Never' };
  readonly replicationFactor: number;
  readonly writeQuorum: number;
  readonly blocknodes: BlockNodesSpec;
  readonly gateway: { readonly replicas: number; readonly resources?: ResourcesSpec };
  readonly media?: { readonly replicas: number; readonly resources?: ResourcesSpec };
  readonly metadata: MetadataSpec;
  /** How long a block-node pod may be NotReady or missing before its node is marked down. */
  readonly failoverDelaySeconds: number;
  readonly upgrade?: { readonly paused?: boolean };
  /** Secret with tls.crt, tls.key (and ca.crt for mTLS) for every listener; absent = plaintext. */
  readonly tls?: { readonly secretName: string };
  /** Retain (default) keeps block-node and metadata volumes when the cluster is deleted. */
  readonly volumeReclaimPolicy?: 'Retain' | 'Delete';
}

export type ConditionType = 'Ready' | 'Progressing' | 'Degraded' | 'Rebalancing' | 'ScaleDownBlocked' | 'Upgrading';
export const CONDITION_TYPES: readonly ConditionType[] = ['Ready', 'Progressing', 'Degraded', 'Rebalancing', 'ScaleDownBlocked', 'Upgrading'];

export interface Condition {
  readonly type: ConditionType;
  readonly status: 'True' | 'False' | 'Unknown';
  readonly reason: string;
  readonly message: string;
  readonly lastTransitionTime: string;
  readonly observedGeneration: number;
}

export type NodeState = 'joining' | 'up' | 'draining' | 'down' | 'removed';

export interface NodeRow {
  readonly id: string;
  readonly pod: string;
  readonly state: NodeState | 'unregistered';
  readonly blocks: number;
  readonly soleCopies: number;
}

export interface CairnClusterStatus {
  readonly observedGeneration: number;
  readonly conditions: readonly Condition[];
  readonly nodes: readonly NodeRow[];
  readonly readyBlockNodes: number;
  readonly bytesToMove: number;
}

export interface CairnCluster {
  readonly apiVersion: typeof API_VERSION;
  readonly kind: typeof KIND;
  readonly metadata: { readonly name: string; readonly namespace: string; readonly uid: string; readonly generation: number; readonly deletionTimestamp?: string };
  readonly spec: CairnClusterSpec;
  readonly status?: CairnClusterStatus;
}

/** A Kubernetes object as the operator applies it: plain JSON. */
export interface KubeObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: {
    readonly name: string;
    readonly namespace?: string;
    readonly labels?: Readonly<Record<string, string>>;
    readonly annotations?: Readonly<Record<string, string>>;
    readonly ownerReferences?: readonly unknown[];
  };
  readonly [field: string]: unknown;
}

/** A block-node pod as the adapter sees it (ordinal parsed from the name). */
export interface ObservedPod {
  readonly name: string;
  readonly ordinal: number;
  readonly ready: boolean;
  /** When the pod last stopped being Ready (ms); undefined while Ready. */
  readonly notReadySinceMs?: number;
  /** The image of its cairn container. */
  readonly image: string;
  /** The Kubernetes node it is scheduled on (spec.nodeName); undefined while unscheduled. */
  readonly nodeName?: string;
  /** Its ZONE_ANNOTATION as the API server holds it; undefined while the annotation is absent. */
  readonly zone?: string;
}

/** A block node as the metadata Admin API reports it (ListNodes + GetDrainStatus). */
export interface ObservedNode {
  readonly id: string;
  readonly state: NodeState;
  readonly blocks: number;
  readonly soleCopies: number;
  readonly bytesToMove: number;
  readonly underReplicatedPartitions: number;
  readonly drainDone: boolean;
}

export type ObservedMetadata =
  | { readonly reachable: false }
  | { readonly reachable: true; readonly nodes: readonly ObservedNode[] };

export interface Observed {
  readonly nowMs: number;
  /** Objects the operator applied last, by objectKey(): what the API server holds for our fields. */
  readonly objects: ReadonlyMap<string, KubeObject>;
  /** Secrets that exist (names); their contents never reach reconcile. */
  readonly secrets: ReadonlySet<string>;
  /** Block-node pods that exist, any state. */
  readonly blockPods: readonly ObservedPod[];
  /** Block-node pods the StatefulSet wants but that do not exist, by name: since when (ms). */
  readonly missingSinceMs?: ReadonlyMap<string, number>;
  /** Block-node StatefulSet as the API server holds it (replicas and partition), if it exists. */
  readonly blockStatefulSet?: { readonly replicas: number; readonly partition: number };
  readonly metadata: ObservedMetadata;
  /**
   * Failure domain of each Kubernetes node the cluster's pods are scheduled on: the node's
   * `topologyKey` label ('' when it has none). A node missing here is not known yet.
   */
  readonly nodeZones?: ReadonlyMap<string, string>;
  /** The CairnCluster status as last written. */
  readonly status?: CairnClusterStatus;
}

export type Action =
  /** Server-side apply with FIELD_MANAGER. */
  | { readonly kind: 'apply'; readonly object: KubeObject }
  /**
   * Create the Secret unless it exists, `key` holding `bytes` random bytes (the adapter draws them)
   * as base64url text — the format of auth.key and master.key files.
   */
  | { readonly kind: 'ensureSecret'; readonly name: string; readonly key: string; readonly bytes: number; readonly encoding: 'base64url' }
  /** Admin MarkNodeUp: a Ready, registered joining node enters placement. */
  | { readonly kind: 'admit'; readonly nodeId: string }
  /** Admin DrainNode. */
  | { readonly kind: 'drain'; readonly nodeId: string }
  /** Admin RemoveNode: only after its drain is done. */
  | { readonly kind: 'remove'; readonly nodeId: string }
  /** Mark a node down so re-replication starts (the metadata failure detector does the same on silence). */
  | { readonly kind: 'markDown'; readonly nodeId: string }
  /** Merge-patch a block-node pod's ZONE_ANNOTATION with its node's zone (its init container waits for it). */
  | { readonly kind: 'annotateZone'; readonly pod: string; readonly zone: string }
  /** Write the status subresource. */
  | { readonly kind: 'status'; readonly status: CairnClusterStatus };

export function objectKey(o: Pick<KubeObject, 'kind' | 'metadata'>): string {
  return `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}
