/**
 * The persistent sessions (`clean=false`) of one broker, by client id: which device holds each, and since when
 * it is offline. Bounds them per device and ends the ones whose client never comes back, as Mosquitto's
 * `persistent_client_expiration` does. Pure bookkeeping: the broker ends a session in its store.
 */
export interface SessionEntry {
  readonly clientId: string;
  readonly device: string;
  /** the connection that holds it, or null while it is offline */
  holder: object | null;
  /** ms since the epoch when it went offline; 0 while online */
  offlineSince: number;
}

export type SessionAdmission = { ok: true; evict: string[] } | { ok: false };

export class SessionRegistry {
  private readonly byClientId = new Map<string, SessionEntry>();
  private readonly byDevice = new Map<string, Set<string>>();

  constructor(
    private readonly perDevice: number,
    private readonly expiryMs: number,
  ) {}

  get size(): number {
    return this.byClientId.size;
  }

  /**
   * A `clean=false` connection of `device` under `clientId` has authenticated. Its own session is resumed; a
   * new one beyond the device's bound takes the place of its sessions offline the longest (`evict`, for the
   * broker to end), or is refused when all of them are online.
   */
  admit(clientId: string, device: string, holder: object): SessionAdmission {
    const own = this.byClientId.get(clientId);
    if (own !== undefined) {
      own.holder = holder;
      own.offlineSince = 0;
      return { ok: true, evict: [] };
    }
    const ids = this.byDevice.get(device) ?? new Set<string>();
    const evict: string[] = [];
    if (ids.size >= this.perDevice) {
      const offline = [...ids]
        .map((id) => this.byClientId.get(id) as SessionEntry)
        .filter((e) => e.holder === null)
        .sort((a, b) => a.offlineSince - b.offlineSince);
      const needed = ids.size - this.perDevice + 1;
      if (offline.length < needed) return { ok: false };
      for (const e of offline.slice(0, needed)) {
        this.forget(e.clientId);
        evict.push(e.clientId);
      }
    }
    this.byClientId.set(clientId, { clientId, device, holder, offlineSince: 0 });
    this.byDevice.set(device, ids.add(clientId));
    return { ok: true, evict };
  }

  /** The connection holding `clientId`'s session closed at `now` (ms); a newer holder keeps it online. */
  offline(clientId: string, holder: object, now: number): void {
    const e = this.byClientId.get(clientId);
    if (e === undefined || e.holder !== holder) return;
    e.holder = null;
    e.offlineSince = now;
  }

  /** The session of `clientId` ended (a `clean=true` connection under its id discards it). */
  forget(clientId: string): SessionEntry | undefined {
    const e = this.byClientId.get(clientId);
    if (e === undefined) return undefined;
    this.byClientId.delete(clientId);
    const ids = this.byDevice.get(e.device);
    ids?.delete(clientId);
    if (ids?.size === 0) this.byDevice.delete(e.device);
    return e;
  }

  /** Forgets and returns the sessions offline for longer than the expiry at `now` (ms). */
  expire(now: number): SessionEntry[] {
    const expired: SessionEntry[] = [];
    for (const e of this.byClientId.values()) {
      if (e.holder === null && now - e.offlineSince > this.expiryMs) expired.push(e);
    }
    for (const e of expired) this.forget(e.clientId);
    return expired;
  }

  /** Sessions `device` holds. */
  count(device: string): number {
    return this.byDevice.get(device)?.size ?? 0;
  }
}
