// Raw access to the public API for the fuzz and isolation tests: every public method found from
// the .proto files, and one call helper that sends already-encoded bytes over any call shape.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { PROTO_DIR, PROTO_FILES } from '../../src/common/proto.js';

export const PUBLIC_SERVICES = ['cairn.v1.Files', 'cairn.v1.Sharing', 'cairn.v1.Cluster', 'cairn.v1.Media'];

export function loadRoot(): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => join(PROTO_DIR, target);
  root.loadSync([...PROTO_FILES], { keepCase: true });
  root.resolveAll();
  return root;
}

export interface Method {
  readonly service: string;
  readonly name: string;
  readonly path: string;
  readonly request: protobuf.Type;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
}

export function publicMethods(root: protobuf.Root = loadRoot()): Method[] {
  const out: Method[] = [];
  for (const service of PUBLIC_SERVICES) {
    const svc = root.lookup(service);
    if (!(svc instanceof protobuf.Service)) continue;
    for (const m of svc.methodsArray) {
      m.resolve();
      out.push({ service, name: m.name, path: `/${service}/${m.name}`, request: m.resolvedRequestType!, requestStream: m.requestStream === true, responseStream: m.responseStream === true });
    }
  }
  return out;
}

export interface Outcome {
  readonly code: number;
  readonly details: string;
  /** Every response message, concatenated. */
  readonly body: Buffer;
}

export interface CallOptions {
  readonly token?: string | undefined;
  /** Sent as x-cairn-tenant: act in a tree another tenant shares with the caller. */
  readonly owner?: string | undefined;
  /** Client streams: cancel instead of ending (a truncated upload). */
  readonly truncate?: boolean;
  /** Server streams never end by themselves (WatchChanges): hang up after this long. */
  readonly hangUpMs?: number;
}

/** Sends `messages` (already encoded) on `method` and resolves with the status and the answers. */
export function rawCall(client: grpc.Client, method: Method, messages: readonly Buffer[], options: CallOptions = {}): Promise<Outcome> {
  const id = (b: Buffer): Buffer => b;
  const md = new grpc.Metadata();
  if (options.token !== undefined) md.set('authorization', `Bearer ${options.token}`);
  if (options.owner !== undefined) md.set('x-cairn-tenant', options.owner);
  const callOptions = { deadline: Date.now() + 10_000 };
  const first = messages[0] ?? Buffer.alloc(0);
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    const done = (err: grpc.ServiceError | null, res?: Buffer): void => {
      if (res !== undefined) parts.push(res);
      resolve({ code: err?.code ?? grpc.status.OK, details: err?.details ?? '', body: Buffer.concat(parts) });
    };
    if (!method.requestStream && !method.responseStream) {
      client.makeUnaryRequest(method.path, id, id, first, md, callOptions, (err, res) => done(err, res));
      return;
    }
    if (method.requestStream && !method.responseStream) {
      const stream = client.makeClientStreamRequest(method.path, id, id, md, callOptions, (err, res) => done(err, res));
      for (const m of messages) stream.write(m);
      if (options.truncate === true) setTimeout(() => stream.cancel(), 50);
      else stream.end();
      return;
    }
    const stream = method.requestStream ? client.makeBidiStreamRequest(method.path, id, id, md, callOptions) : client.makeServerStreamRequest(method.path, id, id, first, md, callOptions);
    if (method.requestStream) {
      const duplex = stream as grpc.ClientDuplexStream<Buffer, Buffer>;
      for (const m of messages) duplex.write(m);
      duplex.end();
    }
    const timer = setTimeout(() => stream.cancel(), options.hangUpMs ?? 500);
    stream.on('data', (d: Buffer) => {
      parts.push(d);
      if (parts.length >= 3) stream.cancel();
    });
    stream.on('error', (err: grpc.ServiceError) => {
      clearTimeout(timer);
      done(err);
    });
    stream.on('end', () => {
      clearTimeout(timer);
      done(null);
    });
  });
}
