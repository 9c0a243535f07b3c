import type { Node, NodeAPI, NodeDef } from 'node-red';
import { answerError, apiError, blank, FieldError, ident, request } from './lib.js';
import type { ServerNode } from './server.js';

interface MovementsDef extends NodeDef {
  server: string;
  warehouse: string;
  sku: string;
  bucket: '' | 'hour' | 'day';
}

/** A time for `from`/`to`: RFC 3339 or epoch ms as central takes them; a Date is sent as RFC 3339. */
function time(v: unknown, field: string): string {
  if (v instanceof Date && !Number.isNaN(v.getTime())) return v.toISOString();
  if (typeof v === 'number' && Number.isInteger(v)) return String(v);
  if (typeof v === 'string' && v.trim() !== '') return v.trim();
  throw new FieldError(field, 'must be RFC 3339, epoch milliseconds or a Date');
}

/**
 * `stockwire movements`: a warehouse's stock movements per hour or day from central's HTTP API
 * (`GET /v1/movements`): received, shipped, returned, adjusted, net, cycle counts and their corrections.
 * `msg.payload` ({warehouse, sku?, bucket?, from?, to?}) says which; the node's fields fill what it leaves out;
 * without `sku` every sku of the warehouse is summed; without from/to central answers the last 24 hours
 * (30 days for day buckets).
 */
export function registerMovements(RED: NodeAPI): void {
  function Movements(this: Node, def: MovementsDef) {
    RED.nodes.createNode(this, def);
    const server = RED.nodes.getNode(def.server) as ServerNode | null;
    this.on('input', (msg, send, done) => {
      void (async () => {
        if (!server) throw new Error('no stockwire server configured');
        const p = (typeof msg.payload === 'object' && msg.payload !== null ? msg.payload : {}) as Record<
          string,
          unknown
        >;
        const query = new URLSearchParams({
          warehouse: ident(blank(p.warehouse) ? def.warehouse : p.warehouse, 'warehouse'),
        });
        const sku = blank(p.sku) ? def.sku : p.sku;
        if (!blank(sku)) query.set('sku', ident(sku, 'sku'));
        const bucket = blank(p.bucket) ? def.bucket : p.bucket;
        if (!blank(bucket)) {
          if (bucket !== 'hour' && bucket !== 'day') throw new FieldError('bucket', 'must be hour or day');
          query.set('bucket', bucket);
        }
        for (const field of ['from', 'to'] as const) if (!blank(p[field])) query.set(field, time(p[field], field));
        const answer = await request(server.httpUrl, 'GET', `v1/movements?${query.toString()}`, {
          headers: server.apiHeaders(),
        });
        msg.statusCode = answer.status;
        if (answer.status !== 200) {
          msg.error = apiError(answer.body);
          throw answerError(`movements of ${query.get('warehouse')}`, answer);
        }
        msg.payload = answer.body;
        send(msg);
      })().then(
        () => done(),
        (err: Error) => done(err),
      );
    });
  }
  RED.nodes.registerType('stockwire-movements', Movements);
}
