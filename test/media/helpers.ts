// Media test helpers: images generated with sharp at test time (no binary fixtures), a raw
// Media gRPC client, HTTP thumbnail GETs, tokens for other principals, /metrics scraping.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import sharp from 'sharp';
import { ServiceTokenSource, signToken, type Role } from '../../src/common/auth.js';
import { loadProto } from '../../src/common/proto.js';
import type { MediaClient } from '../../src/gen/cairn/v1/Media.js';
import type { ProtoGrpcType as MediaProto } from '../../src/gen/media.js';
import { CairnClient } from '../../src/client/index.js';
import { AdminClient } from '../../src/metadata/index.js';
import { startServer, tempDir, type Scope, type ServerProcess } from '../helpers/cluster.js';

export function mediaClient(endpoint: string): MediaClient {
  const Ctor = (loadProto().proto as unknown as MediaProto).cairn.v1.Media;
  return new Ctor(endpoint, grpc.credentials.createInsecure());
}

export function call<Req, Res>(client: MediaClient, method: 'GetThumbnail' | 'GetMediaInfo' | 'ListThumbnails', req: Req, token: string): Promise<Res> {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return new Promise((resolve, reject) => {
    (client[method] as unknown as (r: Req, m: grpc.Metadata, cb: (err: grpc.ServiceError | null, res?: Res) => void) => void).call(client, req, md, (err, res) => (err ? reject(err) : resolve(res as Res)));
  });
}

export async function tokenFor(dataDir: string, role: Role, subject: string, tenant = 'default'): Promise<string> {
  const secret = Buffer.from(readFileSync(join(dataDir, 'auth.key'), 'utf8').trim(), 'base64url');
  return signToken(secret, { tenant, role, subject });
}

/** A JPEG whose left half is red and right half blue, with EXIF orientation and GPS. */
export async function orientedJpeg(width: number, height: number, orientation: number): Promise<Buffer> {
  const half = Math.floor(width / 2);
  const red = await sharp({ create: { width: half, height, channels: 3, background: { r: 255, g: 0, b: 0 } } }).png().toBuffer();
  const blue = await sharp({ create: { width: width - half, height, channels: 3, background: { r: 0, g: 0, b: 255 } } }).png().toBuffer();
  return sharp({ create: { width, height, channels: 3, background: '#000' } })
    .composite([{ input: red, left: 0, top: 0 }, { input: blue, left: half, top: 0 }])
    .jpeg({ quality: 90 })
    .withExif({
      IFD0: { Make: 'CairnCam', Model: 'Model 7', DateTime: '2024:05:06 07:08:09' },
      IFD2: { DateTimeOriginal: '2024:05:06 07:08:09', LensModel: 'Cairn 35mm f/2' },
      IFD3: { GPSLatitudeRef: 'N', GPSLatitude: '51/1 30/1 0/1', GPSLongitudeRef: 'W', GPSLongitude: '0/1 7/1 30/1' },
    })
    .withMetadata({ orientation })
    .toBuffer();
}

export async function put(server: ServerProcess, token: string, dir: string, remote: string, data: Buffer): Promise<{ version: number }> {
  const local = join(dir, remote.replace(/\//g, '_'));
  writeFileSync(local, data);
  const client = new CairnClient({ endpoint: server.grpc, token });
  try {
    const info = await client.put(local, remote);
    return { version: Number(info.version) };
  } finally {
    client.close();
  }
}

export async function getThumb(server: ServerProcess, token: string | undefined, path: string, size: number, version?: number, headers: Record<string, string> = {}): Promise<Response> {
  const q = new URLSearchParams({ path, size: String(size), ...(version !== undefined ? { version: String(version) } : {}) });
  return fetch(`${server.http}/v1/thumbnails?${q.toString()}`, { headers: { ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}), ...headers } });
}

export async function metric(server: ServerProcess, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${server.http}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^(\w+)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const ls = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => ls.includes(`${k}="${v}"`))) total += Number(m[3]);
  }
  return total;
}

export interface MediaCluster {
  readonly metadata: ServerProcess;
  readonly blocknode: ServerProcess;
  readonly gateway: ServerProcess;
  /** An admin-role token of tenant default (the owner). */
  readonly token: string;
  readonly admin: AdminClient;
  /** Starts a `--role media` worker process of this cluster. */
  startWorker(env?: Record<string, string>): Promise<ServerProcess>;
}

/**
 * A cluster of real processes: metadata, one block node, a gateway and (on demand) media
 * workers, sharing one auth secret and one master key.
 */
export async function startMediaCluster(t: Scope, gatewayEnv: Record<string, string> = {}): Promise<MediaCluster> {
  const keyDir = tempDir(t, 'cairn-media-keys-');
  const masterKey = join(keyDir, 'master.key');
  const metadata = await startServer(t, [], { role: 'metadata' });
  const secretFile = join(metadata.dataDir, 'auth.key');
  const blocknode = await startServer(t, ['--auth-secret-file', secretFile], { role: 'blocknode' });
  const shared = ['--auth-secret-file', secretFile, '--master-key-file', masterKey, '--metadata-addr', metadata.grpc, '--blocknode-addr', blocknode.grpc];
  const gateway = await startServer(t, shared, { role: 'gateway', env: gatewayEnv });
  const secret = Buffer.from(readFileSync(secretFile, 'utf8').trim(), 'base64url');
  const token = await signToken(secret, { tenant: 'default', role: 'admin', subject: 'alice' });
  const service = new ServiceTokenSource(secret);
  const admin = new AdminClient({ address: metadata.grpc, credentials: grpc.credentials.createInsecure(), token: () => service.token() });
  t.teardown(() => admin.close());
  return {
    metadata,
    blocknode,
    gateway,
    token,
    admin,
    startWorker: (env = {}) => startServer(t, [...shared, '--log-level', 'info'], { role: 'media', env }),
  };
}

/** Polls `fn` until it returns a value other than undefined (or fails after `ms`). */
export async function eventually<T>(fn: () => Promise<T | undefined>, ms = 60_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
