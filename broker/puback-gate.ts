/**
 * The PUBACK gate: the promise this product sells ("no scan is ever lost") is kept here. aedes sends a publish's
 * PUBACK once `authorizePublish` calls back, so broker.ts awaits the `beforePuback` hook of its owner inside
 * `authorizePublish`, for every authorised publish to `wh/+/dev/+/event`:
 *
 *   - the edge (gateway/edge.ts `storeBeforePuback`) returns once the event is fsynced in its outbox;
 *   - central (processors/central.ts `commitBeforePuback`) returns once the event's batch has committed.
 *
 * Until the hook settles the device holds the event, and aedes reads nothing more from its connection. A
 * rejection refuses the publish and disconnects the client, which keeps the message and sends it again.
 * `stockwire processor`, an MQTT client rather than a broker, has the same gate in processors/puback-gate.ts.
 */
import type { Device } from './devices.js';

/** A connected, authenticated client: the device comes from the credential, never from a payload. */
export interface AuthedClient {
  readonly clientId: string;
  readonly device: Device;
}

/** A device event publish, as handed to `beforePuback`. */
export interface DevicePublish {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: 0 | 1 | 2;
  readonly retain: boolean;
}

/** Resolves once the event is durable (stored or committed); only then does the device get its PUBACK. */
export type BeforePuback = (client: AuthedClient, packet: DevicePublish) => Promise<void>;
