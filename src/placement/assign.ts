// Deterministic, minimal-movement assignment of partitions to nodes (Garage-style):
// keep what may stay, fill holes, shed only what exceeds a node's weighted target.

import { createHash } from 'node:crypto';
import { NODE_STATES, PARTITION_COUNT, type ClusterMap, type MapNode } from './map.js';
import { apportion } from './targets.js';

const P = PARTITION_COUNT;

/**
 * Nodes that may hold replicas in the new map. 'draining' nodes hand their
 * replicas over; so do 'down' nodes: a node that is down long enough for an
 * operator to mark it must not keep a third of some partitions under-replicated
 * while it is away. Callers keep the previous map to find data during the move.
 */
function isEligible(node: MapNode): boolean {
  return node.state === 'up' || node.state === 'joining';
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Stable pseudo-random rank of (slot, node): spreads placement instead of making runs. */
function rank(slot: number, seed: number): number {
  return fmix32(seed ^ Math.imul(slot + 1, 0x9e3779b1));
}

/**
 * Exponential race: the smallest key wins with probability proportional to
 * `amount`. Picking by a plain "hungriest first" rule instead pairs the nodes
 * that rounding favours in almost every partition; the race keeps replica sets
 * pseudo-random while still steering towards the targets.
 */
function raceKey(slot: number, seed: number, amount: number): number {
  return -Math.log((rank(slot, seed) + 0.5) / 4294967296) / amount;
}

/** The k-th partition of a node-specific pseudo-random permutation of 0..P-1 (bijective 12-bit mixing). */
function permuted(k: number, seed: number): number {
  const mask = P - 1;
  let x = (k + seed) & mask;
  x = Math.imul(x, (seed >>> 12) | 1) & mask;
  x ^= x >>> 6;
  x = Math.imul(x, 0x5bd) & mask;
  return x ^ (x >>> 5);
}

function nodeSeed(id: string): number {
  return createHash('sha256').update(id).digest().readUInt32BE(0);
}

function validate(nodes: readonly MapNode[], replicationFactor: number): void {
  if (!Number.isInteger(replicationFactor) || replicationFactor < 1) {
    throw new RangeError(`replicationFactor must be an integer ≥ 1, got ${String(replicationFactor)}`);
  }
  const list: unknown = nodes;
  if (!Array.isArray(list)) throw new TypeError('nodes must be an array');
  const seen = new Set<string>();
  nodes.forEach((node, i) => {
    if (typeof node.id !== 'string' || node.id === '') throw new TypeError(`nodes[${i}].id must be a non-empty string`);
    if (seen.has(node.id)) throw new TypeError(`nodes[${i}].id "${node.id}" is a duplicate node id`);
    seen.add(node.id);
    if (typeof node.zone !== 'string') throw new TypeError(`nodes[${i}].zone must be a string`);
    if (typeof node.addr !== 'string') throw new TypeError(`nodes[${i}].addr must be a string`);
    if (typeof node.weight !== 'number' || !Number.isFinite(node.weight) || node.weight <= 0) {
      throw new RangeError(`nodes[${i}].weight must be a finite number > 0, got ${String(node.weight)}`);
    }
    if (!NODE_STATES.includes(node.state)) throw new TypeError(`nodes[${i}].state must be one of ${NODE_STATES.join(', ')}`);
  });
}

function sameNodes(a: readonly MapNode[], b: readonly MapNode[]): boolean {
  return (
    a.length === b.length &&
    a.every((x, i) => {
      const y = b[i]!;
      return x.id === y.id && x.addr === y.addr && x.zone === y.zone && x.weight === y.weight && x.state === y.state;
    })
  );
}

/**
 * Computes the next cluster map. Same inputs give the same map whatever the
 * order of `nodes`. Steps:
 * 1. targets: P × RF slots split by weight (zones first when zones ≥ RF, each
 *    zone and node capped at P since it can hold one replica per partition);
 * 2. keep every previous replica on an eligible node, not duplicated and (when
 *    zones ≥ RF) not sharing a zone with an earlier replica of its partition;
 * 3. fill holes with nodes under target, then re-route replicas placed in this
 *    run when a hole can only be filled that way (never moving a kept one);
 * 4. move replicas from nodes above target to nodes below it.
 * Kept replicas stay in their slot, so a partition's preference order only
 * changes where data actually moves. Step 4 also runs when step 3 had to
 * overshoot (weights or zones can leave the nodes that must grow no room among
 * a drained node's partitions): balance is restored in the same epoch, which
 * keeps assign idempotent, at the cost of a few moves beyond the drained node's.
 */
export function assign(previous: ClusterMap | null, nodes: MapNode[], replicationFactor: number): ClusterMap {
  validate(nodes, replicationFactor);
  const rf = replicationFactor;
  const sorted = [...nodes].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((n) => ({ ...n }));
  const eligible = sorted.filter(isEligible);
  const N = eligible.length;
  if (N < rf) {
    throw new RangeError(`replicationFactor ${rf} exceeds the ${N} eligible (up or joining) nodes`);
  }
  if (previous !== null && (!Array.isArray(previous.partitions) || previous.partitions.length !== P)) {
    throw new TypeError(`previous.partitions must have ${P} entries`);
  }

  const zoneNames = [...new Set(eligible.map((n) => n.zone))].sort();
  const zoneOf = Int32Array.from(eligible, (n) => zoneNames.indexOf(n.zone));
  const strict = zoneNames.length >= rf;
  const seed = Uint32Array.from(eligible, (n) => nodeSeed(n.id));
  const target = new Int32Array(N);
  if (strict) {
    const zoneWeight = zoneNames.map((z) => eligible.reduce((s, n) => (n.zone === z ? s + n.weight : s), 0));
    const zoneTarget = apportion(P * rf, zoneWeight, P);
    zoneNames.forEach((z, zi) => {
      const members = eligible.flatMap((n, i) => (n.zone === z ? [i] : []));
      const t = apportion(zoneTarget[zi]!, members.map((i) => eligible[i]!.weight), P);
      members.forEach((i, k) => (target[i] = t[k]!));
    });
  } else {
    apportion(P * rf, eligible.map((n) => n.weight), P).forEach((t, i) => (target[i] = t));
  }

  // slots[p * rf + s] = eligible index or -1; fresh marks slots placed in this run.
  const slots = new Int32Array(P * rf).fill(-1);
  const fresh = new Uint8Array(P * rf);
  const count = new Int32Array(N);
  const freshOf: number[][] = Array.from({ length: N }, () => []);

  if (previous !== null) {
    const index = new Map(eligible.map((n, i) => [n.id, i]));
    for (let p = 0; p < P; p++) {
      const row = previous.partitions[p] ?? [];
      const base = p * rf;
      for (let s = 0; s < Math.min(rf, row.length); s++) {
        const n = index.get(row[s]!);
        if (n === undefined || inRow(base, n) || (strict && zoneInRow(base, zoneOf[n]!, -1))) continue;
        slots[base + s] = n;
        count[n]!++;
      }
    }
  }

  function inRow(base: number, n: number): boolean {
    for (let s = 0; s < rf; s++) if (slots[base + s] === n) return true;
    return false;
  }

  function zoneInRow(base: number, zone: number, skip: number): boolean {
    for (let s = 0; s < rf; s++) {
      const m = slots[base + s]!;
      if (m >= 0 && s !== skip && zoneOf[m] === zone) return true;
    }
    return false;
  }

  /** Whether `n` may take slot `skip` of the row at `base` (zones soft when zones < RF). */
  function allowed(base: number, n: number, skip: number): boolean {
    for (let s = 0; s < rf; s++) if (s !== skip && slots[base + s] === n) return false;
    return !strict || !zoneInRow(base, zoneOf[n]!, skip);
  }

  /** a is further below its target than b, relative to target (exact integer comparison). */
  function hungrier(a: number, b: number): number {
    return (target[a]! - count[a]!) * target[b]! - (target[b]! - count[b]!) * target[a]!;
  }

  function place(slot: number, n: number): void {
    slots[slot] = n;
    fresh[slot] = 1;
    freshOf[n]!.push(slot);
  }

  /**
   * Fills a hole that no node under target can take, by re-routing replicas
   * placed earlier in this run: hole ← V, V's fresh slot ← W, …, until a node
   * under target takes the last one. Breadth-first over nodes; partitions on a
   * path are distinct so each step's validity is independent of the others.
   */
  function augment(hole: number): boolean {
    const seenNode = new Uint8Array(N);
    const seenPart = new Uint8Array(P);
    seenPart[(hole / rf) | 0] = 1;
    const nodeOfEntry: number[] = [];
    const placeOfEntry: number[] = [];
    const parentOfEntry: number[] = [];
    const hb = hole - (hole % rf);
    for (let v = 0; v < N; v++) {
      if (allowed(hb, v, hole - hb)) {
        seenNode[v] = 1;
        nodeOfEntry.push(v);
        placeOfEntry.push(hole);
        parentOfEntry.push(-1);
      }
    }
    for (let e = 0; e < nodeOfEntry.length; e++) {
      const v = nodeOfEntry[e]!;
      for (const t of freshOf[v]!) {
        if (slots[t] !== v || !fresh[t]) continue;
        const q = (t / rf) | 0;
        if (seenPart[q]) continue;
        seenPart[q] = 1;
        const qb = q * rf;
        for (let w = 0; w < N; w++) {
          if (seenNode[w] || !allowed(qb, w, t - qb)) continue;
          if (count[w]! < target[w]!) {
            place(t, w);
            count[w]!++;
            for (let x = e; x >= 0; x = parentOfEntry[x]!) place(placeOfEntry[x]!, nodeOfEntry[x]!);
            return true;
          }
          seenNode[w] = 1;
          nodeOfEntry.push(w);
          placeOfEntry.push(t);
          parentOfEntry.push(e);
        }
      }
    }
    return false;
  }

  // Fill holes. Stamps mark the row's nodes and zones so each candidate costs O(1).
  const nodeStamp = new Int32Array(N).fill(-1);
  const zoneStamp = new Int32Array(zoneNames.length).fill(-1);
  for (let p = 0; p < P; p++) {
    const base = p * rf;
    for (let s = 0; s < rf; s++) {
      if (slots[base + s]! >= 0) continue;
      const stamp = base + s;
      for (let k = 0; k < rf; k++) {
        const m = slots[base + k]!;
        if (m < 0) continue;
        nodeStamp[m] = stamp;
        zoneStamp[zoneOf[m]!] = stamp;
      }
      let best = -1;
      let bestSpread = false;
      let bestKey = Infinity;
      for (let n = 0; n < N; n++) {
        if (count[n]! >= target[n]! || nodeStamp[n] === stamp) continue;
        const spread = zoneStamp[zoneOf[n]!] !== stamp;
        if (strict && !spread) continue;
        if (bestSpread && !spread) continue;
        const key = raceKey(stamp, seed[n]!, target[n]! - count[n]!);
        if (spread !== bestSpread || key < bestKey) {
          best = n;
          bestSpread = spread;
          bestKey = key;
        }
      }
      if (best >= 0) {
        place(base + s, best);
        count[best]!++;
        continue;
      }
      if (augment(base + s)) continue;
      // Unreachable in practice; stay valid at the cost of balance.
      for (let n = 0; n < N; n++) {
        if (!allowed(base, n, s)) continue;
        if (best < 0 || hungrier(n, best) > 0 || (hungrier(n, best) === 0 && rank(base + s, seed[n]!) > rank(base + s, seed[best]!))) best = n;
      }
      place(base + s, best);
      count[best]!++;
    }
  }

  // Shed: receivers take turns, each walking its own pseudo-random partition
  // order, so donors give up replicas spread over the ring rather than in runs.
  // With zones < RF a move keeps the zones its partition spans; when that leaves a
  // node over target (a zone down to one node, whose replicas alone span their zone,
  // after the fill had to overshoot it), a second pass gives balance precedence:
  // spread is best effort there, and an over-full node runs out of disk.
  shed(false);
  if (!strict && count.some((c, n) => c > target[n]!)) shed(true);

  function shed(dropSpread: boolean): void {
    const receivers: number[] = [];
    let donors = 0;
    for (let n = 0; n < N; n++) {
      if (count[n]! < target[n]!) receivers.push(n);
      else if (count[n]! > target[n]!) donors++;
    }
    if (donors === 0 || receivers.length === 0) return;
    const cursor = new Int32Array(N);
    for (let progress = true; progress; ) {
      progress = false;
      for (const r of receivers) {
        if (count[r]! >= target[r]!) continue;
        while (cursor[r]! < P) {
          const p = permuted(cursor[r]!++, seed[r]!);
          const base = p * rf;
          if (inRow(base, r)) continue;
          let best = -1;
          let bestKey = Infinity;
          for (let s = 0; s < rf; s++) {
            const d = slots[base + s]!;
            if (d < 0 || count[d]! <= target[d]!) continue;
            if (strict ? zoneInRow(base, zoneOf[r]!, s) : !dropSpread && zoneSpreadDrops(base, s, r)) continue;
            const key = raceKey(base + s, seed[d]!, count[d]! - target[d]!);
            if (key < bestKey) {
              best = s;
              bestKey = key;
            }
          }
          if (best < 0) continue;
          count[slots[base + best]!]!--;
          place(base + best, r);
          count[r]!++;
          progress = true;
          break;
        }
      }
    }
  }

  // Chains: when zone rules keep every donor replica from going straight to a receiver (the
  // fill's fallback can leave a node over target only in rows the receiver's zone already
  // holds), move replicas along a path r ← y1 ← … ← donor: each node takes one slot of the
  // next, every step in a different partition so each step's validity stands alone.
  for (let r = 0; r < N; r++) {
    while (count[r]! < target[r]! && chain(r)) {
      // each chain moves one replica's worth of load from a donor to r
    }
  }

  function chain(r: number): boolean {
    const seenNode = new Uint8Array(N);
    const seenPart = new Uint8Array(P);
    seenNode[r] = 1;
    const nodeOf: number[] = [r];
    const slotOf: number[] = [-1];
    const parentOf: number[] = [-1];
    for (let e = 0; e < nodeOf.length; e++) {
      const x = nodeOf[e]!;
      for (let k = 0; k < P; k++) {
        const p = permuted(k, seed[x]!);
        if (seenPart[p]) continue;
        const base = p * rf;
        for (let s = 0; s < rf; s++) {
          const y = slots[base + s]!;
          if (y < 0 || seenNode[y] || !allowed(base, x, s)) continue;
          if (!strict && zoneSpreadDrops(base, s, x)) continue;
          if (count[y]! > target[y]!) {
            count[y]!--;
            count[r]!++;
            place(base + s, x);
            for (let a = e; parentOf[a]! >= 0; a = parentOf[a]!) place(slotOf[a]!, nodeOf[parentOf[a]!]!);
            return true;
          }
          seenNode[y] = 1;
          seenPart[p] = 1;
          nodeOf.push(y);
          slotOf.push(base + s);
          parentOf.push(e);
          break;
        }
      }
    }
    return false;
  }

  /** With zones < RF, a move must not reduce the number of zones a partition spans. */
  function zoneSpreadDrops(base: number, s: number, r: number): boolean {
    const outgoing = zoneOf[slots[base + s]!]!;
    return outgoing !== zoneOf[r] && !zoneInRow(base, outgoing, s) && zoneInRow(base, zoneOf[r]!, s);
  }

  const partitions: string[][] = new Array<string[]>(P);
  for (let p = 0; p < P; p++) {
    const row = new Array<string>(rf);
    for (let s = 0; s < rf; s++) row[s] = eligible[slots[p * rf + s]!]!.id;
    partitions[p] = row;
  }

  const changed =
    previous === null ||
    previous.replicationFactor !== rf ||
    !sameNodes(previous.nodes, sorted) ||
    partitions.some((row, p) => {
      const old = previous.partitions[p]!;
      return old.length !== row.length || row.some((id, s) => old[s] !== id);
    });
  const epoch = previous === null ? 1 : changed ? previous.epoch + 1 : previous.epoch;
  return { epoch, replicationFactor: rf, nodes: sorted, partitions };
}
