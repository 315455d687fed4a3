// The Kubernetes operator for CairnCluster: the pure reconcile and the objects it manages, and the
// client-node adapter that runs it (informers, server-side apply, status, Events, Lease election).
export { reconcile, desiredObjects } from './reconcile.js';
export { names, blockPodName } from './objects.js';
export { createOperator, type Operator, type OperatorOptions } from './controller.js';
export { LeaderElector, type LeaderOptions } from './leader.js';
export { KubeClient, FINALIZER, PLURAL, statusOf } from './k8s.js';
export { ResilientInformer, type InformerState } from './informer.js';
export { observePods, observeNode, trackMissing } from './observe.js';
export * from './types.js';
