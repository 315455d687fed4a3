// `cairn operator`: runs the Kubernetes operator for CairnClusters — kubeconfig from KUBECONFIG
// or the in-cluster service account, Lease leader election, /metrics, /healthz and /readyz.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Command } from 'commander';
import { CairnError } from '../common/errors.js';

interface OperatorFlags {
  namespace?: string;
  leaseNamespace?: string;
  kubeconfig?: string;
  metadataAddr?: string;
  identity?: string;
  leaseName: string;
  leaseDurationSeconds: string;
  intervalMs: string;
  host: string;
  httpPort: string;
  allowPlaintext?: boolean;
  logLevel?: string;
}

const SA_NAMESPACE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

function int(name: string, value: string, min: number, max: number): number {
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${name} must be an integer in ${min}..${max}, got "${value}"`);
  return Number(value);
}

function ownNamespace(): string {
  if (process.env['POD_NAMESPACE'] !== undefined && process.env['POD_NAMESPACE'] !== '') return process.env['POD_NAMESPACE'];
  try {
    return readFileSync(SA_NAMESPACE, 'utf8').trim();
  } catch {
    return 'default';
  }
}

async function runOperator(flags: OperatorFlags): Promise<void> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const { createOperator } = await import('../operator/index.js');
  const { createLogger } = await import('../common/log.js');
  const { createMetrics } = await import('../common/metrics.js');
  const { startHttpServer } = await import('../common/http.js');
  const level = (flags.logLevel ?? process.env['CAIRN_LOG_LEVEL'] ?? 'info') as 'info';
  const log = createLogger({ level, name: 'cairn-operator' });
  const kc = new KubeConfig();
  // --kubeconfig, else KUBECONFIG, else the in-cluster service account, else ~/.kube/config.
  if (flags.kubeconfig !== undefined) kc.loadFromFile(flags.kubeconfig);
  else kc.loadFromDefault();
  if (kc.getCurrentCluster() === null) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'no Kubernetes cluster: set KUBECONFIG or --kubeconfig, or run in a pod');
  const leaseNamespace = flags.leaseNamespace ?? ownNamespace();
  const metrics = createMetrics();
  const operator = createOperator({
    kubeConfig: kc,
    namespace: flags.namespace ?? '',
    leaseNamespace,
    identity: flags.identity ?? process.env['POD_NAME'] ?? hostname(),
    leaseName: flags.leaseName,
    leaseDurationSeconds: int('--lease-duration-seconds', flags.leaseDurationSeconds, 1, 3600),
    intervalMs: int('--interval-ms', flags.intervalMs, 100, 3_600_000),
    ...(flags.metadataAddr !== undefined ? { metadataAddr: flags.metadataAddr } : {}),
    log,
    registry: metrics.registry,
  });
  const http = await startHttpServer(flags.host, int('--http-port', flags.httpPort, 0, 65535), { registry: metrics.registry, log, ready: () => operator.ready(), allowPlaintext: flags.allowPlaintext === true });
  operator.start();
  process.stdout.write(`cairn operator ready http=${flags.host}:${http.port} namespace=${flags.namespace ?? '*'} lease=${leaseNamespace}/${flags.leaseName}\n`);
  await new Promise<void>((resolveStop) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      log.info({ signal }, 'shutting down');
      // Releasing the Lease on the way out lets the standby take over at once.
      void operator
        .stop()
        .then(() => http.close())
        .finally(() => {
          log.flush();
          resolveStop();
        });
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
}

export function registerOperator(program: Command): void {
  program
    .command('operator')
    .description('run the Kubernetes operator for CairnCluster resources')
    .option('--namespace <ns>', 'namespace whose CairnClusters to manage (default: all namespaces)')
    .option('--lease-namespace <ns>', "namespace of the leader-election Lease (default: the pod's own)")
    .option('--kubeconfig <file>', 'kubeconfig file (default: KUBECONFIG, else in-cluster)')
    .option('--metadata-addr <host:port>', "metadata Admin address for every cluster (default: each cluster's metadata Service)")
    .option('--identity <id>', 'this replica in the Lease (default: POD_NAME, else the host name)')
    .option('--lease-name <name>', 'leader-election Lease name', 'cairn-operator')
    .option('--lease-duration-seconds <s>', 'how long the Lease outlives its last renewal', '15')
    .option('--interval-ms <ms>', 'period of the reconcile pass besides watch events', '5000')
    .option('--host <addr>', 'listen address of /metrics, /healthz, /readyz', '0.0.0.0')
    .option('--http-port <port>', 'HTTP port of /metrics, /healthz, /readyz', '7480')
    .option('--allow-plaintext', 'serve plain HTTP on a non-loopback address (metrics inside the cluster network)')
    .option('--log-level <level>', 'log level (default CAIRN_LOG_LEVEL or info)')
    .action((flags: OperatorFlags) => runOperator(flags));
}
