/**
 * The embedded MQTT broker (aedes), without a listener of its own: the mesh listener hands it the
 * connections it should serve. The only module that imports aedes.
 */
import type { Duplex } from 'node:stream';
import { Aedes, type Client } from 'aedes';
import type { Logger } from '../agent/log.js';
import { KizunaError } from '../mesh/errors.js';
import { identityKey, mayPublish, maySubscribe, type Identity, type Verdict } from './acl.js';
import { parseCatalogTopic, topics } from '../mesh/topics.js';

/**
 * Who a connecting client is. Absent: an open broker (loopback, no credentials), where anyone
 * may do anything. Present: every client must prove an identity, and acl.ts decides what it may do.
 */
export interface BrokerSecurity {
  mesh: string;
  /** The client's identity from its credentials; throws KizunaError (KZ_ERR_UNAUTHORIZED) to refuse it. */
  identify(credentials: { clientId: string; username?: string; password?: Buffer; conn: Duplex }): Identity;
  /**
   * A revocation list published by a client: true when it is signed by the mesh and newer than
   * the one held (it is then kept, and clients it revokes are disconnected). Anything else is refused.
   */
  acceptRevocations?(payload: Buffer): boolean;
  /** Whether a connected identity is revoked now. */
  isRevoked?(id: Identity): boolean;
  /**
   * A catalogue message (`catalog/<model>`) that the ACL lets this identity publish: whether its
   * content is acceptable (agent/distribution.ts catalogGate: the mesh key's signature). Absent:
   * catalogue messages are refused, since nothing could check them.
   */
  acceptCatalog?(model: string, payload: Buffer, id: Identity): Verdict;
}

/** Agents connect as `kizuna-agent-<node>` (agent/broker-role.ts agentClientId). */
const AGENT_ID_PREFIX = 'kizuna-agent-';


/** Refusals, for the logs and the tests: a connection refused, a publish or subscription denied. */
export type Denial = { kind: 'connect' | 'publish' | 'subscribe'; clientId: string; why: string };

export interface RetainedMessage {
  topic: string;
  payload: Buffer;
}

export class EmbeddedBroker {
  private constructor(
    private readonly aedes: Aedes,
    private readonly log: Logger,
    private readonly security?: BrokerSecurity,
    private readonly identities?: WeakMap<Client, Identity>,
  ) {}

  static async create(log: Logger, security?: BrokerSecurity, onDenied?: (d: Denial) => void): Promise<EmbeddedBroker> {
    const identities = new WeakMap<Client, Identity>();
    const deny = (d: Denial) => {
      log.warn(`${d.kind} refused (client ${d.clientId.slice(0, 64)}): ${d.why}`);
      onDenied?.(d);
    };
    const shardResults = security ? topics.allShardResults(security.mesh).slice(0, -1) : '';
    const catalogPrefix = security ? topics.allCatalog(security.mesh).slice(0, -1) : '';
    /**
     * A client id is a session: whoever takes one closes its holder's connection (and fires its
     * will). Agents' ids are their boards' alone, and no identity may take an id another holds.
     */
    const claimClientId = (clientId: string, id: Identity) => {
      if (clientId.startsWith(AGENT_ID_PREFIX) && !(id.kind === 'board' && clientId === `${AGENT_ID_PREFIX}${id.node}`)) {
        throw new KizunaError('KZ_ERR_UNAUTHORIZED', `client id ${clientId.slice(0, 80)} belongs to a board`);
      }
      const holder = (aedes as unknown as { clients: Record<string, Client> }).clients[clientId];
      const held = holder ? identities.get(holder) : undefined;
      if (held && identityKey(held) !== identityKey(id)) throw new KizunaError('KZ_ERR_UNAUTHORIZED', `client id ${clientId.slice(0, 80)} is in use by another identity`);
    };
    const aedes = await Aedes.createBroker({
      authenticate: (client, username, password, callback) => {
        if (!security) {
          // An open mesh: each client its own allowance (else it keeps the small one of a
          // connection that has not logged in, and a client with many requests in flight is cut).
          (client.conn as { identified?: (key: string) => void }).identified?.(`open:${client.id}`);
          return callback(null, true);
        }
        try {
          const id = security.identify({ clientId: client.id, ...(username !== undefined ? { username } : {}), ...(password !== undefined ? { password } : {}), conn: client.conn });
          claimClientId(client.id, id);
          identities.set(client, id);
          (client.conn as { identified?: (key: string) => void }).identified?.(identityKey(id));
          callback(null, true);
        } catch (err) {
          const why = err instanceof KizunaError ? err.message : String(err);
          deny({ kind: 'connect', clientId: client.id, why });
          // MQTT 3.1.1 CONNACK 5: not authorized.
          callback(Object.assign(new Error(why), { returnCode: 5 }), false);
        }
      },
      // A publish with a wildcard in its topic name is a protocol violation; refuse it here so it
      // never reaches a subscriber as a topic nobody can parse safely. Then the identity's rules.
      authorizePublish: (client, packet, callback) => {
        if (packet.topic.startsWith('$SYS') || /[+#\u0000]/.test(packet.topic)) {
          if (client) deny({ kind: 'publish', clientId: client.id, why: `forbidden topic ${JSON.stringify(packet.topic.slice(0, 100))}` });
          return callback(new Error('forbidden topic'));
        }
        if (!client || !security) return callback(null); // published inside the broker: the dispatcher
        if (packet.topic === topics.revoked(security.mesh) && security.acceptRevocations) {
          // Whoever publishes it, only the mesh's signature counts.
          const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
          if (security.acceptRevocations(payload)) {
            callback(null);
            setImmediate(() => broker.disconnectRevoked());
            return;
          }
          deny({ kind: 'publish', clientId: client.id, why: 'a revocation list not signed by the mesh, or not newer' });
          return callback(new Error('revocation list refused'));
        }
        const id = identities.get(client);
        let verdict = id ? mayPublish(id, packet.topic, packet.retain, security.mesh) : { ok: false as const, why: 'no identity' };
        if (verdict.ok && id?.kind === 'board' && packet.topic.startsWith(shardResults)) {
          // The dispatcher blames the board a shard result names: it must be the one that sent it.
          const head = (Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload)).subarray(0, 300).toString('utf8');
          if (!head.startsWith(`{"v":1,"agent":${JSON.stringify(id.node)},`)) verdict = { ok: false, why: `board ${id.node} sent shard results in another board's name` };
        }
        if (verdict.ok && id && packet.topic.startsWith(catalogPrefix)) {
          // Retained for every board to act on: only what the mesh key vouches for.
          const model = parseCatalogTopic(packet.topic)?.model;
          const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
          verdict = !model ? { ok: false, why: 'not a catalogue topic' } : security.acceptCatalog ? security.acceptCatalog(model, payload, id) : { ok: false, why: 'this broker cannot check catalogue entries' };
        }
        if (verdict.ok) return callback(null);
        deny({ kind: 'publish', clientId: client.id, why: verdict.why });
        callback(new Error(verdict.why)); // aedes closes the connection
      },
      authorizeSubscribe: (client, sub, callback) => {
        if (!client || !security) return callback(null, sub);
        const id = identities.get(client);
        const verdict = id ? maySubscribe(id, sub.topic, security.mesh) : { ok: false as const, why: 'no identity' };
        if (verdict.ok) return callback(null, sub);
        deny({ kind: 'subscribe', clientId: client.id, why: verdict.why });
        callback(null, null); // SUBACK 0x80 for this filter; the connection stays
      },
    });
    const broker = new EmbeddedBroker(aedes, log, security, identities);
    return broker;
  }

  /** Closes the connections of clients whose identity is now revoked. */
  disconnectRevoked(): void {
    if (!this.security?.isRevoked) return;
    for (const client of Object.values((this.aedes as unknown as { clients: Record<string, Client> }).clients)) {
      const id = this.identities?.get(client);
      if (id && this.security.isRevoked(id)) {
        this.log.warn(`disconnecting ${client.id}: its credentials are revoked`);
        client.close();
      }
    }
  }

  get connectedClients(): number {
    return this.aedes.connectedClients;
  }

  get closed(): boolean {
    return this.aedes.closed;
  }

  handle(stream: Duplex): void {
    this.aedes.handle(stream);
  }

  /** Publishes from inside the broker (a standby seeding the retained state it mirrored). */
  publish(topic: string, payload: Buffer, retain: boolean): Promise<void> {
    return new Promise((resolve, reject) =>
      this.aedes.publish({ cmd: 'publish', topic, payload, qos: 1, retain, dup: false }, (err) => (err ? reject(err) : resolve())),
    );
  }

  /**
   * Receives, inside the broker process, what is published on `topic` (a filter): the dispatcher
   * sits here so a request costs no extra network hop. Returns the unsubscribe function.
   */
  async subscribe(topic: string, handler: (topic: string, payload: Buffer, retained: boolean) => void): Promise<() => Promise<void>> {
    const deliver = (packet: { topic: string; payload: string | Buffer; retain: boolean }, done: () => void) => {
      try {
        handler(packet.topic, Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload), packet.retain);
      } finally {
        done();
      }
    };
    await new Promise<void>((resolve) => this.aedes.subscribe(topic, deliver, resolve));
    return () => new Promise<void>((resolve) => this.aedes.unsubscribe(topic, deliver, resolve));
  }

  /** Whether a client with this MQTT client id is connected now. */
  hasClient(clientId: string): boolean {
    return Boolean((this.aedes as unknown as { clients: Record<string, unknown> }).clients[clientId]);
  }

  /** Closes every client connection and the broker. */
  stop(): Promise<void> {
    this.log.debug('embedded broker closing');
    return new Promise<void>((resolve) => this.aedes.close(() => resolve()));
  }
}
