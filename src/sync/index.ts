// The folder sync client (`cairn sync`): keeps a local folder and a remote folder in step in both
// directions. Client-side room: uses the SDK, chunking and common only — no server code.
import { setMaxListeners } from 'node:events';
import { watch as watchTree, type FSWatcher } from 'chokidar';
import { isCairnError, type Change } from '../client/index.js';
import { SyncEngine, type SyncEngineOptions, type SyncEvent, type SyncStats } from './engine.js';

export { SyncEngine, type SyncEngineOptions, type SyncEvent, type SyncProgress, type SyncStats } from './engine.js';
export { conflictedCopyName } from './names.js';
export { DEFAULT_IGNORES, IGNORE_FILE } from './ignore-rules.js';
export { hashFile } from './hash.js';

export interface RunSyncOptions extends SyncEngineOptions {
  /** Reconcile once and return instead of following both sides. */
  readonly once?: boolean;
  /** Stops a live sync (in-flight transfers are abandoned; the next run redoes them). */
  readonly signal: AbortSignal;
  /** Full local rescan period, a safety net for missed file-system events (default 60 s). */
  readonly rescanIntervalMs?: number;
  /** Quiet time after a local file-system event before scanning (default 250 ms). */
  readonly debounceMs?: number;
  /** Called once the engine is open, e.g. to show progress. */
  readonly onOpen?: (engine: SyncEngine) => void;
}

export interface SyncResult {
  readonly stats: SyncStats;
  readonly cursor: string;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

/**
 * Runs a sync: catch up with the remote side (from the stored cursor, or a metadata-only listing),
 * send local changes, then — unless `once` — follow local file-system events, a periodic rescan
 * and the remote change watch until `signal` aborts. Work runs one task at a time.
 */
export async function runSync(options: RunSyncOptions): Promise<SyncResult> {
  const { signal, log } = options;
  // Every transfer in flight listens on the signal (and removes its listener when done).
  setMaxListeners(4 * (options.concurrency ?? 8) + 16, signal);
  const engine = await SyncEngine.open(options);
  const emit = (e: SyncEvent): void => options.onEvent?.(e);
  let chain: Promise<void> = Promise.resolve();
  let queued = 0;
  let lastIdle = '';
  const snapshot = (): string => JSON.stringify(engine.stats);
  const idle = (): void => {
    const now = snapshot();
    if (now === lastIdle) return;
    lastIdle = now;
    emit({ type: 'idle', cursor: engine.cursor });
  };
  const enqueue = (name: string, fn: () => Promise<void>): Promise<void> => {
    queued++;
    const run = chain.then(async () => {
      if (signal.aborted) return;
      try {
        await fn();
      } catch (err) {
        if (signal.aborted) return;
        log.warn({ err, task: name }, 'sync task failed; will retry');
        emit({ type: 'error', path: options.remoteRoot, code: isCairnError(err) ? err.code : 'ERROR', message: `${name}: ${(err as Error).message}` });
        engine.stats.errors++;
        scheduleScan(5_000);
      } finally {
        queued--;
        if (queued === 0 && !signal.aborted) idle();
      }
    });
    chain = run;
    return run;
  };
  let scanTimer: NodeJS.Timeout | undefined;
  let scanQueued = false;
  let firstAsked = 0;
  const scheduleScan = (delay = options.debounceMs ?? 250): void => {
    if (signal.aborted || options.once === true) return;
    if (scanTimer !== undefined) {
      // Debounce, but a steady stream of events (a big copy) must not postpone the scan forever.
      if (Date.now() - firstAsked > 2_000) return;
      clearTimeout(scanTimer);
    } else firstAsked = Date.now();
    scanTimer = setTimeout(() => {
      scanTimer = undefined;
      if (scanQueued) return;
      scanQueued = true;
      void enqueue('local scan', async () => {
        scanQueued = false;
        await engine.pushLocal(signal);
        if (engine.rescanWanted) scheduleScan();
      });
    }, delay);
  };

  let watcher: FSWatcher | undefined;
  let rescan: NodeJS.Timeout | undefined;
  try {
    options.onOpen?.(engine);
    emit({ type: 'start', localRoot: options.localRoot, remoteRoot: options.remoteRoot, resumed: engine.resumed });
    await engine.ensureRemoteRoot();
    await enqueue('catch up', () => engine.catchUp(signal));
    await enqueue('local scan', async () => {
      await engine.pushLocal(signal);
      // Conflicted copies made while sending are sent in the same run.
      for (let i = 0; i < 3 && engine.rescanWanted && !signal.aborted; i++) await engine.pushLocal(signal);
    });
    if (options.once === true || signal.aborted) {
      await chain;
      return { stats: engine.stats, cursor: engine.cursor };
    }

    watcher = watchTree(options.localRoot, {
      ignoreInitial: true,
      followSymlinks: false,
      ignored: (path, stats) => engine.ignoresAbsolute(path, stats?.isDirectory() === true),
    });
    watcher.on('all', () => scheduleScan());
    // Changes made while the first pass ran, before the watcher was ready.
    watcher.once('ready', () => scheduleScan());
    watcher.on('error', (err) => log.warn({ err }, 'file-system watcher error; the periodic rescan covers it'));
    rescan = setInterval(() => scheduleScan(0), options.rescanIntervalMs ?? 60_000);

    let pending: Array<{ change: Change; notifiedMs: number }> = [];
    let pendingCursor = '';
    let remoteQueued = false;
    const remote = (async () => {
      let failures = 0;
      while (!signal.aborted) {
        try {
          // The first catch-up failed (e.g. the server was down): do it before following the feed.
          if (!engine.resumed) await enqueue('catch up', () => engine.catchUp(signal));
          if (!engine.resumed) {
            await sleep(2_000, signal);
            continue;
          }
          for await (const batch of options.client.watch({ cursor: engine.cursor, path: options.remoteRoot, signal })) {
            failures = 0;
            // Batches that arrive while earlier work runs are applied together, so their
            // downloads run in parallel instead of one small batch at a time.
            const now = Date.now();
            for (const c of batch.changes) pending.push({ change: c, notifiedMs: now });
            pendingCursor = batch.cursor;
            if (remoteQueued) continue;
            remoteQueued = true;
            void enqueue('remote changes', async () => {
              remoteQueued = false;
              const todo = pending;
              const cursor = pendingCursor;
              pending = [];
              await engine.applyRemote(
                todo.map((p) => p.change),
                todo.map((p) => p.notifiedMs),
              );
              await engine.saveCursor(cursor);
              if (engine.rescanWanted) scheduleScan();
            });
          }
          await chain;
        } catch (err) {
          if (signal.aborted) break;
          if (isCairnError(err, 'CAIRN_CURSOR_EXPIRED')) {
            const cursor = err.metadata['snapshot_cursor'];
            await enqueue('re-list', async () => engine.relist('cursor-expired', cursor ?? (await engine.nowCursor(signal))));
            continue;
          }
          failures++;
          log.warn({ err }, 'remote watch failed; retrying');
          const cap = Math.min(30_000, 500 * 2 ** Math.min(failures, 6));
          await sleep(cap / 2 + Math.random() * (cap / 2), signal);
        }
      }
    })();
    await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
    await remote;
    await chain;
    return { stats: engine.stats, cursor: engine.cursor };
  } finally {
    if (scanTimer !== undefined) clearTimeout(scanTimer);
    if (rescan !== undefined) clearInterval(rescan);
    await watcher?.close();
    await chain.catch(() => undefined);
    await engine.close();
  }
}
