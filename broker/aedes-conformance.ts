import { pipeline, Transform, type Readable } from 'node:stream';
import type { Aedes, AedesPublishPacket, Client } from 'aedes';

// Three places where Aedes 1.2 departs from MQTT 3.1.1 and Mosquitto (measured with raw frames:
// test/broker/mqtt-conformance.test.ts), fixed around aedes rather than inside it:
//
// 1. A QoS 1/2 message resent after a reconnect goes out with DUP=0 [MQTT-3.3.1-1] (moscajs/aedes#601).
// 2. It also goes out with the RETAIN flag it was *published* with, though a message delivered through an
//    established subscription carries RETAIN=0 [MQTT-3.3.1-9]: aedes queues the published packet and clears the
//    flag only on the live path (lib/handlers/subscribe.js). Both: the session's queue is read through
//    `outgoingStream`, so its packets are corrected there.
// 3. The retained messages of a SUBSCRIBE are read from the store and written later, one after another, while
//    live messages to the new subscription already flow: a retained value read before a newer live one was
//    forwarded can be written after it, leaving the subscriber on the old value (with overlapping filters it is
//    even read twice). Mosquitto writes them before anything else. So a retained copy whose topic saw a live
//    forward to the same client since its SUBSCRIBE began carries the newest value that client was forwarded.

const noop = (): void => undefined;

interface Persistence {
  outgoingStream(client: { id: string }): Readable;
  createRetainedStreamCombi(patterns: string[]): Readable;
}

/** A stored packet as aedes-persistence hands it back (an aedes-packet). */
interface StoredPacket {
  cmd: string;
  topic: string;
  payload: Buffer | string;
  messageId?: number;
  retain?: boolean;
  dup?: boolean;
}

/** Per client: the SUBSCRIBEs whose retained messages are still on their way, and what was forwarded meanwhile. */
interface Watch {
  streams: number;
  /** topic → the last live message forwarded to the client while a retained copy could still follow it */
  live: Map<string, { seq: number; payload: Buffer | string }>;
}

/** Which client and SUBSCRIBE a retained copy belongs to: the copy's payload buffer is its own (see below). */
interface Tag {
  client: Client;
  since: number;
  done: () => void;
}

/**
 * Installs the fixes on a started aedes (its persistence exists once `listen()` resolved). Works with any
 * aedes-persistence (memory, redis): only the streams it returns are wrapped.
 */
export function conformAedes(aedes: Aedes): void {
  const persistence = (aedes as unknown as { persistence: Persistence }).persistence;
  fixRedelivery(persistence);
  orderRetained(aedes, persistence);
}

function fixRedelivery(persistence: Persistence): void {
  const outgoingStream = persistence.outgoingStream.bind(persistence);
  persistence.outgoingStream = (client) =>
    pipeline(
      outgoingStream(client),
      new Transform({
        objectMode: true,
        transform(packet: StoredPacket, _enc, next) {
          if (packet.cmd !== 'publish') return next(null, packet);
          // A queued packet gets its messageId when aedes first tries to send it (outgoingUpdate): with one, this is
          // a resend [MQTT-3.3.1-1]; without, the first delivery of a message queued while the client was away.
          // Every queued message came through a subscription, so RETAIN=0 [MQTT-3.3.1-9]. A copy: the store keeps its own.
          next(null, {
            ...packet,
            dup: packet.messageId !== undefined && packet.messageId !== null ? true : packet.dup === true,
            retain: false,
          });
        },
      }),
      noop, // an error reaches the reader: pipeline destroys the last stream with it
    );
}

function orderRetained(aedes: Aedes, persistence: Persistence): void {
  const watches = new WeakMap<Client, Watch>();
  const tags = new WeakMap<object, Tag>();
  let seq = 0;
  // aedes emits 'subscribe' and then, synchronously, asks the store for the retained messages of that SUBSCRIBE
  // (lib/handlers/subscribe.js, completeSubscribe): the client is taken from here.
  let subscribing: Client | null = null;
  aedes.on('subscribe', (_subs, client) => {
    subscribing = client;
    queueMicrotask(() => (subscribing = null));
  });

  const createRetainedStreamCombi = persistence.createRetainedStreamCombi.bind(persistence);
  persistence.createRetainedStreamCombi = (patterns) => {
    const stream = createRetainedStreamCombi(patterns);
    const client = subscribing;
    subscribing = null;
    if (client === null) return stream;
    let watch = watches.get(client);
    if (watch === undefined) {
      watch = { streams: 0, live: new Map() };
      watches.set(client, watch);
    }
    const w = watch;
    const since = ++seq;
    w.streams++;
    // The stream is done once it ended and aedes has forwarded every copy it read (a closed client leaves it open:
    // the watch goes with the client).
    let read = 0;
    let forwarded = 0;
    let ended = false;
    const settle = () => {
      if (!ended || forwarded < read) return;
      if (--w.streams === 0) w.live.clear();
    };
    return pipeline(
      stream,
      new Transform({
        objectMode: true,
        transform(packet: StoredPacket, _enc, next) {
          // aedes builds the packet it forwards from this payload: a buffer of the copy's own identifies it.
          const payload = Buffer.from(packet.payload);
          read++;
          tags.set(payload, {
            client,
            since,
            done: () => {
              forwarded++;
              settle();
            },
          });
          next(null, { ...packet, payload });
        },
        flush(done) {
          ended = true;
          settle();
          done();
        },
      }),
      noop,
    );
  };

  const authorizeForward = aedes.authorizeForward;
  aedes.authorizeForward = (client, packet) => {
    const tag = tags.get(packet.payload as object);
    if (tag !== undefined) {
      tags.delete(packet.payload as object);
      const forwarded = authorizeForward.call(aedes, client, packet);
      const newer = watches.get(client)?.live.get(packet.topic);
      // Never dropped here (aedes would then clear an unrelated queued message of a persistent session): the copy
      // goes out carrying what the client already has, the newest value it was forwarded.
      if (forwarded && newer !== undefined && newer.seq > tag.since) forwarded.payload = newer.payload;
      tag.done(); // after the look-up: the last copy of the last SUBSCRIBE in flight clears the watch
      return forwarded;
    }
    const forwarded = authorizeForward.call(aedes, client, packet);
    // A live message (a resend from the session queue has its messageId already, and is older than any live one).
    const watch = watches.get(client);
    if (
      forwarded &&
      watch !== undefined &&
      watch.streams > 0 &&
      (packet as AedesPublishPacket & { messageId?: number }).messageId === undefined
    ) {
      watch.live.set(packet.topic, { seq: ++seq, payload: packet.payload });
    }
    return forwarded;
  };
}
