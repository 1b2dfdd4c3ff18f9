import type { Fingerprint, TensorFingerprint } from '../fingerprint/fingerprint';
import { isWeight, sameShape } from './compare';
import { tensorsByName } from './exactEvidence';

/**
 * Model merges — weighted averages, task arithmetic (base + Σ λk (θk − base)), model soups —
 * make the child an exact linear combination of its parents' weights. Fitting the child's
 * sampled values by least squares over the candidates finds them: a merge leaves only rounding
 * in the residual, while no combination of relatives reproduces a fine-tune's own update.
 */
export interface MergeFit {
  /** Indices into the candidates passed in. */
  readonly parents: readonly number[];
  readonly weights: readonly number[];
  /** ‖residual‖ / ‖child‖ over the sampled values. */
  readonly relativeResidual: number;
  /** The same for the best single candidate with a free scale. */
  readonly singleResidual: number;
}

/** Merges stored in float32 leave a residual near 1e-7; stored in 16 bits, near 1e-3. */
const MERGE_RESIDUAL = 2e-3;
/** The combination must explain the child this many times better than any one candidate. */
const MERGE_GAIN = 10;
/** A parent contributing less than this is not a parent. */
const MIN_MERGE_WEIGHT = 0.05;
/** Candidates tried, nearest first: a merge sits nearer its parents' own parent and siblings than to either parent. */
const MERGE_CANDIDATES = 10;

/** The smallest set of two or three candidates the child is a merge of, if there is one. */
export function mergeOf(child: Fingerprint, candidates: readonly Fingerprint[], nearestFirst: readonly number[]): MergeFit | undefined {
  const pool = nearestFirst.slice(0, MERGE_CANDIDATES);
  if (pool.length < 2) return undefined;
  const vectors = sharedSamples(child, pool.map((i) => candidates[i]!));
  if (!vectors) return undefined;
  const { target, columns } = vectors;
  const targetSquared = dot(target, target);
  if (!(targetSquared > 0)) return undefined;
  const gram = columns.map((x) => columns.map((y) => dot(x, y)));
  const moments = columns.map((x) => dot(x, target));
  const residualOf = (subset: number[], weights: number[]): number => {
    let squared = targetSquared;
    subset.forEach((i, a) => {
      squared -= 2 * weights[a]! * moments[i]!;
      subset.forEach((j, b) => (squared += weights[a]! * weights[b]! * gram[i]![j]!));
    });
    return Math.sqrt(Math.max(0, squared) / targetSquared);
  };
  let singleResidual = Infinity;
  for (let i = 0; i < columns.length; i++) {
    if (gram[i]![i]! > 0) singleResidual = Math.min(singleResidual, residualOf([i], [moments[i]! / gram[i]![i]!]));
  }
  for (const size of [2, 3]) {
    let best: { subset: number[]; weights: number[]; residual: number } | undefined;
    for (const subset of subsets(columns.length, size)) {
      const weights = solve(subset.map((i) => subset.map((j) => gram[i]![j]!)), subset.map((i) => moments[i]!));
      if (!weights || weights.some((weight) => Math.abs(weight) < MIN_MERGE_WEIGHT)) continue;
      const residual = residualOf(subset, weights);
      if (!best || residual < best.residual) best = { subset, weights, residual };
    }
    if (best && best.residual <= MERGE_RESIDUAL && best.residual * MERGE_GAIN <= singleResidual) {
      return { parents: best.subset.map((i) => pool[i]!), weights: best.weights, relativeResidual: best.residual, singleResidual };
    }
  }
  return undefined;
}

/** The child's sampled values and each candidate's at the same positions, over tensors all of them share. */
function sharedSamples(child: Fingerprint, candidates: readonly Fingerprint[]): { target: Float64Array; columns: Float64Array[] } | undefined {
  const maps = candidates.map(tensorsByName);
  const chosen: { child: TensorFingerprint; others: TensorFingerprint[] }[] = [];
  for (const tensor of child.tensors) {
    if (!isWeight(tensor)) continue;
    const others = maps.map((map) => map.get(tensor.name));
    if (others.every((other): other is TensorFingerprint => !!other && sameShape(other.shape, tensor.shape) && other.sample.length === tensor.sample.length)) {
      chosen.push({ child: tensor, others });
    }
  }
  const length = chosen.reduce((sum, entry) => sum + entry.child.sample.length, 0);
  if (length === 0) return undefined;
  const target = new Float64Array(length);
  const columns = candidates.map(() => new Float64Array(length));
  let offset = 0;
  for (const entry of chosen) {
    target.set(entry.child.sample, offset);
    entry.others.forEach((other, k) => columns[k]!.set(other.sample, offset));
    offset += entry.child.sample.length;
  }
  return { target, columns };
}

function dot(a: Float64Array, b: Float64Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

function* subsets(n: number, size: number, start = 0, prefix: number[] = []): Generator<number[]> {
  if (prefix.length === size) {
    yield prefix;
    return;
  }
  for (let i = start; i < n; i++) yield* subsets(n, size, i + 1, [...prefix, i]);
}

/** Solves a small linear system by Gaussian elimination with partial pivoting; undefined when (nearly) singular. */
function solve(matrix: number[][], right: number[]): number[] | undefined {
  const n = right.length;
  const a = matrix.map((row, i) => [...row, right[i]!]);
  const scale = Math.max(...matrix.map((row, i) => Math.abs(row[i]!)));
  for (let column = 0; column < n; column++) {
    let pivot = column;
    for (let row = column + 1; row < n; row++) if (Math.abs(a[row]![column]!) > Math.abs(a[pivot]![column]!)) pivot = row;
    // Near-identical candidates (a model and its copy) make the system singular: no unique merge.
    if (Math.abs(a[pivot]![column]!) <= scale * 1e-10) return undefined;
    [a[column], a[pivot]] = [a[pivot]!, a[column]!];
    for (let row = column + 1; row < n; row++) {
      const factor = a[row]![column]! / a[column]![column]!;
      for (let k = column; k <= n; k++) a[row]![k]! -= factor * a[column]![k]!;
    }
  }
  const solution = new Array<number>(n).fill(0);
  for (let row = n - 1; row >= 0; row--) {
    let sum = a[row]![n]!;
    for (let k = row + 1; k < n; k++) sum -= a[row]![k]! * solution[k]!;
    solution[row] = sum / a[row]![row]!;
  }
  return solution;
}
