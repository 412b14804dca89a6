/**
 * The one registry of Kizuna topics. No topic string is built anywhere else.
 *
 *   kizuna/v1/<mesh>/req/<model>/<client>/<id>   request, published by an app
 *   kizuna/v1/<mesh>/res/<client>/<id>           its reply (result or error)
 *   kizuna/v1/<mesh>/task/<node>/<model>/<client>/<id>   a request given to one agent by the dispatcher
 *   kizuna/v1/<mesh>/job/<model>/<client>/<job>  a job (many inputs), published by an app
 *   kizuna/v1/<mesh>/jobres/<client>/<job>       its results in input order, with progress
 *   kizuna/v1/<mesh>/shard/<node>/<model>/<client>/<job>/<start>-<end>   part of a job given to one agent
 *   kizuna/v1/<mesh>/shardres/<client>/<job>/<start>-<end>               that part's results, for the dispatcher
 *   kizuna/v1/<mesh>/node/<node>/status          retained: the agent's models and state
 *   kizuna/v1/<mesh>/node/<node>/health          retained: its latest health report (mesh/health.ts)
 *   kizuna/v1/<mesh>/broker                      retained: the elected broker and its term
 *   kizuna/v1/<mesh>/revoked                     retained: the signed list of revoked boards and apps
 *   kizuna/v1/<mesh>/catalog/<model>             retained: one model of the mesh catalogue (mesh/catalog.ts)
 *   kizuna/v1/<mesh>/blobreq/<holder>/<requester>/<sha256>   chunks of a model file asked of a holder
 *   kizuna/v1/<mesh>/blob/<requester>/<holder>/<sha256>/<i>  chunk i, raw bytes, from that holder
 *
 * The reply topic is derived from the request topic, so a raw image published with
 * mosquitto_pub (no room for metadata in MQTT 3.1.1) still says where its answer goes.
 */
import { KizunaError } from './errors.js';

export const PROTOCOL_VERSION = 1;
export const ROOT = `kizuna/v${PROTOCOL_VERSION}`;

/** Mesh names, model names, client names, node ids and request ids: one safe topic level each. */
export const SEGMENT_PATTERN = '^(?!.*\\.\\.)[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$';
const SEGMENT = new RegExp(SEGMENT_PATTERN);

export function isSegment(value: string): boolean {
  return SEGMENT.test(value);
}

export function assertSegment(kind: string, value: string): void {
  if (!isSegment(value)) {
    throw new KizunaError(
      'KZ_ERR_BAD_NAME',
      `${kind} ${JSON.stringify(value.slice(0, 140))} must be 1-128 of A-Z a-z 0-9 _ . : - (no leading '.' or '-', no '..', no '/', '+', '#')`,
    );
  }
}

export const topics = {
  request(mesh: string, model: string, client: string, id: string): string {
    for (const [k, v] of [['mesh', mesh], ['model', model], ['client', client], ['request id', id]] as const) assertSegment(k, v);
    return `${ROOT}/${mesh}/req/${model}/${client}/${id}`;
  },
  /** Subscription that receives every request of a mesh, malformed ones included (so they get an error reply). */
  allRequests(mesh: string): string {
    return `${ROOT}/${mesh}/req/#`;
  },
  reply(mesh: string, client: string, id: string): string {
    return `${ROOT}/${mesh}/res/${client}/${id}`;
  },
  /** Subscription for every reply to one client. */
  repliesTo(mesh: string, client: string): string {
    return `${ROOT}/${mesh}/res/${client}/+`;
  },
  /** A request handed to one agent by the dispatcher (same payload, same reply topic). */
  task(mesh: string, node: string, req: { model: string; client: string; id: string }): string {
    return `${ROOT}/${mesh}/task/${node}/${req.model}/${req.client}/${req.id}`;
  },
  tasksFor(mesh: string, node: string): string {
    return `${ROOT}/${mesh}/task/${node}/#`;
  },
  allReplies(mesh: string): string {
    return `${ROOT}/${mesh}/res/#`;
  },
  job(mesh: string, model: string, client: string, job: string): string {
    for (const [k, v] of [['mesh', mesh], ['model', model], ['client', client], ['job id', job]] as const) assertSegment(k, v);
    return `${ROOT}/${mesh}/job/${model}/${client}/${job}`;
  },
  allJobs(mesh: string): string {
    return `${ROOT}/${mesh}/job/#`;
  },
  jobResults(mesh: string, client: string, job: string): string {
    return `${ROOT}/${mesh}/jobres/${client}/${job}`;
  },
  /** Subscription for every job result to one client. */
  jobResultsTo(mesh: string, client: string): string {
    return `${ROOT}/${mesh}/jobres/${client}/+`;
  },
  shard(mesh: string, node: string, s: ShardRef): string {
    return `${ROOT}/${mesh}/shard/${node}/${s.model}/${s.client}/${s.job}/${s.start}-${s.end}`;
  },
  shardsFor(mesh: string, node: string): string {
    return `${ROOT}/${mesh}/shard/${node}/#`;
  },
  shardResult(mesh: string, s: Omit<ShardRef, 'model'>): string {
    return `${ROOT}/${mesh}/shardres/${s.client}/${s.job}/${s.start}-${s.end}`;
  },
  allShardResults(mesh: string): string {
    return `${ROOT}/${mesh}/shardres/#`;
  },
  /** Retained: the mesh's signed revocation list. */
  revoked(mesh: string): string {
    return `${ROOT}/${mesh}/revoked`;
  },
  brokerRecord(mesh: string): string {
    return `${ROOT}/${mesh}/broker`;
  },
  /** Retained: one model of the mesh catalogue (an empty payload or a signed tombstone retracts it). */
  catalog(mesh: string, model: string): string {
    assertSegment('model', model);
    return `${ROOT}/${mesh}/catalog/${model}`;
  },
  allCatalog(mesh: string): string {
    return `${ROOT}/${mesh}/catalog/+`;
  },
  /** `requester` asks `holder` for chunks of the model file `sha256`. */
  blobRequest(mesh: string, holder: string, requester: string, sha256: string): string {
    return `${ROOT}/${mesh}/blobreq/${holder}/${requester}/${sha256}`;
  },
  blobRequestsTo(mesh: string, holder: string): string {
    return `${ROOT}/${mesh}/blobreq/${holder}/+/+`;
  },
  /** Chunk `index` of `sha256`, sent by `holder` to `requester` (the holder is named: it answers for the bytes). */
  blobChunk(mesh: string, requester: string, holder: string, sha256: string, index: number): string {
    return `${ROOT}/${mesh}/blob/${requester}/${holder}/${sha256}/${index}`;
  },
  blobChunksTo(mesh: string, requester: string): string {
    return `${ROOT}/${mesh}/blob/${requester}/+/+/+`;
  },
  nodeStatus(mesh: string, node: string): string {
    return `${ROOT}/${mesh}/node/${node}/status`;
  },
  allNodeStatus(mesh: string): string {
    return `${ROOT}/${mesh}/node/+/status`;
  },
  /** Retained: the node's latest health report (mesh/health.ts, docs/OPERATIONS.md). */
  nodeHealth(mesh: string, node: string): string {
    return `${ROOT}/${mesh}/node/${node}/health`;
  },
  allNodeHealth(mesh: string): string {
    return `${ROOT}/${mesh}/node/+/health`;
  },
};

/** One part of a job: inputs start..end-1 (end exclusive) of job `job` of `client`. */
export interface ShardRef {
  model: string;
  client: string;
  job: string;
  start: number;
  end: number;
}

export interface RequestTopic {
  mesh: string;
  model: string;
  client: string;
  id: string;
}

/**
 * Parses a request topic. Returns:
 *  - `{ ok: true, topic }` for a valid one;
 *  - `{ ok: false, replyTo, error }` when the client and id are usable but the rest is not
 *    (a bad model name, extra levels): the caller can still send an error reply;
 *  - `{ ok: false, error }` when no reply topic can be trusted (the message is logged and dropped).
 */
export function parseRequestTopic(
  topic: string,
): { ok: true; topic: RequestTopic } | { ok: false; error: KizunaError; replyTo?: { mesh: string; client: string; id: string } } {
  const parts = topic.split('/');
  const [root, version, mesh, kind] = parts;
  if (`${root}/${version}` !== ROOT || kind !== 'req' || mesh === undefined || !isSegment(mesh) || parts.length < 7) {
    return { ok: false, error: new KizunaError('KZ_ERR_BAD_TOPIC', `not a request topic: ${topic.slice(0, 200)}`) };
  }
  const id = parts[parts.length - 1]!;
  const client = parts[parts.length - 2]!;
  if (!isSegment(client) || !isSegment(id)) {
    return { ok: false, error: new KizunaError('KZ_ERR_BAD_NAME', `bad client or request id in ${topic.slice(0, 200)}`) };
  }
  const replyTo = { mesh, client, id };
  const model = parts.slice(4, -2).join('/');
  if (parts.length !== 7 || !isSegment(model)) {
    return {
      ok: false,
      replyTo,
      error: new KizunaError('KZ_ERR_BAD_NAME', `model name ${JSON.stringify(model.slice(0, 140))} is not a single safe topic level`),
    };
  }
  return { ok: true, topic: { mesh, model, client, id } };
}

/** A task topic's parts (tasks are built by the dispatcher from valid requests only). */
export function parseTaskTopic(topic: string): (RequestTopic & { node: string }) | undefined {
  const parts = topic.split('/');
  if (parts.length !== 8 || `${parts[0]}/${parts[1]}` !== ROOT || parts[3] !== 'task') return undefined;
  const [, , mesh, , node, model, client, id] = parts as [string, string, string, string, string, string, string, string];
  return [mesh, node, model, client, id].every(isSegment) ? { mesh, node, model, client, id } : undefined;
}

/** The client and id of a reply topic, or undefined. */
export function parseReplyTopic(topic: string): { client: string; id: string } | undefined {
  const parts = topic.split('/');
  if (parts.length !== 6 || `${parts[0]}/${parts[1]}` !== ROOT || parts[3] !== 'res') return undefined;
  return isSegment(parts[4]!) && isSegment(parts[5]!) ? { client: parts[4]!, id: parts[5]! } : undefined;
}

/** Whether `topic` matches the subscription `filter` (MQTT wildcards: `+` one level, `#` the rest). */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length || (f[i] !== '+' && f[i] !== t[i])) return false;
  }
  return f.length === t.length;
}

/** The node id in a node status topic, or undefined. */
export function parseNodeStatusTopic(topic: string): string | undefined {
  const parts = topic.split('/');
  if (parts.length !== 6 || `${parts[0]}/${parts[1]}` !== ROOT || parts[3] !== 'node' || parts[5] !== 'status') return undefined;
  return isSegment(parts[4]!) ? parts[4] : undefined;
}

/** The node id in a node health topic, or undefined. */
export function parseNodeHealthTopic(topic: string): string | undefined {
  const parts = topic.split('/');
  if (parts.length !== 6 || `${parts[0]}/${parts[1]}` !== ROOT || parts[3] !== 'node' || parts[5] !== 'health') return undefined;
  return isSegment(parts[4]!) ? parts[4] : undefined;
}

/**
 * A job topic: like a request topic (the same error cases), with `job` as the id. The parts are
 * the same, so the request parser does the work.
 */
export function parseJobTopic(topic: string): ReturnType<typeof parseRequestTopic> {
  const parts = topic.split('/');
  if (parts[3] !== 'job') return { ok: false, error: new KizunaError('KZ_ERR_BAD_TOPIC', `not a job topic: ${topic.slice(0, 200)}`) };
  parts[3] = 'req';
  return parseRequestTopic(parts.join('/'));
}

/** start-end, decimal without leading zeros: one spelling per shard. */
const RANGE = /^(0|[1-9]\d{0,8})-(0|[1-9]\d{0,8})$/;

function parseRange(segment: string): { start: number; end: number } | undefined {
  const m = RANGE.exec(segment);
  if (!m) return undefined;
  const start = Number(m[1]), end = Number(m[2]);
  return start < end ? { start, end } : undefined;
}

/** A shard topic's parts, or undefined. */
export function parseShardTopic(topic: string): (ShardRef & { mesh: string; node: string }) | undefined {
  const parts = topic.split('/');
  if (parts.length !== 9 || `${parts[0]}/${parts[1]}` !== ROOT || parts[3] !== 'shard') return undefined;
  const [, , mesh, , node, model, client, job, range] = parts as [string, string, string, string, string, string, string, string, string];
  const r = parseRange(range);
  return r && [mesh, node, model, client, job].every(isSegment) ? { mesh, node, model, client, job, ...r } : undefined;
}

/** A shard result topic's parts, or undefined. */
export function parseShardResultTopic(topic: string): { client: string; job: string; start: number; end: number } | undefined {
  const parts = topic.split('/');
  if (parts.length !== 7 || `${parts[0]}/${parts[1]}` !== ROOT || parts[3] !== 'shardres') return undefined;
  const r = parseRange(parts[6]!);
  return r && isSegment(parts[4]!) && isSegment(parts[5]!) ? { client: parts[4]!, job: parts[5]!, ...r } : undefined;
}

const SHA256 = /^[0-9a-f]{64}$/;
/** A chunk index: decimal without leading zeros, one spelling per chunk. */
const INDEX = /^(0|[1-9]\d{0,8})$/;

/** The model name of a catalogue topic, or undefined. */
export function parseCatalogTopic(topic: string): { mesh: string; model: string } | undefined {
  const parts = topic.split('/');
  if (parts.length !== 5 || `${parts[0]}/${parts[1]}` !== ROOT || parts[3] !== 'catalog') return undefined;
  return isSegment(parts[2]!) && isSegment(parts[4]!) ? { mesh: parts[2]!, model: parts[4]! } : undefined;
}

/** A chunk request topic's parts, or undefined. */
export function parseBlobRequestTopic(topic: string): { holder: string; requester: string; sha256: string } | undefined {
  const parts = topic.split('/');
  if (parts.length !== 7 || `${parts[0]}/${parts[1]}` !== ROOT || parts[3] !== 'blobreq') return undefined;
  const [, , mesh, , holder, requester, sha256] = parts as [string, string, string, string, string, string, string];
  return isSegment(mesh) && isSegment(holder) && isSegment(requester) && SHA256.test(sha256) ? { holder, requester, sha256 } : undefined;
}

/** A chunk topic's parts, or undefined. */
export function parseBlobChunkTopic(topic: string): { requester: string; holder: string; sha256: string; index: number } | undefined {
  const parts = topic.split('/');
  if (parts.length !== 8 || `${parts[0]}/${parts[1]}` !== ROOT || parts[3] !== 'blob') return undefined;
  const [, , mesh, , requester, holder, sha256, index] = parts as [string, string, string, string, string, string, string, string];
  if (!isSegment(mesh) || !isSegment(requester) || !isSegment(holder) || !SHA256.test(sha256) || !INDEX.test(index)) return undefined;
  return { requester, holder, sha256, index: Number(index) };
}
