import type { FeatureMatrix } from './featureModel';

/**
 * Similarities between two feature matrices of one probe (n rows = probe samples), as the
 * representation methods of Neural Lineage (Yu & Wang, CVPR 2024) compare a candidate's
 * features with the child's. Higher is more similar for every metric: the distances are
 * negated, so identical features score 0 and anything else scores below 0; CKA and distance
 * correlation are 1 for features that match up to the transformations they ignore.
 *
 * Features arrive as float32 but parent/child differences are small against the features
 * themselves, so every sum is accumulated in float64.
 */
export type SimilarityMetric = 'l1' | 'l2' | 'lp' | 'lse' | 'linf' | 'cka' | 'dcor';

export const SIMILARITY_METRICS: readonly SimilarityMetric[] = ['l1', 'l2', 'lp', 'lse', 'linf', 'cka', 'dcor'];

/** The exponent of the `lp` metric (the paper's p = 4). */
export const LP_EXPONENT = 4;

/**
 * Temperature τ of the `lse` soft maximum, in feature units. Per row the soft maximum of |D| is
 * τ·log(mean_j exp(|D_j|/τ)), which lies between the row's mean and its maximum of |D| and
 * tends to the maximum as τ → 0. τ = 1 keeps the paper's plain log-sum-exp of |D| (up to the
 * constant log d, subtracted so identical features score 0 like the other distances, which
 * leaves every ranking unchanged) for features of order one, as ReLU and normalised features
 * are; smaller τ weighs the largest differences more.
 */
export const LSE_TEMPERATURE = 1;

export function similarity(metric: SimilarityMetric, a: FeatureMatrix, b: FeatureMatrix): number {
  switch (metric) {
    case 'l1':
      return -meanAbsolutePower(a, b, 1);
    case 'l2':
      return -Math.sqrt(meanAbsolutePower(a, b, 2));
    case 'lp':
      return -Math.pow(meanAbsolutePower(a, b, LP_EXPONENT), 1 / LP_EXPONENT);
    case 'lse':
      return -meanRowSoftMaximum(a, b, LSE_TEMPERATURE);
    case 'linf':
      return -meanRowMaximum(a, b);
    case 'cka':
      return linearCka(a, b);
    case 'dcor':
      return distanceCorrelation(a, b);
  }
}

function requireSameShape(a: FeatureMatrix, b: FeatureMatrix): void {
  if (a.rows !== b.rows || a.columns !== b.columns) {
    throw new Error(`feature matrices differ in shape: ${a.rows}×${a.columns} and ${b.rows}×${b.columns}`);
  }
  requireConsistent(a);
  requireConsistent(b);
}

function requireSameRows(a: FeatureMatrix, b: FeatureMatrix): void {
  if (a.rows !== b.rows) throw new Error(`feature matrices describe different probes: ${a.rows} and ${b.rows} rows`);
  requireConsistent(a);
  requireConsistent(b);
}

function requireConsistent(matrix: FeatureMatrix): void {
  if (matrix.values.length !== matrix.rows * matrix.columns || matrix.rows === 0 || matrix.columns === 0) {
    throw new Error(`a ${matrix.rows}×${matrix.columns} feature matrix holds ${matrix.values.length} values`);
  }
}

/** mean over all entries of |a − b|^p. */
function meanAbsolutePower(a: FeatureMatrix, b: FeatureMatrix, power: number): number {
  requireSameShape(a, b);
  let sum = 0;
  for (let i = 0; i < a.values.length; i++) {
    const difference = Math.abs(a.values[i]! - b.values[i]!);
    sum += power === 1 ? difference : power === 2 ? difference * difference : Math.pow(difference, power);
  }
  return sum / a.values.length;
}

function meanRowMaximum(a: FeatureMatrix, b: FeatureMatrix): number {
  requireSameShape(a, b);
  let sum = 0;
  for (let row = 0; row < a.rows; row++) {
    let maximum = 0;
    for (let i = row * a.columns; i < (row + 1) * a.columns; i++) maximum = Math.max(maximum, Math.abs(a.values[i]! - b.values[i]!));
    sum += maximum;
  }
  return sum / a.rows;
}

/** mean over rows of τ·log(mean_j exp(|D_j|/τ)), shifted by the row maximum so exp never overflows. */
function meanRowSoftMaximum(a: FeatureMatrix, b: FeatureMatrix, temperature: number): number {
  requireSameShape(a, b);
  let sum = 0;
  for (let row = 0; row < a.rows; row++) {
    const start = row * a.columns;
    let maximum = 0;
    for (let i = start; i < start + a.columns; i++) maximum = Math.max(maximum, Math.abs(a.values[i]! - b.values[i]!));
    let exponentials = 0;
    for (let i = start; i < start + a.columns; i++) exponentials += Math.exp((Math.abs(a.values[i]! - b.values[i]!) - maximum) / temperature);
    sum += maximum + temperature * Math.log(exponentials / a.columns);
  }
  return sum / a.rows;
}

/** Column-centred copy in float64. */
function centredColumns(matrix: FeatureMatrix): Float64Array {
  const { rows, columns, values } = matrix;
  const means = new Float64Array(columns);
  for (let row = 0; row < rows; row++) for (let column = 0; column < columns; column++) means[column]! += values[row * columns + column]!;
  for (let column = 0; column < columns; column++) means[column]! /= rows;
  const centred = new Float64Array(rows * columns);
  for (let row = 0; row < rows; row++) {
    for (let column = 0; column < columns; column++) centred[row * columns + column] = values[row * columns + column]! - means[column]!;
  }
  return centred;
}

/**
 * Linear CKA (Kornblith et al. 2019): ⟨K, L⟩ / (‖K‖ ‖L‖) with K = XXᵀ, L = YYᵀ of the
 * column-centred features. ⟨K, L⟩ = ‖XᵀY‖² and ‖K‖ = ‖XᵀX‖, so the products are formed on
 * whichever side is smaller: n×n Gram matrices when the probe has fewer rows than features,
 * d×d cross products otherwise. 0 when either side is constant (no variance to compare).
 */
export function linearCka(a: FeatureMatrix, b: FeatureMatrix): number {
  requireSameRows(a, b);
  const x = centredColumns(a);
  const y = centredColumns(b);
  const n = a.rows;
  let crossSquared: number;
  let selfX: number;
  let selfY: number;
  if (n <= Math.max(a.columns, b.columns)) {
    const k = gram(x, n, a.columns);
    const l = gram(y, n, b.columns);
    crossSquared = dot(k, l);
    selfX = Math.sqrt(dot(k, k));
    selfY = Math.sqrt(dot(l, l));
  } else {
    const xy = crossProduct(x, a.columns, y, b.columns, n);
    crossSquared = dot(xy, xy);
    const xx = crossProduct(x, a.columns, x, a.columns, n);
    const yy = crossProduct(y, b.columns, y, b.columns, n);
    selfX = Math.sqrt(dot(xx, xx));
    selfY = Math.sqrt(dot(yy, yy));
  }
  const denominator = selfX * selfY;
  return denominator > 0 ? crossSquared / denominator : 0;
}

/** XXᵀ (rows × rows) of a row-major rows × columns matrix. */
function gram(x: Float64Array, rows: number, columns: number): Float64Array {
  const result = new Float64Array(rows * rows);
  for (let i = 0; i < rows; i++) {
    for (let j = i; j < rows; j++) {
      let sum = 0;
      for (let k = 0; k < columns; k++) sum += x[i * columns + k]! * x[j * columns + k]!;
      result[i * rows + j] = sum;
      result[j * rows + i] = sum;
    }
  }
  return result;
}

/** XᵀY (columnsX × columnsY) of two row-major matrices with the same rows. */
function crossProduct(x: Float64Array, columnsX: number, y: Float64Array, columnsY: number, rows: number): Float64Array {
  const result = new Float64Array(columnsX * columnsY);
  for (let row = 0; row < rows; row++) {
    for (let i = 0; i < columnsX; i++) {
      const xi = x[row * columnsX + i]!;
      if (xi === 0) continue;
      const offset = i * columnsY;
      for (let j = 0; j < columnsY; j++) result[offset + j]! += xi * y[row * columnsY + j]!;
    }
  }
  return result;
}

function dot(a: Float64Array, b: Float64Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

/**
 * Distance correlation (Székely, Rizzo & Bakirov 2007), the V-statistic form: with A and B the
 * double-centred matrices of Euclidean distances between probe rows in each feature space,
 * dCor = sqrt(mean(A∘B) / sqrt(mean(A∘A)·mean(B∘B))). In [0, 1]; 0 when either side is
 * constant. On finite samples of independent data it is small but positive.
 */
export function distanceCorrelation(a: FeatureMatrix, b: FeatureMatrix): number {
  requireSameRows(a, b);
  const distancesA = doublyCentredDistances(a);
  const distancesB = doublyCentredDistances(b);
  const covariance = dot(distancesA, distancesB);
  const varianceA = dot(distancesA, distancesA);
  const varianceB = dot(distancesB, distancesB);
  const denominator = Math.sqrt(varianceA * varianceB);
  // Rounding can leave a covariance a hair below 0 for independent samples.
  return denominator > 0 ? Math.sqrt(Math.max(0, covariance) / denominator) : 0;
}

function doublyCentredDistances(matrix: FeatureMatrix): Float64Array {
  const { rows, columns, values } = matrix;
  const distances = new Float64Array(rows * rows);
  for (let i = 0; i < rows; i++) {
    for (let j = i + 1; j < rows; j++) {
      let sum = 0;
      for (let k = 0; k < columns; k++) {
        const difference = values[i * columns + k]! - values[j * columns + k]!;
        sum += difference * difference;
      }
      distances[i * rows + j] = Math.sqrt(sum);
      distances[j * rows + i] = distances[i * rows + j]!;
    }
  }
  const rowMeans = new Float64Array(rows);
  let grandMean = 0;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < rows; j++) rowMeans[i]! += distances[i * rows + j]!;
    grandMean += rowMeans[i]!;
    rowMeans[i]! /= rows;
  }
  grandMean /= rows * rows;
  // The distance matrix is symmetric, so row means are also column means.
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < rows; j++) distances[i * rows + j] = distances[i * rows + j]! - rowMeans[i]! - rowMeans[j]! + grandMean;
  }
  return distances;
}
