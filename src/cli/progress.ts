// Progress bars for long transfers: bytes, throughput and ETA on a terminal, nothing otherwise.
import cliProgress from 'cli-progress';
import type { ProgressFn } from '../client/index.js';

export interface Progress {
  readonly update: ProgressFn;
  stop(): void;
}

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function createProgress(label: string, enabled: boolean): Progress {
  if (!enabled || process.stderr.isTTY !== true) return { update: () => undefined, stop: () => undefined };
  const started = Date.now();
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {done} / {total} | {speed}/s | ETA {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  let startedBar = false;
  return {
    update(done, total) {
      const speed = formatBytes(done / Math.max(0.001, (Date.now() - started) / 1000));
      if (!startedBar) {
        bar.start(total ?? 0, 0, { done: formatBytes(0), total: formatBytes(total ?? 0), speed });
        startedBar = true;
      }
      if (total !== undefined) bar.setTotal(total);
      bar.update(done, { done: formatBytes(done), total: total === undefined ? '?' : formatBytes(total), speed });
    },
    stop() {
      if (startedBar) bar.stop();
    },
  };
}
