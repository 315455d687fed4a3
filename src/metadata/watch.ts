// Fans the single change-feed notification channel out to the watchers of each tenant in this
// process. Notifications only wake watchers, which then re-read the feed: a lost notification
// (PostgreSQL drops them while LISTEN reconnects) costs at most one poll interval.
import type { Kv } from './kv/types.js';
import { CHANGE_CHANNEL } from './model/index.js';

export class ChangeHub {
  readonly #listeners = new Map<string, Set<() => void>>();
  readonly #unsubscribe: () => void;

  constructor(kv: Kv) {
    this.#unsubscribe = kv.subscribe(CHANGE_CHANNEL, (payload) => {
      const tenant = payload.slice(0, payload.indexOf(' '));
      for (const wake of this.#listeners.get(tenant) ?? []) wake();
    });
  }

  /** Calls `wake` after commits of `tenant`'s changes (on any replica); returns the unsubscribe. */
  listen(tenant: string, wake: () => void): () => void {
    let set = this.#listeners.get(tenant);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(tenant, set);
    }
    const entry = (): void => wake();
    set.add(entry);
    return () => {
      set.delete(entry);
      if (set.size === 0 && this.#listeners.get(tenant) === set) this.#listeners.delete(tenant);
    };
  }

  close(): void {
    this.#unsubscribe();
    this.#listeners.clear();
  }
}
