// Prometheus metrics: one registry per process with process metrics and gRPC server metrics
// named like go-grpc-prometheus, so the usual dashboards and alerts work unchanged.
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface GrpcServerMetrics {
  readonly started: Counter<'grpc_type' | 'grpc_service' | 'grpc_method'>;
  readonly handled: Counter<'grpc_type' | 'grpc_service' | 'grpc_method' | 'grpc_code'>;
  readonly handlingSeconds: Histogram<'grpc_type' | 'grpc_service' | 'grpc_method'>;
  readonly msgReceived: Counter<'grpc_type' | 'grpc_service' | 'grpc_method'>;
  readonly msgSent: Counter<'grpc_type' | 'grpc_service' | 'grpc_method'>;
}

export interface Metrics {
  readonly registry: Registry;
  readonly grpc: GrpcServerMetrics;
}

export function createMetrics(options: { processMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry });
  const labels = ['grpc_type', 'grpc_service', 'grpc_method'] as const;
  const grpc: GrpcServerMetrics = {
    started: new Counter({ name: 'grpc_server_started_total', help: 'Total number of RPCs started on the server.', labelNames: labels, registers: [registry] }),
    handled: new Counter({ name: 'grpc_server_handled_total', help: 'Total number of RPCs completed on the server, regardless of success or failure.', labelNames: [...labels, 'grpc_code'], registers: [registry] }),
    handlingSeconds: new Histogram({
      name: 'grpc_server_handling_seconds',
      help: 'Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.',
      labelNames: labels,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    msgReceived: new Counter({ name: 'grpc_server_msg_received_total', help: 'Total number of RPC stream messages received on the server.', labelNames: labels, registers: [registry] }),
    msgSent: new Counter({ name: 'grpc_server_msg_sent_total', help: 'Total number of gRPC stream messages sent by the server.', labelNames: labels, registers: [registry] }),
  };
  return { registry, grpc };
}

/** go-grpc-prometheus spells codes as Go's codes.Code.String() does. */
export const GRPC_CODE_NAMES: readonly string[] = [
  'OK', 'Canceled', 'Unknown', 'InvalidArgument', 'DeadlineExceeded', 'NotFound', 'AlreadyExists',
  'PermissionDenied', 'ResourceExhausted', 'FailedPrecondition', 'Aborted', 'OutOfRange',
  'Unimplemented', 'Internal', 'Unavailable', 'DataLoss', 'Unauthenticated',
];
