// The shared metadata KV on PostgreSQL: SERIALIZABLE transactions over one `kv(k bytea, v bytea)`
// table, retried on serialization failures, with LISTEN/NOTIFY waking watchers on every replica.
import pg from 'pg';
import { CairnError } from '../../common/errors.js';
import {
  backoffMs,
  checkChannel,
  checkFn,
  checkKey,
  checkListener,
  dedupeNotifications,
  deliver,
  keyId,
  maxRetriesOf,
  mergeScan,
  onAcceptedOf,
  normalizeRange,
  sleep,
  writesInRange,
  type NormalRange,
  type Write,
  BufferedTx,
} from './internal.js';
import type { Kv, KvEntry, KvListener, KvRange, KvReader, KvTx, TransactOptions } from './types.js';

export interface PostgresKvOptions {
  /** postgres://user:password@host:port/database */
  readonly connectionString?: string;
  /** node-postgres pool settings (host, user, max, ssl, …); merged over `connectionString`. */
  readonly pool?: pg.PoolConfig;
  /** Upper bound for the LISTEN connection's reconnect backoff (default 5000 ms). */
  readonly maxReconnectDelayMs?: number;
}

/** Re-runs after losing the connection before COMMIT (a failover drops every pooled connection). */
const RECONNECT_RETRIES = 2;
const SERIALIZATION_FAILURE = '40001';
/**
 * Buffered writes a transaction sends ahead of COMMIT once it has this many unsent, so that
 * PostgreSQL applies them while the transaction goes on. A lane batch of 64 commits writes about
 * 400 rows, which PostgreSQL took 3.4 ms to apply, all of it after the service had computed the
 * whole batch; sending the first 200 early overlaps half of that with the rest of the batch.
 */
const EARLY_WRITE_ROWS = 200;
const DEADLOCK_DETECTED = '40P01';
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300', '53400']);
const NETWORK_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

function sqlState(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null || !('code' in error)) return undefined;
  const code = error.code;
  return typeof code === 'string' ? code : undefined;
}

function isConflict(error: unknown): boolean {
  const code = sqlState(error);
  return code === SERIALIZATION_FAILURE || code === DEADLOCK_DETECTED;
}

function isConnectionFailure(error: unknown): boolean {
  const code = sqlState(error);
  if (code !== undefined) return code.startsWith('08') || UNAVAILABLE_SQLSTATES.has(code) || NETWORK_ERRNOS.has(code);
  // node-postgres reports dropped sockets and pool timeouts as plain Errors without a code.
  const message = error instanceof Error ? error.message : '';
  return /connection|terminated|timeout exceeded|not queryable|Client was closed/i.test(message);
}

/** Connection trouble becomes CAIRN_UNAVAILABLE; anything else is returned unchanged. */
function mapError(error: unknown): unknown {
  if (error instanceof CairnError) return error;
  if (isConflict(error)) {
    return new CairnError('CAIRN_TX_CONFLICT', 'transaction conflicted', { cause: error, retryAfterMs: 10 });
  }
  if (isConnectionFailure(error)) {
    return new CairnError('CAIRN_UNAVAILABLE', 'metadata database unavailable', { cause: error, retryAfterMs: 1000 });
  }
  return error;
}

function rangeSql(r: NormalRange, params: unknown[]): string {
  const where: string[] = [];
  if (r.lower !== undefined) {
    params.push(r.lower.key);
    where.push(`k ${r.lower.inclusive ? '>=' : '>'} $${params.length}`);
  }
  if (r.upper !== undefined) {
    params.push(r.upper.key);
    where.push(`k ${r.upper.inclusive ? '<=' : '<'} $${params.length}`);
  }
  return where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`;
}

/**
 * Every statement this KV sends is built from a handful of templates, so each gets a name and is
 * parsed and planned once per connection (a prepared statement) instead of on every call: the
 * unnamed statement costs PostgreSQL a parse and a plan, and the client a Parse and Describe
 * message, per read. The set of texts is finite (range shapes), so the map stays small.
 */
const statementNames = new Map<string, string>();

function statement(text: string, values: unknown[]): pg.QueryConfig {
  // Transaction control carries no parameters and is sent as a simple query, as before.
  if (values.length === 0) return { text };
  let name = statementNames.get(text);
  if (name === undefined) {
    name = `cairn_kv_${statementNames.size}`;
    statementNames.set(text, name);
  }
  return { name, text, values };
}

/**
 * Many byte strings as statement parameters: one bytea (a Buffer, which node-postgres sends in
 * binary) plus int4 arrays of 1-based offsets and lengths, instead of a bytea[] parameter, which
 * goes as text: hex that the client encodes and PostgreSQL parses a character at a time (about
 * 15% of a backend's CPU in a batch of commits, in a perf profile).
 */
class Packed {
  private readonly parts: Buffer[] = [];
  private length = 0;

  /** Adds `b`; returns its [offset (1-based), length]. */
  add(b: Buffer): [number, number] {
    this.parts.push(b);
    const at: [number, number] = [this.length + 1, b.length];
    this.length += b.length;
    return at;
  }

  bytes(): Buffer {
    return Buffer.concat(this.parts, this.length);
  }
}

/** SQL for the array of byte strings that `bytes`, `offsets` and `lengths` (Packed) carry. */
function unpackedArray(bytes: string, offsets: string, lengths: string): string {
  return `ARRAY(SELECT substring(${bytes}::bytea FROM o FOR l) FROM unnest(${offsets}::int4[], ${lengths}::int4[]) AS p(o, l))`;
}

type RowQuery = <R extends pg.QueryResultRow>(text: string, values: unknown[]) => Promise<pg.QueryResult<R>>;

async function readStored(query: RowQuery, r: NormalRange, upper: readonly Write[]): Promise<KvEntry[]> {
  const params: unknown[] = [];
  let sql = `SELECT k, v FROM kv ${rangeSql(r, params)} ORDER BY k ${r.reverse ? 'DESC' : 'ASC'}`;
  if (Number.isFinite(r.limit)) {
    // Each buffered delete hides at most one stored row.
    let fetch = r.limit;
    for (const w of upper) if (w.value === undefined) fetch++;
    params.push(fetch);
    sql += ` LIMIT $${params.length}`;
  }
  const result = await query<{ k: Buffer; v: Buffer }>(sql, params);
  const stored: KvEntry[] = result.rows.map((row) => [row.k, row.v]);
  return upper.length === 0 && !Number.isFinite(r.limit) ? stored : mergeScan(stored, upper, r);
}

class PostgresTx extends BufferedTx implements KvTx {
  /** Set once PostgreSQL reported a serialization failure: the attempt is doomed, whatever fn does. */
  conflicted = false;
  /** Set once the connection failed: nothing can have committed, so the attempt may be re-run. */
  disconnected: unknown;

  constructor(private readonly client: pg.PoolClient) {
    super();
  }

  /** The last statement sent: one at a time on the connection, early writes included. */
  private tail: Promise<unknown> = Promise.resolve();

  /** Settles once every statement sent so far has finished, whatever their outcome. */
  async settled(): Promise<void> {
    await this.tail;
  }

  private async query<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<pg.QueryResult<R>> {
    const run = this.tail.then(() => this.client.query<R>(statement(text, values)));
    this.tail = run.catch(() => undefined);
    try {
      return await run;
    } catch (error) {
      if (isConflict(error)) this.conflicted = true;
      else if (isConnectionFailure(error)) this.disconnected ??= error;
      throw mapError(error);
    }
  }

  /**
   * Values this transaction already read (undefined = absent). Inside one SERIALIZABLE transaction
   * a key reads the same until the transaction writes it (the write buffer answers then), so a
   * repeated read (a commit's usage counter, read by several steps) costs no second round trip.
   */
  private readonly reads = new Map<string, Buffer | undefined>();

  async get(key: Buffer): Promise<Buffer | undefined> {
    this.checkOpen('get');
    checkKey(key);
    const id = keyId(key);
    const own = this.writes.get(id);
    if (own !== undefined) return own.value === undefined ? undefined : Buffer.from(own.value);
    if (this.reads.has(id)) {
      const seen = this.reads.get(id);
      return seen === undefined ? undefined : Buffer.from(seen);
    }
    const result = await this.query<{ v: Buffer }>('SELECT v FROM kv WHERE k = $1', [key]);
    const value = result.rows[0]?.v;
    this.reads.set(id, value === undefined ? undefined : Buffer.from(value));
    return value;
  }

  readonly getMany = async (keys: readonly Buffer[]): Promise<Array<Buffer | undefined>> => {
    this.checkOpen('getMany');
    const out = new Array<Buffer | undefined>(keys.length);
    const wanted = new Map<string, { key: Buffer; at: number[] }>();
    keys.forEach((key, i) => {
      checkKey(key);
      const id = keyId(key);
      const own = this.writes.get(id);
      if (own !== undefined) out[i] = own.value === undefined ? undefined : Buffer.from(own.value);
      else if (this.reads.has(id)) {
        const seen = this.reads.get(id);
        out[i] = seen === undefined ? undefined : Buffer.from(seen);
      } else {
        const w = wanted.get(id);
        if (w === undefined) wanted.set(id, { key, at: [i] });
        else w.at.push(i);
      }
    });
    if (wanted.size > 0) {
      const packed = new Packed();
      const at = [...wanted.values()].map((w) => packed.add(w.key));
      const result = await this.query<{ k: Buffer; v: Buffer }>(`SELECT k, v FROM kv WHERE k = ANY(${unpackedArray('$1', '$2', '$3')})`, [packed.bytes(), at.map((a) => a[0]), at.map((a) => a[1])]);
      const found = new Map(result.rows.map((row) => [keyId(row.k), row.v]));
      for (const [id, { at }] of wanted) {
        const value = found.get(id);
        this.reads.set(id, value === undefined ? undefined : Buffer.from(value));
        for (const i of at) out[i] = value === undefined ? undefined : Buffer.from(value);
      }
    }
    return out;
  };

  async scan(range: KvRange): Promise<KvEntry[]> {
    this.checkOpen('scan');
    const r = normalizeRange(range);
    const upper = writesInRange(this.writes.values(), r);
    return readStored((text, values) => this.query(text, values), r, upper);
  }

  /**
   * Ids written since the last statement that applied writes. Once there are EARLY_WRITE_ROWS of
   * them, they are sent while the transaction goes on (see EARLY_WRITE_ROWS).
   */
  private readonly unsent = new Set<string>();
  /** The early write statements sent so far, chained; it never rejects (see earlyFailure). */
  private early: Promise<void> | undefined;
  /** Why an early write statement failed: the transaction can no longer commit. */
  earlyFailure: Error | undefined;

  protected override wrote(id: string): void {
    this.unsent.add(id);
    if (this.unsent.size >= EARLY_WRITE_ROWS && !this.finished && this.earlyFailure === undefined) {
      const writes = this.takeUnsent();
      const sent = this.writeRows(writes, []).catch((error: unknown) => {
        this.earlyFailure ??= error instanceof Error ? error : new Error(String(error));
      });
      this.early = this.early === undefined ? sent : this.early.then(() => sent);
    }
  }

  /** The writes not yet sent, in key order (one lock order for concurrent writers, which avoids most deadlocks). */
  private takeUnsent(): Write[] {
    const writes = [...this.unsent].map((id) => this.writes.get(id)!).sort((a, b) => Buffer.compare(a.key, b.key));
    this.unsent.clear();
    return writes;
  }

  /**
   * Applies the buffered writes not sent yet and queues notifications, both taking effect at
   * COMMIT, in one statement (one round trip), after the early statements have finished.
   */
  async apply(): Promise<void> {
    await this.early;
    if (this.earlyFailure !== undefined) throw this.earlyFailure;
    const notifications = dedupeNotifications(this.notifications);
    const writes = this.takeUnsent();
    if (writes.length === 0 && notifications.length === 0) return;
    await this.writeRows(writes, notifications);
  }

  /**
   * One statement: data-modifying WITH clauses always run to completion, and a key is either put
   * or deleted in one statement, never both, so no row is touched twice.
   */
  private async writeRows(writes: readonly Write[], notifications: ReadonlyArray<readonly [string, string]>): Promise<void> {
    const puts = writes.filter((w): w is Write & { value: Buffer } => w.value !== undefined);
    const dels = writes.filter((w) => w.value === undefined);
    const packed = new Packed();
    const kAt = puts.map((w) => packed.add(w.key));
    const vAt = puts.map((w) => packed.add(w.value));
    const dAt = dels.map((w) => packed.add(w.key));
    await this.query(
      'WITH put AS (INSERT INTO kv (k, v) SELECT substring($1::bytea FROM ko FOR kl), substring($1::bytea FROM vo FOR vl) ' +
        'FROM unnest($2::int4[], $3::int4[], $4::int4[], $5::int4[]) AS r(ko, kl, vo, vl) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v RETURNING 1), ' +
        `del AS (DELETE FROM kv WHERE k = ANY(${unpackedArray('$1', '$6', '$7')}) RETURNING 1) ` +
        'SELECT pg_notify(c, p) FROM unnest($8::text[], $9::text[]) WITH ORDINALITY AS n(c, p, i) ORDER BY i',
      [packed.bytes(), kAt.map((a) => a[0]), kAt.map((a) => a[1]), vAt.map((a) => a[0]), vAt.map((a) => a[1]), dAt.map((a) => a[0]), dAt.map((a) => a[1]), notifications.map((n) => n[0]), notifications.map((n) => n[1])],
    );
  }
}

type ListenerState = 'idle' | 'connecting' | 'ready' | 'backoff' | 'closed';

/**
 * One dedicated LISTEN connection per Kv, reconnecting with jittered backoff. Notifications sent
 * while it is down are lost (PostgreSQL does not queue them), so watchers should re-read state
 * when they resume rather than trust the feed of payloads alone.
 */
class Listener {
  private readonly channels = new Map<string, Set<KvListener>>();
  private client: pg.Client | undefined;
  private listening = new Set<string>();
  private state: ListenerState = 'idle';
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Settles when the channel set requested so far is applied (or the attempt failed). */
  private syncing: Promise<void> = Promise.resolve();

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly maxDelayMs: number,
  ) {}

  subscribe(channel: string, listener: KvListener): () => void {
    let set = this.channels.get(channel);
    if (set === undefined) {
      set = new Set();
      this.channels.set(channel, set);
    }
    const entry: KvListener = (payload) => {
      listener(payload);
    };
    set.add(entry);
    this.sync();
    return () => {
      const current = this.channels.get(channel);
      current?.delete(entry);
      if (current?.size === 0) {
        this.channels.delete(channel);
        this.sync();
      }
    };
  }

  /** Lets a committer wait until subscriptions made before it are live on the server. */
  settled(): Promise<void> {
    return this.syncing;
  }

  private sync(): void {
    if (this.state === 'closed' || this.state === 'backoff') return;
    this.syncing = this.syncing.then(() => this.syncOnce());
  }

  private async syncOnce(): Promise<void> {
    if (this.state === 'closed' || this.state === 'backoff') return;
    try {
      if (this.client === undefined) {
        if (this.channels.size === 0) return;
        await this.connect();
      }
      const client = this.client;
      if (client === undefined) return;
      for (const channel of this.channels.keys()) {
        if (!this.listening.has(channel)) {
          // checkChannel admits only [a-z0-9_], so double quotes are a complete quoting.
          await client.query(`LISTEN "${channel}"`);
          this.listening.add(channel);
        }
      }
      for (const channel of [...this.listening]) {
        if (!this.channels.has(channel)) {
          await client.query(`UNLISTEN "${channel}"`);
          this.listening.delete(channel);
        }
      }
      this.attempt = 0;
    } catch {
      this.dropped();
    }
  }

  private async connect(): Promise<void> {
    this.state = 'connecting';
    const client = new pg.Client(this.config);
    client.on('error', () => {
      if (this.client === client) this.dropped();
    });
    client.on('end', () => {
      if (this.client === client) this.dropped();
    });
    client.on('notification', (message) => {
      deliver(this.channels.get(message.channel), message.payload ?? '');
    });
    this.client = client;
    this.listening = new Set();
    await client.connect();
    if (this.client === client) this.state = 'ready';
  }

  private dropped(): void {
    const client = this.client;
    this.client = undefined;
    this.listening = new Set();
    if (client !== undefined) void client.end().catch(() => undefined);
    if (this.state === 'closed' || this.state === 'backoff') return;
    this.state = 'backoff';
    const delay = Math.min(this.maxDelayMs, 50 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt = Math.min(this.attempt + 1, 20);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.state !== 'backoff') return;
      this.state = 'idle';
      this.sync();
    }, delay);
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.state = 'closed';
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.channels.clear();
    await this.syncing;
    const client = this.client;
    this.client = undefined;
    if (client !== undefined) await client.end().catch(() => undefined);
  }
}

type Attempt<T> =
  | { readonly kind: 'committed'; readonly result: T }
  | { readonly kind: 'conflict' | 'disconnected'; readonly cause: unknown };

class PostgresKv implements Kv {
  // SIREAD locks on kv_pkey are per leaf page: a read of one tenant's key locks the page that
  // also holds other tenants' keys, so their inserts and non-HOT updates conflict with it.
  readonly conflictGranularity = 'page' as const;
  private running = 0;
  private idleWaiters: Array<() => void> = [];
  private closing: Promise<void> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly listener: Listener,
  ) {}

  async get(key: Buffer): Promise<Buffer | undefined> {
    checkKey(key);
    this.checkOpen();
    const result = await this.read<{ v: Buffer }>('SELECT v FROM kv WHERE k = $1', [key]);
    return result.rows[0]?.v;
  }

  async scan(range: KvRange): Promise<KvEntry[]> {
    const r = normalizeRange(range);
    this.checkOpen();
    return readStored((text, values) => this.read(text, values), r, []);
  }

  /** A single-statement read; being idempotent, it is retried once on a dead pooled connection. */
  private async read<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(statement(text, values));
    } catch (error) {
      if (!isConnectionFailure(error)) throw mapError(error);
    }
    try {
      return await this.pool.query<R>(statement(text, values));
    } catch (error) {
      throw mapError(error);
    }
  }

  async transact<T>(fn: (tx: KvTx) => Promise<T>, options?: TransactOptions): Promise<T> {
    checkFn(fn);
    const maxRetries = maxRetriesOf(options);
    const accepted = onAcceptedOf(options);
    this.checkOpen();
    this.running++;
    try {
      let conflicts = 0;
      let reconnects = 0;
      for (;;) {
        const outcome = await this.attempt(fn);
        if (outcome.kind === 'committed') {
          // COMMIT returned: visible and durable at once.
          accepted();
          return outcome.result;
        }
        if (outcome.kind === 'disconnected') {
          if (reconnects >= RECONNECT_RETRIES) throw mapError(outcome.cause);
          await sleep(backoffMs(reconnects++, 50, 500));
          continue;
        }
        if (conflicts >= maxRetries) {
          throw new CairnError('CAIRN_TX_CONFLICT', `transaction conflicted ${conflicts + 1} times`, {
            cause: outcome.cause,
            retryAfterMs: 10,
          });
        }
        await sleep(backoffMs(conflicts++));
      }
    } finally {
      this.running--;
      if (this.running === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const wake of waiters) wake();
      }
    }
  }

  /**
   * One attempt: commits, or reports why it may be re-run (a serialization conflict, or a
   * connection lost before COMMIT was sent), or throws.
   */
  private async attempt<T>(fn: (tx: KvTx) => Promise<T>): Promise<Attempt<T>> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      if (isConnectionFailure(error)) return { kind: 'disconnected', cause: error };
      throw mapError(error);
    }
    const tx = new PostgresTx(client);
    let broken: unknown;
    let open = false;
    // A checked-out client has no pool listener: without ours a dropped connection would be an
    // uncaught 'error' event. The failing query reports the problem to the transaction too.
    const onError = (error: Error): void => {
      broken = error;
    };
    client.on('error', onError);
    try {
      try {
        await client.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
        open = true;
      } catch (error) {
        broken = error;
        if (isConnectionFailure(error)) return { kind: 'disconnected', cause: error };
        throw mapError(error);
      }
      let result: T;
      try {
        result = await fn(tx);
      } catch (error) {
        tx.finished = true;
        // An error after a serialization failure or a lost connection is most likely its
        // consequence, and the attempt could not have committed anyway: re-run it.
        if (tx.conflicted || isConflict(error)) return { kind: 'conflict', cause: error };
        if (tx.disconnected !== undefined) {
          broken = tx.disconnected;
          return { kind: 'disconnected', cause: tx.disconnected };
        }
        // Reads after a failed early write fail too: report the write's error, the cause.
        throw tx.earlyFailure ?? error;
      }
      tx.finished = true;
      if (tx.conflicted) return { kind: 'conflict', cause: undefined };
      if (tx.disconnected !== undefined) {
        broken = tx.disconnected;
        return { kind: 'disconnected', cause: tx.disconnected };
      }
      try {
        if (tx.notifications.length > 0) await this.listener.settled();
        await tx.apply();
      } catch (error) {
        if (tx.conflicted || isConflict(error)) return { kind: 'conflict', cause: error };
        if (tx.disconnected !== undefined) {
          broken = tx.disconnected;
          return { kind: 'disconnected', cause: tx.disconnected };
        }
        throw mapError(error);
      }
      open = false;
      try {
        await client.query('COMMIT');
        return { kind: 'committed', result };
      } catch (error) {
        if (isConflict(error)) return { kind: 'conflict', cause: error };
        // Lost during COMMIT, the outcome is unknown: re-running could apply it twice.
        if (isConnectionFailure(error)) broken = error;
        throw mapError(error);
      }
    } finally {
      tx.finished = true;
      // Early writes may still be running when fn throws: the connection takes one statement at a time.
      await tx.settled();
      // The ROLLBACK may meet a dying connection too, so our listener stays until release().
      await this.releaseClient(client, broken, open);
      client.off('error', onError);
    }
  }

  private async releaseClient(client: pg.PoolClient, broken: unknown, open: boolean): Promise<void> {
    if (broken !== undefined) {
      client.release(broken instanceof Error ? broken : true);
      return;
    }
    try {
      // A failed COMMIT has already ended the transaction; every other exit must roll back.
      if (open) await client.query('ROLLBACK');
      client.release();
    } catch (error) {
      client.release(error instanceof Error ? error : true);
    }
  }

  async snapshot<T>(fn: (view: KvReader) => Promise<T>): Promise<T> {
    checkFn(fn);
    this.checkOpen();
    this.running++;
    try {
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (error) {
        throw mapError(error);
      }
      let broken: unknown;
      let open = false;
      const onError = (error: Error): void => {
        broken = error;
      };
      client.on('error', onError);
      const query: RowQuery = async (text, values) => {
        try {
          return await client.query(statement(text, values));
        } catch (error) {
          if (isConnectionFailure(error)) broken ??= error;
          throw mapError(error);
        }
      };
      try {
        // REPEATABLE READ is one snapshot for the whole transaction and, unlike SERIALIZABLE,
        // takes no predicate locks: a long export neither fails nor makes writers conflict.
        await query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', []);
        open = true;
        const view: KvReader = {
          get: async (key) => {
            checkKey(key);
            const result = await query<{ v: Buffer }>('SELECT v FROM kv WHERE k = $1', [key]);
            return result.rows[0]?.v;
          },
          scan: async (range) => readStored(query, normalizeRange(range), []),
        };
        const result = await fn(view);
        open = false;
        await query('COMMIT', []);
        return result;
      } finally {
        await this.releaseClient(client, broken, open);
        client.off('error', onError);
      }
    } finally {
      this.running--;
      if (this.running === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const wake of waiters) wake();
      }
    }
  }

  subscribe(channel: string, listener: KvListener): () => void {
    checkChannel(channel);
    checkListener(listener);
    if (this.closing !== undefined) return () => undefined;
    return this.listener.subscribe(channel, listener);
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    while (this.running > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    await this.listener.close();
    await this.pool.end();
  }

  private checkOpen(): void {
    if (this.closing !== undefined) throw new CairnError('CAIRN_SHUTTING_DOWN', 'metadata KV is closed');
  }
}

export async function openPostgresKv(options: PostgresKvOptions): Promise<Kv> {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
  const { connectionString, pool: poolOptions, maxReconnectDelayMs = 5000 } = options;
  if (connectionString !== undefined && (typeof connectionString !== 'string' || connectionString.length === 0)) {
    throw new TypeError('options.connectionString must be a non-empty string');
  }
  if (poolOptions !== undefined && (typeof poolOptions !== 'object' || poolOptions === null)) {
    throw new TypeError('options.pool must be an object');
  }
  if (connectionString === undefined && poolOptions === undefined) {
    throw new TypeError('options.connectionString or options.pool is required');
  }
  if (!Number.isFinite(maxReconnectDelayMs) || maxReconnectDelayMs < 0) {
    throw new RangeError('options.maxReconnectDelayMs must be a number ≥ 0');
  }
  const config: pg.PoolConfig = {
    application_name: 'cairn-metadata',
    ...(connectionString === undefined ? {} : { connectionString }),
    ...poolOptions,
    // Sequential scans take relation-wide SIREAD locks, making every writer look like it
    // conflicts with every reader; index scans keep SERIALIZABLE's conflict detection precise.
    options: `${poolOptions?.options ?? ''} -c enable_seqscan=off`.trim(),
  };
  const pool = new pg.Pool(config);
  // Idle clients that lose their connection emit here; the pool drops them, nothing to do.
  pool.on('error', () => undefined);
  try {
    await pool.query('CREATE TABLE IF NOT EXISTS kv (k bytea PRIMARY KEY, v bytea NOT NULL)');
  } catch (error) {
    const code = sqlState(error);
    // Two replicas creating the table at once: one loses the race on the catalog, which is fine.
    if (code !== '23505' && code !== '42P07') {
      await pool.end().catch(() => undefined);
      throw mapError(error);
    }
  }
  return new PostgresKv(pool, new Listener(config, maxReconnectDelayMs));
}
