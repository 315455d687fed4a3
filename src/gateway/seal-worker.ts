// Worker-thread side of the seal pool: seals a batch of chunks (compress, AES-256-GCM, address).
// The batch arrives as one transferred buffer and leaves as one: structured clone would copy
// each chunk's whole backing buffer (a gRPC message's, often megabytes) once per task.
import { createHash } from 'node:crypto';
import { move } from 'piscina';
import { SEAL_OVERHEAD, sealInto } from './seal.js';

export interface SealTask {
  readonly key: Uint8Array;
  /** The chunks' plain hashes, 32 bytes each, packed. */
  readonly hashes: Uint8Array;
  /** The chunks' lengths, in order. */
  readonly lengths: readonly number[];
  /** The chunks' bytes, packed in order (transferred). */
  readonly data: ArrayBuffer;
  /** Check sha256(chunk) against its hash before sealing anything. */
  readonly verify: boolean;
}

/**
 * The result, one transferred buffer: `[address 32 × n][sealed length u32le × n][sealed bytes…]`
 * (and unused bytes after them),
 * or, when `verify` found a chunk whose bytes do not hash to its name, four bytes holding
 * 0xffffffff followed by that chunk's index (u32le).
 */
export type SealResult = ArrayBuffer;

export const MISMATCH = 0xffffffff;

export default function sealBatch(task: SealTask): unknown {
  const n = task.lengths.length;
  const plain = new Uint8Array(task.data);
  if (task.verify) {
    for (let i = 0, at = 0; i < n; at += task.lengths[i]!, i++) {
      const got = createHash('sha256').update(plain.subarray(at, at + task.lengths[i]!)).digest();
      if (!got.equals(task.hashes.subarray(i * 32, i * 32 + 32))) {
        const out = new ArrayBuffer(8);
        new DataView(out).setUint32(0, MISMATCH, true);
        new DataView(out).setUint32(4, i, true);
        return move(out);
      }
    }
  }
  const head = n * 36;
  // Room for the worst case (nothing compresses); the few spare bytes travel along unread.
  const out = new Uint8Array(head + plain.length + n * SEAL_OVERHEAD);
  const view = new DataView(out.buffer);
  let at = 0;
  let w = head;
  for (let i = 0; i < n; i++) {
    const len = task.lengths[i]!;
    const s = sealInto(task.key, task.hashes.subarray(i * 32, i * 32 + 32), plain.subarray(at, at + len), out, w);
    out.set(s.address, i * 32);
    view.setUint32(n * 32 + i * 4, s.length, true);
    at += len;
    w += s.length;
  }
  return move(out.buffer);
}
