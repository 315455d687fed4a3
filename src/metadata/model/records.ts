// Binary encodings of the records every commit writes: a folder entry (`NodeRecord`), a change
// event, a chunk-index entry and a version header. As JSON they were ≈ 800 of the ≈ 1,000 value
// bytes a commit wrote, hex digits of ids and hashes included, and JSON.stringify/parse with their
// strings a tenth of the LevelDB commit path's CPU. Numbers are float64 (every JS number exactly),
// ids and hashes raw bytes, strings UTF-8 with a u32 length.
//
// A binary record begins with its tag byte (1-4); JSON begins with "{" (0x7b). Decoders read
// both, so stores written before keep working and records are rewritten in binary as they change.
// A record whose fields do not fit the binary layout (an id that is not 16 lowercase hex digits,
// say) is still written as JSON rather than changed.
import { CairnError } from '../../common/errors.js';
import { json, parseJson } from './codec.js';

const NODE_TAG = 0x01;
const CHANGE_TAG = 0x02;
const CHUNK_TAG = 0x03;
const JSON_START = 0x7b;

const HEX16 = /^[0-9a-f]{16}$/;
const HEX64 = /^[0-9a-f]{64}$/;

function damaged(what: string): CairnError {
  return new CairnError('CAIRN_DATA_LOSS', `a stored ${what} record is damaged`);
}

/** Reads a record written as JSON (older stores) or binary with `tag`; anything else is damage. */
function isJson(raw: Buffer, tag: number, what: string): boolean {
  if (raw[0] === JSON_START) return true;
  if (raw[0] !== tag) throw damaged(what);
  return false;
}

// ---- folder entries -------------------------------------------------------------------------

/** A folder entry: see tree.ts. Declared here in the field order records are built with. */
export interface NodeRecord {
  id: string;
  kind: NodeKind;
  createdMs: number;
  modifiedMs: number;
  /** Files: the current version (a tombstone version while deleted) and the highest version used. */
  head: number;
  last: number;
  /** Files: size, content hash (hex) and mtime of the current version. */
  size: number;
  hash: string;
  mtimeMs: number;
  /** Set while the node is deleted (a restorable tombstone): when it was deleted. */
  deletedMs?: number;
  /** Revision of the last change to this entry. */
  rev: number;
}

// tag, kind, flags (1 deleted, 2 hash), id (8), seven float64s, then deletedMs and the hash.
const NODE_FIXED = 3 + 8 + 7 * 8;

export function encodeNode(n: NodeRecord): Buffer {
  const hashed = n.hash !== '';
  if (!HEX16.test(n.id) || (hashed && !HEX64.test(n.hash)) || (n.kind !== 'file' && n.kind !== 'dir')) return json(n);
  const deleted = n.deletedMs !== undefined;
  const out = Buffer.allocUnsafe(NODE_FIXED + (deleted ? 8 : 0) + (hashed ? 32 : 0));
  out[0] = NODE_TAG;
  out[1] = n.kind === 'dir' ? 1 : 0;
  out[2] = (deleted ? 1 : 0) | (hashed ? 2 : 0);
  out.write(n.id, 3, 8, 'hex');
  out.writeDoubleLE(n.createdMs, 11);
  out.writeDoubleLE(n.modifiedMs, 19);
  out.writeDoubleLE(n.head, 27);
  out.writeDoubleLE(n.last, 35);
  out.writeDoubleLE(n.size, 43);
  out.writeDoubleLE(n.mtimeMs, 51);
  out.writeDoubleLE(n.rev, 59);
  let at = NODE_FIXED;
  if (deleted) {
    out.writeDoubleLE(n.deletedMs!, at);
    at += 8;
  }
  if (hashed) out.write(n.hash, at, 32, 'hex');
  return out;
}

export function decodeNode(raw: Buffer): NodeRecord {
  if (isJson(raw, NODE_TAG, 'folder entry')) return parseJson<NodeRecord>(raw);
  const flags = raw[2]!;
  const deleted = (flags & 1) !== 0;
  const hashed = (flags & 2) !== 0;
  if (raw.length !== NODE_FIXED + (deleted ? 8 : 0) + (hashed ? 32 : 0) || raw[1]! > 1 || flags > 3) throw damaged('folder entry');
  const node: NodeRecord = {
    id: raw.toString('hex', 3, 11),
    kind: raw[1] === 1 ? 'dir' : 'file',
    createdMs: raw.readDoubleLE(11),
    modifiedMs: raw.readDoubleLE(19),
    head: raw.readDoubleLE(27),
    last: raw.readDoubleLE(35),
    size: raw.readDoubleLE(43),
    hash: hashed ? raw.toString('hex', NODE_FIXED + (deleted ? 8 : 0)) : '',
    mtimeMs: raw.readDoubleLE(51),
    rev: raw.readDoubleLE(59),
  };
  if (deleted) node.deletedMs = raw.readDoubleLE(NODE_FIXED);
  return node;
}

// ---- change events --------------------------------------------------------------------------

export type ChangeType = 'put' | 'delete' | 'mkdir' | 'move' | 'restore' | 'share' | 'unshare';
export type NodeKind = 'file' | 'dir';

export interface ChangeEvent {
  readonly revision: number;
  readonly type: ChangeType;
  /** The entry's path after the change (for a move, the new path). */
  readonly path: string;
  /** For a move: the path before. */
  readonly fromPath?: string | undefined;
  readonly nodeId: string;
  readonly kind: NodeKind;
  /** For file changes: the version the change made current. */
  readonly version?: number | undefined;
  readonly size?: number | undefined;
  /** Hex SHA-256 over the version's chunk hashes. */
  readonly contentHash?: string | undefined;
  /** For share changes: the grantee. */
  readonly user?: string | undefined;
  readonly atMs: number;
}

const CHANGE_TYPES: readonly ChangeType[] = ['put', 'delete', 'mkdir', 'move', 'restore', 'share', 'unshare'];
const CHANGE_TYPE_INDEX = new Map<string, number>(CHANGE_TYPES.map((t, i) => [t, i]));

// Flags: which optional fields follow.
const C_FROM = 1;
const C_VERSION = 2;
const C_SIZE = 4;
const C_HASH = 8;
const C_USER = 16;
// tag, type, kind, flags, nodeId (8), revision and atMs.
const CHANGE_FIXED = 4 + 8 + 16;

export function encodeChange(e: ChangeEvent): Buffer {
  return encodeNewChange(e, e.revision, e.atMs);
}

/** encodeChange of `{ ...e, revision, atMs }`, without building that object first (once per commit). */
export function encodeNewChange(e: Omit<ChangeEvent, 'revision' | 'atMs'>, revision: number, atMs: number): Buffer {
  const type = CHANGE_TYPE_INDEX.get(e.type);
  if (type === undefined || !HEX16.test(e.nodeId) || (e.kind !== 'file' && e.kind !== 'dir') || (e.contentHash !== undefined && !HEX64.test(e.contentHash))) return json({ ...e, revision, atMs });
  const pathBytes = Buffer.byteLength(e.path, 'utf8');
  const fromBytes = e.fromPath === undefined ? -1 : Buffer.byteLength(e.fromPath, 'utf8');
  const userBytes = e.user === undefined ? -1 : Buffer.byteLength(e.user, 'utf8');
  const length =
    CHANGE_FIXED + 4 + pathBytes + (fromBytes < 0 ? 0 : 4 + fromBytes) + (e.version === undefined ? 0 : 8) + (e.size === undefined ? 0 : 8) + (e.contentHash === undefined ? 0 : 32) + (userBytes < 0 ? 0 : 4 + userBytes);
  const out = Buffer.allocUnsafe(length);
  out[0] = CHANGE_TAG;
  out[1] = type;
  out[2] = e.kind === 'dir' ? 1 : 0;
  out[3] = (fromBytes < 0 ? 0 : C_FROM) | (e.version === undefined ? 0 : C_VERSION) | (e.size === undefined ? 0 : C_SIZE) | (e.contentHash === undefined ? 0 : C_HASH) | (userBytes < 0 ? 0 : C_USER);
  out.write(e.nodeId, 4, 8, 'hex');
  out.writeDoubleLE(revision, 12);
  out.writeDoubleLE(atMs, 20);
  let at = CHANGE_FIXED;
  out.writeUInt32LE(pathBytes, at);
  at += 4 + out.write(e.path, at + 4, pathBytes, 'utf8');
  if (fromBytes >= 0) {
    out.writeUInt32LE(fromBytes, at);
    at += 4 + out.write(e.fromPath!, at + 4, fromBytes, 'utf8');
  }
  if (e.version !== undefined) at = out.writeDoubleLE(e.version, at);
  if (e.size !== undefined) at = out.writeDoubleLE(e.size, at);
  if (e.contentHash !== undefined) at += out.write(e.contentHash, at, 32, 'hex');
  if (userBytes >= 0) {
    out.writeUInt32LE(userBytes, at);
    out.write(e.user!, at + 4, userBytes, 'utf8');
  }
  return out;
}

export function decodeChange(raw: Buffer): ChangeEvent {
  if (isJson(raw, CHANGE_TAG, 'change event')) return parseJson<ChangeEvent>(raw);
  const type = CHANGE_TYPES[raw[1]!];
  const flags = raw[3]!;
  if (raw.length < CHANGE_FIXED + 4 || type === undefined || raw[2]! > 1 || flags > 31) throw damaged('change event');
  let at = CHANGE_FIXED;
  const text = (): string => {
    if (at + 4 > raw.length) throw damaged('change event');
    const n = raw.readUInt32LE(at);
    if (at + 4 + n > raw.length) throw damaged('change event');
    const s = raw.toString('utf8', at + 4, at + 4 + n);
    at += 4 + n;
    return s;
  };
  const float = (): number => {
    if (at + 8 > raw.length) throw damaged('change event');
    const v = raw.readDoubleLE(at);
    at += 8;
    return v;
  };
  // Built in the field order appendChange gives its events.
  const event: { -readonly [K in keyof ChangeEvent]: ChangeEvent[K] } = { type, path: text(), nodeId: raw.toString('hex', 4, 12), kind: raw[2] === 1 ? 'dir' : 'file', revision: raw.readDoubleLE(12), atMs: raw.readDoubleLE(20) };
  if ((flags & C_FROM) !== 0) event.fromPath = text();
  if ((flags & C_VERSION) !== 0) event.version = float();
  if ((flags & C_SIZE) !== 0) event.size = float();
  if ((flags & C_HASH) !== 0) {
    if (at + 32 > raw.length) throw damaged('change event');
    event.contentHash = raw.toString('hex', at, at + 32);
    at += 32;
  }
  if ((flags & C_USER) !== 0) event.user = text();
  if (at !== raw.length) throw damaged('change event');
  return event;
}

// ---- chunk-index entries --------------------------------------------------------------------

/** A chunk-index entry: see chunks.ts. */
export interface StoredChunk {
  /** Address (hex) of the stored block. */
  a: string;
  /** Plain and stored sizes. */
  p: number;
  s: number;
  /** Refs from live versions, pins from upload sessions. */
  r: number;
  n: number;
  /** Due time of this chunk's delete-queue entry, while it has one. */
  q?: number;
  /** Set once GC claimed the chunk for deletion: it may be gone from block nodes at any moment. */
  x?: 1;
}

// tag, flags (1 q, 2 x), address (32), p, s, r, n, then q.
const CHUNK_FIXED = 2 + 32 + 4 * 8;

export function encodeChunk(c: StoredChunk): Buffer {
  if (!HEX64.test(c.a) || (c.x !== undefined && c.x !== 1)) return json(c);
  const queued = c.q !== undefined;
  const out = Buffer.allocUnsafe(CHUNK_FIXED + (queued ? 8 : 0));
  out[0] = CHUNK_TAG;
  out[1] = (queued ? 1 : 0) | (c.x === 1 ? 2 : 0);
  out.write(c.a, 2, 32, 'hex');
  out.writeDoubleLE(c.p, 34);
  out.writeDoubleLE(c.s, 42);
  out.writeDoubleLE(c.r, 50);
  out.writeDoubleLE(c.n, 58);
  if (queued) out.writeDoubleLE(c.q!, CHUNK_FIXED);
  return out;
}

export function decodeChunk(raw: Buffer): StoredChunk {
  if (isJson(raw, CHUNK_TAG, 'chunk index')) return parseJson<StoredChunk>(raw);
  const flags = raw[1]!;
  const queued = (flags & 1) !== 0;
  if (raw.length !== CHUNK_FIXED + (queued ? 8 : 0) || flags > 3) throw damaged('chunk index');
  const chunk: StoredChunk = { a: raw.toString('hex', 2, 34), p: raw.readDoubleLE(34), s: raw.readDoubleLE(42), r: raw.readDoubleLE(50), n: raw.readDoubleLE(58) };
  if (queued) chunk.q = raw.readDoubleLE(CHUNK_FIXED);
  if ((flags & 2) !== 0) chunk.x = 1;
  return chunk;
}

// ---- version headers ------------------------------------------------------------------------

/** A derivative of a version (thumbnails, previews): see versions.ts. */
export interface StoredDerivative {
  n: string;
  c: string;
  s: number;
  w: number;
  h: number;
  f: string;
}

/** A version's header: see versions.ts. */
export interface StoredVersion {
  v: number;
  size: number;
  /** Hex SHA-256 over the concatenated plain chunk hashes. */
  hash: string;
  mtime: number;
  created: number;
  device: string;
  rev: number;
  /** Chunk count and the file offset at which each stored page starts. */
  n: number;
  po: number[];
  /** A tombstone: the file was deleted by this version. */
  del?: 1;
  /** The version this one restored. */
  from?: number;
  /** Media metadata (JSON text) set at commit or by media workers. */
  media?: string;
  /**
   * What the gateway sniffed from the content at commit: a media type ("image/jpeg"), or
   * NOT_MEDIA. Absent on versions committed without a sniff (and before the field existed).
   */
  mk?: string;
  /** When a newer version replaced this one. */
  replaced?: number;
  /** Media derivatives; their chunks hold refs like the version's own. */
  der?: StoredDerivative[];
  /**
   * The chunk list itself (codec.ts's page encoding) when it fits one small page, instead of a
   * page record of its own (versions.ts). Stored as base64 in a JSON header.
   */
  inline?: Buffer;
}

// Flags: which optional fields follow (the hash is absent on versions with no content hash).
const V_DEL = 1;
const V_FROM = 2;
const V_MEDIA = 4;
const V_MK = 8;
const V_REPLACED = 16;
const V_DER = 32;
const V_HASH = 64;
const V_INLINE = 128;
// tag, flags, six float64s (v, size, mtime, created, rev, n).
const VERSION_FIXED = 2 + 6 * 8;
const VERSION_TAG = 0x04;

/** Bytes of an optional string field: its length prefix and UTF-8, or 0 when absent. */
const textBytes = (s: string | undefined): number => (s === undefined ? 0 : 4 + Buffer.byteLength(s, 'utf8'));

function writeText(out: Buffer, s: string | undefined, at: number): number {
  if (s === undefined) return at;
  const n = out.write(s, at + 4, 'utf8');
  out.writeUInt32LE(n, at);
  return at + 4 + n;
}

export function encodeVersion(h: StoredVersion): Buffer {
  const hashed = h.hash !== '';
  if ((hashed && !HEX64.test(h.hash)) || typeof h.device !== 'string' || !Array.isArray(h.po) || (h.del !== undefined && h.del !== 1) || (h.media !== undefined && typeof h.media !== 'string') || (h.mk !== undefined && typeof h.mk !== 'string')) {
    return json(h.inline === undefined ? h : { ...h, inline: h.inline.toString('base64') });
  }
  const der = h.der === undefined ? undefined : JSON.stringify(h.der);
  const length = VERSION_FIXED + (hashed ? 32 : 0) + 4 + h.po.length * 8 + (h.from === undefined ? 0 : 8) + (h.replaced === undefined ? 0 : 8) + textBytes(h.device) + textBytes(h.media) + textBytes(h.mk) + textBytes(der) + (h.inline === undefined ? 0 : 4 + h.inline.length);
  const out = Buffer.allocUnsafe(length);
  out[0] = VERSION_TAG;
  out[1] = (h.del === 1 ? V_DEL : 0) | (h.from === undefined ? 0 : V_FROM) | (h.media === undefined ? 0 : V_MEDIA) | (h.mk === undefined ? 0 : V_MK) | (h.replaced === undefined ? 0 : V_REPLACED) | (der === undefined ? 0 : V_DER) | (hashed ? V_HASH : 0) | (h.inline === undefined ? 0 : V_INLINE);
  out.writeDoubleLE(h.v, 2);
  out.writeDoubleLE(h.size, 10);
  out.writeDoubleLE(h.mtime, 18);
  out.writeDoubleLE(h.created, 26);
  out.writeDoubleLE(h.rev, 34);
  out.writeDoubleLE(h.n, 42);
  let at = VERSION_FIXED;
  if (hashed) at += out.write(h.hash, at, 32, 'hex');
  out.writeUInt32LE(h.po.length, at);
  at += 4;
  for (const p of h.po) at = out.writeDoubleLE(p, at);
  if (h.from !== undefined) at = out.writeDoubleLE(h.from, at);
  if (h.replaced !== undefined) at = out.writeDoubleLE(h.replaced, at);
  at = writeText(out, h.device, at);
  at = writeText(out, h.media, at);
  at = writeText(out, h.mk, at);
  at = writeText(out, der, at);
  if (h.inline !== undefined) {
    out.writeUInt32LE(h.inline.length, at);
    h.inline.copy(out, at + 4);
  }
  return out;
}

export function decodeVersion(raw: Buffer): StoredVersion {
  if (isJson(raw, VERSION_TAG, 'version')) {
    const parsed = parseJson<Omit<StoredVersion, 'inline'> & { inline?: string }>(raw);
    if (parsed.inline === undefined) return parsed as StoredVersion;
    return { ...parsed, inline: Buffer.from(parsed.inline, 'base64') };
  }
  const flags = raw[1]!;
  if (raw.length < VERSION_FIXED + 4) throw damaged('version');
  let at = VERSION_FIXED;
  const need = (n: number): void => {
    if (at + n > raw.length) throw damaged('version');
  };
  const float = (): number => {
    need(8);
    const v = raw.readDoubleLE(at);
    at += 8;
    return v;
  };
  const text = (): string => {
    need(4);
    const n = raw.readUInt32LE(at);
    need(4 + n);
    const s = raw.toString('utf8', at + 4, at + 4 + n);
    at += 4 + n;
    return s;
  };
  let hash = '';
  if ((flags & V_HASH) !== 0) {
    need(32);
    hash = raw.toString('hex', at, at + 32);
    at += 32;
  }
  need(4);
  const pages = raw.readUInt32LE(at);
  at += 4;
  need(pages * 8);
  const po = new Array<number>(pages);
  for (let i = 0; i < pages; i++) po[i] = float();
  const from = (flags & V_FROM) !== 0 ? float() : undefined;
  const replaced = (flags & V_REPLACED) !== 0 ? float() : undefined;
  const header: StoredVersion = { v: raw.readDoubleLE(2), size: raw.readDoubleLE(10), hash, mtime: raw.readDoubleLE(18), created: raw.readDoubleLE(26), device: text(), rev: raw.readDoubleLE(34), n: raw.readDoubleLE(42), po };
  if ((flags & V_DEL) !== 0) header.del = 1;
  if (from !== undefined) header.from = from;
  if ((flags & V_MEDIA) !== 0) header.media = text();
  if ((flags & V_MK) !== 0) header.mk = text();
  if (replaced !== undefined) header.replaced = replaced;
  if ((flags & V_DER) !== 0) {
    const der = text();
    try {
      header.der = JSON.parse(der) as StoredDerivative[];
    } catch {
      throw damaged('version');
    }
  }
  if ((flags & V_INLINE) !== 0) {
    need(4);
    const n = raw.readUInt32LE(at);
    need(4 + n);
    header.inline = raw.subarray(at + 4, at + 4 + n);
    at += 4 + n;
  }
  if (at !== raw.length) throw damaged('version');
  return header;
}
