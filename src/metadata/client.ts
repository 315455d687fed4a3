// Typed client for the metadata service, used by gateways.
import type * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS, callMetadata, deadlineIn, unaryCall, type TokenProvider } from '../common/grpc-client.js';
import { fromServiceError } from '../common/status.js';
import { loadProto } from '../common/proto.js';
import type { CommitFileRequest } from '../gen/cairn/v1/CommitFileRequest.js';
import type { CommitFileResponse__Output } from '../gen/cairn/v1/CommitFileResponse.js';
import type { FileVersion__Output } from '../gen/cairn/v1/FileVersion.js';
import type { GetFileRequest } from '../gen/cairn/v1/GetFileRequest.js';
import type { GetFileResponse__Output } from '../gen/cairn/v1/GetFileResponse.js';
import type { MetadataClient as GenClient } from '../gen/cairn/v1/Metadata.js';

export interface MetadataClientOptions {
  readonly address: string;
  readonly credentials: grpc.ChannelCredentials;
  readonly token: TokenProvider;
}

export class MetadataClient {
  readonly #client: GenClient;
  readonly #token: TokenProvider;

  constructor(options: MetadataClientOptions) {
    const Ctor = loadProto().proto.cairn.v1.Metadata;
    this.#client = new Ctor(options.address, options.credentials, CHANNEL_OPTIONS);
    this.#token = options.token;
  }

  async commitFile(req: CommitFileRequest, requestId?: string): Promise<FileVersion__Output> {
    const md = await callMetadata(this.#token, requestId);
    try {
      const res = await unaryCall<CommitFileRequest, CommitFileResponse__Output>(this.#client.CommitFile.bind(this.#client), req, md, deadlineIn(60_000));
      if (!res.file) throw new Error('CommitFile returned no file');
      return res.file;
    } catch (err) {
      throw fromServiceError(err);
    }
  }

  async getFile(req: GetFileRequest, requestId?: string): Promise<FileVersion__Output> {
    const md = await callMetadata(this.#token, requestId);
    try {
      const res = await unaryCall<GetFileRequest, GetFileResponse__Output>(this.#client.GetFile.bind(this.#client), req, md, deadlineIn(30_000));
      if (!res.file) throw new Error('GetFile returned no file');
      return res.file;
    } catch (err) {
      throw fromServiceError(err);
    }
  }

  close(): void {
    this.#client.close();
  }
}
