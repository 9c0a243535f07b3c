/**
 * The PUBACK gate of `stockwire processor`, the MQTT client that reads events from any central broker: a PUBACK
 * leaves only after its event's batch has committed. MQTT.js acknowledges a QoS 1 message as soon as its
 * `handleMessage` calls back, and it must call back to read on, so the gate sits where MQTT.js writes packets
 * (`_sendPacket`, private): a PUBACK whose message is held waits there for its commit; every other packet passes.
 *
 * A PUBACK is never sent on a later connection than its PUBLISH (the broker would take it for another message),
 * and a failed commit sends none: the broker delivers the message again. The same mechanism inside our own
 * brokers (edge and central) is `beforePuback` (broker/puback-gate.ts).
 */
import type { MqttClient, Packet } from 'mqtt';

type SendPacket = (packet: Packet, cb?: (err?: Error) => void, ...rest: unknown[]) => void;

export class PubackGate {
  private readonly held = new Map<number, Promise<boolean>>(); // messageId → committed?
  private connection = 0; // connections so far

  /** Puts the gate into `client`'s packet writer; from now on held PUBACKs wait for their commits. */
  constructor(client: MqttClient) {
    const target = client as unknown as { _sendPacket: SendPacket };
    const send = target._sendPacket.bind(client);
    target._sendPacket = (packet, cb, ...rest) => {
      const messageId = (packet as { messageId?: number }).messageId;
      const committed = packet.cmd === 'puback' && messageId !== undefined ? this.held.get(messageId) : undefined;
      if (!committed) return send(packet, cb, ...rest);
      this.held.delete(messageId as number);
      const connection = this.connection;
      void committed.then((ok) => {
        // Not committed (stopping) or the connection changed: no PUBACK, so the broker delivers it again.
        if (ok && connection === this.connection) send(packet, () => {});
      });
      cb?.();
    };
  }

  /** Holds the PUBACK of message `messageId` until `committed` settles: true sends it, false never does. */
  hold(messageId: number, committed: Promise<boolean>): void {
    this.held.set(messageId, committed);
  }

  /** The connection closed: nothing held is sent on the next one. */
  connectionClosed(): void {
    this.connection++;
    this.held.clear();
  }
}
