// The tenant record (`keys.tenant`): the retention policy (tenants.ts) and the usage counters
// (usage.ts). A commit consults it several times (policy, quota, two counter updates), so inside
// one transaction it is read and parsed once: the first read goes to the KV (and is tracked for
// conflicts there) and later reads see the same object, kept in step with every write made
// through `storeTenantRecord`, the only writer of the key.
import { CairnError } from '../../common/errors.js';
import type { KvReader, KvTx } from '../kv/types.js';
import { json, parseJson } from './codec.js';
import { keys } from './keys.js';

export type TenantRecordData = Record<string, unknown>;

// Every commit writes this record (its usage counters), and JSON.stringify of the counters was
// most of that write. Binary: a tag byte (0x05; JSON begins with "{", and both are read), flags
// (1: counters, 2: quota), the counters b, v, s, c (and q) as float64, then every other field
// (the retention policy) as JSON, or nothing when there is none. A record whose counters are not
// exactly these numbers is written as JSON.
const TENANT_TAG = 0x05;
const JSON_START = 0x7b;
const USAGE = 1;
const QUOTA = 2;
const COUNTER_KEYS = new Set(['b', 'v', 's', 'c', 'q']);

function damaged(): CairnError {
  return new CairnError('CAIRN_DATA_LOSS', 'a stored tenant record is damaged');
}

interface Counters {
  b: number;
  v: number;
  s: number;
  c: number;
  q?: number;
}

function countersOf(u: unknown): Counters | undefined {
  if (typeof u !== 'object' || u === null) return undefined;
  for (const k in u) if (!COUNTER_KEYS.has(k)) return undefined;
  const c = u as Partial<Counters>;
  if (typeof c.b !== 'number' || typeof c.v !== 'number' || typeof c.s !== 'number' || typeof c.c !== 'number' || (c.q !== undefined && typeof c.q !== 'number')) return undefined;
  return c as Counters;
}

/** The record's bytes (see TENANT_TAG). */
export function encodeTenantRecord(record: TenantRecordData): Buffer {
  const u = record.u === undefined ? undefined : countersOf(record.u);
  if (record.u !== undefined && u === undefined) return json(record);
  let others: TenantRecordData | undefined;
  for (const k in record) {
    if (k === 'u') continue;
    others ??= {};
    others[k] = record[k];
  }
  const rest = others === undefined ? undefined : JSON.stringify(others);
  const restBytes = rest === undefined ? 0 : Buffer.byteLength(rest, 'utf8');
  const quota = u?.q !== undefined;
  const out = Buffer.allocUnsafe(2 + (u === undefined ? 0 : 32 + (quota ? 8 : 0)) + restBytes);
  out[0] = TENANT_TAG;
  out[1] = (u === undefined ? 0 : USAGE) | (quota ? QUOTA : 0);
  let at = 2;
  if (u !== undefined) {
    at = out.writeDoubleLE(u.b, at);
    at = out.writeDoubleLE(u.v, at);
    at = out.writeDoubleLE(u.s, at);
    at = out.writeDoubleLE(u.c, at);
    if (quota) at = out.writeDoubleLE(u.q!, at);
  }
  if (rest !== undefined) out.write(rest, at, restBytes, 'utf8');
  return out;
}

/** A record from its bytes, binary or JSON (stores written before); anything else is damage. */
export function decodeTenantRecord(raw: Buffer): TenantRecordData {
  if (raw[0] === JSON_START) return parseJson<TenantRecordData>(raw);
  const flags = raw[1];
  if (raw[0] !== TENANT_TAG || flags === undefined || flags > 3 || flags === QUOTA) throw damaged();
  const fixed = 2 + ((flags & USAGE) === 0 ? 0 : 32 + ((flags & QUOTA) === 0 ? 0 : 8));
  if (raw.length < fixed) throw damaged();
  let record: TenantRecordData = {};
  if (raw.length > fixed) {
    try {
      record = parseJson<TenantRecordData>(raw.subarray(fixed));
    } catch {
      throw damaged();
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record) || 'u' in record) throw damaged();
  }
  if ((flags & USAGE) !== 0) {
    const u: Counters = { b: raw.readDoubleLE(2), v: raw.readDoubleLE(10), s: raw.readDoubleLE(18), c: raw.readDoubleLE(26) };
    if ((flags & QUOTA) !== 0) u.q = raw.readDoubleLE(34);
    record.u = u;
  }
  return record;
}

const perTx = new WeakMap<object, Map<string, TenantRecordData>>();

/**
 * The last record parsed or written per tenant, with its bytes: each commit reads the bytes the
 * commit before it wrote, and parsing them again was a few percent of a commit. A pure function
 * of the bytes, so it is right for any store and any transaction; records handed out are frozen
 * (every caller copies before changing one).
 */
const parsed = new Map<string, { raw: Buffer; record: TenantRecordData }>();
const PARSED_MAX = 4096;

function freeze(record: TenantRecordData): TenantRecordData {
  for (const v of Object.values(record)) if (typeof v === 'object' && v !== null) Object.freeze(v);
  return Object.freeze(record);
}

function remember(tenant: string, raw: Buffer, record: TenantRecordData): void {
  if (!parsed.has(tenant) && parsed.size >= PARSED_MAX) parsed.delete(parsed.keys().next().value as string);
  parsed.set(tenant, { raw, record });
}

function decode(tenant: string, raw: Buffer | undefined): TenantRecordData {
  if (raw === undefined) return {};
  const hit = parsed.get(tenant);
  if (hit !== undefined && hit.raw.equals(raw)) return hit.record;
  const record = freeze(decodeTenantRecord(raw));
  remember(tenant, Buffer.from(raw), record);
  return record;
}

/** The tenant record as `tx` sees it ({} when absent, frozen); cached for the life of `tx`. */
export async function loadTenantRecord(tx: Pick<KvTx, 'get'>, tenant: string): Promise<TenantRecordData> {
  let cache = perTx.get(tx);
  const hit = cache?.get(tenant);
  if (hit !== undefined) return hit;
  const record = decode(tenant, await tx.get(keys.tenant(tenant)));
  if (cache === undefined) {
    cache = new Map();
    perTx.set(tx, cache);
  }
  cache.set(tenant, record);
  return record;
}

/**
 * The record as `tx` last read or wrote it, with no read: undefined until `tx` has one. A commit
 * consults the record five or six times, and an async step each time was measurable; callers
 * write `cachedTenantRecord(tx, t) ?? (await loadTenantRecord(tx, t))`.
 */
export function cachedTenantRecord(tx: object, tenant: string): TenantRecordData | undefined {
  return perTx.get(tx)?.get(tenant);
}

/** Reads the record outside a transaction (never cached: the store moves on). */
export async function readTenantRecord(reader: Pick<KvReader, 'get'>, tenant: string): Promise<TenantRecordData> {
  return decode(tenant, await reader.get(keys.tenant(tenant)));
}

/** Writes the record; it is frozen from then on (callers build a new one for each change). */
export function storeTenantRecord(tx: KvTx, tenant: string, record: TenantRecordData): void {
  const raw = encodeTenantRecord(record);
  tx.put(keys.tenant(tenant), raw);
  // `raw` stays this module's: the transaction copies what it is given.
  remember(tenant, raw, freeze(record));
  let cache = perTx.get(tx);
  if (cache === undefined) {
    cache = new Map();
    perTx.set(tx, cache);
  }
  cache.set(tenant, record);
}
