// `cairn admin export|import`: copy the whole metadata store to a checksummed file and load it
// into LevelDB or PostgreSQL (also the way an embedded installation migrates to PostgreSQL).
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { CairnError } from '../common/errors.js';
import type { MetadataStoreTarget } from '../metadata/index.js';
import { createProgress } from './progress.js';

interface StoreFlags {
  dataDir?: string;
  postgresUrl?: string;
}

interface GlobalFlags {
  json?: boolean;
  quiet?: boolean;
}

function targetOf(flags: StoreFlags): MetadataStoreTarget {
  const url = flags.postgresUrl;
  const dir = flags.dataDir;
  if ((url === undefined) === (dir === undefined)) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give exactly one of --data-dir <dir> (LevelDB) or --postgres-url <url>');
  }
  if (url !== undefined) {
    if (!/^postgres(ql)?:\/\//.test(url)) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--postgres-url must start with postgres:// or postgresql://');
    return { backend: 'postgres', url };
  }
  return { backend: 'level', dataDir: resolve(dir ?? '') };
}

function parseBatch(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 100_000) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `--batch-entries must be an integer in 1..100000, got "${value}"`);
  }
  return Number(value);
}

export function registerAdmin(program: Command): void {
  const admin = program.command('admin').description('operate on a metadata store directly (no server)');

  admin
    .command('export')
    .description('write a consistent snapshot of the whole metadata store to a file')
    .argument('<file>', 'export file to write (replaced atomically)')
    .option('--data-dir <dir>', 'server data directory of an embedded (LevelDB) store (may be serving)')
    .option('--postgres-url <url>', 'PostgreSQL store (may be serving)')
    .action(async (file: string, flags: StoreFlags) => {
      const target = targetOf(flags);
      const g = program.opts<GlobalFlags>();
      const { exportStore, openExportSource } = await import('../metadata/index.js');
      const source = await openExportSource(target);
      if (source.copied && g.quiet !== true) process.stderr.write('cairn: the store is in use by a running server: exporting a consistent copy of it\n');
      const progress = createProgress('export', g.quiet !== true && g.json !== true);
      try {
        const summary = await exportStore(source.kv, resolve(file), { backend: target.backend, onProgress: (_entries, bytes) => progress.update(bytes, undefined) });
        progress.stop();
        if (g.json === true) process.stdout.write(JSON.stringify({ file: summary.file, entries: summary.entries, bytes: summary.bytes, sha256: summary.checksum, backend: target.backend }) + '\n');
        else if (g.quiet !== true) process.stdout.write(`exported ${summary.entries} entries (${summary.bytes} bytes, sha256 ${summary.checksum}) to ${summary.file}\n`);
      } finally {
        progress.stop();
        await source.close();
      }
    });

  admin
    .command('import')
    .description('load an export into a metadata store; re-run to resume an interrupted import')
    .argument('<file>', 'export file')
    .option('--data-dir <dir>', 'server data directory for an embedded (LevelDB) store; the server must be stopped')
    .option('--postgres-url <url>', 'PostgreSQL store; no server may use it during the import')
    .option('--force', 'replace the contents of a non-empty store')
    .option('--batch-entries <n>', 'entries per transaction (default 1000)', parseBatch)
    .action(async (file: string, flags: StoreFlags & { force?: boolean; batchEntries?: number }) => {
      const target = targetOf(flags);
      const g = program.opts<GlobalFlags>();
      const { importStore, openMetadataStore, verifyExport } = await import('../metadata/index.js');
      const path = resolve(file);
      const { size: fileSize } = await stat(path);
      const show = g.quiet !== true && g.json !== true;
      // Verified before the target is even opened: a bad file must not create an empty store.
      let progress = createProgress('import: verify', show);
      const verified = await verifyExport(path, (bytes) => progress.update(bytes, fileSize));
      progress.stop();
      const kv = await openMetadataStore(target, false);
      let label = 'verify';
      try {
        const summary = await importStore(kv, path, {
          verified,
          ...(flags.force === true ? { force: true } : {}),
          ...(flags.batchEntries === undefined ? {} : { batchEntries: flags.batchEntries }),
          onProgress: (phase, done, total) => {
            if (phase !== label) {
              progress.stop();
              label = phase;
              progress = createProgress(`import: ${phase}`, show);
            }
            progress.update(done, phase === 'clear' ? undefined : total);
          },
        });
        progress.stop();
        if (g.json === true) process.stdout.write(JSON.stringify({ file: path, entries: summary.entries, loaded: summary.loaded, resumed: summary.resumed, cleared: summary.cleared, sha256: summary.checksum, backend: target.backend }) + '\n');
        else if (g.quiet !== true) {
          process.stdout.write(`imported ${summary.entries} entries${summary.resumed ? ` (resumed: ${summary.loaded} loaded by this run)` : ''}${summary.cleared > 0 ? `, replacing ${summary.cleared}` : ''} from ${path}\n`);
        }
      } finally {
        progress.stop();
        await kv.close();
      }
    });
}
