// A crash-consistent copy of a LevelDB store another process holds open (a running embedded
// server), so it can be exported without stopping the server: LevelDB admits one process.
import { constants } from 'node:fs';
import { copyFile, mkdir, open, readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '../common/errors.js';

/**
 * Copies the files of the LevelDB store in `src` into the empty directory `dst`, such that
 * opening `dst` recovers the store as it was at one moment (as after a power cut: every synced,
 * acknowledged batch is there whole, nothing partial). SST files are immutable and cloned; the
 * manifest and write-ahead logs are append-only and copied. Any flush, compaction or log
 * switch during the copy appends to the manifest (or replaces it), which could make the copied
 * logs and tables disagree, so the copy is retried until the manifest did not change around it.
 */
export async function copyLiveLevelDb(src: string, dst: string, attempts = 20): Promise<void> {
  for (let attempt = 0; attempt < attempts; attempt++) {
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 10 * 2 ** attempt) * Math.random()));
    await rm(dst, { recursive: true, force: true });
    await mkdir(dst, { recursive: true });
    try {
      const current = await readFile(join(src, 'CURRENT'), 'utf8');
      const manifest = current.trim();
      if (!/^MANIFEST-\d+$/.test(manifest)) throw new CairnError('CAIRN_DATA_LOSS', `${src}/CURRENT does not name a manifest`);
      const before = (await stat(join(src, manifest))).size;
      await copyPrefix(join(src, manifest), join(dst, manifest), before);
      const names = await readdir(src);
      for (const name of names) {
        if (/^\d+\.(ldb|sst)$/.test(name)) await copyTable(join(src, name), join(dst, name));
      }
      // Logs after the tables: whatever a log held when a table was flushed from it is in the
      // table, and the manifest check below catches a flush in between.
      for (const name of names) {
        if (/^\d+\.log$/.test(name)) await copyFile(join(src, name), join(dst, name));
      }
      const after = (await stat(join(src, manifest))).size;
      const currentAfter = await readFile(join(src, 'CURRENT'), 'utf8');
      if (after !== before || currentAfter !== current) continue;
      await mkdir(dst, { recursive: true });
      const fh = await open(join(dst, 'CURRENT'), 'w');
      await fh.writeFile(current);
      await fh.close();
      return;
    } catch (error) {
      // A table or log deleted by a compaction between listing and copying: try again.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw error;
    }
  }
  throw new CairnError('CAIRN_UNAVAILABLE', `the metadata store in ${src} kept changing while it was copied; retry, or stop the server`);
}

async function copyPrefix(from: string, to: string, bytes: number): Promise<void> {
  const input = await open(from, 'r');
  try {
    const data = Buffer.alloc(bytes);
    const { bytesRead } = await input.read(data, 0, bytes, 0);
    const output = await open(to, 'w');
    try {
      await output.writeFile(data.subarray(0, bytesRead));
    } finally {
      await output.close();
    }
  } finally {
    await input.close();
  }
}

/**
 * Copies an immutable table, as a copy-on-write clone where the filesystem can. Never a hard
 * link: a table being written by a compaction is not yet in the copied manifest, and the copy's
 * recovery could reuse its number and truncate the shared file under the running server.
 */
async function copyTable(from: string, to: string): Promise<void> {
  await copyFile(from, to, constants.COPYFILE_FICLONE);
}

/** Whether opening a LevelDB store failed because another process holds its lock. */
export function isLocked(error: unknown): boolean {
  for (let e: unknown = error; typeof e === 'object' && e !== null; e = (e as { cause?: unknown }).cause) {
    if ((e as { code?: unknown }).code === 'LEVEL_LOCKED') return true;
  }
  return false;
}
