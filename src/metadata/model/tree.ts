// The file tree: folders and files are nodes with stable ids; a directory entry (parent id, name)
// holds the node's record, so renaming or moving a folder rewrites one entry, not its subtree.
import { randomFillSync } from 'node:crypto';
import { CairnError } from '../../common/errors.js';
import type { KvTx } from '../kv/types.js';
import { appendChange } from './changes.js';
import { json, readJson } from './codec.js';
import type { ModelContext } from './context.js';
import { keys, under } from './keys.js';
import { decodeNode, encodeNode, type NodeRecord } from './records.js';

export const ROOT_ID = '0000000000000000';
/** Pseudo-folder holding tombstones displaced by a new entry of the same name, until purged. */
export const TRASH_ID = 'ffffffffffffffff';

export type { NodeRecord } from './records.js';

interface Location {
  p: string;
  n: string;
}

export interface Resolved {
  readonly node: NodeRecord;
  readonly parent: string;
  readonly name: string;
  readonly path: string;
}

/** Random bytes drawn in bulk: one randomFillSync per 512 node ids instead of one per id. */
const idPool = Buffer.alloc(4096);
let idPoolAt = idPool.length;

export function newNodeId(): string {
  for (;;) {
    if (idPoolAt + 8 > idPool.length) {
      randomFillSync(idPool);
      idPoolAt = 0;
    }
    const id = idPool.toString('hex', idPoolAt, idPoolAt + 8);
    idPoolAt += 8;
    if (id !== ROOT_ID && id !== TRASH_ID) return id;
  }
}

export function segmentsOf(path: string): string[] {
  return path.split('/').filter((s) => s.length > 0);
}

export function joinPath(parentPath: string, name: string): string {
  return parentPath === '/' ? `/${name}` : `${parentPath}/${name}`;
}

export function parentPathOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

export async function getEntry(tx: Pick<KvTx, 'get'>, tenant: string, parent: string, name: string): Promise<NodeRecord | undefined> {
  const raw = await tx.get(keys.dentry(tenant, parent, name));
  return raw === undefined ? undefined : decodeNode(raw);
}

/** Writes a node's entry (and its location when it is new or moved). */
export function putEntry(tx: KvTx, tenant: string, parent: string, name: string, node: NodeRecord, located = true): void {
  tx.put(keys.dentry(tenant, parent, name), encodeNode(node));
  if (!located) tx.put(keys.node(tenant, node.id), json({ p: parent, n: name } satisfies Location));
}

export async function locate(tx: Pick<KvTx, 'get'>, tenant: string, id: string): Promise<Location | undefined> {
  return readJson<Location>(tx, keys.node(tenant, id));
}

/** Whether deleted nodes may be passed through: never, only as the last segment, or anywhere. */
export type DeletedMode = 'live' | 'last' | 'any';

/**
 * Walks `path` from the root. Undefined when a segment is missing, an inner segment is a file,
 * or a deleted node is met where `mode` does not allow one.
 */
export async function lookup(tx: Pick<KvTx, 'get'>, tenant: string, path: string, mode: DeletedMode = 'live'): Promise<Resolved | undefined> {
  const segments = segmentsOf(path);
  let parent = ROOT_ID;
  let node: NodeRecord | undefined;
  for (let i = 0; i < segments.length; i++) {
    const name = segments[i]!;
    const last = i === segments.length - 1;
    node = await getEntry(tx, tenant, parent, name);
    if (node === undefined) return undefined;
    if (node.deletedMs !== undefined && mode !== 'any' && !(last && mode === 'last')) return undefined;
    if (last) return { node, parent, name, path };
    if (node.kind !== 'dir') return undefined;
    parent = node.id;
  }
  return undefined;
}

/** Like lookup, but says why a path is not there. */
export async function mustLookup(tx: Pick<KvTx, 'get'>, tenant: string, path: string, mode: DeletedMode = 'live'): Promise<Resolved> {
  const found = await lookup(tx, tenant, path, mode);
  if (found === undefined) throw new CairnError('CAIRN_NOT_FOUND', `no file or folder at ${path}`);
  return found;
}

/** Moves a tombstone out of the way of a new entry: it stays purgeable but no longer restorable by path. */
export function detach(tx: KvTx, tenant: string, parent: string, name: string, node: NodeRecord): void {
  tx.del(keys.dentry(tenant, parent, name));
  putEntry(tx, tenant, TRASH_ID, node.id, node, false);
}

export function newFolder(id: string, now: number, rev: number): NodeRecord {
  return { id, kind: 'dir', createdMs: now, modifiedMs: now, head: 0, last: 0, size: 0, hash: '', mtimeMs: now, rev };
}

/**
 * Returns the folder at `path`, creating missing folders (each with a change event) and moving
 * tombstones out of their way. A live file in the way is CAIRN_FAILED_PRECONDITION.
 */
export async function ensureFolder(tx: KvTx, ctx: ModelContext, tenant: string, path: string): Promise<string> {
  let parent = ROOT_ID;
  let current = '/';
  for (const name of segmentsOf(path)) {
    current = joinPath(current, name);
    let node = await getEntry(tx, tenant, parent, name);
    if (node !== undefined && node.deletedMs !== undefined) {
      detach(tx, tenant, parent, name, node);
      node = undefined;
    }
    if (node === undefined) {
      const id = newNodeId();
      const rev = await appendChange(tx, ctx, tenant, { type: 'mkdir', path: current, nodeId: id, kind: 'dir' });
      node = newFolder(id, ctx.now(), rev);
      putEntry(tx, tenant, parent, name, node, false);
    } else if (node.kind !== 'dir') {
      throw new CairnError('CAIRN_FAILED_PRECONDITION', `${current} is a file, not a folder`);
    }
    parent = node.id;
  }
  return parent;
}

/** The current path of a node; undefined when it was detached or is gone. */
export async function pathOf(tx: Pick<KvTx, 'get'>, tenant: string, id: string): Promise<string | undefined> {
  const names: string[] = [];
  let at = id;
  // Bounded by the path length limit (≤ 2048 segments); a longer walk means a damaged tree.
  for (let depth = 0; at !== ROOT_ID; depth++) {
    if (depth > 2048) throw new CairnError('CAIRN_INTERNAL', `node ${id} has no path to the root`);
    const loc = await locate(tx, tenant, at);
    if (loc === undefined || loc.p === TRASH_ID) return undefined;
    names.push(loc.n);
    at = loc.p;
  }
  return '/' + names.reverse().join('/');
}

export interface ChildPage {
  readonly entries: Array<{ name: string; node: NodeRecord }>;
  /** Name to continue after (forward) or before (backward); undefined at the end. */
  readonly resume: string | undefined;
}

/**
 * One page of a folder's entries in name order. `after`/`before` are exclusive positions; with
 * `before` the page ends just before it (entries still returned in ascending order). Deleted
 * entries are skipped unless asked for; at most ~8 pages' worth of entries are read per call,
 * so a folder full of tombstones yields short pages rather than one unbounded scan.
 */
export async function listChildren(
  tx: Pick<KvTx, 'scan'>,
  tenant: string,
  folder: string,
  options: { after?: string | undefined; before?: string | undefined; limit: number; includeDeleted: boolean },
): Promise<ChildPage> {
  const range = under('d', tenant, folder);
  const reverse = options.before !== undefined;
  let lower: Buffer = options.after !== undefined ? keys.dentry(tenant, folder, options.after) : range.gt;
  let upper: Buffer = options.before !== undefined ? keys.dentry(tenant, folder, options.before) : range.lt;
  const entries: Array<{ name: string; node: NodeRecord }> = [];
  const prefixLength = range.gt.length;
  let budget = options.limit * 8;
  let lastName: string | undefined;
  for (;;) {
    const want = options.limit - entries.length + 1;
    const rows = await tx.scan({ gt: lower, lt: upper, limit: want, reverse });
    for (const [k, v] of rows) {
      const name = k.subarray(prefixLength).toString('utf8');
      budget--;
      lastName = name;
      const node = decodeNode(v);
      if (node.deletedMs !== undefined && !options.includeDeleted) continue;
      // A visible entry beyond a full page: there is more after the page's last entry.
      if (entries.length === options.limit) return finish(entries, entries.at(-1)!.name, reverse);
      entries.push({ name, node });
    }
    if (rows.length < want) return finish(entries, undefined, reverse);
    if (budget <= 0) return finish(entries, lastName, reverse);
    const last = rows.at(-1)![0];
    if (reverse) upper = last;
    else lower = last;
  }
}

function finish(entries: Array<{ name: string; node: NodeRecord }>, resume: string | undefined, reverse: boolean): ChildPage {
  if (reverse) entries.reverse();
  return { entries, resume };
}
