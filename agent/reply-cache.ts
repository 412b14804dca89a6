/**
 * Answered request ids, so a retry with the same id gets the same reply instead of a second
 * inference. Bounded by count (oldest first) and by age; the clock is injected for tests.
 */
export interface CachedReply {
  topic: string;
  payload: Buffer;
}

export class ReplyCache {
  private readonly entries = new Map<string, { reply: CachedReply; at: number }>();

  constructor(
    private readonly maxEntries: number,
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get(key: string): CachedReply | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (this.now() - entry.at > this.ttlMs) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.reply;
  }

  set(key: string, reply: CachedReply): void {
    if (this.maxEntries === 0) return;
    this.entries.delete(key);
    const now = this.now();
    // Entries are in insertion order, so the expired ones are at the front.
    for (const [oldest, entry] of this.entries) {
      if (now - entry.at <= this.ttlMs) break;
      this.entries.delete(oldest);
    }
    this.entries.set(key, { reply, at: now });
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  get size(): number {
    return this.entries.size;
  }
}
