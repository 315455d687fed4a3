// Pieces both KV backends share: argument validation, range normalisation, the merge of a
// transaction's buffered writes over stored entries, and retry backoff. Not exported by index.ts.
import type { KvEntry, KvRange, TransactOptions } from './types.js';

export const DEFAULT_MAX_RETRIES = 16;
/** PostgreSQL's NOTIFY limit (payload must be shorter than 8000 bytes); applied to every backend. */
export const MAX_PAYLOAD_BYTES = 7999;
const CHANNEL_PATTERN = /^[a-z0-9_]{1,63}$/;

/**
 * Longest key any backend accepts. PostgreSQL's btree refuses index entries over ~2.7 KB; one
 * limit for every backend keeps a model that works on LevelDB from failing on PostgreSQL.
 */
export const MAX_KEY_BYTES = 2048;

export function checkKey(key: unknown, name = 'key'): asserts key is Buffer {
  if (!Buffer.isBuffer(key)) throw new TypeError(`${name} must be a Buffer`);
  if (key.length === 0) throw new TypeError(`${name} must not be empty`);
  if (key.length > MAX_KEY_BYTES) throw new RangeError(`${name} must be at most ${MAX_KEY_BYTES} bytes`);
}

export function checkValue(value: unknown, name = 'value'): asserts value is Buffer {
  if (!Buffer.isBuffer(value)) throw new TypeError(`${name} must be a Buffer`);
}

export function checkChannel(channel: unknown): asserts channel is string {
  // Channels become SQL identifiers on PostgreSQL; a strict alphabet makes quoting trivially safe.
  if (typeof channel !== 'string' || !CHANNEL_PATTERN.test(channel)) {
    throw new TypeError('channel must be 1-63 characters of [a-z0-9_]');
  }
}

export function checkPayload(payload: unknown): asserts payload is string {
  if (typeof payload !== 'string') throw new TypeError('payload must be a string');
  if (payload.includes('\0')) throw new TypeError('payload must not contain NUL characters');
  // A UTF-16 unit is at most 3 bytes of UTF-8: short payloads (all of the change feed's) need no count.
  if (payload.length * 3 > MAX_PAYLOAD_BYTES && Buffer.byteLength(payload, 'utf8') > MAX_PAYLOAD_BYTES) {
    throw new TypeError(`payload must be at most ${MAX_PAYLOAD_BYTES} bytes of UTF-8`);
  }
}

export function checkListener(listener: unknown): void {
  if (typeof listener !== 'function') throw new TypeError('listener must be a function');
}

export function maxRetriesOf(options: TransactOptions | undefined): number {
  if (options !== undefined && (typeof options !== 'object' || options === null)) {
    throw new TypeError('options must be an object');
  }
  const value = options?.maxRetries ?? DEFAULT_MAX_RETRIES;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError('options.maxRetries must be an integer ≥ 0');
  }
  return value;
}

export function onAcceptedOf(options: TransactOptions | undefined): () => void {
  const hook = options?.onAccepted;
  if (hook === undefined) return () => undefined;
  if (typeof hook !== 'function') throw new TypeError('options.onAccepted must be a function');
  return () => {
    try {
      hook();
    } catch (error) {
      process.emitWarning(error instanceof Error ? error : new Error(String(error)), 'CairnKvListenerWarning');
    }
  };
}

export function checkFn(fn: unknown): void {
  if (typeof fn !== 'function') throw new TypeError('fn must be a function');
}

export interface Bound {
  readonly key: Buffer;
  readonly inclusive: boolean;
}

/** A validated range: bounds as (key, inclusive) pairs, limit as a positive integer or Infinity. */
export interface NormalRange {
  readonly lower: Bound | undefined;
  readonly upper: Bound | undefined;
  readonly limit: number;
  readonly reverse: boolean;
}

export function normalizeRange(range: KvRange): NormalRange {
  if (typeof range !== 'object' || range === null) throw new TypeError('range must be an object');
  const { gt, gte, lt, lte, limit, reverse } = range;
  if (gt !== undefined && gte !== undefined) throw new TypeError('range.gt and range.gte are mutually exclusive');
  if (lt !== undefined && lte !== undefined) throw new TypeError('range.lt and range.lte are mutually exclusive');
  if (gt !== undefined) checkKey(gt, 'range.gt');
  if (gte !== undefined) checkKey(gte, 'range.gte');
  if (lt !== undefined) checkKey(lt, 'range.lt');
  if (lte !== undefined) checkKey(lte, 'range.lte');
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit <= 0)) {
    throw new RangeError('range.limit must be an integer ≥ 1');
  }
  if (reverse !== undefined && typeof reverse !== 'boolean') throw new TypeError('range.reverse must be a boolean');
  const lowerKey = gt ?? gte;
  const upperKey = lt ?? lte;
  return {
    lower: lowerKey === undefined ? undefined : { key: lowerKey, inclusive: gte !== undefined },
    upper: upperKey === undefined ? undefined : { key: upperKey, inclusive: lte !== undefined },
    limit: limit ?? Infinity,
    reverse: reverse ?? false,
  };
}

export function inRange(key: Buffer, lower: Bound | undefined, upper: Bound | undefined): boolean {
  if (lower !== undefined) {
    const c = Buffer.compare(key, lower.key);
    if (c < 0 || (c === 0 && !lower.inclusive)) return false;
  }
  if (upper !== undefined) {
    const c = Buffer.compare(key, upper.key);
    if (c > 0 || (c === 0 && !upper.inclusive)) return false;
  }
  return true;
}

/** A buffered write; `value === undefined` is a delete. */
export interface Write {
  readonly key: Buffer;
  readonly value: Buffer | undefined;
}

/** Buffered writes that fall inside `range`, in scan order. */
export function writesInRange(writes: Iterable<Write>, range: NormalRange): Write[] {
  const selected: Write[] = [];
  for (const w of writes) if (inRange(w.key, range.lower, range.upper)) selected.push(w);
  selected.sort((a, b) => Buffer.compare(a.key, b.key));
  if (range.reverse) selected.reverse();
  return selected;
}

/**
 * Merges stored entries (already in scan order) with buffered writes (in scan order) up to the
 * range limit; buffered writes shadow stored entries with the same key.
 */
export function mergeScan(stored: readonly KvEntry[], upper: readonly Write[], range: NormalRange): KvEntry[] {
  const out: KvEntry[] = [];
  const dir = range.reverse ? -1 : 1;
  let i = 0;
  let j = 0;
  while (out.length < range.limit && (i < stored.length || j < upper.length)) {
    const s = stored[i];
    const w = upper[j];
    const c = s === undefined ? 1 : w === undefined ? -1 : dir * Buffer.compare(s[0], w.key);
    if (c < 0 && s !== undefined) {
      out.push(s);
      i++;
    } else if (w !== undefined) {
      if (c === 0) i++;
      j++;
      if (w.value !== undefined) out.push([Buffer.from(w.key), Buffer.from(w.value)]);
    }
  }
  return out;
}

/** Full-jitter exponential backoff: spreads retrying contenders apart so they stop colliding. */
export function backoffMs(attempt: number, baseMs = 1, capMs = 100): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** attempt);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A key as a map id: one latin1 character per byte, a bijection, and about half the cost of hex
 * (every read and write of a transaction computes one, some twice).
 */
export function keyId(key: Buffer): string {
  return key.toString('latin1');
}

/** A transaction that reads by a key's id as well (`keyId`), so a caller that has it need not compute it again. */
export interface IdReader {
  getWithId(key: Buffer, id: string): Promise<Buffer | undefined>;
}

/** Drops repeated (channel, payload) pairs: PostgreSQL folds them within one transaction, so we all do. */
export function dedupeNotifications(list: ReadonlyArray<readonly [string, string]>): Array<readonly [string, string]> {
  const seen = new Set<string>();
  const out: Array<readonly [string, string]> = [];
  for (const n of list) {
    const id = `${n[0]}\0${n[1]}`;
    if (!seen.has(id)) {
      seen.add(id);
      out.push(n);
    }
  }
  return out;
}

/** Calls listeners without letting one listener's exception break delivery or the committer. */
export function deliver(listeners: ReadonlySet<(payload: string) => void> | undefined, payload: string): void {
  if (listeners === undefined) return;
  for (const listener of [...listeners]) {
    try {
      listener(payload);
    } catch (error) {
      process.emitWarning(error instanceof Error ? error : new Error(String(error)), 'CairnKvListenerWarning');
    }
  }
}

/**
 * The part of a transaction both backends share: writes and notifications are buffered here and
 * applied by the backend at commit; a finished transaction refuses further use.
 */
export abstract class BufferedTx {
  readonly writes = new Map<string, Write>();
  readonly notifications: Array<readonly [string, string]> = [];
  finished = false;

  protected checkOpen(method: string): void {
    if (this.finished) throw new TypeError(`tx.${method}() called after the transaction finished`);
  }

  put(key: Buffer, value: Buffer): void {
    this.checkOpen('put');
    checkKey(key);
    checkValue(value);
    const copy = Buffer.from(key);
    const id = keyId(copy);
    this.writes.set(id, { key: copy, value: Buffer.from(value) });
    this.wrote(id);
  }

  del(key: Buffer): void {
    this.checkOpen('del');
    checkKey(key);
    const copy = Buffer.from(key);
    const id = keyId(copy);
    this.writes.set(id, { key: copy, value: undefined });
    this.wrote(id);
  }

  /**
   * Takes a write another transaction already checked and copied (a lane's child transaction
   * merging into its batch): the buffers become this transaction's own, with no second copy.
   */
  adopt(id: string, write: Write): void {
    this.checkOpen('put');
    this.writes.set(id, write);
    this.wrote(id);
  }

  /** Called after every buffered write, with the write's id (a hook for backends; no-op here). */
  protected wrote(_id: string): void {}

  notify(channel: string, payload: string): void {
    this.checkOpen('notify');
    checkChannel(channel);
    checkPayload(payload);
    this.notifications.push([channel, payload]);
  }
}
