// What a real API server does with a CRD's structural schema on every write of a custom
// resource (test support only): pruning of unknown fields, defaulting, OpenAPI validation (type, required, enum, minimum /
// maximum, length, pattern, items, list-type set uniqueness, date-time) and the
// `x-kubernetes-validations` CEL rules, evaluated with @marcbachmann/cel-js over `self` (and
// `oldSelf` for transition rules, on updates only). Errors come back as Kubernetes causes
// (`field`, `reason`, `message`) for a 422 Invalid Status.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseCel } from '@marcbachmann/cel-js';
import { parse as parseYaml } from 'yaml';

export interface Schema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  items?: Schema;
  required?: string[];
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  pattern?: string;
  format?: string;
  default?: unknown;
  nullable?: boolean;
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-validations'?: { rule: string; message?: string; fieldPath?: string; reason?: string }[];
}

export interface Cause {
  readonly reason: string;
  readonly field: string;
  readonly message: string;
}

const ROOT = join(import.meta.dirname, '..', '..');
export const CRD_PATH = join(ROOT, 'charts', 'cairn', 'templates', 'crds', 'cairnclusters.cairn.dev.yaml');

/** The chart's CRD as the API server receives it (Helm directives are template lines only: dropped). */
export function chartCrd(): Record<string, unknown> {
  const text = readFileSync(CRD_PATH, 'utf8').split('\n').filter((l) => !l.includes('{{')).join('\n');
  return parseYaml(text) as Record<string, unknown>;
}

/** The schema of a CRD's storage version. */
export function crdSchema(crd: Record<string, unknown>): Schema {
  const versions = (crd['spec'] as { versions: { storage?: boolean; schema: { openAPIV3Schema: Schema } }[] }).versions;
  return (versions.find((v) => v.storage === true) ?? versions[0]!).schema.openAPIV3Schema;
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const DATE_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;
const celCache = new Map<string, ReturnType<typeof parseCel>>();

/** The value as CEL sees it: integers of the schema become CEL ints (BigInt), objects and lists recurse. */
function toCel(s: Schema | undefined, v: unknown): unknown {
  if (Array.isArray(v)) return v.map((x) => toCel(s?.items, x));
  if (isObject(v)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = toCel(s?.properties?.[k] ?? (isObject(s?.additionalProperties) ? s.additionalProperties : undefined), x);
    return out;
  }
  if (typeof v === 'number' && Number.isInteger(v) && (s?.type === 'integer' || s?.['x-kubernetes-int-or-string'] === true)) return BigInt(v);
  return v;
}

/** A value as the API server quotes it in an "Invalid value" message. */
function shown(v: unknown): string {
  if (isObject(v)) return '"object"';
  if (Array.isArray(v)) return '"array"';
  return JSON.stringify(v);
}

/**
 * Drops fields the structural schema does not know (as the API server prunes custom resources),
 * except under `x-kubernetes-preserve-unknown-fields` or `additionalProperties`. Mutates `v`;
 * returns the paths it dropped.
 */
export function prune(s: Schema, v: unknown, field: string, dropped: string[] = []): string[] {
  if (s['x-kubernetes-preserve-unknown-fields'] === true) return dropped;
  if (isObject(v)) {
    for (const k of Object.keys(v)) {
      const sub = s.properties?.[k] ?? (isObject(s.additionalProperties) ? s.additionalProperties : undefined);
      if (sub !== undefined) prune(sub, v[k], `${field}.${k}`, dropped);
      else if (s.additionalProperties !== true && (s.properties !== undefined || s.additionalProperties !== undefined)) {
        delete v[k];
        dropped.push(`${field}.${k}`);
      }
    }
  } else if (Array.isArray(v) && s.items !== undefined) v.forEach((x, i) => prune(s.items!, x, `${field}[${i}]`, dropped));
  return dropped;
}

/** Fills `default`s of absent properties (the API server defaults before validating). Mutates `v`. */
export function applyDefaults(s: Schema, v: unknown): void {
  if (isObject(v)) {
    for (const [k, sub] of Object.entries(s.properties ?? {})) {
      if (v[k] === undefined && sub.default !== undefined) v[k] = structuredClone(sub.default);
      if (v[k] !== undefined) applyDefaults(sub, v[k]);
    }
    if (isObject(s.additionalProperties)) for (const [k, x] of Object.entries(v)) if (s.properties?.[k] === undefined) applyDefaults(s.additionalProperties, x);
  } else if (Array.isArray(v) && s.items !== undefined) for (const x of v) applyDefaults(s.items, x);
}

function typeOk(s: Schema, v: unknown): boolean {
  if (s['x-kubernetes-int-or-string'] === true) return typeof v === 'string' || (typeof v === 'number' && Number.isInteger(v));
  switch (s.type) {
    case 'object': return isObject(v);
    case 'array': return Array.isArray(v);
    case 'string': return typeof v === 'string';
    case 'integer': return typeof v === 'number' && Number.isInteger(v);
    case 'number': return typeof v === 'number' && Number.isFinite(v);
    case 'boolean': return typeof v === 'boolean';
    default: return true;
  }
}

/**
 * Validates `v` (at `field`, e.g. `spec`) against `s`; `old` is the previous value at the same
 * place on an update (for transition rules), undefined on create.
 */
export function validate(s: Schema, v: unknown, field: string, old?: unknown, causes: Cause[] = []): Cause[] {
  const at = (name: string) => (field === '' ? name : `${field}.${name}`);
  if (v === null && s.nullable === true) return causes;
  if (!typeOk(s, v)) {
    causes.push({ reason: 'FieldValueTypeInvalid', field, message: `Invalid value: ${shown(v)}: ${field} in body must be of type ${s['x-kubernetes-int-or-string'] === true ? 'integer or string' : s.type}: ${JSON.stringify(typeof v === 'object' && v !== null ? (Array.isArray(v) ? 'array' : 'object') : typeof v === 'number' && !Number.isInteger(v) ? 'number' : typeof v)}` });
    return causes; // the rest of the schema does not apply to a value of the wrong type
  }
  if (s.enum !== undefined && !s.enum.some((e) => e === v)) causes.push({ reason: 'FieldValueNotSupported', field, message: `Unsupported value: ${shown(v)}: supported values: ${s.enum.map((e) => JSON.stringify(e)).join(', ')}` });
  if (typeof v === 'number') {
    if (s.minimum !== undefined && v < s.minimum) causes.push({ reason: 'FieldValueInvalid', field, message: `Invalid value: ${v}: ${field} in body should be greater than or equal to ${s.minimum}` });
    if (s.maximum !== undefined && v > s.maximum) causes.push({ reason: 'FieldValueInvalid', field, message: `Invalid value: ${v}: ${field} in body should be less than or equal to ${s.maximum}` });
  }
  if (typeof v === 'string') {
    if (s.minLength !== undefined && [...v].length < s.minLength) causes.push({ reason: 'FieldValueInvalid', field, message: `Invalid value: ${shown(v)}: ${field} in body should be at least ${s.minLength} chars long` });
    if (s.maxLength !== undefined && [...v].length > s.maxLength) causes.push({ reason: 'FieldValueTooLong', field, message: `Too long: may not be more than ${s.maxLength} bytes` });
    if (s.pattern !== undefined && !new RegExp(s.pattern, 'u').test(v)) causes.push({ reason: 'FieldValueInvalid', field, message: `Invalid value: ${shown(v)}: ${field} in body should match '${s.pattern}'` });
    if (s.format === 'date-time' && !DATE_TIME.test(v)) causes.push({ reason: 'FieldValueInvalid', field, message: `Invalid value: ${shown(v)}: ${field} in body must be of type date-time` });
  }
  if (Array.isArray(v)) {
    if (s.minItems !== undefined && v.length < s.minItems) causes.push({ reason: 'FieldValueInvalid', field, message: `Invalid value: ${v.length}: ${field} in body should have at least ${s.minItems} items` });
    if (s.maxItems !== undefined && v.length > s.maxItems) causes.push({ reason: 'FieldValueTooMany', field, message: `Too many: ${v.length}: must have at most ${s.maxItems} items` });
    if (s['x-kubernetes-list-type'] === 'set') {
      const seen = new Set<string>();
      v.forEach((x, i) => {
        const key = JSON.stringify(x);
        if (seen.has(key)) causes.push({ reason: 'FieldValueDuplicate', field: `${field}[${i}]`, message: `Duplicate value: ${shown(x)}` });
        seen.add(key);
      });
    }
    if (s['x-kubernetes-list-type'] === 'map') {
      const keys = s['x-kubernetes-list-map-keys'] ?? [];
      const seen = new Set<string>();
      v.forEach((x, i) => {
        const key = JSON.stringify(keys.map((k) => (isObject(x) ? x[k] : undefined)));
        if (seen.has(key)) causes.push({ reason: 'FieldValueDuplicate', field: `${field}[${i}]`, message: `Duplicate value: {${keys.map((k) => `"${k}":${JSON.stringify(isObject(x) ? x[k] : undefined)}`).join(',')}}` });
        seen.add(key);
      });
    }
    if (s.items !== undefined) v.forEach((x, i) => validate(s.items!, x, `${field}[${i}]`, undefined, causes));
  }
  if (isObject(v)) {
    for (const r of s.required ?? []) if (v[r] === undefined) causes.push({ reason: 'FieldValueRequired', field: at(r), message: 'Required value' });
    for (const [k, x] of Object.entries(v)) {
      const sub = s.properties?.[k] ?? (isObject(s.additionalProperties) ? s.additionalProperties : undefined);
      if (sub !== undefined && x !== undefined) validate(sub, x, at(k), isObject(old) ? old[k] : undefined, causes);
    }
  }
  // CEL rules run only on a value that passed its schema (as the API server does).
  if (causes.some((c) => c.field === field || c.field.startsWith(`${field}.`) || c.field.startsWith(`${field}[`))) return causes;
  for (const rule of s['x-kubernetes-validations'] ?? []) {
    const transition = /\boldSelf\b/.test(rule.rule);
    if (transition && old === undefined) continue; // transition rules apply to updates only
    let program = celCache.get(rule.rule);
    if (program === undefined) {
      program = parseCel(rule.rule);
      celCache.set(rule.rule, program);
    }
    const where = rule.fieldPath !== undefined ? `${field}${rule.fieldPath}` : field;
    let ok: unknown;
    try {
      ok = program({ self: toCel(s, v), ...(transition ? { oldSelf: toCel(s, old) } : {}) });
    } catch (err) {
      causes.push({ reason: 'FieldValueInvalid', field: where, message: `Invalid value: ${shown(v)}: rule "${rule.rule}": evaluation error: ${(err as Error).message.split('\n')[0]}` });
      continue;
    }
    if (ok !== true) causes.push({ reason: rule.reason ?? 'FieldValueInvalid', field: where, message: `Invalid value: ${shown(v)}: ${rule.message ?? `failed rule: ${rule.rule}`}` });
  }
  return causes;
}

/**
 * A custom resource write as the API server checks it: the main resource validates everything but
 * `status`, the status subresource only `status` (both against the whole schema's rules there).
 */
export function validateCustomResource(schema: Schema, obj: Record<string, unknown>, old: Record<string, unknown> | undefined, subresource: 'status' | undefined): Cause[] {
  const causes: Cause[] = [];
  const props = schema.properties ?? {};
  for (const r of schema.required ?? []) {
    if ((r === 'status') === (subresource === 'status') && obj[r] === undefined) causes.push({ reason: 'FieldValueRequired', field: r, message: 'Required value' });
  }
  for (const [k, sub] of Object.entries(props)) {
    if (k === 'metadata' || k === 'apiVersion' || k === 'kind') continue;
    if ((k === 'status') !== (subresource === 'status')) continue;
    if (obj[k] !== undefined) validate(sub, obj[k], k, old?.[k], causes);
  }
  return causes;
}
