// Segment files: append-only logs of block records, one FileHandle each, shared by the
// writer and readers (positional I/O), plus a sequential scanner used by recovery and compaction.
import { type FileHandle } from 'node:fs/promises';
import { FLAG_TOMBSTONE, HEADER_BYTES, RECORD_MAGIC, type RecordHeader, decodeHeader, sha256 } from './record.js';

export class Segment {
  /** Bytes of records that the index still points to (headers included). */
  live = 0;
  /** Readers (and compaction) holding the file open; the file is unlinked only at zero. */
  refs = 0;
  retired = false;

  constructor(
    readonly id: number,
    readonly path: string,
    readonly fh: FileHandle,
    /** Bytes written and synced: the append position. */
    public size: number,
  ) {}
}

export function segmentFileName(id: number): string {
  return `${id.toString().padStart(10, '0')}.seg`;
}

export function parseSegmentFileName(name: string): number | undefined {
  const m = /^(\d{10})\.seg$/.exec(name);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

/** pread until `buf` is full; false when the file ends first. */
export async function readFully(fh: FileHandle, buf: Buffer, position: number): Promise<boolean> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) return false;
    done += bytesRead;
  }
  return true;
}

// Below IOV_MAX (1024 on Linux) so each writev is one syscall.
const MAX_IOV = 512;

/** pwritev every buffer at `position`, resuming after short writes. */
export async function writeAll(fh: FileHandle, buffers: readonly Buffer[], position: number): Promise<number> {
  let pos = position;
  for (let i = 0; i < buffers.length; i += MAX_IOV) {
    let pending = buffers.slice(i, i + MAX_IOV);
    while (pending.length > 0) {
      const { bytesWritten } = await fh.writev(pending, pos);
      if (bytesWritten <= 0) throw new Error(`writev made no progress at ${pos}`);
      pos += bytesWritten;
      pending = advance(pending, bytesWritten);
    }
  }
  return pos - position;
}

function advance(buffers: Buffer[], written: number): Buffer[] {
  let left = written;
  let k = 0;
  while (k < buffers.length && left >= (buffers[k] as Buffer).length) {
    left -= (buffers[k] as Buffer).length;
    k++;
  }
  const rest = buffers.slice(k);
  if (left > 0 && rest.length > 0) rest[0] = (rest[0] as Buffer).subarray(left);
  return rest;
}

const CHUNK_BYTES = 8 * 1024 * 1024;
const MAGIC = Buffer.alloc(4);
MAGIC.writeUInt32BE(RECORD_MAGIC);

/** Windowed reader: each refill allocates, so slices handed out earlier stay valid. */
class Reader {
  private buf = Buffer.alloc(0);
  private start = 0;

  constructor(private readonly fh: FileHandle, readonly end: number) {}

  async read(pos: number, n: number): Promise<Buffer | undefined> {
    if (pos + n > this.end) return undefined;
    if (pos >= this.start && pos + n <= this.start + this.buf.length) {
      return this.buf.subarray(pos - this.start, pos - this.start + n);
    }
    const size = Math.max(n, Math.min(CHUNK_BYTES, this.end - pos));
    const buf = Buffer.allocUnsafe(size);
    if (!(await readFully(this.fh, buf, pos))) return undefined;
    this.buf = buf;
    this.start = pos;
    return buf.subarray(0, n);
  }
}

export type ScanEvent =
  | {
      readonly type: 'record';
      readonly offset: number;
      readonly end: number;
      readonly header: RecordHeader;
      readonly payload: Buffer | undefined;
      /** Payload hash matches the address (always true when not verifying, and for tombstones). */
      readonly ok: boolean;
    }
  /** Unparseable bytes skipped until the next valid header. */
  | { readonly type: 'garbage'; readonly offset: number; readonly end: number }
  /** Nothing valid from `offset` to the end of the file: a torn tail. */
  | { readonly type: 'torn'; readonly offset: number };

/** Walks records in `[start, end)`, resynchronising on the magic after a bad header. */
export async function* scanSegment(fh: FileHandle, start: number, end: number, verify: boolean): AsyncGenerator<ScanEvent> {
  const reader = new Reader(fh, end);
  let pos = start;
  while (pos < end) {
    const hb = await reader.read(pos, HEADER_BYTES);
    const header = hb && decodeHeader(hb);
    if (!header) {
      const next = await resync(reader, pos + 1);
      if (next === undefined) {
        yield { type: 'torn', offset: pos };
        return;
      }
      yield { type: 'garbage', offset: pos, end: next };
      pos = next;
      continue;
    }
    if (header.flags & FLAG_TOMBSTONE) {
      yield { type: 'record', offset: pos, end: pos + HEADER_BYTES, header, payload: undefined, ok: true };
      pos += HEADER_BYTES;
      continue;
    }
    const recEnd = pos + HEADER_BYTES + header.length;
    const payload = recEnd <= end ? await reader.read(pos + HEADER_BYTES, header.length) : undefined;
    if (!payload) {
      // A valid header whose payload runs past the end of the file: the append was torn.
      yield { type: 'torn', offset: pos };
      return;
    }
    const ok = !verify || sha256(payload).equals(header.address);
    yield { type: 'record', offset: pos, end: recEnd, header, payload, ok };
    pos = recEnd;
  }
}

async function resync(reader: Reader, from: number): Promise<number | undefined> {
  let pos = from;
  while (pos + HEADER_BYTES <= reader.end) {
    const n = Math.min(CHUNK_BYTES, reader.end - pos);
    const win = await reader.read(pos, n);
    if (!win) return undefined;
    for (let i = win.indexOf(MAGIC); i !== -1; i = win.indexOf(MAGIC, i + 1)) {
      const hb = await reader.read(pos + i, HEADER_BYTES);
      if (hb && decodeHeader(hb)) return pos + i;
    }
    if (pos + n >= reader.end) return undefined;
    // Overlap so a magic straddling two windows is still seen.
    pos += n - (MAGIC.length - 1);
  }
  return undefined;
}
