// Binary records of the metadata store: every value round-trips exactly, records written as JSON
// by earlier versions still read, fields the binary layout cannot hold fall back to JSON, and a
// damaged record is CAIRN_DATA_LOSS, never a wrong value.
import test from 'ava';
import fc from 'fast-check';
import { CairnError } from '../../src/common/errors.js';
import type { ChangeEvent } from '../../src/metadata/model/changes.js';
import { decodeChunks, encodeChunks, type ChunkRecord } from '../../src/metadata/model/codec.js';
import { decodeTenantRecord, encodeTenantRecord } from '../../src/metadata/model/tenant-record.js';
import { decodeChange, decodeChunk, decodeNode, decodeVersion, encodeChange, encodeChunk, encodeNode, encodeVersion, type NodeRecord, type StoredChunk, type StoredVersion } from '../../src/metadata/model/records.js';

const hex = (bytes: number): fc.Arbitrary<string> => fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => Buffer.from(b).toString('hex'));
// Any JS number a record may hold: safe integers of either sign, and fractions too.
const num = fc.oneof(fc.integer({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }), fc.double({ noNaN: true, noDefaultInfinity: true })).map((v) => (v === 0 ? 0 : v)); // no -0: JSON has none
const text = fc.string({ unit: 'grapheme', maxLength: 40 });

const nodeArb: fc.Arbitrary<NodeRecord> = fc
  .record({ id: hex(8), kind: fc.constantFrom('file' as const, 'dir' as const), createdMs: num, modifiedMs: num, head: num, last: num, size: num, hash: fc.oneof(fc.constant(''), hex(32)), mtimeMs: num, deletedMs: fc.option(num, { nil: undefined }), rev: num })
  .map((n) => {
    const { deletedMs, ...rest } = n;
    return deletedMs === undefined ? rest : { ...rest, deletedMs };
  });

const changeArb: fc.Arbitrary<ChangeEvent> = fc
  .record(
    {
      revision: num,
      type: fc.constantFrom('put' as const, 'delete' as const, 'mkdir' as const, 'move' as const, 'restore' as const, 'share' as const, 'unshare' as const),
      path: text,
      fromPath: text,
      nodeId: hex(8),
      kind: fc.constantFrom('file' as const, 'dir' as const),
      version: num,
      size: num,
      contentHash: hex(32),
      user: text,
      atMs: num,
    },
    { requiredKeys: ['revision', 'type', 'path', 'nodeId', 'kind', 'atMs'] },
  )
  .map((e) => e as ChangeEvent);

const chunkArb: fc.Arbitrary<StoredChunk> = fc
  .record({ a: hex(32), p: num, s: num, r: num, n: num, q: fc.option(num, { nil: undefined }), x: fc.option(fc.constant(1 as const), { nil: undefined }) })
  .map(({ q, x, ...rest }) => ({ ...rest, ...(q === undefined ? {} : { q }), ...(x === undefined ? {} : { x }) }));

const versionArb: fc.Arbitrary<StoredVersion> = fc
  .record(
    {
      v: num,
      size: num,
      hash: fc.oneof(fc.constant(''), hex(32)),
      mtime: num,
      created: num,
      device: text,
      rev: num,
      n: num,
      po: fc.array(num, { maxLength: 5 }),
      del: fc.constant(1 as const),
      from: num,
      media: fc.json(),
      mk: text,
      replaced: num,
      der: fc.array(fc.record({ n: text, c: fc.base64String(), s: num, w: num, h: num, f: text }), { maxLength: 3 }),
      inline: fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
    },
    { requiredKeys: ['v', 'size', 'hash', 'mtime', 'created', 'device', 'rev', 'n', 'po'] },
  )
  .map((h) => h as StoredVersion);

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

test('records: every folder entry, change event, chunk entry and version header round-trips in binary', (t) => {
  fc.assert(
    fc.property(nodeArb, (n) => {
      const raw = encodeNode(n);
      t.not(raw[0], 0x7b);
      t.deepEqual(decodeNode(raw), n);
    }),
  );
  fc.assert(
    fc.property(changeArb, (e) => {
      const raw = encodeChange(e);
      t.not(raw[0], 0x7b);
      t.deepEqual(decodeChange(raw), e);
    }),
  );
  fc.assert(
    fc.property(chunkArb, (c) => {
      const raw = encodeChunk(c);
      t.not(raw[0], 0x7b);
      t.deepEqual(decodeChunk(raw), c);
    }),
  );
  fc.assert(
    fc.property(versionArb, (h) => {
      const raw = encodeVersion(h);
      t.not(raw[0], 0x7b);
      t.deepEqual(decodeVersion(raw), h);
    }),
  );
});

test('records: binary is smaller than the JSON it replaces', (t) => {
  const node: NodeRecord = { id: 'a1b2c3d4e5f60718', kind: 'file', createdMs: 1795385034335, modifiedMs: 1795385034335, head: 1, last: 1, size: 4096, hash: 'b'.repeat(64), mtimeMs: 1, rev: 45 };
  const change: ChangeEvent = { type: 'put', path: '/photos/2026/img-0001.jpg', nodeId: node.id, kind: 'file', version: 1, size: 4096, contentHash: 'c'.repeat(64), revision: 45, atMs: 1795385034335 };
  const chunk: StoredChunk = { a: 'd'.repeat(64), p: 65536, s: 65602, r: 1, n: 0 };
  const version: StoredVersion = { v: 1, size: 4096, hash: 'e'.repeat(64), mtime: 1795385034000, created: 1795385034335, device: 'laptop-7', rev: 45, n: 1, po: [0] };
  const sizes = [
    [encodeVersion(version).length, json(version).length],
    [encodeNode(node).length, json(node).length],
    [encodeChange(change).length, json(change).length],
    [encodeChunk(chunk).length, json(chunk).length],
  ];
  t.log(sizes.map(([bin, js]) => `${js} → ${bin} bytes`).join(', '));
  for (const [bin, js] of sizes) t.true(bin! < js! * 0.7);
});

test('records: records stored as JSON by earlier versions still read', (t) => {
  fc.assert(fc.property(nodeArb, (n) => t.deepEqual(decodeNode(json(n)), n)));
  fc.assert(fc.property(changeArb, (e) => t.deepEqual(decodeChange(json(e)), e)));
  fc.assert(fc.property(chunkArb, (c) => t.deepEqual(decodeChunk(json(c)), c)));
  // Headers written as JSON never had an inline chunk list.
  fc.assert(
    fc.property(versionArb, ({ inline: _inline, ...h }) => {
      t.deepEqual(decodeVersion(json(h)), h);
    }),
  );
});

test('records: fields the binary layout cannot hold are written as JSON, unchanged', (t) => {
  const node: NodeRecord = { id: 'A1B2C3D4E5F60718', kind: 'file', createdMs: 1, modifiedMs: 2, head: 1, last: 1, size: 0, hash: '', mtimeMs: 3, rev: 4 };
  for (const odd of [node, { ...node, id: 'short' }, { ...node, id: 'a1b2c3d4e5f60718', hash: 'not-hex' }]) {
    const raw = encodeNode(odd);
    t.is(raw[0], 0x7b);
    t.deepEqual(decodeNode(raw), odd);
  }
  const change: ChangeEvent = { type: 'put', path: '/a', nodeId: 'xyz', kind: 'file', revision: 1, atMs: 2 };
  t.is(encodeChange(change)[0], 0x7b);
  t.deepEqual(decodeChange(encodeChange(change)), change);
  const chunk: StoredChunk = { a: '', p: 1, s: 1, r: 1, n: 0 };
  t.is(encodeChunk(chunk)[0], 0x7b);
  t.deepEqual(decodeChunk(encodeChunk(chunk)), chunk);
  const version = { v: 1, size: 0, hash: 'XYZ', mtime: 1, created: 2, device: 'd', rev: 3, n: 0, po: [] } as StoredVersion;
  t.is(encodeVersion(version)[0], 0x7b);
  t.deepEqual(decodeVersion(encodeVersion(version)), version);
  // An inline chunk list survives the JSON fallback (as base64).
  const inlined: StoredVersion = { ...version, n: 1, po: [0], inline: Buffer.from([1, 2, 3, 250]) };
  t.is(encodeVersion(inlined)[0], 0x7b);
  t.deepEqual(decodeVersion(encodeVersion(inlined)), inlined);
});

test('records: a damaged record is CAIRN_DATA_LOSS', (t) => {
  const node = encodeNode({ id: 'a1b2c3d4e5f60718', kind: 'dir', createdMs: 1, modifiedMs: 2, head: 0, last: 0, size: 0, hash: '', mtimeMs: 3, rev: 4 });
  const change = encodeChange({ type: 'move', path: '/b', fromPath: '/a', nodeId: 'a1b2c3d4e5f60718', kind: 'dir', revision: 5, atMs: 6, user: 'u' });
  const chunk = encodeChunk({ a: 'e'.repeat(64), p: 1, s: 2, r: 3, n: 4, q: 5 });
  const version = encodeVersion({ v: 2, size: 3, hash: 'f'.repeat(64), mtime: 4, created: 5, device: 'dev', rev: 6, n: 7, po: [0, 9], der: [{ n: 'thumb', c: 'AAAA', s: 1, w: 2, h: 3, f: 'webp' }] });
  const cases: Array<[string, () => unknown]> = [
    ['node: truncated', () => decodeNode(node.subarray(0, node.length - 1))],
    ['node: extra byte', () => decodeNode(Buffer.concat([node, Buffer.of(0)]))],
    ['node: unknown kind', () => decodeNode(Buffer.concat([node.subarray(0, 1), Buffer.of(7), node.subarray(2)]))],
    ['node: another record type', () => decodeNode(chunk)],
    ['change: truncated', () => decodeChange(change.subarray(0, change.length - 1))],
    ['change: extra byte', () => decodeChange(Buffer.concat([change, Buffer.of(0)]))],
    ['change: unknown type', () => decodeChange(Buffer.concat([change.subarray(0, 1), Buffer.of(99), change.subarray(2)]))],
    ['change: path length past the end', () => decodeChange(Buffer.concat([change.subarray(0, 28), Buffer.from([0xff, 0xff, 0, 0]), change.subarray(32)]))],
    ['chunk: truncated', () => decodeChunk(chunk.subarray(0, 40))],
    ['chunk: unknown flags', () => decodeChunk(Buffer.concat([chunk.subarray(0, 1), Buffer.of(9), chunk.subarray(2)]))],
    ['chunk: another record type', () => decodeChunk(node)],
    ['version: truncated', () => decodeVersion(version.subarray(0, version.length - 1))],
    ['version: extra byte', () => decodeVersion(Buffer.concat([version, Buffer.of(0)]))],
    ['version: page count past the end', () => decodeVersion(Buffer.concat([version.subarray(0, 82), Buffer.from([0xff, 0xff, 0xff, 0x0f]), version.subarray(86)]))],
    ['version: damaged derivatives', () => decodeVersion(Buffer.concat([version.subarray(0, version.length - 2), Buffer.from('}}')]))],
    ['version: another record type', () => decodeVersion(node)],
    ['empty', () => decodeChunk(Buffer.alloc(0))],
  ];
  for (const [name, run] of cases) {
    const error = t.throws(run, { instanceOf: CairnError }, name);
    t.is(error?.code, 'CAIRN_DATA_LOSS', name);
  }
});

test('chunk lists: offsets past 4 GiB round trip, and a page whose offset is not a safe integer is refused', (t) => {
  const chunk = (offset: number): ChunkRecord => ({ plainHash: Buffer.alloc(32, 1), address: Buffer.alloc(32, 2), offset, size: 4096, storedSize: 4114 });
  t.notThrows(() =>
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), { minLength: 1, maxLength: 20 }), (offsets) => {
        const list = offsets.map(chunk);
        return JSON.stringify(decodeChunks(encodeChunks(list))) === JSON.stringify(list);
      }),
      { numRuns: 300 },
    ),
  );
  // The same bytes as the u64 big-endian layout pages have always had.
  const raw = encodeChunks([chunk(2 ** 40 + 5)]);
  t.is(raw.readBigUInt64BE(64), 2n ** 40n + 5n);
  raw.writeUInt32BE(0x0020_0000, 64); // 2^53: past the safe integers
  t.throws(() => decodeChunks(raw), { message: /corrupt chunk page/ });
});

const policyArb = fc.record({ keepLast: fc.integer({ min: 1, max: 1000 }), keepDays: fc.integer({ min: 1, max: 3650 }), trashDays: fc.integer({ min: 0, max: 3650 }) }, { requiredKeys: [] });
const countersArb = fc.record({ b: num, v: num, s: num, c: num, q: num }, { requiredKeys: ['b', 'v', 's', 'c'] });
const tenantArb = fc.record({ u: countersArb, policy: policyArb, note: text }, { requiredKeys: [] });

test('tenant records: every record round-trips, binary, and records stored as JSON still read', (t) => {
  fc.assert(
    fc.property(tenantArb, (record) => {
      const raw = encodeTenantRecord(record);
      t.is(raw[0], 0x05);
      t.deepEqual(decodeTenantRecord(raw), record);
      t.deepEqual(decodeTenantRecord(Buffer.from(JSON.stringify(record))), record);
      if (record.u !== undefined) t.true(raw.length < Buffer.byteLength(JSON.stringify(record)) || record.policy !== undefined || record.note !== undefined);
    }),
  );
  t.deepEqual(decodeTenantRecord(encodeTenantRecord({})), {});
  t.is(encodeTenantRecord({ u: { b: 1, v: 1, s: 0, c: 0 } }).length, 34, 'counters only: no JSON at all');
});

test('tenant records: counters the binary layout cannot hold are written as JSON, unchanged', (t) => {
  for (const record of [{ u: { b: 1, v: 1, s: 0, c: 0, extra: 2 } }, { u: { b: '1', v: 1, s: 0, c: 0 } }, { u: { b: 1, v: 1, s: 0 } }, { u: null }]) {
    const raw = encodeTenantRecord(record);
    t.is(raw.toString('utf8'), JSON.stringify(record));
    t.deepEqual(decodeTenantRecord(raw), record);
  }
});

test('tenant records: a damaged record is CAIRN_DATA_LOSS', (t) => {
  const good = encodeTenantRecord({ u: { b: 1, v: 2, s: 3, c: 4, q: 5 }, policy: { keepLast: 3 } });
  const bad = [
    Buffer.of(0x05),
    Buffer.of(0x06, 0),
    Buffer.of(0x05, 4),
    Buffer.of(0x05, 2),
    good.subarray(0, 20),
    Buffer.concat([good.subarray(0, 42), Buffer.from('{"policy":')]),
    Buffer.concat([good.subarray(0, 42), Buffer.from('[1]')]),
    Buffer.concat([good.subarray(0, 42), Buffer.from('{"u":1}')]),
  ];
  for (const raw of bad) {
    const error = t.throws(() => decodeTenantRecord(raw), { instanceOf: CairnError });
    t.is(error.code, 'CAIRN_DATA_LOSS', raw.toString('hex'));
  }
});
