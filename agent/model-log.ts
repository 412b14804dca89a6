/**
 * What placement does, told to the operator: the models served and whether each is in memory,
 * the memory budget, and every load, unload and unservable model as it happens. It also tells the
 * agent, at most once a tick, that the models changed (its status lists them).
 */
import type { ModelStore } from '../models/store.js';
import type { Logger } from './log.js';

export function watchModels(store: ModelStore, log: Logger, changed: () => void): void {
  const mib = (b: number) => (b / 1024 / 1024).toFixed(1);
  const { budgetBytes, warm } = store.memory();
  for (const m of store.list()) log.info(`model ${m.manifest.name}@${m.manifest.version} ${warm.has(m.manifest.name) ? 'loaded' : 'served, loaded on demand'} (${(m.bytes / 1024).toFixed(0)} KiB)`);
  log.info(`model memory: ${budgetBytes ? `${mib(budgetBytes)} MiB` : 'no limit'}, ${mib(store.memory().usedBytes)} MiB used`);
  store.on('loaded', (e: { name: string; bytes: number; ms: number }) => log.debug(`model ${e.name} loaded in ${e.ms.toFixed(0)} ms (${mib(e.bytes)} MiB)`));
  store.on('evicted', (e: { name: string; bytes: number; why: string }) => log.debug(`model ${e.name} unloaded (${e.why === 'lru' ? 'least recently used, for room' : 'no longer served'}; ${mib(e.bytes)} MiB)`));
  store.on('unservable', (e: { code: string; message: string }) => log.error(`${e.code}: ${e.message}`));
  let soon = false;
  store.on('change', () => {
    if (soon) return;
    soon = true;
    setImmediate(() => {
      soon = false;
      changed();
    });
  });
}
