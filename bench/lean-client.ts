import net from 'node:net';

/**
 * A lean MQTT 3.1.1 client for load generation: CONNECT, SUBSCRIBE, QoS-1 PUBLISH out, PUBACK for
 * QoS-1 messages in. It speaks the same protocol as MQTT.js does on the wire, with a fraction of its
 * CPU cost, so that on a 2-core machine the load generator takes less of the CPU the system under
 * test needs. Writes of one turn of the event loop leave in one syscall (cork/uncork).
 */

const CONNECT = 1;
const CONNACK = 2;
const PUBLISH = 3;
const PUBACK = 4;
const SUBSCRIBE = 8;
const SUBACK = 9;

function remainingLength(n: number): Buffer {
  const bytes: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    bytes.push(b);
  } while (n > 0);
  return Buffer.from(bytes);
}

const str = (s: string) => {
  const b = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
};

function packet(type: number, flags: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([(type << 4) | flags]), remainingLength(body.length), body]);
}

export interface LeanOptions {
  host: string;
  port: number;
  clientId: string;
  username?: string;
  password?: string;
  keepalive?: number;
}

export class LeanClient {
  private socket!: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private nextId = 1;
  private corked = false;
  private waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>(); // SUBACK by packet id
  private onConnack: ((code: number) => void) | null = null;
  /** called with topic and payload for every PUBLISH received (already PUBACKed when QoS 1) */
  onMessage: (topic: string, payload: Buffer) => void = () => {};
  /** called with the packet id when the broker acknowledges one of our QoS-1 publishes */
  onPuback: (packetId: number) => void = () => {};
  onClose: () => void = () => {};

  constructor(private readonly o: LeanOptions) {}

  connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket = net.connect(this.o.port, this.o.host);
      this.socket.setNoDelay(true);
      this.socket.on('error', reject); // kept: after the CONNACK a reset (a broker stopping) must not throw
      this.socket.on('close', () => this.onClose());
      this.socket.on('data', (d: Buffer) => this.read(d));
      this.onConnack = (code) => (code === 0 ? resolve() : reject(new Error(`CONNACK return code ${code}`)));
      this.socket.once('connect', () => {
        const flags = 0x02 | (this.o.username !== undefined ? 0x80 : 0) | (this.o.password !== undefined ? 0x40 : 0); // clean session
        const keepalive = Buffer.alloc(2);
        keepalive.writeUInt16BE(this.o.keepalive ?? 30);
        const parts = [str('MQTT'), Buffer.from([4, flags]), keepalive, str(this.o.clientId)];
        if (this.o.username !== undefined) parts.push(str(this.o.username));
        if (this.o.password !== undefined) parts.push(str(this.o.password));
        this.socket.write(packet(CONNECT, 0, Buffer.concat(parts)));
      });
    });
  }

  subscribe(filter: string, qos: 0 | 1): Promise<void> {
    const id = this.packetId();
    const head = Buffer.alloc(2);
    head.writeUInt16BE(id);
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.write(packet(SUBSCRIBE, 2, Buffer.concat([head, str(filter), Buffer.from([qos])])));
    });
  }

  /** QoS-1 publish; returns its packet id. At most 65,535 may be unacknowledged (the packet id space). */
  publish(topic: string, payload: string | Buffer): number {
    const t = Buffer.from(topic, 'utf8');
    const p = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
    const len = 2 + t.length + 2 + p.length;
    const rl = remainingLength(len);
    const out = Buffer.allocUnsafe(1 + rl.length + len);
    out[0] = (PUBLISH << 4) | 0x02;
    rl.copy(out, 1);
    let o = 1 + rl.length;
    o = out.writeUInt16BE(t.length, o);
    o += t.copy(out, o);
    const id = this.packetId();
    o = out.writeUInt16BE(id, o);
    p.copy(out, o);
    this.write(out);
    return id;
  }

  end(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.once('close', () => resolve());
      this.socket.end(Buffer.from([0xe0, 0])); // DISCONNECT
    });
  }

  private packetId(): number {
    const id = this.nextId;
    this.nextId = id === 65535 ? 1 : id + 1;
    return id;
  }

  private write(b: Buffer): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(b);
  }

  private read(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    let off = 0;
    for (;;) {
      if (this.buf.length - off < 2) break;
      let len = 0;
      let mul = 1;
      let i = off + 1;
      let complete = false;
      for (; i < this.buf.length && i < off + 5; i++) {
        const b = this.buf[i] as number;
        len += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) {
          complete = true;
          i++;
          break;
        }
      }
      if (!complete || this.buf.length - i < len) break;
      this.handle((this.buf[off] as number) >> 4, (this.buf[off] as number) & 0x0f, this.buf.subarray(i, i + len));
      off = i + len;
    }
    this.buf = off === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(off);
  }

  private handle(type: number, flags: number, body: Buffer): void {
    switch (type) {
      case CONNACK:
        this.onConnack?.(body[1] as number);
        return;
      case SUBACK: {
        const id = body.readUInt16BE(0);
        const w = this.waiting.get(id);
        this.waiting.delete(id);
        if ((body[2] as number) === 0x80) w?.reject(new Error('subscription refused'));
        else w?.resolve();
        return;
      }
      case PUBACK:
        this.onPuback(body.readUInt16BE(0));
        return;
      case PUBLISH: {
        const qos = (flags >> 1) & 3;
        const tlen = body.readUInt16BE(0);
        const topic = body.toString('utf8', 2, 2 + tlen);
        let o = 2 + tlen;
        if (qos > 0) {
          const ack = Buffer.from([PUBACK << 4, 2, body[o] as number, body[o + 1] as number]);
          o += 2;
          this.write(ack);
        }
        this.onMessage(topic, body.subarray(o));
        return;
      }
      default:
        return;
    }
  }
}
