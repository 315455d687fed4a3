// The SDK's local chunk cache: per remote path, the chunk list of the version last synced from
// this machine, and the uploads of an interrupted put, so edits send only new chunks and a diff.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface CachedChunk {
  /** Plain SHA-256, hex. */
  readonly h: string;
  /** Plain size. */
  readonly s: number;
}

export interface CacheEntry {
  readonly endpoint: string;
  readonly tenant: string;
  readonly path: string;
  /** The remote version `chunks` describes (0: none committed from here yet). */
  readonly version: number;
  readonly chunks: readonly CachedChunk[];
  /** An upload that has not committed yet: its upload ids (pins to release at commit). */
  readonly pending?: { readonly size: number; readonly mtimeMs: number; readonly uploadIds: readonly string[] };
}

/** $XDG_CACHE_HOME/cairn, else ~/.cache/cairn. */
export function defaultCacheDir(): string {
  const xdg = process.env['XDG_CACHE_HOME'];
  return join(xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.cache'), 'cairn');
}

/** The tenant a bearer token names (read, not verified: only used to keep caches apart). */
export function tokenTenant(token: string): string {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { tenant?: unknown };
    if (typeof payload.tenant === 'string') return payload.tenant;
  } catch {
    // not a JWT: fall through
  }
  return 'token-' + createHash('sha256').update(token).digest('hex').slice(0, 16);
}

export class ChunkCache {
  readonly file: string;
  readonly #dir: string;
  readonly #key: { endpoint: string; tenant: string; path: string };

  constructor(dir: string, endpoint: string, tenant: string, remotePath: string) {
    this.#dir = join(dir, 'chunks');
    this.#key = { endpoint, tenant, path: remotePath };
    this.file = join(this.#dir, createHash('sha256').update(`${endpoint}\0${tenant}\0${remotePath}`).digest('hex') + '.json');
  }

  /** The entry, or undefined when there is none or it is unreadable (a cache may always be lost). */
  async load(): Promise<CacheEntry | undefined> {
    try {
      const e = JSON.parse(await readFile(this.file, 'utf8')) as CacheEntry;
      if (e.endpoint !== this.#key.endpoint || e.tenant !== this.#key.tenant || e.path !== this.#key.path || !Array.isArray(e.chunks)) return undefined;
      return e;
    } catch {
      return undefined;
    }
  }

  async save(entry: Omit<CacheEntry, 'endpoint' | 'tenant' | 'path'>): Promise<void> {
    await mkdir(this.#dir, { recursive: true });
    const tmp = `${this.file}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(tmp, JSON.stringify({ ...this.#key, ...entry }));
    await rename(tmp, this.file);
  }

  async clear(): Promise<void> {
    await rm(this.file, { force: true });
  }
}
