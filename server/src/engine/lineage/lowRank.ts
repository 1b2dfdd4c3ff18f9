import { ROW_SKETCH_PROJECTIONS, type Fingerprint } from '../fingerprint/fingerprint';
import { isWeight } from './compare';
import { tensorsByName } from './exactEvidence';

/**
 * A merged LoRA adapter changes each targeted matrix by B·A of rank r, far below the matrix's
 * size, and leaves every other tensor exactly as it was; fine-tuning changes matrices in every
 * direction. The row sketches of the two fingerprints (kept rows × random ±1 projections) are
 * linear in the weights, so their difference has the rank of the weight difference, capped at
 * the number of projections.
 */
export interface LowRankChange {
  /** Largest rank among the changed matrices. */
  readonly rank: number;
  /** Matrices that changed, all with a low-rank difference. */
  readonly changedMatrices: number;
}

/** Singular values below this share of the largest count as rounding noise. */
const RANK_TOLERANCE = 1e-3;

/** The low-rank change from `parent` to `child`, or undefined when some matrix changed in full rank or nothing comparable changed. */
export function lowRankChange(child: Fingerprint, parent: Fingerprint): LowRankChange | undefined {
  const parents = tensorsByName(parent);
  let rank = 0;
  let changedMatrices = 0;
  for (const tensor of child.tensors) {
    const before = parents.get(tensor.name);
    if (!before || !isWeight(tensor) || before.hash === tensor.hash) continue;
    if (tensor.rowSketch.length === 0 || tensor.rowSketch.length !== before.rowSketch.length) {
      // A changed vector (a bias, a norm) is not something a LoRA merge touches.
      if (tensor.shape.length < 2) return undefined;
      continue;
    }
    const keptRows = tensor.rowSketch.length / ROW_SKETCH_PROJECTIONS;
    const columns = tensor.count / tensor.shape[0]!;
    const capacity = Math.min(keptRows, columns, ROW_SKETCH_PROJECTIONS);
    const difference = new Float64Array(tensor.rowSketch.length);
    for (let i = 0; i < difference.length; i++) difference[i] = tensor.rowSketch[i]! - before.rowSketch[i]!;
    // A matrix narrower than the projections (a 10-class head) cannot show a low rank apart from a full one.
    if (capacity < ROW_SKETCH_PROJECTIONS) continue;
    const matrixRank = numericalRank(difference, keptRows, ROW_SKETCH_PROJECTIONS);
    if (matrixRank > ROW_SKETCH_PROJECTIONS / 2) return undefined;
    rank = Math.max(rank, matrixRank);
    changedMatrices++;
  }
  return changedMatrices > 0 ? { rank, changedMatrices } : undefined;
}

/** Rank of a rows × columns matrix (row-major): singular values above RANK_TOLERANCE of the largest. */
export function numericalRank(matrix: Float64Array, rows: number, columns: number): number {
  const gram = new Float64Array(columns * columns);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < columns; i++) {
      const x = matrix[r * columns + i]!;
      for (let j = i; j < columns; j++) gram[i * columns + j]! += x * matrix[r * columns + j]!;
    }
  }
  for (let i = 0; i < columns; i++) for (let j = 0; j < i; j++) gram[i * columns + j] = gram[j * columns + i]!;
  const eigenvalues = symmetricEigenvalues(gram, columns);
  const largest = Math.max(...eigenvalues);
  if (!(largest > 0)) return 0;
  // Eigenvalues of the Gram matrix are squared singular values.
  return eigenvalues.filter((value) => value > largest * RANK_TOLERANCE * RANK_TOLERANCE).length;
}

/** Eigenvalues of a small symmetric matrix by cyclic Jacobi rotations (n ≤ a few dozen). */
export function symmetricEigenvalues(input: Float64Array, n: number): number[] {
  const a = Float64Array.from(input);
  for (let sweep = 0; sweep < 60; sweep++) {
    let offDiagonal = 0;
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) offDiagonal += a[i * n + j]! ** 2;
    if (offDiagonal < 1e-30) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]!;
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (a[q * n + q]! - a[p * n + p]!) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p]!;
          const akq = a[k * n + q]!;
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k]!;
          const aqk = a[q * n + k]!;
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
      }
    }
  }
  return Array.from({ length: n }, (_, i) => a[i * n + i]!);
}
