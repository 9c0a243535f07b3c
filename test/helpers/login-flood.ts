import net from 'node:net';

/** One MQTT 3.1.1 CONNECT, its answer: the CONNACK return code (null: the connection closed or timed out first) and how long it took. */
export interface LoginResult {
  rc: number | null;
  ms: number;
}

export interface Login {
  port: number;
  host?: string;
  /** the source address (any of 127.0.0.0/8 reaches a broker on 127.0.0.1): one address per warehouse NAT or attacker */
  localAddress?: string;
  clientId: string;
  username?: string;
  password?: string;
  clean?: boolean;
}

const u16 = (n: number): Buffer => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const str = (s: string): Buffer => Buffer.concat([u16(Buffer.byteLength(s)), Buffer.from(s)]);

/** A CONNECT frame built by hand: a flood of them costs the test almost nothing. */
export function connectFrame(l: Login): Buffer {
  const flags =
    (l.username !== undefined ? 0x80 : 0) | (l.password !== undefined ? 0x40 : 0) | (l.clean === false ? 0 : 0x02);
  const body = Buffer.concat([
    str('MQTT'),
    Buffer.from([4, flags]),
    u16(30), // keep-alive, s
    str(l.clientId),
    ...(l.username !== undefined ? [str(l.username)] : []),
    ...(l.password !== undefined ? [str(l.password)] : []),
  ]);
  const length: number[] = [];
  for (let n = body.length; ; ) {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    length.push(byte);
    if (n === 0) break;
  }
  return Buffer.concat([Buffer.from([0x10, ...length]), body]);
}

/** Sends a CONNECT and closes the connection at once, without waiting for the answer: a client that gave up. */
export function loginAndLeave(l: Login): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({
      port: l.port,
      host: l.host ?? '127.0.0.1',
      ...(l.localAddress !== undefined && { localAddress: l.localAddress }),
    });
    socket.on('connect', () => socket.end(connectFrame(l)));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve());
  });
}

/** Connects, sends CONNECT and resolves with the CONNACK's return code and the time it took; the socket is then closed. */
export function login(l: Login, timeoutMs = 60_000): Promise<LoginResult> {
  const began = performance.now();
  return new Promise((resolve) => {
    const socket = net.connect({
      port: l.port,
      host: l.host ?? '127.0.0.1',
      ...(l.localAddress !== undefined && { localAddress: l.localAddress }),
    });
    let settled = false;
    const finish = (rc: number | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ rc, ms: performance.now() - began });
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    let buf = Buffer.alloc(0);
    socket.on('connect', () => socket.write(connectFrame(l)));
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length >= 4 && buf[0] === 0x20) finish(buf[3] as number);
    });
    socket.on('error', () => finish(null));
    socket.on('close', () => finish(null));
  });
}

/** A flood's `count` for one that lasts until `stop()`: a test measuring logins "during the flood" cannot see it end first. */
export const UNTIL_STOPPED = Number.POSITIVE_INFINITY;

export interface Flood {
  /** logins answered so far, by return code ('none': closed without CONNACK) */
  readonly answers: Map<number | 'none', number>;
  readonly sent: number;
  /** resolves when every login of the flood has its answer */
  readonly done: Promise<void>;
  /** sends no more logins; `done` still waits for those under way */
  stop(): void;
}

/**
 * `count` logins from each address (`UNTIL_STOPPED`: until `stop()`), at most `concurrency` of them under way per
 * address at once, each made by `make(address, i)` — an attacker's bogus logins.
 */
export function flood(
  port: number,
  addresses: string[],
  count: number,
  concurrency: number,
  make: (address: string, i: number) => Omit<Login, 'port' | 'localAddress'>,
): Flood {
  const answers = new Map<number | 'none', number>();
  let stopped = false;
  let sent = 0;
  const worker = async (address: string, next: () => number | null) => {
    for (let i = next(); i !== null && !stopped; i = next()) {
      sent++;
      const { rc } = await login({ port, localAddress: address, ...make(address, i) });
      answers.set(rc ?? 'none', (answers.get(rc ?? 'none') ?? 0) + 1);
    }
  };
  const done = Promise.all(
    addresses.map((address) => {
      let i = 0;
      const next = () => (i < count ? i++ : null);
      return Promise.all(Array.from({ length: concurrency }, () => worker(address, next)));
    }),
  ).then(() => undefined);
  return {
    answers,
    get sent() {
      return sent;
    },
    done,
    stop: () => {
      stopped = true;
    },
  };
}

/** The p-th percentile (0–100) of `values`, nearest rank. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}

/** An MQTT 3.1.1 packet as read off the wire: its type (high nibble of the first byte), flags and body. */
export interface RawPacket {
  type: number;
  flags: number;
  body: Buffer;
}

/** A SUBSCRIBE of many filters in one packet, built by hand. */
export function subscribeFrame(messageId: number, filters: string[], qos: 0 | 1 | 2): Buffer {
  const body = Buffer.concat([u16(messageId), ...filters.flatMap((f) => [str(f), Buffer.from([qos])])]);
  return Buffer.concat([Buffer.from([0x82]), remainingLength(body.length), body]);
}

/** A PUBLISH built by hand, at any QoS (a QoS 2 one whose PUBREC this client will never answer with PUBREL). */
export function publishFrame(topic: string, payload: Buffer, qos: 0 | 1 | 2, messageId = 1): Buffer {
  const body = Buffer.concat([str(topic), qos > 0 ? u16(messageId) : Buffer.alloc(0), payload]);
  return Buffer.concat([Buffer.from([0x30 | (qos << 1)]), remainingLength(body.length), body]);
}

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

/**
 * A client that writes frames built by hand and reads the broker's packets: what an attacker's script does,
 * at a fraction of MQTT.js's cost, and free to break the protocol (no PUBREL, thousands of filters at once).
 */
export class RawMqtt {
  private buf: Buffer = Buffer.alloc(0);
  private readonly waiters: Array<{ pred: (p: RawPacket) => boolean; resolve: (p: RawPacket) => void }> = [];
  readonly received: RawPacket[] = [];
  readonly closed: Promise<void>;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.read(chunk));
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  /** Connects and logs in; rejects when the CONNACK is not 0 (its return code in the message). */
  static async open(l: Login): Promise<RawMqtt> {
    const socket = net.connect({
      port: l.port,
      host: l.host ?? '127.0.0.1',
      ...(l.localAddress !== undefined && { localAddress: l.localAddress }),
    });
    const client = new RawMqtt(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    socket.write(connectFrame(l));
    const connack = await Promise.race([client.next((p) => p.type === 2), client.closed.then(() => null)]);
    if (connack === null || connack.body[1] !== 0) {
      socket.destroy();
      throw new Error(`CONNACK ${connack === null ? 'none (closed)' : String(connack.body[1])}`);
    }
    return client;
  }

  write(frame: Buffer): void {
    this.socket.write(frame);
  }

  /** Resolves with the next packet (already received or to come) that `pred` accepts. */
  next(pred: (p: RawPacket) => boolean): Promise<RawPacket> {
    const i = this.received.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.received.splice(i, 1)[0] as RawPacket);
    return new Promise((resolve) => this.waiters.push({ pred, resolve }));
  }

  /** Subscribes `filters` in one packet; the SUBACK's return codes. */
  async subscribe(messageId: number, filters: string[], qos: 0 | 1 = 1): Promise<number[]> {
    this.write(subscribeFrame(messageId, filters, qos));
    const suback = await this.next((p) => p.type === 9 && p.body.readUInt16BE(0) === messageId);
    return [...suback.body.subarray(2)];
  }

  /** DISCONNECT, then close: a clean=false session stays with the broker. */
  async disconnect(): Promise<void> {
    this.socket.end(Buffer.from([0xe0, 0x00]));
    await this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private read(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      let length = 0;
      let multiplier = 1;
      let i = 1;
      for (; i < this.buf.length && i <= 4; i++) {
        const byte = this.buf[i] as number;
        length += (byte & 0x7f) * multiplier;
        multiplier *= 128;
        if ((byte & 0x80) === 0) break;
      }
      if (i >= this.buf.length || this.buf.length < i + 1 + length) return;
      const first = this.buf[0] as number;
      const packet = { type: first >> 4, flags: first & 0x0f, body: this.buf.subarray(i + 1, i + 1 + length) };
      this.buf = this.buf.subarray(i + 1 + length);
      const w = this.waiters.findIndex((x) => x.pred(packet));
      if (w >= 0) this.waiters.splice(w, 1)[0]?.resolve(packet);
      else if (this.received.length < 10_000) this.received.push(packet);
    }
  }
}
