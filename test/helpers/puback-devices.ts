import mqtt, { type MqttClient } from 'mqtt';
import type { OutgoingEvent } from './resending-publisher.js';

/**
 * Devices that behave like real scanners: an event is handed over when the edge's PUBACK arrives
 * and is then forgotten; one without a PUBACK is sent again after a reconnect. If the edge lost an
 * event it had acknowledged, nothing here would send it again — which is what the tests check.
 */
export class PubackDevices {
  private readonly clients: MqttClient[] = [];
  private handedOver = 0;

  constructor(
    private readonly url: string,
    private readonly wh: string,
    private readonly devices: { id: string; password: string }[],
    private readonly o: { window?: number; onProgress?: (handedOver: number) => void } = {},
  ) {}

  get count(): number {
    return this.handedOver;
  }

  /** Sends each device's events (grouped by `device`); resolves when every one got a PUBACK. */
  run(events: OutgoingEvent[]): Promise<void> {
    const byDevice = new Map<string, OutgoingEvent[]>();
    for (const e of events) byDevice.set(e.device, [...(byDevice.get(e.device) ?? []), e]);
    return Promise.all(
      this.devices.map(
        (d) =>
          new Promise<void>((resolve) => {
            const queue = byDevice.get(d.id) ?? [];
            let next = 0;
            let pending = new Map<string, OutgoingEvent>(); // sent, no PUBACK yet
            const client = mqtt.connect(this.url, { username: d.id, password: d.password, clientId: d.id, clean: true, reconnectPeriod: 200, connectTimeout: 3_000, keepalive: 5 });
            this.clients.push(client);
            client.on('error', () => {});
            const send = (e: OutgoingEvent) => {
              pending.set(e.id, e);
              client.publish(`wh/${this.wh}/dev/${d.id}/event`, e.payload, { qos: 1 }, (err) => {
                if (err || !pending.delete(e.id)) return;
                this.handedOver++;
                this.o.onProgress?.(this.handedOver);
                fill();
              });
            };
            const fill = () => {
              if (!client.connected) return;
              while (pending.size < (this.o.window ?? 50) && next < queue.length) send(queue[next++] as OutgoingEvent);
              if (next >= queue.length && pending.size === 0) resolve();
            };
            client.on('connect', () => {
              // After a reconnect, everything without a PUBACK goes again (MQTT.js may also replay it: duplicates are fine).
              const again = [...pending.values()];
              pending = new Map();
              for (const e of again) send(e);
              fill();
            });
          }),
      ),
    ).then(() => undefined);
  }

  async close(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.endAsync(true)));
  }
}
