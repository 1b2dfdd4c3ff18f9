import type { Fingerprint } from '../fingerprint/fingerprint';
import type { Comparison } from './compare';
import { minimumArborescence, type WeightedEdge } from './arborescence';
import { preferredParent } from './parent';

/**
 * Recovers the tree of one family of related checkpoints.
 *
 * Each member ranks every other member as its possible parent (head-to-head decisions:
 * exactly inherited values, then distance). An edge is cheap when one end ranks the other
 * high; a minimum spanning tree over those costs links each checkpoint to the member it
 * most plausibly came from, which beats nearest-neighbour linking when a barely-moved
 * sibling sits next to the true parent. Its centre is taken as the root (fine-tunes radiate
 * from a base model), and each member then takes its best-ranked parent among the members
 * nearer that root than itself.
 */
export interface FamilyTree {
  /** Index (into the family) of the root. */
  readonly root: number;
  /** Parent index of each member, -1 for the root. */
  readonly parents: readonly number[];
  /** For each member, the probability-like share of head-to-head wins of its chosen parent. */
  readonly confidence: readonly number[];
}

/** Members considered head to head as a child's possible parents. */
const HEAD_TO_HEAD_CONTENDERS = 10;

/**
 * `declaredParents` maps a member to the parent that strong declared evidence names (a base
 * file's hash, a training run's step order); those links are kept as declared.
 */
export function familyTree(
  members: readonly Fingerprint[],
  comparisons: (a: number, b: number) => Comparison,
  declaredParents: ReadonlyMap<number, number> = new Map(),
): FamilyTree {
  const n = members.length;
  if (n === 1) return { root: 0, parents: [-1], confidence: [1] };
  const rank = members.map((_, child) => rankOthers(members, child, comparisons));
  const edges: { cost: number; a: number; b: number }[] = [];
  for (let a = 0; a < n; a++) {
    for (let b = a + 1; b < n; b++) {
      const distance = comparisons(a, b).relativeDistance;
      edges.push({ cost: Math.min(rank[a]!.position[b]!, rank[b]!.position[a]!) + 1e-3 * distance, a, b });
    }
  }
  edges.sort((x, y) => x.cost - y.cost);
  const component = members.map((_, i) => i);
  const find = (i: number): number => (component[i] === i ? i : (component[i] = find(component[i]!)));
  const neighbours: number[][] = members.map(() => []);
  for (const { a, b } of edges) {
    if (find(a) === find(b)) continue;
    component[find(a)] = find(b);
    neighbours[a]!.push(b);
    neighbours[b]!.push(a);
  }
  const root = topOfDeclaredChain(centre(neighbours, comparisons), declaredParents);
  const parents = hang(root, rank, comparisons, declaredParents);
  const confidence = parents.map((parent, child) => (parent < 0 || declaredParents.has(child) ? 1 : rank[child]!.share[parent]!));
  return { root, parents, confidence };
}

/**
 * Along a line of descent the weights move further from the base, so a parent farther from the
 * root than its child costs ROOTWARD_PENALTY ranks on top of its rank in the child's list.
 * Declared parents cost nothing and are the only parents their children may take. The cheapest
 * arborescence from the root (Chu–Liu/Edmonds) picks every member's parent at once.
 */
const ROOTWARD_PENALTY = 3;

function hang(
  root: number,
  rank: readonly { position: readonly number[] }[],
  comparisons: (a: number, b: number) => Comparison,
  declaredParents: ReadonlyMap<number, number>,
): number[] {
  const n = rank.length;
  const fromRoot = rank.map((_, i) => (i === root ? 0 : comparisons(i, root).relativeDistance));
  const edges: WeightedEdge[] = [];
  for (let child = 0; child < n; child++) {
    if (child === root) continue;
    const declared = declaredParents.get(child);
    for (let parent = 0; parent < n; parent++) {
      if (parent === child || (declared !== undefined && parent !== declared)) continue;
      const weight = declared !== undefined ? 0 : rank[child]!.position[parent]! + (fromRoot[parent]! < fromRoot[child]! ? 0 : ROOTWARD_PENALTY);
      edges.push({ from: parent, to: child, weight });
    }
  }
  return minimumArborescence(n, edges, root).map((edge) => (edge < 0 ? -1 : edges[edge]!.from));
}

function topOfDeclaredChain(member: number, declaredParents: ReadonlyMap<number, number>): number {
  const seen = new Set<number>();
  while (declaredParents.has(member) && !seen.has(member)) {
    seen.add(member);
    member = declaredParents.get(member)!;
  }
  return member;
}


/** Positions (0 = most plausible parent) and win shares of every other member, for one child. */
function rankOthers(members: readonly Fingerprint[], child: number, comparisons: (a: number, b: number) => Comparison) {
  const byDistance = members
    .map((_, i) => i)
    .filter((i) => i !== child)
    .sort((a, b) => comparisons(child, a).relativeDistance - comparisons(child, b).relativeDistance);
  // Head-to-head decisions cost a pass over the samples each; only the nearest members can
  // plausibly be the parent, so the rest keep their distance order.
  const contenders = byDistance.slice(0, HEAD_TO_HEAD_CONTENDERS);
  const wins = new Map(contenders.map((i) => [i, 0]));
  for (let x = 0; x < contenders.length; x++) {
    for (let y = x + 1; y < contenders.length; y++) {
      const a = contenders[x]!;
      const b = contenders[y]!;
      const verdict = preferredParent(members[child]!, members[a]!, comparisons(child, a), members[b]!, comparisons(child, b));
      if (verdict > 0) wins.set(a, wins.get(a)! + 1);
      else if (verdict < 0) wins.set(b, wins.get(b)! + 1);
    }
  }
  const sorted = [...contenders].sort((a, b) => wins.get(b)! - wins.get(a)!).concat(byDistance.slice(contenders.length));
  const position: number[] = [];
  const share: number[] = [];
  sorted.forEach((member, index) => {
    position[member] = index;
    share[member] = contenders.length > 1 ? (wins.get(member) ?? 0) / (contenders.length - 1) : 1;
  });
  return { order: sorted, position, share };
}

/** The member with the smallest total hop distance to all others; ties go to the nearer in weights. */
function centre(neighbours: readonly number[][], comparisons: (a: number, b: number) => Comparison): number {
  let best = 0;
  let bestKey: [number, number] = [Infinity, Infinity];
  neighbours.forEach((_, start) => {
    const hops = new Map([[start, 0]]);
    const queue = [start];
    for (let i = 0; i < queue.length; i++) {
      for (const next of neighbours[queue[i]!]!) {
        if (hops.has(next)) continue;
        hops.set(next, hops.get(queue[i]!)! + 1);
        queue.push(next);
      }
    }
    let total = 0;
    let distance = 0;
    for (const [member, count] of hops) {
      total += count;
      if (member !== start) distance += comparisons(start, member).relativeDistance;
    }
    if (total < bestKey[0] || (total === bestKey[0] && distance < bestKey[1])) {
      best = start;
      bestKey = [total, distance];
    }
  });
  return best;
}
