// Lease-based leader election (coordination.k8s.io/v1), the client-go algorithm: take the Lease
// when it is free or its holder stopped renewing for leaseDuration (timed by our own clock from
// when we last saw it change, not the holder's timestamps), renew with resourceVersion-checked
// updates, and stop acting once a renewal is overdue — before anyone else may take over.
import type { V1Lease } from '@kubernetes/client-node';
import type { Logger } from '../common/log.js';
import { errorText } from './informer.js';
import { statusOf, type KubeClient } from './k8s.js';

export interface LeaderOptions {
  readonly client: Pick<KubeClient, 'readLease' | 'createLease' | 'replaceLease'>;
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  /** How long a holder's Lease stays valid without renewal (whole seconds, as the API stores it). */
  readonly leaseDurationSeconds: number;
  /** Leadership ends when no renewal succeeded for this long; must be < leaseDuration. Default 2/3 of it. */
  readonly renewDeadlineMs?: number;
  /** Pause between attempts; default leaseDuration / 4. */
  readonly retryPeriodMs?: number;
  readonly log: Logger;
  readonly now?: () => number;
  readonly onChange?: (leader: boolean) => void;
}

export class LeaderElector {
  readonly #o: LeaderOptions;
  readonly #now: () => number;
  readonly #renewDeadlineMs: number;
  readonly #retryMs: number;
  /** Our clock when a renewal of our own Lease last succeeded. */
  #renewedAt = -Infinity;
  /** The other holder's Lease as last seen, and our clock when it last changed. */
  #observed: { rv: string; at: number } | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #leader = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;

  constructor(options: LeaderOptions) {
    if (!Number.isInteger(options.leaseDurationSeconds) || options.leaseDurationSeconds < 1) throw new RangeError('options.leaseDurationSeconds must be an integer ≥ 1');
    this.#o = options;
    this.#now = options.now ?? Date.now;
    const durationMs = options.leaseDurationSeconds * 1000;
    this.#renewDeadlineMs = options.renewDeadlineMs ?? Math.floor((durationMs * 2) / 3);
    if (this.#renewDeadlineMs >= durationMs) throw new RangeError('options.renewDeadlineMs must be below the lease duration');
    this.#retryMs = options.retryPeriodMs ?? Math.max(100, Math.floor(durationMs / 4));
  }

  /** True only while our last successful renewal is within the renew deadline. */
  isLeader(): boolean {
    const ok = this.#leader && this.#now() - this.#renewedAt < this.#renewDeadlineMs;
    if (!ok && this.#leader) this.#setLeader(false);
    return ok;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop = this.#tick();
  }

  /** Stops trying and, if we hold the Lease, releases it so another replica takes over at once. */
  async stop(): Promise<void> {
    this.#running = false;
    clearTimeout(this.#timer);
    this.#wake?.();
    await this.#loop;
    if (!this.#leader) return;
    this.#setLeader(false);
    try {
      const lease = await this.#o.client.readLease(this.#o.namespace, this.#o.name);
      if (lease?.spec?.holderIdentity !== this.#o.identity) return;
      await this.#o.client.replaceLease(this.#o.namespace, { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1 } });
    } catch (err) {
      this.#o.log.warn({ err: errorText(err) }, 'could not release the leader Lease');
    }
  }

  #setLeader(leader: boolean): void {
    if (this.#leader === leader) return;
    this.#leader = leader;
    this.#o.log.info({ identity: this.#o.identity, lease: this.#o.name }, leader ? 'became leader' : 'lost leadership');
    this.#o.onChange?.(leader);
  }

  async #tick(): Promise<void> {
    while (this.#running) {
      try {
        await this.#tryAcquireOrRenew();
      } catch (err) {
        this.#o.log.warn({ err: errorText(err) }, 'leader election attempt failed');
      }
      this.isLeader();
      if (!this.#running) return;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        this.#timer = setTimeout(resolve, this.#retryMs);
      });
    }
  }

  #spec(previous: V1Lease['spec'] | undefined, transitions: number): NonNullable<V1Lease['spec']> {
    const now = new Date(this.#now());
    const acquired = previous?.holderIdentity === this.#o.identity && previous.acquireTime !== undefined ? previous.acquireTime : now;
    return { holderIdentity: this.#o.identity, leaseDurationSeconds: this.#o.leaseDurationSeconds, acquireTime: acquired, renewTime: now, leaseTransitions: transitions };
  }

  async #tryAcquireOrRenew(): Promise<void> {
    const { client, namespace, name, identity } = this.#o;
    const lease = await client.readLease(namespace, name);
    const now = this.#now();
    if (lease === undefined) {
      try {
        await client.createLease(namespace, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace }, spec: this.#spec(undefined, 0) });
      } catch (err) {
        if (statusOf(err) === 409) return; // another replica created it first
        throw err;
      }
      this.#renewedAt = now;
      this.#setLeader(true);
      return;
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const rv = lease.metadata?.resourceVersion ?? '';
    if (holder !== identity) {
      // Time another holder's Lease from when we saw it change, so clock skew cannot expire it early.
      if (this.#observed?.rv !== rv) this.#observed = { rv, at: now };
      const durationMs = (spec.leaseDurationSeconds ?? this.#o.leaseDurationSeconds) * 1000;
      if (holder !== '' && now - this.#observed.at < durationMs) {
        this.#setLeader(false);
        return;
      }
    }
    const transitions = (spec.leaseTransitions ?? 0) + (holder === identity ? 0 : 1);
    try {
      await client.replaceLease(namespace, { ...lease, spec: this.#spec(spec, transitions) });
    } catch (err) {
      if (statusOf(err) === 409) {
        // Someone else renewed or took it between our read and write.
        this.#setLeader(false);
        return;
      }
      throw err;
    }
    this.#renewedAt = now;
    this.#setLeader(true);
  }
}
