// The BlockNode gRPC service: batched puts (acknowledged after fsync), streamed gets,
// and presence checks over the node's BlockStore. Input is validated before anything is stored.
import type * as grpc from '@grpc/grpc-js';
import { CairnError } from '../common/errors.js';
import { clientStream, send, serverStream, unary } from '../common/grpc-server.js';
import type { BlockNodeHandlers } from '../gen/cairn/v1/BlockNode.js';
import type { PutBlocksRequest__Output } from '../gen/cairn/v1/PutBlocksRequest.js';
import type { PutBlocksResponse } from '../gen/cairn/v1/PutBlocksResponse.js';
import type { BlockStore } from './engine/index.js';

export const MAX_GET_ADDRESSES = 1024;
export const MAX_HAS_ADDRESSES = 4096;

function checkAddresses(addresses: readonly Buffer[], max: number): void {
  if (addresses.length > max) throw new CairnError('CAIRN_INVALID_ARGUMENT', `at most ${max} addresses per request, got ${addresses.length}`);
  for (const a of addresses) {
    if (a.length !== 32) throw new CairnError('CAIRN_INVALID_HASH', `block address must be 32 bytes, got ${a.length}`);
  }
}

export function blockNodeHandlers(store: BlockStore): BlockNodeHandlers {
  return {
    PutBlocks: clientStream(async (call: grpc.ServerReadableStream<PutBlocksRequest__Output, PutBlocksResponse>) => {
      let blocks = 0;
      let bytes = 0;
      // One batch per message; the for-await loop is the backpressure: the next message is
      // read only after this batch is durable.
      for await (const msg of call as AsyncIterable<PutBlocksRequest__Output>) {
        const batch = msg.blocks.map((b) => ({ address: b.address, data: b.data }));
        checkAddresses(batch.map((b) => b.address), Number.MAX_SAFE_INTEGER);
        if (batch.length === 0) continue;
        await store.put(batch);
        blocks += batch.length;
        bytes += batch.reduce((n, b) => n + b.data.length, 0);
      }
      return { blocks_stored: blocks, bytes_stored: bytes };
    }),
    GetBlocks: serverStream(async (req, call, ctx) => {
      checkAddresses(req.addresses, MAX_GET_ADDRESSES);
      for (const address of req.addresses) {
        let data: Buffer | undefined;
        try {
          data = await store.get(address);
        } catch (err) {
          // A corrupt copy is quarantined by the store; answer "not found" so the reader
          // moves on to another replica instead of failing the whole stream.
          if (!(err instanceof CairnError && err.code === 'CAIRN_CORRUPT_BLOCK')) throw err;
          ctx.log.warn({ address: address.toString('hex') }, 'corrupt block quarantined on read');
        }
        await send(call, data === undefined ? { address, found: false } : { address, data, found: true }, ctx.signal);
      }
    }),
    HasBlocks: unary(async (req) => {
      checkAddresses(req.addresses, MAX_HAS_ADDRESSES);
      return { present: await store.has(req.addresses) };
    }),
  };
}
