import type { ErrorObject, ValidateFunction } from 'ajv';
import type { Logger } from 'pino';
import {
  ajv,
  ErrorCode,
  httpStatusOf,
  isIdent,
  ReservationRequest,
  TransferRequest,
  ValidationError,
  type RequestAction,
} from '../../protocol/index.js';
import { defaultPolicy, type AllocationPolicy } from '../ledger/reservations.js';
import { ReservationBatcher } from './batcher.js';
import { getReservation, release } from './holds.js';
import { checkKey, lookupKey, requestHash, scopedKey, type Answer } from './idempotency.js';
import type { ReservationMetrics } from './metrics.js';
import { Runner, type RunnerOptions } from './runner.js';
import { Sweeper } from './sweeper.js';
import { cancelTransfer, createTransfer, getTransfer } from './transfers.js';

/** Reservation and transfer settings (README "Configuration"). */
export interface CommandConfig {
  /** s a reservation holds when the request names no ttlSeconds */
  reservationTtl: number;
  /** s a transfer may take before it is compensated, when the request names no timeoutSeconds */
  transferTimeout: number;
  policy: AllocationPolicy;
  /** ms between sweeps of expired holds and timed-out transfers; 0: no sweeper in this process */
  sweepIntervalMs: number;
  /** h an Idempotency-Key's answer is kept */
  idempotencyRetentionHours: number;
}

export const defaultCommandConfig: CommandConfig = {
  reservationTtl: 900,
  transferTimeout: 86_400,
  policy: defaultPolicy,
  sweepIntervalMs: 1_000,
  idempotencyRetentionHours: 24,
};

/** The flat settings of `stockwire central` / `processor` (processors/config.ts), each optional. */
export interface CommandSettings {
  reservationTtl?: number;
  transferTimeout?: number;
  allocation?: AllocationPolicy['strategy'];
  allocationPriority?: string[];
  allocationChannels?: Record<string, string[]>;
  sweepIntervalMs?: number;
  idempotencyRetentionHours?: number;
}

export function commandConfig(s: CommandSettings): CommandConfig {
  const d = defaultCommandConfig;
  return {
    reservationTtl: s.reservationTtl ?? d.reservationTtl,
    transferTimeout: s.transferTimeout ?? d.transferTimeout,
    policy: {
      strategy: s.allocation ?? d.policy.strategy,
      priority: s.allocationPriority ?? [],
      channels: s.allocationChannels ?? {},
    },
    sweepIntervalMs: s.sweepIntervalMs ?? d.sweepIntervalMs,
    idempotencyRetentionHours: s.idempotencyRetentionHours ?? d.idempotencyRetentionHours,
  };
}

const validateReservation = ajv.compile<ReservationRequest>(ReservationRequest);
const validateTransfer = ajv.compile<TransferRequest>(TransferRequest);

function fieldOf(err: ErrorObject): string | undefined {
  if (err.keyword === 'required') return String((err.params as { missingProperty: string }).missingProperty);
  if (err.keyword === 'additionalProperties')
    return String((err.params as { additionalProperty: string }).additionalProperty);
  const path = err.instancePath.replace(/^\//, '').split('/')[0];
  return path === '' ? undefined : path;
}

/** The refusal of a value a schema did not accept: it names the first field at fault. */
export function schemaError(errors: ErrorObject[] | null | undefined, what = 'body'): ValidationError {
  const first = errors?.[0];
  const field = first ? fieldOf(first) : undefined;
  const message = !first
    ? `the ${what} is invalid`
    : first.keyword === 'additionalProperties'
      ? `unknown field ${field}`
      : `${field ?? what} ${first.message ?? 'is invalid'}`;
  return new ValidationError(ErrorCode.badRequest, message, field);
}

/** Validates a command body; the error names the first field at fault. */
function parse<T>(validate: ValidateFunction<T>, body: unknown): T {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new ValidationError(ErrorCode.badRequest, 'the body must be a JSON object');
  if (validate(body)) return body;
  throw schemaError(validate.errors);
}

function ident(id: unknown, field = 'id'): string {
  if (!isIdent(id))
    throw new ValidationError(ErrorCode.badRequest, `${field} must match ^[A-Za-z0-9._-]{1,64}$`, field);
  return id;
}

/**
 * The command side of CONTRACT section 6: reservations and transfers, decided atomically in
 * PostgreSQL. One instance per process; HTTP routes and MQTT requests both call it.
 */
export class ReservationService {
  readonly runner: Runner;
  readonly sweeper: Sweeper;
  private readonly batcher: ReservationBatcher;

  constructor(
    o: Omit<RunnerOptions, 'concurrency' | 'maxQueue'> & Partial<Pick<RunnerOptions, 'concurrency' | 'maxQueue'>>,
    readonly config: CommandConfig = defaultCommandConfig,
  ) {
    this.runner = new Runner({ concurrency: 3, maxQueue: 5_000, ...o });
    this.batcher = new ReservationBatcher(this.runner, config.policy, this.runner.o.maxQueue);
    this.sweeper = new Sweeper(this.runner, {
      intervalMs: config.sweepIntervalMs,
      idempotencyRetentionHours: config.idempotencyRetentionHours,
      metrics: o.metrics,
      log: o.log,
    });
  }

  get metrics(): ReservationMetrics {
    return this.runner.o.metrics;
  }

  get log(): Logger {
    return this.runner.o.log;
  }

  start(): void {
    this.sweeper.start();
  }

  async stop(): Promise<void> {
    await this.sweeper.stop();
  }

  /** Runs one action; counts and times it. `via` labels the metric (http, mqtt). */
  async run(action: RequestAction, via: string, fn: () => Promise<Answer>): Promise<Answer> {
    const end = this.metrics.commandSeconds.startTimer({ action });
    try {
      const answer = await fn();
      this.metrics.commands.inc({
        action,
        status: String(answer.status),
        replayed: String(answer.replayed === true),
        via,
      });
      return answer;
    } catch (err) {
      const status = String(err instanceof ValidationError ? httpStatusOf(err.code) : 500);
      if (!(err instanceof ValidationError))
        this.log.error(
          { action, err: (err as Error).message, code: (err as { code?: string }).code },
          'command failed',
        );
      this.metrics.commands.inc({ action, status, replayed: 'false', via });
      throw err;
    } finally {
      end();
    }
  }

  /** `principal`: who asks, when not the HTTP API (its Idempotency-Keys are its own: `scopedKey`). */
  async reserve(key: unknown, body: unknown, principal?: string): Promise<Answer> {
    const k = scopedKey(checkKey(key), principal);
    const req = parse(validateReservation, body);
    const hash = requestHash('reservations.create', req);
    // A repeat of a decided request is answered from its key, without waiting for any lock.
    const stored = await this.runner.read((pool) => lookupKey(pool, k, 'reservations.create', hash));
    if (stored) return stored;
    return this.batcher.submit({ req, ttlSeconds: req.ttlSeconds ?? this.config.reservationTtl, key: k, hash });
  }

  getReservation(id: unknown): Promise<Answer> {
    return getReservation(this.runner.o.pool, ident(id));
  }

  release(id: unknown): Promise<Answer> {
    const i = ident(id);
    return this.runner.tx((client, now) => release(client, now, i));
  }

  async createTransfer(key: unknown, body: unknown, principal?: string): Promise<Answer> {
    const k = scopedKey(checkKey(key), principal);
    const req = parse(validateTransfer, body);
    if (req.from === req.to) throw new ValidationError(ErrorCode.badRequest, 'to must differ from from', 'to');
    const hash = requestHash('transfers.create', req);
    const stored = await this.runner.read((pool) => lookupKey(pool, k, 'transfers.create', hash));
    if (stored) return stored;
    const timeout = req.timeoutSeconds ?? this.config.transferTimeout;
    return this.runner.tx((client, now) => createTransfer(client, now, req, timeout, this.config.policy, k, hash));
  }

  getTransfer(id: unknown): Promise<Answer> {
    return getTransfer(this.runner.o.pool, ident(id));
  }

  cancelTransfer(id: unknown): Promise<Answer> {
    const i = ident(id);
    return this.runner.tx((client, now) => cancelTransfer(client, now, i));
  }
}
