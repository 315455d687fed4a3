// Client-side plumbing shared by Cairn's internal clients and the SDK: channel options,
// per-call metadata (bearer token, request id), deadlines, and error conversion.
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';

export const CHANNEL_OPTIONS: grpc.ChannelOptions = Object.freeze({
  'grpc.max_receive_message_length': 8 * 1024 * 1024,
  'grpc.max_send_message_length': 8 * 1024 * 1024,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.enable_retries': 0,
  // HTTP/2 receive window (stream and connection). Node's default of 64 KiB makes a server
  // stream of 64–256 KiB chunk messages wait for a WINDOW_UPDATE from this side's event loop
  // every message; 16 MiB lets the sender run ahead (measured: one ReadFile stream 128 → 290 MB/s).
  'grpc-node.flow_control_window': 16 * 1024 * 1024,
});

export type TokenProvider = () => string | Promise<string>;

export async function callMetadata(token: TokenProvider, requestId?: string): Promise<grpc.Metadata> {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${await token()}`);
  md.set('x-request-id', requestId ?? randomUUID());
  return md;
}

export function deadlineIn(ms: number): grpc.CallOptions {
  return { deadline: new Date(Date.now() + ms) };
}

/** Promisifies a unary call made with (request, metadata, options, callback). */
export function unaryCall<Req, Res>(
  fn: (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown,
  req: Req,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    fn(req, md, opts, (err, res) => {
      if (err) reject(err);
      else if (res === undefined) reject(new Error('empty response'));
      else resolve(res);
    });
  });
}
