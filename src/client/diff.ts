// Chunk-list diffs for delta commits: splices that turn the last synced chunk list into the new
// one. Pure; the gateway applies the same splices to the base version's list.

export interface Splice<T> {
  /** Index in the old list. */
  readonly start: number;
  readonly deleteCount: number;
  readonly insert: T[];
}

/**
 * Greedy diff over chunk names: walk the new list, and whenever a name occurs in the old list at
 * or after the current old position, keep it (the old chunks skipped over are deleted). With
 * content-defined chunks, names are nearly unique and edits local, so this finds the few changed
 * runs; any result is correct, a poor match only costs bytes.
 */
export function diffLists<T>(oldList: readonly T[], newList: readonly T[], name: (x: T) => string): Array<Splice<T>> {
  const positions = new Map<string, number[]>();
  oldList.forEach((x, i) => {
    const k = name(x);
    const list = positions.get(k);
    if (list === undefined) positions.set(k, [i]);
    else list.push(i);
  });
  const cursors = new Map<string, number>();
  /** First index ≥ from where `k` occurs in the old list, or -1. */
  const nextAt = (k: string, from: number): number => {
    const list = positions.get(k);
    if (list === undefined) return -1;
    let c = cursors.get(k) ?? 0;
    while (c < list.length && list[c]! < from) c++;
    cursors.set(k, c);
    return c < list.length ? list[c]! : -1;
  };
  const out: Array<Splice<T>> = [];
  let oldPos = 0;
  let pending: T[] = [];
  for (const x of newList) {
    const at = nextAt(name(x), oldPos);
    if (at < 0) {
      pending.push(x);
      continue;
    }
    if (at > oldPos || pending.length > 0) out.push({ start: oldPos, deleteCount: at - oldPos, insert: pending });
    pending = [];
    oldPos = at + 1;
  }
  if (pending.length > 0 || oldPos < oldList.length) out.push({ start: oldPos, deleteCount: oldList.length - oldPos, insert: pending });
  return out;
}

/** Applies splices (in order, non-overlapping) to a list. */
export function applyDiff<T>(oldList: readonly T[], splices: ReadonlyArray<Splice<T>>): T[] {
  const out: T[] = [];
  let next = 0;
  for (const sp of splices) {
    if (sp.start < next || sp.start + sp.deleteCount > oldList.length) throw new RangeError(`splice at ${sp.start} overlaps or runs past the list`);
    for (let j = next; j < sp.start; j++) out.push(oldList[j]!);
    out.push(...sp.insert);
    next = sp.start + sp.deleteCount;
  }
  for (let j = next; j < oldList.length; j++) out.push(oldList[j]!);
  return out;
}
