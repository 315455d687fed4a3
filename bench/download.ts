// Download: read a 1 GiB file back from an embedded server (RF 1) versus a raw grpc-js server
// stream of 1 MiB messages on loopback, in the same run. Like the anchor, which only counts what
// it receives, the figure is the SDK's `read` stream consumed in memory: ratio = Cairn MB/s ÷ raw
// stream MB/s (≥ 0.7). The SDK's `get` to a file is reported too (`get_ratio`): it adds the
// page-cache writes of 1 GiB, which the anchor does not make.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { BenchMain } from './report.js';
import { arg, cryptoRates, randomFile, startEmbedded } from './_embedded.js';

const MiB = 1024 * 1024;

const identity = (b: Buffer): Buffer => b;
const RAW: grpc.ServiceDefinition = {
  Stream: { path: '/bench.Raw/Stream', requestStream: false, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity, originalName: 'stream' },
};

/** Seconds to receive `mib` messages of 1 MiB over a loopback grpc-js server stream. */
async function rawStream(mib: number): Promise<number> {
  const server = new grpc.Server({ 'grpc.max_send_message_length': 8 * MiB });
  const payload = Buffer.alloc(MiB, 7);
  server.addService(RAW, {
    Stream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      let sent = 0;
      const pump = (): void => {
        while (sent < mib) {
          sent++;
          if (!call.write(payload)) {
            call.once('drain', pump);
            return;
          }
        }
        call.end();
      };
      pump();
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': 8 * MiB });
  try {
    const started = performance.now();
    let bytes = 0;
    const call = client.makeServerStreamRequest('/bench.Raw/Stream', identity, identity, Buffer.alloc(0));
    for await (const msg of call as AsyncIterable<Buffer>) bytes += msg.length;
    if (bytes !== mib * MiB) throw new Error(`raw stream sent ${bytes} bytes`);
    return (performance.now() - started) / 1000;
  } finally {
    client.close();
    server.forceShutdown();
  }
}

export const run: BenchMain = async (args) => {
  const mib = Number(arg(args, '--mib', '1024'));
  const root = await mkdtemp(join(tmpdir(), 'cairn-bench-download-'));
  try {
    const file = join(root, 'data.bin');
    await randomFile(file, mib * MiB);
    const server = await startEmbedded(join(root, 'cairn'));
    try {
      await server.client.upload(file, '/bench/download.bin', { cacheDir: join(root, 'cache') });
      await rm(file);
      // Rounds of: the raw stream, the SDK's read stream, get to a file; the best of each kept
      // (the machine is shared: each side gets its quietest moment).
      const rounds = Number(arg(args, '--rounds', '2'));
      const out = join(root, 'copy.bin');
      let rawSeconds = Infinity;
      let singleSeconds = Infinity;
      let cairnSeconds = Infinity;
      for (let round = 0; round < rounds; round++) {
        rawSeconds = Math.min(rawSeconds, await rawStream(mib));
        let started = performance.now();
        let bytes = 0;
        for await (const part of server.client.read('/bench/download.bin')) if ('data' in part) bytes += part.data.length;
        singleSeconds = Math.min(singleSeconds, (performance.now() - started) / 1000);
        if (bytes !== mib * MiB) throw new Error(`read ${bytes} bytes`);
        // The page cache absorbs the writes; nothing is synced.
        started = performance.now();
        const info = await server.client.get('/bench/download.bin', out);
        cairnSeconds = Math.min(cairnSeconds, (performance.now() - started) / 1000);
        if (info.size !== mib * MiB) throw new Error(`got ${info.size} bytes`);
        await rm(out);
      }
      const readRate = (mib * MiB) / 1e6 / singleSeconds;
      const cairnRate = (mib * MiB) / 1e6 / cairnSeconds;
      const rawRate = (mib * MiB) / 1e6 / rawSeconds;
      // The per-byte CPU an authenticated, decrypted read needs here (AES-GCM; the block's
      // SHA-256 is checked only when GCM fails), against the raw stream's own (which is all
      // gRPC): with both cores perfectly busy, the best Cairn rate is 2 ÷ (1/aes + 1/raw), and the
      // best ratio that rate over the raw one.
      const rates = cryptoRates();
      const perByte = 1 / rates.aesGcmDecrypt + 1 / (rawRate * 1e6);
      const ceiling = Math.min(1, 2 / perByte / (rawRate * 1e6));
      return {
        bench: 'download',
        ratio: readRate / rawRate,
        target: 0.7,
        better: 'higher',
        figures: { file_mib: mib, rounds, cairn_read_seconds: singleSeconds, cairn_read_mb_per_s: readRate, cairn_get_seconds: cairnSeconds, cairn_get_mb_per_s: cairnRate, get_ratio: cairnRate / rawRate, raw_grpc_stream_seconds: rawSeconds, raw_grpc_stream_mb_per_s: rawRate, sha256_mb_per_s_core: rates.sha256 / 1e6, aes_gcm_decrypt_mb_per_s_core: rates.aesGcmDecrypt / 1e6, ratio_ceiling_two_cores: ceiling },
      };
    } finally {
      await server.stop();
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
};
