import type { Node, NodeAPI, NodeDef } from 'node-red';
import { answerError, apiError, blank, EVENT_ID, FieldError, idempotencyKey, ident, integer, request } from './lib.js';
import { COMMAND_QTY, EVENT_ID_PATTERN, MAX_TRANSFER_TIMEOUT_S } from './limits.js';
import type { ServerNode } from './server.js';

interface TransferDef extends NodeDef {
  server: string;
  action: 'create' | 'get' | 'cancel';
  sku: string;
  qty: string | number;
  from: string;
  to: string;
  timeoutSeconds: string | number;
}

/**
 * `stockwire transfer`: moves stock between warehouses through central's HTTP API (`/v1/transfers`, a saga:
 * the quantity is held at `from` until the shipped events leave it and the received ones arrive at `to`).
 * create: the transfer on output 1, `insufficient_stock` at `from` on output 2; the Idempotency-Key is
 * `msg.idempotencyKey`, else derived from the message id, so a retry gets the first answer. get and cancel take
 * the transfer id (`msg.payload.id`, `msg.transfer.id` or a string payload): the transfer (get) or
 * `{id, cancelled: true}` on output 1; an unknown id (404) or goods already moved (409) on output 2.
 */
export function registerTransfer(RED: NodeAPI): void {
  function Transfer(this: Node, def: TransferDef) {
    RED.nodes.createNode(this, def);
    const server = RED.nodes.getNode(def.server) as ServerNode | null;
    this.on('input', (msg, send, done) => {
      void (async () => {
        if (!server) throw new Error('no stockwire server configured');
        const p = (typeof msg.payload === 'object' && msg.payload !== null ? msg.payload : {}) as Record<
          string,
          unknown
        >;
        const action = def.action || 'create';
        if (action === 'get' || action === 'cancel') {
          const id =
            p.id ??
            (msg.transfer as { id?: unknown } | undefined)?.id ??
            (typeof msg.payload === 'string' ? msg.payload : undefined);
          if (typeof id !== 'string' || !EVENT_ID.test(id))
            throw new FieldError(
              'id',
              `the transfer id (msg.payload.id or msg.transfer.id) must match ${EVENT_ID_PATTERN}`,
            );
          const answer = await request(
            server.httpUrl,
            action === 'get' ? 'GET' : 'DELETE',
            `v1/transfers/${encodeURIComponent(id)}`,
            { headers: server.apiHeaders() },
          );
          msg.statusCode = answer.status;
          if (action === 'get' && answer.status === 200)
            return send([{ ...msg, payload: answer.body, transfer: answer.body }, null]);
          if (action === 'cancel' && answer.status === 204)
            return send([{ ...msg, payload: { id, cancelled: true } }, null]);
          if (answer.status === 404 || answer.status === 409) return send([null, { ...msg, payload: answer.body }]);
          msg.error = apiError(answer.body);
          throw answerError(`${action} transfer ${id}`, answer);
        }
        const body: Record<string, unknown> = {
          sku: ident(blank(p.sku) ? def.sku : p.sku, 'sku'),
          qty: integer(blank(p.qty) ? def.qty : p.qty, 'qty', ...COMMAND_QTY),
          from: ident(blank(p.from) ? def.from : p.from, 'from'),
          to: ident(blank(p.to) ? def.to : p.to, 'to'),
        };
        if (body.from === body.to) throw new FieldError('to', 'must differ from from');
        const timeout = blank(p.timeoutSeconds) ? def.timeoutSeconds : p.timeoutSeconds;
        if (!blank(timeout)) body.timeoutSeconds = integer(timeout, 'timeoutSeconds', 1, MAX_TRANSFER_TIMEOUT_S);
        const key = idempotencyKey(msg);
        const answer = await request(server.httpUrl, 'POST', 'v1/transfers', {
          body,
          headers: { ...server.apiHeaders(), 'idempotency-key': key },
        });
        msg.statusCode = answer.status;
        msg.idempotencyKey = key;
        if (answer.status === 201) return send([{ ...msg, payload: answer.body, transfer: answer.body }, null]);
        if (answer.status === 409) return send([null, { ...msg, payload: answer.body }]);
        msg.error = apiError(answer.body);
        throw answerError('transfer', answer);
      })().then(
        () => done(),
        (err: Error) => done(err),
      );
    });
  }
  RED.nodes.registerType('stockwire-transfer', Transfer);
}
