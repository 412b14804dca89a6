/**
 * Home Assistant's names for a board: its device id, each entity's unique id (also its object id
 * in the discovery topic) and the discovery topics. The one place these strings are built; the
 * broker's access rules (broker/acl.ts) check them with `isOwnDiscoveryTopic` and `isHaStatusTopic`.
 *
 *   <prefix>/<component>/kizuna_<mesh>_<node>_<key>/config   retained: one entity's discovery config
 *   <prefix>/status                                           Home Assistant's birth ("online") and will
 *
 * Mesh names and node ids may hold `.` and `:`, which Home Assistant's ids may not
 * ([A-Za-z0-9_-] only), and `_`, which separates the parts. `haSafe` maps them one to one:
 * `_` -> `__`, `.` -> `_d`, `:` -> `_c`, the rest as is; so `pi-kitchen-3f1c` stays itself, no two
 * node ids give the same id, and a key (lower-case letters and digits, no `_`) ends every unique
 * id after its last `_`: one board can never name another's entities.
 */

import { ROOT } from '../../mesh/topics.js';

/** The entity kinds a board announces. */
export const HA_COMPONENTS = ['sensor', 'binary_sensor'] as const;
export type HaComponent = (typeof HA_COMPONENTS)[number];

/** An entity's key within its board: lower-case letters and digits. */
export const HA_KEY = /^[a-z0-9]{1,32}$/;

/** A mesh name or node id in Home Assistant's id alphabet, one to one. */
export function haSafe(segment: string): string {
  return segment.replace(/[_.:]/g, (c) => (c === '_' ? '__' : c === '.' ? '_d' : '_c'));
}

/** The board's device id, in `device.identifiers`. */
export function deviceId(mesh: string, node: string): string {
  return `kizuna_${haSafe(mesh)}_${haSafe(node)}`;
}

/** One entity's unique id (and object id in its discovery topic). */
export function uniqueId(mesh: string, node: string, key: string): string {
  if (!HA_KEY.test(key)) throw new Error(`bad Home Assistant entity key ${JSON.stringify(key)}`);
  return `${deviceId(mesh, node)}_${key}`;
}

export const haTopics = {
  config(prefix: string, component: HaComponent, mesh: string, node: string, key: string): string {
    return `${prefix}/${component}/${uniqueId(mesh, node, key)}/config`;
  },
  /** Where Home Assistant says it came online (its MQTT birth message) or went away. */
  status(prefix: string): string {
    return `${prefix}/status`;
  },
};

/** The first level of every Kizuna topic: never a discovery prefix. */
const ROOT_LEVEL = ROOT.split('/')[0];

/** A discovery prefix: one topic level, never Kizuna's own root nor `$SYS`. */
export function isDiscoveryPrefix(level: string): boolean {
  return /^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$/.test(level) && level !== ROOT_LEVEL;
}


/**
 * Whether `topic` is a discovery config topic of board `node` of `mesh`, under any discovery
 * prefix: `<prefix>/<component>/kizuna_<mesh>_<node>_<key>/config`.
 */
export function isOwnDiscoveryTopic(topic: string, mesh: string, node: string): boolean {
  const levels = topic.split('/');
  if (levels.length !== 4 || levels[3] !== 'config') return false;
  const [prefix, component, objectId] = levels as [string, string, string];
  if (!isDiscoveryPrefix(prefix) || !(HA_COMPONENTS as readonly string[]).includes(component)) return false;
  const own = `${deviceId(mesh, node)}_`;
  return objectId.startsWith(own) && HA_KEY.test(objectId.slice(own.length));
}

/** Whether `topic` is Home Assistant's status topic under some discovery prefix. */
export function isHaStatusTopic(topic: string): boolean {
  const levels = topic.split('/');
  return levels.length === 2 && levels[1] === 'status' && isDiscoveryPrefix(levels[0]!);
}
