// Raw gRPC clients for tests: the standard health and reflection services, and the Files
// service without the SDK, so tests can send exactly the metadata and messages they mean to.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { LOADER_OPTIONS, loadProto } from '../../src/common/proto.js';
import type { FilesClient } from '../../src/gen/cairn/v1/Files.js';
import { ROOT } from './cluster.js';

type Callback<T> = (err: grpc.ServiceError | null, res?: T) => void;
type UnaryFn<Req, Res> = (req: Req, cb: Callback<Res>) => void;

export function promisify<Req, Res>(fn: UnaryFn<Req, Res>, req: Req): Promise<Res> {
  return new Promise((resolve, reject) => fn(req, (err, res) => (err ? reject(err) : resolve(res as Res))));
}

export async function healthCheck(endpoint: string, service = ''): Promise<string> {
  const def = protoLoader.loadSync(healthProtoPath, { ...LOADER_OPTIONS });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { health: { v1: { Health: new (addr: string, creds: grpc.ChannelCredentials) => grpc.Client & { Check: UnaryFn<{ service: string }, { status: string }> } } } } };
  const client = new pkg.grpc.health.v1.Health(endpoint, grpc.credentials.createInsecure());
  try {
    const res = await promisify(client.Check.bind(client), { service });
    return res.status;
  } finally {
    client.close();
  }
}

export async function listServices(endpoint: string): Promise<string[]> {
  const def = protoLoader.loadSync(join(ROOT, 'node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto'), { ...LOADER_OPTIONS });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: new (addr: string, creds: grpc.ChannelCredentials) => grpc.Client & { ServerReflectionInfo: () => grpc.ClientDuplexStream<{ list_services: string }, { list_services_response?: { service: Array<{ name: string }> } }> } } } };
  };
  const client = new pkg.grpc.reflection.v1.ServerReflection(endpoint, grpc.credentials.createInsecure());
  try {
    return await new Promise<string[]>((resolve, reject) => {
      const call = client.ServerReflectionInfo();
      call.on('data', (msg: { list_services_response?: { service: Array<{ name: string }> } }) => {
        resolve((msg.list_services_response?.service ?? []).map((s: { name: string }) => s.name).sort());
        call.end();
      });
      call.on('error', reject);
      call.write({ list_services: '' });
    });
  } finally {
    client.close();
  }
}

export function filesClient(endpoint: string, credentials = grpc.credentials.createInsecure(), options: grpc.ChannelOptions = {}): FilesClient {
  const Ctor = loadProto().proto.cairn.v1.Files;
  return new Ctor(endpoint, credentials, options);
}

export function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}
