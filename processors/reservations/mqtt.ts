import type { Logger } from 'pino';
import { mayRequest, type Device, type DeviceRegistry } from '../../broker/index.js';
import {
  ajv,
  CommandRequest,
  ErrorCode,
  isOwnResponseTopic,
  MAX_RESPONSE_TOPIC_CHARS,
  MAX_TOPIC_LEVELS,
  parseRequestTopic,
  topics,
  ValidationError,
  type CommandResponse,
  type ErrorBody,
  type RequestAction,
  type ReservationView,
  type TransferView,
} from '../../protocol/index.js';
import type { Publisher } from '../publish/publisher.js';
import { KEY_FIELD, type Answer } from './idempotency.js';
import { schemaError, type ReservationService } from './service.js';

const validateRequest = ajv.compile<CommandRequest>(CommandRequest);
const MAX_REQUEST_BYTES = 16 * 1024;

const refuse = (code: ErrorCode, message: string, field?: string) => new ValidationError(code, message, field);

function readableRequestId(value: unknown): string | null {
  const id = typeof value === 'object' && value !== null ? (value as { requestId?: unknown }).requestId : undefined;
  return typeof id === 'string' && id.length > 0 && id.length <= 128 ? id : null;
}

/**
 * Commands over MQTT (zigbee2mqtt style) for order systems and warehouses that speak only MQTT:
 * a request published to `requests/{own id}` is answered on its `responseTopic` (default
 * `responses/{own id}`, and never outside it) with `{requestId, status: "ok", data}` or
 * `{requestId, status: "error", error}`. The broker's ACL binds the topic to the publisher's id;
 * `mayRequest` then decides per kind and warehouse.
 */
export class CommandRequests {
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly service: ReservationService,
    private readonly publisher: Publisher,
    private readonly devices: DeviceRegistry,
    private readonly log: Logger,
  ) {}

  /** Handles one publish; never throws. Resolves once the response is published. */
  handle(topic: string, payload: Buffer): Promise<void> {
    const done = this.answer(topic, payload).catch((err: Error) =>
      this.log.error({ err: err.message, topic }, 'answering a request failed'),
    );
    this.inFlight.add(done);
    void done.finally(() => this.inFlight.delete(done));
    return done;
  }

  /** Waits for the requests being answered. */
  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  private async answer(topic: string, payload: Buffer): Promise<void> {
    const where = parseRequestTopic(topic);
    const device = where && this.devices.get(where.device);
    if (!where || !device) return; // the broker's ACL lets only known devices publish here
    let requestId: string | null = null;
    let responseTopic = topics.response(device.id);
    let response: CommandResponse;
    try {
      if (payload.byteLength > MAX_REQUEST_BYTES)
        throw refuse(ErrorCode.payloadTooLarge, `a request is at most ${MAX_REQUEST_BYTES} bytes`);
      let value: unknown;
      try {
        value = JSON.parse(payload.toString('utf8'));
      } catch {
        throw refuse(ErrorCode.invalidJson, 'the request is not valid JSON');
      }
      requestId = readableRequestId(value);
      const wanted = (value as { responseTopic?: unknown } | null)?.responseTopic;
      if (typeof wanted === 'string' && isOwnResponseTopic(wanted, device.id)) responseTopic = wanted;
      // Refused before anything runs, and answered where the requester surely listens: its default topic.
      else if (wanted !== undefined) {
        throw refuse(
          ErrorCode.badRequest,
          `responseTopic must be ${topics.response(device.id)} or a topic below it, without wildcards, of at most ${MAX_TOPIC_LEVELS} levels and ${MAX_RESPONSE_TOPIC_CHARS} characters`,
          'responseTopic',
        );
      }
      if (!validateRequest(value)) throw schemaError(validateRequest.errors, 'request');
      const data = await this.dispatch(device, value);
      response =
        data.status >= 400
          ? { requestId, status: 'error', error: (data.body as { error: ErrorBody }).error }
          : { requestId, status: 'ok', data: data.body };
    } catch (err) {
      response = { requestId, status: 'error', error: this.errorBody(err) };
    }
    await this.publisher.publish(responseTopic, JSON.stringify(response), false);
  }

  private errorBody(err: unknown): ErrorBody {
    if (err instanceof ValidationError) {
      const body = err.toBody();
      return body.field === KEY_FIELD
        ? {
            ...body,
            message: body.message
              .replace(`the ${KEY_FIELD} header`, 'idempotencyKey')
              .replace(KEY_FIELD, 'idempotencyKey'),
            field: 'idempotencyKey',
          }
        : body;
    }
    this.log.error({ err: (err as Error).message }, 'request failed');
    return { code: ErrorCode.internal, message: 'internal error' };
  }

  private async dispatch(device: Device, req: CommandRequest): Promise<Answer> {
    const s = this.service;
    const data: Record<string, unknown> = req.data ?? {};
    const run = (fn: () => Promise<Answer>) => s.run(req.action, 'mqtt', fn);
    // Each MQTT caller's idempotency keys are its own: another caller using the same key makes a new request.
    const principal = `mqtt:${device.id}`;
    const allow = (warehouses: string[]) => {
      if (!mayRequest(device, req.action, warehouses))
        throw refuse(
          ErrorCode.notAuthorized,
          `${device.kind} ${device.id} may not ${req.action} on ${warehouses.join(', ') || 'every warehouse'}`,
        );
    };
    switch (req.action as RequestAction) {
      case 'reservations.create': {
        // A gateway reserves at its own warehouse unless it names one (which must then be its own).
        const body =
          device.kind === 'gateway' && data.warehouse === undefined ? { ...data, warehouse: device.warehouse } : data;
        allow(typeof body.warehouse === 'string' ? [body.warehouse] : []);
        return run(() => s.reserve(req.idempotencyKey, body, principal));
      }
      case 'transfers.create':
        // A transfer holds stock at `from`: only `from`'s own gateway may ask for it, never the receiving one.
        allow(typeof data.from === 'string' ? [data.from] : []);
        return run(() => s.createTransfer(req.idempotencyKey, data, principal));
      case 'reservations.get':
      case 'reservations.release': {
        const found = await s.getReservation(data.id);
        const v = found.body as ReservationView | { parts: ReservationView[] };
        allow('parts' in v ? v.parts.map((p) => p.warehouse) : [v.warehouse]);
        return run(() => (req.action === 'reservations.get' ? Promise.resolve(found) : s.release(data.id)));
      }
      case 'transfers.get':
      case 'transfers.cancel': {
        const found = await s.getTransfer(data.id);
        const t = found.body as TransferView;
        // Either end may read a transfer; cancelling releases the hold at `from`, so only `from` may.
        allow(req.action === 'transfers.get' ? [t.from, t.to] : [t.from]);
        return run(() => (req.action === 'transfers.get' ? Promise.resolve(found) : s.cancelTransfer(data.id)));
      }
    }
  }
}
