/**
 * Agents' views of the mesh as hello probes return them, and the one rule for "the mesh has
 * settled", shared by the namespace tests and the failover benchmarks.
 */
export interface View {
  broker: string | null;
  term: number;
  online: string[];
}

/** One agent's hello answer, or why it did not answer. */
export type Probe = { node: string; mesh: string; instance: string; role: string; term: number; view: View } | { error: string };
export type Views = Map<number, Probe>;

export const answered = (p: Probe | undefined): p is Exclude<Probe, { error: string }> => p !== undefined && !('error' in p);

export const showViews = (v: Views): string =>
  JSON.stringify(Object.fromEntries([...v].map(([n, p]) => [`h${n}`, answered(p) ? { node: p.node, role: p.role, term: p.term, view: p.view } : p])));

/**
 * Why `views` is not one settled mesh whose online members are exactly `online`, or undefined
 * when it is: every agent answers, one broker, one standby (with 2+ members), nobody joining, and
 * every view names that broker at its term with those members online.
 */
export function unsettled(views: Views, online: string[]): string | undefined {
  const bad = [...views].filter(([, p]) => !answered(p));
  if (bad.length) return `no answer from ${bad.map(([n]) => `h${n}`).join(', ')}`;
  const answers = [...views.values()].filter(answered);
  const brokers = answers.filter((p) => p.role === 'broker');
  if (brokers.length !== 1) return `${brokers.length} brokers`;
  const standbys = answers.filter((p) => p.role === 'standby').length;
  if (standbys !== (online.length > 1 ? 1 : 0)) return `${standbys} standbys`;
  if (answers.some((p) => p.role === 'joining')) return 'an agent is still joining';
  const want: View = { broker: brokers[0]!.node, term: brokers[0]!.term, online: [...online].sort() };
  const differ = answers.filter((p) => JSON.stringify(p.view) !== JSON.stringify(want));
  if (differ.length) return `views differ from ${JSON.stringify(want)}: ${differ.map((p) => `${p.node} ${JSON.stringify(p.view)}`).join('; ')}`;
  return undefined;
}
