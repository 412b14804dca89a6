/**
 * Discovery as the election sees it: peers whose node is revoked are not there. A revoked board
 * may still advertise itself as the broker (with a higher term, even); no board walks to it,
 * steps down for it or follows it.
 */
import { EventEmitter } from 'node:events';
import type { Advert } from '../advert.js';
import type { Discovery } from './discovery.js';

export function withoutRevoked(inner: Discovery, isRevoked: (node: string) => boolean): Discovery {
  const view = new EventEmitter() as Discovery;
  inner.on('peer', (a: Advert) => {
    if (!isRevoked(a.node)) view.emit('peer', a);
  });
  inner.on('duplicate', (a: Advert) => view.emit('duplicate', a));
  return Object.assign(view, {
    start: (self: Advert) => inner.start(self),
    update: (self: Advert) => inner.update(self),
    refresh: () => inner.refresh(),
    stop: () => inner.stop(),
    peers: () => new Map([...inner.peers()].filter(([node]) => !isRevoked(node))),
  });
}
