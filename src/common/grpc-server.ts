// The gRPC server every Cairn daemon uses: request ids and logging, go-grpc-prometheus metrics,
// bearer-token auth with per-method permissions, default deadlines, health, reflection, TLS
// and graceful shutdown. Handlers are written as async functions via unary/clientStream/serverStream.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { PackageDefinition } from '@grpc/proto-loader';
import * as protoLoader from '@grpc/proto-loader';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import { ReflectionService } from '@grpc/reflection';
import { CairnError } from './errors.js';
import { can, verifyToken, type Permission, type Principal } from './auth.js';
import type { Logger } from './log.js';
import { GRPC_CODE_NAMES, type Metrics } from './metrics.js';
import { toServiceError } from './status.js';
import { LOADER_OPTIONS } from './proto.js';

export interface TlsFiles {
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  /** CA bundle; when set on a server, client certificates are required (mTLS). */
  readonly ca?: string | undefined;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Server credentials from certificate files; plaintext only on loopback unless explicitly allowed. */
export function serverCredentials(host: string, tls: TlsFiles, allowPlaintext: boolean): grpc.ServerCredentials {
  if (tls.cert !== undefined && tls.key !== undefined) {
    const ca = tls.ca !== undefined ? readFileSync(tls.ca) : null;
    return grpc.ServerCredentials.createSsl(ca, [{ cert_chain: readFileSync(tls.cert), private_key: readFileSync(tls.key) }], ca !== null);
  }
  if (tls.cert !== undefined || tls.key !== undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'TLS needs both --tls-cert and --tls-key');
  if (tls.ca !== undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--tls-ca (mTLS) needs --tls-cert and --tls-key');
  if (!isLoopback(host) && !allowPlaintext) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `refusing to serve plaintext on non-loopback address ${host}: set --tls-cert and --tls-key, or --allow-plaintext`);
  }
  return grpc.ServerCredentials.createInsecure();
}

/** Client credentials: TLS when a CA or client certificate is given, else plaintext. */
export function clientCredentials(tls: TlsFiles): grpc.ChannelCredentials {
  if (tls.ca === undefined && tls.cert === undefined) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(
    tls.ca !== undefined ? readFileSync(tls.ca) : null,
    tls.key !== undefined ? readFileSync(tls.key) : null,
    tls.cert !== undefined ? readFileSync(tls.cert) : null,
  );
}

/** What a handler knows about its call. */
export interface CallContext {
  readonly requestId: string;
  readonly method: string;
  /** Set for every authenticated call (all but health and reflection). */
  readonly principal: Principal | undefined;
  readonly log: Logger;
  /** Aborted when the client cancels or the deadline passes. */
  readonly signal: AbortSignal;
}

const contexts = new WeakMap<grpc.Metadata, CallContext>();

export function contextOf(call: { metadata: grpc.Metadata }): CallContext {
  const ctx = contexts.get(call.metadata);
  if (ctx === undefined) throw new Error('no call context: the service was not added through CairnGrpcServer');
  return ctx;
}

/** The authenticated principal of a call; handlers of authenticated methods may rely on it. */
export function principalOf(ctx: CallContext): Principal {
  if (ctx.principal === undefined) throw new CairnError('CAIRN_UNAUTHENTICATED', 'call is not authenticated');
  return ctx.principal;
}

function toStatus(err: unknown, ctx: CallContext | undefined, log: Logger): ReturnType<typeof toServiceError> {
  if (err instanceof CairnError) return toServiceError(err);
  if (ctx?.signal.aborted === true || (err as { code?: unknown } | null)?.code === 'ERR_STREAM_PREMATURE_CLOSE') {
    // The client hung up or the deadline passed mid-stream: nobody is left to answer, and it is
    // not a server fault.
    (ctx?.log ?? log).debug({ err }, 'call ended by the client before the handler finished');
    return toServiceError(new CairnError('CAIRN_CANCELLED', 'call cancelled'));
  }
  (ctx?.log ?? log).error({ err }, 'unhandled error in handler');
  const id = ctx?.requestId ?? 'unknown';
  return toServiceError(new CairnError('CAIRN_INTERNAL', `internal error (request id ${id})`));
}

export function unary<Req, Res>(fn: (req: Req, ctx: CallContext) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const ctx = contextOf(call);
    fn(call.request, ctx).then(
      (res) => callback(null, res),
      (err: unknown) => callback(toStatus(err, ctx, ctx.log)),
    );
  };
}

export function clientStream<Req, Res>(fn: (call: grpc.ServerReadableStream<Req, Res>, ctx: CallContext) => Promise<Res>): grpc.handleClientStreamingCall<Req, Res> {
  return (call, callback) => {
    const ctx = contextOf(call);
    fn(call, ctx).then(
      (res) => callback(null, res),
      (err: unknown) => {
        callback(toStatus(err, ctx, ctx.log));
        // Stop reading whatever the client still sends.
        call.destroy();
      },
    );
  };
}

export function serverStream<Req, Res>(fn: (req: Req, call: grpc.ServerWritableStream<Req, Res>, ctx: CallContext) => Promise<void>): grpc.handleServerStreamingCall<Req, Res> {
  return (call) => {
    const ctx = contextOf(call);
    fn(call.request, call, ctx).then(
      () => call.end(),
      (err: unknown) => {
        if (ctx.signal.aborted) return;
        call.emit('error', toStatus(err, ctx, ctx.log));
      },
    );
  };
}

/** Writes one message and waits for the stream to drain when its buffer is full. */
export async function send<Res>(call: grpc.ServerWritableStream<unknown, Res>, message: Res, signal: AbortSignal): Promise<void> {
  if (signal.aborted) throw cancelled();
  if (call.write(message)) return;
  await drained(call, signal);
}

function cancelled(): CairnError {
  return new CairnError('CAIRN_CANCELLED', 'call cancelled');
}

function drained(call: grpc.ServerWritableStream<unknown, unknown>, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onDrain = (): void => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    };
    const onAbort = (): void => {
      call.off('drain', onDrain);
      reject(cancelled());
    };
    call.once('drain', onDrain);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A sender for a stream of large messages that keeps at most `depth` of them queued in gRPC, not
 * yet handed to HTTP/2. gRPC copies each message into a frame buffer as it is sent; with its
 * default queue (16 messages) those buffers and the data behind them stayed alive across
 * young-generation collections, were promoted, and could then be freed only by full collections,
 * which their external memory kept triggering: about one per 40 MB ReadFile sent, each marking
 * the whole heap on every core. A shallow queue lets them die young. Backpressure from write()
 * (a rate limit) is honoured as in `send`; a cancelled call rejects with CAIRN_CANCELLED (gRPC
 * signals the end of every call that does not finish normally, so no wait outlives its call).
 */
export function pacedSender<Res>(call: grpc.ServerWritableStream<unknown, Res>, signal: AbortSignal, depth: number): (message: Res) => Promise<void> {
  let queued = 0;
  let wake: (() => void) | undefined;
  const written = (): void => {
    queued--;
    const w = wake;
    wake = undefined;
    w?.();
  };
  const room = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        wake = undefined;
        reject(cancelled());
      };
      wake = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
  return async (message) => {
    if (signal.aborted) throw cancelled();
    queued++;
    if (!(call.write as (m: Res, cb: () => void) => boolean)(message, written)) await drained(call, signal);
    while (queued >= depth) {
      if (signal.aborted) throw cancelled();
      await room();
    }
  };
}

export interface GrpcServerOptions {
  readonly name: string;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** Token signing secret; calls to authenticated methods need a valid bearer token. */
  readonly authSecret: Uint8Array;
  /** Deadline applied to unary calls whose client set none (ms). */
  readonly defaultDeadlineMs?: number;
  readonly maxReceiveMessageLength?: number;
  /** The package definition that holds the services (for reflection). */
  readonly packageDefinition: PackageDefinition;
}

type Permissions<I> = { readonly [K in keyof I]: Permission };

const UNAUTHENTICATED_SERVICES = ['/grpc.health.v1.Health/', '/grpc.reflection.v1.ServerReflection/', '/grpc.reflection.v1alpha.ServerReflection/'];

function grpcType(def: { requestStream: boolean; responseStream: boolean }): string {
  if (def.requestStream && def.responseStream) return 'bidi_stream';
  if (def.requestStream) return 'client_stream';
  if (def.responseStream) return 'server_stream';
  return 'unary';
}

export class CairnGrpcServer {
  readonly health = new HealthImplementation({ '': 'NOT_SERVING' });
  readonly #opts: GrpcServerOptions;
  readonly #server: grpc.Server;
  readonly #permissions = new Map<string, Permission>();
  readonly #serviceNames: string[] = [];
  readonly #inflight = new Set<AbortController>();
  #port = 0;
  #started = false;

  constructor(options: GrpcServerOptions) {
    this.#opts = options;
    this.#server = new grpc.Server({
      'grpc.max_receive_message_length': options.maxReceiveMessageLength ?? 8 * 1024 * 1024,
      'grpc.max_send_message_length': options.maxReceiveMessageLength ?? 8 * 1024 * 1024,
      interceptors: [this.#interceptor],
    });
  }

  get port(): number {
    return this.#port;
  }

  addService<I extends grpc.UntypedServiceImplementation>(
    service: grpc.ServiceDefinition,
    implementation: I,
    permissions: Permissions<I>,
  ): this {
    const first = Object.values(service)[0];
    if (first === undefined) throw new TypeError('service has no methods');
    const serviceName = first.path.split('/')[1] ?? '';
    for (const [name, def] of Object.entries(service)) {
      const perm = (permissions as Record<string, Permission | undefined>)[name];
      if (perm === undefined) throw new TypeError(`permissions.${name} is required for ${serviceName}`);
      this.#permissions.set(def.path, perm);
    }
    this.#server.addService(service, implementation);
    this.#serviceNames.push(serviceName);
    return this;
  }

  async listen(host: string, port: number, credentials: grpc.ServerCredentials): Promise<number> {
    if (this.#started) throw new Error('server already started');
    this.#started = true;
    this.health.addToServer(this.#server);
    new ReflectionService(this.#reflectionPackage()).addToServer(this.#server);
    const bindHost = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
    this.#port = await new Promise<number>((resolve, reject) => {
      this.#server.bindAsync(`${bindHost}:${port}`, credentials, (err, bound) => (err ? reject(err) : resolve(bound)));
    });
    this.health.setStatus('', 'SERVING');
    for (const name of this.#serviceNames) this.health.setStatus(name, 'SERVING');
    return this.#port;
  }

  /** Stops accepting calls, lets in-flight calls finish for up to `timeoutMs`, then cancels the rest. */
  async shutdown(timeoutMs = 30_000): Promise<void> {
    this.health.setStatus('', 'NOT_SERVING');
    for (const name of this.#serviceNames) this.health.setStatus(name, 'NOT_SERVING');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#opts.log.warn({ inflight: this.#inflight.size }, 'shutdown timeout: cancelling in-flight calls');
        this.#server.forceShutdown();
        resolve();
      }, timeoutMs);
      timer.unref();
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  #reflectionPackage(): PackageDefinition {
    // List only the services this server serves, plus health, with every message type.
    const health = protoLoader.loadSync(healthProtoPath, { ...LOADER_OPTIONS });
    const merged: PackageDefinition = {};
    for (const [name, def] of Object.entries({ ...this.#opts.packageDefinition, ...health })) {
      const isService = !('format' in def);
      if (isService && !this.#serviceNames.includes(name) && name !== 'grpc.health.v1.Health') continue;
      merged[name] = def;
    }
    return merged;
  }

  readonly #interceptor: grpc.ServerInterceptor = (methodDescriptor, call) => {
    const path = methodDescriptor.path;
    const [, service = '', method = ''] = path.split('/');
    const labels = { grpc_type: grpcType(methodDescriptor), grpc_service: service, grpc_method: method };
    const metrics = this.#opts.metrics.grpc;
    const started = process.hrtime.bigint();
    const abort = new AbortController();
    this.#inflight.add(abort);
    let ctx: CallContext | undefined;
    let requestId: string = randomUUID();
    let deadlineTimer: NodeJS.Timeout | undefined;
    let finished = false;
    metrics.started.inc(labels);

    const finish = (code: grpc.status): void => {
      if (finished) return;
      finished = true;
      if (deadlineTimer) clearTimeout(deadlineTimer);
      this.#inflight.delete(abort);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.handled.inc({ ...labels, grpc_code: GRPC_CODE_NAMES[code] ?? 'Unknown' });
      metrics.handlingSeconds.observe(labels, seconds);
      const log = ctx?.log ?? this.#opts.log.child({ reqId: requestId, method: path });
      const fields = { code: GRPC_CODE_NAMES[code], ms: Math.round(seconds * 1e4) / 10 };
      if (code === grpc.status.OK || code === grpc.status.CANCELLED) log.debug(fields, 'call finished');
      else if (code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN || code === grpc.status.DATA_LOSS) log.error(fields, 'call failed');
      else log.info(fields, 'call failed');
    };

    const interceptingCall: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, mdNext) => {
            const given = metadata.get('x-request-id')[0];
            if (typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given)) requestId = given;
            const log = this.#opts.log.child({ reqId: requestId, method: path });
            const clientDeadline = call.getDeadline();
            const hasClientDeadline = clientDeadline instanceof Date || (typeof clientDeadline === 'number' && Number.isFinite(clientDeadline));
            const defaultMs = this.#opts.defaultDeadlineMs ?? 60_000;
            if (!hasClientDeadline && grpcType(methodDescriptor) === 'unary' && defaultMs > 0) {
              deadlineTimer = setTimeout(() => {
                abort.abort();
                interceptingCall.sendStatus({ code: grpc.status.DEADLINE_EXCEEDED, details: `deadline of ${defaultMs} ms exceeded` });
              }, defaultMs);
              deadlineTimer.unref();
            }
            if (UNAUTHENTICATED_SERVICES.some((p) => path.startsWith(p))) {
              ctx = { requestId, method: path, principal: undefined, log, signal: abort.signal };
              contexts.set(metadata, ctx);
              mdNext(metadata);
              return;
            }
            this.#authenticate(path, metadata).then(
              (principal) => {
                ctx = { requestId, method: path, principal, log: log.child({ tenant: principal.tenant }), signal: abort.signal };
                contexts.set(metadata, ctx);
                mdNext(metadata);
              },
              (err: unknown) => {
                const status = toStatus(err, undefined, log);
                interceptingCall.sendStatus(status);
              },
            );
          },
          onReceiveMessage: (message, msgNext) => {
            metrics.msgReceived.inc(labels);
            msgNext(message);
          },
          onCancel: () => {
            abort.abort();
            finish(grpc.status.CANCELLED);
          },
        });
      },
      sendMetadata: (metadata, next) => {
        metadata.set('x-request-id', requestId);
        next(metadata);
      },
      sendMessage: (message, next) => {
        metrics.msgSent.inc(labels);
        next(message);
      },
      sendStatus: (status, next) => {
        finish(status.code);
        next(status);
      },
    });
    return interceptingCall;
  };

  async #authenticate(path: string, metadata: grpc.Metadata): Promise<Principal> {
    const permission = this.#permissions.get(path);
    if (permission === undefined) throw new CairnError('CAIRN_PERMISSION_DENIED', `method ${path} is not available`);
    const header = metadata.get('authorization')[0];
    if (typeof header !== 'string' || header === '') throw new CairnError('CAIRN_UNAUTHENTICATED', 'missing bearer token (authorization metadata)');
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (match?.[1] === undefined) throw new CairnError('CAIRN_UNAUTHENTICATED', 'authorization must be "Bearer <token>"');
    const principal = await verifyToken(this.#opts.authSecret, match[1]);
    if (!can(principal, permission)) {
      throw new CairnError('CAIRN_PERMISSION_DENIED', `role ${principal.role} may not call ${path}`);
    }
    return principal;
  }
}
