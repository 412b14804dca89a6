import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUILTIN_MODELS_DIR, ConfigSchema, describeConfig, envName, kebab, loadConfig } from '../../agent/config.js';
import { KizunaError } from '../../mesh/errors.js';
import { isSegment } from '../../mesh/topics.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-config-'));
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));
let files = 0;
/** A config file with this exact text (objects are written as JSON). */
function configFile(content: unknown, folder = dir): string {
  const file = path.join(folder, `config-${files++}.json`);
  fs.mkdirSync(folder, { recursive: true });
  fs.writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}
/** Asserts a KZ_ERR_CONFIG whose message holds every given piece. */
function refused(run: () => unknown, ...pieces: string[]): void {
  assert.throws(run, (e: unknown) => {
    assert.ok(e instanceof KizunaError && e.code === 'KZ_ERR_CONFIG', String(e));
    for (const p of pieces) assert.ok(e.message.includes(p), `${JSON.stringify(e.message)} lacks ${JSON.stringify(p)}`);
    return true;
  });
}

test('defaults, with no file, no environment and no flags', () => {
  const c = loadConfig({ env: {} });
  assert.deepStrictEqual(c, {
    mesh: 'home',
    dataDir: path.join(os.homedir(), '.kizuna'),
    port: 1883,
    discovery: 'mdns',
    peers: [],
    eligible: true,
    insecure: false,
    formationMs: 1000,
    probeTimeoutMs: 500,
    keepaliveSeconds: 1,
    rejoinGraceMs: 5000,
    models: [BUILTIN_MODELS_DIR],
    threads: 1,
    concurrency: 1,
    maxQueue: 1024,
    maxPayloadBytes: 8 * 1024 * 1024,
    maxPacketBytes: 33 * 1024 * 1024,
    publishPerSecond: 5000,
    publishBurst: 10_000,
    maxElements: 4 * 1024 * 1024,
    maxImagePixels: 4096 * 4096,
    maxBatch: 64,
    replyCacheSize: 10_000,
    replyCacheTtlMs: 600_000,
    replyCacheBytes: 32 * 1024 * 1024,
    dashboardHost: '127.0.0.1',
    healthIntervalS: 10,
    homeAssistant: false,
    homeAssistantPrefix: 'homeassistant',
    metricsHost: '127.0.0.1',
    simulateMsPerInput: 0,
    logLevel: 'info',
  });
  assert.equal(c.node, undefined, 'the node id comes from the data directory, not the config');
  assert.ok(fs.existsSync(path.join(BUILTIN_MODELS_DIR, 'digits.json')), BUILTIN_MODELS_DIR);
});

test('the defaults are not shared between calls', () => {
  loadConfig({ env: {} }).models.push('/tmp/changed');
  assert.deepStrictEqual(loadConfig({ env: {} }).models, [BUILTIN_MODELS_DIR]);
});

test('precedence: file < environment < flags < overrides, key by key', () => {
  const file = configFile({ port: 1001, threads: 2, concurrency: 3, maxQueue: 4, maxBatch: 5 });
  const c = loadConfig({
    file,
    env: { KIZUNA_THREADS: '12', KIZUNA_CONCURRENCY: '13', KIZUNA_MAX_QUEUE: '14' },
    flags: { concurrency: '23', maxQueue: '24', logLevel: 'warn' },
    overrides: { maxQueue: 34 },
  });
  assert.deepStrictEqual(
    [c.port, c.threads, c.concurrency, c.maxQueue, c.maxBatch, c.logLevel, c.mesh],
    [1001, 12, 23, 34, 5, 'warn', 'home'],
  );
});

test('the file comes from sources.file, else --config, else KIZUNA_CONFIG', () => {
  const [a, b, c] = [configFile({ port: 1 }), configFile({ port: 2 }), configFile({ port: 3 })];
  assert.equal(loadConfig({ file: a, flags: { config: b }, env: { KIZUNA_CONFIG: c } }).port, 1);
  assert.equal(loadConfig({ flags: { config: b }, env: { KIZUNA_CONFIG: c } }).port, 2);
  assert.equal(loadConfig({ env: { KIZUNA_CONFIG: c } }).port, 3);
});

test('numbers and comma lists from strings are coerced', () => {
  const c = loadConfig({
    env: { KIZUNA_PORT: ' 1884 ', KIZUNA_MODELS: ' /a , /b,,/c ', KIZUNA_REPLY_CACHE_TTL_MS: '0' },
    flags: { maxPayloadBytes: '2048', broker: 'mqtts://pi.local:8883', host: '127.0.0.1' },
  });
  assert.deepStrictEqual(
    [c.port, c.models, c.replyCacheTtlMs, c.maxPayloadBytes, c.broker, c.host],
    [1884, ['/a', '/b', '/c'], 0, 2048, 'mqtts://pi.local:8883', '127.0.0.1'],
  );
  assert.deepStrictEqual(loadConfig({ env: {}, flags: { models: 'only' } }).models, ['only']);
});

test('relative models in a file are resolved against the file folder; absolute ones are kept', () => {
  const sub = path.join(dir, 'etc', 'kizuna');
  const file = configFile({ models: ['models', '../shared/m', '/opt/models'] }, sub);
  assert.deepStrictEqual(loadConfig({ file, env: {} }).models, [path.join(sub, 'models'), path.join(dir, 'etc', 'shared', 'm'), '/opt/models']);
  // Folders given by a flag or the environment are not relative to the file.
  assert.deepStrictEqual(loadConfig({ file, env: {}, flags: { models: 'here' } }).models, ['here']);
  assert.deepStrictEqual(loadConfig({ file, env: { KIZUNA_MODELS: 'there' } }).models, ['there']);
});

test('a port out of range names the key and where it came from', () => {
  refused(() => loadConfig({ env: {}, flags: { port: '70000' } }), 'port', '(from --port)', '70000');
  refused(() => loadConfig({ env: { KIZUNA_PORT: '-1' } }), 'port', '(from KIZUNA_PORT)');
  const file = configFile({ port: 65536 });
  refused(() => loadConfig({ file, env: {} }), 'port', `(from ${file})`);
  assert.equal(loadConfig({ env: {}, flags: { port: '0' } }).port, 0);
  assert.equal(loadConfig({ env: {}, flags: { port: '65535' } }).port, 65535);
});

test('a number that is not a number, or not an integer, is refused', () => {
  refused(() => loadConfig({ env: { KIZUNA_THREADS: 'four' } }), 'threads', '(from KIZUNA_THREADS)');
  refused(() => loadConfig({ env: {}, flags: { maxQueue: '' } }), 'maxQueue', '(from --max-queue)');
  refused(() => loadConfig({ env: {}, flags: { concurrency: '1.5' } }), 'concurrency', '(from --concurrency)');
  refused(() => loadConfig({ env: {}, flags: { logLevel: 'loud' } }), 'logLevel', '(from --log-level)');
  const file = configFile({ threads: '2' }); // a file holds JSON numbers, not strings
  refused(() => loadConfig({ file, env: {} }), 'threads', file);
});

test('every problem is listed at once', () => {
  refused(() => loadConfig({ env: { KIZUNA_PORT: '99999' }, flags: { threads: '0' } }), '(from KIZUNA_PORT)', '(from --threads)');
});

test('an unknown key in the file is refused, naming the key and the file', () => {
  const file = configFile({ port: 1883, colour: 'red' });
  refused(() => loadConfig({ file, env: {} }), 'colour', file);
});

test('a file that is missing, not JSON, or a JSON array/null/number is refused, naming the file', () => {
  refused(() => loadConfig({ file: path.join(dir, 'absent.json'), env: {} }), path.join(dir, 'absent.json'));
  const notJson = configFile('port = 1883\n');
  refused(() => loadConfig({ file: notJson, env: {} }), `config file ${notJson}`);
  for (const text of ['[]', '[{"port":1}]', 'null', '42', '"home"']) {
    const file = configFile(text);
    refused(() => loadConfig({ file, env: {} }), `config file ${file}`, 'JSON object');
  }
});

test('a bad mesh or node name is refused, naming where it came from', () => {
  for (const mesh of ['', 'a/b', 'a+b', '#', '.m', 'm m', 'x'.repeat(129)]) {
    refused(() => loadConfig({ env: {}, flags: { mesh } }), 'mesh', '(from --mesh)');
  }
  refused(() => loadConfig({ env: { KIZUNA_NODE: 'pi/1' } }), 'node', '(from KIZUNA_NODE)');
  const file = configFile({ mesh: 'home/+' });
  refused(() => loadConfig({ file, env: {} }), 'mesh', file);
  refused(() => loadConfig({ env: {}, flags: { broker: 'http://pi.local' } }), 'broker', '(from --broker)');
});

test(
  'a mesh or node name with ".." is refused, as the topic rules refuse it',
  () => {
    refused(() => loadConfig({ env: {}, flags: { mesh: 'a..b' } }), 'mesh', '(from --mesh)');
    refused(() => loadConfig({ env: {}, flags: { node: 'a..b' } }), 'node', '(from --node)');
  },
);

test(
  'a value set by overrides is not blamed on the file or the environment',
  () => {
    assert.throws(
      () => loadConfig({ env: { KIZUNA_PORT: '1000' }, overrides: { port: 70000 } }),
      (e: unknown) => e instanceof KizunaError && e.code === 'KZ_ERR_CONFIG' && !e.message.includes('KIZUNA_PORT'),
    );
    const file = configFile({ models: ['m'] }, path.join(dir, 'o'));
    assert.deepStrictEqual(loadConfig({ file, env: {}, overrides: { models: ['rel'] } }).models, ['rel']);
  },
);

test('describeConfig lists every key with its flag and environment variable', () => {
  const lines = describeConfig().split('\n');
  const keys = Object.keys(ConfigSchema.properties);
  assert.equal(lines.length, keys.length + 1);
  assert.match(lines.at(-1)!, /^\s+--config\s+KIZUNA_CONFIG\s+a JSON file/);
  keys.forEach((key, i) => {
    const [flag, env] = lines[i]!.trim().split(/\s+/);
    assert.equal(flag, `--${kebab(key)}`);
    assert.equal(env, envName(key));
  });
  assert.equal(kebab('maxPayloadBytes'), 'max-payload-bytes');
  assert.equal(envName('maxPayloadBytes'), 'KIZUNA_MAX_PAYLOAD_BYTES');
  assert.equal(envName('replyCacheTtlMs'), 'KIZUNA_REPLY_CACHE_TTL_MS');
  assert.match(describeConfig(), /--port\s+KIZUNA_PORT\s+MQTT port.*\(default 1883\)/);
});

test('describeConfig describes every key', () => {
  for (const line of describeConfig().split('\n')) assert.match(line, /^\s+--\S+\s+KIZUNA_\S+\s+\w/, line);
});
