import assert from 'node:assert/strict';
import { randomBytes, scrypt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import {
  createBroker,
  DeviceRegistry,
  hashPassword,
  type BrokerOptions,
  type Device,
  type StockwireBroker,
} from '../../broker/index.js';

/** One password per device, derived from its id. */
export const passwordOf = (id: string): string => `secret-of-${id}`;

/**
 * A hash in the devices file's format at scrypt N=2^10 (~1 ms a check instead of ~50 ms): for tests that log in
 * hundreds of times and test the hooks, not the cost of a login. Production hashes come from hashPassword.
 */
export function cheapHash(password: string): Promise<string> {
  const salt = randomBytes(16);
  return new Promise((resolve, reject) =>
    scrypt(password, salt, 32, { N: 1024, r: 8, p: 1 }, (err, key) =>
      err ? reject(err) : resolve(['scrypt', 1024, 8, 1, salt.toString('base64'), key.toString('base64')].join('$')),
    ),
  );
}

export async function deviceRegistry(
  devices: Array<Omit<Device, 'passwordHash'>>,
  hash: (password: string) => Promise<string> = hashPassword,
): Promise<DeviceRegistry> {
  return DeviceRegistry.fromList(
    await Promise.all(devices.map(async (d) => ({ ...d, passwordHash: await hash(passwordOf(d.id)) }))),
  );
}

export interface TestBroker {
  broker: StockwireBroker;
  registry: Registry;
  url: string;
  /** the sum of a metric's values whose labels include `labels` */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

/** A broker on 127.0.0.1 port 0, TCP only, logging nothing. */
export async function startBroker(
  options: Omit<BrokerOptions, 'registry' | 'log' | 'host' | 'mqttPort' | 'wsPort'>,
): Promise<TestBroker> {
  const registry = new Registry();
  const broker = createBroker({
    ...options,
    host: '127.0.0.1',
    mqttPort: 0,
    wsPort: null,
    registry,
    log: pino({ level: 'silent' }),
  });
  const ports = await broker.start();
  return {
    broker,
    registry,
    url: `mqtt://127.0.0.1:${ports.mqtt}`,
    async metric(name, labels = {}) {
      const m = registry.getSingleMetric(name);
      assert.ok(m, `metric ${name} is registered`);
      const { values } = await m.get();
      return values
        .filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))
        .reduce((sum, v) => sum + v.value, 0);
    },
  };
}

/** Connects as device `id` (its password, a client id of its own) and waits for CONNACK. */
export async function connectAs(url: string, id: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, {
    username: id,
    password: passwordOf(id),
    clientId: `${id}-${Math.random().toString(16).slice(2, 10)}`,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    ...opts,
  });
  client.on('error', () => undefined); // a reset by the broker is asserted through 'close'
  return client;
}

/** The CONNACK return code of a refused connection; fails when the connection is accepted. */
export async function connackRefusal(url: string, opts: IClientOptions): Promise<number | undefined> {
  let client: MqttClient;
  try {
    client = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 10_000, ...opts });
  } catch (err) {
    return (err as { code?: number }).code;
  }
  await client.endAsync(true);
  return assert.fail('connection was accepted');
}

/** Resolves when the connection closes (not events.once: it rejects on the 'error' of a reset). */
export function closeOf(client: MqttClient): Promise<void> {
  return new Promise((resolve) =>
    client.connected || client.reconnecting ? client.once('close', () => resolve()) : resolve(),
  );
}

/** Resolves when the broker has closed the client's connection; fails after `ms`. */
export async function closedByBroker(client: MqttClient, ms = 10_000): Promise<void> {
  await Promise.race([
    closeOf(client),
    sleep(ms, undefined, { ref: false }).then(() => assert.fail('the broker did not close the connection')),
  ]);
}

/** Polls `pred` every 20 ms until it holds; fails after `ms` naming `what`. */
export async function until(pred: () => boolean | Promise<boolean>, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

const u16 = (n: number): Buffer => Buffer.from([(n >> 8) & 0xff, n & 0xff]);

/** An MQTT 3.1.1 PUBLISH frame built by hand, so a test can send what MQTT.js would refuse to (wildcards, NUL, bad UTF-8). */
export function publishFrame(topic: string | Buffer, payload: string | Buffer, qos: 0 | 1, messageId = 1): Buffer {
  const t = typeof topic === 'string' ? Buffer.from(topic) : topic;
  const body = Buffer.concat([
    u16(t.length),
    t,
    qos > 0 ? u16(messageId) : Buffer.alloc(0),
    typeof payload === 'string' ? Buffer.from(payload) : payload,
  ]);
  return Buffer.concat([Buffer.from([0x30 | (qos << 1)]), remainingLength(body.length), body]);
}

/** An MQTT 3.1.1 SUBSCRIBE frame of one filter, built by hand. */
export function subscribeFrame(filter: string | Buffer, qos: 0 | 1, messageId: number): Buffer {
  const f = typeof filter === 'string' ? Buffer.from(filter) : filter;
  const body = Buffer.concat([u16(messageId), u16(f.length), f, Buffer.from([qos])]);
  return Buffer.concat([Buffer.from([0x82]), remainingLength(body.length), body]);
}

/**
 * Writes publishes straight onto an MQTT.js client's socket, all in one write (so the broker reads
 * them as one chunk), and records the PUBACKs and SUBACKs that come back (MQTT.js ignores acks of ids it did not send).
 */
export class RawWriter {
  readonly pubacks = new Set<number>();
  readonly subacks = new Map<number, number[]>();
  private nextId = 30_000;

  constructor(private readonly client: MqttClient) {
    client.on('packetreceive', (p) => {
      if (p.cmd === 'puback' && p.messageId !== undefined) this.pubacks.add(p.messageId);
      if (p.cmd === 'suback' && p.messageId !== undefined) this.subacks.set(p.messageId, p.granted as number[]);
    });
  }

  /** Sends the payloads to `topic` in one write; the message ids (QoS 1) to wait on. */
  publish(topic: string | Buffer, payloads: Array<string | Buffer>, qos: 0 | 1): number[] {
    const ids = payloads.map(() => (this.nextId = (this.nextId % 65_000) + 1));
    this.client.stream.write(Buffer.concat(payloads.map((p, i) => publishFrame(topic, p, qos, ids[i]))));
    return qos === 1 ? ids : [];
  }

  /** Sends a SUBSCRIBE of one filter; its message id. */
  subscribe(filter: string | Buffer, qos: 0 | 1): number {
    this.nextId = (this.nextId % 65_000) + 1;
    const id = this.nextId;
    this.client.stream.write(subscribeFrame(filter, qos, id));
    return id;
  }

  acked(ids: number[]): number {
    return ids.filter((id) => this.pubacks.has(id)).length;
  }
}
