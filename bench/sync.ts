// `npm run bench -- sync [--json] [--files 2000] [--big 5] [--big-mib 64] [--rounds 10]`: two
// `cairn sync` processes (devices A and B) on one embedded server; A gets a tree of small files
// and a few large ones, and we time until B holds all of it, against `rsync -a` of the same tree
// between two local directories in the same run. Also: notification-to-download-start latency on
// B, in the bulk transfer and for single-file changes.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile, lstat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { arg, cairnCommand, randomFile, startEmbedded } from './_embedded.js';
import type { BenchMain } from './report.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

type Event = { ts: number; type: string; path?: string; [k: string]: unknown };

interface Device {
  readonly events: Event[];
  waitFor(pred: (events: Event[]) => boolean, timeoutMs: number): Promise<void>;
  stop(): Promise<void>;
}

function startDevice(endpoint: string, token: string, dir: string, device: string): Device {
  const proc: ChildProcess = spawn(process.execPath, [...cairnCommand(), '--endpoint', endpoint, '--token', token, '--json', 'sync', dir, '/bench', '--device', device], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const events: Event[] = [];
  let buf = '';
  const waiters = new Set<() => void>();
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim() !== '') events.push(JSON.parse(line) as Event);
    }
    for (const w of waiters) w();
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return {
    events,
    waitFor(pred, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (!pred(events)) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`device ${device}: condition not met in ${timeoutMs} ms; last events ${JSON.stringify(events.slice(-5))}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    async stop() {
      proc.kill('SIGINT');
      await exited;
    },
  };
}

async function hashTree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    for (const name of await readdir(join(dir, rel))) {
      const r = rel === '' ? name : `${rel}/${name}`;
      if (r === '.cairn-sync') continue;
      const st = await lstat(join(dir, r));
      if (st.isDirectory()) await walk(r);
      else out.set(r, createHash('sha256').update(await readFile(join(dir, r))).digest('hex'));
    }
  };
  await walk('');
  return out;
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

export const run: BenchMain = async (args) => {
  const files = Number(arg(args, '--files', '2000'));
  const bigCount = Number(arg(args, '--big', '5'));
  const bigMiB = Number(arg(args, '--big-mib', '64'));
  const rounds = Number(arg(args, '--rounds', '10'));
  const work = await mkdtemp(join(tmpdir(), 'cairn-bench-sync-'));
  const server = await startEmbedded(join(work, 'server'));
  const devices: Device[] = [];
  try {
    // The tree, built once outside both devices.
    const staging = join(work, 'tree');
    let bytes = 0;
    for (let i = 0; i < files; i++) {
      const dir = join(staging, `dir-${i % 40}`);
      await mkdir(dir, { recursive: true });
      const data = randomBytes(1024 + ((i * 7919) % 15360));
      bytes += data.length;
      await writeFile(join(dir, `file-${i}.dat`), data);
    }
    await mkdir(join(staging, 'large'), { recursive: true });
    for (let i = 0; i < bigCount; i++) await randomFile(join(staging, 'large', `big-${i}.bin`), bigMiB * 1024 * 1024);
    bytes += bigCount * bigMiB * 1024 * 1024;
    const total = files + bigCount;

    // Anchor: rsync -a of the same tree between two local directories.
    const rsyncStart = performance.now();
    await promisify(execFile)('rsync', ['-a', staging + '/', join(work, 'rsync-copy') + '/']);
    const rsyncSeconds = (performance.now() - rsyncStart) / 1000;

    const a = join(work, 'a');
    const b = join(work, 'b');
    await mkdir(a);
    await mkdir(b);
    const devA = startDevice(server.endpoint, server.token, a, 'A');
    const devB = startDevice(server.endpoint, server.token, b, 'B');
    devices.push(devA, devB);
    await devA.waitFor((ev) => ev.some((e) => e.type === 'idle'), 60_000);
    await devB.waitFor((ev) => ev.some((e) => e.type === 'idle'), 60_000);

    // A gets the whole tree at once (one rename into its folder); B must hold all of it.
    const t0 = Date.now();
    await rename(staging, join(a, 'tree'));
    const downloads = (ev: Event[]): number => ev.filter((e) => e.type === 'download' && e.path?.startsWith('tree/') === true).length;
    await devB.waitFor((ev) => downloads(ev) >= total, 1_800_000);
    const lastDownload = Math.max(...devB.events.filter((e) => e.type === 'download').map((e) => e.ts));
    const syncSeconds = (lastDownload - t0) / 1000;
    const firstUpload = Math.min(...devA.events.filter((e) => e.type === 'upload-start').map((e) => e.ts));
    const lastUpload = Math.max(...devA.events.filter((e) => e.type === 'upload').map((e) => e.ts));
    const bulkLatency = devB.events.filter((e) => e.type === 'download-start' && e.path?.startsWith('tree/') === true).map((e) => e.ts - (e['notifiedMs'] as number));
    const [ha, hb] = await Promise.all([hashTree(join(a, 'tree')), hashTree(join(b, 'tree'))]);
    const identical = ha.size === hb.size && [...ha].every(([k, v]) => hb.get(k) === v);

    // Single changes: notification (the watch batch reaching B) → download start, and commit → start.
    const notifyToStart: number[] = [];
    const commitToStart: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const name = `ping/p${i}.txt`;
      await mkdir(join(a, 'ping'), { recursive: true });
      await writeFile(join(a, name), `ping ${i}\n`);
      await devB.waitFor((ev) => ev.some((e) => e.type === 'download' && e.path === name), 60_000);
      const start = devB.events.find((e) => e.type === 'download-start' && e.path === name)!;
      notifyToStart.push(start.ts - (start['notifiedMs'] as number));
      commitToStart.push(start.ts - (start['committedMs'] as number));
    }

    return {
      bench: 'sync',
      ratio: syncSeconds / rsyncSeconds,
      target: 10,
      better: 'lower',
      figures: {
        files: total,
        tree_bytes: bytes,
        converge_seconds: syncSeconds,
        rsync_anchor_seconds: rsyncSeconds,
        a_upload_seconds: (lastUpload - firstUpload) / 1000,
        converge_mib_per_second: bytes / 1024 / 1024 / syncSeconds,
        trees_identical: identical ? 'yes' : 'NO',
        bulk_notify_to_download_start_p50_ms: percentile(bulkLatency, 50),
        bulk_notify_to_download_start_p99_ms: percentile(bulkLatency, 99),
        single_notify_to_download_start_p50_ms: percentile(notifyToStart, 50),
        single_notify_to_download_start_max_ms: Math.max(...notifyToStart),
        single_commit_to_download_start_p50_ms: percentile(commitToStart, 50),
        load_average_1m: (await readFile('/proc/loadavg', 'utf8').catch(() => '?')).split(' ')[0] ?? '?',
      },
    };
  } finally {
    for (const d of devices) await d.stop();
    await server.stop();
    await rm(work, { recursive: true, force: true });
  }
};
