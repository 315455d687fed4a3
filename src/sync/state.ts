// The sync client's per-root state: what both sides last agreed on for every path (kind,
// version, revision, content hash, local size/mtime/inode, chunk list) and the change-feed cursor.
// LevelDB on disk with an in-memory mirror: every decision reads the mirror, every change is
// written through before the action that depends on it is reported done.
import { Level } from 'level';
import { CairnError } from '../common/errors.js';

/** One path both sides agreed on at the last sync. */
export interface BaseEntry {
  readonly kind: 'file' | 'dir';
  /** Files: the remote version the local copy matches. */
  readonly version: number;
  /** The change-feed revision of that version (or of the move that brought it here). */
  readonly revision: number;
  /** Files: hex SHA-256 over the chunk hashes (the server's content hash). */
  readonly hash: string;
  readonly size: number;
  /** The local file's mtime and inode when it matched, to skip re-hashing unchanged files. */
  readonly mtimeMs: number;
  readonly ino: number;
  /**
   * The relative path as it is on disk when it differs from the key (the key is NFC, the remote
   * form; a local name may be NFD). Absent when they are equal.
   */
  readonly real?: string;
}

const ENTRY = 'e\0';
const CHUNKS = 'c\0';
const META = 'm\0';

export class SyncState {
  readonly #db: Level<string, string>;
  readonly #entries = new Map<string, BaseEntry>();
  readonly #meta = new Map<string, string>();

  private constructor(db: Level<string, string>) {
    this.#db = db;
  }

  /** Opens (creating) the state database in `dir`; one process at a time. */
  static async open(dir: string): Promise<SyncState> {
    const db = new Level<string, string>(dir, { valueEncoding: 'utf8' });
    try {
      await db.open();
    } catch (err) {
      throw new CairnError('CAIRN_UNAVAILABLE', `cannot open the sync state in ${dir}: is another \`cairn sync\` running on this folder?`, { cause: err });
    }
    const state = new SyncState(db);
    for await (const [k, v] of db.iterator({ gte: ENTRY, lt: 'e\x01' })) state.#entries.set(k.slice(ENTRY.length), JSON.parse(v) as BaseEntry);
    for await (const [k, v] of db.iterator({ gte: META, lt: 'm\x01' })) state.#meta.set(k.slice(META.length), v);
    return state;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(path: string): BaseEntry | undefined {
    return this.#entries.get(path);
  }

  /** Every path, sorted (parents before children). */
  paths(): string[] {
    return [...this.#entries.keys()].sort();
  }

  entries(): ReadonlyMap<string, BaseEntry> {
    return this.#entries;
  }

  /** Paths strictly under folder `path` ('' is the root). */
  under(path: string): string[] {
    if (path === '') return this.paths();
    const prefix = path + '/';
    return this.paths().filter((p) => p.startsWith(prefix));
  }

  async put(path: string, entry: BaseEntry, chunks?: Buffer): Promise<void> {
    this.#entries.set(path, entry);
    const ops: Array<{ type: 'put'; key: string; value: string } | { type: 'del'; key: string }> = [{ type: 'put', key: ENTRY + path, value: JSON.stringify(entry) }];
    if (chunks !== undefined) ops.push({ type: 'put', key: CHUNKS + path, value: chunks.toString('base64') });
    else if (entry.kind === 'dir') ops.push({ type: 'del', key: CHUNKS + path });
    await this.#db.batch(ops);
  }

  /** The chunk hashes (32 bytes each) of the path's synced version, when recorded. */
  async chunks(path: string): Promise<Buffer | undefined> {
    const v = await this.#db.get(CHUNKS + path);
    return v === undefined ? undefined : Buffer.from(v, 'base64');
  }

  /** Forgets `path` and everything under it. */
  async deleteTree(path: string): Promise<void> {
    const victims = [path, ...this.under(path)].filter((p) => this.#entries.has(p));
    for (const p of victims) this.#entries.delete(p);
    await this.#db.batch(victims.flatMap((p) => [{ type: 'del' as const, key: ENTRY + p }, { type: 'del' as const, key: CHUNKS + p }]));
  }

  /**
   * Re-keys `from` and everything under it to `to` (a move both sides agree on). On-disk names
   * recorded under `realFrom` move under `realTo` (the new on-disk path of `to`).
   */
  async moveTree(from: string, to: string, revision?: number, realFrom = from, realTo = to): Promise<void> {
    const moved = [from, ...this.under(from)].filter((p) => this.#entries.has(p));
    const ops: Array<{ type: 'put'; key: string; value: string } | { type: 'del'; key: string }> = [];
    const renamed: Array<[string, BaseEntry]> = [];
    for (const p of moved) {
      let e = this.#entries.get(p)!;
      const q = to + p.slice(from.length);
      if (e.real !== undefined || realTo !== to) {
        const { real, ...rest } = e;
        const r = real !== undefined && (real === realFrom || real.startsWith(realFrom + '/')) ? realTo + real.slice(realFrom.length) : realTo + p.slice(from.length);
        e = r === q ? rest : { ...rest, real: r };
      }
      renamed.push([q, p === from && revision !== undefined ? { ...e, revision: Math.max(e.revision, revision) } : e]);
      this.#entries.delete(p);
      ops.push({ type: 'del', key: ENTRY + p });
      const chunks = await this.#db.get(CHUNKS + p);
      if (chunks !== undefined) {
        ops.push({ type: 'del', key: CHUNKS + p });
        ops.push({ type: 'put', key: CHUNKS + q, value: chunks });
      }
    }
    for (const [q, e] of renamed) {
      this.#entries.set(q, e);
      ops.push({ type: 'put', key: ENTRY + q, value: JSON.stringify(e) });
    }
    await this.#db.batch(ops);
  }

  meta(key: string): string | undefined {
    return this.#meta.get(key);
  }

  async setMeta(key: string, value: string): Promise<void> {
    this.#meta.set(key, value);
    await this.#db.put(META + key, value);
  }

  async close(): Promise<void> {
    await this.#db.close();
  }
}
