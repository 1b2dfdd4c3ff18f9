import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { CheckpointError, FileChangedError, throwIfAborted } from '../errors';
import type { FormatName } from '../formats/checkpoint';
import { isDecodable, undecodableReason, type DType } from '../formats/dtype';
import { openCheckpoint } from '../formats/index';
import type { Tensor } from '../formats/tensor';
import { CONTENT_SEED, mix32, ROW_PROJECTION_SEED, ROW_SAMPLE_SEED, SAMPLE_SEED, SKETCH_SEED } from './elementHash';
import { normalisedNames } from './tensorNames';

/** Bumped whenever the fingerprint's content or meaning changes; cached ones of other versions are recomputed. */
export const FINGERPRINT_VERSION = 3;
/** Count-sketch buckets per tensor; tensors this small or smaller are kept exactly instead. */
export const SKETCH_BUCKETS = 256;
/** Values sampled per tensor; tensors this small or smaller are kept whole. */
export const SAMPLES_PER_TENSOR = 16384;
/** Rows of a matrix kept in its row sketch. */
export const ROW_SKETCH_ROWS = 64;
/** Random ±1 column projections per kept row: differences of rank below this show their rank. */
export const ROW_SKETCH_PROJECTIONS = 16;

/**
 * A compact summary of one tensor computed in one streaming pass. The sketch and the sample
 * are linear in the values, so sketch(a) − sketch(b) = sketch(a − b): distances between two
 * checkpoints follow from their fingerprints without re-reading either file.
 */
export interface TensorFingerprint {
  /** Name after removing wrapper prefixes common to the whole checkpoint. */
  readonly name: string;
  readonly storedName: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly count: number;
  readonly mean: number;
  readonly variance: number;
  /** Excess-free (Pearson) kurtosis E[(x−μ)⁴]/σ⁴; 3 for a Gaussian. */
  readonly kurtosis: number;
  readonly maxAbs: number;
  /** Euclidean norm. */
  readonly norm: number;
  readonly zeros: number;
  /** SHA-256 of the values as little-endian float32: equal for the same weights in any float storage ≥ 32 bits. */
  readonly hash: string;
  /** Count sketch (length SKETCH_BUCKETS), or the exact values when the tensor is no larger. */
  readonly sketch: Float64Array;
  /** Probability with which each element was sampled (1 = every element, in order). */
  readonly sampleRate: number;
  /** The sampled values, in element order; positions follow from mix32(index, SAMPLE_SEED). */
  readonly sample: Float32Array;
  /**
   * Hash of the multiset of values (as float32), blind to their order: equal for the same
   * weights in any layout (transposed kernels, HWIO against OIHW), so conversions between
   * frameworks are found by content rather than by name.
   */
  readonly contentHash: string;
  /**
   * For matrices (first dimension × the rest): up to ROW_SKETCH_ROWS rows, chosen by row index
   * alone, each projected on ROW_SKETCH_PROJECTIONS random ±1 columns; kept rows × projections,
   * row-major. Linear, so sketch(a) − sketch(b) has the rank of a − b (up to the projections):
   * a merged low-rank adapter shows as a low-rank difference. Empty for vectors.
   */
  readonly rowSketch: Float32Array;
  /** The stored quantization scheme when the values are dequantized codes (e.g. "Q4_K"). */
  readonly quantization?: string;
}

export interface Fingerprint {
  readonly version: number;
  readonly path: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly format: FormatName;
  readonly parameterCount: number;
  readonly tensors: readonly TensorFingerprint[];
  /** Tensors that could not be fingerprinted (complex, quantized) and why. */
  readonly skipped: readonly { name: string; reason: string }[];
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly warnings: readonly string[];
}

export interface FingerprintOptions {
  readonly signal?: AbortSignal;
  /** Called with bytes of tensor data processed so far and the total. */
  readonly onProgress?: (done: number, total: number) => void;
  /** Attempts when the file changes while it is read (an in-place rewrite). */
  readonly attempts?: number;
}

/** Reads a checkpoint once, streaming every tensor, and returns its fingerprint. */
export async function fingerprintFile(file: string, options: FingerprintOptions = {}): Promise<Fingerprint> {
  const attempts = options.attempts ?? 3;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fingerprintOnce(file, options);
    } catch (error) {
      if (!(error instanceof FileChangedError) || attempt >= attempts) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
    }
  }
}

async function fingerprintOnce(file: string, options: FingerprintOptions): Promise<Fingerprint> {
  const checkpoint = await openCheckpoint(file);
  try {
    const stat = await fs.stat(file);
    const names = normalisedNames(checkpoint.tensors.map((tensor) => tensor.name));
    const total = checkpoint.tensors.reduce((sum, tensor) => sum + tensor.byteSize, 0);
    let done = 0;
    const tensors: TensorFingerprint[] = [];
    const skipped: { name: string; reason: string }[] = [];
    for (const [index, tensor] of checkpoint.tensors.entries()) {
      throwIfAborted(options.signal);
      if (!isDecodable(tensor.dtype)) {
        skipped.push({ name: tensor.name, reason: undecodableReason(tensor.dtype) });
      } else {
        tensors.push(await fingerprintTensor(tensor, names[index]!, options.signal));
      }
      done += tensor.byteSize;
      options.onProgress?.(done, total);
    }
    const after = await fs.stat(file);
    if (after.size !== stat.size || after.mtimeMs !== stat.mtimeMs) throw new FileChangedError(file);
    return {
      version: FINGERPRINT_VERSION,
      path: file,
      size: stat.size,
      mtimeMs: stat.mtimeMs,
      format: checkpoint.format,
      parameterCount: checkpoint.tensors.reduce((sum, tensor) => sum + tensor.elementCount, 0),
      tensors,
      skipped,
      metadata: checkpoint.metadata,
      warnings: checkpoint.warnings,
    };
  } finally {
    await checkpoint.close();
  }
}

export async function fingerprintTensor(tensor: Tensor, name: string, signal?: AbortSignal): Promise<TensorFingerprint> {
  const count = tensor.elementCount;
  const exactSketch = count <= SKETCH_BUCKETS;
  const sketch = new Float64Array(exactSketch ? count : SKETCH_BUCKETS);
  const sampleRate = Math.min(1, SAMPLES_PER_TENSOR / Math.max(1, count));
  const positions = sampledPositions(count, sampleRate);
  const sample = new Float32Array(positions?.length ?? count);
  let sampled = 0;
  const hash = createHash('sha256');
  let sum = 0;
  let sumSquares = 0;
  let maxAbs = 0;
  let zeros = 0;
  let index = 0;
  // Two passes over each chunk would double the cost of the read; moments are accumulated
  // around a shift taken from the first value instead, which keeps them numerically stable.
  let shift = NaN;
  let m2 = 0;
  let m3 = 0;
  let m4 = 0;
  const content = new ContentHash();
  const rows = new RowSketch(tensor.shape);
  for await (const chunk of tensor.chunks({ signal })) {
    const single = Float32Array.from(chunk);
    hash.update(new Uint8Array(single.buffer));
    content.add(single);
    rows.add(single, index);
    if (Number.isNaN(shift)) shift = chunk[0] ?? 0;
    const end = index + chunk.length;
    if (!positions) {
      sample.set(single, index);
    } else {
      for (; sampled < positions.length && positions[sampled]! < end; sampled++) sample[sampled] = chunk[positions[sampled]! - index]!;
    }
    for (let i = 0; i < chunk.length; i++, index++) {
      const value = chunk[i]!;
      sum += value;
      sumSquares += value * value;
      const magnitude = value < 0 ? -value : value;
      if (magnitude > maxAbs) maxAbs = magnitude;
      if (value === 0) zeros++;
      const d = value - shift;
      const d2 = d * d;
      m2 += d2;
      m3 += d2 * d;
      m4 += d2 * d2;
      if (exactSketch) {
        sketch[index] = value;
      } else {
        const h = mix32(index, SKETCH_SEED);
        sketch[h & (SKETCH_BUCKETS - 1)]! += h & 0x80000000 ? -value : value;
      }
    }
  }
  if (index !== count) throw new CheckpointError(tensor.name, `streamed ${index} values, expected ${count}`);
  const mean = count > 0 ? sum / count : 0;
  const { variance, kurtosis } = centralMoments(count, shift, m2, m3, m4, mean);
  return {
    name,
    storedName: tensor.name,
    dtype: tensor.dtype,
    shape: [...tensor.shape],
    count,
    mean,
    variance,
    kurtosis,
    maxAbs,
    norm: Math.sqrt(sumSquares),
    zeros,
    hash: hash.digest('hex'),
    sketch,
    sampleRate,
    sample,
    contentHash: content.digest(),
    rowSketch: rows.values,
    ...(tensor.quantization ? { quantization: tensor.quantization.scheme } : {}),
  };
}

/**
 * Two 32-bit sums over the values' float32 bit patterns, each mixed once (a murmur-style
 * finaliser, inlined: it runs once per weight): a multiset hash, so the order of values does
 * not matter. The second sum adds a different function of the same mix.
 */
class ContentHash {
  private readonly sums = new Uint32Array(2);

  add(values: Float32Array): void {
    const bitsOf = new Uint32Array(values.buffer, values.byteOffset, values.length);
    let first = this.sums[0]!;
    let second = this.sums[1]!;
    for (let i = 0; i < bitsOf.length; i++) {
      let bits = bitsOf[i]!;
      // -0 and +0 are the same weight; every NaN is the same missing value.
      if ((bits & 0x7fffffff) === 0) bits = 0;
      else if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) bits = 0x7fc00000;
      let h = Math.imul(bits ^ CONTENT_SEED, 0x9e3779b1);
      h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
      h ^= h >>> 13;
      // Int32 arithmetic (| 0) wraps like uint32 and keeps V8 off doubles: three times faster.
      first = (first + h) | 0;
      second = (second + Math.imul(h, h | 1)) | 0;
    }
    this.sums[0] = first;
    this.sums[1] = second;
  }

  digest(): string {
    return this.sums[0]!.toString(16).padStart(8, '0') + this.sums[1]!.toString(16).padStart(8, '0');
  }
}

/** Kept row indices (sorted) by row count: files with matrices of one height keep the same rows. */
const keptRowsByCount = new Map<number, Int32Array>();

/** The kept rows of a matrix, each projected on random ±1 columns, accumulated as values stream past. */
class RowSketch {
  private readonly columns: number;
  /** Slot of each kept row in `values`, -1 for rows not kept. */
  private readonly slotOfRow: Int32Array | undefined;
  private readonly sums: Float64Array;

  constructor(shape: readonly number[]) {
    const rows = shape[0] ?? 0;
    this.columns = shape.slice(1).reduce((product, dimension) => product * dimension, 1);
    if (shape.length < 2 || rows < 2 || this.columns < 2) {
      this.sums = new Float64Array(0);
      return;
    }
    const kept = keptRows(rows);
    this.slotOfRow = new Int32Array(rows).fill(-1);
    kept.forEach((row, slot) => (this.slotOfRow![row] = slot));
    this.sums = new Float64Array(kept.length * ROW_SKETCH_PROJECTIONS);
  }

  get values(): Float32Array {
    return Float32Array.from(this.sums);
  }

  /** Adds a chunk whose first value is element `start` of the tensor in row-major order. */
  add(chunk: Float32Array, start: number): void {
    if (!this.slotOfRow) return;
    const columns = this.columns;
    let offset = 0;
    while (offset < chunk.length) {
      const element = start + offset;
      const row = Math.floor(element / columns);
      const firstColumn = element - row * columns;
      const length = Math.min(columns - firstColumn, chunk.length - offset);
      const slot = this.slotOfRow[row]!;
      if (slot >= 0) {
        const base = slot * ROW_SKETCH_PROJECTIONS;
        for (let k = 0; k < length; k++) {
          const value = chunk[offset + k]!;
          const signs = mix32(firstColumn + k, ROW_PROJECTION_SEED);
          for (let p = 0; p < ROW_SKETCH_PROJECTIONS; p++) this.sums[base + p]! += (signs >>> p) & 1 ? -value : value;
        }
      }
      offset += length;
    }
  }
}

function keptRows(rows: number): Int32Array {
  let kept = keptRowsByCount.get(rows);
  if (!kept) {
    if (rows <= ROW_SKETCH_ROWS) {
      kept = Int32Array.from({ length: rows }, (_, row) => row);
    } else {
      const order = Array.from({ length: rows }, (_, row) => row).sort((a, b) => mix32(a, ROW_SAMPLE_SEED) - mix32(b, ROW_SAMPLE_SEED));
      kept = Int32Array.from(order.slice(0, ROW_SKETCH_ROWS)).sort();
    }
    if (keptRowsByCount.size >= MAX_REMEMBERED_SIZES) keptRowsByCount.delete(keptRowsByCount.keys().next().value!);
    keptRowsByCount.set(rows, kept);
  }
  return kept;
}

/** Sampled positions by tensor size: every file's tensors of one size share them. */
const positionsBySize = new Map<number, Uint32Array | Float64Array>();
const MAX_REMEMBERED_SIZES = 256;

/** Sorted element indices kept in the sample, or undefined when every element is kept. */
function sampledPositions(count: number, rate: number): Uint32Array | Float64Array | undefined {
  if (rate >= 1) return undefined;
  let positions = positionsBySize.get(count);
  if (!positions) {
    const threshold = rate * 4294967296;
    const kept: number[] = [];
    for (let index = 0; index < count; index++) if (mix32(index, SAMPLE_SEED) < threshold) kept.push(index);
    positions = count <= 0xffffffff ? Uint32Array.from(kept) : Float64Array.from(kept);
    if (positionsBySize.size >= MAX_REMEMBERED_SIZES) positionsBySize.delete(positionsBySize.keys().next().value!);
    positionsBySize.set(count, positions);
  }
  return positions;
}

/** Converts moments about `shift` into the variance and kurtosis about the mean. */
function centralMoments(count: number, shift: number, m2: number, m3: number, m4: number, mean: number) {
  if (count === 0) return { variance: 0, kurtosis: 0 };
  const e1 = mean - (Number.isNaN(shift) ? 0 : shift);
  const e2 = m2 / count;
  const e3 = m3 / count;
  const e4 = m4 / count;
  const variance = Math.max(0, e2 - e1 * e1);
  const fourth = e4 - 4 * e1 * e3 + 6 * e1 * e1 * e2 - 3 * e1 ** 4;
  return { variance, kurtosis: variance > 0 ? fourth / (variance * variance) : 0 };
}
