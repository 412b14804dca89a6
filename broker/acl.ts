/**
 * Who may publish and subscribe to what, in the embedded broker. Pure functions of an identity
 * and a topic, so every rule can be tried from every identity in tests.
 *
 * Topics are those of mesh/topics.ts, under kizuna/v1/<mesh>/. In short:
 *  - a board N publishes only its own status and health report (retained), replies to apps, and
 *    shard results; it reads only its own tasks and shards, the statuses, the health reports, the
 *    broker record and the revocations;
 *  - an app A publishes requests and jobs in its own name only and reads only its own answers
 *    (and the statuses and health reports, to see the mesh: a dashboard, kizuna status);
 *  - models across the mesh (agent/distribution.ts): boards and apps publish catalogue entries,
 *    retained (on a mesh with credentials the broker also checks the content: the mesh key's
 *    signature, broker/embedded.ts); a board asks for chunks only as itself
 *    (`blobreq/+/N/+`), and anyone who holds a file sends its chunks only in its own name
 *    (`blob/+/N/+/+`, so a requester knows whom to blame for a bad one); each reads only the
 *    requests to it and the chunks for it;
 *  - tasks and shards are published by the dispatcher inside the broker's process (no client
 *    does: so no board, however compromised, can assign work), as are the broker record and the
 *    seeded statuses;
 *  - Home Assistant discovery (agent/home-assistant.ts), outside kizuna/: a board publishes its own
 *    entities' configs only, retained (`<prefix>/<component>/kizuna_<mesh>_<N>_<key>/config`, any
 *    one-level prefix but `kizuna`: the broker is any board, and each board has its own
 *    homeAssistantPrefix), and reads Home Assistant's birth (`<prefix>/status`); an app (Home
 *    Assistant itself, with an app token) publishes that birth and reads everything under a prefix
 *    (`<prefix>/#`: only discovery configs and births can be there);
 *  - anything else is refused, including every other topic outside kizuna/v1/<mesh>/ and `#`.
 * An "open" identity (a mesh run without credentials, on loopback only) may do anything.
 */
import { ROOT, topicMatches } from '../mesh/topics.js';
import { revocationKey } from '../mesh/tokens.js';
import { isDiscoveryPrefix, isHaStatusTopic, isOwnDiscoveryTopic } from '../agent/home-assistant/ids.js';

export type Identity =
  | { kind: 'board'; node: string }
  | { kind: 'app'; name: string }
  | { kind: 'open' };

/** One string per identity: `board:<node>`, `app:<name>` (as revocation lists name them), or `open`. */
export const identityKey = (id: Identity): string =>
  id.kind === 'board' ? revocationKey('board', id.node) : id.kind === 'app' ? revocationKey('app', id.name) : 'open';

export type Verdict = { ok: true } | { ok: false; why: string };

const OK: Verdict = { ok: true };
const no = (why: string): Verdict => ({ ok: false, why });

/** The topics (or filters) an identity may publish to, and whether it may retain there. */
function publishRules(id: Identity, mesh: string): { pattern: string; retain: boolean }[] {
  const m = `${ROOT}/${mesh}`;
  if (id.kind === 'board') {
    return [
      { pattern: `${m}/node/${id.node}/status`, retain: true },
      { pattern: `${m}/node/${id.node}/health`, retain: true },
      { pattern: `${m}/res/+/+`, retain: false },
      { pattern: `${m}/shardres/+/+/+`, retain: false },
      { pattern: `${m}/catalog/+`, retain: true },
      { pattern: `${m}/blobreq/+/${id.node}/+`, retain: false },
      { pattern: `${m}/blob/+/${id.node}/+/+`, retain: false },
    ];
  }
  if (id.kind === 'app') {
    return [
      { pattern: `${m}/req/+/${id.name}/+`, retain: false },
      { pattern: `${m}/job/+/${id.name}/+`, retain: false },
      // An app (a laptop pushing a model) publishes the entry and serves the chunks until a board holds it.
      { pattern: `${m}/catalog/+`, retain: true },
      { pattern: `${m}/blob/+/${id.name}/+/+`, retain: false },
    ];
  }
  return [];
}

/** The filters an identity may subscribe to (any filter they contain is fine too). */
function subscribeRules(id: Identity, mesh: string): string[] {
  const m = `${ROOT}/${mesh}`;
  const mesh_view = [`${m}/node/+/status`, `${m}/node/+/health`, `${m}/broker`, `${m}/revoked`, `${m}/catalog/+`];
  if (id.kind === 'board') return [...mesh_view, `${m}/task/${id.node}/#`, `${m}/shard/${id.node}/#`, `${m}/blobreq/${id.node}/+/+`, `${m}/blob/${id.node}/+/+/+`];
  if (id.kind === 'app') return [...mesh_view, `${m}/res/${id.name}/+`, `${m}/jobres/${id.name}/+`, `${m}/blobreq/${id.name}/+/+`];
  return [];
}

function describe(id: Identity): string {
  return id.kind === 'board' ? `board ${id.node}` : id.kind === 'app' ? `app ${id.name}` : 'open client';
}

/** Home Assistant's topics: a board's own discovery configs; an app's (Home Assistant's) birth. */
function mayPublishHomeAssistant(id: Identity, topic: string, mesh: string): boolean {
  if (id.kind === 'board') return isOwnDiscoveryTopic(topic, mesh, id.node);
  return id.kind === 'app' && isHaStatusTopic(topic);
}

/** A board reads Home Assistant's birth; an app (Home Assistant) anything under a discovery prefix. */
function maySubscribeHomeAssistant(id: Identity, filter: string): boolean {
  if (id.kind === 'board') return isHaStatusTopic(filter);
  return id.kind === 'app' && isDiscoveryPrefix(filter.split('/')[0]!);
}

export function mayPublish(id: Identity, topic: string, retain: boolean, mesh: string): Verdict {
  if (id.kind === 'open') return OK;
  if (mayPublishHomeAssistant(id, topic, mesh)) return OK;
  const rule = publishRules(id, mesh).find((r) => topicMatches(r.pattern, topic));
  if (!rule) return no(`${describe(id)} may not publish to ${topic.slice(0, 200)}`);
  if (retain && !rule.retain) return no(`${describe(id)} may not retain a message on ${topic.slice(0, 200)}`);
  return OK;
}

/** Whether every topic `filter` matches is matched by `allowed` (MQTT wildcards on both sides). */
export function filterWithin(filter: string, allowed: string): boolean {
  const f = filter.split('/');
  const a = allowed.split('/');
  for (let i = 0; i < f.length; i++) {
    if (a[i] === '#') return true;
    if (i >= a.length) return false;
    if (f[i] === '#') return false; // the filter reaches further than the rule
    if (f[i] === '+' ? a[i] !== '+' : a[i] !== '+' && a[i] !== f[i]) return false;
  }
  // "x/#" also matches "x" itself.
  return f.length === a.length || (a.length === f.length + 1 && a[f.length] === '#');
}

export function maySubscribe(id: Identity, filter: string, mesh: string): Verdict {
  if (id.kind === 'open') return OK;
  if (subscribeRules(id, mesh).some((rule) => filterWithin(filter, rule))) return OK;
  if (maySubscribeHomeAssistant(id, filter)) return OK;
  return no(`${describe(id)} may not subscribe to ${filter.slice(0, 200)}`);
}
