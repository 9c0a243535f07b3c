import type { Node, NodeAPI, NodeDef } from 'node-red';
import { apiError, ident, request } from './lib.js';
import type { ServerNode } from './server.js';

interface StockLevelDef extends NodeDef {
  server: string;
  warehouse: string;
  sku: string;
}

/**
 * `stockwire stock level`: asks central's HTTP API for the stock of a SKU, over every warehouse or in one.
 * The SKU and warehouse come from the node, else from `msg.sku`/`msg.warehouse`, else from `msg.payload`.
 */
export function registerStockLevel(RED: NodeAPI): void {
  function StockLevel(this: Node, def: StockLevelDef) {
    RED.nodes.createNode(this, def);
    const server = RED.nodes.getNode(def.server) as ServerNode | null;
    this.on('input', (msg, send, done) => {
      void (async () => {
        if (!server) throw new Error('no stockwire server configured');
        const payload = msg.payload as { sku?: unknown; warehouse?: unknown } | string | undefined;
        const sku = ident(def.sku || msg.sku || (typeof payload === 'string' ? payload : payload?.sku), 'sku');
        const wanted = def.warehouse || msg.warehouse || (typeof payload === 'object' ? payload?.warehouse : undefined);
        const wh = wanted === undefined || wanted === '' ? undefined : ident(wanted, 'warehouse');
        const answer = await request(
          server.httpUrl,
          'GET',
          wh ? `v1/warehouses/${wh}/stock/${sku}` : `v1/stock/${sku}`,
          { headers: server.apiHeaders() },
        );
        msg.statusCode = answer.status;
        if (answer.status !== 200) {
          const e = apiError(answer.body);
          msg.error = e;
          throw new Error(
            `stock of ${sku}${wh ? ` at ${wh}` : ''}: ${answer.status} ${e ? `${e.code}: ${e.message}` : ''}`.trim(),
          );
        }
        msg.payload = answer.body;
        send(msg);
      })().then(
        () => done(),
        (err: Error) => done(err),
      );
    });
  }
  RED.nodes.registerType('stockwire-stock-level', StockLevel);
}
