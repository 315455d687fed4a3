// The per-tenant change feed: every change to a tenant's tree gets the tenant's next revision
// and an event, written in the same transaction; a floor records what retention has trimmed.
import { CairnError } from '../../common/errors.js';
import type { KvTx } from '../kv/types.js';
import { json, readJson } from './codec.js';
import type { ModelContext } from './context.js';
import { CHANGE_CHANNEL, keys, under } from './keys.js';
import { decodeChange, encodeNewChange } from './records.js';

export type { ChangeEvent, ChangeType, NodeKind } from './records.js';
import type { ChangeEvent } from './records.js';

export type NewChange = Omit<ChangeEvent, 'revision' | 'atMs'>;

/** Appends one event with the tenant's next revision and wakes watchers after commit. */
export async function appendChange(tx: KvTx, ctx: ModelContext, tenant: string, change: NewChange): Promise<number> {
  const revision = ((await readJson<number>(tx, keys.revision(tenant))) ?? 0) + 1;
  tx.put(keys.revision(tenant), json(revision));
  tx.put(keys.change(tenant, revision), encodeNewChange(change, revision, ctx.now()));
  tx.notify(CHANGE_CHANNEL, `${tenant} ${revision}`);
  return revision;
}

export async function currentRevision(tx: Pick<KvTx, 'get'>, tenant: string): Promise<number> {
  return (await readJson<number>(tx, keys.revision(tenant))) ?? 0;
}

export interface ChangePage {
  readonly changes: ChangeEvent[];
  /** Revision to resume after: the last event returned, or `after` when there was none. */
  readonly last: number;
  /** The tenant's revision when the page was read. */
  readonly current: number;
}

/**
 * Events after revision `after`, oldest first, from one consistent snapshot. A revision older
 * than the trimmed floor is CAIRN_CURSOR_EXPIRED (metadata.current_revision: where to restart
 * after re-listing); one from the future is CAIRN_INVALID_CURSOR.
 */
export async function listChanges(ctx: ModelContext, tenant: string, after: number, limit: number): Promise<ChangePage> {
  return ctx.kv.transact(async (tx) => {
    const current = await currentRevision(tx, tenant);
    const floor = (await readJson<number>(tx, keys.feedFloor(tenant))) ?? 0;
    if (after > current) throw new CairnError('CAIRN_INVALID_CURSOR', `cursor revision ${after} is ahead of the tenant's revision ${current}`);
    if (after < floor) {
      throw new CairnError('CAIRN_CURSOR_EXPIRED', `changes up to revision ${floor} have been trimmed; cursor is at ${after}`, { metadata: { current_revision: String(current) } });
    }
    const { lt } = under('l', tenant);
    const rows = await tx.scan({ gt: keys.change(tenant, after), lt, limit });
    const changes = rows.map(([, v]) => decodeChange(v));
    return { changes, last: changes.at(-1)?.revision ?? after, current };
  });
}

/** Drops events older than the retention window, a batch at a time; returns how many. */
export async function trimChanges(ctx: ModelContext, tenant: string, batch = 512): Promise<number> {
  const cutoff = ctx.now() - ctx.changeRetentionMs;
  return ctx.kv.transact(async (tx) => {
    const floor = (await readJson<number>(tx, keys.feedFloor(tenant))) ?? 0;
    const rows = await tx.scan({ gt: keys.change(tenant, floor), lt: under('l', tenant).lt, limit: batch });
    let newFloor = floor;
    for (const [k, v] of rows) {
      const event = decodeChange(v);
      if (event.atMs >= cutoff) break;
      tx.del(k);
      newFloor = event.revision;
    }
    if (newFloor !== floor) tx.put(keys.feedFloor(tenant), json(newFloor));
    return newFloor - floor;
  });
}

