// `cairn dev cluster`: a whole cluster on loopback as separate processes — one metadata service
// (LevelDB, or PostgreSQL with one or more replicas), N block nodes that register with it,
// gateways sharing one signing secret and master key, and media workers when the build has
// them. Users run it to try a real cluster; the reliability tests drive the same class to kill,
// partition and restart its processes.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { loadOrCreateSecret, signToken, writeFileAtomic } from '../common/auth.js';
import { CairnError } from '../common/errors.js';
import { loadMasterKey } from '../gateway/index.js';
import { serverConfigSchema } from '../server/index.js';

export type DevRole = 'metadata' | 'blocknode' | 'gateway' | 'media';

export interface DevClusterOptions {
  /** Root directory: one sub-directory per process, the shared secret and keys, client.json. */
  readonly dataDir: string;
  readonly nodes: number;
  readonly replicationFactor: number;
  readonly writeQuorum: number;
  readonly gateways: number;
  /** Media workers (0 when this build has no media role). */
  readonly mediaWorkers: number;
  readonly backend: 'level' | 'postgres';
  /** PostgreSQL URL for backend postgres (required then). */
  readonly postgresUrl?: string;
  /** Metadata replicas (PostgreSQL only; LevelDB is single-process). */
  readonly metadataReplicas: number;
  readonly failoverDelayMs?: number;
  readonly heartbeatIntervalMs: number;
  readonly logLevel: string;
  /** Extra flags per role, e.g. faster anti-entropy in tests. */
  readonly extraArgs?: Partial<Record<DevRole, readonly string[]>>;
  /** Where process output goes (stderr lines of children, prefixed); default: dropped. */
  readonly onOutput?: (name: string, line: string) => void;
  /** Called when a process exits without being asked to. */
  readonly onExit?: (name: string, code: number | null, signal: NodeJS.Signals | null) => void;
  /**
   * Listen address of every process (default 127.0.0.1). A non-loopback address adds
   * --allow-plaintext: the dev cluster is for one machine's private addresses.
   */
  readonly host?: string;
  /**
   * Per-process overrides, e.g. run one block node inside a network namespace: `prefix` is
   * prepended to the command (`ip netns exec <ns>`), `host` replaces the listen address.
   */
  readonly placement?: (name: string) => { readonly prefix?: readonly string[]; readonly host?: string } | undefined;
  /** The command that runs `cairn` (default: this process's node, flags and script). */
  readonly entry?: { readonly execPath: string; readonly args: readonly string[] };
}

export interface DevProcess {
  readonly name: string;
  readonly role: DevRole;
  readonly dataDir: string;
  readonly args: readonly string[];
  proc: ChildProcess;
  grpc: string;
  http: string;
  exited: Promise<number | null>;
  /** Set while the cluster itself stops or kills the process. */
  expectedExit: boolean;
}

const READY_TIMEOUT_MS = 60_000;

function hostPortOf(endpoint: string): string {
  return endpoint.replace(/^https?:\/\//, '');
}

function portOf(endpoint: string): string {
  return hostPortOf(endpoint).split(':').pop() ?? '0';
}

export class DevCluster {
  readonly options: DevClusterOptions;
  readonly root: string;
  readonly secretPath: string;
  readonly masterKeyPath: string;
  readonly clientConfigPath: string;
  readonly processes = new Map<string, DevProcess>();
  #stopping = false;

  private constructor(options: DevClusterOptions) {
    this.options = options;
    this.root = resolve(options.dataDir);
    this.secretPath = join(this.root, 'auth.key');
    this.masterKeyPath = join(this.root, 'master.key');
    this.clientConfigPath = join(this.root, 'client.json');
  }

  /** Validates the options, starts every process and writes client.json; stops what started on failure. */
  static async start(options: DevClusterOptions): Promise<DevCluster> {
    validate(options);
    const cluster = new DevCluster(options);
    mkdirSync(cluster.root, { recursive: true });
    loadOrCreateSecret(cluster.secretPath);
    // Made before any process starts, so gateways and media workers never race to create it.
    loadMasterKey(cluster.masterKeyPath, {});
    try {
      await cluster.#startAll();
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  get metadataEndpoints(): string[] {
    return this.#byRole('metadata').map((p) => p.grpc);
  }

  get gatewayEndpoints(): string[] {
    return this.#byRole('gateway').map((p) => p.grpc);
  }

  /** An admin token for tenant `default` (the one client.json carries). */
  async adminToken(): Promise<string> {
    return signToken(loadOrCreateSecret(this.secretPath), { tenant: 'default', role: 'admin', subject: 'admin', ttlSeconds: 365 * 24 * 3600 });
  }

  /** Mints a token for any tenant and role with the cluster's secret. */
  async token(tenant: string, role: 'reader' | 'user' | 'admin' | 'service' = 'user'): Promise<string> {
    return signToken(loadOrCreateSecret(this.secretPath), { tenant, role, ttlSeconds: 24 * 3600 });
  }

  get(name: string): DevProcess {
    const p = this.processes.get(name);
    if (p === undefined) throw new CairnError('CAIRN_NOT_FOUND', `no process named ${name} (have ${[...this.processes.keys()].join(', ')})`);
    return p;
  }

  /** Sends a signal (default kill -9) and waits for the exit. */
  async kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.get(name);
    if (p.proc.exitCode !== null || p.proc.signalCode !== null) return;
    p.expectedExit = true;
    p.proc.kill(signal);
    await p.exited;
  }

  /** Starts a stopped process again on its old ports and data directory. */
  async restart(name: string): Promise<DevProcess> {
    const p = this.get(name);
    if (p.proc.exitCode === null && p.proc.signalCode === null) throw new CairnError('CAIRN_FAILED_PRECONDITION', `${name} is still running`);
    const args = [...p.args.filter((a, i, all) => !isPortFlag(all, i)), '--grpc-port', portOf(p.grpc), '--http-port', portOf(p.http)];
    return this.#spawn(p.name, p.role, p.dataDir, args);
  }

  /** Stops every process: SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    this.#stopping = true;
    // Gateways and media first, then block nodes, metadata last (reverse dependency order).
    const order: DevRole[] = ['gateway', 'media', 'blocknode', 'metadata'];
    for (const role of order) {
      await Promise.all(
        this.#byRole(role).map(async (p) => {
          if (p.proc.exitCode !== null || p.proc.signalCode !== null) return;
          p.expectedExit = true;
          p.proc.kill('SIGTERM');
          const timer = setTimeout(() => p.proc.kill('SIGKILL'), graceMs);
          await p.exited;
          clearTimeout(timer);
        }),
      );
    }
  }

  /** What the CLI prints: endpoints, pids and the client config. */
  describe(): { clientConfig: string; dataDir: string; processes: Array<{ name: string; role: DevRole; pid: number | undefined; grpc: string; http: string; dataDir: string }> } {
    return {
      clientConfig: this.clientConfigPath,
      dataDir: this.root,
      processes: [...this.processes.values()].map((p) => ({ name: p.name, role: p.role, pid: p.proc.pid, grpc: p.grpc, http: p.http, dataDir: p.dataDir })),
    };
  }

  #byRole(role: DevRole): DevProcess[] {
    return [...this.processes.values()].filter((p) => p.role === role);
  }

  async #startAll(): Promise<void> {
    const o = this.options;
    const shared = ['--auth-secret-file', this.secretPath, '--log-level', o.logLevel];
    const metadataArgs = [...shared, '--replication-factor', String(o.replicationFactor), ...(o.failoverDelayMs !== undefined ? ['--failover-delay-ms', String(o.failoverDelayMs)] : []), ...(o.postgresUrl !== undefined ? ['--postgres-url', o.postgresUrl] : []), ...(o.extraArgs?.metadata ?? [])];
    const replicas = o.backend === 'postgres' ? o.metadataReplicas : 1;
    await Promise.all(Array.from({ length: replicas }, (_, i) => this.#spawn(`metadata-${i + 1}`, 'metadata', join(this.root, `metadata-${i + 1}`), metadataArgs)));
    const metadata = this.metadataEndpoints;
    // Several metadata replicas: each client gets every replica (grpc-js "ipv4:a,b" with
    // pick_first fails over to the next), starting from a different one to spread the load.
    const metadataFor = (i: number): string => {
      if (metadata.length === 1) return metadata[0] ?? '';
      const rotated = metadata.map((_, k) => metadata[(i + k) % metadata.length]!);
      const ipv6 = rotated.some((a) => a.startsWith('['));
      return `${ipv6 ? 'ipv6' : 'ipv4'}:${rotated.join(',')}`;
    };
    await Promise.all(
      Array.from({ length: o.nodes }, (_, i) =>
        this.#spawn(`blocknode-${i + 1}`, 'blocknode', join(this.root, `blocknode-${i + 1}`), [...shared, '--metadata-addr', metadataFor(i), '--node-id', `b${i + 1}`, '--heartbeat-interval-ms', String(o.heartbeatIntervalMs), ...(o.extraArgs?.blocknode ?? [])]),
      ),
    );
    const gatewayArgs = (i: number): string[] => [...shared, '--metadata-addr', metadataFor(i), '--master-key-file', this.masterKeyPath, '--write-quorum', String(o.writeQuorum), ...(o.extraArgs?.gateway ?? [])];
    await Promise.all(Array.from({ length: o.gateways }, (_, i) => this.#spawn(`gateway-${i + 1}`, 'gateway', join(this.root, `gateway-${i + 1}`), gatewayArgs(i))));
    await Promise.all(Array.from({ length: o.mediaWorkers }, (_, i) => this.#spawn(`media-${i + 1}`, 'media', join(this.root, `media-${i + 1}`), [...gatewayArgs(i), ...(o.extraArgs?.media ?? [])])));
    const endpoint = this.gatewayEndpoints[0];
    if (endpoint === undefined) throw new CairnError('CAIRN_INTERNAL', 'no gateway started');
    writeFileAtomic(this.clientConfigPath, JSON.stringify({ endpoint, token: await this.adminToken(), tenant: 'default' }, null, 2) + '\n', 0o600);
  }

  async #spawn(name: string, role: DevRole, dataDir: string, args: readonly string[]): Promise<DevProcess> {
    mkdirSync(dataDir, { recursive: true });
    const entry = this.options.entry ?? { execPath: process.execPath, args: [...process.execArgv, process.argv[1] ?? 'cairn'] };
    const withPorts = args.includes('--grpc-port') ? args : [...args, '--grpc-port', '0', '--http-port', '0'];
    const place = this.options.placement?.(name);
    const host = place?.host ?? this.options.host ?? '127.0.0.1';
    const hostArgs = host === '127.0.0.1' ? [] : ['--host', host, ...(host === '::1' || host.startsWith('127.') ? [] : ['--allow-plaintext'])];
    const command = [...(place?.prefix ?? []), entry.execPath, ...entry.args, 'server', '--role', role, '--data-dir', dataDir, ...hostArgs, ...withPorts];
    const proc = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    const exited = new Promise<number | null>((resolveExit) => proc.once('exit', (code) => resolveExit(code)));
    const p: DevProcess = { name, role, dataDir, args: withPorts, proc, grpc: '', http: '', exited, expectedExit: false };
    const previous = this.processes.get(name);
    this.processes.set(name, p);
    let stderrTail = '';
    const forward = (chunk: Buffer): void => {
      const text = chunk.toString();
      stderrTail = (stderrTail + text).slice(-4000);
      if (this.options.onOutput !== undefined) for (const line of text.split('\n')) if (line.trim() !== '') this.options.onOutput(name, line);
    };
    proc.stderr.on('data', forward);
    void exited.then((code) => {
      if (!p.expectedExit && !this.#stopping) this.options.onExit?.(name, code, proc.signalCode);
    });
    const line = await new Promise<string>((resolveLine, reject) => {
      let stdout = '';
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new CairnError('CAIRN_UNAVAILABLE', `${name} was not ready within ${READY_TIMEOUT_MS / 1000} s; its last output:\n${stderrTail}`));
      }, READY_TIMEOUT_MS);
      proc.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        const ready = stdout.split('\n').find((l) => l.startsWith('cairn ready'));
        if (ready !== undefined) {
          clearTimeout(timer);
          resolveLine(ready);
        }
      });
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new CairnError('CAIRN_UNAVAILABLE', `${name} exited with ${code ?? proc.signalCode} before it was ready; its last output:\n${stderrTail}`));
      });
    });
    p.grpc = /grpc=(\S+)/.exec(line)?.[1] ?? previous?.grpc ?? '';
    p.http = /http=(\S+)/.exec(line)?.[1] ?? previous?.http ?? '';
    return p;
  }
}

function isPortFlag(args: readonly string[], i: number): boolean {
  const a = args[i];
  const before = args[i - 1];
  return a === '--grpc-port' || a === '--http-port' || before === '--grpc-port' || before === '--http-port';
}

function validate(o: DevClusterOptions): void {
  const bad = (msg: string): never => {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', msg);
  };
  if (!Number.isInteger(o.nodes) || o.nodes < 1 || o.nodes > 32) bad(`--nodes must be 1..32, got ${o.nodes}`);
  if (!Number.isInteger(o.replicationFactor) || o.replicationFactor < 1 || o.replicationFactor > o.nodes) bad(`--rf must be 1..--nodes (${o.nodes}), got ${o.replicationFactor}`);
  if (!Number.isInteger(o.writeQuorum) || o.writeQuorum < 1 || o.writeQuorum > o.replicationFactor) bad(`--write-quorum must be 1..--rf (${o.replicationFactor}), got ${o.writeQuorum}`);
  if (!Number.isInteger(o.gateways) || o.gateways < 1 || o.gateways > 8) bad(`--gateways must be 1..8, got ${o.gateways}`);
  if (!Number.isInteger(o.mediaWorkers) || o.mediaWorkers < 0 || o.mediaWorkers > 8) bad(`--media-workers must be 0..8, got ${o.mediaWorkers}`);
  if (o.backend === 'postgres' && o.postgresUrl === undefined) bad('--backend postgres needs --postgres-url (e.g. postgres://user:pass@127.0.0.1:5432/cairn)');
  if (o.backend === 'level' && o.postgresUrl !== undefined) bad('--postgres-url needs --backend postgres');
  if (!Number.isInteger(o.metadataReplicas) || o.metadataReplicas < 1 || o.metadataReplicas > 5) bad(`--metadata-replicas must be 1..5, got ${o.metadataReplicas}`);
  if (o.backend === 'level' && o.metadataReplicas > 1) bad('--metadata-replicas > 1 needs --backend postgres (LevelDB is single-process)');
  if (o.mediaWorkers > 0 && !mediaRoleAvailable()) bad('this build has no media role; use --media-workers 0');
}

/** Whether `cairn server --role media` exists in this build. */
export function mediaRoleAvailable(): boolean {
  const role = serverConfigSchema.shape.role;
  return role.safeParse('media').success;
}

function intOption(name: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value)) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${name} must be a non-negative integer, got "${value}"`);
    return Number(value);
  };
}

export function registerDev(program: Command): void {
  const dev = program.command('dev').description('development tools');
  dev
    .command('cluster')
    .description('run a cluster of separate processes on loopback (metadata, block nodes, gateways, media); Ctrl-C stops it')
    .option('--nodes <n>', 'block nodes', intOption('--nodes'), 3)
    .option('--rf <n>', 'replication factor', intOption('--rf'), 3)
    .option('--write-quorum <n>', 'copies before a write is acknowledged (default min(2, rf))', intOption('--write-quorum'))
    .option('--gateways <n>', 'gateways', intOption('--gateways'), 1)
    .option('--media-workers <n>', 'media workers (default 1 when this build has the media role)', intOption('--media-workers'))
    .addOption(new Option('--backend <backend>', 'metadata backend').choices(['level', 'postgres']).default('level'))
    .option('--postgres-url <url>', 'PostgreSQL URL (backend postgres)')
    .option('--metadata-replicas <n>', 'metadata replicas (backend postgres)', intOption('--metadata-replicas'), 1)
    .option('--failover-delay-ms <ms>', 'how long a silent block node stays up before it is marked down', intOption('--failover-delay-ms'))
    .option('--data-dir <dir>', 'cluster directory', './data/dev-cluster')
    .option('--log-level <level>', 'log level of the processes', 'warn')
    .action(async (opts: { nodes: number; rf: number; writeQuorum?: number; gateways: number; mediaWorkers?: number; backend: 'level' | 'postgres'; postgresUrl?: string; metadataReplicas: number; failoverDelayMs?: number; dataDir: string; logLevel: string }) => {
      const json = program.opts<{ json?: boolean }>().json === true;
      const cluster = await DevCluster.start({
        dataDir: opts.dataDir,
        nodes: opts.nodes,
        replicationFactor: opts.rf,
        writeQuorum: opts.writeQuorum ?? Math.min(2, opts.rf),
        gateways: opts.gateways,
        mediaWorkers: opts.mediaWorkers ?? (mediaRoleAvailable() ? 1 : 0),
        backend: opts.backend,
        ...(opts.postgresUrl !== undefined ? { postgresUrl: opts.postgresUrl } : {}),
        metadataReplicas: opts.metadataReplicas,
        ...(opts.failoverDelayMs !== undefined ? { failoverDelayMs: opts.failoverDelayMs } : {}),
        heartbeatIntervalMs: 1000,
        logLevel: opts.logLevel,
        onOutput: (name, line) => process.stderr.write(`[${name}] ${line}\n`),
        onExit: (name, code, signal) => process.stderr.write(`cairn dev cluster: ${name} exited (${signal ?? code}); the others keep running\n`),
      });
      const d = cluster.describe();
      if (json) process.stdout.write(JSON.stringify({ ready: true, ...d }) + '\n');
      else {
        process.stdout.write(`cairn dev cluster ready: ${opts.nodes} block nodes, RF ${opts.rf}, ${opts.backend} metadata\n`);
        for (const p of d.processes) process.stdout.write(`  ${p.name.padEnd(12)} pid ${String(p.pid).padEnd(8)} grpc ${p.grpc.padEnd(22)} http ${p.http}\n`);
        process.stdout.write(`client config: ${d.clientConfig}\n  try: CAIRN_DATA_DIR=${opts.dataDir} cairn put ./some-file /some-file\n`);
      }
      await new Promise<void>((resolveStop) => {
        const onSignal = (): void => {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          resolveStop();
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
      });
      if (!json) process.stderr.write('cairn dev cluster: stopping…\n');
      await cluster.stop();
    });
}
