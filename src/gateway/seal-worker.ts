// Worker-thread side of the seal pool: seals a batch of chunks (compress, AES-256-GCM, address).
import { seal } from './seal.js';

export interface SealTask {
  readonly key: Uint8Array;
  readonly hashes: readonly Uint8Array[];
  readonly data: readonly Uint8Array[];
}

export interface SealResult {
  readonly addresses: Uint8Array[];
  readonly sealed: Uint8Array[];
}

export default function sealBatch(task: SealTask): SealResult {
  const addresses: Uint8Array[] = [];
  const sealed: Uint8Array[] = [];
  for (let i = 0; i < task.data.length; i++) {
    const s = seal(task.key, task.hashes[i]!, task.data[i]!);
    addresses.push(s.address);
    sealed.push(s.sealed);
  }
  return { addresses, sealed };
}
