import { randomUUID } from 'node:crypto';
import type { Node, NodeAPI, NodeDef, NodeMessage, NodeMessageInFlow } from 'node-red';
import { EVENT_ID, FieldError, ident } from './lib.js';
import { EVENT_ID_PATTERN, EVENT_QTY, EVENT_TYPES, REASON_MAX_LENGTH, type EventType } from './limits.js';
import type { ServerNode } from './server.js';

interface SubmitDef extends NodeDef {
  server: string;
  warehouse: string;
  device: string;
  /** s to wait for central's commit ack */
  ackTimeout: string | number;
}

/** Builds an event of CONTRACT section 3 from `msg.payload`, naming the field at fault when it cannot. */
export function toEvent(input: unknown): Record<string, unknown> {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw new FieldError('payload', 'must be an object {type, sku, qty, …}');
  const p = input as Record<string, unknown>;
  const type = p.type as EventType;
  if (!EVENT_TYPES.includes(type)) throw new FieldError('type', `must be one of ${EVENT_TYPES.join(', ')}`);
  const sku = ident(p.sku, 'sku');
  const [min, max] = EVENT_QTY[type];
  if (
    typeof p.qty !== 'number' ||
    !Number.isInteger(p.qty) ||
    p.qty < min ||
    p.qty > max ||
    (type === 'adjusted' && p.qty === 0)
  ) {
    throw new FieldError(
      'qty',
      `must be an integer from ${min} to ${max}${type === 'adjusted' ? ', not 0,' : ''} for ${type}`,
    );
  }
  const id = p.id ?? randomUUID();
  if (typeof id !== 'string' || !EVENT_ID.test(id)) throw new FieldError('id', `must match ${EVENT_ID_PATTERN}`);
  const event: Record<string, unknown> = { v: 1, id, type, sku, qty: p.qty };
  if (p.ts !== undefined) {
    if (typeof p.ts === 'string' ? Number.isNaN(Date.parse(p.ts)) : typeof p.ts !== 'number')
      throw new FieldError('ts', 'must be RFC 3339 or epoch milliseconds');
    event.ts = p.ts;
  }
  if (p.location !== undefined) event.location = ident(p.location, 'location');
  else if (type === 'level') throw new FieldError('location', 'is required for level readings');
  if (p.reservation !== undefined) {
    if (typeof p.reservation !== 'string' || !EVENT_ID.test(p.reservation))
      throw new FieldError('reservation', `must match ${EVENT_ID_PATTERN}`);
    event.reservation = p.reservation;
  }
  if (p.reason !== undefined) {
    if (typeof p.reason !== 'string' || p.reason.length > REASON_MAX_LENGTH)
      throw new FieldError('reason', `must be a string of at most ${REASON_MAX_LENGTH} characters`);
    event.reason = p.reason;
  }
  return event;
}

interface Waiting {
  msg: NodeMessageInFlow;
  event: Record<string, unknown>;
  send: (msg: Array<NodeMessage | null>) => void;
  done: (err?: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * `stockwire submit`: publishes an event as device `{device}` of warehouse `{warehouse}` and waits for
 * central's commit ack. Applied and duplicate acks leave on output 1, rejected ones on output 2. Without
 * an ack in time the node fails the message; sending it again with the same `id` is safe (dedupe).
 */
export function registerSubmit(RED: NodeAPI): void {
  function Submit(this: Node, def: SubmitDef) {
    RED.nodes.createNode(this, def);
    const server = RED.nodes.getNode(def.server) as ServerNode | null;
    const timeoutMs = Math.max(1, Number(def.ackTimeout) || 10) * 1000;
    const waiting = new Map<string, Waiting>();
    let where: { wh: string; device: string } | null = null;
    let subscribed: Promise<void> = Promise.reject(
      new Error('node not configured: server, warehouse and device are required'),
    );
    subscribed.catch(() => {});
    try {
      where = { wh: ident(def.warehouse, 'warehouse'), device: ident(def.device, 'device') };
    } catch (err) {
      this.error((err as Error).message);
      this.status({ fill: 'red', shape: 'dot', text: (err as Error).message });
    }
    if (server && where) {
      subscribed = server.subscribe(this, `wh/${where.wh}/dev/${where.device}/ack`, (_topic, payload) => {
        let ack: { id?: unknown; status?: unknown };
        try {
          ack = JSON.parse(payload.toString('utf8')) as typeof ack;
        } catch {
          return;
        }
        const w = typeof ack.id === 'string' ? waiting.get(ack.id) : undefined;
        if (!w) return; // an ack for a sender other than this node
        waiting.delete(ack.id as string);
        clearTimeout(w.timer);
        w.msg.payload = ack;
        w.msg.event = w.event;
        w.send(ack.status === 'rejected' ? [null, w.msg] : [w.msg, null]);
        w.done();
      });
      subscribed.catch(() => {}); // reported on the node by the server; inputs fail with the reason
    }

    this.on('input', (msg, send, done) => {
      if (!server || !where) return done(new Error('node not configured: server, warehouse and device are required'));
      let event: Record<string, unknown>;
      try {
        event = toEvent(msg.payload);
      } catch (err) {
        msg.error = err instanceof FieldError ? { field: err.field, message: err.message } : undefined;
        return done(err as Error);
      }
      const id = event.id as string;
      const timer = setTimeout(() => {
        waiting.delete(id);
        msg.event = event;
        done(
          new Error(
            `no commit ack for event ${id} within ${timeoutMs / 1000} s; it may still be applied: send it again with the same id`,
          ),
        );
      }, timeoutMs);
      waiting.set(id, { msg, event, send, done, timer });
      const fail = (err: Error) => {
        if (!waiting.has(id)) return;
        waiting.delete(id);
        clearTimeout(timer);
        done(err);
      };
      const topic = `wh/${where.wh}/dev/${where.device}/event`;
      // Publish only once the ack subscription stands: an ack sent before it would be lost.
      subscribed.then(
        () => server.client(this).publish(topic, JSON.stringify(event), { qos: 1 }, (err) => err && fail(err)),
        (err: Error) => fail(err),
      );
    });

    this.on('close', () => {
      for (const w of waiting.values()) {
        clearTimeout(w.timer);
        w.done(new Error('node stopped before the commit ack'));
      }
      waiting.clear();
      server?.release(this);
    });
  }
  RED.nodes.registerType('stockwire-submit', Submit);
}
