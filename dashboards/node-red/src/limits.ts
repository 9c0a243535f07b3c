/**
 * The contract's identifier rules and limits (CONTRACT sections 3 and 6), as protocol/ defines them. This package
 * is published on its own, so it keeps a copy; test/dashboards/node-red.test.ts pins every value to protocol/
 * (and the quantity ranges to what central's event parser accepts), so the two cannot drift apart.
 */

export const IDENT_PATTERN = '^[A-Za-z0-9._-]{1,64}$';
export const EVENT_ID_PATTERN = '^[A-Za-z0-9._:-]{1,64}$';
export const EVENT_TYPES = ['received', 'shipped', 'returned', 'adjusted', 'counted', 'level'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** `qty` of an event, by type: [min, max]; `adjusted` is also never 0. */
export const EVENT_QTY: Readonly<Record<EventType, readonly [number, number]>> = {
  received: [1, 1_000_000],
  shipped: [1, 1_000_000],
  returned: [1, 1_000_000],
  adjusted: [-1_000_000, 1_000_000],
  counted: [0, 1_000_000_000],
  level: [0, 1_000_000_000],
};
/** characters of an event's `reason` */
export const REASON_MAX_LENGTH = 200;

/** `qty` of a reservation or a transfer: [min, max] */
export const COMMAND_QTY: readonly [number, number] = [1, 1_000_000];
/** s a reservation may be held at most (7 days) */
export const MAX_RESERVATION_TTL_S = 7 * 24 * 3600;
/** s a transfer may take at most before it is compensated (90 days) */
export const MAX_TRANSFER_TIMEOUT_S = 90 * 24 * 3600;
