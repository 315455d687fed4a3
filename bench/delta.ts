// Delta: a 1-byte insert in the middle of a 256 MiB file already uploaded. Cairn's wire bytes
// (requests and responses of the second upload: FindMissingChunks, UploadChunks, the diff commit)
// versus `rsync --no-whole-file --stats` between two local folders (bytes sent + received).
// ratio = Cairn ÷ rsync (≤ 1.0).
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rm, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchMain } from './report.js';
import { arg, randomFile, startEmbedded } from './_embedded.js';

const MiB = 1024 * 1024;

function rsyncBytes(from: string, to: string): Promise<{ sent: number; received: number }> {
  return new Promise((resolve, reject) => {
    execFile('rsync', ['--no-whole-file', '--stats', from, to], (err, stdout, stderr) => {
      if (err) return reject(new Error(`rsync failed: ${stderr}`, { cause: err }));
      const num = (label: string): number => Number((new RegExp(`${label}: ([\\d,]+)`).exec(stdout)?.[1] ?? 'NaN').replace(/,/g, ''));
      resolve({ sent: num('Total bytes sent'), received: num('Total bytes received') });
    });
  });
}

/** Inserts one byte in the middle of the file. */
async function insertByte(path: string): Promise<void> {
  const data = await readFile(path);
  const mid = data.length >> 1;
  await writeFile(path, Buffer.concat([data.subarray(0, mid), Buffer.from([0x5a]), data.subarray(mid)]));
}

export const run: BenchMain = async (args) => {
  const mib = Number(arg(args, '--mib', '256'));
  const root = await mkdtemp(join(tmpdir(), 'cairn-bench-delta-'));
  try {
    const src = join(root, 'src');
    const dst = join(root, 'dst');
    await mkdir(src);
    await mkdir(dst);
    const file = join(src, 'data.bin');
    await randomFile(file, mib * MiB);
    await copyFile(file, join(dst, 'data.bin'));
    const server = await startEmbedded(join(root, 'cairn'));
    try {
      const cacheDir = join(root, 'cache');
      const first = await server.client.upload(file, '/bench/delta.bin', { cacheDir });
      await insertByte(file);
      const second = await server.client.upload(file, '/bench/delta.bin', { cacheDir });
      // rsync the same edit between the two folders (the destination holds the old file).
      const rs = await rsyncBytes(file, join(dst, 'data.bin'));
      const rsyncTotal = rs.sent + rs.received;
      // Check both ends hold the edited file.
      const fh = await open(join(dst, 'data.bin'), 'r');
      const size = (await fh.stat()).size;
      await fh.close();
      if (size !== mib * MiB + 1 || second.info.size !== mib * MiB + 1) throw new Error('edit not applied');
      return {
        bench: 'delta',
        ratio: second.wireBytes / rsyncTotal,
        target: 1.0,
        better: 'lower',
        figures: {
          file_mib: mib,
          cairn_wire_bytes: second.wireBytes,
          cairn_chunks_sent: second.chunksSent,
          cairn_chunk_bytes_sent: second.bytesSent,
          cairn_chunks_total: second.chunks,
          cairn_first_upload_wire_bytes: first.wireBytes,
          rsync_bytes_sent: rs.sent,
          rsync_bytes_received: rs.received,
          rsync_total_bytes: rsyncTotal,
        },
      };
    } finally {
      await server.stop();
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
};
