import type { Node, NodeAPI, NodeDef } from 'node-red';
import { answerError, apiError, blank, EVENT_ID, FieldError, idempotencyKey, ident, integer, request } from './lib.js';
import { COMMAND_QTY, EVENT_ID_PATTERN, MAX_RESERVATION_TTL_S } from './limits.js';
import type { ServerNode } from './server.js';

interface ReserveDef extends NodeDef {
  server: string;
  action: 'reserve' | 'release';
  sku: string;
  qty: string | number;
  warehouse: string;
  ttlSeconds: string | number;
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
        const p = (typeof msg.payload === 'object' && msg.payload !== null ? msg.payload : {}) as Record<
          string,
          unknown
        >;
        if (def.action === 'release') {
          const id =
            p.id ??
            (msg.reservation as { id?: unknown } | undefined)?.id ??
            (typeof msg.payload === 'string' ? msg.payload : undefined);
          if (typeof id !== 'string' || !EVENT_ID.test(id))
            throw new FieldError(
              'id',
              `the reservation id (msg.payload.id or msg.reservation.id) must match ${EVENT_ID_PATTERN}`,
            );
          const answer = await request(server.httpUrl, 'DELETE', `v1/reservations/${encodeURIComponent(id)}`, {
            headers: server.apiHeaders(),
          });
          msg.statusCode = answer.status;
          if (answer.status === 204) return send([{ ...msg, payload: { id, released: true } }, null]);
          if (answer.status === 404) return send([null, { ...msg, payload: answer.body }]);
          throw new Error(`release ${id}: ${answer.status} ${apiError(answer.body)?.message ?? ''}`.trim());
        }
        const body: Record<string, unknown> = {
          sku: ident(blank(p.sku) ? def.sku : p.sku, 'sku'),
          qty: integer(blank(p.qty) ? def.qty : p.qty, 'qty', ...COMMAND_QTY),
        };
        const wh = blank(p.warehouse) ? def.warehouse : p.warehouse;
        if (!blank(wh)) body.warehouse = ident(wh, 'warehouse');
        const ttl = blank(p.ttlSeconds) ? def.ttlSeconds : p.ttlSeconds;
        if (!blank(ttl)) body.ttlSeconds = integer(ttl, 'ttlSeconds', 1, MAX_RESERVATION_TTL_S);
        const key = idempotencyKey(msg);
        const answer = await request(server.httpUrl, 'POST', 'v1/reservations', {
          body,
          headers: { ...server.apiHeaders(), 'idempotency-key': key },
        });
        msg.statusCode = answer.status;
        msg.idempotencyKey = key;
        if (answer.status === 201) return send([{ ...msg, payload: answer.body, reservation: answer.body }, null]);
        if (answer.status === 409) return send([null, { ...msg, payload: answer.body }]);
        msg.error = apiError(answer.body);
        throw answerError('reserve', answer);
      })().then(
        () => done(),
        (err: Error) => done(err),
      );
    });
  }
  RED.nodes.registerType('stockwire-reserve', Reserve);
}
