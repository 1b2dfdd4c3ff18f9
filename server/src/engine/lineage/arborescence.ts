/**
 * Minimum spanning arborescence (Chu–Liu/Edmonds): the cheapest set of edges giving every node
 * but the root exactly one parent, with no cycles. Scans use a virtual root whose edge to a
 * checkpoint is the cost of declaring that checkpoint parentless, so unrelated models stay roots.
 */
export interface WeightedEdge {
  readonly from: number;
  readonly to: number;
  readonly weight: number;
}

/**
 * Returns, for each node, the index into `edges` of its chosen incoming edge (-1 for the root).
 * Throws when some node cannot be reached from the root.
 */
export function minimumArborescence(nodeCount: number, edges: readonly WeightedEdge[], root: number): number[] {
  const ids = edges.map((_, id) => id);
  return solve(nodeCount, edges, ids, root);
}

function solve(nodeCount: number, edges: readonly WeightedEdge[], ids: readonly number[], root: number): number[] {
  const best = new Array<number>(nodeCount).fill(-1);
  edges.forEach((edge, index) => {
    if (edge.to === root || edge.from === edge.to) return;
    const current = best[edge.to]!;
    if (current < 0 || edge.weight < edges[current]!.weight) best[edge.to] = index;
  });
  for (let node = 0; node < nodeCount; node++) {
    if (node !== root && best[node]! < 0) throw new Error(`node ${node} is unreachable from the root`);
  }

  // Find cycles among the chosen edges.
  const cycleOf = new Array<number>(nodeCount).fill(-1);
  const visitedBy = new Array<number>(nodeCount).fill(-1);
  let cycles = 0;
  for (let start = 0; start < nodeCount; start++) {
    let node = start;
    while (node !== root && visitedBy[node] === -1 && cycleOf[node] === -1) {
      visitedBy[node] = start;
      node = edges[best[node]!]!.from;
    }
    if (node !== root && visitedBy[node] === start && cycleOf[node] === -1) {
      for (let member = node; cycleOf[member] === -1; member = edges[best[member]!]!.from) cycleOf[member] = cycles;
      cycles++;
    }
  }
  if (cycles === 0) return best.map((index) => (index < 0 ? -1 : ids[index]!));

  // Contract each cycle into one node and solve the smaller problem.
  const contracted = new Array<number>(nodeCount);
  let next = cycles;
  for (let node = 0; node < nodeCount; node++) contracted[node] = cycleOf[node]! >= 0 ? cycleOf[node]! : next++;
  const smallerEdges: WeightedEdge[] = [];
  const smallerIds: number[] = [];
  const origin: number[] = [];
  edges.forEach((edge, index) => {
    const from = contracted[edge.from]!;
    const to = contracted[edge.to]!;
    if (from === to) return;
    const entersCycle = cycleOf[edge.to]! >= 0;
    smallerEdges.push({ from, to, weight: entersCycle ? edge.weight - edges[best[edge.to]!]!.weight : edge.weight });
    smallerIds.push(ids[index]!);
    origin.push(index);
  });
  const chosen = solve(next, smallerEdges, smallerIds.map((_, i) => i), contracted[root]!);

  // Expand: keep each cycle's edges except the one replaced by the edge entering the cycle.
  const result = best.map((index) => (index < 0 ? -1 : ids[index]!));
  for (const smallIndex of chosen) {
    if (smallIndex < 0) continue;
    const original = origin[smallIndex]!;
    result[edges[original]!.to] = ids[original]!;
  }
  return result;
}
