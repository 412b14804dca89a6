/**
 * Property-based fuzzing (fast-check) of what an agent reads from outside: adverts (mDNS TXT
 * records and hello answers, agent/advert.ts) and its configuration (agent/config.ts: environment,
 * flags, a config file, overrides). An advert is valid or refused (undefined/false), never a
 * throw; a configuration is valid by its schema or refused with KZ_ERR_CONFIG.
 * Seeds are fixed, so a failure reproduces.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { Value } from '@sinclair/typebox/value';
import { advertFromTxt, advertToTxt, MAX_TERM, validAdvert, type Advert } from '../../agent/advert.js';
import { helloProver, helloVerifier, newNonce } from '../../agent/discovery/hello-proof.js';
import { createCA, generateKeyPair, issueCert } from '../../mesh/x509.js';
import { ConfigSchema, envName, loadConfig } from '../../agent/config.js';
import { KizunaError } from '../../mesh/errors.js';
import { isSegment } from '../../mesh/topics.js';

const SLOW_MS = 1000;
const check = <Ts>(property: fc.IRawProperty<Ts>, seed: number, numRuns: number) => fc.assert(property, { seed, numRuns, includeErrorInReport: true });

/** f's value, or 'refused' for a KizunaError with `code`; anything else (or a slow call) fails the property. */
function valueOr<T>(f: () => T, code?: string): T | 'refused' {
  const started = performance.now();
  let result: T | 'refused';
  try {
    result = f();
  } catch (err) {
    if (!(err instanceof KizunaError) || err.code !== code) throw new Error(`threw ${(err as Error)?.name} ${(err as KizunaError)?.code ?? ''}: ${(err as Error)?.message}`, { cause: err });
    result = 'refused';
  }
  const ms = performance.now() - started;
  if (ms > SLOW_MS) throw new Error(`took ${ms.toFixed(0)} ms`);
  return result;
}

// ---------------------------------------------------------------- adverts

const FIRST = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_'];
const segmentArb = fc.tuple(fc.constantFrom(...FIRST), fc.string({ unit: fc.constantFrom(...FIRST, '.', ':', '-'), maxLength: 127 }))
  .map(([a, b]) => (a + b).replace(/\.{2,}/g, '.'));
const advertArb: fc.Arbitrary<Advert> = fc.record({
  v: fc.constant(1),
  mesh: segmentArb,
  node: segmentArb,
  instance: fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 8, maxLength: 32 }),
  role: fc.constantFrom('joining' as const, 'agent' as const, 'standby' as const, 'broker' as const),
  term: fc.oneof(fc.nat(), fc.constant(MAX_TERM)),
  port: fc.integer({ min: 1, max: 65535 }),
  addresses: fc.array(fc.oneof(fc.ipV4(), fc.ipV6()), { maxLength: 3 }),
  eligible: fc.boolean(),
  ramMiB: fc.nat(1 << 20),
  cores: fc.nat(256),
  throttled: fc.boolean(),
}, { noNullPrototype: true });

/** TXT values that break parsers: odd numbers, wrong types, Buffers, names that are not segments. */
const txtValueArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom('', ' ', ' 1', '1 ', '1e3', '0x10', '0b1', '-1', '-0', '1.5', 'NaN', 'Infinity', '9007199254740993', '01', '65536', '0',
    'true', '1', 'a/b', '+', '#', 'a..b', '.a', 'ABCDEF12', 'abc', 'a'.repeat(33), 'a'.repeat(129), 'Broker', 'broker', 'caf\u00e9', '\u0000'),
  fc.string({ maxLength: 10 }),
  fc.string({ unit: 'binary', maxLength: 6 }),
  fc.uint8Array({ maxLength: 10 }).map((b) => Buffer.from(b)),
  fc.constantFrom(1, 0, -1, NaN, null, undefined, true, {}, [], ['1'], Buffer.from('1'), Buffer.from([0xff, 0xfe])),
);
const TXT_KEYS = ['v', 'mesh', 'node', 'inst', 'role', 'term', 'port', 'elig', 'ram', 'cores', 'thr'];

test('advertToTxt -> advertFromTxt gives back the advert, from strings or Buffers; every record fits in 255 bytes', () => {
  check(fc.property(advertArb, fc.boolean(), (a, asBuffers) => {
    const txt = advertToTxt(a);
    for (const [k, v] of Object.entries(txt)) assert.ok(Buffer.byteLength(`${k}=${v}`) <= 255, `${k} is ${Buffer.byteLength(v)} bytes`);
    const records = asBuffers ? Object.fromEntries(Object.entries(txt).map(([k, v]) => [k, Buffer.from(v)])) : txt;
    assert.deepEqual(advertFromTxt(records, a.addresses), a);
  }), 0xad01, 4_000);
});

test('advertFromTxt: TXT records with fields corrupted give a valid advert or undefined, never a throw', () => {
  const corruptions = fc.array(fc.record({ key: fc.oneof(fc.constantFrom(...TXT_KEYS), fc.string({ maxLength: 5 })), value: txtValueArb, drop: fc.boolean() }), { minLength: 1, maxLength: 3 });
  check(fc.property(advertArb, corruptions, (a, cs) => {
    const txt: Record<string, unknown> = { ...advertToTxt(a) };
    for (const c of cs) {
      if (c.drop) delete txt[c.key];
      else Object.defineProperty(txt, c.key, { value: c.value, enumerable: true, writable: true, configurable: true });
    }
    const got = valueOr(() => advertFromTxt(txt, a.addresses));
    if (got === undefined || got === 'refused') return;
    assert.ok(validAdvert(got));
    assert.ok(isSegment(got.mesh) && isSegment(got.node) && /^[0-9a-f]{8,32}$/.test(got.instance));
    assert.ok(got.term >= 0 && got.ramMiB >= 0 && got.cores >= 0 && got.port >= 1 && got.port <= 65535);
    assert.equal(got.addresses, a.addresses);
  }), 0xad02, 10_000);
});

test('advertFromTxt: any record of any values gives a valid advert or undefined', () => {
  check(fc.property(fc.dictionary(fc.oneof(fc.constantFrom(...TXT_KEYS), fc.string({ maxLength: 5 })), txtValueArb, { maxKeys: 12 }), fc.array(fc.string(), { maxLength: 2 }), (txt, addresses) => {
    const got = valueOr(() => advertFromTxt(txt, addresses));
    if (got !== undefined && got !== 'refused') assert.ok(validAdvert(got));
  }), 0xad03, 5_000);
});

test('validAdvert: any object (a hello answer is any JSON object) gives a boolean, never a throw', () => {
  const nearArb = fc.tuple(advertArb, fc.array(fc.tuple(fc.constantFrom(...Object.keys(advertToTxt({} as Advert)), 'instance', 'ramMiB', 'eligible', 'throttled', 'addresses'), fc.oneof(txtValueArb, fc.anything({ maxDepth: 1 }))), { minLength: 1, maxLength: 3 }))
    .map(([a, cs]) => ({ ...a, ...Object.fromEntries(cs) }) as Record<string, unknown>);
  const objectArb = fc.oneof(nearArb, fc.object({ maxDepth: 2 }), fc.jsonValue().filter((v) => typeof v === 'object' && v !== null && !Array.isArray(v)).map((v) => v as Record<string, unknown>));
  check(fc.property(objectArb, (o) => {
    const ok = valueOr(() => validAdvert(o));
    assert.equal(typeof ok, 'boolean');
  }), 0xad04, 6_000);
});

test('helloVerifier: any proof value for any advert gives a reason or (only for the member\'s own proof) undefined, never a throw', () => {
  const ca = createCA({ mesh: 'home' });
  const { privateKey, publicKey } = generateKeyPair();
  const cert = issueCert({ ca: { key: ca.key, cert: ca.cert }, publicKey, mesh: 'home', subject: 'pi-a', kind: 'board' }).cert;
  const prove = helloProver({ cert, key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() });
  const verify = helloVerifier({ ca: ca.cert, mesh: 'home', isRevoked: () => false });
  const member: Advert = { v: 1, mesh: 'home', node: 'pi-a', instance: '0123abcd', role: 'broker', term: 2, port: 1883, addresses: [], eligible: true, ramMiB: 4096, cores: 4, throttled: false };
  const real = prove(member, newNonce());
  const b64 = fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b).toString('base64'));
  const proofArb = fc.oneof(
    fc.anything({ maxDepth: 2 }),
    fc.record({ cert: fc.oneof(b64, fc.constant(real.cert), fc.string()), sig: fc.oneof(b64, fc.constant(real.sig), fc.string()) }),
  );
  check(fc.property(advertArb, proofArb, fc.oneof(fc.constant(newNonce()), fc.string()), (a, proof, nonce) => {
    const why = valueOr(() => verify({ ...a, mesh: 'home' }, proof, nonce));
    assert.equal(typeof why, 'string', 'no random proof passes');
  }), 0xad05, 3_000);
});

// ---------------------------------------------------------------- configuration

const KEYS = Object.keys(ConfigSchema.properties);
/** Strings from the environment or flags: numbers in every spelling, booleans, lists, URLs, names. */
const rawArb = fc.oneof(
  fc.constantFrom('', ' ', '0', '1', '-1', '1.5', ' 42 ', '1e3', '0x10', '99999999999999999999', '65536', '-0', 'NaN', 'true', 'false', 'yes', 'no', 'TRUE', 'maybe',
    'mdns', 'none', 'debug', 'silent', 'loud', 'a,b', ',', ' , ', 'h:1', 'h:123456', 'h', 'mqtt://x', 'mqtts://x:8883', 'http://x', 'home', 'a/b', '..', '.a',
    '1.2.3.4', '999.1.1.1', 'a'.repeat(129), 'caf\u00e9', '\u0000'),
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 6 }),
  fc.integer().map(String),
  fc.double().map(String),
);
/** Values set by code: right and wrong types. */
const valueArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(0, 1, -1, 1.5, 1883, 65536, 2 ** 31, 1e300, NaN, Infinity, '', 'home', 'a/b', true, false, null, [], ['a'], [1], {}, { a: 1 }),
  fc.jsonValue({ maxDepth: 2 }),
  rawArb,
);
const configKeyArb = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...KEYS) }, { weight: 1, arbitrary: fc.constantFrom('config', 'nope', '__proto__', 'constructor', 'toString') });

/** For each key, the strings of a small pool it takes on its own: most entries below are valid, so whole configurations pass too. */
const POOL = ['0', '1', '64', '1024', '1883', '5000', '1048576', 'true', 'no', 'home', 'pi-1', 'mqtt://h:1883', '10.0.0.1', 'h:1883, 10.0.0.2:1884', 'a,b', 'mdns', 'none', 'warn', '/tmp/kz'];
const takes = (key: string, raw: string) => {
  try {
    loadConfig({ env: {}, flags: { [key]: raw } });
    return true;
  } catch {
    return false;
  }
};
const VALID_RAW = Object.fromEntries(KEYS.map((k) => [k, POOL.filter((raw) => takes(k, raw))]));
const entryArb = (name: (key: string) => string) => fc.constantFrom(...KEYS).chain((k) =>
  fc.tuple(fc.constant(name(k)), VALID_RAW[k]!.length ? fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...VALID_RAW[k]!) }, { weight: 1, arbitrary: rawArb }) : rawArb));

test('loadConfig: any environment, flags and overrides give a configuration valid by its schema, or KZ_ERR_CONFIG', () => {
  const sourcesArb = fc.record({
    env: fc.array(fc.oneof({ weight: 8, arbitrary: entryArb(envName) }, { weight: 1, arbitrary: fc.tuple(fc.constantFrom('KIZUNA_NOPE', 'PATH'), rawArb) }), { maxLength: 5 }).map((es) => Object.fromEntries(es)),
    flags: fc.array(entryArb((k) => k), { maxLength: 3 }).map((es) => Object.fromEntries(es)),
    overrides: fc.option(fc.dictionary(configKeyArb, valueArb, { maxKeys: 2 }), { nil: {} }),
    missingFile: fc.constantFrom(undefined, undefined, undefined, undefined, undefined, 'env', 'flag'),
  });
  check(fc.property(sourcesArb, ({ env, flags, overrides, missingFile }) => {
    const nowhere = path.join(os.tmpdir(), 'kizuna-fuzz-no-such-dir', 'config.json');
    const sources = {
      env: { ...env, ...(missingFile === 'env' ? { KIZUNA_CONFIG: nowhere } : {}) },
      flags: { ...flags, ...(missingFile === 'flag' ? { config: nowhere } : {}) },
      overrides: overrides as never,
    };
    const config = valueOr(() => loadConfig(sources), 'KZ_ERR_CONFIG');
    if (missingFile) assert.equal(config, 'refused');
    if (config !== 'refused') assert.ok(Value.Check(ConfigSchema, config), JSON.stringify([...Value.Errors(ConfigSchema, config)][0]));
  }), 0xc0f1, 6_000);
});

test('loadConfig: any config file (JSON of any keys and values, or not JSON) gives a valid configuration or KZ_ERR_CONFIG', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-fuzz-config-'));
  try {
    const contentArb = fc.oneof(
      fc.array(entryArb((k) => k), { maxLength: 4 }).map((es) => JSON.stringify(Object.fromEntries(es.map(([k, raw]) => [k, /^-?\d+$/.test(raw) ? Number(raw) : raw])))),
      fc.dictionary(configKeyArb, valueArb, { maxKeys: 5 }).map((o) => JSON.stringify(o)),
      fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)),
      fc.string({ maxLength: 40 }),
      fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b).toString('latin1')),
      fc.constantFrom('', '{', '{"port": 1883,}', '\ufeff{}', '[]', 'null', '{"__proto__": {"port": "x"}}', '{"models": ["../m", "/abs", ""]}'),
    );
    let n = 0;
    check(fc.property(contentArb, (content) => {
      const file = path.join(dir, `c${n++}.json`);
      fs.writeFileSync(file, content);
      const config = valueOr(() => loadConfig({ file, env: {} }), 'KZ_ERR_CONFIG');
      if (config !== 'refused') assert.ok(Value.Check(ConfigSchema, config), JSON.stringify([...Value.Errors(ConfigSchema, config)][0]));
    }), 0xc0f2, 1_000);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
