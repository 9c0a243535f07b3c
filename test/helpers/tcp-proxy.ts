import net from 'node:net';

/**
 * A TCP proxy in front of a port, for link faults between real processes:
 * - `cut()`: destroys every connection (the peers see the close); `refuse` keeps new ones out meanwhile.
 * - `blackhole()`: a silent drop. Bytes stop flowing both ways and no FIN or RST reaches either peer:
 *   what a pulled cable or a dead NAT entry looks like. Only keep-alive can tell. A close by one peer is
 *   not passed on either. `restore()` delivers what was held (as TCP retransmission would) and then
 *   the closes that were held back.
 * - `slow(ms)`: every chunk is delayed by `ms`, order kept.
 * - `lossy(p)`: each chunk resets its connection (RST) with probability `p`. TCP repairs lost packets
 *   itself, so what an application sees of a lossy network is stalls and resets; this gives it resets.
 */
export class TcpProxy {
  private server: net.Server | null = null;
  private readonly pairs = new Set<Pair>();
  private holding = false;
  private refusing = false;
  private delayMs = 0;
  private resetChance = 0;
  private resetNext = false;
  private random: () => number = () => 1; // never drawn before lossy() gives the test's seeded one
  /** connections reset by `lossy` so far */
  resets = 0;
  /** connections accepted so far */
  accepted = 0;

  constructor(
    private readonly targetPort: number,
    private readonly targetHost = '127.0.0.1',
  ) {}

  async start(): Promise<number> {
    const server = net.createServer((socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const a = server.address();
    if (typeof a !== 'object' || a === null) throw new Error('proxy has no port');
    return a.port;
  }

  get port(): number {
    const a = this.server?.address();
    return typeof a === 'object' && a !== null ? a.port : 0;
  }

  get connections(): number {
    return this.pairs.size;
  }

  /** Closes every connection; with `refuse`, new connections are closed at once until `restore()`. */
  cut(o: { refuse?: boolean } = {}): void {
    this.refusing = o.refuse === true;
    for (const p of [...this.pairs]) p.destroy();
  }

  blackhole(): void {
    this.holding = true;
  }

  slow(ms: number): void {
    this.delayMs = ms;
  }

  /** Each chunk resets its connection with probability `p`; with `resetFirst`, the next chunk surely does. */
  lossy(p: number, random: () => number, o: { resetFirst?: boolean } = {}): void {
    this.resetChance = p;
    this.random = random;
    this.resetNext = o.resetFirst === true;
  }

  /** Back to a healthy link: no delay, no loss, no blackhole, new connections welcome. */
  restore(): void {
    this.refusing = false;
    this.delayMs = 0;
    this.resetChance = 0;
    this.resetNext = false;
    if (!this.holding) return;
    this.holding = false;
    for (const p of [...this.pairs]) p.release();
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private accept(client: net.Socket): void {
    if (this.refusing) return void client.destroy();
    this.accepted++;
    const upstream = net.connect(this.targetPort, this.targetHost);
    const pair = new Pair(client, upstream, this);
    this.pairs.add(pair);
    pair.onGone = () => this.pairs.delete(pair);
  }

  /** @internal what happens to one chunk */
  route(): 'hold' | 'reset' | { delay: number } {
    if (this.holding) return 'hold';
    if (this.resetNext) {
      this.resetNext = false;
      return 'reset';
    }
    if (this.resetChance > 0 && this.random() < this.resetChance) return 'reset';
    return { delay: this.delayMs };
  }

  /** @internal */
  get blackholed(): boolean {
    return this.holding;
  }

  /** @internal */
  countReset(): void {
    this.resets++;
  }
}

/** One proxied connection: a client socket and its upstream socket. */
class Pair {
  onGone: () => void = () => {};
  private held: { to: net.Socket; chunk: Buffer }[] = [];
  private heldClose = false;
  private gone = false;
  private lastAt = 0; // when the latest delayed chunk leaves, epoch ms (keeps order under `slow`)

  constructor(
    private readonly client: net.Socket,
    private readonly upstream: net.Socket,
    private readonly proxy: TcpProxy,
  ) {
    this.pipe(client, upstream);
    this.pipe(upstream, client);
  }

  private pipe(from: net.Socket, to: net.Socket): void {
    from.on('data', (chunk: Buffer) => {
      if (this.gone) return;
      const route = this.proxy.route();
      if (route === 'hold') return void this.held.push({ to, chunk });
      if (route === 'reset') {
        this.proxy.countReset();
        return this.destroy(true);
      }
      if (route.delay === 0 && this.lastAt <= Date.now()) return void to.write(chunk);
      this.lastAt = Math.max(this.lastAt, Date.now() + route.delay);
      setTimeout(() => !this.gone && to.write(chunk), this.lastAt - Date.now());
    });
    from.on('error', () => {});
    from.on('close', () => {
      // Under a blackhole no FIN or RST gets through: the other peer must find out by itself.
      if (this.proxy.blackholed) this.heldClose = true;
      else this.destroy();
    });
  }

  /** The blackhole lifted: deliver what was held, then any close that was held back. */
  release(): void {
    for (const h of this.held.splice(0)) if (!this.gone) h.to.write(h.chunk);
    if (this.heldClose) this.destroy();
  }

  destroy(reset = false): void {
    if (this.gone) return;
    this.gone = true;
    for (const s of [this.client, this.upstream]) {
      if (reset && typeof s.resetAndDestroy === 'function' && s.readyState !== 'opening') s.resetAndDestroy();
      else s.destroy();
    }
    this.onGone();
  }
}
