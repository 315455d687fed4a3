// The metadata export file: a fixed header block, length-prefixed key/value records in key order,
// an end marker with the count, and a SHA-256 trailer. Writing and verified streaming reading.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { z } from 'zod';
import { CairnError } from '../common/errors.js';
import { MAX_KEY_BYTES, type KvEntry } from './kv/index.js';

/*
 * Layout (integers big-endian):
 *   header block  HEADER_BYTES: magic "CAIRNKVX" | u32 format | u32 json length | JSON | zero padding
 *   records       u32 key length (1..2048) | u32 value length | key | value, keys strictly ascending
 *   end marker    u32 0xFFFFFFFF | u64 entry count
 *   trailer       SHA-256 of (records ‖ end marker ‖ header block)
 * The header is hashed last because it is written last: the entry count is known only at the end
 * of the one pass over the snapshot, and the header block is rewritten in place.
 */
export const EXPORT_MAGIC = Buffer.from('CAIRNKVX', 'ascii');
export const EXPORT_FORMAT = 1;
export const HEADER_BYTES = 4096;
const END_SENTINEL = 0xffffffff;
const END_BYTES = 12;
const TRAILER_BYTES = 32;
/** Far above any value the model writes (chunk-list pages are ~80 KiB); bounds what a corrupt length can make us allocate. */
export const MAX_VALUE_BYTES = 64 * 1024 * 1024;

const headerSchema = z.object({
  format: z.literal(EXPORT_FORMAT),
  backend: z.enum(['level', 'postgres']),
  createdAt: z.string(),
  entries: z.number().int().min(0),
  keyBytes: z.number().int().min(0),
  valueBytes: z.number().int().min(0),
});

export type ExportHeader = z.infer<typeof headerSchema>;

export function encodeHeader(header: ExportHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const block = Buffer.alloc(HEADER_BYTES);
  if (16 + json.length > HEADER_BYTES) throw new RangeError('export header does not fit its block');
  EXPORT_MAGIC.copy(block, 0);
  block.writeUInt32BE(EXPORT_FORMAT, 8);
  block.writeUInt32BE(json.length, 12);
  json.copy(block, 16);
  return block;
}

export function encodeRecord(key: Buffer, value: Buffer): Buffer {
  const head = Buffer.allocUnsafe(8);
  head.writeUInt32BE(key.length, 0);
  head.writeUInt32BE(value.length, 4);
  return Buffer.concat([head, key, value]);
}

export function encodeEnd(entries: number): Buffer {
  const end = Buffer.alloc(END_BYTES);
  end.writeUInt32BE(END_SENTINEL, 0);
  end.writeBigUInt64BE(BigInt(entries), 4);
  return end;
}

function corrupt(file: string, why: string): CairnError {
  return new CairnError('CAIRN_DATA_LOSS', `export file ${file} is corrupt or truncated: ${why}`);
}

function notAnExport(file: string, why: string): CairnError {
  return new CairnError('CAIRN_INVALID_ARGUMENT', `${file} is not a Cairn metadata export: ${why}`);
}

/** Parses and checks a header block (magic, format, JSON shape). */
export function decodeHeader(file: string, block: Buffer): ExportHeader {
  if (block.length < HEADER_BYTES) {
    if (block.length >= 8 && block.subarray(0, 8).equals(EXPORT_MAGIC)) throw corrupt(file, 'shorter than its header');
    throw notAnExport(file, 'too short');
  }
  if (!block.subarray(0, 8).equals(EXPORT_MAGIC)) throw notAnExport(file, 'bad magic');
  const format = block.readUInt32BE(8);
  if (format !== EXPORT_FORMAT) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `${file} has export format ${format}; this version reads format ${EXPORT_FORMAT}`);
  }
  const length = block.readUInt32BE(12);
  if (length === 0 || 16 + length > HEADER_BYTES) throw corrupt(file, 'bad header length');
  let parsed: unknown;
  try {
    parsed = JSON.parse(block.subarray(16, 16 + length).toString('utf8'));
  } catch {
    throw corrupt(file, 'header is not JSON');
  }
  const header = headerSchema.safeParse(parsed);
  if (!header.success) throw corrupt(file, 'header fields are missing or invalid');
  return header.data;
}

export interface OpenedExport {
  readonly header: ExportHeader;
  readonly headerBlock: Buffer;
  readonly size: number;
}

/** Reads the header and checks the file is long enough to hold what it announces. */
export async function openExport(file: string): Promise<OpenedExport> {
  const { size } = await stat(file);
  const fh = await open(file, 'r');
  let headerBlock: Buffer;
  try {
    headerBlock = Buffer.alloc(Math.min(size, HEADER_BYTES));
    await fh.read(headerBlock, 0, headerBlock.length, 0);
  } finally {
    await fh.close();
  }
  const header = decodeHeader(file, headerBlock);
  const minimum = HEADER_BYTES + header.entries * 9 + END_BYTES + TRAILER_BYTES;
  if (size < minimum) throw corrupt(file, `${size} bytes cannot hold ${header.entries} entries`);
  return { header, headerBlock, size };
}

export interface ReadOptions {
  /** Entries per yielded batch (default 1000). */
  readonly batchEntries?: number;
  /** Approximate bytes per yielded batch (default 4 MiB). */
  readonly batchBytes?: number;
  /** Called with the bytes of the file consumed so far. */
  readonly onBytes?: (bytes: number) => void;
}

/**
 * Streams the records of an opened export in batches, checking structure (lengths, key order,
 * count) as it goes and the SHA-256 at the end: the generator throws CAIRN_DATA_LOSS instead of
 * finishing when anything is wrong, so a consumer must not treat data as good until it returns.
 */
export async function* readRecords(file: string, opened: OpenedExport, options: ReadOptions = {}): AsyncGenerator<KvEntry[]> {
  const batchEntries = options.batchEntries ?? 1000;
  const batchBytes = options.batchBytes ?? 4 * 1024 * 1024;
  const { header, headerBlock, size } = opened;
  const bodyEnd = size - TRAILER_BYTES; // exclusive
  const hash: Hash = createHash('sha256');
  let buf: Buffer = Buffer.alloc(0);
  let pos = 0;
  let consumed = HEADER_BYTES;
  let count = 0;
  let previous: Buffer | undefined;
  let ended = false;
  let batch: KvEntry[] = [];
  let batchSize = 0;
  const stream = createReadStream(file, { start: HEADER_BYTES, end: bodyEnd - 1, highWaterMark: 1024 * 1024 });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      hash.update(chunk);
      consumed += chunk.length;
      options.onBytes?.(consumed);
      buf = pos < buf.length ? Buffer.concat([buf.subarray(pos), chunk]) : chunk;
      pos = 0;
      for (;;) {
        if (ended) {
          if (pos < buf.length) throw corrupt(file, 'data after the end marker');
          break;
        }
        if (buf.length - pos < 4) break;
        const keyLength = buf.readUInt32BE(pos);
        if (keyLength === END_SENTINEL) {
          if (buf.length - pos < END_BYTES) break;
          const total = buf.readBigUInt64BE(pos + 4);
          if (total !== BigInt(count) || count !== header.entries) {
            throw corrupt(file, `end marker says ${total} entries, header ${header.entries}, found ${count}`);
          }
          pos += END_BYTES;
          ended = true;
          continue;
        }
        if (buf.length - pos < 8) break;
        const valueLength = buf.readUInt32BE(pos + 4);
        if (keyLength === 0 || keyLength > MAX_KEY_BYTES) throw corrupt(file, `record ${count} has a key of ${keyLength} bytes`);
        if (valueLength > MAX_VALUE_BYTES) throw corrupt(file, `record ${count} has a value of ${valueLength} bytes`);
        if (buf.length - pos < 8 + keyLength + valueLength) break;
        const key = buf.subarray(pos + 8, pos + 8 + keyLength);
        const value = buf.subarray(pos + 8 + keyLength, pos + 8 + keyLength + valueLength);
        if (previous !== undefined && Buffer.compare(previous, key) >= 0) throw corrupt(file, `record ${count} is out of key order`);
        if (count >= header.entries) throw corrupt(file, `more records than the ${header.entries} announced`);
        previous = key;
        count++;
        pos += 8 + keyLength + valueLength;
        batch.push([key, value]);
        batchSize += keyLength + valueLength;
        if (batch.length >= batchEntries || batchSize >= batchBytes) {
          // Yielded before the checksum is known: import verifies the whole file in a first pass.
          yield batch;
          batch = [];
          batchSize = 0;
        }
      }
    }
  } finally {
    stream.destroy();
  }
  if (!ended) throw corrupt(file, 'no end marker');
  const trailer = Buffer.alloc(TRAILER_BYTES);
  const fh = await open(file, 'r');
  try {
    const { bytesRead } = await fh.read(trailer, 0, TRAILER_BYTES, bodyEnd);
    if (bytesRead !== TRAILER_BYTES) throw corrupt(file, 'no checksum');
  } finally {
    await fh.close();
  }
  hash.update(headerBlock);
  if (!hash.digest().equals(trailer)) throw corrupt(file, 'SHA-256 checksum does not match');
  if (batch.length > 0) yield batch;
}

/** Reads the whole file once, checking everything; returns the header and the checksum (hex). */
export async function verifyExport(file: string, onBytes?: (bytes: number) => void): Promise<{ header: ExportHeader; checksum: string; size: number }> {
  const opened = await openExport(file);
  for await (const _batch of readRecords(file, opened, { batchEntries: 65536, ...(onBytes === undefined ? {} : { onBytes }) })) {
    // Structure and order are checked inside the generator; nothing to do with the records here.
  }
  return { header: opened.header, checksum: await trailerOf(file, opened.size), size: opened.size };
}

async function trailerOf(file: string, size: number): Promise<string> {
  const fh = await open(file, 'r');
  try {
    const trailer = Buffer.alloc(TRAILER_BYTES);
    await fh.read(trailer, 0, TRAILER_BYTES, size - TRAILER_BYTES);
    return trailer.toString('hex');
  } finally {
    await fh.close();
  }
}
