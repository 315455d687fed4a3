// A block node's membership in a metadata-managed cluster: it registers (keeping its id and
// incarnation in the data dir, so a restart is the same node and a wiped disk a new incarnation)
// and heartbeats its figures, which is how the metadata service judges a drain complete.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { writeFileAtomic } from '../common/auth.js';
import { isCairnError } from '../common/errors.js';
import { backoffMs } from './limits.js';

export interface HeartbeatStats {
  readonly blocks: number;
  readonly bytes: number;
  readonly capacityBytes: number;
  readonly underReplicatedPartitions: number;
  readonly bytesToMove: number;
  readonly soleCopies: number;
  readonly mapEpoch?: number;
}

/** What membership needs of the metadata AdminClient (structural: blocknode does not import metadata). */
export interface MembershipClient {
  registerNode(input: { id?: string; incarnation?: string; addr: string; zone?: string; weight?: number; capacityBytes?: number }): Promise<{ node: { id: string; incarnation: string }; newIncarnation: boolean; epoch: number }>;
  heartbeat(nodeId: string, incarnation: string, stats: HeartbeatStats): Promise<{ epoch: number; state: string }>;
}

export interface MembershipLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

interface Identity {
  id: string;
  incarnation: string;
}

const FILE = 'node.json';

/** The node id: the configured one, else the one kept in the data dir, else a new one (kept). */
export function nodeIdentity(dataDir: string, configured: string | undefined): Identity {
  let saved: Partial<Identity> = {};
  try {
    saved = JSON.parse(readFileSync(join(dataDir, FILE), 'utf8')) as Partial<Identity>;
  } catch {
    // First start (or no file yet).
  }
  const id = configured ?? (typeof saved.id === 'string' && saved.id !== '' ? saved.id : `node-${randomBytes(6).toString('hex')}`);
  // An incarnation belongs to one id: a node renamed by configuration starts a new one.
  const incarnation = typeof saved.incarnation === 'string' && saved.id === id ? saved.incarnation : '';
  if (saved.id !== id) writeFileAtomic(join(dataDir, FILE), JSON.stringify({ id, incarnation }) + '\n', 0o644);
  return { id, incarnation };
}

export class Membership {
  readonly #client: MembershipClient;
  readonly #dataDir: string;
  readonly #log: MembershipLogger;
  readonly #abort = new AbortController();
  #identity: Identity;
  #loop: Promise<void> | undefined;
  #registration: { addr: string; zone: string; capacityBytes: number };

  private constructor(client: MembershipClient, dataDir: string, identity: Identity, registration: { addr: string; zone: string; capacityBytes: number }, log: MembershipLogger) {
    this.#client = client;
    this.#dataDir = dataDir;
    this.#identity = identity;
    this.#registration = registration;
    this.#log = log;
  }

  get id(): string {
    return this.#identity.id;
  }

  get incarnation(): string {
    return this.#identity.incarnation;
  }

  /** Registers the node (retrying while metadata is unreachable) and keeps the incarnation it got. */
  static async join(options: { client: MembershipClient; dataDir: string; nodeId: string; addr: string; zone?: string; capacityBytes: number; log: MembershipLogger; signal?: AbortSignal }): Promise<Membership> {
    const identity = nodeIdentity(options.dataDir, options.nodeId);
    const m = new Membership(options.client, options.dataDir, identity, { addr: options.addr, zone: options.zone ?? '', capacityBytes: options.capacityBytes }, options.log);
    for (let attempt = 0; ; attempt++) {
      try {
        await m.#register();
        return m;
      } catch (err) {
        if (isCairnError(err) && !err.retryable && err.code !== 'CAIRN_UNAVAILABLE') throw err;
        if (options.signal?.aborted) throw err;
        options.log.warn({ err, attempt }, 'cannot register with the metadata service; retrying');
        await sleep(backoffMs(attempt, 200, 5_000));
      }
    }
  }

  async #register(): Promise<void> {
    const res = await this.#client.registerNode({
      id: this.#identity.id,
      ...(this.#identity.incarnation !== '' ? { incarnation: this.#identity.incarnation } : {}),
      addr: this.#registration.addr,
      zone: this.#registration.zone,
      capacityBytes: this.#registration.capacityBytes,
    });
    this.#identity = { id: res.node.id, incarnation: res.node.incarnation };
    writeFileAtomic(join(this.#dataDir, FILE), JSON.stringify(this.#identity) + '\n', 0o644);
    this.#log.info({ node: res.node.id, newIncarnation: res.newIncarnation, epoch: res.epoch }, 'registered with the metadata service');
  }

  /** Heartbeats every `intervalMs` with the figures `stats()` gives, until stop(). */
  start(stats: () => HeartbeatStats, intervalMs: number): void {
    if (this.#loop) return;
    this.#loop = this.#run(stats, intervalMs);
  }

  async #run(stats: () => HeartbeatStats, intervalMs: number): Promise<void> {
    const signal = this.#abort.signal;
    let failures = 0;
    while (!signal.aborted) {
      try {
        await this.#client.heartbeat(this.#identity.id, this.#identity.incarnation, stats());
        failures = 0;
      } catch (err) {
        failures++;
        if (isCairnError(err, 'CAIRN_NOT_FOUND')) {
          // The metadata store lost us (restored from backup, or a fresh store): join again.
          await this.#register().catch((e: unknown) => this.#log.warn({ err: e }, 're-registration failed'));
        } else if (isCairnError(err, 'CAIRN_FAILED_PRECONDITION')) {
          this.#log.error({ err }, 'the metadata service refused this node (replaced or removed); heartbeats stop');
          return;
        } else {
          this.#log.warn({ err, failures }, 'heartbeat failed');
        }
      }
      const delay = failures === 0 ? intervalMs : Math.max(backoffMs(failures, 200, intervalMs), 100);
      await sleep(delay, undefined, { signal }).catch(() => undefined);
    }
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }
}
