/** Identifier rules of CONTRACT section 2 and 3; every part checks identifiers with these. */
export const IDENT_PATTERN = '^[A-Za-z0-9._-]{1,64}$';
export const EVENT_ID_PATTERN = '^[A-Za-z0-9._:-]{1,64}$';

const IDENT = new RegExp(IDENT_PATTERN);
const EVENT_ID = new RegExp(EVENT_ID_PATTERN);

export function isIdent(value: unknown): value is string {
  return typeof value === 'string' && IDENT.test(value);
}

export function isEventId(value: unknown): value is string {
  return typeof value === 'string' && EVENT_ID.test(value);
}
