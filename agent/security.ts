/**
 * What the agent needs of its mesh credentials (credentials.ts): the rules its broker applies to
 * every client, its own MQTT credentials, and the revocations it keeps. Without credentials a
 * mesh is open: allowed on loopback (the demo, tests) and, said loudly, with --insecure.
 */
import type { BrokerSecurity } from '../broker/embedded.js';
import { identityKey } from '../broker/acl.js';
import { KizunaError } from '../mesh/errors.js';
import { verifyToken } from '../mesh/tokens.js';
import type { Config } from './config.js';
import { helloProver, helloVerifier, type HelloProver, type HelloVerifier } from './discovery/hello-proof.js';
import { isRevoked, joinMesh, loadCredentials, revokedSet, storeRevocations, type MeshCredentials } from './credentials.js';
import type { Logger } from './log.js';

export interface AgentSecurity {
  creds: MeshCredentials;
  /** This board's node id, from its token. */
  node: string;
  broker: BrokerSecurity;
  login: { username: string; password: string };
  /** A revocation list seen on the mesh: kept when signed and newer. */
  onRevocations(payload: Buffer): boolean;
  /** Hello answers signed with this board's key, and checked against the mesh CA (with TLS credentials). */
  hello?: { prove: HelloProver; verify: HelloVerifier };
}

export const isLoopback = (host: string): boolean => host === 'localhost' || host === '::1' || host.startsWith('127.');

export function meshSecurity(config: Config, log: Logger): AgentSecurity | undefined {
  if (config.joinToken && !loadCredentials(config.dataDir, config.mesh)) {
    const joined = joinMesh(config.dataDir, config.joinToken);
    log.info(`joined mesh ${joined.mesh} as board ${joined.node}`);
  }
  const creds = loadCredentials(config.dataDir, config.mesh);
  if (!creds) {
    // No address given: loopback (see listenHost), where an open mesh harms no one.
    if (config.broker || config.host === undefined || isLoopback(config.host)) return undefined;
    if (!config.insecure) {
      throw new KizunaError(
        'KZ_ERR_CONFIG',
        `this board has no credentials for mesh ${config.mesh} and listens on ${config.host}: run \`kizuna init\` on the first board ` +
          `or \`kizuna join TOKEN\` on the others (or --insecure for an open mesh on a trusted network)`,
      );
    }
    log.warn(`open mesh: anyone who reaches port ${config.port} can use mesh ${config.mesh} (--insecure)`);
    return undefined;
  }
  if (!creds.board || !creds.boardToken) throw new KizunaError('KZ_ERR_CONFIG', `${creds.dir} has the mesh key but no board.token: run kizuna join TOKEN`);
  if (isRevoked(creds, 'board', creds.board.sub)) {
    throw new KizunaError('KZ_ERR_UNAUTHORIZED', `this board (${creds.board.sub}) is revoked from mesh ${config.mesh}`);
  }
  if (config.node && config.node !== creds.board.sub) {
    throw new KizunaError('KZ_ERR_CONFIG', `--node ${config.node} differs from this board's token (board ${creds.board.sub})`);
  }
  const mesh = config.mesh;
  return {
    creds,
    node: creds.board.sub,
    login: { username: creds.board.sub, password: creds.boardToken },
    onRevocations: (payload) => storeRevocations(creds, payload),
    ...(creds.tls
      ? { hello: { prove: helloProver(creds.tls), verify: helloVerifier({ ca: creds.tls.ca, mesh, isRevoked: (node) => isRevoked(creds, 'board', node) }) } }
      : {}),
    broker: {
      mesh,
      identify: ({ password }) => {
        const claims = verifyToken(password?.toString('utf8') ?? '', creds.publicKey, { mesh, revoked: revokedSet(creds) });
        return claims.kind === 'board' ? { kind: 'board', node: claims.sub } : { kind: 'app', name: claims.sub };
      },
      acceptRevocations: (payload) => storeRevocations(creds, payload),
      isRevoked: (id) => id.kind !== 'open' && creds.revoked.entries.includes(identityKey(id)),
    },
  };
}

/**
 * Where the mesh port listens when --host is not given: every interface for a board with
 * credentials (it must be reachable by the others), loopback for one without (an open mesh must
 * not be reachable from the network).
 */
export function listenHost(config: Config, security: AgentSecurity | undefined, log: Logger): string {
  if (config.host !== undefined) return config.host;
  if (security) return '0.0.0.0';
  if (!config.broker) log.info('no mesh credentials: listening on 127.0.0.1 only (kizuna init or kizuna join to serve the LAN)');
  return '127.0.0.1';
}
