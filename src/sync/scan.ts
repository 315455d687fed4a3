// Walks the local folder: every file and folder that is not ignored, with size, mtime and inode,
// keyed by its relative "/"-separated NFC path (the server's form) and carrying the name as it is
// on disk (NFD names, as some macOS tools write, keep their form locally). Symlinks and other
// special files are skipped and reported once each; names the server would refuse are reported
// too, and so are two on-disk names for one key (an NFC and an NFD twin): neither is synced.
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { IgnoreRules } from './ignore-rules.js';

export interface LocalEntry {
  readonly kind: 'file' | 'dir';
  /** The path relative to the root as it is on disk (may differ from the key in Unicode form). */
  readonly real: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ino: number;
}

export interface ScanIssue {
  readonly key: string;
  readonly reason: 'symlink' | 'special' | 'invalid-name' | 'name-clash';
  /** name-clash: the on-disk names that map to `key`. */
  readonly names?: readonly string[];
}

// Characters the server refuses in paths (see src/common/paths.ts).
// eslint-disable-next-line no-control-regex
const INVALID = /[\u0000-\u001f\u007f\\]/;

/** Walks `root` (or only the folder `under` inside it); keys are relative to `root`. */
export async function scanTree(root: string, rules: IgnoreRules, under = ''): Promise<{ entries: Map<string, LocalEntry>; issues: ScanIssue[]; clashes: string[] }> {
  const entries = new Map<string, LocalEntry>();
  const issues: ScanIssue[] = [];
  const twins = new Map<string, Set<string>>();
  const walk = async (rel: string): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(rel === '' ? root : join(root, rel));
    } catch {
      return; // vanished while walking: the next scan sees the truth
    }
    await Promise.all(
      names.map(async (name) => {
        const real = rel === '' ? name : `${rel}/${name}`;
        const key = real.normalize('NFC');
        let st;
        try {
          st = await lstat(join(root, real));
        } catch {
          return;
        }
        const folder = st.isDirectory();
        if (rules.ignores(key, folder)) return;
        if (st.isSymbolicLink()) return void issues.push({ key, reason: 'symlink' });
        if (!folder && !st.isFile()) return void issues.push({ key, reason: 'special' });
        if (INVALID.test(name) || name === '.' || name === '..') return void issues.push({ key, reason: 'invalid-name' });
        const other = entries.get(key);
        if (other !== undefined) {
          const names = twins.get(key) ?? new Set([other.real]);
          names.add(real);
          twins.set(key, names);
        }
        entries.set(key, { kind: folder ? 'dir' : 'file', real, size: folder ? 0 : st.size, mtimeMs: Math.floor(st.mtimeMs), ino: st.ino });
        if (folder) await walk(real);
      }),
    );
  };
  await walk(under);
  // Two local names for one remote path: syncing either would silently pick one.
  const clashes = [...twins.keys()].sort().filter((k, i, all) => !all.slice(0, i).some((c) => k.startsWith(c + '/')));
  for (const key of clashes) {
    for (const k of [...entries.keys()]) if (k === key || k.startsWith(key + '/')) entries.delete(k);
    issues.push({ key, reason: 'name-clash', names: [...twins.get(key)!].sort() });
  }
  return { entries, issues, clashes };
}

/** The local entry at `key` right now (undefined when absent). */
export async function statLocal(root: string, real: string): Promise<LocalEntry | undefined> {
  try {
    const st = await lstat(join(root, real));
    if (st.isSymbolicLink() || (!st.isFile() && !st.isDirectory())) return undefined;
    const folder = st.isDirectory();
    return { kind: folder ? 'dir' : 'file', real, size: folder ? 0 : st.size, mtimeMs: Math.floor(st.mtimeMs), ino: st.ino };
  } catch {
    return undefined;
  }
}
