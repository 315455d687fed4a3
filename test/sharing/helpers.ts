// Shared helpers of the sharing tests: tokens minted with a server's signing secret, SDK clients
// for a tenant (optionally acting on another tenant's shares), and random files.
import { randomBytes } from 'node:crypto';
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
