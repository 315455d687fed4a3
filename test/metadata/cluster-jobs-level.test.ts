// Runs the job-queue and cluster-map suites on the LevelDB backend.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLevelKv } from '../../src/metadata/kv/index.js';
import { clusterSuite } from './cluster-suite.js';
import { jobsSuite } from './jobs-suite.js';
import type { KvFactory } from './kv-conformance.js';

const level: KvFactory = async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-admin-level-'));
  const kv = await openLevelKv({ dir });
  return {
    kv,
    async cleanup() {
      await kv.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
};

jobsSuite('level', level);
clusterSuite('level', level);
