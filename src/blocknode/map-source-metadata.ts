// The cluster map as the metadata service publishes it: the current map and its predecessor at
// start, then every newer epoch from the Admin API's WatchClusterMap (which reconnects on its own).
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterMap } from '../placement/index.js';
import { StaticMapSource, emptyMap } from './map-source.js';
import { backoffMs } from './limits.js';

/** What this source needs of the metadata AdminClient (kept structural: no import of metadata here). */
export interface ClusterMapFeed {
  getClusterMap(): Promise<{ map: ClusterMap; previous: ClusterMap | undefined }>;
  watchClusterMap(fromEpoch: number, signal: AbortSignal): AsyncGenerator<ClusterMap>;
}

export interface MetadataMapSourceOptions {
  readonly feed: ClusterMapFeed;
  readonly log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
  /** How long open() waits for the first map before returning with an empty one (default 15 s). */
  readonly firstMapTimeoutMs?: number;
}

export class MetadataMapSource extends StaticMapSource {
  readonly #abort = new AbortController();
  readonly #o: MetadataMapSourceOptions;
  #loop: Promise<void> | undefined;

  private constructor(options: MetadataMapSourceOptions) {
    super(emptyMap());
    this.#o = options;
  }

  /** Fetches the current map (retrying while metadata is unreachable) and starts watching. */
  static async open(options: MetadataMapSourceOptions): Promise<MetadataMapSource> {
    const source = new MetadataMapSource(options);
    const first = new Promise<void>((resolve) => {
      source.#loop = source.#run(resolve);
    });
    const timeout = sleep(options.firstMapTimeoutMs ?? 15_000, undefined, { signal: source.#abort.signal }).catch(() => undefined);
    await Promise.race([first, timeout]);
    return source;
  }

  async #run(ready: () => void): Promise<void> {
    const signal = this.#abort.signal;
    let failures = 0;
    while (!signal.aborted) {
      try {
        const { map, previous } = await this.#o.feed.getClusterMap();
        if (map.epoch > 0) this.set(map, previous);
        ready();
        failures = 0;
        for await (const next of this.#o.feed.watchClusterMap(this.current().epoch, signal)) {
          if (this.set(next)) this.#o.log.info({ epoch: next.epoch }, 'cluster map changed');
        }
      } catch (err) {
        if (signal.aborted) return;
        failures++;
        this.#o.log.warn({ err, failures }, 'cannot follow the cluster map; retrying');
      }
      await sleep(backoffMs(failures, 200, 10_000), undefined, { signal }).catch(() => undefined);
    }
  }

  override close(): void {
    this.#abort.abort();
    super.close();
  }

  /** Resolves once the watch loop has ended after close(). */
  async closed(): Promise<void> {
    await this.#loop;
  }
}
