// Keys of encryption at rest: the cluster's master key (a file or CAIRN_MASTER_KEY) and the
// per-tenant data keys it wraps, fetched from (or created in) metadata and cached unwrapped.
import { readFileSync } from 'node:fs';
import { createFileExclusive } from '../common/auth.js';
import { CairnError } from '../common/errors.js';
import { newTenantKey, unwrapKey, wrapKey } from './seal.js';

export const MASTER_KEY_BYTES = 32;
export const MASTER_KEY_ENV = 'CAIRN_MASTER_KEY';

function decodeKey(text: string, where: string): Buffer {
  const trimmed = text.trim();
  // Both base64 alphabets are accepted; anything else would decode silently to garbage.
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed)) throw new CairnError('CAIRN_FAILED_PRECONDITION', `master key in ${where} is not base64`);
  const key = Buffer.from(trimmed, 'base64');
  if (key.length !== MASTER_KEY_BYTES) throw new CairnError('CAIRN_FAILED_PRECONDITION', `master key in ${where} is ${key.length} bytes, not ${MASTER_KEY_BYTES}`);
  return key;
}

/**
 * The master key: CAIRN_MASTER_KEY (base64) when set, else the key file, created (0600) with a
 * random key on first start. Every gateway of a cluster must use the same key.
 */
export function loadMasterKey(path: string, env: Readonly<Record<string, string | undefined>> = process.env): Buffer {
  const fromEnv = env[MASTER_KEY_ENV];
  if (fromEnv !== undefined && fromEnv !== '') return decodeKey(fromEnv, MASTER_KEY_ENV);
  try {
    return decodeKey(readFileSync(path, 'utf8'), path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const key = newTenantKey();
  // Created exclusively: gateways starting together on one fresh key file all use the first
  // one's key (with a rename each would keep its own and wrap keys the others cannot unwrap).
  if (createFileExclusive(path, key.toString('base64') + '\n', 0o600)) return key;
  return decodeKey(readFileSync(path, 'utf8'), path);
}

/** Where tenant keys live: Admin.GetOrCreateTenantKey (AdminClient implements it). */
export interface TenantKeyStore {
  getOrCreateTenantKey(tenant: string, candidate: Uint8Array): Promise<{ wrapped: Buffer; created: boolean }>;
}

/** Unwrapped tenant keys, fetched once per tenant and process (concurrent first uses share one call). */
export class TenantKeys {
  readonly #master: Buffer;
  readonly #store: TenantKeyStore;
  readonly #cache = new Map<string, Promise<Buffer>>();

  constructor(masterKey: Uint8Array, store: TenantKeyStore) {
    if (masterKey.length !== MASTER_KEY_BYTES) throw new RangeError(`masterKey must be ${MASTER_KEY_BYTES} bytes`);
    this.#master = Buffer.from(masterKey);
    this.#store = store;
  }

  get(tenant: string): Promise<Buffer> {
    let key = this.#cache.get(tenant);
    if (key === undefined) {
      key = this.#fetch(tenant);
      this.#cache.set(tenant, key);
      // A failure (metadata down, wrong master key) is not cached: the next call asks again.
      key.catch(() => this.#cache.delete(tenant));
    }
    return key;
  }

  async #fetch(tenant: string): Promise<Buffer> {
    const { wrapped } = await this.#store.getOrCreateTenantKey(tenant, wrapKey(this.#master, newTenantKey(), tenant));
    return unwrapKey(this.#master, wrapped, tenant);
  }
}
