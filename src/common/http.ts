// The HTTP side of every daemon: /metrics (Prometheus), /healthz (alive), /readyz (serving),
// plus an optional handler for component routes (presigned URLs later). TLS from the same files.
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Registry } from 'prom-client';
import { CairnError } from './errors.js';
import { isLoopback, type TlsFiles } from './grpc-server.js';
import type { Logger } from './log.js';

export type RouteHandler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

export interface HttpServerOptions {
  readonly registry: Registry;
  readonly log: Logger;
  /** Whether the process is ready to serve (readiness); liveness is "the event loop answers". */
  readonly ready: () => boolean;
  readonly tls?: TlsFiles;
  readonly allowPlaintext?: boolean;
  /** Returns true when it handled the request. */
  readonly routes?: RouteHandler;
}

export interface HttpEndpoint {
  readonly port: number;
  close(): Promise<void>;
}

export async function startHttpServer(host: string, port: number, options: HttpServerOptions): Promise<HttpEndpoint> {
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    handle(req, res, options).catch((err: unknown) => {
      options.log.error({ err }, 'http handler failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error\n');
    });
  };
  let server: Server;
  const tls = options.tls ?? {};
  if (tls.cert !== undefined && tls.key !== undefined) {
    server = createHttpsServer({
      cert: readFileSync(tls.cert),
      key: readFileSync(tls.key),
      ...(tls.ca !== undefined ? { ca: readFileSync(tls.ca), requestCert: true, rejectUnauthorized: true } : {}),
    }, handler);
  } else {
    if (!isLoopback(host) && options.allowPlaintext !== true) {
      throw new CairnError('CAIRN_INVALID_ARGUMENT', `refusing to serve plaintext HTTP on non-loopback address ${host}: set --tls-cert and --tls-key, or --allow-plaintext`);
    }
    server = createHttpServer(handler);
  }
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const bound = typeof address === 'object' && address !== null ? address.port : port;
  return {
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

async function handle(req: IncomingMessage, res: ServerResponse, options: HttpServerOptions): Promise<void> {
  // Only origin-form targets ("/path?query") are served; anything else ("//x", "*", absolute
  // URLs) is a client error, decided here once so routes can parse req.url without failing.
  const target = req.url ?? '/';
  if (!target.startsWith('/') || target.startsWith('//') || !URL.canParse(target, 'http://localhost')) {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end('bad request target\n');
    return;
  }
  const url = new URL(target, 'http://localhost');
  if (req.method === 'GET' || req.method === 'HEAD') {
    if (url.pathname === '/metrics') {
      // `?name[]=a&name[]=b` (or `name=`) exposes only those metrics: a poller that watches one
      // counter does not pay for every gauge's collect (some read the KV or the disk index).
      const names = [...url.searchParams.getAll('name[]'), ...url.searchParams.getAll('name')];
      const unknown = names.filter((n) => options.registry.getSingleMetric(n) === undefined);
      if (unknown.length > 0) {
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end(`unknown metric ${JSON.stringify(unknown[0])}\n`);
        return;
      }
      const body = names.length === 0 ? await options.registry.metrics() : (await Promise.all([...new Set(names)].map((n) => options.registry.getSingleMetricAsString(n)))).map((t) => `${t}\n`).join('');
      res.writeHead(200, { 'content-type': options.registry.contentType });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    if (url.pathname === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    }
    if (url.pathname === '/readyz') {
      const ready = options.ready();
      res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' });
      res.end(ready ? 'ready\n' : 'not ready\n');
      return;
    }
  }
  if (options.routes && (await options.routes(req, res))) return;
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
}
