import type { AedesOptions } from 'aedes';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { BrokerRole } from './acl.js';
import type { DeviceRegistry } from './devices.js';
import type { DeviceLimits } from './limits.js';
import type { TlsListenerOptions } from './listeners.js';
import type { BeforePuback } from './puback-gate.js';

export interface BrokerOptions {
  role: BrokerRole;
  /** The warehouse an edge broker serves; required when `role` is `edge`. */
  edgeWarehouse?: string;
  devices: DeviceRegistry;
  /** Interface to listen on. Default `0.0.0.0`. */
  host?: string;
  /** MQTT over TCP; `0` picks a free port. Default 1883 on an edge, 1884 on central (CONTRACT section 1). */
  mqttPort?: number;
  /** MQTT over WebSocket; `0` picks a free port, `null` means no WebSocket listener. Default 8083 edge, 8084 central. */
  wsPort?: number | null;
  /** MQTT over TLS listener; absent means none. */
  tls?: TlsListenerOptions;
  /**
   * Largest publish payload the broker accepts, in bytes; a larger publish is refused and its client
   * disconnected. Must exceed the 8 KiB event limit, which is enforced later as a dead letter. Default 64 KiB.
   */
  maxPayloadBytes?: number;
  /** Per-device limits (connection attempts, publish rate, in flight); each one absent takes its default. */
  limits?: Partial<DeviceLimits>;
  registry: Registry;
  log: Logger;
  /**
   * The PUBACK gate (broker/puback-gate.ts): awaited for every authorised publish to `wh/+/dev/+/event` or
   * `wh/+/gw/+/batch` (never for wills) before aedes sends the PUBACK: the edge fsyncs its outbox here, central
   * commits. A rejection refuses the publish and disconnects the client, which keeps the message and sends it again.
   */
  beforePuback?: BeforePuback;
  /** aedes persistence (e.g. aedes-persistence-redis for a cluster); default in memory. */
  persistence?: AedesOptions['persistence'];
  /** aedes message emitter (e.g. mqemitter-redis for a cluster); default in process. */
  mq?: AedesOptions['mq'];
}

/** Ports actually bound, with a key for each listener that runs. */
export interface BrokerPorts {
  mqtt: number;
  ws?: number;
  mqtts?: number;
}
