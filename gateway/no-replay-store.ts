import { Store, type Packet } from 'mqtt';

type DoneCallback = Parameters<Store['put']>[1];
type PacketCallback = Parameters<Store['del']>[1];

/**
 * MQTT.js's in-flight store, except that a new connection replays nothing from it.
 *
 * On reconnect MQTT.js replays its store one message per PUBACK and emits 'connect' only after the
 * last one: with thousands of events in flight (central holds each PUBACK until its commit) the
 * forwarder heard of the new connection tens of seconds late, sending nothing new and showing the
 * link `offline` meanwhile. The outbox is the queue (DESIGN "Edge → central"): on 'connect' the
 * forwarder itself resends from the oldest unconfirmed event, with its window.
 */
export class NoReplayStore extends Store {
  private readonly ids = new Set<number>();

  override put(packet: Packet, cb: DoneCallback): this {
    if (packet.messageId !== undefined) this.ids.add(packet.messageId);
    return super.put(packet, cb);
  }

  override del(packet: Pick<Packet, 'messageId'>, cb: PacketCallback): this {
    if (packet.messageId !== undefined) this.ids.delete(packet.messageId);
    return super.del(packet, cb);
  }

  /** Called by MQTT.js on each CONNACK: what was in flight on the old connection is forgotten here. */
  override createStream(): ReturnType<Store['createStream']> {
    for (const messageId of this.ids) super.del({ messageId }, () => {});
    this.ids.clear();
    return super.createStream();
  }
}
