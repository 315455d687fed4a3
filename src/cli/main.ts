// The `cairn` command line: `cairn server` runs daemons; put/get/stat talk to a gateway
// through the SDK; `cairn token create` mints tokens from a server's signing secret.
import { resolve, join } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { CairnError } from '../common/errors.js';
import { ROLES as TOKEN_ROLES, loadOrCreateSecret, signToken, type Role } from '../common/auth.js';
import { CairnClient, resolveClientSettings, sharedTreeOptions, type FileInfo } from '../client/index.js';
import { EXIT, describeError, exitCodeFor } from './exit.js';
import { createProgress } from './progress.js';
import { registerAdmin } from './admin.js';
import { registerFilesCommands } from './files-commands.js';
import { registerShareCommands } from './share-commands.js';
import { registerMediaCommands } from './media.js';
import { registerSync } from './sync.js';
import { registerDev } from './dev-cluster.js';
import { registerOperator } from './operator.js';
import type { GlobalOptions } from './global-options.js';


function parseNonNegativeInt(name: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${name} must be a non-negative integer, got "${value}"`);
    return Number(value);
  };
}

type ByteRange = { start: number; end?: number } | { suffix: number };

/** HTTP-style byte ranges: "<start>-<end>" (inclusive), "<start>-", "-<suffix length>". */
function parseRange(value: string): ByteRange {
  const m = /^(\d*)-(\d*)$/.exec(value);
  const bad = (): CairnError => new CairnError('CAIRN_INVALID_ARGUMENT', `--range must be <start>-<end>, <start>- or -<suffix>, got "${value}"`);
  if (m === null || (m[1] === '' && m[2] === '')) throw bad();
  const num = (s: string): number => {
    const n = Number(s);
    if (!Number.isSafeInteger(n)) throw bad();
    return n;
  };
  if (m[1] === '') {
    const suffix = num(m[2]!);
    if (suffix === 0) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--range suffix length must be at least 1');
    return { suffix };
  }
  const start = num(m[1]!);
  if (m[2] === '') return { start };
  const end = num(m[2]!);
  if (end < start) throw new CairnError('CAIRN_INVALID_ARGUMENT', `--range end ${end} is before start ${start}`);
  return { start, end };
}

function client(program: Command): CairnClient {
  const g = program.opts<GlobalOptions>();
  const settings = resolveClientSettings({ endpoint: g.endpoint, token: g.token, tlsCa: g.tlsCa, tlsCert: g.tlsCert, tlsKey: g.tlsKey });
  // --owner: act in a tree another tenant shares with this token's user (docs/sharing.md).
  return g.owner === undefined ? new CairnClient(settings) : new CairnClient(settings, sharedTreeOptions(g.owner));
}

function printInfo(program: Command, info: FileInfo, verb: string): void {
  const g = program.opts<GlobalOptions>();
  if (g.json === true) process.stdout.write(JSON.stringify(info) + '\n');
  else if (g.quiet !== true) process.stdout.write(`${verb} ${info.path} version ${info.version} (${info.size} bytes, ${info.chunkCount} chunks)\n`);
}

const SERVER_FLAGS: Array<[flag: string, key: string, help: string]> = [
  ['--role <role>', 'role', `component to run: ${['embedded', 'gateway', 'metadata', 'blocknode', 'media'].join(', ')}`],
  ['--data-dir <dir>', 'dataDir', 'data directory (default ./data)'],
  ['--host <addr>', 'host', 'listen address (default 127.0.0.1)'],
  ['--grpc-port <port>', 'grpcPort', 'gRPC port (default 7400)'],
  ['--http-port <port>', 'httpPort', 'HTTP port for metrics and health (default 7480)'],
  ['--log-level <level>', 'logLevel', 'log level (default info)'],
  ['--tls-cert <file>', 'tlsCert', 'TLS certificate (PEM)'],
  ['--tls-key <file>', 'tlsKey', 'TLS private key (PEM)'],
  ['--tls-ca <file>', 'tlsCa', 'CA bundle: require client certificates (mTLS)'],
  ['--allow-plaintext', 'allowPlaintext', 'allow plaintext on non-loopback addresses'],
  ['--auth-secret-file <file>', 'authSecretFile', 'token signing secret (default <data-dir>/auth.key)'],
  ['--master-key-file <file>', 'masterKeyFile', 'master key for encryption at rest (default <data-dir>/master.key; CAIRN_MASTER_KEY overrides)'],
  ['--metadata-addr <host:port>', 'metadataAddr', 'metadata service address (role gateway)'],
  ['--blocknode-addr <host:port>', 'blocknodeAddr', 'block node address (role gateway)'],
  ['--postgres-url <url>', 'postgresUrl', 'PostgreSQL URL for metadata (default LevelDB)'],
  ['--max-file-bytes <n>', 'maxFileBytes', 'largest file accepted (default 10 GiB)'],
  ['--capacity-bytes <n>', 'capacityBytes', 'block store capacity limit'],
  ['--reserve-bytes <n>', 'reserveBytes', 'free disk space kept in reserve (default 256 MiB)'],
  ['--shutdown-timeout-ms <ms>', 'shutdownTimeoutMs', 'how long SIGTERM waits for in-flight calls (default 30000)'],
  ['--cluster-map <file>', 'clusterMap', 'static cluster map JSON file (gateway, blocknode)'],
  ['--node-id <id>', 'nodeId', "this block node's id in the cluster map"],
  ['--write-quorum <n>', 'writeQuorum', 'durable copies before a write is acknowledged (default 2)'],
  ['--anti-entropy-interval-ms <ms>', 'antiEntropyIntervalMs', 'pause between anti-entropy passes (default 30000, 0 = off)'],
  ['--anti-entropy-bytes-per-second <n>', 'antiEntropyBytesPerSecond', 'anti-entropy copy budget (default 64 MiB/s, 0 = unlimited)'],
  ['--rebalance-settle-ms <ms>', 'rebalanceSettleMs', 'map stability required before handed-off data is deleted (default 10000)'],
  ['--scrub-interval-ms <ms>', 'scrubIntervalMs', 'pause between background scrubs (default 1 day, 0 = off)'],
  ['--scrub-bytes-per-second <n>', 'scrubBytesPerSecond', 'scrub read budget (default 8 MiB/s)'],
  ['--advertise-addr <host:port>', 'advertiseAddr', 'address others dial to reach this block node'],
  ['--zone <zone>', 'zone', "this block node's failure domain"],
  ['--heartbeat-interval-ms <ms>', 'heartbeatIntervalMs', 'block node heartbeat period (default 5000)'],
  ['--replication-factor <n>', 'replicationFactor', 'copies of every block in a new cluster (default 3)'],
  ['--failover-delay-ms <ms>', 'failoverDelayMs', 'silence before a block node is marked down (default 300000)'],
  ['--gc-interval-ms <ms>', 'gcIntervalMs', 'pause between block GC runs (default 60000, 0 = on demand only)'],
  ['--delete-grace-ms <ms>', 'deleteGraceMs', 'how long an unreferenced chunk waits before GC may delete it (default 600000)'],
  ['--orphan-grace-ms <ms>', 'orphanGraceMs', 'how long a block no chunk names stays before the orphan sweep deletes it (default 1 day)'],
  ['--orphan-tombstone-ms <ms>', 'orphanTombstoneMs', 'how long a deleted orphan block address refuses uploads that began before the deletion (default 7 days, at least 6 days + 1 h)'],
  ['--orphan-sweep-interval-ms <ms>', 'orphanSweepIntervalMs', 'least pause between orphan sweeps of the periodic GC (default 1 h, 0 = on demand only)'],
  ['--change-retention-ms <ms>', 'changeRetentionMs', 'how long change-feed events are kept (default 30 days)'],
  ['--rate-limit-requests-per-second <n>', 'rateLimitRequestsPerSecond', 'calls per tenant per second a gateway accepts (default 1000, 0 = unlimited)'],
  ['--rate-limit-bytes-per-second <n>', 'rateLimitBytesPerSecond', 'bytes per tenant per second through a gateway (default 0 = unlimited)'],
  ['--rate-limit-burst-seconds <s>', 'rateLimitBurstSeconds', 'rate-limit burst, in seconds of rate (default 5)'],
  ['--public-http-url <url>', 'publicHttpUrl', "gateway's public HTTP base URL for presigned and link URLs"],
  ['--media-threads <n>', 'mediaThreads', 'sharp pool threads (default 0 = from the CPU limit)'],
  ['--media-queue <n>', 'mediaQueue', 'media tasks that may wait for a pool thread (default 64)'],
  ['--media-task-deadline-ms <ms>', 'mediaTaskDeadlineMs', 'abort media tasks still queued after this long (default 60000)'],
  ['--media-format <format>', 'mediaFormat', 'thumbnail format: webp, avif or jpeg (default webp)'],
  ['--media-quality <n>', 'mediaQuality', 'thumbnail encoder quality 1-100 (default 80)'],
  ['--media-max-input-pixels <n>', 'mediaMaxInputPixels', 'refuse images declaring more pixels (default 100000000)'],
  ['--media-max-bytes <n>', 'mediaMaxBytes', 'largest file media workers process (default 256 MiB)'],
  ['--media-max-frames <n>', 'mediaMaxFrames', 'refuse animations declaring more frames (default 1000)'],
  ['--media-svg <mode>', 'mediaSvg', 'SVG: rasterise (references removed) or refuse (default rasterise)'],
  ['--media-on-demand <mode>', 'mediaOnDemand', 'a thumbnail not ready yet: generate or unavailable (default generate)'],
  ['--media-video-timeout-ms <ms>', 'mediaVideoTimeoutMs', 'wall-clock cap of each ffprobe/ffmpeg run (default 60000)'],
  ['--media-job-concurrency <n>', 'mediaJobConcurrency', 'media jobs one process works on at once (default 4, 0 = none)'],
  ['--media-lease-ms <ms>', 'mediaLeaseMs', 'lease of a media job (default 120000)'],
];

async function runServer(flags: Record<string, unknown>): Promise<void> {
  // Loaded lazily: client commands should not pay for the server's modules.
  const { loadServerConfig, startServer } = await import('../server/index.js');
  const { createLogger } = await import('../common/log.js');
  const values: Record<string, unknown> = {};
  for (const [, key] of SERVER_FLAGS) if (flags[key] !== undefined) values[key] = flags[key];
  if (flags['embedded'] === true) {
    if (values['role'] !== undefined && values['role'] !== 'embedded') throw new CairnError('CAIRN_INVALID_ARGUMENT', '--embedded and --role are exclusive');
    values['role'] = 'embedded';
  }
  const config = loadServerConfig({ flags: values, ...(typeof flags['config'] === 'string' ? { file: flags['config'] } : {}) });
  const log = createLogger({ level: config.logLevel, name: `cairn-${config.role}` });
  const server = await startServer(config, log);
  process.stdout.write(server.readyLine + '\n');
  if (config.role === 'embedded' && process.stdout.isTTY === true) {
    process.stdout.write(`  try: npx cairn put <file> /<name>   then   npx cairn get /<name> <copy>\n`);
  }
  await new Promise<void>((resolveStop) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now');
        process.exit(EXIT.FAILURE);
      }
      stopping = true;
      log.info({ signal }, 'shutting down');
      server.stop().then(
        () => {
          log.info('stopped');
          log.flush();
          resolveStop();
        },
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          process.exitCode = EXIT.FAILURE;
          resolveStop();
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

export function buildProgram(): Command {
  const program = new Command('cairn');
  program
    .description('Cairn: a storage cluster for files and images')
    .version('0.1.0')
    .option('--endpoint <host:port>', 'gateway address (else CAIRN_ENDPOINT, ~/.config/cairn/config.json, ./data/client.json)')
    .option('--token <token>', 'bearer token (else CAIRN_TOKEN, then the config files)')
    .option('--owner <tenant>', "work in the tree that tenant shares with you (file commands)")
    .option('--tls-ca <file>', 'trust this CA for the gateway')
    .option('--tls-cert <file>', 'client certificate (mTLS)')
    .option('--tls-key <file>', 'client key (mTLS)')
    .option('--json', 'print results as JSON lines')
    .option('-q, --quiet', 'print nothing on success')
    .showHelpAfterError()
    .exitOverride();

  const server = program
    .command('server')
    .description('run Cairn server components')
    .option('--embedded', 'run metadata, block node and gateway in one process (default)')
    .option('--config <file>', 'JSON config file (else CAIRN_CONFIG)');
  for (const [flag, , help] of SERVER_FLAGS) server.addOption(new Option(flag, help));
  // Server TLS flags share names with the client's global ones; read them from this command only.
  server.enablePositionalOptions();
  program.enablePositionalOptions();
  server.action(async (opts: Record<string, unknown>) => runServer(opts));

  program
    .command('put')
    .description('upload a local file: only chunks the server lacks are sent, an edit sends a diff, and an interrupted put resumes on the next run')
    .argument('<local>', 'local file')
    .argument('<remote>', 'remote path, e.g. /docs/report.pdf')
    .option('--base-version <n>', 'fail with a conflict unless the remote file is at this version (0: must not exist)', parseNonNegativeInt('--base-version'))
    .option('--streams <n>', 'parallel upload streams (default 16)', parseNonNegativeInt('--streams'))
    .option('--cache-dir <dir>', 'chunk cache (default $XDG_CACHE_HOME/cairn or ~/.cache/cairn)')
    .action(async (local: string, remote: string, opts: { baseVersion?: number; streams?: number; cacheDir?: string }) => {
      if (opts.streams !== undefined && (opts.streams < 1 || opts.streams > 256)) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--streams must be 1..256');
      const c = client(program);
      const progress = createProgress(`put ${remote}`, program.opts<GlobalOptions>().quiet !== true);
      try {
        const res = await c.upload(local, remote, {
          onProgress: progress.update,
          ...(opts.baseVersion !== undefined ? { baseVersion: opts.baseVersion } : {}),
          ...(opts.streams !== undefined ? { streams: opts.streams } : {}),
          ...(opts.cacheDir !== undefined ? { cacheDir: resolve(opts.cacheDir) } : {}),
        });
        progress.stop();
        const g = program.opts<GlobalOptions>();
        if (g.json === true) process.stdout.write(JSON.stringify({ ...res.info, chunks: res.chunks, chunksSent: res.chunksSent, bytesSent: res.bytesSent, wireBytes: res.wireBytes }) + '\n');
        else if (g.quiet !== true) process.stdout.write(`stored ${res.info.path} version ${res.info.version} (${res.info.size} bytes, ${res.chunks} chunks; sent ${res.chunksSent} chunks, ${res.bytesSent} bytes)\n`);
      } finally {
        progress.stop();
        c.close();
      }
    });

  program
    .command('get')
    .description('download a file (or a range) to a local path, or "-" for stdout')
    .argument('<remote>', 'remote path')
    .argument('<local>', 'local file, or - for stdout')
    .option('--version <n>', 'version to read (default current)', parseNonNegativeInt('--version'))
    .option('--offset <n>', 'first byte', parseNonNegativeInt('--offset'))
    .option('--limit <n>', 'number of bytes', parseNonNegativeInt('--limit'))
    .option('--range <range>', 'bytes to read, inclusive as in HTTP: <start>-<end>, <start>- or -<suffix length>', parseRange)
    .action(async (remote: string, local: string, opts: { version?: number; offset?: number; limit?: number; range?: ByteRange }) => {
      if (opts.range !== undefined && (opts.offset !== undefined || opts.limit !== undefined)) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--range cannot be combined with --offset or --limit');
      const c = client(program);
      const toStdout = local === '-';
      const progress = createProgress(`get ${remote}`, !toStdout && program.opts<GlobalOptions>().quiet !== true);
      try {
        let { offset, limit } = opts;
        const r = opts.range;
        if (r !== undefined && 'suffix' in r) {
          const size = (await c.stat(remote, opts.version ?? 0)).size;
          offset = Math.max(0, size - r.suffix);
          limit = size - offset;
          if (limit === 0) throw new CairnError('CAIRN_OUT_OF_RANGE', `${remote} is empty: no suffix to read`);
        } else if (r !== undefined) {
          offset = r.start;
          if (r.end !== undefined) limit = r.end - r.start + 1;
        }
        const info = await c.get(remote, toStdout ? '-' : resolve(local), { onProgress: progress.update, ...(opts.version !== undefined ? { version: opts.version } : {}), ...(offset !== undefined ? { offset } : {}), ...(limit !== undefined ? { limit } : {}) });
        progress.stop();
        if (!toStdout) printInfo(program, info, 'fetched');
      } finally {
        progress.stop();
        c.close();
      }
    });

  program
    .command('stat')
    .description('describe a file')
    .argument('<remote>', 'remote path')
    .option('--version <n>', 'version (default current)', parseNonNegativeInt('--version'))
    .action(async (remote: string, opts: { version?: number }) => {
      const c = client(program);
      try {
        const info = await c.stat(remote, opts.version ?? 0);
        if (program.opts<GlobalOptions>().json === true) process.stdout.write(JSON.stringify(info) + '\n');
        else {
          process.stdout.write(
            [`path:     ${info.path}`, `version:  ${info.version}`, `size:     ${info.size}`, `chunks:   ${info.chunkCount}`, `content:  ${info.contentHash}`, `modified: ${new Date(info.mtimeMs).toISOString()}`, `revision: ${info.revision}`].join('\n') + '\n',
          );
        }
      } finally {
        c.close();
      }
    });

  const token = program.command('token').description('manage bearer tokens');
  token
    .command('create')
    .description("mint a token with a server's signing secret")
    .requiredOption('--tenant <tenant>', 'tenant name')
    .addOption(new Option('--role <role>', 'role').choices([...TOKEN_ROLES]).default('user'))
    .option('--ttl-days <days>', 'lifetime in days', parseNonNegativeInt('--ttl-days'), 30)
    .option('--data-dir <dir>', 'server data directory holding auth.key', './data')
    .option('--auth-secret-file <file>', 'signing secret file (default <data-dir>/auth.key)')
    .action(async (opts: { tenant: string; role: Role; ttlDays: number; dataDir: string; authSecretFile?: string }) => {
      if (opts.ttlDays < 1) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--ttl-days must be at least 1');
      const secretPath = opts.authSecretFile ?? join(opts.dataDir, 'auth.key');
      const secret = loadOrCreateSecret(secretPath);
      process.stdout.write((await signToken(secret, { tenant: opts.tenant, role: opts.role, ttlSeconds: opts.ttlDays * 86400 })) + '\n');
    });

  registerFilesCommands(program, () => client(program));
  registerShareCommands(program);
  registerMediaCommands(program);
  registerSync(program, () => client(program));
  registerAdmin(program);
  registerDev(program);
  registerOperator(program);

  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
      return;
    }
    process.stderr.write(`cairn: ${describeError(err)}\n`);
    process.exitCode = exitCodeFor(err);
  }
}
