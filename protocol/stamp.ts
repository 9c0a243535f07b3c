import { STAMPED_EVENT_MAX_BYTES, type ParseResult } from './event.js';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;

interface Member {
  /** the member's bytes, `"key":value` (with any whitespace inside), without the comma around it */
  start: number;
  end: number;
  key: string;
}

/**
 * The top-level members of a JSON object text that JSON.parse has accepted, as byte spans. Bytes, not
 * decoded text: JSON's structure is ASCII and no byte of a multi-byte (or broken) UTF-8 sequence is below
 * 0x80, so the spans copy the device's bytes exactly; decoding and re-encoding could grow a broken sequence.
 */
function topLevelMembers(raw: Buffer): { open: number; close: number; members: Member[] } {
  const open = raw.indexOf(OPEN_OBJECT);
  const members: Member[] = [];
  let depth = 0;
  let start = -1; // of the current top-level member
  let keyEnd = -1;
  let close = raw.length;
  for (let i = open; i < raw.length; i++) {
    const b = raw[i] as number;
    if (b === QUOTE) {
      const from = i;
      for (i++; raw[i] !== QUOTE; i++) if (raw[i] === BACKSLASH) i++;
      // A string at depth 1 with no member started yet is a key.
      if (depth === 1 && start === -1) {
        start = from;
        keyEnd = i + 1;
      }
    } else if (b === OPEN_OBJECT || b === OPEN_ARRAY) depth++;
    else if (b === CLOSE_OBJECT || b === CLOSE_ARRAY) {
      if (--depth === 0) {
        close = i;
        if (start !== -1)
          members.push({ start, end: i, key: JSON.parse(raw.subarray(start, keyEnd).toString('utf8')) as string });
        break;
      }
    } else if (b === COMMA && depth === 1) {
      members.push({ start, end: i, key: JSON.parse(raw.subarray(start, keyEnd).toString('utf8')) as string });
      start = -1;
    }
  }
  return { open, close, members };
}

/**
 * The event's payload with `ts` set to the edge's receipt time (CONTRACT 3: when the device sent none, or one
 * too far ahead of the edge clock), so a replay hours later still carries it. Without a `ts` the stamp goes in
 * as text after the opening brace: the device's bytes stay as they were, and the payload grows by exactly
 * TS_STAMP_BYTES. With one, every top-level `ts` member is cut out and the stamp put first, the other members'
 * bytes copied as sent: never re-serialised, since numbers such as 1e20 grow when written out, so the result
 * always fits STAMPED_EVENT_MAX_BYTES and the rule holds for every event whatever its size or shape.
 * `raw` must be a JSON object text that JSON.parse accepted.
 */
export function stampReceiptTime(raw: Buffer, payload: Readonly<Record<string, unknown>>, receivedAt: number): Buffer {
  const stamp = `"ts":"${new Date(receivedAt).toISOString()}"`;
  const { open, close, members } = topLevelMembers(raw);
  if (payload.ts === undefined) {
    // A parsed event is a JSON object with members, so a comma follows the stamp.
    return Buffer.concat([raw.subarray(0, open + 1), Buffer.from(`${stamp},`), raw.subarray(open + 1)]);
  }
  const parts: Buffer[] = [raw.subarray(0, open + 1), Buffer.from(stamp)];
  for (const m of members) if (m.key !== 'ts') parts.push(Buffer.from(','), raw.subarray(m.start, m.end));
  parts.push(raw.subarray(close));
  return Buffer.concat(parts);
}

/**
 * What an edge forwards to central for a device's payload: a valid event whose time the edge did not trust
 * (absent, or more than MAX_CLOCK_AHEAD_MS ahead of its receipt) carries the edge's receipt time; anything
 * else goes as it came. The result of a valid event is at most STAMPED_EVENT_MAX_BYTES.
 */
export function forwardedPayload(raw: Buffer, parsed: ParseResult): Buffer {
  if (!parsed.ok) return raw;
  const e = parsed.event;
  if (e.payload.ts !== undefined && e.ts !== e.receivedAt) return raw;
  const stamped = stampReceiptTime(raw, e.payload, e.receivedAt);
  if (stamped.length > STAMPED_EVENT_MAX_BYTES)
    throw new Error(`a stamped event is ${stamped.length} bytes, over ${STAMPED_EVENT_MAX_BYTES}`); // cannot happen: see stampReceiptTime
  return stamped;
}
