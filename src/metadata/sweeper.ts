// Runs the model's maintenance sweeps (retention, trash purge, session expiry, feed trimming)
// periodically with jitter, backing off after failures. Every replica may run one: the sweeps are
// transactional, so concurrent runs only cost retries.
import { Counter, type Registry } from 'prom-client';
import type { Logger } from '../common/log.js';
import { runMaintenance, type MaintenanceStats, type ModelContext } from './model/index.js';

export type SweeperState = 'idle' | 'running' | 'backoff' | 'stopped';

export interface SweeperOptions {
  readonly intervalMs: number;
  readonly log: Logger;
  readonly registry: Registry;
}

export class Sweeper {
  readonly #ctx: ModelContext;
  readonly #opts: SweeperOptions;
  readonly #runs: Counter<'result'>;
  readonly #swept: Counter<'what'>;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #failures = 0;
  state: SweeperState = 'idle';

  constructor(ctx: ModelContext, options: SweeperOptions) {
    if (!Number.isInteger(options.intervalMs) || options.intervalMs <= 0) throw new RangeError('options.intervalMs must be a positive integer');
    this.#ctx = ctx;
    this.#opts = options;
    this.#runs = getOrCreateCounter(options.registry, 'cairn_metadata_sweeps_total', 'Metadata maintenance sweeps, by result.', ['result']);
    this.#swept = getOrCreateCounter(options.registry, 'cairn_metadata_swept_total', 'Items removed by metadata maintenance sweeps.', ['what']);
  }

  start(): void {
    if (this.state !== 'idle') return;
    this.#schedule(this.#opts.intervalMs);
  }

  /** Runs one sweep now (also what the timer calls). */
  async sweep(): Promise<MaintenanceStats> {
    this.state = 'running';
    const stats = await runMaintenance(this.#ctx);
    this.#swept.inc({ what: 'sessions' }, stats.sessionsExpired);
    this.#swept.inc({ what: 'versions' }, stats.versionsPruned);
    this.#swept.inc({ what: 'entries' }, stats.entriesPurged);
    this.#swept.inc({ what: 'changes' }, stats.changesTrimmed);
    return stats;
  }

  async stop(): Promise<void> {
    this.state = 'stopped';
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    await this.#running;
  }

  #schedule(baseMs: number): void {
    if (this.state === 'stopped') return;
    // ±20% jitter keeps replicas from sweeping in lockstep.
    const delay = baseMs * (0.8 + Math.random() * 0.4);
    this.#timer = setTimeout(() => {
      this.#running = this.sweep().then(
        (stats) => {
          this.#runs.inc({ result: 'ok' });
          this.#failures = 0;
          if (this.state !== 'stopped') this.state = 'idle';
          if (stats.versionsPruned + stats.entriesPurged + stats.sessionsExpired > 0) this.#opts.log.info(stats, 'metadata sweep');
          this.#schedule(this.#opts.intervalMs);
        },
        (err: unknown) => {
          this.#runs.inc({ result: 'error' });
          this.#failures++;
          if (this.state !== 'stopped') this.state = 'backoff';
          this.#opts.log.warn({ err, failures: this.#failures }, 'metadata sweep failed');
          this.#schedule(Math.min(this.#opts.intervalMs * 2 ** this.#failures, 3600_000));
        },
      );
    }, delay);
    this.#timer.unref();
  }
}

function getOrCreateCounter<L extends string>(registry: Registry, name: string, help: string, labelNames: L[]): Counter<L> {
  const existing = registry.getSingleMetric(name);
  if (existing !== undefined) return existing as Counter<L>;
  return new Counter({ name, help, labelNames, registers: [registry] });
}
