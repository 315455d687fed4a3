// Media metrics, named as the chart's alerts and dashboard expect: jobs completed by format and
// failed by reason, pool queue depth and wait, run time by size and format, sharp's counters.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import sharp from 'sharp';
import type { FailureReason } from './options.js';

export interface MediaMetrics {
  readonly completed: Counter<'format'>;
  readonly failedTotal: Counter<'reason'>;
  readonly queueDepth: Gauge;
  readonly queueWait: Histogram;
  readonly run: Histogram<'size' | 'format'>;
  readonly generations: Counter<'trigger'>;
  /** HTTP thumbnail requests: time in the server from routing to the response written. */
  readonly serve: Histogram<'route' | 'status'>;
  failed(reason: FailureReason): void;
}

const cache = new WeakMap<Registry, MediaMetrics>();

function existing<T>(registry: Registry, name: string): T | undefined {
  return registry.getSingleMetric(name) as T | undefined;
}

/** One set per registry: the gateway extension and the job runner of one process share it. */
export function mediaMetrics(registry: Registry): MediaMetrics {
  const hit = cache.get(registry);
  if (hit !== undefined) return hit;
  const registers = [registry];
  const completed = existing<Counter<'format'>>(registry, 'cairn_media_jobs_completed_total')
    ?? new Counter({ name: 'cairn_media_jobs_completed_total', help: 'Media jobs completed, by source format.', labelNames: ['format'], registers });
  const failedTotal = existing<Counter<'reason'>>(registry, 'cairn_media_jobs_failed_total')
    ?? new Counter({ name: 'cairn_media_jobs_failed_total', help: 'Media job attempts that failed, by reason.', labelNames: ['reason'], registers });
  const queueDepth = new Gauge({ name: 'cairn_media_queue_depth', help: 'Tasks waiting for a sharp pool thread.', registers });
  const queueWait = new Histogram({ name: 'cairn_media_queue_wait_seconds', help: 'Time tasks waited for a sharp pool thread.', buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers });
  const run = new Histogram({ name: 'cairn_media_run_seconds', help: 'Time to derive one thumbnail size (decode counted in the largest size), by size and output format.', labelNames: ['size', 'format'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers });
  const generations = new Counter({ name: 'cairn_media_generations_total', help: 'Thumbnail ladders generated, by trigger (job or on_demand).', labelNames: ['trigger'], registers });
  const serve = new Histogram({ name: 'cairn_media_serve_seconds', help: 'HTTP thumbnail requests: time in the server from routing to the response written, by route (bearer, presigned) and status class.', labelNames: ['route', 'status'], buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers });
  // sharp.counters(): libvips tasks queued and in process, process-wide.
  new Gauge({ name: 'cairn_media_sharp_queue', help: 'sharp tasks waiting for a libuv thread (sharp.counters().queue).', registers, collect() { this.set(sharp.counters().queue); } });
  new Gauge({ name: 'cairn_media_sharp_process', help: 'sharp tasks being processed (sharp.counters().process).', registers, collect() { this.set(sharp.counters().process); } });
  new Gauge({ name: 'cairn_media_sharp_concurrency', help: 'libvips threads per sharp task (sharp.concurrency()).', registers, collect() { this.set(sharp.concurrency()); } });
  const m: MediaMetrics = { completed, failedTotal, queueDepth, queueWait, run, generations, serve, failed: (reason) => failedTotal.inc({ reason }) };
  cache.set(registry, m);
  return m;
}
