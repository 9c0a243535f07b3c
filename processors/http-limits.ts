/** Limits of the HTTP API, shared by the server and its OpenAPI document. */

/** The largest request body taken, in bytes. */
export const BODY_LIMIT = 64 * 1024;
/** ms a request may take to arrive, headers and body: a 64 KiB body arrives in far less; a slow one would hold its connection. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** find-my-way's limit on one path parameter, in characters; identifiers have at most 64. */
export const MAX_PARAM_LENGTH = 100;
