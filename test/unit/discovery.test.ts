import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { advertFromTxt, advertToTxt, validAdvert, type Advert } from '../../agent/advert.js';
import { answerHello, HELLO, isHello, MAX_ANSWER, probe } from '../../agent/discovery/hello.js';
import { StaticDiscovery } from '../../agent/discovery/static.js';
import { MemoryDiscovery, MemoryNetwork } from '../../agent/discovery/memory.js';
import { createDiscovery, NoDiscovery } from '../../agent/discovery/index.js';
import { answerAddresses, instanceName, MdnsDiscovery } from '../../agent/discovery/mdns.js';
import { createLogger } from '../../agent/log.js';

let seq = 0;
function advert(over: Partial<Advert> = {}): Advert {
  return {
    v: 1, mesh: 'home', node: 'pi-a', instance: (++seq).toString(16).padStart(8, '0'), role: 'agent', term: 0,
    port: 1883, addresses: ['10.0.0.5'], eligible: true, ramMiB: 4096, cores: 4, throttled: false, ...over,
  };
}
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

/** The handles that would keep a process alive or leak: sockets, servers, timers. */
function handles(): string[] {
  return process.getActiveResourcesInfo().filter((r) => /TCP|Timeout|UDP/.test(r)).sort();
}

/** Handles once closing ones are gone: a closed handle is listed for a loop turn or two. */
async function settledHandles(expected?: string[]): Promise<string[]> {
  for (let turn = 0; turn < 50 && handles().join() !== (expected ?? []).join(); turn++) await flush();
  return handles();
}

/** A stand-in agent: a TCP server on loopback that answers hellos as the mesh listener will. */
async function fakeAgent(initial: Advert | ((socket: net.Socket) => void)) {
  const sockets = new Set<net.Socket>();
  const fake = {
    advert: typeof initial === 'function' ? undefined : initial,
    port: 0,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    if (typeof initial === 'function') return initial(socket);
    socket.once('data', (chunk: Buffer) => (isHello(chunk.subarray(0, 1)) ? answerHello(socket, fake.advert!) : socket.destroy()));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fake.port = (server.address() as net.AddressInfo).port;
  return fake;
}

test('advert TXT: round trip, Buffers accepted, bad records refused', () => {
  const a = advert({ role: 'broker', term: 7, throttled: true });
  assert.deepEqual(advertFromTxt(advertToTxt(a), a.addresses), a);
  const buffers = Object.fromEntries(Object.entries(advertToTxt(a)).map(([k, v]) => [k, Buffer.from(v)]));
  assert.deepEqual(advertFromTxt(buffers, a.addresses), a);
  for (const [k, v] of [['v', '2'], ['mesh', 'a/b'], ['node', ''], ['inst', 'XYZ'], ['role', 'king'], ['term', '-1'], ['term', '1.5'], ['port', '0'], ['port', '70000'], ['ram', 'lots']]) {
    assert.equal(advertFromTxt({ ...advertToTxt(a), [k!]: v }, a.addresses), undefined, `${k}=${v}`);
  }
  const { cores: _cores, ...missing } = advertToTxt(a);
  assert.equal(advertFromTxt(missing, []), undefined, 'a missing key');
  assert.equal(validAdvert({ ...a, addresses: [1] as unknown as string[] }), false);
  for (const value of Object.values(advertToTxt(advert({ mesh: 'm'.repeat(128), node: 'n'.repeat(128) })))) {
    assert.ok(Buffer.byteLength(value) + 6 <= 255, 'every TXT string fits in 255 bytes');
  }
});

test('isHello: the first byte decides, MQTT CONNECT is not a hello', () => {
  assert.equal(isHello(HELLO), true);
  assert.equal(isHello(Buffer.from('K')), true);
  assert.equal(isHello(Buffer.from([0x10, 0x0c])), false);
  assert.equal(isHello(Buffer.alloc(0)), false);
});

test('probe: a good answer is the advert; empty addresses become the probed host', async () => {
  const a = advert({ addresses: [] });
  const fake = await fakeAgent(a);
  try {
    assert.deepEqual(await probe('127.0.0.1', fake.port, 2000), { ...a, addresses: ['127.0.0.1'] });
    fake.advert = advert({ addresses: ['192.168.1.9'] });
    assert.deepEqual((await probe('127.0.0.1', fake.port, 2000)).addresses, ['192.168.1.9']);
  } finally {
    await fake.close();
  }
});

test('probe: garbage, invalid adverts, silence, refusal and oversized answers reject', async (t) => {
  const reply = (text: string | Buffer) => (s: net.Socket) => s.once('data', () => s.end(text));
  const cases: [string, (s: net.Socket) => void, RegExp][] = [
    ['garbage', reply('not json at all\n'), /not JSON/],
    ['an array', reply('[1,2]\n'), /non-object/],
    ['an invalid advert', reply(JSON.stringify({ ...advert(), v: 99 }) + '\n'), /invalid advert/],
    ['nothing, then close', (s) => s.once('data', () => s.end()), /closed without answering/],
    ['an oversized line', (s) => s.once('data', () => s.write(Buffer.alloc(MAX_ANSWER + 100, 0x61))), /more than 8192 bytes/],
    ['silence', () => {}, /no answer .* in 100 ms/],
  ];
  for (const [name, handler, error] of cases) {
    await t.test(name, async () => {
      const fake = await fakeAgent(handler);
      try {
        await assert.rejects(probe('127.0.0.1', fake.port, 100), error);
      } finally {
        await fake.close();
      }
    });
  }
  await t.test('a closed port', async () => {
    const fake = await fakeAgent(() => {});
    await fake.close();
    await assert.rejects(probe('127.0.0.1', fake.port, 1000), /ECONNREFUSED/);
  });
  await t.test('an answer without its newline counts when the agent closes', async () => {
    const a = advert();
    const fake = await fakeAgent(reply(JSON.stringify(a)));
    try {
      assert.deepEqual(await probe('127.0.0.1', fake.port, 1000), a);
    } finally {
      await fake.close();
    }
  });
});

test('StaticDiscovery: finds agents of its mesh, sees changes, reports duplicates, stop leaves nothing', async () => {
  const before = await settledHandles();
  const self = advert({ node: 'self' });
  const agents = {
    a: await fakeAgent(advert({ node: 'pi-a' })),
    b: await fakeAgent(advert({ node: 'pi-b' })),
    me: await fakeAgent(self), // its own listener, listed like any other peer
    other: await fakeAgent(advert({ node: 'pi-x', mesh: 'lab' })),
    c: await fakeAgent(advert({ node: 'pi-c' })),
  };
  const closed = await fakeAgent(() => {});
  await closed.close();
  const peers = [...Object.values(agents), closed].map((f) => ({ host: '127.0.0.1', port: f.port }));
  const d = new StaticDiscovery({ mesh: 'home', peers, probeIntervalMs: 3_600_000, probeTimeoutMs: 1000 });
  const seen: Advert[] = [];
  const dups: Advert[] = [];
  d.on('peer', (a: Advert) => seen.push(a));
  d.on('duplicate', (a: Advert) => dups.push(a));
  try {
    await d.start(self);
    assert.deepEqual([...d.peers().keys()].sort(), ['pi-a', 'pi-b', 'pi-c'], 'not itself, not another mesh');
    assert.equal(seen.length, 3);
    assert.deepEqual(d.peers().get('pi-a')!.addresses, ['127.0.0.1', '10.0.0.5'], 'the probed host first');

    await d.probeAll();
    assert.equal(seen.length, 3, 'an unchanged advert is not news');

    agents.b.advert = { ...agents.b.advert!, role: 'broker', term: 2 };
    await d.probeAll();
    assert.equal(seen.length, 4);
    assert.equal(seen[3]!.role, 'broker');
    assert.equal(d.peers().get('pi-b')!.term, 2);

    agents.b.advert = advert({ node: 'pi-b' }); // restarted on the same endpoint: a new instance
    await d.probeAll();
    assert.equal(seen.length, 5);
    assert.equal(dups.length, 0, 'a restart in place is not a duplicate');

    agents.c.advert = advert({ node: 'pi-a' }); // another board claims pi-a
    await d.probeAll();
    assert.equal(dups.length >= 1, true);
    assert.equal(dups[0]!.node, 'pi-a');

    dups.length = 0;
    agents.c.advert = { ...self, instance: 'abcdef0123' }; // a copy of this very board
    await d.probeAll();
    assert.deepEqual(dups.filter((a) => a.node === 'self').map((a) => a.instance), ['abcdef0123']);
    await d.probeAll();
    assert.equal(dups.filter((a) => a.node === 'self').length, 1, 'reported once while unchanged');
    assert.equal(d.peers().get('self')?.instance, 'abcdef0123', 'reported as a peer too');

    d.refresh(); // a round in flight when stop() comes
  } finally {
    await d.stop();
    await Promise.all([...Object.values(agents)].map((f) => f.close()));
  }
  assert.deepEqual(await settledHandles(before), before, 'no socket, server or timer left');
});

test('StaticDiscovery: overlapping refreshes queue one more round, never run two at once', async () => {
  const fake = await fakeAgent(advert({ node: 'pi-a' }));
  const d = new StaticDiscovery({ mesh: 'home', peers: [{ host: '127.0.0.1', port: fake.port }], probeIntervalMs: 3_600_000 });
  try {
    await d.start(advert({ node: 'self' }));
    const rounds = [d.probeAll(), d.probeAll(), d.probeAll()];
    assert.equal(rounds[1], rounds[2], 'one queued round serves every call made during a round');
    await Promise.all(rounds);
  } finally {
    await d.stop();
    await fake.close();
  }
});

test('MemoryDiscovery: members see each other and changes at once', async () => {
  const net = new MemoryNetwork();
  const [a, b] = [new MemoryDiscovery(net), new MemoryDiscovery(net)];
  const events: string[] = [];
  b.on('peer', (x: Advert) => events.push(`${x.node}:${x.role}`));
  await a.start(advert({ node: 'a' }));
  await b.start(advert({ node: 'b' }));
  assert.deepEqual([...a.peers().keys()], ['b']);
  assert.deepEqual([...b.peers().keys()], ['a']);
  await a.update({ ...a.self!, role: 'broker', term: 1 });
  await a.update({ ...a.self!, role: 'broker', term: 1 });
  assert.deepEqual(events, ['a:agent', 'a:broker'], 'a repeated advert is not news');
  await a.start(advert({ node: 'a', mesh: 'lab' })).catch(() => {});
  const other = new MemoryDiscovery(net);
  await other.start(advert({ node: 'x', mesh: 'lab' }));
  assert.equal(b.peers().has('x'), false, 'another mesh is ignored');
});

test('MemoryDiscovery: partition hides changes until heal; nodes outside the cut see both sides', async () => {
  const net = new MemoryNetwork();
  const [a, b, c] = [new MemoryDiscovery(net), new MemoryDiscovery(net), new MemoryDiscovery(net)];
  await a.start(advert({ node: 'a' }));
  await b.start(advert({ node: 'b' }));
  await c.start(advert({ node: 'c' }));
  net.partition(['a'], ['b']);
  await a.update({ ...a.self!, term: 5 });
  assert.equal(b.peers().get('a')!.term, 0, 'b did not hear it');
  assert.equal(c.peers().get('a')!.term, 5, 'c is on neither side');
  b.refresh();
  await flush();
  assert.equal(b.peers().get('a')!.term, 0, 'refresh does not cross a partition');
  net.heal();
  await flush();
  assert.equal(b.peers().get('a')!.term, 5);
});

test('MemoryDiscovery: a dropped node stays visible, a stopped one says goodbye', async () => {
  const net = new MemoryNetwork();
  const [a, b, c] = [new MemoryDiscovery(net), new MemoryDiscovery(net), new MemoryDiscovery(net)];
  await a.start(advert({ node: 'a' }));
  await b.start(advert({ node: 'b' }));
  await c.start(advert({ node: 'c' }));
  net.drop('b');
  await b.update({ ...b.self!, term: 9 });
  assert.equal(a.peers().get('b')!.term, 0, 'a killed node tells no one');
  await c.stop();
  const late = new MemoryDiscovery(net);
  await late.start(advert({ node: 'late' }));
  assert.deepEqual([...late.peers().keys()].sort(), ['a', 'b'], 'b lingers like mDNS after SIGKILL; c left cleanly');
  assert.equal(a.peers().has('c'), true, 'a peer already seen is not forgotten');

  const dups: Advert[] = [];
  a.on('duplicate', (x: Advert) => dups.push(x));
  const restarted = new MemoryDiscovery(net);
  await restarted.start(advert({ node: 'b' })); // same address and port: a restart
  assert.equal(dups.length, 0);
  const copy = new MemoryDiscovery(net);
  const copyDups: Advert[] = [];
  copy.on('duplicate', (x: Advert) => copyDups.push(x));
  await copy.start(advert({ node: 'a', addresses: ['10.0.0.6'] })); // a second board with a's id
  assert.equal(dups.length, 1, 'a sees its own id on another instance');
  assert.equal(copyDups.length, 1, 'and so does the copy');
});

test('a throwing listener does not stop discovery', async () => {
  const net = new MemoryNetwork();
  const [a, b] = [new MemoryDiscovery(net), new MemoryDiscovery(net)];
  a.on('peer', () => {
    throw new Error('listener bug');
  });
  await a.start(advert({ node: 'a' }));
  await b.start(advert({ node: 'b' }));
  await b.update({ ...b.self!, term: 3 });
  assert.equal(a.peers().get('b')!.term, 3);
});

test('createDiscovery: disabled, static with peers, else mDNS (not started here)', () => {
  const log = createLogger('silent');
  assert.ok(createDiscovery({ mesh: 'home', disabled: true, peers: [{ host: 'x', port: 1 }], log }) instanceof NoDiscovery);
  assert.ok(createDiscovery({ mesh: 'home', peers: [{ host: 'x', port: 1 }], log }) instanceof StaticDiscovery);
  assert.ok(createDiscovery({ mesh: 'home', peers: [], log }) instanceof MdnsDiscovery);
});

test('mDNS helpers: instance names fit a DNS label, addresses IPv4 first', () => {
  assert.equal(instanceName('home', 'pi-a'), 'home-pi-a');
  assert.equal(instanceName('h.o', 'n.1'), 'h-o-n-1');
  const long = instanceName('m'.repeat(128), 'n'.repeat(128));
  assert.ok(Buffer.byteLength(long) <= 63);
  assert.notEqual(long, instanceName('m'.repeat(128), 'n'.repeat(127)), 'a hash keeps long names apart');
  assert.deepEqual(answerAddresses('10.77.0.12', ['fe80::1', '10.0.0.2', '10.77.0.12']), ['10.77.0.12', '10.0.0.2', 'fe80::1']);
  assert.deepEqual(answerAddresses(undefined, ['fe80::1', '10.0.0.2']), ['10.0.0.2', 'fe80::1']);
});
