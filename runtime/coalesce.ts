import type { Writable } from 'node:stream';

/**
 * Makes the writes to `stream` within one turn of the event loop leave in one `writev`: the stream is
 * corked at the first write and uncorked once the turn's I/O callbacks have run (setImmediate).
 * mqtt-packet corks only until the next tick, and both Aedes (one delivery per persistence callback)
 * and MQTT.js (one incoming packet per tick) write each PUBACK and each delivery in a tick of its own:
 * measured on an edge under load, 3.4 writev syscalls per event, a fifth of its CPU time.
 * Ordering and backpressure are unchanged (write's return value still reports a full buffer); an
 * `end()` flushes a corked stream.
 */
export function coalesceWrites(stream: Writable): void {
  const write = stream.write;
  let corked = false;
  const uncork = () => {
    corked = false;
    stream.uncork();
  };
  stream.write = function (this: Writable, ...args: unknown[]): boolean {
    if (!corked && !stream.destroyed) {
      corked = true;
      stream.cork();
      setImmediate(uncork);
    }
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as Writable['write'];
}
