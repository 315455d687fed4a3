// pacedSender on a real object-mode Writable (a gRPC server stream is one): at most `depth`
// messages wait to be written, write() backpressure is honoured, and cancellation ends every wait.
import { Writable } from 'node:stream';
import test from 'ava';
import type * as grpc from '@grpc/grpc-js';
import { isCairnError } from '../../src/common/errors.js';
import { pacedSender } from '../../src/common/grpc-server.js';

/** A stream whose writes finish only when the test says so, like gRPC's under flow control. */
function slowStream(highWaterMark = 16): { call: grpc.ServerWritableStream<unknown, string>; pending: Array<() => void>; written: string[] } {
  const pending: Array<() => void> = [];
  const written: string[] = [];
  const call = new Writable({
    objectMode: true,
    highWaterMark,
    write(chunk: string, _encoding, callback) {
      written.push(chunk);
      pending.push(() => callback());
    },
  });
  return { call: call as unknown as grpc.ServerWritableStream<unknown, string>, pending, written };
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('pacedSender keeps at most depth messages queued, and resumes as they are written', async (t) => {
  const { call, pending, written } = slowStream();
  const send = pacedSender(call, new AbortController().signal, 3);
  await send('a');
  await send('b');
  let third = false;
  const p3 = send('c').then(() => (third = true));
  await tick();
  t.false(third, 'the third message waits while three are queued');
  t.deepEqual(written, ['a']);
  pending.shift()!();
  await p3;
  t.true(third);
  // Finish everything: all messages arrive in order.
  const rest = (async () => {
    for (const m of ['d', 'e', 'f', 'g']) await send(m);
  })();
  for (let i = 0; i < 50 && written.length < 7; i++) {
    pending.shift()?.();
    await tick();
  }
  await rest;
  t.deepEqual(written, ['a', 'b', 'c', 'd', 'e', 'f', 'g']);
});

test('pacedSender honours write() backpressure', async (t) => {
  // A highWaterMark of 1 makes write() return false at once, as the rate limiter's overlay does.
  const { call, pending } = slowStream(1);
  const send = pacedSender(call, new AbortController().signal, 8);
  let done = false;
  const p = send('a').then(() => (done = true));
  await tick();
  t.false(done, 'waits for drain');
  pending.shift()!();
  await p;
  t.true(done);
});

test('pacedSender: cancelling the call rejects a waiting send and every later one', async (t) => {
  const { call } = slowStream();
  const abort = new AbortController();
  const send = pacedSender(call, abort.signal, 2);
  await send('a');
  const waiting = send('b');
  await tick();
  abort.abort();
  const error = await t.throwsAsync(waiting);
  t.true(isCairnError(error) && error.code === 'CAIRN_CANCELLED');
  const later = await t.throwsAsync(send('c'));
  t.true(isCairnError(later) && later.code === 'CAIRN_CANCELLED');
});
