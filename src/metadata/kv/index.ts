// Entry point of the metadata KV: the contract, both backends, and `openKv` choosing one from
// configuration. Model code depends on this file only, never on a backend module directly.
import { openLevelKv } from './level.js';
import { openPostgresKv } from './postgres.js';
import type { Kv } from './types.js';

export type { ConflictGranularity, Kv, KvEntry, KvListener, KvRange, KvReader, KvTx, TransactOptions } from './types.js';
export { openLevelKv, type LevelKvOptions } from './level.js';
export { openPostgresKv, type PostgresKvOptions } from './postgres.js';
/** Limits every backend enforces: key length, and NOTIFY payload size (PostgreSQL's). */
export { MAX_KEY_BYTES, MAX_PAYLOAD_BYTES } from './internal.js';

export type KvConfig =
  | { readonly backend: 'level'; readonly dir: string }
  | { readonly backend: 'postgres'; readonly url: string };

export async function openKv(config: KvConfig): Promise<Kv> {
  if (typeof config !== 'object' || config === null) throw new TypeError('config must be an object');
  switch (config.backend) {
    case 'level':
      return openLevelKv({ dir: config.dir });
    case 'postgres':
      if (typeof config.url !== 'string' || config.url.length === 0) {
        throw new TypeError('config.url must be a non-empty string');
      }
      return openPostgresKv({ connectionString: config.url });
    default:
      throw new TypeError(`config.backend must be 'level' or 'postgres', got ${String((config as { backend: unknown }).backend)}`);
  }
}
