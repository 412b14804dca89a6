/**
 * Settling this board's node id while the mesh forms. Discovery may show a live board that claims
 * the same id (an SD card copied to a second Pi); before joining, this board, the newcomer, takes
 * a fresh id (agent/identity.ts), or stops with a clear error when it cannot. Kept apart from the
 * agent because it is the only place that decides a board's name can change.
 */
import type { Advert } from './advert.js';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import type { AgentSecurity } from './security.js';
import { probe } from './discovery/hello.js';
import { renewNodeId } from './identity.js';
import { KizunaError } from '../mesh/errors.js';

export interface IdentitySettleOptions {
  config: Config;
  log: Logger;
  /** This process: another instance with our id is a duplicate, our own advert is not. */
  instance: string;
  node: () => string;
  /** Still forming: a duplicate is settled before joining; later it is only reported. */
  joining: () => boolean;
  security?: AgentSecurity;
}

export class IdentitySettler {
  private duplicateOf?: Advert;

  constructor(private readonly o: IdentitySettleOptions) {}

  /** Discovery's 'duplicate' event: an advert of another instance, perhaps with our id. */
  seen(a: Advert): void {
    if (a.node !== this.o.node() || a.instance === this.o.instance) return;
    if (this.o.joining()) this.duplicateOf = a;
    else this.o.log.warn(`board at ${a.addresses.join(', ')} claims this node id (${a.node}); it is the newcomer and must take another`);
  }

  /**
   * A live board of the mesh already uses this node id: the fresh id this board took (kept in the
   * data directory), nothing when there was no clash, or an error when the id was configured.
   */
  async settle(): Promise<string | undefined> {
    const other = this.duplicateOf;
    if (!other) return undefined;
    const { config, log } = this.o;
    const where = other.addresses.join(', ') || 'another address';
    if (this.o.security) return this.settleCredentialed(other, where);
    if (config.node) {
      throw new KizunaError('KZ_ERR_CONFIG', `node id ${this.o.node()} is already used by a live board at ${where} (a copied SD card or config?); choose another with --node`);
    }
    const old = this.o.node();
    const renewed = await renewNodeId(config.dataDir);
    this.duplicateOf = undefined;
    log.warn(`node id ${old} is already used by a live board at ${where} (a copied SD card?): this board is now ${renewed}, kept in ${config.dataDir}`);
    return renewed;
  }

  /**
   * With credentials the node id is the one in this board's certificate: it cannot change. A board
   * that proves it holds the same certificate is a copy of this one (a copied SD card); anything
   * else claiming the id is an impostor, ignored.
   */
  private async settleCredentialed(other: Advert, where: string): Promise<undefined> {
    this.duplicateOf = undefined;
    const host = other.addresses[0];
    try {
      if (!host) throw new Error('no address');
      await probe(host, other.port, this.o.config.probeTimeoutMs, this.o.security?.hello?.verify);
    } catch (err) {
      this.o.log.warn(`ignored a device at ${where} claiming this node id (${this.o.node()}): ${(err as Error).message}`);
      return undefined;
    }
    throw new KizunaError(
      'KZ_ERR_CONFIG',
      `board ${this.o.node()}'s credentials are in use by a live board at ${where} (a copied SD card?): give each board its own token (kizuna token board NAME)`,
    );
  }
}
