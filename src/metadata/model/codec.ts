// Value encodings of the metadata store: small records as JSON, chunk lists as fixed-size binary
// records (80 bytes a chunk) in pages, so a 10 GiB file's list is ~12 MB in ~160 values, not one.
import { CairnError } from '../../common/errors.js';
import type { KvReader, KvTx } from '../kv/types.js';

export const CHUNK_RECORD_BYTES = 80;
/** Chunks per stored page: 80 KiB values, well inside what both backends handle comfortably. */
export const CHUNKS_PER_PAGE = 1024;

/** One chunk of a file: its plain hash names it in the tenant; the address names the stored block. */
export interface ChunkRecord {
  readonly plainHash: Buffer;
  readonly offset: number;
  readonly size: number;
  readonly address: Buffer;
  readonly storedSize: number;
}

export function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

export function parseJson<T>(raw: Buffer): T {
  return JSON.parse(raw.toString('utf8')) as T;
}

export async function readJson<T>(tx: Pick<KvReader, 'get'> | Pick<KvTx, 'get'>, key: Buffer): Promise<T | undefined> {
  const raw = await tx.get(key);
  return raw === undefined ? undefined : parseJson<T>(raw);
}

export function encodeChunks(chunks: readonly ChunkRecord[]): Buffer {
  // Every byte is written below; allocUnsafe takes small lists from Node's pool.
  const out = Buffer.allocUnsafe(chunks.length * CHUNK_RECORD_BYTES);
  chunks.forEach((c, i) => {
    const at = i * CHUNK_RECORD_BYTES;
    c.plainHash.copy(out, at);
    c.address.copy(out, at + 32);
    // A u64 written as two halves: offsets are safe integers, and a BigInt per chunk was most of
    // the cost of encoding a small file's list.
    out.writeUInt32BE(Math.floor(c.offset / 0x1_0000_0000), at + 64);
    out.writeUInt32BE(c.offset >>> 0, at + 68);
    out.writeUInt32BE(c.size, at + 72);
    out.writeUInt32BE(c.storedSize, at + 76);
  });
  return out;
}

/** A big-endian u64 that must be a safe integer (offsets are). */
function readU64(raw: Buffer, at: number): number {
  const hi = raw.readUInt32BE(at);
  if (hi > 0x1f_ffff) throw new CairnError('CAIRN_INTERNAL', 'corrupt chunk page in the metadata store');
  return hi * 0x1_0000_0000 + raw.readUInt32BE(at + 4);
}

export function decodeChunks(raw: Buffer): ChunkRecord[] {
  if (raw.length % CHUNK_RECORD_BYTES !== 0) throw new CairnError('CAIRN_INTERNAL', 'corrupt chunk page in the metadata store');
  const out: ChunkRecord[] = [];
  for (let at = 0; at < raw.length; at += CHUNK_RECORD_BYTES) {
    out.push({
      plainHash: Buffer.from(raw.subarray(at, at + 32)),
      address: Buffer.from(raw.subarray(at + 32, at + 64)),
      offset: readU64(raw, at + 64),
      size: raw.readUInt32BE(at + 72),
      storedSize: raw.readUInt32BE(at + 76),
    });
  }
  return out;
}

/** Splits a chunk list into stored pages. */
export function pages<T>(items: readonly T[], size = CHUNKS_PER_PAGE): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
