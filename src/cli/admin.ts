// `cairn admin export|import`: copy the whole metadata store to a checksummed file and load it
// into LevelDB or PostgreSQL (also the way an embedded installation migrates to PostgreSQL); and
// the Admin API commands (`node down`, `quota`, `retention`, `user`, `gc run`) against a running metadata service.
import { existsSync, readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { CairnError } from '../common/errors.js';
import type { AdminClient, AdminRetentionPolicy, AdminUsage, MetadataStoreTarget } from '../metadata/index.js';
import { createProgress } from './progress.js';

interface StoreFlags {
  dataDir?: string;
  postgresUrl?: string;
}

interface GlobalFlags {
  json?: boolean;
  quiet?: boolean;
}

function targetOf(flags: StoreFlags): MetadataStoreTarget {
  const url = flags.postgresUrl;
  const dir = flags.dataDir;
  if ((url === undefined) === (dir === undefined)) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give exactly one of --data-dir <dir> (LevelDB) or --postgres-url <url>');
  }
  if (url !== undefined) {
    if (!/^postgres(ql)?:\/\//.test(url)) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--postgres-url must start with postgres:// or postgresql://');
    return { backend: 'postgres', url };
  }
  return { backend: 'level', dataDir: resolve(dir ?? '') };
}

interface RemoteFlags {
  metadata?: string;
  token?: string;
  dataDir?: string;
}

interface GlobalTls {
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, b: 1, k: 1024, kb: 1000, kib: 1024, m: 1024 ** 2, mb: 1000 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1000 ** 3, gib: 1024 ** 3, t: 1024 ** 4, tb: 1000 ** 4, tib: 1024 ** 4 };

/** "10GiB", "500MB", "1048576", "0" → bytes. */
export function parseSize(value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(value.trim());
  const unit = m === null ? undefined : SIZE_UNITS[m[2]!.toLowerCase()];
  const bytes = m === null || unit === undefined ? Number.NaN : Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new CairnError('CAIRN_INVALID_ARGUMENT', `"${value}" is not a size (e.g. 500MB, 10GiB, 0 for none)`);
  return bytes;
}

/**
 * An AdminClient for the metadata service: its address from --metadata, CAIRN_METADATA_ENDPOINT
 * or an embedded server's client.json (adminEndpoint); the token from --token, CAIRN_TOKEN, or
 * one minted from <data-dir>/auth.key for tenant "system" (node commands need a service token,
 * as the operator has; the others a cluster administrator's).
 */
async function adminClient(flags: RemoteFlags, tls: GlobalTls, role: 'admin' | 'service'): Promise<AdminClient> {
  const dataDir = resolve(flags.dataDir ?? process.env['CAIRN_DATA_DIR'] ?? './data');
  let fromFile: { adminEndpoint?: unknown } = {};
  const clientJson = join(dataDir, 'client.json');
  if (existsSync(clientJson)) {
    try {
      fromFile = JSON.parse(readFileSync(clientJson, 'utf8')) as { adminEndpoint?: unknown };
    } catch {
      fromFile = {};
    }
  }
  const address = flags.metadata ?? process.env['CAIRN_METADATA_ENDPOINT'] ?? (typeof fromFile.adminEndpoint === 'string' ? fromFile.adminEndpoint : undefined);
  if (address === undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', `no metadata service: pass --metadata <host:port>, set CAIRN_METADATA_ENDPOINT, or run next to an embedded server's ${clientJson}`);
  let token = flags.token ?? process.env['CAIRN_TOKEN'];
  if (token === undefined) {
    const keyFile = join(dataDir, 'auth.key');
    if (!existsSync(keyFile)) throw new CairnError('CAIRN_INVALID_ARGUMENT', `no token: pass --token, set CAIRN_TOKEN, or point --data-dir at a server's data directory (${keyFile} is missing)`);
    const { loadOrCreateSecret, signToken } = await import('../common/auth.js');
    token = await signToken(loadOrCreateSecret(keyFile), { tenant: 'system', role, subject: 'cli-admin', ttlSeconds: 600 });
  }
  const { AdminClient: Client } = await import('../metadata/index.js');
  const { clientCredentials } = await import('../common/grpc-server.js');
  const fixed = token;
  return new Client({ address, credentials: clientCredentials({ ca: tls.tlsCa, cert: tls.tlsCert, key: tls.tlsKey }), token: () => fixed });
}

function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${bytes} B` : `${v.toFixed(1)} ${units[i]}`;
}

function parseCount(value: string, flag: string, min: number, max: number): number {
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `${flag} must be an integer in ${min}..${max}, got "${value}"`);
  }
  return Number(value);
}

function parseBatch(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 100_000) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `--batch-entries must be an integer in 1..100000, got "${value}"`);
  }
  return Number(value);
}

export function registerAdmin(program: Command): void {
  const admin = program.command('admin').description('administer the metadata service: its store (export, import) and its Admin API');
  const out = (value: object, text: string): void => {
    const g = program.opts<GlobalFlags>();
    if (g.json === true) process.stdout.write(JSON.stringify(value) + '\n');
    else if (g.quiet !== true) process.stdout.write(text + '\n');
  };
  const remote = (cmd: Command): Command =>
    cmd
      .option('--metadata <host:port>', 'the metadata service (else CAIRN_METADATA_ENDPOINT, or the embedded server\'s client.json)')
      .option('--token <jwt>', 'admin token (else CAIRN_TOKEN, or minted for tenant "system" from <data-dir>/auth.key)')
      .option('--data-dir <dir>', 'server data directory (client.json, auth.key)', './data');
  const withAdmin = async (flags: RemoteFlags, fn: (c: AdminClient) => Promise<void>, role: 'admin' | 'service' = 'admin'): Promise<void> => {
    const c = await adminClient(flags, program.opts<GlobalTls>(), role);
    try {
      await fn(c);
    } finally {
      c.close();
    }
  };

  const node = admin.command('node').description('block nodes in the cluster map');
  remote(node.command('down').description('mark a block node down (its replicas move elsewhere; never more than RF−1 at once)').argument('<node-id>'))
    .action((id: string, flags: RemoteFlags) => withAdmin(flags, async (c) => {
      const r = await c.markNodeDown(id);
      out({ node: r.node.id, state: r.node.state, epoch: r.epoch }, `node ${r.node.id} is ${r.node.state} (map epoch ${r.epoch})`);
    }, 'service'));
  remote(node.command('up').description('mark a block node up (cancels a drain, or overrides down)').argument('<node-id>'))
    .action((id: string, flags: RemoteFlags) => withAdmin(flags, async (c) => {
      const r = await c.markNodeUp(id);
      out({ node: r.node.id, state: r.node.state, epoch: r.epoch }, `node ${r.node.id} is ${r.node.state} (map epoch ${r.epoch})`);
    }, 'service'));

  const usageLine = (u: AdminUsage): string =>
    `${u.tenant}: ${human(u.versionBytes)} in ${u.versions} versions of quota ${u.quotaBytes === 0 ? 'none' : human(u.quotaBytes)}; stored ${human(u.storedBytes)} in ${u.chunks} chunks`;
  const quota = admin.command('quota').description('tenant storage quotas (logical bytes of every version retention keeps)');
  remote(quota.command('set').description('set a tenant\'s quota (0 removes it); cluster administrators').argument('<tenant>').argument('<size>', 'e.g. 500MB, 10GiB, 0'))
    .action((tenant: string, size: string, flags: RemoteFlags) => withAdmin(flags, async (c) => {
      const u = await c.setTenantQuota(tenant, parseSize(size));
      out(u, usageLine(u));
    }));
  remote(quota.command('get').description('a tenant\'s usage and quota').argument('[tenant]', 'default: the token\'s tenant'))
    .action((tenant: string | undefined, flags: RemoteFlags) => withAdmin(flags, async (c) => {
      const u = await c.getTenantUsage(tenant ?? '');
      out(u, usageLine(u));
    }));

  remote(quota.command('recount').description('recompute a tenant\'s usage counters from its versions and chunks; cluster administrators').argument('<tenant>'))
    .action((tenant: string, flags: RemoteFlags) => withAdmin(flags, async (c) => {
      const u = await c.recountUsage(tenant);
      out(u, usageLine(u));
    }));

  const policyLine = (tenant: string, p: AdminRetentionPolicy): string => {
    const rules = [
      ...(p.keepLast !== undefined ? [`keep the last ${p.keepLast} versions`] : []),
      ...(p.keepDays !== undefined ? [`keep replaced versions ${p.keepDays} days`] : []),
    ];
    return `${tenant}: ${rules.length === 0 ? 'keep only current versions' : rules.join(' and ')}; trash ${p.trashDays ?? 'default'} days`;
  };
  const retention = admin.command('retention').description('tenant version retention (keep last N versions and/or D days; trash window)');
  remote(retention.command('set').description('replace a tenant\'s retention policy (rules not given are removed)').argument('[tenant]', 'default: the token\'s tenant')
    .option('--keep-last <n>', 'keep the newest N versions of each file (1..1000000)')
    .option('--keep-days <d>', 'keep versions D days after they were replaced (0..36500)')
    .option('--trash-days <d>', 'days a deleted entry stays restorable (0..36500; default: the server\'s)'))
    .action((tenant: string | undefined, flags: RemoteFlags & { keepLast?: string; keepDays?: string; trashDays?: string }) => withAdmin(flags, async (c) => {
      if (flags.keepLast === undefined && flags.keepDays === undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give --keep-last and/or --keep-days');
      const policy: AdminRetentionPolicy = {
        ...(flags.keepLast !== undefined ? { keepLast: parseCount(flags.keepLast, '--keep-last', 1, 1_000_000) } : {}),
        ...(flags.keepDays !== undefined ? { keepDays: parseCount(flags.keepDays, '--keep-days', 0, 36_500) } : {}),
        ...(flags.trashDays !== undefined ? { trashDays: parseCount(flags.trashDays, '--trash-days', 0, 36_500) } : {}),
      };
      const r = await c.setRetentionPolicy(tenant ?? '', policy);
      out(r, policyLine(r.tenant, r.policy));
    }));
  remote(retention.command('get').description('the retention policy in force for a tenant').argument('[tenant]', 'default: the token\'s tenant'))
    .action((tenant: string | undefined, flags: RemoteFlags) => withAdmin(flags, async (c) => {
      const r = await c.getRetentionPolicy(tenant ?? '');
      out(r, policyLine(r.tenant, r.policy));
    }));

  const user = admin.command('user').description('users of a tenant (share grantees; ids are token subjects)');
  remote(user.command('create').description('add a user (or update its display name)').argument('<user>').option('--tenant <tenant>', 'default: the token\'s tenant').option('--display-name <name>', 'display name', ''))
    .action((id: string, flags: RemoteFlags & { tenant?: string; displayName: string }) => withAdmin(flags, async (c) => {
      const u = await c.createUser({ user: id, displayName: flags.displayName, ...(flags.tenant !== undefined ? { tenant: flags.tenant } : {}) });
      out(u, `user ${u.user} in tenant ${u.tenant}`);
    }));
  remote(user.command('ls').description('list a tenant\'s users').option('--tenant <tenant>', 'default: the token\'s tenant'))
    .action((flags: RemoteFlags & { tenant?: string }) => withAdmin(flags, async (c) => {
      let pageToken = '';
      do {
        const page = await c.listUsers({ ...(flags.tenant !== undefined ? { tenant: flags.tenant } : {}), pageSize: 1000, pageToken });
        for (const u of page.users) out(u, `${u.user}\t${u.displayName}`);
        pageToken = page.nextPageToken;
      } while (pageToken !== '');
    }));
  remote(user.command('rm').description('remove a user and its share grants').argument('<user>').option('--tenant <tenant>', 'default: the token\'s tenant'))
    .action((id: string, flags: RemoteFlags & { tenant?: string }) => withAdmin(flags, async (c) => {
      await c.deleteUser({ user: id, ...(flags.tenant !== undefined ? { tenant: flags.tenant } : {}) });
      out({ user: id, deleted: true }, `user ${id} removed`);
    }));

  const gc = admin.command('gc').description('block garbage collection');
  remote(gc.command('run').description('collect now: delete the blocks of chunks unreferenced for the grace period')
    .option('--orphans', 'also sweep orphan blocks (on block nodes, named by no chunk; deleted after the orphan grace)'))
    .action((flags: RemoteFlags & { orphans?: boolean }) => withAdmin(flags, async (c) => {
      const r = await c.runGarbageCollection(600_000, { sweepOrphans: flags.orphans === true });
      const orphans = flags.orphans === true ? `; orphan blocks: ${r.orphansSeen} unreferenced, ${r.orphansDeleted} deleted` : '';
      out(r, `claimed ${r.claimed}, deleted ${r.finished} chunks (${r.blocksDeleted} block copies), handed back ${r.released}${orphans}`);
    }));

  admin
    .command('export')
    .description('write a consistent snapshot of the whole metadata store to a file')
    .argument('<file>', 'export file to write (replaced atomically)')
    .option('--data-dir <dir>', 'server data directory of an embedded (LevelDB) store (may be serving)')
    .option('--postgres-url <url>', 'PostgreSQL store (may be serving)')
    .option('--metadata <host:port>', 'export through a running metadata service (Admin.Export) instead of opening the store')
    .option('--token <jwt>', 'with --metadata: a cluster administrator\'s token (else CAIRN_TOKEN, or minted from --data-dir\'s auth.key)')
    .action(async (file: string, flags: StoreFlags & RemoteFlags) => {
      const g = program.opts<GlobalFlags>();
      if (flags.metadata !== undefined) {
        if (flags.postgresUrl !== undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give --metadata or --postgres-url, not both');
        const { saveStreamedExport } = await import('../metadata/index.js');
        const c = await adminClient(flags, program.opts<GlobalTls>(), 'admin');
        const progress = createProgress('export', g.quiet !== true && g.json !== true);
        try {
          const summary = await saveStreamedExport(c.exportStream(), resolve(file), (bytes) => progress.update(bytes, undefined));
          progress.stop();
          if (g.json === true) process.stdout.write(JSON.stringify({ file: summary.file, entries: summary.entries, bytes: summary.bytes, sha256: summary.checksum, backend: summary.header.backend }) + '\n');
          else if (g.quiet !== true) process.stdout.write(`exported ${summary.entries} entries (${summary.bytes} bytes, sha256 ${summary.checksum}) to ${summary.file}\n`);
        } finally {
          progress.stop();
          c.close();
        }
        return;
      }
      const target = targetOf(flags);
      const { exportStore, openExportSource } = await import('../metadata/index.js');
      const source = await openExportSource(target);
      if (source.copied && g.quiet !== true) process.stderr.write('cairn: the store is in use by a running server: exporting a consistent copy of it\n');
      const progress = createProgress('export', g.quiet !== true && g.json !== true);
      try {
        const summary = await exportStore(source.kv, resolve(file), { backend: target.backend, onProgress: (_entries, bytes) => progress.update(bytes, undefined) });
        progress.stop();
        if (g.json === true) process.stdout.write(JSON.stringify({ file: summary.file, entries: summary.entries, bytes: summary.bytes, sha256: summary.checksum, backend: target.backend }) + '\n');
        else if (g.quiet !== true) process.stdout.write(`exported ${summary.entries} entries (${summary.bytes} bytes, sha256 ${summary.checksum}) to ${summary.file}\n`);
      } finally {
        progress.stop();
        await source.close();
      }
    });

  admin
    .command('import')
    .description('load an export into a metadata store; re-run to resume an interrupted import')
    .argument('<file>', 'export file')
    .option('--data-dir <dir>', 'server data directory for an embedded (LevelDB) store; the server must be stopped')
    .option('--postgres-url <url>', 'PostgreSQL store; no server may use it during the import')
    .option('--force', 'replace the contents of a non-empty store')
    .option('--batch-entries <n>', 'entries per transaction (default 1000)', parseBatch)
    .action(async (file: string, flags: StoreFlags & { force?: boolean; batchEntries?: number }) => {
      const target = targetOf(flags);
      const g = program.opts<GlobalFlags>();
      const { importStore, openImportTarget, verifyExport } = await import('../metadata/index.js');
      const path = resolve(file);
      const { size: fileSize } = await stat(path);
      const show = g.quiet !== true && g.json !== true;
      // Verified before the target is even opened: a bad file must not create an empty store.
      let progress = createProgress('import: verify', show);
      const verified = await verifyExport(path, (bytes) => progress.update(bytes, fileSize));
      progress.stop();
      const kv = await openImportTarget(target, { ...(flags.force === true ? { force: true } : {}) });
      let label = 'verify';
      try {
        const summary = await importStore(kv, path, {
          verified,
          ...(flags.force === true ? { force: true } : {}),
          ...(flags.batchEntries === undefined ? {} : { batchEntries: flags.batchEntries }),
          onProgress: (phase, done, total) => {
            if (phase !== label) {
              progress.stop();
              label = phase;
              progress = createProgress(`import: ${phase}`, show);
            }
            progress.update(done, phase === 'clear' ? undefined : total);
          },
        });
        progress.stop();
        if (g.json === true) process.stdout.write(JSON.stringify({ file: path, entries: summary.entries, loaded: summary.loaded, resumed: summary.resumed, cleared: summary.cleared, sha256: summary.checksum, backend: target.backend }) + '\n');
        else if (g.quiet !== true) {
          process.stdout.write(`imported ${summary.entries} entries${summary.resumed ? ` (resumed: ${summary.loaded} loaded by this run)` : ''}${summary.cleared > 0 ? `, replacing ${summary.cleared}` : ''} from ${path}\n`);
        }
      } finally {
        progress.stop();
        await kv.close();
      }
    });
}
