// Shares on the public API: the Sharing service (Share, Unshare, ListShares, Presign) over the
// metadata share model, and the guard every gateway call passes: per-tenant rate limits, and
// acting on another tenant's shared subtree (x-cairn-tenant) only as far as its grants allow.
import type * as grpc from '@grpc/grpc-js';
import { can, validateTenant, type Permission, type Principal, type Role } from '../common/auth.js';
import { CairnError } from '../common/errors.js';
import { contextOf, principalOf, unary, type CallContext } from '../common/grpc-server.js';
import type { Logger } from '../common/log.js';
import { normalizePath } from '../common/paths.js';
import { toServiceError } from '../common/status.js';
import { EncodedMessage, wireInt } from '../common/wire.js';
import type { LinkShare__Output } from '../gen/cairn/v1/LinkShare.js';
import type { ShareAccess } from '../gen/cairn/v1/ShareAccess.js';
import type { ShareGrant__Output } from '../gen/cairn/v1/ShareGrant.js';
import type { ShareInfo } from '../gen/cairn/v1/ShareInfo.js';
import type { SharePermission__Output } from '../gen/cairn/v1/SharePermission.js';
import type { SharingHandlers } from '../gen/cairn/v1/Sharing.js';
import type { MetadataClient } from '../metadata/index.js';
import type { TenantLimiter } from './limits.js';
import { DEFAULT_PRESIGN_SECONDS, MAX_PRESIGN_SECONDS, signedPathAndQuery, type PresignClaims } from './presign.js';

/** gRPC metadata naming the tenant whose shared tree a call acts on (absent: the caller's own). */
export const OWNER_HEADER = 'x-cairn-tenant';
export const LINK_PREFIX = '/v1/links/';
const DEFAULT_LINK_SECONDS = 7 * 24 * 3600;
const MAX_LINK_SECONDS = 365 * 24 * 3600;
const USER_ID = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/;

export type Access = 'none' | 'read' | 'write';

function rank(a: Access): number {
  return a === 'write' ? 2 : a === 'read' ? 1 : 0;
}

function fromWire(p: SharePermission__Output): Access {
  return p === 'SHARE_PERMISSION_WRITE' ? 'write' : p === 'SHARE_PERMISSION_READ' ? 'read' : 'none';
}

function toWireAccess(p: SharePermission__Output): ShareAccess {
  return p === 'SHARE_PERMISSION_WRITE' ? 'SHARE_ACCESS_WRITE' : p === 'SHARE_PERMISSION_READ' ? 'SHARE_ACCESS_READ' : 'SHARE_ACCESS_UNSPECIFIED';
}

function denied(message: string): CairnError {
  return new CairnError('CAIRN_PERMISSION_DENIED', message);
}

/**
 * The user id a principal of another tenant holds grants under in the owner's tenant:
 * "<subject>@<tenant>". Tenants contain no "@", so the last "@" splits it back unambiguously.
 */
export function granteeOf(p: Pick<Principal, 'tenant' | 'subject'>): string {
  const id = `${p.subject}@${p.tenant}`;
  if (!USER_ID.test(id)) throw denied(`token subject "${p.subject.slice(0, 64)}" cannot hold shares: use 1-128 of letters, digits and . _ @ + -`);
  return id;
}

/** "<tenant>/<subject>" (what users type) → the grantee id. */
export function parseRecipient(raw: string): { tenant: string; id: string } {
  const slash = raw.indexOf('/');
  const bad = (why: string): CairnError => new CairnError('CAIRN_INVALID_ARGUMENT', `invalid user "${raw.slice(0, 64)}": ${why}`, { fieldViolations: [{ field: 'user', description: why }] });
  if (slash <= 0) throw bad('use <tenant>/<token subject>');
  const tenant = raw.slice(0, slash);
  const subject = raw.slice(slash + 1);
  try {
    validateTenant(tenant);
  } catch {
    throw bad('the tenant is not a valid tenant name');
  }
  const id = `${subject}@${tenant}`;
  if (!USER_ID.test(id)) throw bad('the subject must be 1-128 of letters, digits and . _ @ + -, starting with a letter or digit');
  return { tenant, id };
}

/** The grantee id shown to users: "alice@b" → "b/alice" (ids without "@" unchanged). */
export function displayUser(id: string): string {
  const at = id.lastIndexOf('@');
  return at <= 0 ? id : `${id.slice(at + 1)}/${id.slice(0, at)}`;
}

/** Answers "may this grantee do `need` at `path` of `owner`" from the metadata service, every time (revocation is immediate). */
export class ShareChecker {
  readonly #metadata: MetadataClient;
  constructor(metadata: MetadataClient) {
    this.#metadata = metadata;
  }

  async access(owner: string, path: string, grantee: string, requestId?: string): Promise<Access> {
    if (path === '/') return 'none'; // nothing grants the root
    const res = await this.#metadata.checkAccess({ tenant: owner, path, user: grantee }, requestId);
    return fromWire(res.permission);
  }

  /** Throws PERMISSION_DENIED unless every path is allowed; returns the weakest access held. */
  async require(owner: string, needs: ReadonlyArray<readonly [string, Access]>, grantee: string, requestId?: string): Promise<Access> {
    let held: Access = 'write';
    for (const [path, need] of needs) {
      const a = await this.access(owner, path, grantee, requestId);
      // Same answer whether the path exists or not: nothing outside a share is revealed.
      if (rank(a) < rank(need)) throw denied(`${path} of tenant ${owner} is not shared with you${need === 'write' && a === 'read' ? ' for writing' : ''}`);
      if (rank(a) < rank(held)) held = a;
    }
    return held;
  }
}

// ---------------------------------------------------------------------------------------------
// The guard: wraps every service of the gateway.

/** What a method touches when called on another tenant's tree: (path, access) pairs. */
export type ShareRule = ((req: Record<string, unknown>) => Array<readonly [string, Access]>) | 'upload';

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}
const file = (field: string, need: Access) => (req: Record<string, unknown>): readonly [string, Access] => [normalizePath(req[field]), need];
const folder = (field: string) => (req: Record<string, unknown>): readonly [string, Access] => {
  const raw = str(req[field]);
  return [raw === '' || raw === '/' ? '/' : normalizePath(raw), 'read'];
};

/** Files methods a share recipient may call, and on what; every other method is owner-only. */
export const FILES_SHARE_RULES: Readonly<Record<string, ShareRule>> = Object.freeze({
  ReadFile: (r) => [file('path', 'read')(r)],
  Stat: (r) => [file('path', 'read')(r)],
  ListVersions: (r) => [file('path', 'read')(r)],
  List: (r) => [folder('path')(r)],
  Usage: (r) => [folder('path')(r)],
  Mkdir: (r) => [file('path', 'write')(r)],
  Delete: (r) => [file('path', 'write')(r)],
  RestoreVersion: (r) => [file('path', 'write')(r)],
  Move: (r) => [file('from_path', 'write')(r), file('to_path', 'write')(r)],
  Copy: (r) => [file('from_path', 'read')(r), file('to_path', 'write')(r)],
  UploadFile: 'upload',
});

/** Where a method of an extension service names the path it touches. */
export interface ShareTarget {
  /** The request field holding the path. */
  readonly field: string;
  /** The path is a folder: "" and "/" mean the root (which nothing grants). */
  readonly folder?: boolean;
}

/**
 * Share rules for an extension service (e.g. Media), derived from the permissions the methods
 * declare at registration: a `read` method needs a read (or write) share on its path; any other
 * permission needs a write share, so a read share never passes a method that changes anything.
 * Methods not named in `targets` stay owner-only. A target for a method without a declared
 * permission is a programming error, refused at startup.
 */
export function shareRulesFor(permissions: Readonly<Record<string, Permission>>, targets: Readonly<Record<string, ShareTarget>>): Readonly<Record<string, ShareRule>> {
  const rules: Record<string, ShareRule> = {};
  for (const [method, target] of Object.entries(targets)) {
    const permission = permissions[method];
    if (permission === undefined) throw new Error(`share rule for ${method}, which declares no permission`);
    if (permission === 'admin' || permission === 'service') throw new Error(`${method} needs ${permission}: such methods are never available on shares`);
    const need: Access = permission === 'read' ? 'read' : 'write';
    rules[method] = target.folder === true && need === 'read' ? (r) => [folder(target.field)(r)] : (r) => [file(target.field, need)(r)];
  }
  return Object.freeze(rules);
}

export const SHARING_SHARE_RULES: Readonly<Record<string, ShareRule>> = Object.freeze({
  Presign: (r) => [file('path', r['method'] === 'PRESIGN_METHOD_PUT' ? 'write' : 'read')(r)],
});

/** Set on calls acting on another tenant's share: who is really calling. */
export interface Acting {
  readonly owner: string;
  readonly grantee: string;
  readonly caller: Principal;
  readonly access: Access;
}
const acting = new WeakMap<CallContext, Acting>();

export function actingOf(ctx: CallContext): Acting | undefined {
  return acting.get(ctx);
}

export interface GuardOptions {
  readonly checker: ShareChecker;
  readonly limiter: TenantLimiter;
  readonly log: Logger;
}

type AnyCall = grpc.ServerUnaryCall<unknown, unknown> & grpc.ServerReadableStream<unknown, unknown> & grpc.ServerWritableStream<unknown, unknown>;
type AnyHandler = (call: AnyCall, callback?: grpc.sendUnaryData<unknown>) => void;

function statusOf(err: unknown, log: Logger): ReturnType<typeof toServiceError> {
  if (err instanceof CairnError) return toServiceError(err);
  log.error({ err }, 'unhandled error in gateway guard');
  return toServiceError(new CairnError('CAIRN_INTERNAL', 'internal error'));
}

/** Bytes a message carries: `data`, or the `data` of its `chunks`. */
function payloadBytes(msg: unknown): number {
  if (typeof msg !== 'object' || msg === null) return 0;
  if (msg instanceof EncodedMessage) return msg.payloadBytes;
  const m = msg as { data?: unknown; chunks?: unknown };
  let n = Buffer.isBuffer(m.data) ? m.data.length : 0;
  if (Array.isArray(m.chunks)) for (const c of m.chunks as Array<{ data?: unknown }>) if (Buffer.isBuffer(c?.data)) n += c.data.length;
  return n;
}

/** A view of `call` whose own members are replaced; everything else is the call's, bound to it. */
function overlay<T extends object>(call: T, own: Record<PropertyKey, unknown>): T {
  return new Proxy(call, {
    get(target, prop) {
      if (Object.hasOwn(own, prop)) return own[prop];
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

function effectiveRole(caller: Principal, access: Access): Role {
  return access === 'write' && can(caller, 'write') ? 'user' : 'reader';
}

/**
 * Wraps a service implementation: every call is admitted by the caller's tenant's rate limit;
 * a call with x-cairn-tenant naming another tenant runs as that tenant only if `rules` allow
 * the method and the caller's grants cover its paths (the handler then sees the owner tenant,
 * and the grantee as subject). Streams are paced by the caller's byte budget.
 */
export function guardService<I extends grpc.UntypedServiceImplementation>(definition: grpc.ServiceDefinition, implementation: I, rules: Readonly<Record<string, ShareRule>>, options: GuardOptions): I {
  const { checker, limiter, log } = options;
  const out: grpc.UntypedServiceImplementation = {};

  /** Rate limit, then (cross-tenant) the share check; `first` is the request or first message. */
  const prepare = async (method: string, call: AnyCall, first: unknown, haveFirst: boolean): Promise<CallContext> => {
    const ctx = contextOf(call);
    const caller = principalOf(ctx);
    limiter.admit(caller.tenant);
    const owner = call.metadata.get(OWNER_HEADER)[0];
    if (owner === undefined || owner === '' || owner === caller.tenant) return ctx;
    if (typeof owner !== 'string') throw new CairnError('CAIRN_INVALID_ARGUMENT', `${OWNER_HEADER} must be a tenant name`);
    validateTenant(owner);
    const rule = rules[method];
    if (rule === undefined || (rule === 'upload' && !haveFirst)) throw denied(`${method} is not available on another tenant's shares`);
    const grantee = granteeOf(caller);
    let needs: Array<readonly [string, Access]>;
    if (rule === 'upload') {
      const header = (first as { header?: { path?: unknown } | null } | undefined)?.header;
      if (header == null) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'the first UploadFile message must be a header');
      needs = [[normalizePath(header.path), 'write']];
    } else {
      needs = rule((first ?? {}) as Record<string, unknown>);
    }
    const access = await checker.require(owner, needs, grantee, ctx.requestId);
    // Handlers read the tenant from ctx.principal; from here on the call acts in the owner's tree,
    // with no more than the caller's role and the share allow.
    Object.assign(ctx, { principal: { tenant: owner, role: effectiveRole(caller, access), subject: grantee } satisfies Principal });
    acting.set(ctx, { owner, grantee, caller, access });
    ctx.log.debug({ owner, grantee, method }, 'call on a shared tree');
    return ctx;
  };

  const paced = (call: AnyCall, tenant: string): AnyCall => {
    if (!limiter.pacesBytes) return call;
    return overlay(call, {
      write: (msg: unknown, ...rest: unknown[]): boolean => {
        const ok = (call.write as (...a: unknown[]) => boolean)(msg, ...rest);
        const wait = limiter.charge(tenant, payloadBytes(msg));
        if (wait <= 0) return ok;
        // Looks like backpressure to the writer: it waits for 'drain', which comes when the debt is paid.
        setTimeout(() => call.emit('drain'), wait).unref();
        return false;
      },
    });
  };

  /** The call with an iterator that yields `head` (already read) first and paces every message. */
  const reading = (call: AnyCall, tenant: string, head: IteratorResult<unknown> | undefined, first: AsyncIterator<unknown> | undefined, signal: AbortSignal): AnyCall => {
    let pending = head;
    let source = first;
    const iterator: AsyncIterableIterator<unknown> = {
      async next() {
        source ??= (call as AsyncIterable<unknown>)[Symbol.asyncIterator]();
        const r = pending ?? (await source.next());
        pending = undefined;
        if (r.done !== true && limiter.pacesBytes) await limiter.pace(tenant, payloadBytes(r.value), signal);
        return r;
      },
      async return(value?: unknown) {
        await source?.return?.(value);
        return { done: true, value };
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return overlay(call, { [Symbol.asyncIterator]: () => iterator });
  };

  for (const [method, def] of Object.entries(definition)) {
    const handler = implementation[method] as unknown as AnyHandler | undefined;
    if (handler === undefined) continue;
    let wrapped: AnyHandler;
    if (def.requestStream) {
      wrapped = (call, callback) => {
        (async () => {
          // The upload rule needs the header message before the handler runs; otherwise the
          // stream is left alone until the handler reads it.
          const peek = call.metadata.get(OWNER_HEADER).length > 0 && rules[method] === 'upload';
          const source = peek ? (call as AsyncIterable<unknown>)[Symbol.asyncIterator]() : undefined;
          const head = source === undefined ? undefined : await source.next();
          const ctx = await prepare(method, call, head?.value, head !== undefined && head.done !== true);
          const payer = acting.get(ctx)?.caller.tenant ?? principalOf(ctx).tenant;
          const view = head !== undefined || limiter.pacesBytes ? reading(call, payer, head, source, ctx.signal) : call;
          handler(def.responseStream ? paced(view, payer) : view, callback);
        })().catch((err: unknown) => {
          const status = statusOf(err, log);
          if (callback !== undefined) callback(status);
          else call.emit('error', status);
          call.destroy();
        });
      };
    } else if (def.responseStream) {
      wrapped = (call) => {
        prepare(method, call, call.request, true).then(
          (ctx) => handler(paced(call, acting.get(ctx)?.caller.tenant ?? principalOf(ctx).tenant)),
          (err: unknown) => call.emit('error', statusOf(err, log)),
        );
      };
    } else {
      wrapped = (call, callback) => {
        prepare(method, call, call.request, true).then(
          () => handler(call, callback),
          (err: unknown) => callback?.(statusOf(err, log)),
        );
      };
    }
    out[method] = wrapped as unknown as grpc.UntypedHandleCall;
  }
  return out as I;
}

// ---------------------------------------------------------------------------------------------
// The Sharing service.

export interface SharingServiceOptions {
  readonly metadata: MetadataClient;
  readonly presignKey: Buffer;
  /** The gateway's public HTTP base URL ("https://files.example.com"), if known. */
  readonly httpUrl: () => string | undefined;
}

export const SHARING_PERMISSIONS = Object.freeze({
  Share: 'write',
  Unshare: 'write',
  ListShares: 'read',
  Presign: 'read',
} satisfies Record<string, Permission>);

function accessOf(a: ShareAccess | undefined, field = 'access'): 'SHARE_PERMISSION_READ' | 'SHARE_PERMISSION_WRITE' {
  if (a === 'SHARE_ACCESS_READ' || a === 1) return 'SHARE_PERMISSION_READ';
  if (a === 'SHARE_ACCESS_WRITE' || a === 2) return 'SHARE_PERMISSION_WRITE';
  throw new CairnError('CAIRN_INVALID_ARGUMENT', `${field} must be READ or WRITE`, { fieldViolations: [{ field, description: 'unspecified' }] });
}

function seconds(raw: unknown, field: string, fallback: number, max: number): number {
  const v = wireInt(raw as string, field);
  if (v === 0) return fallback;
  if (v > max) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${field} must be at most ${max}`, { fieldViolations: [{ field, description: `at most ${max}` }] });
  return v;
}

function grantInfo(tenant: string, g: ShareGrant__Output): ShareInfo {
  return { path: g.path, tenant, user: displayUser(g.user), link_id: '', access: toWireAccess(g.permission), created_by: g.granted_by, created_ms: g.created_ms, expires_ms: 0 };
}

function linkInfo(l: LinkShare__Output): ShareInfo {
  return { path: l.path, tenant: l.tenant, user: '', link_id: l.link_id, access: toWireAccess(l.permission), created_by: l.created_by, created_ms: l.created_ms, expires_ms: l.expires_ms };
}

function withBase(base: string | undefined, pathAndQuery: string): string {
  return base === undefined || base === '' ? pathAndQuery : base.replace(/\/+$/, '') + pathAndQuery;
}

/** Share, Unshare, ListShares and Presign. Share recipients reach Presign only (see SHARING_SHARE_RULES). */
export function sharingHandlers(options: SharingServiceOptions): SharingHandlers {
  const { metadata } = options;
  return {
    Share: unary(async (req, ctx) => {
      const p = principalOf(ctx);
      const path = normalizePath(req.path);
      if (req.link === (req.user !== '')) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give exactly one of user and link', { fieldViolations: [{ field: 'user', description: 'exactly one of user and link' }] });
      const permission = accessOf(req.access);
      if (req.link) {
        const ttl = seconds(req.expires_in_seconds, 'expires_in_seconds', DEFAULT_LINK_SECONDS, MAX_LINK_SECONDS);
        const res = await metadata.createLinkShare({ tenant: p.tenant, path, permission, expires_ms: Date.now() + ttl * 1000, created_by: p.subject }, ctx.requestId);
        if (res.link === null) throw new CairnError('CAIRN_INTERNAL', 'CreateLinkShare returned no link');
        ctx.log.info({ path, linkId: res.link.link_id, permission }, 'link share created');
        return { share: linkInfo(res.link), link_token: res.token, link_url: withBase(options.httpUrl(), LINK_PREFIX + res.token) };
      }
      if (req.expires_in_seconds !== '0' && req.expires_in_seconds !== undefined && Number(req.expires_in_seconds) !== 0) {
        throw new CairnError('CAIRN_INVALID_ARGUMENT', 'expires_in_seconds applies to links only', { fieldViolations: [{ field: 'expires_in_seconds', description: 'links only' }] });
      }
      const recipient = parseRecipient(req.user);
      if (recipient.tenant === p.tenant) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${req.user} is in your own tenant: its token's role already decides its access`, { fieldViolations: [{ field: 'user', description: 'same tenant' }] });
      const res = await metadata.grantShare({ tenant: p.tenant, path, user: recipient.id, permission, granted_by: p.subject }, ctx.requestId).catch(async (err: unknown) => {
        // NOT_FOUND is the path or the grantee; name which, and how to register a grantee.
        if (!(err instanceof CairnError) || err.code !== 'CAIRN_NOT_FOUND') throw err;
        const entry = await metadata.getEntry({ tenant: p.tenant, path }, ctx.requestId).catch(() => undefined);
        if (entry?.entry == null || entry.entry.deleted) throw err;
        throw new CairnError('CAIRN_NOT_FOUND', `${req.user} is not a user of tenant ${p.tenant}: an admin of ${p.tenant} registers it first (cairn admin user create ${recipient.id} --tenant ${p.tenant}, or Admin.CreateUser)`, { metadata: { user: recipient.id } });
      });
      if (res.grant === null) throw new CairnError('CAIRN_INTERNAL', 'GrantShare returned no grant');
      ctx.log.info({ path, user: recipient.id, permission }, 'share granted');
      return { share: grantInfo(p.tenant, res.grant), link_token: '', link_url: '' };
    }),

    Unshare: unary(async (req, ctx) => {
      const p = principalOf(ctx);
      const path = normalizePath(req.path);
      if ((req.user === '') === (req.link_id === '')) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give exactly one of user and link_id', { fieldViolations: [{ field: 'user', description: 'exactly one of user and link_id' }] });
      if (req.link_id !== '') await metadata.revokeLinkShare({ tenant: p.tenant, path, link_id: req.link_id }, ctx.requestId);
      else await metadata.revokeShare({ tenant: p.tenant, path, user: parseRecipient(req.user).id }, ctx.requestId);
      ctx.log.info({ path, user: req.user, linkId: req.link_id }, 'share revoked');
      return {};
    }),

    ListShares: unary(async (req, ctx) => {
      const p = principalOf(ctx);
      if ((req.path === '') === (req.owner === '')) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give exactly one of path and owner', { fieldViolations: [{ field: 'path', description: 'exactly one of path and owner' }] });
      if (req.owner !== '') {
        validateTenant(req.owner);
        const res = await metadata.listShares({ tenant: req.owner, user: granteeOf(p), page_size: req.page_size, page_token: req.page_token }, ctx.requestId);
        return { shares: res.grants.map((g) => grantInfo(req.owner, g)), next_page_token: res.next_page_token };
      }
      if (req.page_token !== '') throw new CairnError('CAIRN_INVALID_PAGE_TOKEN', 'the shares of a path come in one page');
      const path = normalizePath(req.path);
      const [grants, links] = await Promise.all([
        metadata.listShares({ tenant: p.tenant, path }, ctx.requestId),
        metadata.listLinkShares({ tenant: p.tenant, path }, ctx.requestId),
      ]);
      return { shares: [...grants.grants.map((g) => grantInfo(p.tenant, g)), ...links.links.map(linkInfo)], next_page_token: '' };
    }),

    Presign: unary(async (req, ctx) => {
      const p = principalOf(ctx);
      const path = normalizePath(req.path);
      const method = req.method === 'PRESIGN_METHOD_GET' ? 'GET' : req.method === 'PRESIGN_METHOD_PUT' ? 'PUT' : undefined;
      if (method === undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'method must be GET or PUT', { fieldViolations: [{ field: 'method', description: 'unspecified' }] });
      if (method === 'PUT' && !can(p, 'write')) throw denied(`role ${p.role} may not presign uploads`);
      const ttl = seconds(req.expires_in_seconds, 'expires_in_seconds', DEFAULT_PRESIGN_SECONDS, MAX_PRESIGN_SECONDS);
      const version = wireInt(req.version, 'version');
      if (method === 'PUT' && version !== 0) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'version applies to GET URLs only', { fieldViolations: [{ field: 'version', description: 'GET only' }] });
      // A GET of something that is not there fails now rather than when the URL is used.
      if (method === 'GET') {
        const v = await metadata.getFile({ tenant: p.tenant, path, version, max_chunks: 1 }, ctx.requestId);
        if (v.deleted) throw new CairnError('CAIRN_NOT_FOUND', `${path} is deleted`);
      }
      const expires = Math.ceil(Date.now() / 1000) + ttl;
      const claims: PresignClaims = { method, tenant: p.tenant, path, version, expires, user: actingOf(ctx)?.grantee ?? '' };
      const pathAndQuery = signedPathAndQuery(options.presignKey, claims);
      ctx.log.info({ path, method, expires }, 'URL presigned');
      return { url: withBase(options.httpUrl(), pathAndQuery), path_and_query: pathAndQuery, expires_ms: expires * 1000 };
    }),
  };
}
