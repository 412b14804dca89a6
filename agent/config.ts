/**
 * Agent configuration: one schema, filled from defaults < JSON config file < environment < flags.
 * Every key `fooBar` is also the flag `--foo-bar` and the variable `KIZUNA_FOO_BAR`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { KizunaError } from '../mesh/errors.js';
import { SEGMENT_PATTERN } from '../mesh/topics.js';

const Segment = Type.String({ pattern: SEGMENT_PATTERN });
const MiB = 1024 * 1024;

export const BUILTIN_MODELS_DIR = fileURLToPath(new URL('../../models/builtin/', import.meta.url));

export const ConfigSchema = Type.Object(
  {
    mesh: Type.String({ ...Segment, default: 'home', description: 'mesh name; agents and apps of one mesh share it' }),
    node: Type.Optional(Type.String({ ...Segment, description: 'this agent\'s id in the mesh (default: created once and kept in the data directory)' })),
    dataDir: Type.String({ minLength: 1, default: defaultDataDir(), description: 'where the agent keeps its node id (and later its credentials and models)' }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 1883, description: 'MQTT port of the embedded broker (0: any free port)' }),
    host: Type.Optional(Type.String({ minLength: 1, description: 'address the embedded broker listens on (default: 0.0.0.0 with mesh credentials, 127.0.0.1 without)' })),
    broker: Type.Optional(Type.String({ pattern: '^mqtts?://', description: 'use this broker (Mosquitto, EMQX...) instead of electing one' })),
    discovery: Type.Union([Type.Literal('mdns'), Type.Literal('none')], { default: 'mdns', description: 'mdns: find the other agents on the local network; none: this agent alone (or --peers)' }),
    peers: Type.Array(Type.String({ pattern: '^[^\\s:]+:\\d{1,5}$' }), { default: [], description: 'host:port of other agents, for networks without multicast (comma separated)' }),
    mdnsInterface: Type.Optional(Type.String({ pattern: '^\\d{1,3}(\\.\\d{1,3}){3}$', description: 'IPv4 address of the interface for mDNS on a multi-homed host' })),
    eligible: Type.Boolean({ default: true, description: 'may host the mesh broker' }),
    insecure: Type.Boolean({ default: false, description: 'run an open mesh without credentials on a non-loopback address (a trusted network only)' }),
    joinToken: Type.Optional(Type.String({ pattern: '^kzj1\\.', description: 'join the mesh with this token (from kizuna init or kizuna token board) at start' })),
    formationMs: Type.Integer({ minimum: 0, maximum: 60_000, default: 1000, description: 'how long a starting agent looks for a broker before electing one' }),
    probeTimeoutMs: Type.Integer({ minimum: 10, maximum: 60_000, default: 500, description: 'how long to wait for a peer to answer a hello' }),
    keepaliveSeconds: Type.Integer({ minimum: 1, maximum: 600, default: 1, description: 'MQTT keepalive: a silent broker is noticed after 1 to 2 of these' }),
    rejoinGraceMs: Type.Integer({ minimum: 0, maximum: 600_000, default: 5000, description: 'after a failover, members not back within this are marked offline' }),
    models: Type.Array(Type.String({ minLength: 1 }), { default: [BUILTIN_MODELS_DIR], description: 'model folders (comma separated)' }),
    threads: Type.Integer({ minimum: 1, maximum: 64, default: 1, description: 'onnxruntime threads per inference' }),
    concurrency: Type.Integer({ minimum: 1, maximum: 64, default: 1, description: 'inferences run at once' }),
    modelMemoryMib: Type.Optional(Type.Integer({ minimum: 0, maximum: 16 * MiB, description: 'MiB for loaded models; others load on demand, least recently used unloaded first (absent: 40% of the board\'s memory, at least 64; 0: no limit, all loaded at start; docs/MODELS.md)' })),
    maxQueue: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 1024, description: 'accepted requests waiting; more are refused (KZ_ERR_OVERLOADED)' }),
    maxPayloadBytes: Type.Integer({ minimum: 1024, maximum: 256 * MiB, default: 8 * MiB, description: 'largest request payload' }),
    maxPacketBytes: Type.Integer({ minimum: 1024, maximum: 256 * MiB, default: 33 * MiB, description: 'largest MQTT packet the embedded broker takes; a client sending a larger one is cut off' }),
    publishPerSecond: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 5000, description: 'messages per second one connection may publish to the embedded broker, on average' }),
    publishBurst: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 10_000, description: 'messages one connection may publish at once; a client beyond its allowance is cut off' }),
    maxElements: Type.Integer({ minimum: 1, maximum: 1 << 30, default: 4 * MiB, description: 'most tensor elements in one request' }),
    maxImagePixels: Type.Integer({ minimum: 1, maximum: 1 << 30, default: 4096 * 4096, description: 'most pixels in one image' }),
    maxBatch: Type.Integer({ minimum: 1, maximum: 4096, default: 64, description: 'most images in one request' }),
    replyCacheSize: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 10_000, description: 'answered ids kept for idempotent retries' }),
    replyCacheTtlMs: Type.Integer({ minimum: 0, default: 10 * 60_000, description: 'how long an answered id is kept' }),
    replyCacheBytes: Type.Integer({ minimum: 0, default: 32 * MiB, description: 'memory for kept replies; the oldest go first' }),
    dashboardPort: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535, description: 'serve the web dashboard on this HTTP port (0: any free port; absent: no dashboard)' })),
    dashboardHost: Type.String({ minLength: 1, default: '127.0.0.1', description: 'address the dashboard listens on (0.0.0.0 for the LAN: on a mesh with credentials it then asks for the dashboard token)' }),
    dashboardToken: Type.Optional(Type.String({ pattern: '^kz1\\.', description: 'an app token of the mesh (kizuna token app dashboard): the playground\'s identity on a mesh with credentials, and the dashboard\'s login off loopback' })),
    healthIntervalS: Type.Number({ minimum: 0, maximum: 3600, default: 10, description: 'publish a health report (load, memory, temperature, inference figures) every this many seconds (0: never; docs/OPERATIONS.md)' }),
    homeAssistant: Type.Boolean({ default: false, description: 'announce this board to Home Assistant (MQTT discovery: a device with sensors, under homeAssistantPrefix; docs/OPERATIONS.md)' }),
    homeAssistantPrefix: Type.String({ pattern: '^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$', default: 'homeassistant', description: 'Home Assistant\'s discovery prefix (one topic level, as set in its MQTT integration)' }),
    metricsPort: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535, description: 'serve Prometheus metrics on this HTTP port, GET /metrics (0: any free port; absent: none; docs/OPERATIONS.md)' })),
    metricsHost: Type.String({ minLength: 1, default: '127.0.0.1', description: 'address the metrics endpoint listens on (0.0.0.0 for a Prometheus on another machine: it has no login)' }),
    simulateMsPerInput: Type.Integer({ minimum: 0, maximum: 600_000, default: 0, description: 'testing: make every input take this long (a slow board; 0 = real speed)' }),
    logLevel: Type.Union(['debug', 'info', 'warn', 'error', 'silent'].map((l) => Type.Literal(l)), { default: 'info', description: 'debug, info, warn, error or silent' }),
  },
  { additionalProperties: false },
);

export type Config = Static<typeof ConfigSchema> & { logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent' };

function defaultDataDir(): string {
  return path.join(os.homedir(), '.kizuna');
}

export const kebab = (key: string): string => key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
export const envName = (key: string): string => 'KIZUNA_' + key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();

/** A string from a flag or the environment, as the schema's type for `key` wants it. */
function coerce(schema: TSchema, raw: string): unknown {
  const type = (schema as { type?: string }).type;
  if (type === 'integer' || type === 'number') {
    // Plain decimal only ("0x10" or "1e3" in a config is more likely a mistake than a wish).
    return /^\s*-?\d+(\.\d+)?\s*$/.test(raw) ? Number(raw) : raw;
  }
  if (type === 'array') return raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (type === 'boolean') return ({ true: true, '1': true, yes: true, false: false, '0': false, no: false } as Record<string, boolean>)[raw.trim().toLowerCase()] ?? raw;
  return raw;
}

export interface ConfigSources {
  /** Parsed --flags (string values) with camelCase keys. */
  flags?: Record<string, string | undefined>;
  env?: NodeJS.ProcessEnv;
  /** Path of a JSON config file (else --config, else $KIZUNA_CONFIG). */
  file?: string;
  /** Values set by code, on top of everything (tests, the demo). */
  overrides?: Partial<Config>;
}

export function loadConfig(sources: ConfigSources = {}): Config {
  const env = sources.env ?? process.env;
  const flags = sources.flags ?? {};
  const file = sources.file ?? flags.config ?? env.KIZUNA_CONFIG;
  const merged: Record<string, unknown> = {};
  const origin: Record<string, string> = {};
  if (file) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (err) {
      throw new KizunaError('KZ_ERR_CONFIG', `config file ${file}: ${(err as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new KizunaError('KZ_ERR_CONFIG', `config file ${file}: must hold a JSON object`);
    }
    for (const [k, v] of Object.entries(parsed)) [merged[k], origin[k]] = [v, `${file}`];
  }
  for (const [key, schema] of Object.entries(ConfigSchema.properties)) {
    const fromEnv = env[envName(key)];
    if (fromEnv !== undefined) [merged[key], origin[key]] = [coerce(schema, fromEnv), envName(key)];
    const fromFlag = flags[key];
    if (fromFlag !== undefined) [merged[key], origin[key]] = [coerce(schema, fromFlag), `--${kebab(key)}`];
  }
  for (const [k, v] of Object.entries(sources.overrides ?? {})) [merged[k], origin[k]] = [v, 'code'];
  if (file && Array.isArray(merged.models)) {
    // Relative model folders in a config file are relative to that file.
    merged.models = (merged.models as unknown[]).map((m) => (typeof m === 'string' && origin.models === file ? path.resolve(path.dirname(file), m) : m));
  }
  const config = Value.Default(ConfigSchema, merged);
  const problems = [...Value.Errors(ConfigSchema, config)].map((e) => {
    const key = e.path.split('/')[1] ?? '';
    const where = origin[key] ? ` (from ${origin[key]})` : '';
    return `${e.path.slice(1) || '(root)'}${where}: ${e.message}${e.value !== undefined ? `, got ${JSON.stringify(e.value)}` : ''}`;
  });
  if (problems.length) throw new KizunaError('KZ_ERR_CONFIG', `invalid configuration:\n  ${problems.join('\n  ')}`);
  return config as Config;
}

/** One line per setting, for `kizuna agent --help`. */
export function describeConfig(): string {
  return Object.entries(ConfigSchema.properties)
    .map(([key, s]) => {
      const schema = s as TSchema & { description?: string; default?: unknown };
      const def = schema.default !== undefined ? ` (default ${JSON.stringify(schema.default)})` : '';
      return `  --${kebab(key).padEnd(20)} ${envName(key).padEnd(26)} ${schema.description ?? ''}${def}`;
    })
    .concat(`  ${'--config'.padEnd(22)} ${'KIZUNA_CONFIG'.padEnd(26)} a JSON file with any of the keys above (camelCase)`)
    .join('\n');
}
