// The `cairn` media commands: `thumb` (write one thumbnail size of a version), `media info` (what
// the media workers extracted) and `thumbs` (a folder's files and their thumbnail state, paged).
// Human output by default, JSON with --json; errors (a thumbnail not ready: CAIRN_UNAVAILABLE,
// exit 6) exit through exit.ts.
import { randomBytes } from 'node:crypto';
import { rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Command } from 'commander';
import { CairnError, isCairnError } from '../common/errors.js';
import { CairnMedia, checkThumbnailSize, resolveClientSettings, type MediaInfo, type ThumbnailEntry } from '../client/index.js';
import { parseDuration } from './share-commands.js';
import type { GlobalOptions } from './global-options.js';


const EXTENSIONS: Record<string, string> = { 'image/webp': 'webp', 'image/avif': 'avif', 'image/jpeg': 'jpg', 'image/png': 'png' };

function positiveInt(name: string, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1 || n > max) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${name} must be an integer in 1..${max}, got "${value}"`);
    return n;
  };
}

function sizeOption(value: string): number {
  if (!/^\d+$/.test(value)) throw new CairnError('CAIRN_INVALID_ARGUMENT', `--size must be 128, 512, 1024 or 2048, got "${value}"`);
  return checkThumbnailSize(Number(value));
}

function versionOption(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) throw new CairnError('CAIRN_INVALID_ARGUMENT', `--version must be a non-negative integer, got "${value}"`);
  return Number(value);
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** The default output name: "<name without extension>.<size>.<ext>" in the current folder. */
function defaultOutput(remote: string, size: number, contentType: string): string {
  const name = basename(remote);
  const dot = name.lastIndexOf('.');
  const stem = dot > 0 ? name.slice(0, dot) : name;
  return `${stem}.${size}.${EXTENSIONS[contentType] ?? 'img'}`;
}

/** Writes `data` to `path` through a temporary file in the same folder, renamed into place. */
async function writeAtomically(path: string, data: Buffer): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString('hex')}.part`);
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** The human form of `cairn media info`: one line per field the server returned. */
export function mediaInfoText(i: MediaInfo): string {
  const lines = [`${i.path} (version ${i.version}): ${i.state}`];
  if (i.state === 'failed') lines.push(`  error: ${i.error || 'media processing failed'}`);
  const m = i.media ?? {};
  const field = (label: string, value: unknown): void => {
    if (value === undefined || value === null || value === '') return;
    lines.push(`  ${label}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);
  };
  field('type', m['type']);
  field('kind', m['kind']);
  field('thumbnail format', m['format']);
  if (typeof m['width'] === 'number' && typeof m['height'] === 'number') lines.push(`  size: ${m['width']} × ${m['height']}`);
  field('frames', m['frames']);
  const exif = m['exif'];
  if (exif !== null && typeof exif === 'object') for (const [k, v] of Object.entries(exif as Record<string, unknown>)) field(`exif ${k}`, v);
  const gps = m['gps'] as { latitude?: number; longitude?: number; altitude?: number } | undefined;
  if (gps !== undefined && typeof gps.latitude === 'number' && typeof gps.longitude === 'number') lines.push(`  gps: ${gps.latitude}, ${gps.longitude}${typeof gps.altitude === 'number' ? ` (altitude ${gps.altitude} m)` : ''}`);
  const video = m['video'];
  if (video !== null && typeof video === 'object') for (const [k, v] of Object.entries(video as Record<string, unknown>)) field(`video ${k}`, v);
  for (const [k, v] of Object.entries(m)) if (!['v', 'state', 'type', 'kind', 'format', 'width', 'height', 'frames', 'exif', 'gps', 'video', 'error', 'reason'].includes(k)) field(k, v);
  return lines.join('\n');
}

function entryLine(e: ThumbnailEntry): string[] {
  return [e.path, e.state, e.state === 'ready' ? `${e.width}×${e.height}` : '-', String(e.version)];
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

/** Adds `thumb`, `media info` and `thumbs` to `program`. */
export function registerMediaCommands(program: Command): void {
  const g = (): GlobalOptions => program.opts<GlobalOptions>();
  const out = (text: string): void => {
    if (g().quiet !== true) process.stdout.write(text.endsWith('\n') ? text : text + '\n');
  };
  const json = (value: unknown): void => void process.stdout.write(JSON.stringify(value) + '\n');
  const withMedia = async (fn: (m: CairnMedia) => Promise<void>): Promise<void> => {
    const o = g();
    const m = new CairnMedia(resolveClientSettings({ endpoint: o.endpoint, token: o.token, tlsCa: o.tlsCa, tlsCert: o.tlsCert, tlsKey: o.tlsKey }), o.owner !== undefined ? { owner: o.owner } : {});
    try {
      await fn(m);
    } finally {
      m.close();
    }
  };

  program
    .command('thumb')
    .description('write a thumbnail of an image or video (one size of the 128/512/1024/2048 ladder)')
    .argument('<remote>', 'remote file')
    .option('--size <px>', 'ladder size: 128 (square crop), 512, 1024 or 2048', sizeOption, 512)
    .option('-o, --output <file>', 'where to write it ("-" for stdout; default <name>.<size>.<ext> here)')
    .option('--version <n>', 'a version of the file (default: the current one)', versionOption)
    .option('--wait', 'poll with backoff until the thumbnail is ready (see --timeout)')
    .option('--timeout <duration>', 'with --wait: give up after this long, e.g. 30s or 5m', parseDuration, 60)
    .action(async (remote: string, opts: { size: number; output?: string; version?: number; wait?: boolean; timeout: number }) => {
      await withMedia(async (m) => {
        const started = Date.now();
        let attempts = 1;
        let thumb;
        try {
          thumb = await m.thumbnail(remote, opts.size, {
            ...(opts.version !== undefined ? { version: opts.version } : {}),
            ...(opts.wait === true ? { wait: { timeoutMs: opts.timeout * 1000, onRetry: () => void attempts++ } } : {}),
          });
        } catch (err) {
          if (!isCairnError(err, 'CAIRN_UNAVAILABLE')) throw err;
          const hint = opts.wait === true ? `; not ready after ${Math.round((Date.now() - started) / 1000)} s and ${attempts} attempt(s) (--timeout ${opts.timeout}s)` : '; try again later, or use --wait';
          throw new CairnError('CAIRN_UNAVAILABLE', `${err.message}${hint}`, err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {});
        }
        const target = opts.output ?? defaultOutput(remote, opts.size, thumb.contentType);
        const info = { path: remote, version: thumb.version, size: opts.size, width: thumb.width, height: thumb.height, contentType: thumb.contentType, etag: thumb.etag, bytes: thumb.data.length, output: target, attempts };
        if (target === '-') {
          process.stdout.write(thumb.data);
          if (g().json === true) process.stderr.write(JSON.stringify(info) + '\n');
          return;
        }
        await writeAtomically(target, thumb.data);
        if (g().json === true) json(info);
        else out(`wrote ${target}: ${thumb.width} × ${thumb.height} ${thumb.contentType}, ${bytes(thumb.data.length)} (version ${thumb.version})`);
      });
    });

  const media = program.command('media').description('media metadata of images and videos');
  media
    .command('info')
    .description('width, height, format, EXIF (GPS for owners) and video fields of a file version')
    .argument('<remote>', 'remote file')
    .option('--version <n>', 'a version of the file (default: the current one)', versionOption)
    .action(async (remote: string, opts: { version?: number }) => {
      await withMedia(async (m) => {
        const info = await m.info(remote, opts.version !== undefined ? { version: opts.version } : {});
        if (g().json === true) json(info);
        else out(mediaInfoText(info));
      });
    });

  program
    .command('thumbs')
    .description("list a folder's files and whether each has a thumbnail (paged)")
    .argument('<remote-folder>', 'remote folder')
    .option('--size <px>', 'the ladder size to report', sizeOption, 128)
    .option('--page-size <n>', 'entries fetched per request (1..200)', positiveInt('--page-size', 200), 100)
    .action(async (folder: string, opts: { size: number; pageSize: number }) => {
      await withMedia(async (m) => {
        const rows: ThumbnailEntry[] = [];
        for await (const e of m.listAllThumbnails(folder, { size: opts.size, pageSize: opts.pageSize })) {
          if (e.folder) continue;
          if (g().json === true) json(e);
          else rows.push(e);
        }
        if (g().json === true) return;
        if (rows.length === 0) return out(`no files in ${folder}`);
        const ready = rows.filter((e) => e.state === 'ready').length;
        out(table([['PATH', 'THUMBNAIL', `${opts.size} PX`, 'VERSION'], ...rows.map(entryLine)]) + `${ready} of ${rows.length} file(s) have a ${opts.size} px thumbnail`);
      });
    });
}
