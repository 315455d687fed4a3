// Benchmark dispatcher: `npm run bench -- <name> [--json] [bench args]`.
// Each bench/<name>.ts exports `run: BenchMain`; the anchor is measured in the same run.
import { readdirSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import type { BenchMain, BenchReport } from './report.js';

const here = dirname(fileURLToPath(import.meta.url));

function available(): string[] {
  return readdirSync(here)
    .filter((f) => f.endsWith('.ts') && !['index.ts', 'report.ts'].includes(f) && !f.startsWith('_'))
    .map((f) => f.slice(0, -3))
    .sort();
}

function printTable(report: BenchReport): void {
  const lines: string[] = [];
  const verdict = report.better === 'higher' ? report.ratio >= report.target : report.ratio <= report.target;
  lines.push(`bench ${report.bench}`);
  lines.push(`  ratio   ${report.ratio.toFixed(3)}  (target ${report.better === 'higher' ? '≥' : '≤'} ${report.target})  ${verdict ? 'MET' : 'NOT MET'}`);
  const width = Math.max(...Object.keys(report.figures).map((k) => k.length), 6);
  for (const [k, v] of Object.entries(report.figures)) {
    lines.push(`  ${k.padEnd(width)}  ${typeof v === 'number' ? formatNumber(v) : v}`);
  }
  if (report.rows && report.rows.length > 0) {
    const cols = Object.keys(report.rows[0] ?? {});
    lines.push('');
    lines.push('  ' + cols.map((c) => c.padStart(14)).join(''));
    for (const row of report.rows) lines.push('  ' + cols.map((c) => String(row[c] ?? '').padStart(14)).join(''));
  }
  process.stdout.write(lines.join('\n') + '\n');
}

function formatNumber(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(3);
}

async function main(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  const rest = argv.filter((a) => a !== '--json');
  const name = rest[0];
  const names = available();
  if (name === undefined || name === '--help' || name === '-h') {
    process.stdout.write(`usage: npm run bench -- <name> [--json] [args]\nbenchmarks: ${names.join(', ')}\n`);
    process.exitCode = name === undefined ? 2 : 0;
    return;
  }
  if (!names.includes(name)) {
    process.stderr.write(`unknown benchmark "${name}"; available: ${names.join(', ')}\n`);
    process.exitCode = 2;
    return;
  }
  const mod = (await import(pathToFileURL(join(here, `${name}.ts`)).href)) as { run: BenchMain };
  const report = await mod.run(rest.slice(1));
  if (json) {
    process.stdout.write(JSON.stringify({ bench: report.bench, ratio: report.ratio, target: report.target, better: report.better, ...report.figures }) + '\n');
  } else {
    printTable(report);
  }
}

await main(process.argv.slice(2));
