// The tenant registry behind Admin.CreateTenant/ListTenants: which tenants a cluster administrator
// has created. Tokens name their tenant; this is where a cluster keeps the list of them.
import { validateTenant } from '../common/auth.js';
import { CairnError } from '../common/errors.js';
import type { Kv, KvReader } from './kv/types.js';
import { adminKeys } from './model/keys-admin.js';

export interface TenantRecord {
  readonly name: string;
  readonly displayName: string;
  readonly createdMs: number;
}

interface StoredTenant {
  name: string;
  display: string;
  created: number;
}

const toRecord = (s: StoredTenant): TenantRecord => ({ name: s.name, displayName: s.display, createdMs: s.created });

export async function createTenant(kv: Kv, name: string, displayName = '', nowMs = Date.now()): Promise<TenantRecord> {
  validateTenant(name);
  if (typeof displayName !== 'string' || displayName.length > 200 || [...displayName].some((c) => c.charCodeAt(0) < 0x20)) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', 'display_name must be at most 200 characters without control characters', { fieldViolations: [{ field: 'display_name', description: 'too long or has control characters' }] });
  }
  return kv.transact(async (tx) => {
    if ((await tx.get(adminKeys.tenant(name))) !== undefined) throw new CairnError('CAIRN_ALREADY_EXISTS', `tenant ${name} already exists`);
    const stored: StoredTenant = { name, display: displayName, created: nowMs };
    tx.put(adminKeys.tenant(name), Buffer.from(JSON.stringify(stored), 'utf8'));
    return toRecord(stored);
  });
}

export async function getTenant(kv: KvReader, name: string): Promise<TenantRecord | undefined> {
  validateTenant(name);
  const raw = await kv.get(adminKeys.tenant(name));
  return raw === undefined ? undefined : toRecord(JSON.parse(raw.toString('utf8')) as StoredTenant);
}

/** Tenants by name after `after` (exclusive), at most `limit`. */
export async function listTenants(kv: KvReader, limit: number, after?: string): Promise<TenantRecord[]> {
  if (after !== undefined) validateTenant(after);
  const range = after === undefined ? adminKeys.tenants() : adminKeys.tenantsAfter(after);
  return (await kv.scan({ ...range, limit })).map(([, v]) => toRecord(JSON.parse(v.toString('utf8')) as StoredTenant));
}
