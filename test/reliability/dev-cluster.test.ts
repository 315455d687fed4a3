// `cairn dev cluster`: the CLI starts every component as its own process, prints endpoints and
// writes a client.json that the other commands use, and stops them all on Ctrl-C; bad options
// change nothing. The chaos scenarios drive the same DevCluster class.
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, ROOT, runCli, tempDir } from '../helpers/cluster.js';

interface Described {
  ready: boolean;
  clientConfig: string;
  processes: Array<{ name: string; role: string; pid: number; grpc: string; http: string }>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('cairn dev cluster runs metadata, block nodes and a gateway as processes, serves puts, and Ctrl-C stops them all', async (t) => {
  t.timeout(120_000);
  const dir = join(tempDir(t, 'cairn-devcluster-'), 'cluster');
  const proc = spawn(process.execPath, ['--import', 'tsx', CLI, '--json', 'dev', 'cluster', '--nodes', '3', '--rf', '3', '--media-workers', '0', '--data-dir', dir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  });
  const described = await new Promise<Described>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`not ready; stderr:\n${stderr}`)), 90_000);
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line !== undefined) {
        clearTimeout(timer);
        resolve(JSON.parse(line) as Described);
      }
    });
    proc.once('exit', (code) => reject(new Error(`exited ${code}; stderr:\n${stderr}`)));
  });
  t.teardown(() => {
    for (const p of described.processes) if (alive(p.pid)) process.kill(p.pid, 'SIGKILL');
  });
  t.deepEqual(described.processes.map((p) => p.role).sort(), ['blocknode', 'blocknode', 'blocknode', 'gateway', 'metadata']);
  t.true(described.processes.every((p) => alive(p.pid) && /:\d+$/.test(p.grpc)));
  t.true(existsSync(described.clientConfig));

  // The other commands find the cluster through client.json in the cluster directory.
  const env = { CAIRN_DATA_DIR: dir, CAIRN_ENDPOINT: undefined, CAIRN_TOKEN: undefined };
  const src = join(dir, 'hello.txt');
  writeFileSync(src, 'hello from a dev cluster\n'.repeat(1000));
  const put = await runCli(['put', src, '/hello.txt'], env);
  t.is(put.code, 0, put.stderr);
  const got = await runCli(['get', '/hello.txt', '-'], env);
  t.is(got.code, 0, got.stderr);
  t.is(got.stdout, readFileSync(src, 'utf8'));

  proc.kill('SIGINT');
  t.is(await exited, 0, stderr);
  t.true(described.processes.every((p) => !alive(p.pid)), 'every child stopped');
});

test('cairn dev cluster rejects impossible options before starting anything', async (t) => {
  const dir = join(tempDir(t, 'cairn-devcluster-bad-'), 'cluster');
  for (const args of [
    ['--nodes', '2', '--rf', '3'],
    ['--rf', '3', '--write-quorum', '4'],
    ['--backend', 'postgres'],
    ['--metadata-replicas', '2'],
    ['--nodes', '0'],
  ]) {
    const r = await runCli(['dev', 'cluster', '--media-workers', '0', '--data-dir', dir, ...args]);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, /must be|needs/);
  }
  t.false(existsSync(dir), 'nothing was created');
});
