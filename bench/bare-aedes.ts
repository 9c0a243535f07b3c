import net from 'node:net';
import { Aedes } from 'aedes';

/**
 * Baseline (a): a bare Aedes broker in its own process. Each QoS-1 event that arrives is answered
 * with a QoS-1 ack to the sender's ack topic, as central does, but nothing is validated or stored.
 * Prints {"ready":true,"mqtt":PORT} like the stockwire commands.
 */
const aedes = await Aedes.createBroker({});
aedes.subscribe(
  'wh/+/dev/+/event',
  (packet, cb) => {
    const [, wh, , device] = packet.topic.split('/');
    const id = (JSON.parse(packet.payload.toString()) as { id: string }).id;
    // Deferred: answering inside the delivery callback recurses through mqemitter's queue.
    setImmediate(() => {
      aedes.publish(
        {
          cmd: 'publish',
          topic: `wh/${wh}/dev/${device}/ack`,
          payload: Buffer.from(JSON.stringify({ id, status: 'applied' })),
          qos: 1,
          retain: false,
          dup: false,
        },
        () => {},
      );
      cb();
    });
  },
  () => {},
);
const server = net.createServer(aedes.handle);
server.listen(0, '127.0.0.1', () =>
  process.stdout.write(`${JSON.stringify({ ready: true, mqtt: (server.address() as net.AddressInfo).port })}\n`),
);
process.on('SIGTERM', () => process.exit(0));
