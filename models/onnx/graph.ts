/** Who produces and who reads each tensor of a graph, and fresh names for the tensors a pass adds. */
import type { GraphProto, NodeProto } from './model.js';

export class GraphIndex {
  readonly producer = new Map<string, NodeProto>();
  readonly consumers = new Map<string, NodeProto[]>();
  readonly graphInputs: Set<string>;
  readonly graphOutputs: Set<string>;
  private readonly taken = new Set<string>();

  constructor(readonly graph: GraphProto) {
    this.graphInputs = new Set((graph.input ?? []).map((v) => v.name ?? ''));
    this.graphOutputs = new Set((graph.output ?? []).map((v) => v.name ?? ''));
    for (const n of graph.node ?? []) {
      for (const o of n.output ?? []) if (o) this.producer.set(o, n);
      for (const i of n.input ?? []) if (i) this.consumers.set(i, [...(this.consumers.get(i) ?? []), n]);
      if (n.name) this.taken.add(n.name);
      for (const t of [...(n.input ?? []), ...(n.output ?? [])]) this.taken.add(t);
    }
    for (const t of graph.initializer ?? []) this.taken.add(t.name ?? '');
    for (const v of [...(graph.input ?? []), ...(graph.output ?? []), ...(graph.valueInfo ?? [])]) this.taken.add(v.name ?? '');
  }

  readers(tensor: string): NodeProto[] {
    return this.consumers.get(tensor) ?? [];
  }

  /** `base`, or `base_1`, `base_2`... whichever no tensor or node of the graph uses yet. */
  fresh(base: string): string {
    let name = base;
    for (let k = 1; this.taken.has(name); k++) name = `${base}_${k}`;
    this.taken.add(name);
    return name;
  }
}

/**
 * Drops the initializers (and their graph-input entries) that no node and no graph output reads
 * any more, among `candidates`: the float weights a pass replaced. Returns how many went.
 */
export function dropUnused(graph: GraphProto, candidates: Iterable<string>): number {
  const used = new Set<string>();
  for (const n of graph.node ?? []) for (const i of n.input ?? []) used.add(i);
  for (const o of graph.output ?? []) used.add(o.name ?? '');
  const gone = new Set([...candidates].filter((c) => !used.has(c)));
  const before = graph.initializer?.length ?? 0;
  graph.initializer = (graph.initializer ?? []).filter((t) => !gone.has(t.name ?? ''));
  graph.input = (graph.input ?? []).filter((v) => !gone.has(v.name ?? ''));
  return before - graph.initializer.length;
}

/** Keeps only the value infos of tensors that still exist (a pass may rename or remove some). */
export function pruneValueInfo(graph: GraphProto): void {
  const exists = new Set<string>();
  for (const n of graph.node ?? []) for (const t of [...(n.input ?? []), ...(n.output ?? [])]) exists.add(t);
  graph.valueInfo = (graph.valueInfo ?? []).filter((v) => exists.has(v.name ?? ''));
}
