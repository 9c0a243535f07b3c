import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Writable } from 'node:stream';
import { coalesceWrites } from '../../runtime/coalesce.js';

/** A sink that records each call the stream machinery makes: one entry per write or writev. */
function sink(): { stream: Writable; calls: string[][] } {
  const calls: string[][] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      calls.push([chunk.toString()]);
      cb();
    },
    writev(chunks, cb) {
      calls.push(chunks.map((c) => (c.chunk as Buffer).toString()));
      cb();
    },
  });
  return { stream, calls };
}

const nextTick = () => new Promise<void>((r) => process.nextTick(r));
const turn = () => new Promise<void>((r) => setImmediate(r));

test('writes in separate ticks of one turn leave together, in order', async () => {
  const { stream, calls } = sink();
  coalesceWrites(stream);
  stream.write('a');
  await nextTick();
  stream.write('b');
  await Promise.resolve();
  stream.write('c');
  await turn();
  assert.deepEqual(calls, [['a', 'b', 'c']]);
});

test('without it, each tick writes on its own (what the helper is for)', async () => {
  const { stream, calls } = sink();
  const tickCork = (s: string) => {
    stream.cork(); // what mqtt-packet does around each packet
    stream.write(s);
    process.nextTick(() => stream.uncork());
  };
  tickCork('a');
  await nextTick();
  await nextTick();
  tickCork('b');
  await turn();
  assert.deepEqual(calls, [['a'], ['b']]);
});

test('a later turn starts a new group; end() flushes what is corked', async () => {
  const { stream, calls } = sink();
  coalesceWrites(stream);
  stream.write('a');
  await turn();
  stream.write('b');
  stream.write('c');
  const finished = new Promise((r) => stream.once('finish', r));
  stream.end('d');
  await finished;
  assert.deepEqual(calls, [['a'], ['b', 'c', 'd']]);
});

test('a full buffer is still reported to the writer', async () => {
  const { stream } = sink();
  coalesceWrites(stream);
  const big = Buffer.alloc(stream.writableHighWaterMark + 1);
  assert.equal(stream.write(big), false);
  await new Promise((r) => stream.once('drain', r));
});
