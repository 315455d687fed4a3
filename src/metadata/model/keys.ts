// Key layout of the metadata store. Keys are bytewise-ordered tuples separated by 0x00, which
// neither tenants nor normalised paths may contain; numbers are big-endian so they sort.

const SEP = Buffer.from([0]);

function key(...parts: Array<string | Buffer>): Buffer {
  const out: Buffer[] = [];
  parts.forEach((p, i) => {
    if (i > 0) out.push(SEP);
    out.push(typeof p === 'string' ? Buffer.from(p, 'utf8') : p);
  });
  return Buffer.concat(out);
}

export function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

export const keys = {
  /** Current version pointer of a path. */
  head: (tenant: string, path: string) => key('h', tenant, path),
  /** One immutable version of a path. */
  version: (tenant: string, path: string, version: number) => key('v', tenant, path, u64(version)),
  /** Per-tenant chunk index entry: plain hash → stored block. */
  chunk: (tenant: string, plainHash: Buffer) => key('c', tenant, plainHash),
  /** The tenant's change-feed revision counter. */
  revision: (tenant: string) => key('r', tenant),
  /** One change-feed event. */
  change: (tenant: string, revision: number) => key('l', tenant, u64(revision)),
};

/** The change-notification channel of a tenant (KV notify/subscribe). */
export function changeChannel(tenant: string): string {
  return `changes_${tenant.replace(/-/g, '_')}`;
}
