// Tenant data keys behind Admin.GetOrCreateTenantKey: one random key per tenant, stored only
// wrapped by the gateways' master key, created in one transaction so every gateway gets the same.
import { validateTenant } from '../common/auth.js';
import { CairnError } from '../common/errors.js';
import type { Kv } from './kv/types.js';

/** [nonce 12][ciphertext 32][GCM tag 16], as gateway/seal.ts wrapKey writes it. */
export const WRAPPED_KEY_BYTES = 60;

/**
 * Key of a tenant's wrapped data key. The tag is a whole word like keys-admin.ts's, so it never
 * shares a prefix with the model's one-letter tags nor with 'tenant' keys ('tenantkey' sorts
 * after every 'tenant\0…' key).
 */
function tenantKeyKey(tenant: string): Buffer {
  return Buffer.concat([Buffer.from('tenantkey', 'utf8'), Buffer.of(0), Buffer.from(tenant, 'utf8')]);
}

export async function getOrCreateTenantKey(kv: Kv, tenant: string, candidate: Uint8Array): Promise<{ wrapped: Buffer; created: boolean }> {
  validateTenant(tenant);
  if (candidate.length !== WRAPPED_KEY_BYTES) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `candidate_wrapped_key must be ${WRAPPED_KEY_BYTES} bytes`, { fieldViolations: [{ field: 'candidate_wrapped_key', description: `must be ${WRAPPED_KEY_BYTES} bytes` }] });
  }
  return kv.transact(async (tx) => {
    const existing = await tx.get(tenantKeyKey(tenant));
    if (existing !== undefined) return { wrapped: Buffer.from(existing), created: false };
    const wrapped = Buffer.from(candidate);
    tx.put(tenantKeyKey(tenant), wrapped);
    return { wrapped, created: true };
  });
}
