// Server configuration: every option, its default, and how it is named as a flag
// (--grpc-port), an environment variable (CAIRN_GRPC_PORT) and a config-file key (grpcPort).
import { z } from 'zod';
import { loadConfig, zBool, zInt, type LoadOptions } from '../common/config.js';
import { LOG_LEVELS } from '../common/log.js';
import type { MediaOptionsInput } from '../media/index.js';

export const ROLES = ['embedded', 'gateway', 'metadata', 'blocknode', 'media'] as const;
export type ServerRole = (typeof ROLES)[number];

const GiB = 1024 ** 3;

export const serverConfigSchema = z.object({
  role: z.enum(ROLES).default('embedded').describe('What this process runs: everything (embedded) or one component'),
  dataDir: z.string().min(1).default('./data').describe('Where data, the auth secret and client.json live'),
  host: z.string().min(1).default('127.0.0.1').describe('Listen address of the public gRPC and HTTP ports'),
  grpcPort: zInt(0, 65535).default(7400).describe('gRPC port (0 = pick a free port)'),
  httpPort: zInt(0, 65535).default(7480).describe('HTTP port for /metrics, /healthz, /readyz (0 = pick)'),
  logLevel: z.enum(LOG_LEVELS).default('info').describe('fatal, error, warn, info, debug, trace or silent'),
  tlsCert: z.string().min(1).optional().describe('PEM certificate for TLS on every listener'),
  tlsKey: z.string().min(1).optional().describe('PEM private key for --tls-cert'),
  tlsCa: z.string().min(1).optional().describe('PEM CA bundle: require client certificates (mTLS); also trusted by internal clients'),
  allowPlaintext: zBool.default(false).describe('Allow plaintext on non-loopback addresses'),
  authSecretFile: z.string().min(1).optional().describe('Token signing secret (default <dataDir>/auth.key, created on first start)'),
  masterKeyFile: z.string().min(1).optional().describe('Master key wrapping tenant data keys (default <dataDir>/master.key, created on first start; CAIRN_MASTER_KEY overrides)'),
  metadataAddr: z.string().min(1).optional().describe('host:port of the metadata service (role gateway)'),
  blocknodeAddr: z.string().min(1).optional().describe('host:port of the block node (role gateway)'),
  postgresUrl: z.string().min(1).optional().describe('PostgreSQL URL for the metadata store (default: LevelDB in dataDir)'),
  maxFileBytes: zInt(1, Number.MAX_SAFE_INTEGER).default(10 * GiB).describe('Largest file accepted, in bytes'),
  capacityBytes: zInt(1, Number.MAX_SAFE_INTEGER).optional().describe('Block store capacity limit in bytes (default: the disk)'),
  reserveBytes: zInt(0, Number.MAX_SAFE_INTEGER).default(256 * 1024 * 1024).describe('Free disk space below which block puts are refused'),
  shutdownTimeoutMs: zInt(0, 3_600_000).default(30_000).describe('How long SIGTERM waits for in-flight calls'),
  clusterMap: z.string().min(1).optional().describe('Static cluster map JSON file (roles gateway and blocknode), re-read when it changes'),
  nodeId: z.string().min(1).optional().describe("This block node's id in the cluster map (role blocknode, with --cluster-map)"),
  writeQuorum: zInt(1, 16).default(2).describe('Durable copies before a block write is acknowledged (capped at the replication factor)'),
  antiEntropyIntervalMs: zInt(0, 86_400_000).default(30_000).describe('Pause between anti-entropy passes on a block node (0 = off)'),
  antiEntropyBytesPerSecond: zInt(0, Number.MAX_SAFE_INTEGER).default(64 * 1024 * 1024).describe('Bytes/s anti-entropy may copy to other nodes (0 = unlimited)'),
  rebalanceSettleMs: zInt(0, 86_400_000).default(10_000).describe('How long a map must be stable before a node deletes data it handed to the new owners'),
  scrubIntervalMs: zInt(0, 30 * 86_400_000).default(86_400_000).describe('Pause between background scrubs of a block node (0 = off)'),
  scrubBytesPerSecond: zInt(1, Number.MAX_SAFE_INTEGER).default(8 * 1024 * 1024).describe('Read budget of the background scrub in bytes/s'),
  advertiseAddr: z.string().min(1).optional().describe('host:port other processes dial to reach this block node (default: --host and the gRPC port)'),
  zone: z.string().default('').describe('Failure domain of this block node (replicas go to distinct zones when there are enough)'),
  heartbeatIntervalMs: zInt(100, 3_600_000).default(5_000).describe('How often a block node reports to the metadata service'),
  replicationFactor: zInt(1, 16).default(3).describe('Copies of every block in a new cluster (role metadata)'),
  failoverDelayMs: zInt(1_000, 86_400_000).default(300_000).describe('How long a block node may stay silent before the metadata service marks it down (role metadata)'),
  gcIntervalMs: zInt(0, 86_400_000).default(60_000).describe('Pause between block GC runs of the metadata service (0 = only on `cairn admin gc run`; roles embedded and metadata)'),
  deleteGraceMs: zInt(0, 30 * 86_400_000).default(600_000).describe('How long a chunk with no references waits in the delete queue before GC may delete its blocks (roles embedded and metadata)'),
  orphanGraceMs: zInt(0, 365 * 86_400_000).default(86_400_000).describe('How long a block no chunk names must stay unreferenced before the orphan sweep deletes it from the block nodes (roles embedded and metadata)'),
  orphanTombstoneMs: zInt(6 * 86_400_000 + 3_600_000, 365 * 86_400_000).default(7 * 86_400_000).describe('How long the orphan sweep remembers a deleted block address, refusing commits whose upload began writing blocks before the deletion; at least 6 days + 1 h, because gateways refuse to commit an upload whose first block write is older than 6 days (roles embedded and metadata)'),
  orphanSweepIntervalMs: zInt(0, 30 * 86_400_000).default(3_600_000).describe('Least pause between orphan-block sweeps of the periodic GC (0 = only on `cairn admin gc run --orphans`; roles embedded and metadata)'),
  changeRetentionMs: zInt(1_000, 3_650 * 86_400_000).default(30 * 86_400_000).describe('How long change-feed events are kept; older cursors get CAIRN_CURSOR_EXPIRED (roles embedded and metadata)'),
  rateLimitRequestsPerSecond: zInt(0, 10_000_000).default(1_000).describe('Calls per tenant per second a gateway accepts (0 = unlimited)'),
  rateLimitBytesPerSecond: zInt(0, Number.MAX_SAFE_INTEGER).default(0).describe('Bytes read or written per tenant per second through a gateway (0 = unlimited)'),
  rateLimitBurstSeconds: zInt(1, 3_600).default(5).describe('Rate-limit bucket size in seconds of rate (the burst an idle tenant may spend at once)'),
  publicHttpUrl: z.string().url().optional().describe("The gateway's public HTTP base URL for presigned and link URLs (default: its HTTP endpoint)"),
  mediaThreads: zInt(0, 256).default(0).describe('sharp pool threads (0 = from the cgroup CPU limit so that threads × sharp.concurrency() ≤ CPUs)'),
  mediaQueue: zInt(1, 100_000).default(64).describe('Media tasks that may wait for a pool thread before new work is refused'),
  mediaTaskDeadlineMs: zInt(1, 3_600_000).default(60_000).describe('A media task still waiting for a pool thread after this long is aborted'),
  mediaFormat: z.enum(['webp', 'avif', 'jpeg']).default('webp').describe('Thumbnail format: webp, avif or jpeg'),
  mediaQuality: zInt(1, 100).default(80).describe('Thumbnail encoder quality (1-100)'),
  mediaMaxInputPixels: zInt(1, 2 ** 40).default(100_000_000).describe('Images declaring more pixels (width × height) are refused before decoding'),
  mediaMaxBytes: zInt(1, Number.MAX_SAFE_INTEGER).default(256 * 1024 * 1024).describe('Largest file media workers process, in bytes'),
  mediaMaxFrames: zInt(1, 1_000_000).default(1_000).describe('Animations declaring more frames are refused (only the first frame is decoded)'),
  mediaSvg: z.enum(['rasterise', 'refuse']).default('rasterise').describe('SVG: rasterise with every external and local reference removed, or refuse'),
  mediaOnDemand: z.enum(['generate', 'unavailable']).default('generate').describe('A thumbnail asked for before its job ran: generate it now (single-flight) or answer 503 with Retry-After'),
  mediaVideoTimeoutMs: zInt(100, 3_600_000).default(60_000).describe('Wall-clock cap of each ffprobe/ffmpeg run'),
  mediaJobConcurrency: zInt(0, 1_000).default(4).describe('Media jobs one process works on at once (0 = run no jobs; roles embedded and media)'),
  mediaLeaseMs: zInt(1_000, 86_400_000).default(120_000).describe('Lease of a media job: a worker that dies mid-job loses it after this long'),
});

export type ServerConfig = z.infer<typeof serverConfigSchema>;

export function loadServerConfig(options: LoadOptions): Readonly<ServerConfig> {
  return loadConfig(serverConfigSchema, options);
}

/** The media options of a server config (src/media's own names). */
export function mediaOptionsOf(config: Readonly<ServerConfig>): MediaOptionsInput {
  return {
    threads: config.mediaThreads,
    maxQueue: config.mediaQueue,
    taskDeadlineMs: config.mediaTaskDeadlineMs,
    format: config.mediaFormat,
    quality: config.mediaQuality,
    maxInputPixels: config.mediaMaxInputPixels,
    maxBytes: config.mediaMaxBytes,
    maxFrames: config.mediaMaxFrames,
    svg: config.mediaSvg,
    onDemand: config.mediaOnDemand,
    videoTimeoutMs: config.mediaVideoTimeoutMs,
    jobConcurrency: config.mediaJobConcurrency,
    leaseMs: config.mediaLeaseMs,
  };
}
