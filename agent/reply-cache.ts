/**
 * Answered request ids, so a retry with the same id gets the same reply instead of a second
 * inference. Bounded by count, by bytes (a Pi has little memory and replies can be large) and by
 * age, oldest first; the clock is injected for tests.
 */
export interface CachedReply {
  topic: string;
  payload: Buffer;
}

export class ReplyCache {
  private readonly entries = new Map<string, { reply: CachedReply; at: number }>();
  private totalBytes = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
    private readonly maxBytes = Number.POSITIVE_INFINITY,
  ) {}

  get(key: string): CachedReply | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (this.now() - entry.at > this.ttlMs) {
      this.delete(key);
      return undefined;
    }
    return entry.reply;
  }

  set(key: string, reply: CachedReply): void {
    if (this.maxEntries === 0 || reply.payload.length > this.maxBytes) return;
    this.delete(key);
    const now = this.now();
    // Entries are in insertion order, so the expired ones are at the front.
    for (const [oldest, entry] of this.entries) {
      if (now - entry.at <= this.ttlMs) break;
      this.delete(oldest);
    }
    this.entries.set(key, { reply, at: now });
    this.totalBytes += reply.payload.length;
    while (this.entries.size > this.maxEntries || this.totalBytes > this.maxBytes) this.delete(this.entries.keys().next().value!);
  }

  private delete(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.totalBytes -= entry.reply.payload.length;
  }

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.totalBytes;
  }
}
