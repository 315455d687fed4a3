// Shared helpers of the sharing tests: tokens minted with a server's signing secret, SDK clients
// for a tenant (optionally acting on another tenant's shares), and random files.
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { loadOrCreateSecret, signToken, type Role } from '../../src/common/auth.js';
import { CairnClient, type FileInfo } from '../../src/client/index.js';
import { CairnSharing, sharedTreeOptions } from '../../src/client/sharing.js';
import type { Scope } from '../helpers/cluster.js';

export interface Endpoints {
  readonly grpc: string;
  readonly http: string;
  readonly secret: Uint8Array;
}

export function secretOf(dataDir: string): Uint8Array {
  return loadOrCreateSecret(join(dataDir, 'auth.key'));
}

export function mint(secret: Uint8Array, tenant: string, role: Role = 'user', subject?: string): Promise<string> {
  return signToken(secret, { tenant, role, ttlSeconds: 3600, ...(subject !== undefined ? { subject } : {}) });
}

/** An SDK client (files) and a sharing client for one token; `owner` makes Files calls act on that tenant's shares. */
export function clientsFor(t: Scope, e: Endpoints, token: string, owner?: string): { files: CairnClient; sharing: CairnSharing } {
  const settings = { endpoint: e.grpc, token };
  const files = new CairnClient(settings, owner === undefined ? {} : sharedTreeOptions(owner));
  const sharing = new CairnSharing(settings, owner === undefined ? {} : { owner });
  t.teardown(() => {
    files.close();
    sharing.close();
  });
  return { files, sharing };
}

export function putBytes(c: CairnClient, path: string, data: Buffer, baseVersion?: number): Promise<FileInfo> {
  return c.putStream(Readable.from([data]), path, { size: data.length, ...(baseVersion !== undefined ? { baseVersion } : {}) });
}

export async function readAll(c: CairnClient, path: string, version = 0): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of c.read(path, { version })) if ('data' in part) parts.push(part.data);
  return Buffer.concat(parts);
}

export function random(size: number): Buffer {
  return randomBytes(size);
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  readonly body: Buffer;
  json(): unknown;
}

/**
 * One HTTP request on its own connection (no keep-alive: on a loaded machine a reused idle
 * socket can be closed by the server just as a request is written, which says nothing about
 * the server). A body given as an iterable of pieces is sent chunked.
 */
export function request(url: string | URL, init: { method?: string; headers?: Record<string, string>; body?: Buffer | string | Iterable<Buffer> } = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpRequest({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: init.method ?? 'GET', headers: init.headers ?? {}, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(parts);
        resolve({
          status: res.statusCode ?? 0,
          headers: { get: (name) => { const v = res.headers[name.toLowerCase()]; return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v; } },
          body,
          json: () => JSON.parse(body.toString('utf8')) as unknown,
        });
      });
    });
    req.on('error', reject);
    const b = init.body;
    if (b === undefined) req.end();
    else if (typeof b === 'string' || Buffer.isBuffer(b)) req.end(b);
    else {
      for (const piece of b) req.write(piece);
      req.end();
    }
  });
}
