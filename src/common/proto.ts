// Loads Cairn's .proto files with the one set of loader options that codegen (scripts/gen-proto.ts)
// also uses, so the generated types in src/gen match what the runtime produces.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType as FilesProto } from '../gen/files.js';
import type { ProtoGrpcType as BlockNodeProto } from '../gen/blocknode.js';
import type { ProtoGrpcType as MetadataProto } from '../gen/metadata.js';
import type { ProtoGrpcType as AdminProto } from '../gen/admin.js';

function findProtoDir(): string {
  // src/common/proto.ts and dist/common/proto.js both sit two levels below the package root.
  const dir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'proto');
  if (!existsSync(join(dir, 'cairn', 'v1'))) throw new Error(`proto directory not found at ${dir}`);
  return dir;
}

export const PROTO_DIR = findProtoDir();

/** The .proto files of Cairn's API, relative to PROTO_DIR. */
export const PROTO_FILES = Object.freeze([
  'cairn/v1/files.proto',
  'cairn/v1/blocknode.proto',
  'cairn/v1/metadata.proto',
  'cairn/v1/admin.proto',
  'cairn/v1/media.proto',
  'cairn/v1/sharing.proto',
  'google/rpc/status.proto',
  'google/rpc/error_details.proto',
]);

/** Loader options shared by runtime and codegen (STYLE.md §5). */
export const LOADER_OPTIONS = Object.freeze({
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});

export type CairnProto = FilesProto & BlockNodeProto & MetadataProto & AdminProto;

let cached: { definition: protoLoader.PackageDefinition; proto: CairnProto } | undefined;

export function loadProto(): { definition: protoLoader.PackageDefinition; proto: CairnProto } {
  if (cached) return cached;
  const definition = protoLoader.loadSync([...PROTO_FILES], { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
  const proto = grpc.loadPackageDefinition(definition) as unknown as CairnProto;
  cached = { definition, proto };
  return cached;
}
