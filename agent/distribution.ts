/**
 * Models across the mesh, on one agent: it mirrors the mesh catalogue (retained, one message per
 * model), fetches the models it should hold and lacks (models/transfer.ts Fetch, into the
 * content-addressed store), loads them once their sha256 matched, serves the chunks of what it
 * holds to the boards that ask, and unloads what the catalogue retracts.
 *
 * Who holds a file: every online board whose status lists the model (its name and sha256), and the
 * entry's origin (the board or app that published it). Which boards should hold a model is one
 * decision, `shouldHold` (today: every board with room for it on its disk; placement by memory
 * and speed plugs in there).
 *
 * The mirror is what the next broker seeds after a failover (retained()), as with the roster.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import { createHash, type KeyObject } from 'node:crypto';
import type { Identity, Verdict } from '../broker/acl.js';
import { decodeCatalog, encodeChunkRequest, verifyTombstone, type CatalogEntry } from '../mesh/catalog.js';
import { asKizunaError } from '../mesh/errors.js';
import type { MessageHandler } from '../mesh/mqtt.js';
import type { Roster } from '../mesh/roster.js';
import { parseBlobChunkTopic, parseBlobRequestTopic, parseCatalogTopic, topics } from '../mesh/topics.js';
import { Cas } from '../models/cas.js';
import { parseManifest } from '../models/manifest.js';
import { verifyManifest } from '../models/signature.js';
import type { ModelStore } from '../models/store.js';
import { ChunkServer, Fetch, type FetchOptions } from '../models/transfer.js';
import type { Logger } from './log.js';

/** The store of a board: `<dataDir>/store`. */
export const storeDir = (dataDir: string): string => path.join(dataDir, 'store');

/** Space kept free on a board's disk beyond a model it fetches. */
const RESERVE_BYTES = 64 * 1024 * 1024;
/** Progress goes into the status at most this often. */
const PROGRESS_EVERY_MS = 1000;

/** What distribution needs of the MQTT connection (the agent's Transport). */
export interface DistributionBus {
  subscribe(topic: string | string[], qos?: 0 | 1): Promise<void>;
  publish(topic: string, payload: Buffer | string, options?: { qos?: 0 | 1; retain?: boolean }): Promise<void>;
  onMessage(handler: MessageHandler): () => void;
}

export interface Transfer {
  name: string;
  sha256: string;
  done: number;
  total: number;
}

export interface DistributionOptions {
  mesh: string;
  node: string;
  cas: Cas;
  store: ModelStore;
  bus: DistributionBus;
  roster: Roster;
  log: Logger;
  /** The mesh's public key: with it, only entries (and tombstones) the mesh key signed count. */
  publicKey?: KeyObject;
  fetch?: FetchOptions;
  /** The agent's status should be published again (models or transfers changed). */
  statusChanged: () => void;
  /** Whether this board should hold `entry` (placement's seam); default: room on the disk. */
  shouldHold?: (entry: CatalogEntry) => Promise<boolean>;
}

/** One key per file and chunk list: an entry that failed is tried again only as another entry. */
const failKey = (e: CatalogEntry): string => createHash('sha256').update(`${e.manifest.sha256}/${e.chunkSize}/${e.chunks.join(',')}/${e.manifest.version}`).digest('hex');

/** Room on the store's disk for the file, and some to spare. */
export async function hasRoom(cas: Cas, entry: CatalogEntry): Promise<boolean> {
  const s = await fs.statfs(cas.root);
  return s.bavail * s.bsize >= entry.size + RESERVE_BYTES;
}

/**
 * Events: 'loaded' ({name, sha256, fetched}), 'progress' ({name, sha256, done, total, have, of}),
 * 'resumed' ({name, sha256, have, of}), 'bad-chunk' ({name, holder, index, why}), 'avoid'
 * ({holder, why}), 'served' ({requester, sha256, index, bytes}), 'retracted' ({name}),
 * 'refused' ({name, why}), 'failed' ({name, sha256, error}).
 */
export class Distribution extends EventEmitter {
  /** The catalogue as this board accepted it: model name -> entry and the message as published. */
  private readonly entries = new Map<string, { entry: CatalogEntry; payload: Buffer }>();
  /** Signed tombstones, kept retained like entries (so a board that was away learns of them). */
  private readonly tombstones = new Map<string, Buffer>();
  private readonly fetches = new Map<string, { fetch: Fetch; name: string; started: number }>();
  /** Files this board holds verified in its store (it serves their chunks). */
  private readonly held = new Set<string>();
  /**
   * Entries (a file and its chunk list) whose chunks made another file, or whose model cannot be
   * loaded here: not fetched again until the catalogue publishes another entry (or a restart).
   */
  private readonly failed = new Set<string>();
  private readonly server: ChunkServer;
  private queue: Promise<void> = Promise.resolve();
  private offMessage?: () => void;
  private progressTimer?: NodeJS.Timeout;
  private stopped = false;
  private readonly onRoster = () => {
    for (const f of this.fetches.values()) f.fetch.holdersChanged();
  };

  constructor(private readonly o: DistributionOptions) {
    super();
    this.server = new ChunkServer(
      (sha) => {
        const entry = this.held.has(sha) ? [...this.entries.values()].find((e) => e.entry.manifest.sha256 === sha)?.entry : undefined;
        return entry && { plan: { sha256: sha, size: entry.size, chunkSize: entry.chunkSize, chunks: entry.chunks }, read: (offset, length) => o.cas.readRange(sha, offset, length) };
      },
      (requester, sha, index, bytes) => o.bus.publish(topics.blobChunk(o.mesh, requester, o.node, sha, index), bytes, { qos: 1 }),
    );
    this.server.on('served', (s) => this.emit('served', s));
    this.server.on('refused', ({ requester, why }) => o.log.debug(`chunk request from ${requester} refused: ${why}`));
    this.server.on('corrupt', ({ sha256 }) => void this.serialize(() => this.corrupt(sha256)));
  }

  async start(): Promise<void> {
    const { o } = this;
    for (const m of await o.cas.models()) if (await o.cas.hasBlob(m.manifest.sha256)) this.held.add(m.manifest.sha256);
    o.roster.on('change', this.onRoster);
    this.offMessage = o.bus.onMessage((topic, payload) => this.onMessage(topic, payload));
    await o.bus.subscribe([topics.allCatalog(o.mesh), topics.blobRequestsTo(o.mesh, o.node), topics.blobChunksTo(o.mesh, o.node)], 1);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.offMessage?.();
    this.o.roster.off('change', this.onRoster);
    this.server.stop();
    if (this.progressTimer) clearTimeout(this.progressTimer);
    await this.queue;
    // Chunks on disk stay there: the next start resumes from them.
    await Promise.all([...this.fetches.values()].map((f) => f.fetch.stop()));
    this.fetches.clear();
  }

  /** The catalogue messages to keep retained (a new broker seeds them). */
  retained(): { topic: string; payload: Buffer }[] {
    return [
      ...[...this.entries].map(([name, e]) => ({ topic: topics.catalog(this.o.mesh, name), payload: e.payload })),
      ...[...this.tombstones].map(([name, payload]) => ({ topic: topics.catalog(this.o.mesh, name), payload })),
    ];
  }

  /** The catalogue as this board holds it. */
  catalog(): CatalogEntry[] {
    return [...this.entries.values()].map((e) => e.entry);
  }

  /** The sha256 of the entry the catalogue has for `name`, if any. */
  current(name: string): string | undefined {
    return this.entries.get(name)?.entry.manifest.sha256;
  }

  /** The files the catalogue lists and those being fetched: never collected as unused. */
  private wanted(): Set<string> {
    return new Set([...[...this.entries.values()].map((e) => e.entry.manifest.sha256), ...this.fetches.keys()]);
  }

  /** Transfers in progress, for the status. */
  transfers(): Transfer[] {
    return [...this.fetches.entries()].map(([sha256, f]) => ({ name: f.name, sha256, done: f.fetch.partial.bytesDone, total: f.fetch.plan.size }));
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (this.stopped) return;
    const { mesh, node } = this.o;
    const cat = parseCatalogTopic(topic);
    if (cat) {
      if (cat.mesh === mesh) void this.serialize(() => this.onCatalog(cat.model, payload));
      return;
    }
    const req = parseBlobRequestTopic(topic);
    if (req) {
      if (req.holder === node && topic.startsWith(topics.blobRequestsTo(mesh, node).slice(0, -3))) this.server.request(req.requester, req.sha256, payload);
      return;
    }
    const chunk = parseBlobChunkTopic(topic);
    if (chunk && chunk.requester === node && topic.startsWith(topics.blobChunksTo(mesh, node).slice(0, -5))) {
      this.fetches.get(chunk.sha256)?.fetch.onChunk(chunk.holder, chunk.index, payload);
    }
  }

  /** Catalogue changes are handled one at a time, in order. */
  private serialize(step: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(step).catch((err: unknown) => this.o.log.error(`model distribution: ${asKizunaError(err).message}`));
    return this.queue;
  }

  private async onCatalog(name: string, payload: Buffer): Promise<void> {
    const { publicKey } = this.o;
    let msg;
    try {
      msg = decodeCatalog(name, payload);
    } catch (err) {
      return this.refuse(name, asKizunaError(err).message);
    }
    if (msg.kind === 'retract') {
      if (publicKey && !(msg.tombstone && verifyTombstone(msg.tombstone, publicKey))) return this.refuse(name, 'a retraction not signed by the mesh key');
      this.entries.delete(name);
      if (msg.tombstone) this.tombstones.set(name, payload);
      else this.tombstones.delete(name);
      await this.retract(name);
      return;
    }
    const { entry } = msg;
    try {
      parseManifest(entry.manifest, `catalogue entry ${name}`);
    } catch (err) {
      return this.refuse(name, asKizunaError(err).message);
    }
    if (publicKey && !(entry.sig && verifyManifest(entry.manifest, entry.sig, publicKey))) return this.refuse(name, 'its manifest is not signed by the mesh key');
    const before = this.entries.get(name)?.entry.manifest.sha256;
    this.entries.set(name, { entry, payload });
    this.tombstones.delete(name);
    if (before && before !== entry.manifest.sha256) await this.cancelFetchesOf(name, entry.manifest.sha256);
    await this.ensure(entry);
  }

  private refuse(name: string, why: string): void {
    this.o.log.warn(`catalogue entry ${name} ignored: ${why}`);
    this.emit('refused', { name, why });
  }

  /** Holds `entry`'s model: loaded from the store, or fetched first. */
  private async ensure(entry: CatalogEntry): Promise<void> {
    const { store, cas, log } = this.o;
    const { name, version, sha256 } = entry.manifest;
    const loaded = store.get(name);
    if (loaded && loaded.source !== 'store') {
      if (loaded.manifest.sha256 !== sha256) log.warn(`catalogue model ${name}@${version} not loaded: a model of that name is configured on this board (its folder wins)`);
      return;
    }
    if (loaded && loaded.manifest.sha256 === sha256 && loaded.manifest.version === version) return;
    if (this.failed.has(failKey(entry))) return;
    if (await cas.hasBlob(sha256)) return this.install(entry, false);
    const running = this.fetches.get(sha256);
    if (running) return void running.fetch.holdersChanged();
    const hold = await (this.o.shouldHold ?? ((e) => hasRoom(cas, e)))(entry).catch(() => false);
    if (!hold) return void log.info(`catalogue model ${name}@${version} not fetched: not for this board (no room)`);
    await this.startFetch(entry);
  }

  private async startFetch(entry: CatalogEntry): Promise<void> {
    const { cas, log, bus, mesh, node } = this.o;
    const { name, sha256 } = entry.manifest;
    const partial = await cas.partial({ sha256, size: entry.size, chunkSize: entry.chunkSize, chunks: entry.chunks });
    const of = entry.chunks.length;
    if (partial.have.size) {
      log.info(`resuming ${name} (${sha256.slice(0, 12)}): ${partial.have.size} of ${of} chunks already on disk`);
      this.emit('resumed', { name, sha256, have: partial.have.size, of });
    }
    const fetch = new Fetch(
      partial,
      {
        holders: () => this.holders(entry),
        request: (holder, chunks) => void bus.publish(topics.blobRequest(mesh, holder, node, sha256), encodeChunkRequest(chunks), { qos: 1 }).catch(() => undefined),
      },
      this.o.fetch,
    );
    const started = Date.now();
    this.fetches.set(sha256, { fetch, name, started });
    let quarter = Math.floor((4 * partial.bytesDone) / entry.size);
    fetch.on('progress', (p: { done: number; total: number; have: number; of: number }) => {
      this.emit('progress', { name, sha256, ...p });
      this.progressSoon();
      const q = Math.floor((4 * p.done) / p.total);
      if (q > quarter && q < 4) log.info(`${name}: ${q * 25}% (${(p.done / 1e6).toFixed(1)} of ${(p.total / 1e6).toFixed(1)} MB, ${p.have} of ${p.of} chunks)`);
      quarter = Math.max(quarter, q);
    });
    fetch.on('bad-chunk', (b: { holder: string; index: number; why: string }) => {
      log.warn(`${name}: chunk ${b.index} from ${b.holder} refused (${b.why}); asking again`);
      this.emit('bad-chunk', { name, ...b });
    });
    fetch.on('avoid', (a: { holder: string; why: string }) => {
      log.warn(`${name}: not asking ${a.holder} for a while (${a.why})`);
      this.emit('avoid', a);
    });
    fetch.on('stalled', () => log.info(`${name}: no board holds ${sha256.slice(0, 12)} now; waiting for one`));
    fetch.on('done', () => {
      this.fetches.delete(sha256);
      const s = (Date.now() - started) / 1000;
      log.info(`fetched ${name} (${(entry.size / 1e6).toFixed(1)} MB, ${fetch.received} chunks) in ${s.toFixed(2)} s, sha256 verified`);
      void this.serialize(async () => {
        if (this.entries.get(name)?.entry.manifest.sha256 === sha256) await this.install(this.entries.get(name)!.entry, true);
        else await cas.collect(this.wanted());
      });
    });
    fetch.on('failed', (err: Error) => {
      this.fetches.delete(sha256);
      this.failed.add(failKey(entry));
      log.error(`${name}: transfer failed: ${err.message}`);
      this.emit('failed', { name, sha256, error: err });
      this.o.statusChanged();
    });
    log.info(`fetching ${name}@${entry.manifest.version} (${(entry.size / 1e6).toFixed(1)} MB, ${of} chunks) from the mesh`);
    fetch.start();
    this.o.statusChanged();
  }

  /** The boards that hold `entry`'s model (by their status), and its origin while it is around. */
  private holders(entry: CatalogEntry): string[] {
    const { roster, node } = this.o;
    const { name, sha256: sha } = entry.manifest;
    // By name and file: a board serving the same bytes under another name (a model folder) has no copy to send.
    const out = roster.online().filter((s) => s.node !== node && !s.draining && s.models?.some((m) => m.name === name && m.sha256 === sha)).map((s) => s.node);
    const origin = entry.origin;
    // An app (no status) or a board that is online: it published the entry and serves it.
    if (origin !== node && !out.includes(origin) && (roster.get(origin)?.online ?? true)) out.push(origin);
    return out.sort();
  }

  /** The file is in the store, verified: its manifest goes beside it and the model is loaded. */
  private async install(entry: CatalogEntry, fetched: boolean): Promise<void> {
    const { cas, store, log } = this.o;
    const { name, version, sha256 } = entry.manifest;
    this.held.add(sha256);
    try {
      const stored = await cas.putManifest({ manifest: entry.manifest, ...(entry.sig ? { sig: entry.sig } : {}), ...(entry.labels !== undefined ? { labels: entry.labels } : {}) });
      const model = await store.loadStored(cas, stored);
      for (const old of await cas.models()) if (old.manifest.name === name && old.manifest.version !== version) await cas.remove(name, old.manifest.version, this.wanted());
      await cas.collect(this.wanted());
      log.info(`model ${name}@${version} loaded from the ${fetched ? 'mesh' : 'store'} (${(model.bytes / 1024).toFixed(0)} KiB)`);
      this.emit('loaded', { name, sha256, fetched });
    } catch (err) {
      const e = asKizunaError(err);
      this.failed.add(failKey(entry));
      log.error(`${e.code}: catalogue model ${name}@${version}: ${e.message}`);
      this.emit('failed', { name, sha256, error: e });
    }
    this.o.statusChanged();
  }

  private async retract(name: string): Promise<void> {
    const { store, cas, log } = this.o;
    await this.cancelFetchesOf(name);
    const loaded = store.get(name);
    if (loaded?.source === 'store') await store.unload(name);
    const removed = await cas.remove(name, undefined, this.wanted());
    for (const m of removed) this.held.delete(m.manifest.sha256);
    for (const sha of [...this.held]) if (!(await cas.hasBlob(sha))) this.held.delete(sha);
    if (removed.length || loaded?.source === 'store') log.info(`model ${name} retracted from the mesh catalogue: unloaded and removed from the store`);
    this.emit('retracted', { name });
    this.o.statusChanged();
  }

  /** Stops (and deletes) the transfers of `name`, but the one of `keep`. */
  private async cancelFetchesOf(name: string, keep?: string): Promise<void> {
    for (const [sha, f] of [...this.fetches]) {
      if (f.name !== name || sha === keep) continue;
      this.fetches.delete(sha);
      await f.fetch.cancel();
    }
  }

  /** A chunk this board read no longer matches: the file is quarantined, the model unloaded and fetched again. */
  private async corrupt(sha256: string): Promise<void> {
    const { store, cas, log } = this.o;
    if (!this.held.delete(sha256)) return;
    const where = await cas.quarantine(sha256);
    log.error(`KZ_ERR_MODEL_INTEGRITY: the stored file ${sha256} no longer matches its chunk hashes: moved to ${where}`);
    for (const m of store.list()) if (m.source === 'store' && m.manifest.sha256 === sha256) await store.unload(m.manifest.name);
    this.o.statusChanged();
    for (const { entry } of this.entries.values()) if (entry.manifest.sha256 === sha256) await this.ensure(entry);
  }

  private progressSoon(): void {
    if (this.progressTimer) return;
    this.progressTimer = setTimeout(() => {
      this.progressTimer = undefined;
      if (!this.stopped) this.o.statusChanged();
    }, PROGRESS_EVERY_MS);
    this.progressTimer.unref();
  }
}

/**
 * The broker's check of a catalogue message on a mesh with credentials (broker/embedded.ts):
 * an entry whose manifest the mesh key signed, published in its origin's own name; a tombstone
 * the mesh key signed, for the file the catalogue lists now (an old tombstone replayed cannot
 * retract a newer version). An empty payload is refused: it would retract without a signature.
 */
export function catalogGate(publicKey: KeyObject, current: (name: string) => string | undefined): (name: string, payload: Buffer, id: Identity) => Verdict {
  return (name, payload, id) => {
    let msg;
    try {
      msg = decodeCatalog(name, payload);
    } catch (err) {
      return { ok: false, why: `catalogue message for ${name}: ${(err as Error).message}` };
    }
    if (msg.kind === 'retract') {
      if (!msg.tombstone) return { ok: false, why: `an unsigned retraction of ${name} (a mesh with credentials takes a tombstone signed by the mesh key)` };
      if (!verifyTombstone(msg.tombstone, publicKey)) return { ok: false, why: `a tombstone of ${name} not signed by the mesh key` };
      const now = current(name);
      if (now && now !== msg.sha256) return { ok: false, why: `a tombstone of ${name} for ${msg.sha256?.slice(0, 12)}, the catalogue lists ${now.slice(0, 12)}` };
      return { ok: true };
    }
    const { entry } = msg;
    try {
      parseManifest(entry.manifest, `catalogue entry ${name}`);
    } catch (err) {
      return { ok: false, why: (err as Error).message };
    }
    if (!entry.sig || !verifyManifest(entry.manifest, entry.sig, publicKey)) return { ok: false, why: `catalogue entry ${name}: its manifest is not signed by the mesh key` };
    const who = id.kind === 'board' ? id.node : id.kind === 'app' ? id.name : undefined;
    if (who !== undefined && entry.origin !== who) return { ok: false, why: `catalogue entry ${name} names ${entry.origin} as its origin, not its publisher ${who}` };
    return { ok: true };
  };
}
