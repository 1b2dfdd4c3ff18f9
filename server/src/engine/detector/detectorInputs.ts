import type { FeatureMatrix } from '../repr/featureModel';

/**
 * The tokens the learned lineage detector reads (Neural Lineage, approach 2; docs/method.md §3),
 * built exactly as test/zoo/train_detector.py builds them for training, so that the shipped
 * weights see at inference what they saw in training.
 *
 * A token compares one matrix of a candidate parent with the same matrix of the child: three
 * `size`×`size` channels, each a matrix resampled to the grid by `resampleToGrid` and divided
 * by the root mean square of the child's matrix — the parent's matrix, the child's matrix, and
 * log(DIFFERENCE_FLOOR + |child − parent|). The grid makes the detector independent of layer
 * sizes and the scale makes layers and models of different magnitudes comparable. The third
 * channel keeps how far the child moved in each region, which averaging the first two over a
 * cell would cancel; the relative change runs from 0 (frozen layers) and 1e-4 (float16
 * copies) over 0.02 (barely trained siblings) and 0.1 (fine-tunes) to 1.4 (unrelated models),
 * and its logarithm shows the ratios that separate a parent from a sibling at every scale.
 */
export const DIFFERENCE_FLOOR = 1e-4;
export const DETECTOR_CHANNELS = ['parent', 'child', 'log(1e-4 + absolute difference)'] as const;

/** One weight matrix (conv kernels reshaped to out × rest) of a candidate parent and of the child, row-major. */
export interface MatrixPair {
  readonly parent: Float32Array;
  readonly child: Float32Array;
  readonly rows: number;
  readonly columns: number;
}

interface CellWeight {
  readonly source: number;
  readonly weight: number;
}

/**
 * How `length` source cells map onto `size` output cells along one axis.
 * length ≥ size: output cell r averages the source interval [r·length/size, (r+1)·length/size),
 * fractional ends included, each source cell weighted by its overlap (the overlaps are
 * integers in units of 1/size, so the weights are exact ratios overlap/length).
 * length < size: output cell r copies source cell ⌊r·length/size⌋ (nearest upsampling).
 */
function axisWeights(length: number, size: number): CellWeight[][] {
  const cells: CellWeight[][] = [];
  for (let r = 0; r < size; r++) {
    if (length < size) {
      cells.push([{ source: Math.floor((r * length) / size), weight: 1 }]);
      continue;
    }
    const start = r * length;
    const end = (r + 1) * length;
    const cell: CellWeight[] = [];
    for (let i = Math.floor(start / size); i < Math.ceil(end / size); i++) {
      const overlap = Math.min((i + 1) * size, end) - Math.max(i * size, start);
      if (overlap > 0) cell.push({ source: i, weight: overlap / length });
    }
    cells.push(cell);
  }
  return cells;
}

function checkDimension(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
}

function checkMatrix(values: ArrayLike<number>, rows: number, columns: number): void {
  checkDimension('rows', rows);
  checkDimension('columns', columns);
  if (values.length !== rows * columns) {
    throw new RangeError(`a ${rows}×${columns} matrix needs ${rows * columns} values, got ${values.length}`);
  }
}

/**
 * Resamples a rows×columns row-major matrix onto a size×size grid, rows first, then columns
 * (see axisWeights), in double precision; the token builders round to float32 once at the end.
 */
export function resampleToGrid(values: ArrayLike<number>, rows: number, columns: number, size: number): Float64Array {
  checkMatrix(values, rows, columns);
  checkDimension('size', size);
  const byRows = new Float64Array(size * columns);
  axisWeights(rows, size).forEach((cell, r) => {
    for (const { source, weight } of cell) {
      for (let column = 0; column < columns; column++) {
        byRows[r * columns + column]! += weight * values[source * columns + column]!;
      }
    }
  });
  const grid = new Float64Array(size * size);
  const columnCells = axisWeights(columns, size);
  for (let r = 0; r < size; r++) {
    columnCells.forEach((cell, c) => {
      let sum = 0;
      for (const { source, weight } of cell) sum += weight * byRows[r * columns + source]!;
      grid[r * size + c] = sum;
    });
  }
  return grid;
}

function rootMeanSquare(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i]! * values[i]!;
  const rms = Math.sqrt(sum / values.length);
  return rms > 0 ? rms : 1;
}

/** Writes the pair's token (channels × size × size, float32) into `out` at `offset`. */
function writePairToken(pair: MatrixPair, size: number, out: Float32Array, offset: number): void {
  const { parent, child, rows, columns } = pair;
  checkMatrix(child, rows, columns);
  if (parent.length !== child.length) {
    throw new RangeError(`the parent's matrix has ${parent.length} values and the child's ${child.length}`);
  }
  const difference = new Float64Array(child.length);
  for (let i = 0; i < child.length; i++) difference[i] = Math.abs(child[i]! - parent[i]!);
  const scale = rootMeanSquare(child);
  const [parentGrid, childGrid, differenceGrid] = [parent, child, difference].map((matrix) => resampleToGrid(matrix, rows, columns, size));
  const cells = size * size;
  for (let i = 0; i < cells; i++) {
    out[offset + i] = parentGrid![i]! / scale;
    out[offset + cells + i] = childGrid![i]! / scale;
    out[offset + 2 * cells + i] = Math.log(DIFFERENCE_FLOOR + differenceGrid![i]! / scale);
  }
}

/** Values in one token: DETECTOR_CHANNELS.length × size × size. */
export function tokenLength(size: number): number {
  checkDimension('size', size);
  return DETECTOR_CHANNELS.length * size * size;
}

/** One token for one matrix pair: DETECTOR_CHANNELS.length × size × size, float32. */
export function buildPairToken(pair: MatrixPair, size: number): Float32Array {
  const token = new Float32Array(tokenLength(size));
  writePairToken(pair, size, token, 0);
  return token;
}

/** The weight tokens of one candidate, one per matrix pair, concatenated: T × channels × size × size. */
export function buildWeightTokens(pairs: readonly MatrixPair[], size: number): Float32Array {
  const length = tokenLength(size);
  const tokens = new Float32Array(pairs.length * length);
  pairs.forEach((pair, index) => writePairToken(pair, size, tokens, index * length));
  return tokens;
}

/** The feature token of one candidate: its features against the child's on the same probe rows. */
export function buildFeatureToken(parent: FeatureMatrix, child: FeatureMatrix, size: number): Float32Array {
  if (parent.rows !== child.rows || parent.columns !== child.columns) {
    throw new RangeError(`the candidate's features are ${parent.rows}×${parent.columns} and the child's ${child.rows}×${child.columns}`);
  }
  return buildPairToken({ parent: parent.values, child: child.values, rows: child.rows, columns: child.columns }, size);
}
