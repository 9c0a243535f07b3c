import type { Node, NodeAPI, NodeDef } from 'node-red';
import { ident } from './lib.js';
import type { ServerNode } from './server.js';

export const STREAMS = {
  stock: (_wh: string, sku: string) => `stock/${sku}`,
  'warehouse-stock': (wh: string, sku: string) => `wh/${wh}/stock/${sku}`,
  shelf: (wh: string, sku: string) => `wh/${wh}/shelf/+/${sku}`,
  status: (wh: string) => `wh/${wh}/status`,
  alerts: (wh: string) => `alerts/${wh}/#`,
} as const;
export type Stream = keyof typeof STREAMS;

interface StockInDef extends NodeDef {
  server: string;
  stream: Stream;
  warehouse: string;
  sku: string;
}

/**
 * `stockwire stock in`: the live stock topics (CONTRACT section 2) as messages. Retained topics arrive
 * first with `msg.retain` true: the last known values, also while central is unreachable (on an edge).
 */
export function registerStockIn(RED: NodeAPI): void {
  function StockIn(this: Node, def: StockInDef) {
    RED.nodes.createNode(this, def);
    const server = RED.nodes.getNode(def.server) as ServerNode | null;
    if (!server) {
      this.status({ fill: 'red', shape: 'dot', text: 'no server' });
      return;
    }
    let filter: string;
    try {
      const make = STREAMS[def.stream];
      if (!make) throw new Error(`stream: must be one of ${Object.keys(STREAMS).join(', ')}`);
      filter = make(def.warehouse ? ident(def.warehouse, 'warehouse') : '+', def.sku ? ident(def.sku, 'sku') : '+');
    } catch (err) {
      this.error((err as Error).message);
      this.status({ fill: 'red', shape: 'dot', text: (err as Error).message });
      return;
    }
    void server
      .subscribe(this, filter, (topic, payload, retain) => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(payload.toString('utf8'));
        } catch {
          this.warn(`not JSON on ${topic}; ignored`);
          return;
        }
        this.send({ topic, payload: parsed, retain });
      })
      .catch(() => {}); // reported on the node by the server
    this.on('close', () => server.release(this));
  }
  RED.nodes.registerType('stockwire-stock-in', StockIn);
}
