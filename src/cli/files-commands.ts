// The `cairn` file-tree commands: ls, versions, restore, rm, mv, cp, mkdir, watch and usage.
// Human output by default, one JSON object per line with --json; errors exit through exit.ts.
import type { Command } from 'commander';
import { CairnError } from '../common/errors.js';
import type { CairnClient, Change, TreeEntry, VersionEntry } from '../client/index.js';

interface OutputOptions {
  json?: boolean;
  quiet?: boolean;
}

function nonNegativeInt(name: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${name} must be a non-negative integer, got "${value}"`);
    return Number(value);
  };
}

function line(value: unknown): void {
  process.stdout.write((typeof value === 'string' ? value : JSON.stringify(value)) + '\n');
}

function when(ms: number): string {
  return ms > 0 ? new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z') : '-';
}

function entryLine(e: TreeEntry): string {
  if (e.folder) return `${'folder'.padStart(12)}  ${'-'.padEnd(6)}  ${when(e.modifiedMs)}  ${e.name}/${e.deleted ? '  (deleted)' : ''}`;
  return `${String(e.size).padStart(12)}  ${('v' + e.version).padEnd(6)}  ${when(e.mtimeMs)}  ${e.name}${e.deleted ? '  (deleted)' : ''}`;
}

function versionLine(v: VersionEntry): string {
  const note = v.deleted ? 'deleted' : v.restoredFrom > 0 ? `restored from v${v.restoredFrom}` : '';
  return `${('v' + v.version).padEnd(6)}  ${String(v.size).padStart(12)}  ${when(v.createdMs)}  ${v.deleted ? '-'.padEnd(16) : v.contentHash.slice(0, 16)}  ${note}`.trimEnd();
}

function changeLine(c: Change): string {
  const what = c.type === 'move' ? `${c.fromPath} -> ${c.path}` : c.path;
  const file = !c.folder && (c.type === 'put' || c.type === 'restore') ? `  v${c.version} ${c.size} bytes` : '';
  return `${c.revision}  ${when(c.atMs)}  ${c.type.padEnd(7)}  ${what}${c.folder ? '/' : ''}${file}`;
}

/**
 * Adds the tree commands to `program`. `connect` builds a client from the global options
 * (endpoint, token, TLS), as the other client commands do.
 */
export function registerFilesCommands(program: Command, connect: () => CairnClient): void {
  const out = (): OutputOptions => program.opts<OutputOptions>();
  const withClient = async (fn: (c: CairnClient) => Promise<void>): Promise<void> => {
    const c = connect();
    try {
      await fn(c);
    } finally {
      c.close();
    }
  };

  program
    .command('ls')
    .description('list a folder (default /), one page unless --all')
    .argument('[path]', 'folder', '/')
    .option('--all', 'list every page')
    .option('--page-size <n>', 'entries per page (default 100, at most 1000)', nonNegativeInt('--page-size'))
    .option('--page-token <token>', 'continue from a previous page')
    .option('--after <name>', 'the page after this name')
    .option('--before <name>', 'the page before this name')
    .option('--deleted', 'include deleted entries')
    .action(async (path: string, opts: { all?: boolean; pageSize?: number; pageToken?: string; after?: string; before?: string; deleted?: boolean }) =>
      withClient(async (c) => {
        const json = out().json === true;
        const common = { ...(opts.pageSize !== undefined ? { pageSize: opts.pageSize } : {}), includeDeleted: opts.deleted === true };
        if (opts.all === true) {
          for await (const e of c.listAll(path, common)) line(json ? e : entryLine(e));
          return;
        }
        const page = await c.list(path, {
          ...common,
          ...(opts.pageToken !== undefined ? { pageToken: opts.pageToken } : {}),
          ...(opts.after !== undefined ? { previousLast: opts.after } : {}),
          ...(opts.before !== undefined ? { previousFirst: opts.before } : {}),
        });
        if (json) {
          line(page);
          return;
        }
        for (const e of page.entries) line(entryLine(e));
        if (page.nextPageToken !== '' && out().quiet !== true) process.stderr.write(`more: cairn ls ${path} --page-token ${page.nextPageToken}\n`);
      }),
    );

  program
    .command('versions')
    .description("list a file's versions, newest first")
    .argument('<path>', 'file')
    .action(async (path: string) =>
      withClient(async (c) => {
        let pageToken = '';
        do {
          const page = await c.versions(path, { pageToken });
          for (const v of page.versions) line(out().json === true ? v : versionLine(v));
          pageToken = page.nextPageToken;
        } while (pageToken !== '');
      }),
    );

  program
    .command('restore')
    .description('make an old version current again (as a new version); without a version, undelete')
    .argument('<path>', 'file or folder')
    .argument('[version]', 'version to restore (default: undelete)', nonNegativeInt('version'))
    .action(async (path: string, version: number | undefined) =>
      withClient(async (c) => {
        const e = await c.restore(path, version ?? 0);
        if (out().json === true) line(e);
        else if (out().quiet !== true) line(e.folder ? `restored ${e.path}/` : `restored ${e.path} as version ${e.version}`);
      }),
    );

  program
    .command('rm')
    .description('delete a file or folder (restorable with cairn restore)')
    .argument('<path>', 'file or folder')
    .option('--base-version <n>', 'fail with a conflict unless the file is at this version', nonNegativeInt('--base-version'))
    .action(async (path: string, opts: { baseVersion?: number }) =>
      withClient(async (c) => {
        const e = await c.delete(path, opts.baseVersion !== undefined ? { baseVersion: opts.baseVersion } : {});
        if (out().json === true) line(e);
        else if (out().quiet !== true) line(`deleted ${e.path}${e.folder ? '/' : ''}`);
      }),
    );

  program
    .command('mv')
    .description('move or rename a file or folder')
    .argument('<from>', 'source path')
    .argument('<to>', 'destination path (must not exist)')
    .action(async (from: string, to: string) =>
      withClient(async (c) => {
        const e = await c.move(from, to);
        if (out().json === true) line(e);
        else if (out().quiet !== true) line(`moved ${from} -> ${e.path}${e.folder ? '/' : ''}`);
      }),
    );

  program
    .command('cp')
    .description('copy a file (no data is copied: the copy shares its chunks)')
    .argument('<from>', 'source file')
    .argument('<to>', 'destination path')
    .option('--version <n>', 'version of the source (default current)', nonNegativeInt('--version'))
    .action(async (from: string, to: string, opts: { version?: number }) =>
      withClient(async (c) => {
        const v = await c.copy(from, to, opts.version !== undefined ? { fromVersion: opts.version } : {});
        if (out().json === true) line(v);
        else if (out().quiet !== true) line(`copied ${from} -> ${v.path} version ${v.version} (${v.size} bytes)`);
      }),
    );

  program
    .command('mkdir')
    .description('create a folder and its missing parents')
    .argument('<path>', 'folder')
    .action(async (path: string) =>
      withClient(async (c) => {
        const e = await c.mkdir(path);
        if (out().json === true) line(e);
        else if (out().quiet !== true) line(`created ${e.path}/`);
      }),
    );

  program
    .command('watch')
    .description('print changes as they happen (one line each) until interrupted')
    .argument('[path]', 'only changes at or under this path', '/')
    .option('--cursor <cursor>', 'resume after this cursor (default: from now)')
    .action(async (path: string, opts: { cursor?: string }) =>
      withClient(async (c) => {
        const stop = new AbortController();
        const onSignal = (): void => stop.abort();
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        let cursor = opts.cursor ?? '';
        let first = true;
        try {
          for await (const batch of c.watch({ path, ...(opts.cursor !== undefined ? { cursor: opts.cursor } : {}), signal: stop.signal })) {
            cursor = batch.cursor;
            // Said on stderr so scripts reading stdout see only changes; tests wait for it.
            if (first && out().quiet !== true) process.stderr.write(`watching ${path} from cursor ${cursor}\n`);
            first = false;
            for (const change of batch.changes) line(out().json === true ? { ...change, cursor } : changeLine(change));
          }
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
        // Interrupted: say where to resume, so a later watch misses nothing.
        if (out().quiet !== true && cursor !== '') process.stderr.write(`resume with: cairn watch ${path} --cursor ${cursor}\n`);
      }),
    );

  program
    .command('usage')
    .description('count files, folders and bytes (current versions) under a folder (default /), and the tenant\'s kept, stored and quota bytes')
    .argument('[path]', 'folder', '/')
    .action(async (path: string) =>
      withClient(async (c) => {
        const u = await c.usage(path);
        if (out().json === true) line({ path, ...u });
        else {
          line(`${path}: ${u.files} files, ${u.folders} folders, ${u.bytes} bytes`);
          const quota = u.quotaBytes > 0 ? ` of a ${u.quotaBytes}-byte quota (${((100 * u.tenantVersionBytes) / u.quotaBytes).toFixed(1)}%)` : ', no quota';
          line(`tenant: ${u.tenantVersionBytes} bytes in ${u.tenantVersions} kept versions${quota}; ${u.tenantStoredBytes} bytes stored`);
        }
      }),
    );
}
