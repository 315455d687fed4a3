// Commit-time sniffing by magic bytes (never names) agrees with file-type on every format the
// pipeline takes, and classifies everything else as not media.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import sharp from 'sharp';
import { detectMedia, mediaClass, sniffMedia } from '../../src/media/index.js';
import { hasTool } from '../helpers/tools.js';
import { tempDir } from '../helpers/cluster.js';

test('sniffMedia agrees with file-type on the issue\'s formats and says "not media" otherwise', async (t) => {
  const base = sharp({ create: { width: 32, height: 24, channels: 3, background: '#8a4' } });
  const samples: Array<[string, Buffer]> = [
    ['image/jpeg', await base.clone().jpeg().toBuffer()],
    ['image/png', await base.clone().png().toBuffer()],
    ['image/webp', await base.clone().webp().toBuffer()],
    ['image/gif', await base.clone().gif().toBuffer()],
    ['image/tiff', await base.clone().tiff().toBuffer()],
    ['image/tiff', await base.clone().tiff({ bigtiff: false }).toBuffer()],
    ['image/avif', await base.clone().avif().toBuffer()],
    ['image/heif', await base.clone().heif({ compression: 'av1' }).toBuffer()],
    ['image/svg+xml', Buffer.from('\uFEFF<?xml version="1.0"?>\n<!-- drawing -->\n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')],
  ];
  if (hasTool('ffmpeg')) {
    const dir = tempDir(t);
    for (const [ext, type] of [['mp4', 'video/mp4'], ['webm', 'video/webm'], ['mov', 'video/quicktime'], ['mkv', 'video/x-matroska'], ['avi', 'video/x-msvideo']] as const) {
      const file = join(dir, `v.${ext}`);
      execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc=size=64x48:rate=5', '-t', '1', file]);
      samples.push([type, readFileSync(file)]);
    }
  } else {
    t.log('ffmpeg not installed: video containers not sampled');
  }
  for (const [type, data] of samples) {
    const sniffed = sniffMedia(data.subarray(0, 4096));
    const detected = await detectMedia(data);
    t.truthy(mediaClass(sniffed), `${type}: sniffed ${String(sniffed)}`);
    // The commit-time family must match what the worker's file-type check decides.
    t.is(mediaClass(sniffed), mediaClass(detected), `${type}: sniffed ${String(sniffed)}, file-type ${String(detected)}`);
    if (type.startsWith('image/') && type !== 'image/heif') t.is(detected, type);
  }
  for (const other of [Buffer.from('hello, world\n'), Buffer.from('PK\u0003\u0004 a zip'), Buffer.from('%PDF-1.7\n'), Buffer.from('<html><svg></svg></html>'), Buffer.alloc(0), Buffer.from([0xff, 0xd8])]) {
    t.is(sniffMedia(other), undefined, JSON.stringify(other.toString('latin1').slice(0, 20)));
    t.is(await detectMedia(other), undefined);
  }
  // A file named .jpg that is text is not media; a JPEG is media whatever its name (names are never read).
  t.is(sniffMedia(Buffer.from('not really a jpeg')), undefined);
});
