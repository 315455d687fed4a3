// The ordered transactional key-value contract that all metadata model logic is written against.
// Backends (LevelDB, PostgreSQL) implement it and pass one conformance suite.

/** A key range; bounds are compared bytewise (unsigned lexicographic order). */
export interface KvRange {
  readonly gt?: Buffer;
  readonly gte?: Buffer;
  readonly lt?: Buffer;
  readonly lte?: Buffer;
  /** Maximum entries to return; undefined = no limit. */
  readonly limit?: number;
  /** Return entries in descending key order. */
  readonly reverse?: boolean;
}

export type KvEntry = readonly [key: Buffer, value: Buffer];

export interface KvReader {
  get(key: Buffer): Promise<Buffer | undefined>;
  scan(range: KvRange): Promise<KvEntry[]>;
}

/** A transaction: reads see the transaction's own writes; writes apply atomically on commit. */
export interface KvTx extends KvReader {
  put(key: Buffer, value: Buffer): void;
  del(key: Buffer): void;
  /** Deliver `payload` to subscribers of `channel` after (and only if) the transaction commits. */
  notify(channel: string, payload: string): void;
  /**
   * Present where a read costs a round trip (PostgreSQL): reads several keys in one, with the
   * same results and conflict tracking as `get` of each, so later `get`s of them cost nothing.
   * Callers that know their next reads use it as a prefetch.
   */
  readonly getMany?: (keys: readonly Buffer[]) => Promise<Array<Buffer | undefined>>;
}

export interface TransactOptions {
  /** Attempts after the first on serialization conflicts (default 16). */
  readonly maxRetries?: number;
  /**
   * Called once, when the commit is decided and visible to every transaction that begins
   * afterwards, possibly before it is durable (transact resolves only once it is). Lets a caller
   * that serializes its writers start the next transaction while this one is being synced. Not
   * called when transact rejects; an exception it throws is reported as a warning.
   */
  readonly onAccepted?: () => void;
}

export type KvListener = (payload: string) => void;

/**
 * How precisely a backend detects conflicts between transactions. 'key': only transactions that
 * touch the same keys or ranges conflict (LevelDB's validation). 'page': conflicts are tracked per
 * storage page, so transactions on unrelated keys that share a page — neighbouring tenants' keys —
 * conflict too (PostgreSQL SERIALIZABLE locks B-tree leaf pages, never single index keys).
 */
export type ConflictGranularity = 'key' | 'page';

export interface Kv extends KvReader {
  /** Undefined means 'key'. Callers use it to decide how much to serialize writers themselves. */
  readonly conflictGranularity?: ConflictGranularity;
  /**
   * Runs `fn` in a serializable transaction and commits durably (synced) before resolving.
   * On a serialization conflict the whole function is re-run (so it must have no side effects
   * outside `tx`), up to `maxRetries` times; then it rejects with CairnError CAIRN_TX_CONFLICT.
   * An error thrown by `fn` aborts the transaction and is rethrown unchanged.
   */
  transact<T>(fn: (tx: KvTx) => Promise<T>, options?: TransactOptions): Promise<T>;
  /** Subscribe to notifications (from this process or, for shared backends, any replica). */
  subscribe(channel: string, listener: KvListener): () => void;
  /**
   * Runs `fn` against one consistent read-only view of the whole store as of one point in time,
   * while transactions go on (exports, backups). It never conflicts, retries or blocks writers,
   * so `fn` may have side effects (such as writing a file). Resolves only once everything the
   * view showed is durable.
   */
  snapshot<T>(fn: (view: KvReader) => Promise<T>): Promise<T>;
  /**
   * A hint that few keys start with `prefix`: the KV may keep all of them in memory and answer
   * reads of absent ones without a lookup. It never changes what a read returns. Optional.
   */
  indexSparsePrefix?(prefix: Buffer): void;
  close(): Promise<void>;
}
