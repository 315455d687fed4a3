// Cluster map sources: the static file format (computed or explicit partitions, validation),
// epochs only moving forward, and a file source picking up a rewritten file.
import test from 'ava';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FileMapSource, StaticMapSource, emptyMap, parseMapFile } from '../../src/blocknode/index.js';
import { PARTITION_COUNT, assign, type MapNode } from '../../src/placement/index.js';

const nodes = (n: number): MapNode[] => Array.from({ length: n }, (_, i) => ({ id: `n${i + 1}`, addr: `127.0.0.1:${7000 + i}`, zone: '', weight: 1, state: 'up' }));

test('a map file without partitions is assigned deterministically, from its previous map if given', (t) => {
  const a = parseMapFile(JSON.stringify({ epoch: 1, replicationFactor: 3, nodes: nodes(4) }));
  const b = parseMapFile(JSON.stringify({ epoch: 1, replicationFactor: 3, nodes: nodes(4) }));
  t.deepEqual(a.map, b.map);
  t.is(a.map.partitions.length, PARTITION_COUNT);
  t.true(a.map.partitions.every((row) => row.length === 3 && new Set(row).size === 3));
  const next = parseMapFile(JSON.stringify({ epoch: 2, replicationFactor: 3, nodes: nodes(5), previous: a.map }));
  t.deepEqual(next.previous?.partitions, a.map.partitions);
  t.deepEqual(next.map.partitions, assign(a.map, nodes(5), 3).partitions);
});

test('a bad map file is refused with the field named', (t) => {
  t.throws(() => parseMapFile(JSON.stringify({ epoch: 0, replicationFactor: 3, nodes: nodes(3) })), { message: /epoch/ });
  t.throws(() => parseMapFile(JSON.stringify({ epoch: 1, replicationFactor: 3, nodes: [] })), { message: /nodes/ });
  const map = assign(null, nodes(3), 3);
  const broken = { ...map, epoch: 1, partitions: map.partitions.map((r, i) => (i === 5 ? ['n1', 'n1', 'n2'] : r)) };
  t.throws(() => parseMapFile(JSON.stringify(broken)), { message: /partitions\[5\] repeats/ });
  const unknown = { ...map, epoch: 1, partitions: map.partitions.map((r, i) => (i === 9 ? ['n1', 'n2', 'zz'] : r)) };
  t.throws(() => parseMapFile(JSON.stringify(unknown)), { message: /unknown node "zz"/ });
  t.throws(() => parseMapFile(JSON.stringify({ epoch: 2, replicationFactor: 3, nodes: nodes(3), previous: { epoch: 2, replicationFactor: 3, nodes: nodes(3) } })), { message: /previous.epoch/ });
});

test('a static source only moves forward and keeps the map it replaced as previous', (t) => {
  const source = new StaticMapSource(emptyMap());
  const seen: number[] = [];
  source.onChange((m) => seen.push(m.epoch));
  const m1 = { ...assign(null, nodes(3), 3), epoch: 1 };
  const m2 = { ...assign(m1, nodes(4), 3), epoch: 2 };
  t.true(source.set(m1));
  t.is(source.previous(), undefined);
  t.true(source.set(m2));
  t.is(source.previous()?.epoch, 1);
  t.false(source.set(m1));
  t.is(source.current().epoch, 2);
  t.deepEqual(seen, [1, 2]);
});

test('a file source starts empty without a file and follows rewrites', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-map-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'map.json');
  const errors: unknown[] = [];
  const source = new FileMapSource({ path, pollMs: 20, onError: (e) => errors.push(e) });
  t.teardown(() => source.close());
  t.is(source.current().epoch, 0);
  const write = (body: unknown): void => {
    writeFileSync(`${path}.tmp`, JSON.stringify(body));
    renameSync(`${path}.tmp`, path);
  };
  write({ epoch: 1, replicationFactor: 2, nodes: nodes(3) });
  for (let i = 0; i < 500 && source.current().epoch !== 1; i++) await sleep(20);
  t.is(source.current().epoch, 1, String(errors));
  write('garbage');
  for (let i = 0; i < 500 && errors.length === 0; i++) await sleep(20);
  t.true(errors.length > 0);
  t.is(source.current().epoch, 1);
  write({ epoch: 2, replicationFactor: 2, nodes: nodes(4) });
  for (let i = 0; i < 500 && source.current().epoch !== 2; i++) await sleep(20);
  t.is(source.current().epoch, 2);
  t.is(source.previous()?.epoch, 1);
});
