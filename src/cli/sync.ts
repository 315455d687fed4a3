// `cairn sync <local-dir> <remote-path>`: two-way folder sync. A live status line on a terminal,
// one JSON object per event with --json, a summary on exit; SIGINT stops cleanly and a later run
// resumes from the saved cursor.
import { mkdir, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { CairnError } from '../common/errors.js';
import { LOG_LEVELS, createLogger } from '../common/log.js';
import { normalizePath } from '../common/paths.js';
import type { CairnClient } from '../client/index.js';
import { runSync, type SyncEngine, type SyncEvent, type SyncStats } from '../sync/index.js';
import { EXIT } from './exit.js';

interface SyncFlags {
  once?: boolean;
  device?: string;
  stateDir?: string;
  maxFileBytes?: number;
  rescanIntervalMs?: number;
  concurrency?: number;
  logLevel: string;
}

function positiveInt(name: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) < 1) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${name} must be a positive integer, got "${value}"`);
    return Number(value);
  };
}

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** One human line per event worth telling (none for starts and idles). */
function describe(e: SyncEvent): string | undefined {
  switch (e.type) {
    case 'upload':
      return `↑ ${e.path} (v${e.version}, ${formatBytes(e.size)}, sent ${formatBytes(e.bytesSent)})`;
    case 'download':
      return `↓ ${e.path} (v${e.version}, ${formatBytes(e.size)})`;
    case 'delete':
      return `${e.side === 'remote' ? '↑' : '↓'} deleted ${e.path}${e.folder ? '/' : ''}`;
    case 'move':
      return `${e.side === 'remote' ? '↑' : '↓'} moved ${e.from} -> ${e.path}${e.folder ? '/' : ''}`;
    case 'mkdir':
      return `${e.side === 'remote' ? '↑' : '↓'} folder ${e.path}/`;
    case 'conflict':
      return `conflict: ${e.path} (${e.reason}); your version is kept as ${e.copy}`;
    case 'skip':
      return e.reason === 'too-large' ? `skipped ${e.path}: ${formatBytes(e.size ?? 0)} is over the size limit` : `skipped ${e.path}: ${e.reason}`;
    case 'error':
      return `error: ${e.path}: ${e.message} [${e.code}]`;
    case 'relist':
      return e.reason === 'folder' ? undefined : `listing ${e.path} (${e.reason === 'first-sync' ? 'first sync' : 'change feed cursor expired'}): unchanged files are not downloaded`;
    default:
      return undefined;
  }
}

function summaryLine(s: SyncStats, ms: number): string {
  return `sync: ${s.uploaded} uploaded (${formatBytes(s.bytesSent)} sent), ${s.downloaded} downloaded (${formatBytes(s.downloadedBytes)}), ${s.deleted} deleted, ${s.moved} moved, ${s.conflicts} conflicts, ${s.skipped} skipped, ${s.errors} errors in ${(ms / 1000).toFixed(1)} s`;
}

/** Adds `cairn sync` to `program`; `connect` builds a client from the global options. */
export function registerSync(program: Command, connect: () => CairnClient): void {
  program
    .command('sync')
    .description('keep a local folder and a remote folder in step, both ways (until interrupted, or --once)')
    .argument('<local-dir>', 'local folder (created if missing)')
    .argument('<remote-path>', 'remote folder, e.g. /photos')
    .option('--once', 'reconcile once and exit')
    .option('--device <name>', 'this device in conflicted-copy names (default: the host name)')
    .option('--state-dir <dir>', 'sync state folder (default <local-dir>/.cairn-sync)')
    .option('--max-file-bytes <n>', 'report, and do not upload, larger files (default 10 GiB)', positiveInt('--max-file-bytes'))
    .option('--rescan-interval-ms <ms>', 'full local rescan period, a safety net for missed events (default 60000)', positiveInt('--rescan-interval-ms'))
    .option('--concurrency <n>', 'transfers in flight at once (default 8)', positiveInt('--concurrency'))
    .option('--log-level <level>', `log level on stderr: ${LOG_LEVELS.join(', ')}`, 'warn')
    .action(async (localDir: string, remotePath: string, flags: SyncFlags) => {
      const g = program.opts<{ json?: boolean; quiet?: boolean }>();
      if (!(LOG_LEVELS as readonly string[]).includes(flags.logLevel)) throw new CairnError('CAIRN_INVALID_ARGUMENT', `--log-level must be one of ${LOG_LEVELS.join(', ')}`);
      const localRoot = resolve(localDir);
      await mkdir(localRoot, { recursive: true });
      if (!(await stat(localRoot)).isDirectory()) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${localDir} is not a folder`);
      const remoteRoot = /^\/+$/.test(remotePath) ? '/' : normalizePath(remotePath);
      const stateDir = resolve(flags.stateDir ?? join(localRoot, '.cairn-sync'));
      const log = createLogger({ level: flags.logLevel as (typeof LOG_LEVELS)[number], name: 'cairn-sync' });
      const json = g.json === true;
      const quiet = g.quiet === true;
      const tty = !json && !quiet && process.stderr.isTTY === true;
      const started = Date.now();

      let engine: SyncEngine | undefined;
      let statusShown = false;
      const clearStatus = (): void => {
        if (statusShown) process.stderr.write('\r\x1b[2K');
        statusShown = false;
      };
      // Throughput over the last few seconds, so the line does not flicker between bursts.
      const samples: Array<[number, number]> = [];
      const drawStatus = (): void => {
        if (!tty || engine === undefined) return;
        const p = engine.progress;
        const now = Date.now();
        samples.push([now, p.transferredBytes]);
        while (samples.length > 2 && samples[0]![0] < now - 3_000) samples.shift();
        const [t0, b0] = samples[0]!;
        const rate = now > t0 ? ((p.transferredBytes - b0) / (now - t0)) * 1000 : 0;
        const s = engine.stats;
        const state = p.pendingFiles > 0 ? `${p.pendingFiles} files (${formatBytes(p.pendingBytes)}) pending, ${formatBytes(rate)}/s` : 'up to date';
        clearStatus();
        process.stderr.write(`sync ${remoteRoot}: ${state} · ↑${s.uploaded} ↓${s.downloaded}${s.conflicts > 0 ? ` · ${s.conflicts} conflicts` : ''}`);
        statusShown = true;
      };
      const onEvent = (e: SyncEvent): void => {
        if (json) {
          process.stdout.write(JSON.stringify({ ts: Date.now(), ...e }) + '\n');
          return;
        }
        if (quiet && e.type !== 'conflict' && e.type !== 'error') return;
        const text = describe(e);
        if (text === undefined) return;
        clearStatus();
        (e.type === 'error' || e.type === 'conflict' || e.type === 'skip' ? process.stderr : process.stdout).write(text + '\n');
        drawStatus();
      };

      const stop = new AbortController();
      let signals = 0;
      const onSignal = (): void => {
        signals++;
        if (signals > 1) process.exit(EXIT.FAILURE);
        stop.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      const timer = tty ? setInterval(drawStatus, 500) : undefined;
      const client = connect();
      try {
        const result = await runSync({
          client,
          localRoot,
          remoteRoot,
          stateDir,
          device: flags.device ?? hostname(),
          log,
          signal: stop.signal,
          ...(flags.once === true ? { once: true } : {}),
          ...(flags.maxFileBytes !== undefined ? { maxFileBytes: flags.maxFileBytes } : {}),
          ...(flags.rescanIntervalMs !== undefined ? { rescanIntervalMs: flags.rescanIntervalMs } : {}),
          ...(flags.concurrency !== undefined ? { concurrency: flags.concurrency } : {}),
          onEvent,
          onOpen: (e) => (engine = e),
        });
        clearStatus();
        const ms = Date.now() - started;
        if (json) process.stdout.write(JSON.stringify({ ts: Date.now(), type: 'summary', interrupted: stop.signal.aborted, ms, cursor: result.cursor, ...result.stats }) + '\n');
        else if (!quiet) process.stderr.write(summaryLine(result.stats, ms) + (stop.signal.aborted ? ' (interrupted; run again to resume)' : '') + '\n');
        if (flags.once === true && result.stats.errors > 0) process.exitCode = EXIT.FAILURE;
      } finally {
        if (timer !== undefined) clearInterval(timer);
        clearStatus();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        client.close();
        log.flush();
      }
    });
}
