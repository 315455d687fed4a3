// Finds the endpoint, token and TLS files a client uses, field by field, in this order:
// explicit options (flags), CAIRN_ENDPOINT/CAIRN_TOKEN/CAIRN_TLS_*, ~/.config/cairn/config.json,
// then $CAIRN_DATA_DIR/client.json (default ./data/client.json) written by an embedded server.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve, dirname } from 'node:path';
import { CairnError } from '../common/errors.js';

export interface ClientSettings {
  readonly endpoint: string;
  readonly token: string;
  readonly tlsCa?: string | undefined;
  readonly tlsCert?: string | undefined;
  readonly tlsKey?: string | undefined;
  /** Which source supplied the endpoint (for error messages and `--verbose`). */
  readonly source: string;
}

type Partialish = { endpoint?: string | undefined; token?: string | undefined; tlsCa?: string | undefined; tlsCert?: string | undefined; tlsKey?: string | undefined };

function readJsonConfig(path: string): Partialish | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const parsed = JSON.parse(text) as Record<string, unknown>;
    const str = (k: string): string | undefined => (typeof parsed[k] === 'string' ? (parsed[k]) : undefined);
    // Relative TLS paths in a config file are relative to that file.
    const file = (k: string): string | undefined => {
      const v = str(k);
      return v === undefined || isAbsolute(v) ? v : resolve(dirname(path), v);
    };
    return { endpoint: str('endpoint'), token: str('token'), tlsCa: file('tlsCa'), tlsCert: file('tlsCert'), tlsKey: file('tlsKey') };
  } catch (err) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `client config ${path} is not valid JSON: ${(err as Error).message}`);
  }
}

export function userConfigPath(env: Readonly<Record<string, string | undefined>> = process.env): string {
  const base = env['XDG_CONFIG_HOME'] ?? join(env['HOME'] ?? homedir(), '.config');
  return join(base, 'cairn', 'config.json');
}

export function resolveClientSettings(flags: Partialish = {}, env: Readonly<Record<string, string | undefined>> = process.env): ClientSettings {
  const dataDir = env['CAIRN_DATA_DIR'] ?? './data';
  const sources: Array<[string, Partialish | undefined]> = [
    ['flags', flags],
    ['environment', { endpoint: env['CAIRN_ENDPOINT'], token: env['CAIRN_TOKEN'], tlsCa: env['CAIRN_TLS_CA'], tlsCert: env['CAIRN_TLS_CERT'], tlsKey: env['CAIRN_TLS_KEY'] }],
    [userConfigPath(env), readJsonConfig(userConfigPath(env))],
    [resolve(dataDir, 'client.json'), readJsonConfig(resolve(dataDir, 'client.json'))],
  ];
  const pick = (k: keyof Partialish): [string | undefined, string] => {
    for (const [name, s] of sources) {
      const v = s?.[k];
      if (v !== undefined && v !== '') return [v, name];
    }
    return [undefined, ''];
  };
  const [endpoint, source] = pick('endpoint');
  const [token] = pick('token');
  if (endpoint === undefined || token === undefined) {
    throw new CairnError(
      'CAIRN_FAILED_PRECONDITION',
      `no ${endpoint === undefined ? 'endpoint' : 'token'} configured: pass --endpoint/--token, set CAIRN_ENDPOINT/CAIRN_TOKEN, write ${userConfigPath(env)}, or start \`npm start\` (which writes ${resolve(dataDir, 'client.json')})`,
    );
  }
  return { endpoint, token, tlsCa: pick('tlsCa')[0], tlsCert: pick('tlsCert')[0], tlsKey: pick('tlsKey')[0], source };
}
