/** The edits a quantization pass makes to a graph, applied at once in topological order. */
import { dropUnused, pruneValueInfo } from '../onnx/graph.js';
import type { GraphProto, NodeProto, TensorProto } from '../onnx/model.js';

export class Rewrite {
  /** A node and the nodes that take its place (the last writes the node's output). */
  readonly replace = new Map<NodeProto, NodeProto[]>();
  /** Nodes to insert right after a producer (`null`: before every node, for graph inputs). */
  readonly after = new Map<NodeProto | null, NodeProto[]>();
  /** Nodes to drop (an activation folded into the quantization range of its input). */
  readonly removed = new Set<NodeProto>();
  readonly initializers: TensorProto[] = [];
  /** Float weights replaced by int8 ones: dropped if nothing else reads them. */
  readonly replacedWeights = new Set<string>();

  insertAfter(producer: NodeProto | null, nodes: NodeProto[]): void {
    this.after.set(producer, [...(this.after.get(producer) ?? []), ...nodes]);
  }

  /** Applies every edit; returns how many float initializers were dropped. */
  apply(graph: GraphProto): number {
    const nodes: NodeProto[] = [...(this.after.get(null) ?? [])];
    for (const n of graph.node ?? []) {
      if (!this.removed.has(n)) nodes.push(...(this.replace.get(n) ?? [n]));
      nodes.push(...(this.after.get(n) ?? []));
    }
    graph.node = nodes;
    graph.initializer = [...(graph.initializer ?? []), ...this.initializers];
    const dropped = dropUnused(graph, this.replacedWeights);
    pruneValueInfo(graph);
    return dropped;
  }
}
