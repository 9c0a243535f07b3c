/**
 * The one recipe for an MQTT.js client toward central, used by the edge's forwarder and by `stockwire processor`:
 * what both need from a link that must survive outages, rotations and refusals. What differs by role (a clean or
 * persistent session, a will, an outgoing store, MQTT 5 for shared subscriptions) comes in `session`.
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

export interface CentralClientOptions {
  url: string;
  clientId: string;
  username?: string;
  password?: string;
  /** TLS toward central: CA, client certificate and key (rotated later with reconnectWithTls) */
  tls?: Pick<IClientOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized'>;
  /** s */
  keepalive: number;
  session: Pick<IClientOptions, 'clean' | 'will' | 'protocolVersion' | 'properties' | 'outgoingStore' | 'queueQoSZero'>;
}

export const RECONNECT_PERIOD_MS = 1_000;
export const CONNECT_TIMEOUT_MS = 10_000;

/** The MQTT.js options of a link to central; exported for its test. */
export function centralClientOptions(o: CentralClientOptions): IClientOptions {
  return {
    clientId: o.clientId,
    ...(o.username !== undefined && { username: o.username }),
    ...(o.password !== undefined && { password: o.password }),
    ...o.tls,
    keepalive: o.keepalive,
    reconnectPeriod: RECONNECT_PERIOD_MS,
    // MQTT.js stops for good after a refused CONNACK (a wrong credential, a certificate not yet rotated at
    // central, central unavailable): the link would stay down until a restart. Keep trying instead.
    reconnectOnConnackError: true,
    connectTimeout: CONNECT_TIMEOUT_MS,
    // MQTT.js logs every packet through `debug`, enabled or not (1–2% of an edge's CPU under load); DEBUG=mqttjs* shows them.
    ...(process.env.DEBUG === undefined && { log: () => {} }),
    ...o.session,
    // Never manualConnect: with it, MQTT.js's end() clears `disconnecting` once the stores close, and the socket's
    // close that follows starts the reconnect timer again, so a stopped client reconnects for ever (a stopped
    // forwarder kept knocking at central under its own client id).
  };
}

/**
 * A client toward central. It connects on its own once this turn is over: set every handler in the same turn,
 * before any await. Each connection turns Nagle off (MQTT.js leaves it on): an event, or a PUBACK held until a commit, would otherwise wait for
 * the peer's delayed ACK.
 */
export function centralClient(o: CentralClientOptions): MqttClient {
  const client = mqtt.connect(o.url, centralClientOptions(o));
  client.on('connect', () => (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true));
  return client;
}
