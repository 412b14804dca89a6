/**
 * The discovery configs a board publishes for Home Assistant (its documented MQTT discovery
 * format): one device per board, with sensors whose state is read from topics the board already
 * publishes, retained: its health report (`kizuna/v1/<mesh>/node/<node>/health`) and its status
 * (`.../status`, whose `online` field is also every entity's availability). No extra state topic.
 *
 * Pure: the caller gives the latest health report (which sensors a board can fill: a board with no
 * thermal zone announces no temperature, one without a Pi's firmware no throttling) and publishes.
 *
 * Templates stay within a small Jinja subset (attribute paths, `/` and `*`, `a if c else b`, and
 * the filters round, map(attribute=), select('number'), max, default) that the tests evaluate
 * against real reports (test/helpers/jinja.ts, checked against Python's Jinja2 where installed).
 */
import type { NodeHealth } from '../../mesh/health.js';
import { topics } from '../../mesh/topics.js';
import { deviceId, haTopics, uniqueId, type HaComponent } from './ids.js';

export interface BoardDevice {
  /** The board's model (a Pi's device-tree model), else its OS and architecture. */
  model: string;
  /** Kizuna's version. */
  swVersion: string;
}

export interface DiscoveryInput {
  mesh: string;
  node: string;
  prefix: string;
  /** healthIntervalS: sensors fed by the health report expire after three missed reports. */
  intervalS: number;
  device: BoardDevice;
  /** The board's latest health report: which optional figures it has. */
  health: NodeHealth;
}

export interface DiscoveryMessage {
  key: string;
  component: HaComponent;
  topic: string;
  config: Record<string, unknown>;
}

/** Every entity's availability: the board's retained status, `online` true or false. */
export const AVAILABILITY_TEMPLATE = "{{ 'online' if value_json.online else 'offline' }}";

/** The roles a status may give (agent/advert.ts Role). */
export const ROLES = ['broker', 'standby', 'agent', 'joining'] as const;

interface Entity {
  key: string;
  component: HaComponent;
  /** State from the health report (else from the status). */
  from: 'health' | 'status';
  /** Announced only when the board's report has this figure. */
  when?: (h: NodeHealth) => boolean;
  fields: Record<string, unknown>;
}

/** The entities, in the order they are published. */
export const ENTITIES: readonly Entity[] = [
  {
    key: 'cpu', component: 'sensor', from: 'health',
    fields: { name: 'CPU load', unit_of_measurement: '%', state_class: 'measurement', icon: 'mdi:cpu-64-bit', suggested_display_precision: 1, value_template: '{{ value_json.cpu.total_pct }}' },
  },
  {
    key: 'temperature', component: 'sensor', from: 'health', when: (h) => h.temperature_c !== undefined,
    fields: { name: 'Temperature', device_class: 'temperature', unit_of_measurement: '°C', state_class: 'measurement', suggested_display_precision: 1, value_template: '{{ value_json.temperature_c }}' },
  },
  {
    key: 'memory', component: 'sensor', from: 'health',
    fields: { name: 'Memory used', unit_of_measurement: '%', state_class: 'measurement', icon: 'mdi:memory', suggested_display_precision: 1, value_template: '{{ (value_json.memory.used_bytes / value_json.memory.total_bytes * 100) | round(1) }}' },
  },
  {
    key: 'rate', component: 'sensor', from: 'health',
    fields: { name: 'Inference rate', unit_of_measurement: 'req/s', state_class: 'measurement', icon: 'mdi:speedometer', suggested_display_precision: 1, value_template: '{{ value_json.inference.rate_per_s }}' },
  },
  {
    // The slowest model's p95 in the period; None (unknown in Home Assistant) when nothing was answered.
    key: 'p95', component: 'sensor', from: 'health',
    fields: {
      name: 'Inference p95 latency', device_class: 'duration', unit_of_measurement: 'ms', state_class: 'measurement', icon: 'mdi:timer-outline', suggested_display_precision: 1,
      value_template: "{{ value_json.inference.models | map(attribute='p95_ms') | select('number') | max | default(None) }}",
    },
  },
  {
    key: 'throttled', component: 'binary_sensor', from: 'health', when: (h) => h.throttle !== undefined,
    fields: { name: 'Throttled', device_class: 'problem', payload_on: 'ON', payload_off: 'OFF', value_template: "{{ 'ON' if value_json.throttle.now else 'OFF' }}" },
  },
  {
    key: 'role', component: 'sensor', from: 'status',
    fields: { name: 'Role', device_class: 'enum', options: [...ROLES], icon: 'mdi:crown-outline', entity_category: 'diagnostic', value_template: '{{ value_json.role }}' },
  },
];

/** Seconds after which a health sensor with no new report shows unavailable: three missed reports. */
export function expireAfter(intervalS: number): number {
  return Math.max(1, Math.ceil(3 * intervalS));
}

/** The configs of every entity this board can fill now. */
export function discoveryMessages(o: DiscoveryInput): DiscoveryMessage[] {
  const { mesh, node, prefix } = o;
  const status = topics.nodeStatus(mesh, node);
  const health = topics.nodeHealth(mesh, node);
  const device = { identifiers: [deviceId(mesh, node)], name: node, model: o.device.model, manufacturer: 'Kizuna', sw_version: o.device.swVersion };
  return ENTITIES.filter((e) => !e.when || e.when(o.health)).map((e) => ({
    key: e.key,
    component: e.component,
    topic: haTopics.config(prefix, e.component, mesh, node, e.key),
    config: {
      unique_id: uniqueId(mesh, node, e.key),
      has_entity_name: true,
      ...e.fields,
      state_topic: e.from === 'health' ? health : status,
      ...(e.from === 'health' ? { expire_after: expireAfter(o.intervalS) } : {}),
      availability: [{ topic: status, value_template: AVAILABILITY_TEMPLATE, payload_available: 'online', payload_not_available: 'offline' }],
      device,
      origin: { name: 'Kizuna', sw_version: o.device.swVersion },
    },
  }));
}
