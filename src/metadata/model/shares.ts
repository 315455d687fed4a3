// Shares: grants of a file or folder to a tenant's users (read or write, inherited by a folder's
// descendants), and link shares — bearer links with an expiry, stored by the hash of their secret.
import { createHash, randomBytes } from 'node:crypto';
import { validateTenant } from '../../common/auth.js';
import { CairnError } from '../../common/errors.js';
import { normalizePath } from '../../common/paths.js';
import type { KvTx } from '../kv/types.js';
import { appendChange } from './changes.js';
import { json, parseJson, readJson } from './codec.js';
import { checkCount, invalid, notFound, validateUser, type ModelContext } from './context.js';
import { keys, under } from './keys.js';
import { mustGetUser } from './tenants.js';
import { getEntry, locate, mustLookup, pathOf, ROOT_ID, segmentsOf } from './tree.js';

export type SharePermission = 'read' | 'write';
export type Access = 'none' | SharePermission;

export interface GrantRecord {
  readonly tenant: string;
  readonly path: string;
  readonly nodeId: string;
  readonly user: string;
  readonly permission: SharePermission;
  readonly grantedBy: string;
  readonly createdMs: number;
}

export interface LinkRecord {
  readonly tenant: string;
  readonly linkId: string;
  readonly path: string;
  readonly nodeId: string;
  readonly permission: SharePermission;
  readonly createdBy: string;
  readonly createdMs: number;
  /** 0 = the link does not expire. */
  readonly expiresMs: number;
}

interface StoredGrant {
  perm: SharePermission;
  by: string;
  at: number;
}

interface StoredLink {
  t: string;
  id: string;
  node: string;
  perm: SharePermission;
  by: string;
  at: number;
  exp: number;
}

const LINK_TOKEN = /^cl_[A-Za-z0-9_-]{32}$/;
const LINK_ID = /^[0-9a-f]{16}$/;

function checkPermission(p: string): SharePermission {
  if (p !== 'read' && p !== 'write') throw invalid('permission', 'permission must be read or write');
  return p;
}

function rank(a: Access): number {
  return a === 'write' ? 2 : a === 'read' ? 1 : 0;
}

function tokenHash(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

export async function grantShare(ctx: ModelContext, tenant: string, rawPath: string, user: string, permission: string, grantedBy = ''): Promise<GrantRecord> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  validateUser(user);
  const perm = checkPermission(permission);
  return ctx.write(tenant, async (tx) => {
    const { node } = await mustLookup(tx, tenant, path);
    await mustGetUser(tx, tenant, user);
    const existing = await readJson<StoredGrant>(tx, keys.grant(tenant, node.id, user));
    const g: StoredGrant = { perm, by: grantedBy, at: existing?.at ?? ctx.now() };
    tx.put(keys.grant(tenant, node.id, user), json(g));
    tx.put(keys.grantOfUser(tenant, user, node.id), json({ perm }));
    await appendChange(tx, ctx, tenant, { type: 'share', path, nodeId: node.id, kind: node.kind, user });
    return { tenant, path, nodeId: node.id, user, permission: perm, grantedBy: g.by, createdMs: g.at };
  });
}

export async function revokeShare(ctx: ModelContext, tenant: string, rawPath: string, user: string): Promise<void> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  validateUser(user);
  await ctx.write(tenant, async (tx) => {
    const { node } = await mustLookup(tx, tenant, path);
    if ((await tx.get(keys.grant(tenant, node.id, user))) === undefined) throw notFound(`${path} is not shared with ${user}`);
    tx.del(keys.grant(tenant, node.id, user));
    tx.del(keys.grantOfUser(tenant, user, node.id));
    await appendChange(tx, ctx, tenant, { type: 'unshare', path, nodeId: node.id, kind: node.kind, user });
  });
}

/** The grants made on one file or folder (not inherited ones), by user. */
export async function listGrants(ctx: ModelContext, tenant: string, rawPath: string, limit = 1000): Promise<GrantRecord[]> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  return ctx.kv.transact(async (tx) => {
    const { node } = await mustLookup(tx, tenant, path);
    const range = under('g', tenant, node.id);
    const rows = await tx.scan({ ...range, limit });
    return rows.map(([k, v]) => {
      const g = parseJson<StoredGrant>(v);
      return { tenant, path, nodeId: node.id, user: k.subarray(range.gt.length).toString('utf8'), permission: g.perm, grantedBy: g.by, createdMs: g.at };
    });
  });
}

/** What is shared with a user: live entries, in node-id order, after node `after`. */
export async function listSharedWith(ctx: ModelContext, tenant: string, user: string, after = '', limit = 1000): Promise<{ grants: GrantRecord[]; resume: string | undefined }> {
  validateTenant(tenant);
  validateUser(user);
  return ctx.kv.transact(async (tx) => {
    const range = under('G', tenant, user);
    const rows = await tx.scan({ gt: after === '' ? range.gt : keys.grantOfUser(tenant, user, after), lt: range.lt, limit });
    const grants: GrantRecord[] = [];
    for (const [k] of rows) {
      const id = k.subarray(range.gt.length).toString('utf8');
      const g = await readJson<StoredGrant>(tx, keys.grant(tenant, id, user));
      const path = await pathOf(tx, tenant, id);
      if (g === undefined || path === undefined || !(await isLive(tx, tenant, id))) continue;
      grants.push({ tenant, path, nodeId: id, user, permission: g.perm, grantedBy: g.by, createdMs: g.at });
    }
    return { grants, resume: rows.length === limit ? rows.at(-1)![0].subarray(range.gt.length).toString('utf8') : undefined };
  });
}

/** Whether a node and all its ancestors are live (not deleted). */
async function isLive(tx: Pick<KvTx, 'get'>, tenant: string, id: string): Promise<boolean> {
  for (let at = id, depth = 0; at !== ROOT_ID && depth <= 2048; depth++) {
    const loc = await locate(tx, tenant, at);
    if (loc === undefined) return false;
    const node = await getEntry(tx, tenant, loc.p, loc.n);
    if (node === undefined || node.deletedMs !== undefined) return false;
    at = loc.p;
  }
  return true;
}

/** The strongest permission a user's grants give on `path` (grants on folders are inherited). */
export async function checkAccess(ctx: ModelContext, tenant: string, rawPath: string, user: string): Promise<Access> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  validateUser(user);
  return ctx.kv.transact(async (tx) => {
    let best: Access = 'none';
    let parent = ROOT_ID;
    for (const name of segmentsOf(path)) {
      const node = await getEntry(tx, tenant, parent, name);
      if (node === undefined || node.deletedMs !== undefined) break;
      const g = await readJson<StoredGrant>(tx, keys.grant(tenant, node.id, user));
      if (g !== undefined && rank(g.perm) > rank(best)) best = g.perm;
      if (node.kind !== 'dir') break;
      parent = node.id;
    }
    return best;
  });
}

/** Creates a link share; the token is returned once and only its hash is stored. */
export async function createLink(ctx: ModelContext, tenant: string, rawPath: string, permission: string, expiresMs: number, createdBy = ''): Promise<LinkRecord & { token: string }> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  const perm = checkPermission(permission);
  checkCount(expiresMs, 'expires_ms');
  if (expiresMs !== 0 && expiresMs <= ctx.now()) throw invalid('expires_ms', 'expires_ms must be in the future (or 0 for a link that does not expire)');
  return ctx.write(tenant, async (tx) => {
    const { node } = await mustLookup(tx, tenant, path);
    const token = 'cl_' + randomBytes(24).toString('base64url');
    const hash = tokenHash(token);
    const linkId = hash.subarray(0, 8).toString('hex');
    const at = ctx.now();
    const link: StoredLink = { t: tenant, id: linkId, node: node.id, perm, by: createdBy, at, exp: expiresMs };
    tx.put(keys.link(hash), json(link));
    tx.put(keys.linkOfNode(tenant, node.id, linkId), json({ h: hash.toString('hex') }));
    return { token, tenant, linkId, path, nodeId: node.id, permission: perm, createdBy, createdMs: at, expiresMs };
  });
}

/** What a link token opens; unknown, revoked, expired and dangling links are all CAIRN_NOT_FOUND. */
export async function resolveLink(ctx: ModelContext, token: string): Promise<LinkRecord> {
  if (typeof token !== 'string' || !LINK_TOKEN.test(token)) throw new CairnError('CAIRN_NOT_FOUND', 'unknown or expired link');
  return ctx.kv.transact(async (tx) => {
    const link = await readJson<StoredLink>(tx, keys.link(tokenHash(token)));
    const gone = new CairnError('CAIRN_NOT_FOUND', 'unknown or expired link');
    if (link === undefined || (link.exp !== 0 && link.exp <= ctx.now())) throw gone;
    const path = await pathOf(tx, link.t, link.node);
    if (path === undefined || !(await isLive(tx, link.t, link.node))) throw gone;
    return { tenant: link.t, linkId: link.id, path, nodeId: link.node, permission: link.perm, createdBy: link.by, createdMs: link.at, expiresMs: link.exp };
  });
}

export async function listLinks(ctx: ModelContext, tenant: string, rawPath: string, limit = 1000): Promise<LinkRecord[]> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  return ctx.kv.transact(async (tx) => {
    const { node } = await mustLookup(tx, tenant, path);
    const out: LinkRecord[] = [];
    for (const [, v] of await tx.scan({ ...under('K', tenant, node.id), limit })) {
      const link = await readJson<StoredLink>(tx, keys.link(Buffer.from(parseJson<{ h: string }>(v).h, 'hex')));
      if (link !== undefined) out.push({ tenant, linkId: link.id, path, nodeId: node.id, permission: link.perm, createdBy: link.by, createdMs: link.at, expiresMs: link.exp });
    }
    return out;
  });
}

export async function revokeLink(ctx: ModelContext, tenant: string, rawPath: string, linkId: string): Promise<void> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  if (typeof linkId !== 'string' || !LINK_ID.test(linkId)) throw invalid('link_id', 'link_id must be 16 hex digits');
  await ctx.write(tenant, async (tx) => {
    const { node } = await mustLookup(tx, tenant, path);
    const ref = await readJson<{ h: string }>(tx, keys.linkOfNode(tenant, node.id, linkId));
    if (ref === undefined) throw notFound(`${path} has no link ${linkId}`);
    tx.del(keys.link(Buffer.from(ref.h, 'hex')));
    tx.del(keys.linkOfNode(tenant, node.id, linkId));
  });
}

/** Removes every grant and link of a node (it is being purged), inside the caller's transaction. */
export async function dropShares(tx: KvTx, tenant: string, id: string): Promise<void> {
  const grants = under('g', tenant, id);
  for (const [k] of await tx.scan(grants)) {
    const user = k.subarray(grants.gt.length).toString('utf8');
    tx.del(k);
    tx.del(keys.grantOfUser(tenant, user, id));
  }
  for (const [k, v] of await tx.scan(under('K', tenant, id))) {
    tx.del(k);
    tx.del(keys.link(Buffer.from(parseJson<{ h: string }>(v).h, 'hex')));
  }
}
