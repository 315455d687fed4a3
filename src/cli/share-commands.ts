// The `cairn` sharing commands: share, unshare, shares, presign and cluster status.
// Human output by default, one JSON object per line with --json; errors exit through exit.ts.
import type { Command } from 'commander';
import { CairnError } from '../common/errors.js';
import { CairnSharing, resolveClientSettings, type ClusterStatus, type Share } from '../client/index.js';
import type { GlobalOptions } from './global-options.js';


const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 7 * 86400 };

/** "90", "90s", "15m", "2h", "7d", "1w" → seconds. */
export function parseDuration(value: string): number {
  const m = /^(\d+)([smhdw]?)$/.exec(value.trim());
  const seconds = m === null ? NaN : Number(m[1]) * (UNITS[m[2] || 's'] ?? NaN);
  if (!Number.isSafeInteger(seconds) || seconds <= 0) throw new CairnError('CAIRN_INVALID_ARGUMENT', `invalid duration "${value}": use e.g. 90s, 15m, 2h or 7d`);
  return seconds;
}

function nonNegativeInt(name: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${name} must be a non-negative integer, got "${value}"`);
    return Number(value);
  };
}

function when(ms: number): string {
  return ms > 0 ? new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z') : 'never';
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

function shareLine(s: Share): string {
  return s.linkId !== '' ? `${s.path}  link ${s.linkId}  ${s.access}  expires ${when(s.expiresMs)}` : `${s.path}  ${s.user}  ${s.access}`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

function statusText(s: ClusterStatus): string {
  const head = `map epoch ${s.mapEpoch}, replication factor ${s.replicationFactor}, ${s.nodes.length} node(s)\n` +
    `under-replicated partitions ${s.underReplicatedPartitions}, sole copies ${s.soleCopies}, bytes to move ${bytes(s.bytesToMove)}, job queue depth ${s.queueDepth}\n`;
  const rows = [['ID', 'ADDRESS', 'STATE', 'ZONE', 'CAPACITY', 'USED', 'BLOCKS', 'SOLE COPIES'], ...s.nodes.map((n) => [n.id, n.address, n.state, n.zone || '-', bytes(n.capacityBytes), bytes(n.usedBytes), String(n.blocks), String(n.soleCopies)])];
  const queues = s.queues.length === 0 ? '' : '\n' + table([['QUEUE', 'READY', 'DELAYED', 'LEASED', 'DEAD'], ...s.queues.map((q) => [q.kind, String(q.ready), String(q.delayed), String(q.leased), String(q.dead)])]);
  return head + '\n' + table(rows) + queues;
}

/** Adds share, unshare, shares, presign and `cluster status` to `program`. */
export function registerShareCommands(program: Command): void {
  const g = (): GlobalOptions => program.opts<GlobalOptions>();
  const print = (json: unknown, text: string): void => {
    if (g().json === true) process.stdout.write(JSON.stringify(json) + '\n');
    else if (g().quiet !== true) process.stdout.write(text.endsWith('\n') ? text : text + '\n');
  };
  const withSharing = async (fn: (c: CairnSharing) => Promise<void>, owner?: string): Promise<void> => {
    const o = g();
    const c = new CairnSharing(resolveClientSettings({ endpoint: o.endpoint, token: o.token, tlsCa: o.tlsCa, tlsCert: o.tlsCert, tlsKey: o.tlsKey }), owner !== undefined ? { owner } : {});
    try {
      await fn(c);
    } finally {
      c.close();
    }
  };

  program
    .command('share')
    .description('share a file or folder with a user of another tenant, or create a link')
    .argument('<path>', 'remote path')
    .option('--user <tenant/user>', 'recipient: their tenant and token subject, e.g. globex/bob')
    .option('--read', 'read access (default)')
    .option('--write', 'read and write access')
    .option('--link', 'create a link share (anyone with the link)')
    .option('--expires <duration>', 'link lifetime, e.g. 1h or 7d (default 7d)', parseDuration)
    .action(async (path: string, opts: { user?: string; read?: boolean; write?: boolean; link?: boolean; expires?: number }) => {
      if ((opts.user === undefined) === (opts.link !== true)) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give exactly one of --user and --link');
      if (opts.read === true && opts.write === true) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--read and --write are exclusive');
      if (opts.expires !== undefined && opts.link !== true) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--expires applies to --link only');
      const access = opts.write === true ? 'write' : 'read';
      await withSharing(async (c) => {
        if (opts.user !== undefined) {
          const s = await c.share(path, opts.user, access);
          print(s, `shared ${s.path} with ${s.user} (${s.access})`);
          return;
        }
        const l = await c.shareLink(path, { access, ...(opts.expires !== undefined ? { expiresInSeconds: opts.expires } : {}) });
        print({ ...l.share, token: l.token, url: l.url }, `${l.url}\n(link ${l.share.linkId}, ${l.share.access}, expires ${when(l.share.expiresMs)})`);
      });
    });

  program
    .command('unshare')
    .description("revoke a user's grant or a link on a file or folder")
    .argument('<path>', 'remote path')
    .option('--user <tenant/user>', 'the recipient to revoke')
    .option('--link <id>', 'the link id to revoke (see `cairn shares`)')
    .action(async (path: string, opts: { user?: string; link?: string }) => {
      if ((opts.user === undefined) === (opts.link === undefined)) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give exactly one of --user and --link');
      await withSharing(async (c) => {
        await c.unshare(path, opts.user !== undefined ? { user: opts.user } : { linkId: opts.link! });
        print({ path, revoked: opts.user ?? opts.link }, `revoked ${opts.user ?? `link ${opts.link}`} on ${path}`);
      });
    });

  program
    .command('shares')
    .description('list the shares of a path, or with --from what a tenant shares with you')
    .argument('[path]', 'remote path')
    .option('--from <tenant>', 'the owner tenant whose shares with you to list')
    .action(async (path: string | undefined, opts: { from?: string }) => {
      if ((path === undefined) === (opts.from === undefined)) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give a path, or --from <tenant> for what that tenant shares with you');
      await withSharing(async (c) => {
        if (path !== undefined) {
          for (const s of await c.listShares(path)) print(s, shareLine(s));
          return;
        }
        let token = '';
        do {
          const page = await c.sharedWithMe(opts.from!, { pageToken: token });
          for (const s of page.shares) print(s, shareLine(s));
          token = page.nextPageToken;
        } while (token !== '');
      });
    });

  program
    .command('presign')
    .description('print a presigned HTTP URL that GETs (or with --put uploads) one file without a token')
    .argument('<path>', 'remote path')
    .option('--put', 'a URL that uploads the request body as a new version')
    .option('--expires <duration>', 'lifetime, e.g. 15m, 2h, 7d (default 15m, at most 7d)', parseDuration)
    .option('--version <n>', 'pin a version (GET only)', nonNegativeInt('--version'))
    .option('--owner <tenant>', 'presign inside what this tenant shares with you')
    .option('--http <url>', 'the gateway HTTP endpoint, when the gateway does not know its public URL (else CAIRN_HTTP_ENDPOINT)')
    .action(async (path: string, opts: { put?: boolean; expires?: number; version?: number; owner?: string; http?: string }) => {
      await withSharing(async (c) => {
        const p = await c.presign(path, { method: opts.put === true ? 'PUT' : 'GET', ...(opts.expires !== undefined ? { expiresInSeconds: opts.expires } : {}), ...(opts.version !== undefined ? { version: opts.version } : {}) });
        const base = opts.http ?? process.env['CAIRN_HTTP_ENDPOINT'];
        const url = p.url.startsWith('/') && base !== undefined && base !== '' ? base.replace(/\/+$/, '') + p.pathAndQuery : p.url;
        if (url.startsWith('/') && g().json !== true) process.stderr.write('cairn: the gateway does not know its public HTTP URL; prefix this path with its HTTP endpoint (or pass --http)\n');
        print({ url, pathAndQuery: p.pathAndQuery, expiresMs: p.expiresMs, method: opts.put === true ? 'PUT' : 'GET' }, url);
      }, opts.owner ?? program.opts<{ owner?: string }>().owner);
    });

  const cluster = program.command('cluster').description('the storage cluster behind the gateway');
  cluster
    .command('status')
    .description('block nodes, map epoch, replication health and job queues (admin token)')
    .action(async () => {
      await withSharing(async (c) => {
        const s = await c.clusterStatus();
        print(s, statusText(s));
      });
    });
}
