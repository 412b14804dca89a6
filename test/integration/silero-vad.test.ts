/**
 * A stateful, non-image model through the generic tensor path: Silero VAD v4 served by a real
 * agent over MQTT. The app sends a 512-sample frame at 16 kHz, the sample rate as an int64 scalar
 * (shape []) and the LSTM state h/c; it gets the speech probability and the next state hn/cn, and
 * feeds them back with the next frame. The signal is synthetic (no audio file in ../shared): near
 * silence, then a voiced vowel (harmonics of a wavering pitch shaped by three moving formants,
 * syllables at 4 Hz), then a steady 1 kHz tone, which is loud but not speech.
 * Skipped when ../shared is absent.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Agent } from '../../agent/agent.js';
import type { KizunaClient } from '../../mesh/client.js';
import type { Tensor } from '../../mesh/tensor.js';
import { mulberry32 } from '../../models/builtin/digits-data.js';
import { CATALOG_DIR } from '../../models/catalog.js';
import { connectClient, startAgent } from '../helpers/agent.js';
import { expectedSharedPath, sharedPath } from '../helpers/shared.js';

const RATE = 16_000;
const FRAME = 512;
const MODEL = ['models', 'silero-vad-v4', 'silero_vad.onnx'];
const onnx = sharedPath(...MODEL);
const skip = onnx ? undefined : `shared model missing: ${expectedSharedPath(...MODEL)}`;

type Kind = 'silence' | 'voiced' | 'tone';

/** `seconds` of one kind of signal, deterministic (seeded noise). */
function synthesise(kind: Kind, seconds: number, seed: number): Float32Array {
  const random = mulberry32(seed);
  const out = new Float32Array(Math.round(seconds * RATE));
  let phase = 0;
  for (let i = 0; i < out.length; i++) {
    const t = i / RATE;
    const noise = random() - 0.5;
    if (kind === 'silence') {
      out[i] = 0.002 * noise;
    } else if (kind === 'tone') {
      out[i] = 0.3 * Math.sin(2 * Math.PI * 1000 * t);
    } else {
      const f0 = 140 + 30 * Math.sin(2 * Math.PI * 0.7 * t) + 5 * Math.sin(2 * Math.PI * 5 * t);
      phase += (2 * Math.PI * f0) / RATE;
      const formants = [[700 + 200 * Math.sin(2 * Math.PI * 3 * t), 130], [1200 + 400 * Math.sin(2 * Math.PI * 2.3 * t), 150], [2500, 200]] as const;
      let v = 0;
      for (let h = 1; h * f0 < 4000; h++) {
        let gain = 0;
        for (const [centre, width] of formants) gain += 1 / (1 + ((h * f0 - centre) / width) ** 2);
        v += (gain * Math.sin(h * phase)) / Math.sqrt(h);
      }
      const envelope = 0.5 - 0.5 * Math.cos(2 * Math.PI * 4 * t);
      out[i] = envelope * (0.1 * v + 0.01 * noise);
    }
  }
  return out;
}

const f32 = (shape: number[], data: Float32Array): Tensor => ({ dtype: 'float32', shape, data });
const SR: Tensor = { dtype: 'int64', shape: [], data: BigInt64Array.from([16000n]) };
const zeroState = () => f32([2, 1, 64], new Float32Array(128));

describe('Silero VAD v4 through a real agent over MQTT, state passed by the app', { skip }, () => {
  let dir: string;
  let agent: Agent;
  let client: KizunaClient;

  before(async () => {
    // A model folder with the catalogue manifest and the shared file (hard-linked, copied across file systems).
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kizuna-silero-'));
    const manifest = JSON.parse(fs.readFileSync(path.join(CATALOG_DIR, 'silero-vad.json'), 'utf8'));
    try {
      fs.linkSync(onnx!, path.join(dir, manifest.file));
    } catch {
      fs.copyFileSync(onnx!, path.join(dir, manifest.file));
    }
    fs.writeFileSync(path.join(dir, 'silero-vad.json'), JSON.stringify(manifest));
    agent = await startAgent({ node: 'vad', models: [dir] });
    client = await connectClient(agent);
  });
  after(async () => {
    await client?.close();
    await agent?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** One frame through the mesh: the speech probability and the next state. */
  async function step(frame: Float32Array, h: Tensor, c: Tensor, format: 'json' | 'binary' = 'binary') {
    const r = await client.infer('silero-vad', { input: f32([1, FRAME], frame), sr: SR, h, c }, { format });
    const { output, hn, cn } = r.outputs;
    assert.deepEqual(output!.shape, [1, 1]);
    assert.deepEqual(hn!.shape, [2, 1, 64]);
    assert.deepEqual(cn!.shape, [2, 1, 64]);
    return { p: (output!.data as Float32Array)[0]!, h: hn!, c: cn! };
  }

  /** Every frame of a signal, the state carried from one to the next; the probabilities per frame. */
  async function stream(signal: Float32Array, state = { h: zeroState(), c: zeroState() }, format: 'json' | 'binary' = 'binary') {
    const probs: number[] = [];
    for (let at = 0; at + FRAME <= signal.length; at += FRAME) {
      const r = await step(signal.subarray(at, at + FRAME), state.h, state.c, format);
      probs.push(r.p);
      state = { h: r.h, c: r.c };
    }
    return { probs, state };
  }

  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

  test('low on silence, high on a voiced signal, low again on a steady tone, over one carried state', async (t) => {
    const silence = await stream(synthesise('silence', 1, 1));
    const voiced = await stream(synthesise('voiced', 2, 2), silence.state);
    const tone = await stream(synthesise('tone', 1, 3), voiced.state, 'json');
    const settled = voiced.probs.slice(10); // the first frames of speech are where the model makes up its mind
    t.diagnostic(`speech probability: silence max ${Math.max(...silence.probs).toFixed(3)}; voiced mean ${mean(settled).toFixed(3)} (first frames ${voiced.probs.slice(0, 5).map((p) => p.toFixed(2)).join(' ')}); tone max after 10 frames ${Math.max(...tone.probs.slice(10)).toFixed(3)}`);
    assert.equal(silence.probs.length, 31);
    assert.ok(Math.max(...silence.probs) < 0.1, `silence: ${silence.probs}`);
    assert.ok(mean(settled) > 0.8, `voiced: ${voiced.probs}`);
    assert.ok(Math.max(...voiced.probs) > 0.95);
    assert.ok(Math.max(...tone.probs.slice(10)) < 0.1, `tone: ${tone.probs}`);
  });

  test('the state matters: the same frame with zero state and with the carried state gives other outputs', async (t) => {
    const voiced = synthesise('voiced', 1, 4);
    const warm = await stream(voiced.subarray(0, 20 * FRAME));
    const frame = voiced.subarray(20 * FRAME, 21 * FRAME);
    const carried = await step(frame, warm.state.h, warm.state.c);
    const cold = await step(frame, zeroState(), zeroState());
    const again = await step(frame, zeroState(), zeroState());
    t.diagnostic(`frame 21 of a vowel: p ${carried.p.toFixed(3)} with the carried state, ${cold.p.toFixed(3)} with zero state`);
    assert.equal(cold.p, again.p, 'the agent keeps no state of its own: zero state twice gives the same answer');
    assert.ok(carried.p - cold.p > 0.3, `carried ${carried.p} vs zero state ${cold.p}`);
    assert.notDeepEqual(carried.h.data, cold.h.data);
  });

  test('JSON and KZB1 carry the int64 scalar sr and the state alike (state round-trips JSON exactly)', async () => {
    const signal = synthesise('voiced', 0.5, 5);
    const binary = await stream(signal, undefined, 'binary');
    const json = await stream(signal, undefined, 'json');
    assert.deepEqual(json.probs, binary.probs);
    assert.deepEqual(json.state.h.data, binary.state.h.data);
  });

  test('a hand-written JSON request (what any MQTT client would publish) is answered', async () => {
    const frame = Array.from(synthesise('voiced', FRAME / RATE, 6), (v) => Math.round(v * 1e4) / 1e4);
    const zeros = new Array(128).fill(0);
    const body = {
      inputs: {
        input: { dtype: 'float32', shape: [1, 512], data: frame },
        sr: { dtype: 'int64', shape: [], data: [16000] },
        h: { dtype: 'float32', shape: [2, 1, 64], data: zeros },
        c: { dtype: 'float32', shape: [2, 1, 64], data: zeros },
      },
    };
    const r = await client.send('silero-vad', Buffer.from(JSON.stringify(body)));
    const p = (r.outputs.output!.data as Float32Array)[0]!;
    assert.ok(p >= 0 && p <= 1);
    assert.equal(r.outputs.hn!.data.length, 128);
  });

  test('the sample rate must be a scalar: shape [1] is refused (KZ_ERR_BAD_SHAPE), int32 too (KZ_ERR_BAD_DTYPE)', async () => {
    const frame = f32([1, FRAME], new Float32Array(FRAME));
    await assert.rejects(
      client.infer('silero-vad', { input: frame, sr: { dtype: 'int64', shape: [1], data: BigInt64Array.from([16000n]) }, h: zeroState(), c: zeroState() }),
      (err: Error & { code?: string }) => err.code === 'KZ_ERR_BAD_SHAPE' && /input "sr" wants shape \[\]/.test(err.message),
    );
    await assert.rejects(
      client.infer('silero-vad', { input: frame, sr: { dtype: 'int32', shape: [], data: Int32Array.from([16000]) }, h: zeroState(), c: zeroState() }),
      (err: Error & { code?: string }) => err.code === 'KZ_ERR_BAD_DTYPE',
    );
  });
});
