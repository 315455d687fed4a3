// Public face of the block node's storage engine: content-addressed blocks in segment files
// indexed by LevelDB. Other components import from here, never from the engine's internals.
export { BlockStore, type BlockStoreStats, type PutBlock, type ScrubOptions } from './store.js';
export type { BlockStoreLogger, BlockStoreOptions } from './options.js';
