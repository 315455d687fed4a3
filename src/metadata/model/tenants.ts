// Tenants and their users. A tenant exists implicitly from its first write; its record only holds
// settings (the retention policy). Users are the grantees of shares, named by token subjects.
import { validateTenant } from '../../common/auth.js';
import { CairnError } from '../../common/errors.js';
import type { KvTx } from '../kv/types.js';
import { json, parseJson, readJson } from './codec.js';
import { invalid, retentionPolicySchema, validateUser, type ModelContext, type RetentionPolicy } from './context.js';
import { keys, under } from './keys.js';
import { cachedTenantRecord, loadTenantRecord, readTenantRecord, storeTenantRecord } from './tenant-record.js';

interface TenantRecord {
  policy?: RetentionPolicy;
  /** Usage counters and quota, owned by usage.ts (kept here: every commit reads this record). */
  u?: unknown;
}

export interface UserRecord {
  readonly tenant: string;
  readonly user: string;
  readonly displayName: string;
  readonly createdMs: number;
}

/**
 * The tenant's keep-last count in force (undefined: none), without copying the policy: a commit
 * asks for it every time, and almost always there is none or its file has fewer versions.
 */
export async function keepLastOf(tx: Pick<KvTx, 'get'>, ctx: ModelContext, tenant: string): Promise<number | undefined> {
  const record = (cachedTenantRecord(tx, tenant) ?? (await loadTenantRecord(tx, tenant))) as TenantRecord;
  return (record.policy ?? ctx.defaultPolicy).keepLast;
}

/** The policy in force for a tenant: its own, or the service default. */
export async function policyOf(tx: Pick<KvTx, 'get'>, ctx: ModelContext, tenant: string): Promise<RetentionPolicy & { trashDays: number }> {
  const record = (cachedTenantRecord(tx, tenant) ?? (await loadTenantRecord(tx, tenant))) as TenantRecord;
  const policy = record.policy ?? ctx.defaultPolicy;
  return { ...policy, trashDays: policy.trashDays ?? ctx.defaultPolicy.trashDays };
}

export async function getPolicy(ctx: ModelContext, tenant: string): Promise<RetentionPolicy & { trashDays: number }> {
  validateTenant(tenant);
  const record = await readTenantRecord(ctx.kv, tenant) as TenantRecord;
  const policy = record.policy ?? ctx.defaultPolicy;
  return { ...policy, trashDays: policy.trashDays ?? ctx.defaultPolicy.trashDays };
}

/** Replaces a tenant's retention policy (takes effect at the next commit and sweep). */
export async function setPolicy(ctx: ModelContext, tenant: string, policy: RetentionPolicy): Promise<RetentionPolicy & { trashDays: number }> {
  validateTenant(tenant);
  const parsed = retentionPolicySchema.safeParse(policy);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw invalid(`policy.${issue?.path.join('.') ?? ''}`, `policy.${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  const clean: RetentionPolicy = Object.fromEntries(Object.entries(parsed.data).filter(([, v]) => v !== undefined));
  await ctx.write(tenant, async (tx) => {
    const record = await loadTenantRecord(tx, tenant);
    storeTenantRecord(tx, tenant, { ...record, policy: clean });
  });
  return { ...clean, trashDays: clean.trashDays ?? ctx.defaultPolicy.trashDays };
}

/** Every tenant that has ever written (has a revision counter), in name order. */
export async function listTenantIds(ctx: ModelContext, after = '', limit = 1000): Promise<string[]> {
  const range = under('r');
  const rows = await ctx.kv.scan({ gt: after === '' ? range.gt : keys.revision(after), lt: range.lt, limit });
  return rows.map(([k]) => k.subarray(2).toString('utf8'));
}

export async function putUser(ctx: ModelContext, tenant: string, user: string, displayName = ''): Promise<UserRecord> {
  validateTenant(tenant);
  validateUser(user);
  if (typeof displayName !== 'string' || displayName.length > 256) throw invalid('display_name', 'display_name must be at most 256 characters');
  return ctx.write(tenant, async (tx) => {
    const existing = await readJson<{ name: string; created: number }>(tx, keys.user(tenant, user));
    const record = { name: displayName, created: existing?.created ?? ctx.now() };
    tx.put(keys.user(tenant, user), json(record));
    return { tenant, user, displayName, createdMs: record.created };
  });
}

export async function getUser(tx: Pick<KvTx, 'get'>, tenant: string, user: string): Promise<UserRecord | undefined> {
  const r = await readJson<{ name: string; created: number }>(tx, keys.user(tenant, user));
  return r === undefined ? undefined : { tenant, user, displayName: r.name, createdMs: r.created };
}

export async function mustGetUser(tx: Pick<KvTx, 'get'>, tenant: string, user: string): Promise<UserRecord> {
  const found = await getUser(tx, tenant, validateUser(user));
  if (found === undefined) throw new CairnError('CAIRN_NOT_FOUND', `tenant ${tenant} has no user ${user}`);
  return found;
}

export async function listUsers(ctx: ModelContext, tenant: string, after = '', limit = 1000): Promise<UserRecord[]> {
  validateTenant(tenant);
  const range = under('u', tenant);
  const rows = await ctx.kv.scan({ gt: after === '' ? range.gt : keys.user(tenant, after), lt: range.lt, limit });
  const prefix = range.gt.length;
  return rows.map(([k, v]) => {
    const r = parseJson<{ name: string; created: number }>(v);
    return { tenant, user: k.subarray(prefix).toString('utf8'), displayName: r.name, createdMs: r.created };
  });
}

/** Removes a user and every grant made to them. */
export async function deleteUser(ctx: ModelContext, tenant: string, user: string): Promise<void> {
  validateTenant(tenant);
  await ctx.write(tenant, async (tx) => {
    await mustGetUser(tx, tenant, user);
    const range = under('G', tenant, user);
    const prefix = range.gt.length;
    for (const [k] of await tx.scan(range)) {
      const id = k.subarray(prefix).toString('utf8');
      tx.del(k);
      tx.del(keys.grant(tenant, id, user));
    }
    tx.del(keys.user(tenant, user));
  });
}
