// Child process for the kill -9 test in outbox.test.ts: appends events without end, keeping many in
// flight, and prints each seq on its own line as soon as its append resolves (the moment the edge would
// PUBACK). stdout to a pipe is synchronous on Linux, so a printed line is already out of this process.
import { SqliteOutbox } from '../../gateway/outbox/index.js';

const path = process.argv[2];
if (path === undefined) throw new Error('usage: outbox-child.ts <db path>');
const IN_FLIGHT = 300; // appends outstanding at any time, so a SIGKILL finds a group being collected or written

const outbox = await SqliteOutbox.open({ path, maxBytes: 1 << 30 });
let inFlight = 0;
let n = 0;

function pump(): void {
  while (inFlight < IN_FLIGHT) {
    inFlight += 1;
    n += 1;
    const payload = Buffer.from(
      JSON.stringify({ v: 1, id: `ev-${n}`, type: 'moved', qty: n % 7, pad: 'x'.repeat(n % 200) }),
    );
    outbox
      .append({
        device: `scan-${n % 5}`,
        eventId: `ev-${n}`,
        topic: `wh/w1/dev/scan-${n % 5}/event`,
        payload,
        receivedAt: Date.now(),
      })
      .then(
        (e) => {
          process.stdout.write(`${e.seq}\n`);
          inFlight -= 1;
          pump();
        },
        (err: unknown) => {
          process.stderr.write(`append failed: ${String(err)}\n`);
          process.exit(1);
        },
      );
  }
}
pump();
