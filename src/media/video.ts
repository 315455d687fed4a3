// Video sources: ffprobe for duration, codecs, bitrate and dimensions, ffmpeg for one poster
// frame (PNG). Both run as child processes with a wall-clock cap and a cap on their output;
// a missing binary is a clear, permanent failure.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MediaFailure } from './options.js';

export interface VideoInfo {
  durationSeconds: number | undefined;
  bitrate: number | undefined;
  container: string | undefined;
  width: number | undefined;
  height: number | undefined;
  videoCodec: string | undefined;
  audioCodec: string | undefined;
}

interface Caps {
  readonly timeoutMs: number;
  readonly maxOutputBytes: number;
}

/** Runs `cmd` to completion: stdout (capped), or a MediaFailure with a reason. */
export function runCapped(cmd: string, args: readonly string[], caps: Caps): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = '';
    let failure: MediaFailure | undefined;
    const kill = (f: MediaFailure): void => {
      failure ??= f;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => kill(new MediaFailure('video_failed', `${cmd} ran longer than ${caps.timeoutMs} ms`, { transient: true })), caps.timeoutMs);
    child.stdout.on('data', (d: Buffer) => {
      outBytes += d.length;
      if (outBytes > caps.maxOutputBytes) kill(new MediaFailure('video_failed', `${cmd} wrote more than ${caps.maxOutputBytes} bytes`));
      else out.push(d);
    });
    child.stderr.on('data', (d: Buffer) => {
      if (err.length < 4096) err += d.toString();
    });
    child.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(e.code === 'ENOENT' ? new MediaFailure('ffmpeg_missing', `${cmd} is not installed on this media worker (install ffmpeg)`) : new MediaFailure('video_failed', `${cmd}: ${e.message}`, { transient: true }));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (failure !== undefined) reject(failure);
      else if (code !== 0) reject(new MediaFailure('video_failed', `${cmd} exited with ${String(code)}: ${err.trim().split('\n').slice(-3).join(' | ').slice(0, 500)}`));
      else resolve(Buffer.concat(out));
    });
  });
}

const num = (v: unknown): number | undefined => {
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : NaN;
  return Number.isFinite(n) ? n : undefined;
};

export function parseProbe(json: string): VideoInfo {
  const probe = JSON.parse(json) as { format?: Record<string, unknown>; streams?: Array<Record<string, unknown>> };
  const streams = probe.streams ?? [];
  const video = streams.find((s) => s['codec_type'] === 'video' && (s['disposition'] as Record<string, unknown> | undefined)?.['attached_pic'] !== 1);
  const audio = streams.find((s) => s['codec_type'] === 'audio');
  const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v.slice(0, 64) : undefined);
  return {
    durationSeconds: num(probe.format?.['duration']),
    bitrate: num(probe.format?.['bit_rate']),
    container: str(probe.format?.['format_name']),
    width: num(video?.['width']),
    height: num(video?.['height']),
    videoCodec: str(video?.['codec_name']),
    audioCodec: str(audio?.['codec_name']),
  };
}

/** Probes the video and grabs a poster frame (PNG) from 10% in (at most 1 s). */
export async function probeVideo(data: Uint8Array, caps: Caps): Promise<{ info: VideoInfo; poster: Buffer }> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-media-'));
  try {
    // A file, not a pipe: MP4s with the index at the end need to seek.
    const file = join(dir, 'source');
    await writeFile(file, data, { mode: 0o600 });
    const json = await runCapped('ffprobe', ['-v', 'error', '-print_format', 'json', '-show_format', '-show_streams', file], { timeoutMs: caps.timeoutMs, maxOutputBytes: Math.min(caps.maxOutputBytes, 4 * 1024 * 1024) });
    let info: VideoInfo;
    try {
      info = parseProbe(json.toString('utf8'));
    } catch {
      throw new MediaFailure('video_failed', 'ffprobe printed no readable JSON');
    }
    if (info.videoCodec === undefined) throw new MediaFailure('video_failed', 'the file has no video stream');
    const at = info.durationSeconds !== undefined ? Math.min(1, info.durationSeconds / 10) : 0;
    const poster = await runCapped('ffmpeg', ['-nostdin', '-v', 'error', '-ss', at.toFixed(3), '-i', file, '-frames:v', '1', '-an', '-sn', '-f', 'image2pipe', '-vcodec', 'png', 'pipe:1'], caps);
    if (poster.length === 0) throw new MediaFailure('video_failed', 'ffmpeg produced no poster frame');
    return { info, poster };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
