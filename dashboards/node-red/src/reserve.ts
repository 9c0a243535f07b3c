import type { Node, NodeAPI, NodeDef } from 'node-red';
import { apiError, EVENT_ID, FieldError, ident, request } from './lib.js';
import type { ServerNode } from './server.js';

interface ReserveDef extends NodeDef {
  server: string;
  action: 'reserve' | 'release';
  sku: string;
  qty: string | number;
  warehouse: string;
  ttlSeconds: string | number;
}

const blank = (v: unknown) => v === undefined || v === null || v === '';

function integer(v: unknown, field: string, min: number, max: number): number {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) throw new FieldError(field, `must be an integer from ${min} to ${max}`);
  return n;
}

/**
 * `stockwire reserve`: reserves stock through central's HTTP API (CONTRACT section 6) — granted only
 * while enough is available — or releases a reservation. Granted or released: output 1; refused
 * (insufficient stock, unknown reservation): output 2. Retries are safe: the Idempotency-Key is
 * `msg.idempotencyKey`, else derived from the message id, so central answers a repeat with the first answer.
 */
export function registerReserve(RED: NodeAPI): void {
  function Reserve(this: Node, def: ReserveDef) {
    RED.nodes.createNode(this, def);
    const server = RED.nodes.getNode(def.server) as ServerNode | null;
    this.on('input', (msg, send, done) => {
      void (async () => {
        if (!server) throw new Error('no stockwire server configured');
        const p = (typeof msg.payload === 'object' && msg.payload !== null ? msg.payload : {}) as Record<string, unknown>;
        if (def.action === 'release') {
          const id = p.id ?? (msg.reservation as { id?: unknown } | undefined)?.id ?? (typeof msg.payload === 'string' ? msg.payload : undefined);
          if (typeof id !== 'string' || !EVENT_ID.test(id)) throw new FieldError('id', 'the reservation id (msg.payload.id or msg.reservation.id) must match ^[A-Za-z0-9._:-]{1,64}$');
          const answer = await request(server.httpUrl, 'DELETE', `v1/reservations/${encodeURIComponent(id)}`, { headers: server.apiHeaders() });
          msg.statusCode = answer.status;
          if (answer.status === 204) return send([{ ...msg, payload: { id, released: true } }, null]);
          if (answer.status === 404) return send([null, { ...msg, payload: answer.body }]);
          throw new Error(`release ${id}: ${answer.status} ${apiError(answer.body)?.message ?? ''}`.trim());
        }
        const body: Record<string, unknown> = {
          sku: ident(blank(p.sku) ? def.sku : p.sku, 'sku'),
          qty: integer(blank(p.qty) ? def.qty : p.qty, 'qty', 1, 1_000_000),
        };
        const wh = blank(p.warehouse) ? def.warehouse : p.warehouse;
        if (!blank(wh)) body.warehouse = ident(wh, 'warehouse');
        const ttl = blank(p.ttlSeconds) ? def.ttlSeconds : p.ttlSeconds;
        if (!blank(ttl)) body.ttlSeconds = integer(ttl, 'ttlSeconds', 1, 31_536_000);
        const key = typeof msg.idempotencyKey === 'string' && msg.idempotencyKey !== '' ? msg.idempotencyKey : `node-red-${msg._msgid}`;
        const answer = await request(server.httpUrl, 'POST', 'v1/reservations', { body, headers: { ...server.apiHeaders(), 'idempotency-key': key } });
        msg.statusCode = answer.status;
        msg.idempotencyKey = key;
        if (answer.status === 201) return send([{ ...msg, payload: answer.body, reservation: answer.body }, null]);
        if (answer.status === 409) return send([null, { ...msg, payload: answer.body }]);
        const e = apiError(answer.body);
        msg.error = e;
        throw e?.field ? new FieldError(e.field, e.message) : new Error(`reserve: ${answer.status} ${e ? `${e.code}: ${e.message}` : ''}`.trim());
      })().then(() => done(), (err: Error) => done(err));
    });
  }
  RED.nodes.registerType('stockwire-reserve', Reserve);
}
