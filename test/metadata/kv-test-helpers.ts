// Helpers shared by the LevelDB KV's cache and sparse-prefix tests: one-write and one-read
// transactions on string keys, and a read-only transaction held open across other commits.
import fc from 'fast-check';
import type { Kv, KvTx } from '../../src/metadata/kv/index.js';

export const b = (s: string): Buffer => Buffer.from(s);

export const put = (kv: Kv, key: string, value: string): Promise<void> =>
  kv.transact(async (tx) => {
    tx.put(b(key), b(value));
  });

export const del = (kv: Kv, key: string): Promise<void> =>
  kv.transact(async (tx) => {
    tx.del(b(key));
  });

export const read = (kv: Kv, key: string): Promise<string | undefined> => kv.transact(async (tx) => (await tx.get(b(key)))?.toString());

/** A transaction held open: `read` runs a read inside it; `end` lets it finish. */
export interface Held {
  read(key: string): Promise<string | undefined>;
  end(): Promise<void>;
}

/** Begins a read-only transaction now (its snapshot is taken at the call) and keeps it open. */
export function hold(kv: Kv): Held {
  const requests: Array<{ key: string; answer: (v: string | undefined) => void } | null> = [];
  let wake: (() => void) | undefined;
  const done = kv.transact(async (tx: KvTx) => {
    for (;;) {
      while (requests.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      const request = requests.shift()!;
      if (request === null) return;
      request.answer((await tx.get(b(request.key)))?.toString());
    }
  });
  const send = (request: (typeof requests)[number]): void => {
    requests.push(request);
    const w = wake;
    wake = undefined;
    w?.();
  };
  return {
    read: (key) => new Promise((answer) => send({ key, answer })),
    end: async () => {
      send(null);
      await done;
    },
  };
}

/** One step of a random interleaving: `slot`s are read-only transactions held open across steps. */
export type Step =
  | { readonly op: 'put'; readonly key: number; readonly size: number }
  | { readonly op: 'del'; readonly key: number }
  | { readonly op: 'read'; readonly key: number }
  | { readonly op: 'open'; readonly slot: number }
  | { readonly op: 'slotRead'; readonly slot: number; readonly key: number }
  | { readonly op: 'close'; readonly slot: number };

/**
 * Runs `steps` against `kv` and a model of it: whether every read, inside a held transaction or
 * not, returned what the store held when its transaction began, and the store ends as the model.
 * `key` names key number k; `before(i)` runs before step i.
 */
export async function interleave(kv: Kv, steps: readonly Step[], keys: number, key: (k: number) => string, before?: (i: number) => void): Promise<boolean> {
  const current = new Map<number, string>();
  const slots = new Map<number, { held: Held; snapshot: Map<number, string> }>();
  let serial = 0;
  try {
    for (const [i, s] of steps.entries()) {
      before?.(i);
      switch (s.op) {
        case 'put': {
          const value = `${serial++}:`.padEnd(s.size, 'x');
          await put(kv, key(s.key), value);
          current.set(s.key, value);
          break;
        }
        case 'del':
          await del(kv, key(s.key));
          current.delete(s.key);
          break;
        case 'read':
          if ((await read(kv, key(s.key))) !== current.get(s.key)) return false;
          break;
        case 'open':
          if (!slots.has(s.slot)) slots.set(s.slot, { held: hold(kv), snapshot: new Map(current) });
          break;
        case 'slotRead': {
          const slot = slots.get(s.slot);
          if (slot !== undefined && (await slot.held.read(key(s.key))) !== slot.snapshot.get(s.key)) return false;
          break;
        }
        case 'close':
          await slots.get(s.slot)?.held.end();
          slots.delete(s.slot);
          break;
      }
    }
    for (let k = 0; k < keys; k++) if ((await read(kv, key(k))) !== current.get(k)) return false;
    return true;
  } finally {
    // Held transactions only read: they commit without validation.
    for (const slot of slots.values()) await slot.held.end();
  }
}

/** Steps over key numbers 0..keys-1 and two slots; put values are `maxSize` bytes at most. */
export function steps(keys: number, maxSize: number): fc.Arbitrary<Step> {
  const SLOTS = 2;
  return fc.oneof(
    fc.record({ op: fc.constant('put' as const), key: fc.nat(keys - 1), size: fc.integer({ min: 1, max: maxSize }) }),
    fc.record({ op: fc.constant('del' as const), key: fc.nat(keys - 1) }),
    fc.record({ op: fc.constant('read' as const), key: fc.nat(keys - 1) }),
    fc.record({ op: fc.constant('open' as const), slot: fc.nat(SLOTS - 1) }),
    fc.record({ op: fc.constant('slotRead' as const), slot: fc.nat(SLOTS - 1), key: fc.nat(keys - 1) }),
    fc.record({ op: fc.constant('close' as const), slot: fc.nat(SLOTS - 1) }),
  );
}
