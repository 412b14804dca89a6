/**
 * Proof of membership in hello answers: what a board signs, what a prober with the mesh CA
 * accepts, and every way an impostor's answer is refused. Pure checks first, then real sockets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { Advert } from '../../agent/advert.js';
import { answerHello, isHello, probe, UnprovenAnswer } from '../../agent/discovery/hello.js';
import { helloProver, helloVerifier, newNonce, type HelloProver } from '../../agent/discovery/hello-proof.js';
import { createCA, generateKeyPair, issueCert, type CertKind } from '../../mesh/x509.js';

const MESH = 'home';
const meshCA = createCA({ mesh: MESH });
const rogueCA = createCA({ mesh: MESH }); // same mesh name, another key: what an impostor can make

function identity(ca: typeof meshCA, subject: string, kind: CertKind = 'board', mesh = MESH, now?: Date) {
  const { privateKey, publicKey } = generateKeyPair();
  const issued = issueCert({ ca: { key: ca.key, cert: ca.cert }, publicKey, mesh, subject, kind, ...(now ? { now, days: 1 } : {}) });
  return { cert: issued.cert, key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

function advert(over: Partial<Advert> = {}): Advert {
  return {
    v: 1, mesh: MESH, node: 'pi-a', instance: '0123abcd', role: 'broker', term: 3,
    port: 1883, addresses: ['127.0.0.1'], eligible: true, ramMiB: 4096, cores: 4, throttled: false, ...over,
  };
}

const revoked = new Set<string>();
const verify = helloVerifier({ ca: meshCA.cert, mesh: MESH, isRevoked: (n) => revoked.has(n) });
const member = helloProver(identity(meshCA, 'pi-a'));

test('a member\'s signed answer is proven; the same answer for another nonce or with any field changed is not', () => {
  const a = advert();
  const nonce = newNonce();
  const proof = member(a, nonce);
  assert.equal(verify(a, proof, nonce), undefined);
  assert.match(verify(a, proof, newNonce())!, /signature does not match/, 'a replayed answer');
  for (const changed of [{ term: 4 }, { role: 'agent' as const }, { ramMiB: 65536 }, { eligible: false }, { instance: 'ffffffff' }, { port: 1884 }, { cores: 64 }]) {
    assert.match(verify({ ...a, ...changed }, proof, nonce)!, /signature does not match/, JSON.stringify(changed));
  }
  // Addresses are not signed: the prober knows where it connected.
  assert.equal(verify({ ...a, addresses: ['10.0.0.9'] }, proof, nonce), undefined);
});

test('impostors: no proof, garbage, another CA, another node, an app, another mesh, revoked, expired', () => {
  const a = advert();
  const nonce = newNonce();
  assert.match(verify(a, undefined, nonce)!, /no proof/);
  assert.match(verify(a, { cert: 'AAAA', sig: 'AAAA' }, nonce)!, /does not parse/);
  assert.match(verify(a, { cert: 5, sig: 'x' }, nonce)!, /no proof/);
  assert.match(verify(a, helloProver(identity(rogueCA, 'pi-a'))(a, nonce), nonce)!, /not signed by this mesh's CA/);
  assert.match(verify(a, helloProver(identity(meshCA, 'pi-b'))(a, nonce), nonce)!, /answers as pi-a with the certificate of board pi-b/);
  assert.match(verify(a, helloProver(identity(meshCA, 'pi-a', 'app'))(a, nonce), nonce)!, /not a board certificate/);
  assert.match(verify(a, helloProver(identity(meshCA, 'pi-a', 'board', 'other'))(a, nonce), nonce)!, /not a board certificate of this mesh/);
  revoked.add('pi-a');
  try {
    assert.match(verify(a, member(a, nonce), nonce)!, /revoked/);
  } finally {
    revoked.delete('pi-a');
  }
  const old = helloProver(identity(meshCA, 'pi-a', 'board', MESH, new Date('2020-01-01T00:00:00Z')));
  assert.match(verify(a, old(a, nonce), nonce)!, /expired/);
});

/** A hello server on loopback answering as answerHello does, with `prover` (or none); counts first bytes. */
async function helloServer(a: Advert, prover?: HelloProver) {
  const firstBytes: number[] = [];
  const server = net.createServer((socket) => {
    socket.once('data', (chunk: Buffer) => {
      firstBytes.push(chunk[0]!);
      socket.pause();
      if (isHello(chunk)) answerHello(socket, a, { first: chunk, ...(prover ? { prover } : {}) });
      else socket.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return { port, firstBytes, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

test('over real sockets: a member is proven, an unsigned or rogue-CA answer rejects with UnprovenAnswer', async () => {
  const a = advert();
  const real = await helloServer(a, member);
  const unsigned = await helloServer(a);
  const rogue = await helloServer(a, helloProver(identity(rogueCA, 'pi-a')));
  try {
    const answer = await probe('127.0.0.1', real.port, 2000, verify);
    assert.equal(answer.node, 'pi-a');
    assert.equal(answer.term, 3);
    // A prober without the CA (an operator's tool) still reads adverts, signed or not.
    assert.equal((await probe('127.0.0.1', unsigned.port, 2000)).node, 'pi-a');
    for (const s of [unsigned, rogue]) {
      await assert.rejects(probe('127.0.0.1', s.port, 2000, verify), (err: Error) => err instanceof UnprovenAnswer && /not a member of this mesh/.test(err.message));
    }
  } finally {
    await Promise.all([real.close(), unsigned.close(), rogue.close()]);
  }
});

test('an answerer with a prover still answers a hello without a nonce (unsigned) and a hello cut short', async () => {
  const a = advert();
  const server = await helloServer(a, member);
  const ask = (bytes: string, end: boolean) =>
    new Promise<string>((resolve, reject) => {
      const s = net.connect(server.port, '127.0.0.1', () => (end ? s.end(bytes) : s.write(bytes)));
      let text = '';
      s.on('data', (d) => (text += d));
      s.on('close', () => resolve(text));
      s.on('error', reject);
    });
  try {
    const plain = JSON.parse(await ask('KZHI\n', false));
    assert.equal(plain.node, 'pi-a');
    assert.equal(plain.proof, undefined);
    const short = JSON.parse(await ask('KZH', true)); // the prober closed its side: answered at once
    assert.equal(short.node, 'pi-a');
    const signed = JSON.parse(await ask(`KZHI ${'ab'.repeat(16)}\n`, false));
    assert.equal(verify(a, signed.proof, 'ab'.repeat(16)), undefined);
  } finally {
    await server.close();
  }
});
