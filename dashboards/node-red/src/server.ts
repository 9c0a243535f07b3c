import { randomBytes } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import type { Node, NodeAPI, NodeDef } from 'node-red';
import { topicMatches } from './lib.js';

export interface ServerDef extends NodeDef {
  mqttUrl: string;
  httpUrl: string;
}
export interface ServerCredentials {
  username?: string;
  password?: string;
  /** central's API_TOKEN: reserve and release send it as `Authorization: Bearer …` */
  apiToken?: string;
}

type OnMessage = (topic: string, payload: Buffer, retain: boolean) => void;

/**
 * The `stockwire-server` config node: where central (or an edge) is, and the credential to use.
 * One MQTT connection serves every node that uses it; subscriptions are counted, so one node
 * unsubscribing never silences another.
 */
export interface ServerNode extends Node<ServerCredentials> {
  httpUrl: string;
  /** headers every HTTP API call sends (the API token, when one is configured) */
  apiHeaders(): Record<string, string>;
  /** the shared connection; `user` shows its state as its status */
  client(user: Node): MqttClient;
  /** resolves once the broker granted the subscription (MQTT.js may send a queued publish before it) */
  subscribe(user: Node, filter: string, onMessage: OnMessage): Promise<void>;
  release(user: Node): void;
}

const RECONNECT_MS = 5_000; // between connection attempts

export function registerServer(RED: NodeAPI): void {
  function StockwireServer(this: ServerNode, def: ServerDef) {
    RED.nodes.createNode(this, def);
    this.httpUrl = def.httpUrl;
    this.apiHeaders = (): Record<string, string> => {
      const token = this.credentials?.apiToken;
      return token ? { authorization: `Bearer ${token}` } : {};
    };
    let connection: MqttClient | null = null;
    let lastError = '';
    const users = new Set<Node>();
    const subscriptions = new Map<Node, { filter: string; onMessage: OnMessage }[]>();
    const show = (user: Node) => {
      if (connection?.connected) user.status({ fill: 'green', shape: 'dot', text: 'connected' });
      else user.status({ fill: lastError ? 'red' : 'yellow', shape: 'ring', text: lastError || 'connecting' });
    };
    const filterUsers = (filter: string) =>
      [...subscriptions.values()].filter((list) => list.some((s) => s.filter === filter)).length;

    this.client = (user) => {
      users.add(user);
      if (!connection) {
        const { username, password } = this.credentials;
        connection = mqtt.connect(def.mqttUrl, {
          // stockwire brokers accept a client id that is the device id or starts with `{id}-`
          clientId: `${username || 'node-red'}-nodered-${randomBytes(4).toString('hex')}`,
          ...(username && { username }),
          ...(password && { password }),
          clean: true,
          reconnectPeriod: RECONNECT_MS,
          connectTimeout: 10_000, // ms
        });
        connection.on('connect', () => {
          lastError = '';
          users.forEach(show);
        });
        connection.on('close', () => users.forEach(show));
        connection.on('error', (err) => {
          lastError = err.message;
          users.forEach(show);
        });
        connection.on('message', (topic, payload, packet) => {
          for (const list of subscriptions.values())
            for (const s of list) if (topicMatches(s.filter, topic)) s.onMessage(topic, payload, packet.retain);
        });
      }
      show(user);
      return connection;
    };

    this.subscribe = (user, filter, onMessage) => {
      const client = this.client(user);
      subscriptions.set(user, [...(subscriptions.get(user) ?? []), { filter, onMessage }]);
      // MQTT.js queues a subscribe made while offline and subscribes again after every reconnect.
      return new Promise((resolve, reject) => {
        client.subscribe(filter, { qos: 1 }, (err, granted) => {
          const refused =
            err?.message ??
            (granted?.some((g) => g.qos === 128) ? `central refused the subscription to ${filter}` : '');
          if (!refused) return resolve();
          user.error(refused);
          user.status({ fill: 'red', shape: 'dot', text: 'not allowed' });
          reject(new Error(refused));
        });
      });
    };

    this.release = (user) => {
      const mine = subscriptions.get(user) ?? [];
      subscriptions.delete(user);
      for (const s of mine) if (filterUsers(s.filter) === 0) connection?.unsubscribe(s.filter);
      users.delete(user);
    };

    this.on('close', (done: () => void) => {
      const c = connection;
      connection = null;
      if (!c) return done();
      c.end(true, {}, () => done());
    });
  }
  RED.nodes.registerType<ServerNode, ServerDef, object, ServerCredentials>('stockwire-server', StockwireServer, {
    // credentials, not properties: Node-RED keeps them out of exported flows
    credentials: { username: { type: 'text' }, password: { type: 'password' }, apiToken: { type: 'password' } },
  });
}
