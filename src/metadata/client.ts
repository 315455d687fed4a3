// Typed client for the metadata service's Metadata API, used by gateways and other components:
// one method per RPC taking and returning wire messages, and a resuming WatchChanges iterator.
import type * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS, callMetadata, deadlineIn, unaryCall, type TokenProvider } from '../common/grpc-client.js';
import { fromServiceError } from '../common/status.js';
import { loadProto } from '../common/proto.js';
import type { FileVersion__Output } from '../gen/cairn/v1/FileVersion.js';
import type { MetadataClient as GenClient } from '../gen/cairn/v1/Metadata.js';
import type { WatchChangesRequest } from '../gen/cairn/v1/WatchChangesRequest.js';
import type { WatchChangesResponse__Output } from '../gen/cairn/v1/WatchChangesResponse.js';
import type { CommitFileRequest } from '../gen/cairn/v1/CommitFileRequest.js';
import type { CommitFileResponse__Output } from '../gen/cairn/v1/CommitFileResponse.js';
import type { GetFileRequest } from '../gen/cairn/v1/GetFileRequest.js';
import type { GetFileResponse__Output } from '../gen/cairn/v1/GetFileResponse.js';
import type { GetEntryRequest } from '../gen/cairn/v1/GetEntryRequest.js';
import type { GetEntryResponse__Output } from '../gen/cairn/v1/GetEntryResponse.js';
import type { ListFolderRequest } from '../gen/cairn/v1/ListFolderRequest.js';
import type { ListFolderResponse__Output } from '../gen/cairn/v1/ListFolderResponse.js';
import type { ListVersionsRequest } from '../gen/cairn/v1/ListVersionsRequest.js';
import type { ListVersionsResponse__Output } from '../gen/cairn/v1/ListVersionsResponse.js';
import type { CreateFolderRequest } from '../gen/cairn/v1/CreateFolderRequest.js';
import type { CreateFolderResponse__Output } from '../gen/cairn/v1/CreateFolderResponse.js';
import type { MoveEntryRequest } from '../gen/cairn/v1/MoveEntryRequest.js';
import type { MoveEntryResponse__Output } from '../gen/cairn/v1/MoveEntryResponse.js';
import type { DeleteEntryRequest } from '../gen/cairn/v1/DeleteEntryRequest.js';
import type { DeleteEntryResponse__Output } from '../gen/cairn/v1/DeleteEntryResponse.js';
import type { RestoreEntryRequest } from '../gen/cairn/v1/RestoreEntryRequest.js';
import type { RestoreEntryResponse__Output } from '../gen/cairn/v1/RestoreEntryResponse.js';
import type { SetVersionMediaRequest } from '../gen/cairn/v1/SetVersionMediaRequest.js';
import type { SetVersionMediaResponse__Output } from '../gen/cairn/v1/SetVersionMediaResponse.js';
import type { FindChunksRequest } from '../gen/cairn/v1/FindChunksRequest.js';
import type { GetUsageRequest } from '../gen/cairn/v1/GetUsageRequest.js';
import type { GetUsageResponse__Output } from '../gen/cairn/v1/GetUsageResponse.js';
import type { FindChunksResponse__Output } from '../gen/cairn/v1/FindChunksResponse.js';
import type { CreateUploadSessionRequest } from '../gen/cairn/v1/CreateUploadSessionRequest.js';
import type { CreateUploadSessionResponse__Output } from '../gen/cairn/v1/CreateUploadSessionResponse.js';
import type { GetUploadSessionRequest } from '../gen/cairn/v1/GetUploadSessionRequest.js';
import type { GetUploadSessionResponse__Output } from '../gen/cairn/v1/GetUploadSessionResponse.js';
import type { AppendUploadChunksRequest } from '../gen/cairn/v1/AppendUploadChunksRequest.js';
import type { AppendUploadChunksResponse__Output } from '../gen/cairn/v1/AppendUploadChunksResponse.js';
import type { AbortUploadSessionRequest } from '../gen/cairn/v1/AbortUploadSessionRequest.js';
import type { AbortUploadSessionResponse__Output } from '../gen/cairn/v1/AbortUploadSessionResponse.js';
import type { GetChangeCursorRequest } from '../gen/cairn/v1/GetChangeCursorRequest.js';
import type { GetChangeCursorResponse__Output } from '../gen/cairn/v1/GetChangeCursorResponse.js';
import type { ListChangesRequest } from '../gen/cairn/v1/ListChangesRequest.js';
import type { ListChangesResponse__Output } from '../gen/cairn/v1/ListChangesResponse.js';
import type { GrantShareRequest } from '../gen/cairn/v1/GrantShareRequest.js';
import type { GrantShareResponse__Output } from '../gen/cairn/v1/GrantShareResponse.js';
import type { RevokeShareRequest } from '../gen/cairn/v1/RevokeShareRequest.js';
import type { RevokeShareResponse__Output } from '../gen/cairn/v1/RevokeShareResponse.js';
import type { ListSharesRequest } from '../gen/cairn/v1/ListSharesRequest.js';
import type { ListSharesResponse__Output } from '../gen/cairn/v1/ListSharesResponse.js';
import type { CheckAccessRequest } from '../gen/cairn/v1/CheckAccessRequest.js';
import type { CheckAccessResponse__Output } from '../gen/cairn/v1/CheckAccessResponse.js';
import type { CreateLinkShareRequest } from '../gen/cairn/v1/CreateLinkShareRequest.js';
import type { CreateLinkShareResponse__Output } from '../gen/cairn/v1/CreateLinkShareResponse.js';
import type { ResolveLinkShareRequest } from '../gen/cairn/v1/ResolveLinkShareRequest.js';
import type { ResolveLinkShareResponse__Output } from '../gen/cairn/v1/ResolveLinkShareResponse.js';
import type { ListLinkSharesRequest } from '../gen/cairn/v1/ListLinkSharesRequest.js';
import type { ListLinkSharesResponse__Output } from '../gen/cairn/v1/ListLinkSharesResponse.js';
import type { RevokeLinkShareRequest } from '../gen/cairn/v1/RevokeLinkShareRequest.js';
import type { RevokeLinkShareResponse__Output } from '../gen/cairn/v1/RevokeLinkShareResponse.js';

export interface MetadataClientOptions {
  readonly address: string;
  readonly credentials: grpc.ChannelCredentials;
  readonly token: TokenProvider;
}

type UnaryFn<Req, Res> = (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

export class MetadataClient {
  readonly #client: GenClient;
  readonly #token: TokenProvider;

  constructor(options: MetadataClientOptions) {
    const Ctor = loadProto().proto.cairn.v1.Metadata;
    this.#client = new Ctor(options.address, options.credentials, CHANNEL_OPTIONS);
    this.#token = options.token;
  }

  async #unary<Req, Res>(fn: UnaryFn<Req, Res>, req: Req, timeoutMs: number, requestId: string | undefined): Promise<Res> {
    const md = await callMetadata(this.#token, requestId);
    try {
      return await unaryCall<Req, Res>(fn, req, md, deadlineIn(timeoutMs));
    } catch (err) {
      throw fromServiceError(err);
    }
  }

  /** Commits a version (see CommitFile) and returns it. */
  async commitFile(req: CommitFileRequest, requestId?: string): Promise<FileVersion__Output> {
    const res = await this.#unary<CommitFileRequest, CommitFileResponse__Output>(this.#client.CommitFile.bind(this.#client), req, 60_000, requestId);
    if (!res.file) throw new Error('CommitFile returned no file');
    return res.file;
  }

  /** Reads a version (see GetFile) with its chunk list. */
  async getFile(req: GetFileRequest, requestId?: string): Promise<FileVersion__Output> {
    const res = await this.#unary<GetFileRequest, GetFileResponse__Output>(this.#client.GetFile.bind(this.#client), req, 30_000, requestId);
    if (!res.file) throw new Error('GetFile returned no file');
    return res.file;
  }

  getEntry(req: GetEntryRequest, requestId?: string): Promise<GetEntryResponse__Output> {
    return this.#unary<GetEntryRequest, GetEntryResponse__Output>(this.#client.GetEntry.bind(this.#client), req, 30_000, requestId);
  }

  listFolder(req: ListFolderRequest, requestId?: string): Promise<ListFolderResponse__Output> {
    return this.#unary<ListFolderRequest, ListFolderResponse__Output>(this.#client.ListFolder.bind(this.#client), req, 30_000, requestId);
  }

  listVersions(req: ListVersionsRequest, requestId?: string): Promise<ListVersionsResponse__Output> {
    return this.#unary<ListVersionsRequest, ListVersionsResponse__Output>(this.#client.ListVersions.bind(this.#client), req, 30_000, requestId);
  }

  createFolder(req: CreateFolderRequest, requestId?: string): Promise<CreateFolderResponse__Output> {
    return this.#unary<CreateFolderRequest, CreateFolderResponse__Output>(this.#client.CreateFolder.bind(this.#client), req, 30_000, requestId);
  }

  moveEntry(req: MoveEntryRequest, requestId?: string): Promise<MoveEntryResponse__Output> {
    return this.#unary<MoveEntryRequest, MoveEntryResponse__Output>(this.#client.MoveEntry.bind(this.#client), req, 30_000, requestId);
  }

  deleteEntry(req: DeleteEntryRequest, requestId?: string): Promise<DeleteEntryResponse__Output> {
    return this.#unary<DeleteEntryRequest, DeleteEntryResponse__Output>(this.#client.DeleteEntry.bind(this.#client), req, 30_000, requestId);
  }

  restoreEntry(req: RestoreEntryRequest, requestId?: string): Promise<RestoreEntryResponse__Output> {
    return this.#unary<RestoreEntryRequest, RestoreEntryResponse__Output>(this.#client.RestoreEntry.bind(this.#client), req, 60_000, requestId);
  }

  setVersionMedia(req: SetVersionMediaRequest, requestId?: string): Promise<SetVersionMediaResponse__Output> {
    return this.#unary<SetVersionMediaRequest, SetVersionMediaResponse__Output>(this.#client.SetVersionMedia.bind(this.#client), req, 30_000, requestId);
  }

  /** The tenant's usage counters and quota. */
  getUsage(req: GetUsageRequest, requestId?: string): Promise<GetUsageResponse__Output> {
    return this.#unary<GetUsageRequest, GetUsageResponse__Output>(this.#client.GetUsage.bind(this.#client), req, 30_000, requestId);
  }

  findChunks(req: FindChunksRequest, requestId?: string): Promise<FindChunksResponse__Output> {
    return this.#unary<FindChunksRequest, FindChunksResponse__Output>(this.#client.FindChunks.bind(this.#client), req, 30_000, requestId);
  }

  createUploadSession(req: CreateUploadSessionRequest, requestId?: string): Promise<CreateUploadSessionResponse__Output> {
    return this.#unary<CreateUploadSessionRequest, CreateUploadSessionResponse__Output>(this.#client.CreateUploadSession.bind(this.#client), req, 30_000, requestId);
  }

  getUploadSession(req: GetUploadSessionRequest, requestId?: string): Promise<GetUploadSessionResponse__Output> {
    return this.#unary<GetUploadSessionRequest, GetUploadSessionResponse__Output>(this.#client.GetUploadSession.bind(this.#client), req, 30_000, requestId);
  }

  appendUploadChunks(req: AppendUploadChunksRequest, requestId?: string): Promise<AppendUploadChunksResponse__Output> {
    return this.#unary<AppendUploadChunksRequest, AppendUploadChunksResponse__Output>(this.#client.AppendUploadChunks.bind(this.#client), req, 60_000, requestId);
  }

  abortUploadSession(req: AbortUploadSessionRequest, requestId?: string): Promise<AbortUploadSessionResponse__Output> {
    return this.#unary<AbortUploadSessionRequest, AbortUploadSessionResponse__Output>(this.#client.AbortUploadSession.bind(this.#client), req, 60_000, requestId);
  }

  getChangeCursor(req: GetChangeCursorRequest, requestId?: string): Promise<GetChangeCursorResponse__Output> {
    return this.#unary<GetChangeCursorRequest, GetChangeCursorResponse__Output>(this.#client.GetChangeCursor.bind(this.#client), req, 30_000, requestId);
  }

  listChanges(req: ListChangesRequest, requestId?: string): Promise<ListChangesResponse__Output> {
    return this.#unary<ListChangesRequest, ListChangesResponse__Output>(this.#client.ListChanges.bind(this.#client), req, 30_000, requestId);
  }

  grantShare(req: GrantShareRequest, requestId?: string): Promise<GrantShareResponse__Output> {
    return this.#unary<GrantShareRequest, GrantShareResponse__Output>(this.#client.GrantShare.bind(this.#client), req, 30_000, requestId);
  }

  revokeShare(req: RevokeShareRequest, requestId?: string): Promise<RevokeShareResponse__Output> {
    return this.#unary<RevokeShareRequest, RevokeShareResponse__Output>(this.#client.RevokeShare.bind(this.#client), req, 30_000, requestId);
  }

  listShares(req: ListSharesRequest, requestId?: string): Promise<ListSharesResponse__Output> {
    return this.#unary<ListSharesRequest, ListSharesResponse__Output>(this.#client.ListShares.bind(this.#client), req, 30_000, requestId);
  }

  checkAccess(req: CheckAccessRequest, requestId?: string): Promise<CheckAccessResponse__Output> {
    return this.#unary<CheckAccessRequest, CheckAccessResponse__Output>(this.#client.CheckAccess.bind(this.#client), req, 30_000, requestId);
  }

  createLinkShare(req: CreateLinkShareRequest, requestId?: string): Promise<CreateLinkShareResponse__Output> {
    return this.#unary<CreateLinkShareRequest, CreateLinkShareResponse__Output>(this.#client.CreateLinkShare.bind(this.#client), req, 30_000, requestId);
  }

  resolveLinkShare(req: ResolveLinkShareRequest, requestId?: string): Promise<ResolveLinkShareResponse__Output> {
    return this.#unary<ResolveLinkShareRequest, ResolveLinkShareResponse__Output>(this.#client.ResolveLinkShare.bind(this.#client), req, 30_000, requestId);
  }

  listLinkShares(req: ListLinkSharesRequest, requestId?: string): Promise<ListLinkSharesResponse__Output> {
    return this.#unary<ListLinkSharesRequest, ListLinkSharesResponse__Output>(this.#client.ListLinkShares.bind(this.#client), req, 30_000, requestId);
  }

  revokeLinkShare(req: RevokeLinkShareRequest, requestId?: string): Promise<RevokeLinkShareResponse__Output> {
    return this.#unary<RevokeLinkShareRequest, RevokeLinkShareResponse__Output>(this.#client.RevokeLinkShare.bind(this.#client), req, 30_000, requestId);
  }

  /**
   * Streams a tenant's changes after `cursor` until `signal` aborts. Reconnects with backoff after
   * transient failures, resuming from the last cursor received; an expired or invalid cursor
   * (and any other non-retryable error) ends the iteration by throwing it.
   */
  async *watchChanges(req: WatchChangesRequest, signal: AbortSignal): AsyncGenerator<WatchChangesResponse__Output> {
    let cursor = req.cursor ?? '';
    let failures = 0;
    while (!signal.aborted) {
      try {
        for await (const msg of this.#watchOnce({ ...req, cursor }, signal)) {
          failures = 0;
          cursor = msg.cursor;
          yield msg;
        }
        if (signal.aborted) return;
      } catch (err) {
        if (signal.aborted) return;
        const e = fromServiceError(err);
        if (!e.retryable && e.code !== 'CAIRN_CANCELLED') throw e;
      }
      failures++;
      const cap = Math.min(10_000, 100 * 2 ** Math.min(failures, 10));
      await sleep(cap / 2 + Math.random() * (cap / 2), signal);
    }
  }

  async *#watchOnce(req: WatchChangesRequest, signal: AbortSignal): AsyncGenerator<WatchChangesResponse__Output> {
    const md = await callMetadata(this.#token);
    const call = this.#client.WatchChanges(req, md);
    const cancel = (): void => call.cancel();
    signal.addEventListener('abort', cancel, { once: true });
    try {
      for await (const msg of call as AsyncIterable<WatchChangesResponse__Output>) yield msg;
    } finally {
      signal.removeEventListener('abort', cancel);
      call.cancel();
    }
  }

  close(): void {
    this.#client.close();
  }
}
