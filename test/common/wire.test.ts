// Hand-built wire messages (ReadFile's packed data messages) decode exactly as protobufjs's own.
import test from 'ava';
import fc from 'fast-check';
import { loadProto } from '../../src/common/proto.js';
import { EncodedMessage, acceptEncoded, encodeBytesAndOffset } from '../../src/common/wire.js';

const method = loadProto().proto.cairn.v1.Files.service.ReadFile;

test('encodeBytesAndOffset decodes as ReadFileResponse { data, offset } for any pieces and offset', (t) => {
  t.notThrows(() =>
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 3000 }), { maxLength: 6 }), fc.maxSafeNat(), (pieces, offset) => {
        const encoded = encodeBytesAndOffset(2, pieces, 3, offset);
        const decoded = method.responseDeserialize(encoded.bytes) as { data: Buffer; offset: string; file: unknown };
        const data = Buffer.concat(pieces);
        return decoded.data.equals(data) && decoded.offset === String(offset) && decoded.file === null && encoded.payloadBytes === data.length;
      }),
      { numRuns: 300 },
    ),
  );
});

test('encodeBytesAndOffset refuses an offset a varint of a JS number cannot hold', (t) => {
  t.throws(() => encodeBytesAndOffset(2, [], 3, -1), { instanceOf: RangeError });
  t.throws(() => encodeBytesAndOffset(2, [], 3, 2 ** 53), { instanceOf: RangeError });
});

test('acceptEncoded passes encoded messages through and serializes the rest as before', (t) => {
  const service = acceptEncoded(loadProto().proto.cairn.v1.Files.service, ['ReadFile']);
  const encoded = new EncodedMessage(Buffer.from([1, 2, 3]), 3);
  t.is(service.ReadFile.responseSerialize(encoded as never), encoded.bytes);
  const plain = { data: Buffer.from('abc'), offset: 7 };
  t.true(service.ReadFile.responseSerialize(plain).equals(method.responseSerialize(plain)));
});

test('an encoded message in a scratch buffer hands the buffer back only after it was serialized', async (t) => {
  const service = acceptEncoded(loadProto().proto.cairn.v1.Files.service, ['ReadFile']);
  const scratch = Buffer.alloc(64);
  let freed = 0;
  const message = encodeBytesAndOffset(2, [Buffer.from('hello')], 3, 9, scratch, () => freed++);
  t.is(message.bytes.buffer, scratch.buffer);
  t.is(freed, 0);
  const wire = Buffer.from(service.ReadFile.responseSerialize(message as never));
  t.is(freed, 0); // not before the caller has copied the bytes
  await Promise.resolve();
  t.is(freed, 1);
  t.deepEqual((method.responseDeserialize(wire) as { data: Buffer }).data, Buffer.from('hello'));
  // Too small a scratch: a fresh buffer, and nothing to hand back.
  const big = encodeBytesAndOffset(2, [Buffer.alloc(100)], 3, 0, scratch, () => freed++);
  t.not(big.bytes.buffer, scratch.buffer);
  t.is(big.onSerialized, undefined);
});
