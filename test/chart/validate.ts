// Validates rendered Kubernetes objects against the Kubernetes OpenAPI schemas (kubernetes-models)
// and CairnCluster objects against the CRD's own schema; shared by the chart and operator tests.
import { Ajv, type ValidateFunction } from 'ajv';

type ModelClass = new (data: unknown) => { validate(): void };

/** Kinds that are not built into Kubernetes: checked by their own schema or a structural check. */
export const CUSTOM_GROUPS = ['cairn.dev', 'monitoring.coreos.com'];

/** Throws with the schema errors when `obj` is not a valid object of its apiVersion/kind. */
export async function validateKubeObject(obj: { apiVersion?: unknown; kind?: unknown }): Promise<void> {
  if (typeof obj.apiVersion !== 'string' || typeof obj.kind !== 'string') throw new Error(`object without apiVersion/kind: ${JSON.stringify(obj).slice(0, 200)}`);
  const [group, version] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/') as [string, string] : ['', obj.apiVersion];
  const path = group === '' ? `kubernetes-models/${version}` : `kubernetes-models/${group}/${version}`;
  const mod = (await import(path)) as Record<string, ModelClass | undefined>;
  const Model = mod[obj.kind];
  if (Model === undefined) throw new Error(`no schema for ${obj.apiVersion} ${obj.kind}`);
  new Model(obj).validate();
}

/** An ajv validator for the CRD's openAPIV3Schema (x-kubernetes-* keywords are allowed and ignored). */
export function crdValidator(openAPIV3Schema: object): ValidateFunction {
  // Kubernetes checks date-time; ajv knows no formats without ajv-formats, so name the one we use.
  const ajv = new Ajv({ strict: false, allErrors: true, formats: { 'date-time': /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/ } });
  return ajv.compile(openAPIV3Schema);
}
