/**
 * The verified download (models/download.ts) against a loopback server that misbehaves in the
 * ways real servers and proxies do: ignores Range, answers another range, sends too many bytes,
 * fails with 5xx then recovers, stalls. Whatever happens, the destination appears only with the
 * right bytes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { KizunaError } from '../../mesh/errors.js';
import { download, partPath } from '../../models/download.js';

const BODY = randomBytes(300_000);
const SHA = createHash('sha256').update(BODY).digest('hex');
type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;
let handler: Handler;
const ranges: (string | undefined)[] = [];
const server = http.createServer((req, res) => {
  ranges.push(req.headers.range);
  handler(req, res);
});
let url = '';
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-download-'));
let n = 0;
const dest = () => path.join(root, `f${n++}`, 'model.onnx');

before(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/model.onnx`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  fs.rmSync(root, { recursive: true, force: true });
});

/** Serves `bytes`, honouring Range unless told not to. */
const serve = (bytes: Buffer, honourRange = true): Handler => (req, res) => {
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (m && honourRange) {
    const start = Number(m[1]);
    res.writeHead(206, { 'content-length': bytes.length - start, 'content-range': `bytes ${start}-${bytes.length - 1}/${bytes.length}` });
    return void res.end(bytes.subarray(start));
  }
  res.writeHead(200, { 'content-length': bytes.length });
  res.end(bytes);
};

/** A destination folder holding a partial file of the first `kept` bytes of `bytes`. */
function withPart(bytes: Buffer, kept: number): string {
  const d = dest();
  fs.mkdirSync(path.dirname(d), { recursive: true });
  fs.writeFileSync(partPath(d, SHA), bytes.subarray(0, kept));
  return d;
}

const opts = (d: string) => ({ url, dest: d, sha256: SHA, size: BODY.length, backoffMs: 10 });
const code = (c: string) => (err: unknown) => err instanceof KizunaError && err.code === c;
const folder = (d: string) => fs.readdirSync(path.dirname(d));

test('a server that ignores Range sends the whole file again: the partial file is rewritten, not appended to', async () => {
  handler = serve(BODY, false);
  const d = withPart(BODY, 100_000);
  ranges.length = 0;
  const r = await download(opts(d));
  assert.deepEqual(ranges, ['bytes=100000-']);
  assert.equal(r.transferred, BODY.length);
  assert.ok(fs.readFileSync(d).equals(BODY));
  assert.deepEqual(folder(d), ['model.onnx']);
});

test('a server answering another range than asked: the partial file is dropped and the next attempt starts from zero', async () => {
  handler = (req, res) => {
    if (!req.headers.range) return serve(BODY)(req, res);
    res.writeHead(206, { 'content-length': 10, 'content-range': `bytes 5-14/${BODY.length}` });
    res.end(BODY.subarray(5, 15));
  };
  const d = withPart(BODY, 100_000);
  ranges.length = 0;
  await download(opts(d));
  assert.deepEqual(ranges, ['bytes=100000-', undefined]);
  assert.ok(fs.readFileSync(d).equals(BODY));
});

test('more bytes than the catalogue says: KZ_ERR_MODEL_INTEGRITY at once, nothing kept', async () => {
  handler = serve(Buffer.concat([BODY, Buffer.alloc(100_000)]));
  const d = dest();
  fs.mkdirSync(path.dirname(d));
  await assert.rejects(download(opts(d)), (err) => code('KZ_ERR_MODEL_INTEGRITY')(err) && /more than the 300000 bytes/.test((err as Error).message));
  assert.deepEqual(folder(d), []);
});

test('a partial file whose kept bytes are wrong: the resumed file fails its sha256, is dropped, and one fresh transfer gets it right', async () => {
  handler = serve(BODY);
  const bad = Buffer.from(BODY);
  bad[10] = bad[10]! ^ 1;
  const d = withPart(bad, 100_000);
  ranges.length = 0;
  await download(opts(d));
  assert.deepEqual(ranges, ['bytes=100000-', undefined]);
  assert.ok(fs.readFileSync(d).equals(BODY));
});

test('HTTP 503 is tried again (then served); HTTP 404 is final, KZ_ERR_MODEL_LOAD', async () => {
  let calls = 0;
  handler = (req, res) => (++calls === 1 ? void res.writeHead(503).end() : serve(BODY)(req, res));
  const d = dest();
  fs.mkdirSync(path.dirname(d));
  const r = await download(opts(d));
  assert.equal(r.requests, 2);
  handler = (_req, res) => void res.writeHead(404).end();
  calls = 0;
  const d2 = dest();
  fs.mkdirSync(path.dirname(d2));
  ranges.length = 0;
  await assert.rejects(download(opts(d2)), (err) => code('KZ_ERR_MODEL_LOAD')(err) && /HTTP 404/.test((err as Error).message));
  assert.equal(ranges.length, 1);
  assert.deepEqual(folder(d2), []);
});

test('a server that stalls mid-transfer is given up after the idle timeout; what came is kept for the next run', async () => {
  handler = (_req, res) => {
    res.writeHead(200, { 'content-length': BODY.length });
    res.write(BODY.subarray(0, 50_000)); // then nothing, connection open
  };
  const d = dest();
  fs.mkdirSync(path.dirname(d));
  const started = performance.now();
  await assert.rejects(download({ ...opts(d), retries: 0, idleTimeoutMs: 300 }), (err) => code('KZ_ERR_MODEL_LOAD')(err) && /nothing received for 300 ms/.test((err as Error).message));
  assert.ok(performance.now() - started < 5000);
  assert.deepEqual(folder(d), [path.basename(partPath(d, SHA))]);
  assert.equal(fs.statSync(partPath(d, SHA)).size, 50_000);
  handler = serve(BODY);
  ranges.length = 0;
  const r = await download(opts(d));
  assert.deepEqual(ranges, ['bytes=50000-']);
  assert.equal(r.resumedFrom, 50_000);
  assert.equal(r.transferred, BODY.length - 50_000);
  assert.deepEqual(folder(d), ['model.onnx']);
});

test('a destination already there with the right bytes needs no request; with wrong bytes it is replaced', async () => {
  handler = serve(BODY);
  const d = dest();
  fs.mkdirSync(path.dirname(d));
  fs.writeFileSync(d, BODY);
  ranges.length = 0;
  assert.equal((await download(opts(d))).requests, 0);
  fs.writeFileSync(d, 'stale');
  assert.equal((await download(opts(d))).requests, 1);
  assert.ok(fs.readFileSync(d).equals(BODY));
});
