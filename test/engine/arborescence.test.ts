import assert from 'node:assert/strict';
import { test } from 'node:test';
import { minimumArborescence, type WeightedEdge } from '../../server/src/engine/lineage/arborescence';

function parents(nodeCount: number, edges: WeightedEdge[], root = 0): number[] {
  return minimumArborescence(nodeCount, edges, root).map((index) => (index < 0 ? -1 : edges[index]!.from));
}

function bruteForce(nodeCount: number, edges: WeightedEdge[], root: number): number {
  // Tries every choice of one incoming edge per node and keeps the acyclic cheapest.
  const incoming = Array.from({ length: nodeCount }, (_, node) => edges.filter((edge) => edge.to === node && edge.from !== node));
  let best = Infinity;
  const choice = new Array<WeightedEdge | undefined>(nodeCount);
  const visit = (node: number, cost: number): void => {
    if (node === nodeCount) {
      for (let start = 0; start < nodeCount; start++) {
        let at = start;
        for (let steps = 0; at !== root; steps++) {
          if (steps > nodeCount) return;
          at = choice[at]!.from;
        }
      }
      best = Math.min(best, cost);
      return;
    }
    if (node === root) return visit(node + 1, cost);
    for (const edge of incoming[node]!) {
      choice[node] = edge;
      visit(node + 1, cost + edge.weight);
    }
  };
  visit(0, 0);
  return best;
}

test('picks the cheapest parent when there is no cycle', () => {
  const edges = [
    { from: 0, to: 1, weight: 5 },
    { from: 0, to: 2, weight: 5 },
    { from: 1, to: 2, weight: 1 },
  ];
  assert.deepEqual(parents(3, edges), [-1, 0, 1]);
});

test('breaks a cycle by the cheapest entry into it', () => {
  const edges = [
    { from: 0, to: 1, weight: 10 },
    { from: 0, to: 2, weight: 12 },
    { from: 1, to: 2, weight: 1 },
    { from: 2, to: 1, weight: 1 },
    { from: 2, to: 3, weight: 2 },
    { from: 3, to: 1, weight: 0.5 },
  ];
  const chosen = parents(4, edges);
  assert.deepEqual(chosen, [-1, 0, 1, 2]);
});

test('matches brute force on random complete graphs', () => {
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let trial = 0; trial < 60; trial++) {
    const n = 2 + Math.floor(random() * 5);
    const edges: WeightedEdge[] = [];
    for (let from = 0; from < n; from++) for (let to = 1; to < n; to++) if (from !== to) edges.push({ from, to, weight: Math.round(random() * 20) });
    const chosen = minimumArborescence(n, edges, 0);
    const cost = chosen.reduce((sum, index) => sum + (index < 0 ? 0 : edges[index]!.weight), 0);
    assert.equal(cost, bruteForce(n, edges, 0), `trial ${trial}`);
    // Every node reaches the root.
    for (let node = 1; node < n; node++) {
      let at = node;
      for (let steps = 0; at !== 0; steps++) {
        assert.ok(steps <= n, 'cycle in result');
        at = edges[chosen[at]!]!.from;
      }
    }
  }
});

test('reports a node that no edge reaches', () => {
  assert.throws(() => minimumArborescence(3, [{ from: 0, to: 1, weight: 1 }], 0), /unreachable/);
});
