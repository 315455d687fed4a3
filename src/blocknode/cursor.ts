// Opaque ListPartition cursors: a version byte, the partition and the last address returned,
// base64url-encoded. Decoding checks every part, so a forged or mangled cursor is refused.
import { CairnError } from '../common/errors.js';
import { PARTITION_COUNT, partitionOf } from '../placement/index.js';

const VERSION = 1;
const BYTES = 1 + 2 + 32;

export function encodeCursor(partition: number, last: Buffer): string {
  const buf = Buffer.alloc(BYTES);
  buf.writeUInt8(VERSION, 0);
  buf.writeUInt16BE(partition, 1);
  last.copy(buf, 3);
  return buf.toString('base64url');
}

/** The address to continue after; throws CAIRN_INVALID_CURSOR for anything this node did not issue for `partition`. */
export function decodeCursor(cursor: string, partition: number): Buffer {
  const invalid = (why: string): CairnError => new CairnError('CAIRN_INVALID_CURSOR', `invalid ListPartition cursor: ${why}`, { fieldViolations: [{ field: 'cursor', description: why }] });
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw invalid('not base64url');
  const buf = Buffer.from(cursor, 'base64url');
  if (buf.length !== BYTES || buf.toString('base64url') !== cursor) throw invalid('wrong length');
  if (buf.readUInt8(0) !== VERSION) throw invalid('unknown version');
  const p = buf.readUInt16BE(1);
  if (p >= PARTITION_COUNT) throw invalid('partition out of range');
  if (p !== partition) throw invalid(`issued for partition ${p}, not ${partition}`);
  const last = Buffer.from(buf.subarray(3));
  if (partitionOf(last) !== partition) throw invalid('address outside the partition');
  return last;
}
