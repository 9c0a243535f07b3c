/** Deterministic pseudo-random numbers (mulberry32), so a run can be replayed from its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Helpers over one random source. */
export class Dice {
  constructor(readonly next: () => number) {}

  /** true with probability p */
  chance(p: number): boolean {
    return p > 0 && this.next() < p;
  }

  /** an integer from min to max, both included */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[Math.floor(this.next() * items.length)] as T;
  }

  /** a key of `weights`, with probability proportional to its weight */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const entries = Object.entries(weights) as [K, number][];
    const total = entries.reduce((s, [, w]) => s + w, 0);
    let r = this.next() * total;
    for (const [k, w] of entries) {
      if (r < w) return k;
      r -= w;
    }
    // only floating-point rounding gets here: the last key with weight
    for (let i = entries.length - 1; i >= 0; i--)
      if ((entries[i] as [K, number])[1] > 0) return (entries[i] as [K, number])[0];
    throw new Error('every weight is 0');
  }
}
