// Key layout of the metadata store. Keys are bytewise-ordered tuples separated by 0x00, which
// neither tenants, node ids nor normalised path segments may contain; numbers are big-endian.

const SEP = 0x00;

/** Strings up to this long are checked for ASCII and copied by hand; longer ones go to Buffer#write. */
const SHORT = 64;

/** The length of `s` when it is short ASCII (one byte a character), else -1. */
function shortAscii(s: string): number {
  if (s.length > SHORT) return -1;
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return -1;
  return s.length;
}

/** A key made of tuple parts; strings are UTF-8, numbers must be pre-encoded (u64/u32). */
export function tuple(...parts: Array<string | Buffer>): Buffer {
  // One allocation, parts written in place: keys are built for every read and write of a commit.
  // Tags, tenants, ids and most names are short ASCII: copying their characters here costs a
  // fraction of a native Buffer.byteLength and write call each (≈ 45 of them per commit).
  let length = parts.length > 0 ? parts.length - 1 : 0;
  for (const p of parts) {
    if (typeof p !== 'string') length += p.length;
    else {
      const n = shortAscii(p);
      length += n >= 0 ? n : Buffer.byteLength(p, 'utf8');
    }
  }
  const out = Buffer.allocUnsafe(length);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    if (i > 0) out[at++] = SEP;
    const p = parts[i]!;
    if (typeof p !== 'string') at += p.copy(out, at);
    else if (shortAscii(p) >= 0) for (let j = 0; j < p.length; j++) out[at++] = p.charCodeAt(j);
    else at += out.write(p, at, 'utf8');
  }
  return out;
}

/** The scan bounds of every key that extends `parts` by at least one more part. */
export function under(...parts: Array<string | Buffer>): { gt: Buffer; lt: Buffer } {
  const base = tuple(...parts);
  // Tuple parts never contain 0x00 or 0x01, so "base 0x00 …" < "base 0x01" covers exactly the children.
  return { gt: Buffer.concat([base, Buffer.of(SEP)]), lt: Buffer.concat([base, Buffer.of(0x01)]) };
}

// Pooled (allocUnsafe) and fully written: a Buffer.alloc per key part is an ArrayBuffer of its own
// that every young-generation GC has to sweep.
export function u64(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`u64 needs a safe non-negative integer, not ${n}`);
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32BE(Math.floor(n / 0x1_0000_0000), 0);
  b.writeUInt32BE(n % 0x1_0000_0000, 4);
  return b;
}

export function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n);
  return b;
}

/**
 * Tags (the first tuple part) used by the model. Other modules of the metadata service
 * (jobs, cluster map) pick tags not listed here.
 */
export const keys = {
  /** Tenant settings (retention policy) and usage counters (usage.ts); absent = defaults. */
  tenant: (tenant: string) => tuple('t', tenant),
  /** A user of a tenant (share grantee). */
  user: (tenant: string, user: string) => tuple('u', tenant, user),
  /** Directory entry: the node record of `name` inside folder `parent`. */
  dentry: (tenant: string, parent: string, name: string) => tuple('d', tenant, parent, name),
  /** Where a node lives: its parent folder and name (the reverse of dentry). */
  node: (tenant: string, id: string) => tuple('n', tenant, id),
  /** Header of one immutable version of a file node. */
  version: (tenant: string, id: string, version: number) => tuple('v', tenant, id, u64(version)),
  /** One page (≤ 1024 chunks) of a version's chunk list. */
  versionPage: (tenant: string, id: string, version: number, page: number) => tuple('w', tenant, id, u64(version), u32(page)),
  /** Versions ordered by when they stopped being current: what time-based retention scans. */
  replaced: (tenant: string, at: number, id: string, version: number) => tuple('p', tenant, u64(at), id, u64(version)),
  /** Deleted nodes ordered by deletion time: what the trash purge scans. */
  deleted: (tenant: string, at: number, id: string) => tuple('D', tenant, u64(at), id),
  /** Per-tenant chunk index entry: plain hash → stored block, refs and pins. */
  chunk: (tenant: string, plainHash: Buffer) => tuple('c', tenant, plainHash),
  /** (`tuple('o', address)`, orphans.ts) A block address on block nodes that no chunk names. */
  /** Chunk delete queue, ordered by due time across tenants. */
  deleteQueue: (due: number, tenant: string, plainHash: Buffer) => tuple('q', u64(due), tenant, plainHash),
  /** The tenant's change-feed revision counter. */
  revision: (tenant: string) => tuple('r', tenant),
  /** The oldest revision the change feed has trimmed (cursors at or before it are expired). */
  feedFloor: (tenant: string) => tuple('f', tenant),
  /** One change-feed event. */
  change: (tenant: string, revision: number) => tuple('l', tenant, u64(revision)),
  /** An upload session. */
  session: (tenant: string, id: string) => tuple('s', tenant, id),
  /** One page of an upload session's received chunks. */
  sessionPage: (tenant: string, id: string, page: number) => tuple('S', tenant, id, u32(page)),
  /** Marks a chunk pinned by a session (each session pins a chunk once). */
  sessionPin: (tenant: string, id: string, plainHash: Buffer) => tuple('P', tenant, id, plainHash),
  /** Sessions ordered by expiry across tenants. */
  sessionExpiry: (at: number, tenant: string, id: string) => tuple('x', u64(at), tenant, id),
  /** A share grant of a node to a user. */
  grant: (tenant: string, id: string, user: string) => tuple('g', tenant, id, user),
  /** Reverse of `grant`: what is shared with a user. */
  grantOfUser: (tenant: string, user: string, id: string) => tuple('G', tenant, user, id),
  /** A link share, by the SHA-256 of its secret token (the token itself is never stored). */
  link: (tokenHash: Buffer) => tuple('k', tokenHash),
  /** The link shares of a node, by link id. */
  linkOfNode: (tenant: string, id: string, linkId: string) => tuple('K', tenant, id, linkId),
};

/** The single notification channel of change-feed commits; the payload names tenant and revision. */
export const CHANGE_CHANNEL = 'cairn_changes';

/**
 * What every orphan record's key (orphans.ts) starts with. Orphan records are few (candidates of
 * the last sweep and deletion tombstones), and every commit of a new chunk reads one that is
 * nearly always absent: createContext tells the KV so (`Kv.indexSparsePrefix`).
 */
export const ORPHAN_PREFIX: Buffer = under('o').gt;
