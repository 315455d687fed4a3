// How many replica slots each node should hold: proportional to weight, capped
// where one-replica-per-partition (and per zone) makes more impossible.

/**
 * Splits `total` integer units in proportion to `weights`, no entry above `cap`:
 * water-filling (capped entries are fixed and the rest re-shared), then
 * largest-remainder rounding with ties going to the lower index. The caller
 * guarantees total ≤ cap × weights.length.
 */
export function apportion(total: number, weights: readonly number[], cap: number): number[] {
  const n = weights.length;
  const real = new Array<number>(n).fill(0);
  const capped = new Array<boolean>(n).fill(false);
  let remaining = total;
  for (;;) {
    let sum = 0;
    for (let i = 0; i < n; i++) if (!capped[i]) sum += weights[i]!;
    let changed = false;
    for (let i = 0; i < n; i++) {
      if (capped[i]) continue;
      const share = (remaining * weights[i]!) / sum;
      if (share > cap) {
        capped[i] = true;
        real[i] = cap;
        changed = true;
      }
    }
    if (!changed) {
      for (let i = 0; i < n; i++) if (!capped[i]) real[i] = (remaining * weights[i]!) / sum;
      break;
    }
    remaining = total;
    for (let i = 0; i < n; i++) if (capped[i]) remaining -= cap;
  }
  const out = real.map((r) => Math.min(cap, Math.floor(r + 1e-9)));
  let left = total - out.reduce((a, b) => a + b, 0);
  const order = real
    .map((r, i) => ({ i, frac: r - Math.floor(r + 1e-9) }))
    .filter(({ i }) => out[i]! < cap)
    .sort((x, y) => y.frac - x.frac || x.i - y.i);
  for (const { i } of order) {
    if (left <= 0) break;
    out[i]!++;
    left--;
  }
  return out;
}
