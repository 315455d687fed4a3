// The Kubernetes operator for CairnCluster: the pure reconcile and the objects it manages.
// The client-node adapter, informers and leader election arrive in a later change.
export { reconcile, desiredObjects } from './reconcile.js';
export { names, blockPodName } from './objects.js';
export * from './types.js';
