// Runs the metadata model suite on the LevelDB backend.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLevelKv } from '../../src/metadata/kv/index.js';
import type { KvFactory } from './kv-conformance.js';
import { modelSuite } from './model-suite.js';

const level: KvFactory = async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-model-level-'));
  const kv = await openLevelKv({ dir });
  return {
    kv,
    async cleanup() {
      await kv.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
};

modelSuite('level', level);
