// Typed client for a block node, used by gateways (and, later, by peers for repair).
// Puts are batched into ≤ 4 MiB messages on one client stream; gets stream back in order.
import type * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS, callMetadata, deadlineIn, unaryCall, type TokenProvider } from '../common/grpc-client.js';
import { fromServiceError } from '../common/status.js';
import { loadProto } from '../common/proto.js';
import type { BlockNodeClient as GenClient } from '../gen/cairn/v1/BlockNode.js';
import type { GetBlocksResponse__Output } from '../gen/cairn/v1/GetBlocksResponse.js';
import type { HasBlocksResponse__Output } from '../gen/cairn/v1/HasBlocksResponse.js';
import type { PutBlocksResponse__Output } from '../gen/cairn/v1/PutBlocksResponse.js';

const MESSAGE_BYTES = 4 * 1024 * 1024;

export interface BlockClientOptions {
  readonly address: string;
  readonly credentials: grpc.ChannelCredentials;
  readonly token: TokenProvider;
  /** Deadline for one put or get stream (ms). */
  readonly timeoutMs?: number;
}

export interface StoredBlock {
  readonly address: Buffer;
  readonly data: Buffer;
}

export class BlockClient {
  readonly address: string;
  readonly #client: GenClient;
  readonly #token: TokenProvider;
  readonly #timeoutMs: number;

  constructor(options: BlockClientOptions) {
    this.address = options.address;
    const Ctor = loadProto().proto.cairn.v1.BlockNode;
    this.#client = new Ctor(options.address, options.credentials, CHANNEL_OPTIONS);
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? 120_000;
  }

  /** Stores blocks durably; resolves once the node has fsynced all of them. */
  async putBlocks(blocks: readonly StoredBlock[]): Promise<PutBlocksResponse__Output> {
    const md = await callMetadata(this.#token);
    return new Promise<PutBlocksResponse__Output>((resolve, reject) => {
      const call = this.#client.PutBlocks(md, deadlineIn(this.#timeoutMs), (err, res) => {
        if (err) reject(fromServiceError(err));
        else if (res) resolve(res);
        else reject(new Error('empty PutBlocks response'));
      });
      let batch: StoredBlock[] = [];
      let size = 0;
      for (const block of blocks) {
        if (size + block.data.length > MESSAGE_BYTES && batch.length > 0) {
          call.write({ blocks: batch });
          batch = [];
          size = 0;
        }
        batch.push(block);
        size += block.data.length + 40;
      }
      if (batch.length > 0) call.write({ blocks: batch });
      call.end();
    });
  }

  /** Streams the requested blocks in order; a block the node lacks comes back with data undefined. */
  async *getBlocks(addresses: readonly Buffer[], signal?: AbortSignal): AsyncGenerator<{ address: Buffer; data: Buffer | undefined }> {
    const md = await callMetadata(this.#token);
    const call = this.#client.GetBlocks({ addresses: [...addresses] }, md, deadlineIn(this.#timeoutMs));
    const onAbort = (): void => call.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const msg of call as AsyncIterable<GetBlocksResponse__Output>) {
        yield { address: msg.address, data: msg.found ? msg.data : undefined };
      }
    } catch (err) {
      throw fromServiceError(err);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      call.cancel();
    }
  }

  async hasBlocks(addresses: readonly Buffer[]): Promise<boolean[]> {
    const md = await callMetadata(this.#token);
    try {
      const res = await unaryCall<{ addresses: Buffer[] }, HasBlocksResponse__Output>(this.#client.HasBlocks.bind(this.#client), { addresses: [...addresses] }, md, deadlineIn(30_000));
      return res.present;
    } catch (err) {
      throw fromServiceError(err);
    }
  }

  close(): void {
    this.#client.close();
  }
}
