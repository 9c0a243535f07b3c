import net from 'node:net';

// An MQTT 3.1.1 client of raw frames, for tests that assert on the fixed-header flags a broker sends
// (DUP, RETAIN) and on the exact order of frames, which MQTT.js does not expose or hides behind its store.

export interface RawPublish {
  topic: string;
  payload: string;
  qos: number;
  dup: boolean;
  retain: boolean;
  messageId: number | undefined;
}

export type RawPacket =
  | { type: 'connack'; sessionPresent: boolean; returnCode: number }
  | { type: 'suback'; messageId: number; granted: number[] }
  | ({ type: 'publish' } & RawPublish)
  | { type: 'other'; code: number };

const u16 = (n: number): Buffer => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const str = (s: string): Buffer => Buffer.concat([u16(Buffer.byteLength(s)), Buffer.from(s)]);

function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

const frame = (first: number, body: Buffer): Buffer =>
  Buffer.concat([Buffer.from([first]), remainingLength(body.length), body]);

export interface RawConnectOptions {
  clientId: string;
  clean: boolean;
  username?: string;
  password?: string;
  keepalive?: number; // s
  /** a will (QoS 1, not retained): seeing it tells a test the broker has noticed a dropped connection */
  will?: { topic: string; payload: string };
}

/** A connection that records every packet the broker sends, in order; `next` waits on an event, never on time. */
export class RawMqttClient {
  readonly packets: RawPacket[] = [];
  private buf = Buffer.alloc(0);
  private waiters: {
    pred: (p: RawPacket) => boolean;
    from: number;
    resolve: (p: RawPacket) => void;
    reject: (e: Error) => void;
    what: string;
  }[] = [];
  private closed = false;
  private nextId = 1;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w.reject(new Error(`connection closed while waiting for ${w.what}`));
    });
    socket.on('error', () => undefined); // a reset shows as 'close'
  }

  /** Connects and waits for CONNACK; fails on a refusal. */
  static async connect(url: string, o: RawConnectOptions): Promise<{ client: RawMqttClient; sessionPresent: boolean }> {
    const u = new URL(url);
    const socket = net.connect(Number(u.port), u.hostname);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const client = new RawMqttClient(socket);
    const flags =
      (o.username !== undefined ? 0x80 : 0) |
      (o.password !== undefined ? 0x40 : 0) |
      (o.will !== undefined ? 0x0c : 0) |
      (o.clean ? 0x02 : 0);
    const body = Buffer.concat([
      str('MQTT'),
      Buffer.from([4, flags]),
      u16(o.keepalive ?? 60),
      str(o.clientId),
      ...(o.will !== undefined ? [str(o.will.topic), str(o.will.payload)] : []),
      ...(o.username !== undefined ? [str(o.username)] : []),
      ...(o.password !== undefined ? [str(o.password)] : []),
    ]);
    socket.write(frame(0x10, body));
    const ack = await client.next((p) => p.type === 'connack', 'CONNACK');
    if (ack.type !== 'connack' || ack.returnCode !== 0) throw new Error(`connection refused: ${JSON.stringify(ack)}`);
    return { client, sessionPresent: ack.sessionPresent };
  }

  /** Sends one SUBSCRIBE with every filter (QoS 1) and waits for its SUBACK. */
  async subscribe(filters: string[]): Promise<number[]> {
    const id = this.nextId++;
    this.socket.write(
      frame(0x82, Buffer.concat([u16(id), ...filters.map((f) => Buffer.concat([str(f), Buffer.from([1])]))])),
    );
    const ack = await this.next((p) => p.type === 'suback' && p.messageId === id, `SUBACK ${id}`);
    return ack.type === 'suback' ? ack.granted : [];
  }

  /** Publishes at QoS 0 or 1 (no wait for PUBACK). */
  publish(topic: string, payload: string, qos: 0 | 1, retain = false): void {
    const id = qos > 0 ? this.nextId++ : undefined;
    const body = Buffer.concat([str(topic), id !== undefined ? u16(id) : Buffer.alloc(0), Buffer.from(payload)]);
    this.socket.write(frame(0x30 | (qos << 1) | (retain ? 1 : 0), body));
  }

  puback(messageId: number): void {
    this.socket.write(frame(0x40, u16(messageId)));
  }

  /** Waits for the first packet from index `from` on (default: the first ever received) that satisfies `pred`. */
  next(pred: (p: RawPacket) => boolean, what: string, from = 0): Promise<RawPacket> {
    const have = this.packets.slice(from).find(pred);
    if (have) return Promise.resolve(have);
    if (this.closed) return Promise.reject(new Error(`connection closed before ${what}`));
    return new Promise((resolve, reject) => this.waiters.push({ pred, from, resolve, reject, what }));
  }

  publishes(): RawPublish[] {
    return this.packets.filter((p): p is { type: 'publish' } & RawPublish => p.type === 'publish');
  }

  /** Closes with DISCONNECT. */
  async disconnect(): Promise<void> {
    if (this.closed) return;
    this.socket.end(Buffer.from([0xe0, 0]));
    await new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
  }

  /** Drops the connection without DISCONNECT (a lost link), and waits until it is closed. */
  async drop(): Promise<void> {
    if (this.closed) return;
    this.socket.destroy();
    await new Promise<void>((resolve) => (this.closed ? resolve() : this.socket.once('close', () => resolve())));
  }

  private onData(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.buf.length < 2) return;
      let len = 0;
      let mul = 1;
      let i = 1;
      for (;;) {
        const b = this.buf[i];
        if (b === undefined) return; // length not complete yet
        len += (b & 0x7f) * mul;
        mul *= 128;
        i++;
        if ((b & 0x80) === 0) break;
      }
      if (this.buf.length < i + len) return;
      const first = this.buf[0] as number;
      const body = this.buf.subarray(i, i + len);
      this.buf = this.buf.subarray(i + len);
      this.onPacket(parse(first, body));
    }
  }

  private onPacket(p: RawPacket): void {
    this.packets.push(p);
    const index = this.packets.length - 1;
    this.waiters = this.waiters.filter((w) => {
      if (index >= w.from && w.pred(p)) {
        w.resolve(p);
        return false;
      }
      return true;
    });
  }
}

function parse(first: number, body: Buffer): RawPacket {
  const type = first >> 4;
  if (type === 2)
    return { type: 'connack', sessionPresent: ((body[0] as number) & 1) === 1, returnCode: body[1] as number };
  if (type === 9) return { type: 'suback', messageId: body.readUInt16BE(0), granted: [...body.subarray(2)] };
  if (type === 3) {
    const qos = (first >> 1) & 3;
    const topicLength = body.readUInt16BE(0);
    const topic = body.subarray(2, 2 + topicLength).toString();
    let at = 2 + topicLength;
    let messageId: number | undefined;
    if (qos > 0) {
      messageId = body.readUInt16BE(at);
      at += 2;
    }
    return {
      type: 'publish',
      topic,
      payload: body.subarray(at).toString(),
      qos,
      dup: (first & 8) !== 0,
      retain: (first & 1) !== 0,
      messageId,
    };
  }
  return { type: 'other', code: first };
}
