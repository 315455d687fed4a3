// Files and versions over the KV: a commit is one serializable transaction that checks the
// base version, records chunk-index entries and refs, writes the version and appends a change.
import { createHash } from 'node:crypto';
import { validateTenant } from '../../common/auth.js';
import { CairnError } from '../../common/errors.js';
import { normalizePath } from '../../common/paths.js';
import type { Kv, KvTx } from '../kv/types.js';
import { changeChannel, keys } from './keys.js';

export const DEFAULT_MAX_FILE_BYTES = 10 * 1024 ** 3;
const MAX_CHUNK_BYTES = 64 * 1024 * 1024;

export interface ChunkRecord {
  readonly plainHash: Buffer;
  readonly offset: number;
  readonly size: number;
  readonly address: Buffer;
  readonly storedSize: number;
}

export interface VersionRecord {
  readonly tenant: string;
  readonly path: string;
  readonly version: number;
  readonly size: number;
  readonly contentHash: Buffer;
  readonly mtimeMs: number;
  readonly createdMs: number;
  readonly authorDevice: string;
  readonly revision: number;
  readonly chunks: readonly ChunkRecord[];
}

export interface CommitInput {
  readonly tenant: string;
  readonly path: string;
  /** undefined = unconditional; 0 = must not exist; n = must be current. */
  readonly baseVersion?: number | undefined;
  readonly size: number;
  readonly mtimeMs: number;
  readonly authorDevice: string;
  readonly chunks: readonly ChunkRecord[];
}

interface StoredVersion {
  v: number;
  size: number;
  hash: string;
  mtime: number;
  created: number;
  device: string;
  rev: number;
  chunks: Array<[plain: string, offset: number, size: number, address: string, stored: number]>;
}

interface StoredChunk {
  address: string;
  plainSize: number;
  storedSize: number;
  refs: number;
}

function invalid(message: string, field: string): CairnError {
  return new CairnError('CAIRN_INVALID_ARGUMENT', message, { fieldViolations: [{ field, description: message }] });
}

/** Checks a commit's shape before any transaction runs, so bad input changes nothing. */
export function validateCommit(input: CommitInput, maxFileBytes = DEFAULT_MAX_FILE_BYTES): { path: string } {
  validateTenant(input.tenant);
  const path = normalizePath(input.path);
  if (!Number.isSafeInteger(input.size) || input.size < 0) throw invalid('size must be a non-negative integer', 'size');
  if (input.size > maxFileBytes) throw new CairnError('CAIRN_FILE_TOO_LARGE', `file of ${input.size} bytes exceeds the limit of ${maxFileBytes} bytes`);
  if (input.baseVersion !== undefined && (!Number.isSafeInteger(input.baseVersion) || input.baseVersion < 0)) throw invalid('base_version must be a non-negative integer', 'base_version');
  let offset = 0;
  input.chunks.forEach((c, i) => {
    if (c.plainHash.length !== 32) throw invalid(`chunks[${i}].plain_hash must be 32 bytes`, `chunks[${i}].plain_hash`);
    if (c.address.length !== 32) throw invalid(`chunks[${i}].address must be 32 bytes`, `chunks[${i}].address`);
    if (c.offset !== offset) throw invalid(`chunks[${i}].offset is ${c.offset}, expected ${offset} (chunks must be contiguous)`, `chunks[${i}].offset`);
    if (!Number.isInteger(c.size) || c.size <= 0 || c.size > MAX_CHUNK_BYTES) throw invalid(`chunks[${i}].size must be in 1..${MAX_CHUNK_BYTES}`, `chunks[${i}].size`);
    if (!Number.isInteger(c.storedSize) || c.storedSize <= 0 || c.storedSize > MAX_CHUNK_BYTES + 1024) throw invalid(`chunks[${i}].stored_size is out of range`, `chunks[${i}].stored_size`);
    offset += c.size;
  });
  if (offset !== input.size) throw invalid(`chunk sizes add up to ${offset}, not size ${input.size}`, 'size');
  return { path };
}

export function contentHash(chunks: readonly ChunkRecord[]): Buffer {
  const h = createHash('sha256');
  for (const c of chunks) h.update(c.plainHash);
  return h.digest();
}

async function readJson<T>(tx: Pick<KvTx, 'get'>, key: Buffer): Promise<T | undefined> {
  const raw = await tx.get(key);
  return raw === undefined ? undefined : (JSON.parse(raw.toString('utf8')) as T);
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

export async function commitFile(kv: Kv, input: CommitInput, maxFileBytes?: number): Promise<VersionRecord> {
  const { path } = validateCommit(input, maxFileBytes);
  const tenant = input.tenant;
  const hash = contentHash(input.chunks);
  return kv.transact(async (tx) => {
    const head = await readJson<{ v: number }>(tx, keys.head(tenant, path));
    const current = head?.v ?? 0;
    if (input.baseVersion !== undefined && input.baseVersion !== current) {
      throw new CairnError('CAIRN_CONFLICT', `${path} is at version ${current}, not ${input.baseVersion}`, { metadata: { current_version: String(current) } });
    }
    const revision = ((await readJson<number>(tx, keys.revision(tenant))) ?? 0) + 1;
    const refs = new Map<string, { chunk: ChunkRecord; count: number }>();
    for (const c of input.chunks) {
      const hex = c.plainHash.toString('hex');
      const e = refs.get(hex);
      if (e) e.count++;
      else refs.set(hex, { chunk: c, count: 1 });
    }
    for (const { chunk, count } of refs.values()) {
      const k = keys.chunk(tenant, chunk.plainHash);
      const entry = (await readJson<StoredChunk>(tx, k)) ?? { address: chunk.address.toString('hex'), plainSize: chunk.size, storedSize: chunk.storedSize, refs: 0 };
      entry.refs += count;
      tx.put(k, json(entry));
    }
    const createdMs = Date.now();
    const stored: StoredVersion = {
      v: current + 1,
      size: input.size,
      hash: hash.toString('hex'),
      mtime: input.mtimeMs > 0 ? input.mtimeMs : createdMs,
      created: createdMs,
      device: input.authorDevice,
      rev: revision,
      chunks: input.chunks.map((c) => [c.plainHash.toString('hex'), c.offset, c.size, c.address.toString('hex'), c.storedSize]),
    };
    tx.put(keys.version(tenant, path, stored.v), json(stored));
    tx.put(keys.head(tenant, path), json({ v: stored.v }));
    tx.put(keys.revision(tenant), json(revision));
    tx.put(keys.change(tenant, revision), json({ type: 'commit', path, version: stored.v, at: createdMs }));
    tx.notify(changeChannel(tenant), String(revision));
    return toRecord(tenant, path, stored);
  });
}

export async function getFile(kv: Kv, tenant: string, rawPath: string, version = 0): Promise<VersionRecord> {
  validateTenant(tenant);
  const path = normalizePath(rawPath);
  if (!Number.isSafeInteger(version) || version < 0) throw invalid('version must be a non-negative integer', 'version');
  let v = version;
  if (v === 0) {
    const head = await readJson<{ v: number }>(kv, keys.head(tenant, path));
    if (head === undefined) throw new CairnError('CAIRN_NOT_FOUND', `no file at ${path}`);
    v = head.v;
  }
  const stored = await readJson<StoredVersion>(kv, keys.version(tenant, path, v));
  if (stored === undefined) throw new CairnError('CAIRN_NOT_FOUND', version === 0 ? `no file at ${path}` : `${path} has no version ${version}`);
  return toRecord(tenant, path, stored);
}

function toRecord(tenant: string, path: string, s: StoredVersion): VersionRecord {
  return {
    tenant,
    path,
    version: s.v,
    size: s.size,
    contentHash: Buffer.from(s.hash, 'hex'),
    mtimeMs: s.mtime,
    createdMs: s.created,
    authorDevice: s.device,
    revision: s.rev,
    chunks: s.chunks.map(([plain, offset, size, address, storedSize]) => ({ plainHash: Buffer.from(plain, 'hex'), offset, size, address: Buffer.from(address, 'hex'), storedSize })),
  };
}
