// Signed bearer tokens (HS256 JWTs via jose) naming a tenant and a role, and the per-role
// permission check every gRPC call goes through.
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { CairnError } from './errors.js';

export const ROLES = ['reader', 'user', 'admin', 'service'] as const;
export type Role = (typeof ROLES)[number];

/** What a call may do: reading needs `read`, changing data `write`, internal APIs `service`. */
export type Permission = 'read' | 'write' | 'admin' | 'service';

const GRANTS: Readonly<Record<Role, readonly Permission[]>> = {
  reader: ['read'],
  user: ['read', 'write'],
  admin: ['read', 'write', 'admin'],
  service: ['service'],
};

export interface Principal {
  readonly tenant: string;
  readonly role: Role;
  readonly subject: string;
}

const ISSUER = 'cairn';
const AUDIENCE = 'cairn';
const TENANT_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

export function validateTenant(tenant: string): void {
  if (!TENANT_RE.test(tenant)) throw new CairnError('CAIRN_INVALID_ARGUMENT', `invalid tenant "${tenant}": use 1-63 of a-z, 0-9 and "-", starting with a letter or digit`);
}

export function can(principal: Principal, permission: Permission): boolean {
  return GRANTS[principal.role].includes(permission);
}

/** Loads the signing secret, creating it (0600, exclusively) on first start. */
export function loadOrCreateSecret(path: string): Uint8Array {
  const read = (): Uint8Array | undefined => {
    try {
      const text = readFileSync(path, 'utf8').trim();
      const secret = Buffer.from(text, 'base64url');
      if (secret.length < 32) throw new CairnError('CAIRN_FAILED_PRECONDITION', `auth secret in ${path} is shorter than 32 bytes`);
      return secret;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return undefined;
    }
  };
  const existing = read();
  if (existing !== undefined) return existing;
  const secret = randomBytes(32);
  if (createFileExclusive(path, secret.toString('base64url') + '\n', 0o600)) return secret;
  // Another process created it first: everyone uses that one.
  const winner = read();
  if (winner === undefined) throw new CairnError('CAIRN_INTERNAL', `auth secret ${path} vanished while being created`);
  return winner;
}

/**
 * Creates `path` with `content` only if it does not exist yet, durably and completely (a synced
 * temp file hard-linked into place); false when the name was taken. Processes that start
 * together on one fresh key file thus agree on the first one's key, where a rename would let
 * each keep its own.
 */
export function createFileExclusive(path: string, content: string, mode = 0o600): boolean {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', mode);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** Writes a file so that readers see either the old or the whole new content, durably. */
export function writeFileAtomic(path: string, content: string, mode = 0o644): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, content, { mode });
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

export interface TokenOptions {
  readonly tenant: string;
  readonly role: Role;
  readonly subject?: string;
  /** Lifetime in seconds; default 30 days. */
  readonly ttlSeconds?: number;
}

export async function signToken(secret: Uint8Array, options: TokenOptions): Promise<string> {
  validateTenant(options.tenant);
  if (!ROLES.includes(options.role)) throw new TypeError(`options.role must be one of ${ROLES.join(', ')}`);
  const ttl = options.ttlSeconds ?? 30 * 24 * 3600;
  if (!Number.isInteger(ttl) || ttl <= 0) throw new RangeError('options.ttlSeconds must be a positive integer');
  return new SignJWT({ tenant: options.tenant, role: options.role })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(options.subject ?? `${options.role}@${options.tenant}`)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttl)
    .sign(secret);
}

/** Verified tokens per secret, until they expire: every call of a stream of calls carries the same token. */
const verified = new WeakMap<Uint8Array, Map<string, { principal: Principal; expiresAtMs: number }>>();
const VERIFIED_MAX = 4096;

export async function verifyToken(secret: Uint8Array, token: string): Promise<Principal> {
  let cache = verified.get(secret);
  const hit = cache?.get(token);
  if (hit !== undefined) {
    if (Date.now() < hit.expiresAtMs) return hit.principal;
    cache?.delete(token);
  }
  try {
    const { payload } = await jwtVerify(token, secret, { issuer: ISSUER, audience: AUDIENCE, algorithms: ['HS256'] });
    const tenant = payload['tenant'];
    const role = payload['role'];
    if (typeof tenant !== 'string' || !TENANT_RE.test(tenant) || typeof role !== 'string' || !(ROLES as readonly string[]).includes(role)) {
      throw new CairnError('CAIRN_UNAUTHENTICATED', 'token lacks a valid tenant or role');
    }
    const principal: Principal = Object.freeze({ tenant, role: role as Role, subject: payload.sub ?? '' });
    // HS256 over the same bytes verifies the same way until `exp`; a token without one (or not
    // yet valid: nbf) is verified every time.
    if (typeof payload.exp === 'number' && (payload.nbf === undefined || payload.nbf * 1000 <= Date.now())) {
      if (cache === undefined) verified.set(secret, (cache = new Map<string, { principal: Principal; expiresAtMs: number }>()));
      if (cache.size >= VERIFIED_MAX) cache.delete(cache.keys().next().value as string);
      cache.set(token, { principal, expiresAtMs: payload.exp * 1000 });
    }
    return principal;
  } catch (err) {
    if (err instanceof CairnError) throw err;
    if (err instanceof joseErrors.JWTExpired) throw new CairnError('CAIRN_TOKEN_EXPIRED', 'token expired');
    throw new CairnError('CAIRN_UNAUTHENTICATED', 'invalid token');
  }
}

/** Mints short-lived service tokens for internal calls and renews them before they expire. */
export class ServiceTokenSource {
  #secret: Uint8Array;
  #token: string | undefined;
  #expiresAt = 0;
  constructor(secret: Uint8Array) {
    this.#secret = secret;
  }
  async token(): Promise<string> {
    if (this.#token === undefined || Date.now() > this.#expiresAt - 3600_000) {
      this.#token = await signToken(this.#secret, { tenant: 'system', role: 'service', subject: 'cairn-service', ttlSeconds: 24 * 3600 });
      this.#expiresAt = Date.now() + 24 * 3600_000;
    }
    return this.#token;
  }
}
