// Walks the local folder: every file and folder that is not ignored, with size, mtime and inode,
// keyed by its relative "/"-separated NFC path. Symlinks and other special files are skipped and
// reported once each; names the server would refuse are reported too.
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
  readonly reason: 'symlink' | 'special' | 'invalid-name';
}

// Characters the server refuses in paths (see src/common/paths.ts).
// eslint-disable-next-line no-control-regex
const INVALID = /[\u0000-\u001f\u007f\\]/;

/** Walks `root` (or only the folder `under` inside it); keys are relative to `root`. */
export async function scanTree(root: string, rules: IgnoreRules, under = ''): Promise<{ entries: Map<string, LocalEntry>; issues: ScanIssue[] }> {
  const entries = new Map<string, LocalEntry>();
  const issues: ScanIssue[] = [];
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
        // The server stores names in NFC; a name in another form could not be matched back to
        // its remote path, so it is reported rather than synced under a different name.
        if (INVALID.test(name) || name === '.' || name === '..' || name !== name.normalize('NFC')) return void issues.push({ key, reason: 'invalid-name' });
        entries.set(key, { kind: folder ? 'dir' : 'file', real, size: folder ? 0 : st.size, mtimeMs: Math.floor(st.mtimeMs), ino: st.ino });
        if (folder) await walk(real);
      }),
    );
  };
  await walk(under);
  return { entries, issues };
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
