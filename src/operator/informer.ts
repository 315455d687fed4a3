// A client-node informer that survives errors: 1.x relists by itself only on 410 Gone and stops
// on any other error, so this restarts it with jittered exponential backoff and tracks its state.
import { KubernetesObjectApi, makeInformer, type Informer, type KubeConfig, type KubernetesObject, type ObjectCache } from '@kubernetes/client-node';
import type { Logger } from '../common/log.js';

export type InformerState = 'starting' | 'synced' | 'backoff' | 'stopped';

export interface InformerOptions {
  readonly kubeConfig: KubeConfig;
  /** e.g. `apps/v1`. */
  readonly apiVersion: string;
  readonly kind: string;
  /** e.g. `statefulsets`: the watch path is built from it. */
  readonly plural: string;
  readonly namespace: string;
  readonly labelSelector?: string;
  readonly log: Logger;
  /** Called on every add, update, delete and relist. */
  readonly onChange: () => void;
  /** Called on every state change (metrics). */
  readonly onState?: (state: InformerState, kind: string) => void;
  readonly minBackoffMs?: number;
  readonly maxBackoffMs?: number;
}

export function resourcePath(apiVersion: string, plural: string, namespace: string): string {
  const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  return namespace === '' ? `${base}/${plural}` : `${base}/namespaces/${namespace}/${plural}`;
}

export class ResilientInformer<T extends KubernetesObject> {
  readonly #o: InformerOptions;
  readonly #informer: Informer<T> & ObjectCache<T>;
  #state: InformerState = 'stopped';
  #failures = 0;
  #timer: NodeJS.Timeout | undefined;
  #stopped = true;
  #errored = false;

  constructor(options: InformerOptions) {
    this.#o = options;
    const api = KubernetesObjectApi.makeApiClient(options.kubeConfig);
    const list = () => api.list<T>(options.apiVersion, options.kind, options.namespace === '' ? undefined : options.namespace, undefined, undefined, undefined, undefined, options.labelSelector);
    this.#informer = makeInformer<T>(options.kubeConfig, resourcePath(options.apiVersion, options.plural, options.namespace), list, options.labelSelector);
    const changed = (): void => options.onChange();
    this.#informer.on('add', changed);
    this.#informer.on('update', changed);
    this.#informer.on('delete', changed);
    this.#informer.on('error', (err: unknown) => this.#failed(err));
  }

  get state(): InformerState {
    return this.#state;
  }

  get synced(): boolean {
    return this.#state === 'synced';
  }

  list(): readonly T[] {
    return this.#informer.list(this.#o.namespace === '' ? undefined : this.#o.namespace);
  }

  get(name: string, namespace: string): T | undefined {
    return this.#informer.get(name, namespace);
  }

  start(): void {
    this.#stopped = false;
    void this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#set('stopped');
    await this.#informer.stop();
  }

  #set(state: InformerState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#o.onState?.(state, this.#o.kind);
  }

  async #run(): Promise<void> {
    if (this.#stopped) return;
    this.#set('starting');
    this.#errored = false;
    // start() lists, fills the cache and opens the watch; errors arrive on the 'error' callback.
    await this.#informer.start().catch((err: unknown) => this.#failed(err));
    if (this.#errored || this.#stopped) return;
    this.#failures = 0;
    this.#set('synced');
    this.#o.onChange();
  }

  #failed(err: unknown): void {
    this.#errored = true;
    if (this.#stopped) return;
    this.#failures++;
    const cap = Math.min(this.#o.maxBackoffMs ?? 30_000, (this.#o.minBackoffMs ?? 200) * 2 ** Math.min(this.#failures, 16));
    const delay = cap / 2 + Math.random() * (cap / 2);
    this.#o.log.warn({ kind: this.#o.kind, err: errorText(err), retryInMs: Math.round(delay) }, 'informer stopped; restarting with backoff');
    this.#set('backoff');
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      void this.#informer.stop().then(() => this.#run());
    }, delay);
  }
}

export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] ?? err.message;
  return String(err);
}
