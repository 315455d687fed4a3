// Configuration: one zod schema per program, values merged with precedence
// flags > CAIRN_* environment > config file > defaults, validated once and frozen.
import { readFileSync } from 'node:fs';
import { z } from 'zod';

/** A configuration error; its message names the option and where the bad value came from. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly option: string;
  constructor(option: string, message: string) {
    super(message);
    this.option = option;
  }
}

export type Source = 'flag' | 'env' | 'file' | 'default';

export function envName(key: string): string {
  return 'CAIRN_' + key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

export function flagName(key: string): string {
  return '--' + key.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();
}

/** Accepts booleans and the usual spellings in strings (env vars and flags arrive as text). */
export const zBool = z.preprocess((v) => {
  if (typeof v !== 'string') return v;
  const s = v.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(s)) return true;
  if (['0', 'false', 'no', 'off', ''].includes(s)) return false;
  return v;
}, z.boolean());

/** An integer given as a number or as text (env, flags); rejects "12abc" and fractions. */
export function zInt(min: number, max: number): z.ZodType<number> {
  return z.preprocess((v) => (typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v.trim()) : v), z.number().int().min(min).max(max));
}

export interface LoadOptions {
  /** Parsed flags, keyed by schema key; undefined values are ignored. */
  readonly flags?: Readonly<Record<string, unknown>>;
  /** Environment (defaults to process.env). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** JSON config file (the --config flag); else CAIRN_CONFIG names it. */
  readonly file?: string;
}

type Shape = z.ZodRawShape;

/**
 * Merges the sources for every key of `schema`, validates once and returns a deeply frozen object.
 * Throws ConfigError naming the first bad option, its flag and env names, and the source.
 */
export function loadConfig<S extends Shape>(schema: z.ZodObject<S>, options: LoadOptions = {}): Readonly<z.infer<z.ZodObject<S>>> {
  const env = options.env ?? process.env;
  const keys = Object.keys(schema.shape);
  const filePath = options.file ?? env['CAIRN_CONFIG'];
  let fileValues: Record<string, unknown> = {};
  if (filePath !== undefined && filePath !== '') fileValues = readConfigFile(filePath, keys);

  const merged: Record<string, unknown> = {};
  const sources: Record<string, Source> = {};
  for (const key of keys) {
    const fromFlag = options.flags?.[key];
    const fromEnv = env[envName(key)];
    if (fromFlag !== undefined) {
      merged[key] = fromFlag;
      sources[key] = 'flag';
    } else if (fromEnv !== undefined) {
      merged[key] = fromEnv;
      sources[key] = 'env';
    } else if (key in fileValues) {
      merged[key] = fileValues[key];
      sources[key] = 'file';
    } else {
      sources[key] = 'default';
    }
  }

  const result = schema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0];
    const key = String(issue?.path[0] ?? 'config');
    const source = sources[key] ?? 'default';
    const where = source === 'flag' ? flagName(key) : source === 'env' ? envName(key) : source === 'file' ? `"${key}" in ${filePath}` : 'default';
    const shown = key in merged ? ` = ${JSON.stringify(merged[key])}` : '';
    throw new ConfigError(key, `invalid configuration: ${key}${shown} (from ${where}; set with ${flagName(key)} or ${envName(key)}): ${issue?.message ?? 'invalid'}`);
  }
  return deepFreeze(result.data);
}

function readConfigFile(path: string, keys: readonly string[]): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('configFile', `cannot read config file ${path}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('configFile', `config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError('configFile', `config file ${path} must hold a JSON object`);
  }
  for (const key of Object.keys(parsed)) {
    if (!keys.includes(key)) throw new ConfigError(key, `unknown option "${key}" in config file ${path}`);
  }
  return parsed as Record<string, unknown>;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
