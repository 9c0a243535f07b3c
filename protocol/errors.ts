/** One catalogue of error codes, shared by acks, dead letters and the HTTP API. */
export const ErrorCode = {
  invalidJson: 'invalid_json',
  payloadTooLarge: 'payload_too_large',
  unsupportedVersion: 'unsupported_version',
  schemaViolation: 'schema_violation',
  invalidTopic: 'invalid_topic',
  notFound: 'not_found',
  badRequest: 'bad_request',
  insufficientStock: 'insufficient_stock',
  /** an Idempotency-Key sent again with a different request */
  idempotencyKeyReused: 'idempotency_key_reused',
  /** an event id sent again by its device with different content: the copy is a dead letter, the first one stands */
  idReused: 'id_reused',
  /** the command does not fit the state of its target (a transfer already in transit…) */
  invalidState: 'invalid_state',
  /** the credential's kind may not make this request (MQTT requests) */
  notAuthorized: 'not_authorized',
  /** no valid API token (HTTP: `Authorization: Bearer <token>` missing or wrong) */
  unauthorized: 'unauthorized',
  /** HTTP: the path exists, the method does not (the answer's `Allow` lists the ones that do) */
  methodNotAllowed: 'method_not_allowed',
  /** HTTP: a body that is not `application/json` */
  unsupportedMediaType: 'unsupported_media_type',
  unavailable: 'unavailable',
  internal: 'internal',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The HTTP status of a refusal with this code (the API answers it; command metrics label it). */
export function httpStatusOf(code: ErrorCode): number {
  switch (code) {
    case ErrorCode.notFound:
      return 404;
    case ErrorCode.insufficientStock:
    case ErrorCode.invalidState:
      return 409;
    case ErrorCode.idempotencyKeyReused:
      return 422;
    case ErrorCode.unauthorized:
      return 401;
    case ErrorCode.notAuthorized:
      return 403;
    case ErrorCode.methodNotAllowed:
      return 405;
    case ErrorCode.unsupportedMediaType:
      return 415;
    case ErrorCode.unavailable:
      return 503;
    case ErrorCode.internal:
      return 500;
    default:
      return 400;
  }
}

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  /** The offending field, when one field is at fault (`qty`, `sku`…). */
  field?: string;
}

/** A refusal of input: carries a code from the catalogue and, where known, the field. */
export class ValidationError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'ValidationError';
  }

  toBody(): ErrorBody {
    return this.field === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, field: this.field };
  }
}
