// The tenant record (`keys.tenant`): the retention policy (tenants.ts) and the usage counters
// (usage.ts). A commit consults it several times (policy, quota, two counter updates), so inside
// one transaction it is read and parsed once: the first read goes to the KV (and is tracked for
// conflicts there) and later reads see the same object, kept in step with every write made
// through `storeTenantRecord`, the only writer of the key.
import type { KvReader, KvTx } from '../kv/types.js';
import { json, readJson } from './codec.js';
import { keys } from './keys.js';

export type TenantRecordData = Record<string, unknown>;

const perTx = new WeakMap<object, Map<string, TenantRecordData>>();

/** The tenant record as `tx` sees it ({} when absent); cached for the life of `tx`. */
export async function loadTenantRecord(tx: Pick<KvTx, 'get'>, tenant: string): Promise<TenantRecordData> {
  let cache = perTx.get(tx);
  const hit = cache?.get(tenant);
  if (hit !== undefined) return hit;
  const record = (await readJson<TenantRecordData>(tx, keys.tenant(tenant))) ?? {};
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
  return (await readJson<TenantRecordData>(reader, keys.tenant(tenant))) ?? {};
}

export function storeTenantRecord(tx: KvTx, tenant: string, record: TenantRecordData): void {
  tx.put(keys.tenant(tenant), json(record));
  let cache = perTx.get(tx);
  if (cache === undefined) {
    cache = new Map();
    perTx.set(tx, cache);
  }
  cache.set(tenant, record);
}
