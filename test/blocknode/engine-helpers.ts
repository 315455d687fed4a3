// Shared set-up for the block store engine tests: random blocks with their addresses, a temp
// dir per test named after it, and stores closed on teardown.
import type { ExecutionContext } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockStore, type BlockStoreOptions } from '../../src/blocknode/engine/index.js';

export function block(size: number): { address: Buffer; data: Buffer } {
  const data = randomBytes(size);
  return { address: createHash('sha256').update(data).digest(), data };
}

export async function tempDir(t: ExecutionContext, prefix = 'cairn-engine'): Promise<string> {
  const slug = t.title.replace(/[^a-z0-9]+/gi, '-').slice(0, 40);
  const dir = await mkdtemp(join(tmpdir(), `${prefix}-${slug}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export async function openStore(t: ExecutionContext, dir: string, options: Partial<BlockStoreOptions> = {}): Promise<BlockStore> {
  const store = await BlockStore.open({ dir, ...options });
  t.teardown(() => store.close());
  return store;
}
