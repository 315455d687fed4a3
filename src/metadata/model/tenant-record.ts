// The tenant record (`keys.tenant`): the retention policy (tenants.ts) and the usage counters
// (usage.ts). A commit consults it several times (policy, quota, two counter updates), so inside
// one transaction it is read and parsed once: the first read goes to the KV (and is tracked for
// conflicts there) and later reads see the same object, kept in step with every write made
// through `storeTenantRecord`, the only writer of the key.
import type { KvReader, KvTx } from '../kv/types.js';
import { json, parseJson } from './codec.js';
import { keys } from './keys.js';

export type TenantRecordData = Record<string, unknown>;

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
  const record = freeze(parseJson<TenantRecordData>(raw));
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
  const raw = json(record);
  tx.put(keys.tenant(tenant), raw);
  remember(tenant, Buffer.from(raw), freeze(record));
  let cache = perTx.get(tx);
  if (cache === undefined) {
    cache = new Map();
    perTx.set(tx, cache);
  }
  cache.set(tenant, record);
}
