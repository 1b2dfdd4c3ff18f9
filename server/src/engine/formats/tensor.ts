import type { ByteSource } from '../io/byteSource';
import { CheckpointError, throwIfAborted } from '../errors';
import { DTYPE_BYTES, decodeToFloat64, isDecodable, undecodableReason, type DType } from './dtype';

/** What is known of a tensor from a checkpoint's index, before any of its values are read. */
export interface TensorInfo {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly elementCount: number;
  /** Bytes its values occupy when stored densely (elementCount × element width). */
  readonly byteSize: number;
  /**
   * Set when the stored values are integer codes or blocks that the reader dequantizes
   * (GGUF Q4_K, TFLite int8 with a scale, TF.js uint8 with scale and min): `read` then
   * returns the dequantized values and `dtype` is the type they are delivered in.
   */
  readonly quantization?: Quantization;
}

export interface Quantization {
  /** The stored scheme as the format names it, e.g. "Q4_K", "int8 affine", "uint8 scale/min". */
  readonly scheme: string;
  /** Bits per stored value (4.5 for Q4_0 including its scales), for display. */
  readonly bitsPerValue: number;
}

export interface ChunkOptions {
  /** Elements per chunk; memory stays proportional to this whatever the tensor's size. */
  readonly chunkElements?: number;
  readonly signal?: AbortSignal;
}

export interface Tensor extends TensorInfo {
  /** Reads `count` elements starting at element `start`, in row-major order, as float64. */
  read(start?: number, count?: number): Promise<Float64Array>;
  /** Streams every element in row-major order. */
  chunks(options?: ChunkOptions): AsyncIterable<Float64Array>;
}

export const DEFAULT_CHUNK_ELEMENTS = 1 << 20;

/** Largest storage span a strided read fetches at once. */
const MAX_GATHER_SPAN_BYTES = 16 * 1024 * 1024;
/**
 * Needed storage elements about this close are fetched in one read rather than two: only
 * the needed elements are decoded, so skipped bytes cost a copy, far less than a read.
 * Must stay below MAX_GATHER_SPAN_BYTES.
 */
const MAX_GATHER_GAP_BYTES = 1024 * 1024;

export function elementCountOf(shape: readonly number[], what: string, file: string): number {
  let count = 1;
  for (const dimension of shape) {
    if (!Number.isSafeInteger(dimension) || dimension < 0) {
      throw new CheckpointError(file, `${what}: invalid dimension ${dimension} in shape [${shape.join(', ')}]`);
    }
    count *= dimension;
    if (!Number.isSafeInteger(count)) throw new CheckpointError(file, `${what}: shape [${shape.join(', ')}] is too large`);
  }
  return count;
}

/**
 * A tensor whose values are read lazily from a byte source. `strides` and `offset` (in
 * elements) describe a view into a storage that several tensors may share; a dense
 * row-major tensor has offset 0 and row-major strides.
 */
export class StoredTensor implements Tensor {
  readonly elementCount: number;
  readonly byteSize: number;
  private readonly width: number;
  private readonly contiguous: boolean;

  constructor(
    readonly name: string,
    readonly dtype: DType,
    readonly shape: readonly number[],
    private readonly storage: ByteSource,
    private readonly littleEndian = true,
    private readonly offset = 0,
    private readonly strides: readonly number[] = rowMajorStrides(shape),
  ) {
    this.width = DTYPE_BYTES[dtype];
    this.elementCount = elementCountOf(shape, name, storage.name);
    this.byteSize = this.elementCount * this.width;
    this.contiguous = sameStrides(strides, rowMajorStrides(shape), shape);
    const [low, high] = storageExtent(shape, strides, offset);
    if (this.elementCount > 0 && (low < 0 || (high + 1) * this.width > storage.size)) {
      throw new CheckpointError(
        storage.name,
        `tensor "${name}" needs storage elements ${low}..${high} but its storage holds ${Math.floor(storage.size / this.width)}`,
      );
    }
  }

  async read(start = 0, count = this.elementCount - start): Promise<Float64Array> {
    if (start < 0 || count < 0 || start + count > this.elementCount) {
      throw new CheckpointError(this.storage.name, `tensor "${this.name}": elements ${start}+${count} are out of range`);
    }
    if (!isDecodable(this.dtype)) throw new CheckpointError(this.storage.name, `tensor "${this.name}": ${undecodableReason(this.dtype)}`);
    if (count === 0) return new Float64Array(0);
    if (this.contiguous) {
      const bytes = await this.storage.read((this.offset + start) * this.width, count * this.width);
      return decodeToFloat64(this.dtype, bytes, this.littleEndian);
    }
    return this.gather(start, count);
  }

  /**
   * Reads a strided view: find the storage element behind each requested element, read the
   * storage around them in ranges of at most MAX_GATHER_SPAN_BYTES, and copy each element's
   * bytes into row-major order before decoding. A chunk of rows of a large column-major
   * array touches every column; reading it range by range keeps memory proportional to the
   * chunk, not to the whole storage, and only the requested elements are decoded.
   */
  private async gather(start: number, count: number): Promise<Float64Array> {
    const width = this.width;
    const indices = this.storageIndices(start, count);
    const { lows, highs, order, firsts } = planGather(indices, width);
    const packed = Buffer.allocUnsafe(count * width);
    for (let range = 0; range < lows.length; range++) {
      const low = lows[range]!;
      const bytes = await this.storage.read(low * width, (highs[range]! - low + 1) * width);
      for (let k = firsts[range]!; k < firsts[range + 1]!; k++) {
        const i = order[k]!;
        const from = (indices[i]! - low) * width;
        const to = i * width;
        // A byte loop: far cheaper than Buffer.copy for a few bytes at a time.
        for (let b = 0; b < width; b++) packed[to + b] = bytes[from + b]!;
      }
    }
    return decodeToFloat64(this.dtype, packed, this.littleEndian);
  }

  /** Storage element index of each of `count` elements from `start`, in row-major order. */
  private storageIndices(start: number, count: number): Float64Array {
    const indices = new Float64Array(count);
    const position = unravel(start, this.shape);
    for (let i = 0; i < count; i++) {
      let index = this.offset;
      for (let d = 0; d < position.length; d++) index += position[d]! * this.strides[d]!;
      indices[i] = index;
      increment(position, this.shape);
    }
    return indices;
  }

  chunks(options: ChunkOptions = {}): AsyncIterable<Float64Array> {
    return readAhead(this, Math.max(1, options.chunkElements ?? DEFAULT_CHUNK_ELEMENTS), options.signal);
  }
}

/**
 * Streams a tensor in chunks of `step` elements through its `read`, one chunk ahead, so the
 * disk works while the caller computes on the current chunk.
 */
export async function* readAhead(tensor: Pick<Tensor, 'elementCount' | 'read'>, step: number, signal?: AbortSignal): AsyncIterable<Float64Array> {
  const readFrom = (start: number) => tensor.read(start, Math.min(step, tensor.elementCount - start));
  let pending = tensor.elementCount > 0 ? readFrom(0) : undefined;
  for (let start = 0; pending; start += step) {
    throwIfAborted(signal);
    const current = await pending;
    pending = start + step < tensor.elementCount ? readFrom(start + step) : undefined;
    // A read left pending when the caller stops early must not surface as an unhandled rejection.
    pending?.catch(() => undefined);
    yield current;
  }
}

export function rowMajorStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let stride = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = stride;
    stride *= shape[d]!;
  }
  return strides;
}

/** Strides of size-1 dimensions never matter, so they are ignored in the comparison. */
function sameStrides(a: readonly number[], b: readonly number[], shape: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((stride, d) => shape[d] === 1 || stride === b[d]);
}

function storageExtent(shape: readonly number[], strides: readonly number[], offset: number): [number, number] {
  let low = offset;
  let high = offset;
  shape.forEach((size, d) => {
    if (size === 0) return;
    const reach = (size - 1) * strides[d]!;
    if (reach < 0) low += reach;
    else high += reach;
  });
  return [low, high];
}

/** Which storage ranges a strided read fetches, and which requested elements each one serves. */
interface GatherPlan {
  /** Storage element ranges [lows[p], highs[p]], ascending. */
  readonly lows: readonly number[];
  readonly highs: readonly number[];
  /** Requested positions grouped by range: range p serves order[firsts[p]] .. order[firsts[p + 1] - 1]. */
  readonly order: Uint32Array;
  readonly firsts: Uint32Array;
}

/**
 * Plans the reads for storage elements `indices`. When they all lie within
 * MAX_GATHER_SPAN_BYTES that is one range (the common case). Otherwise the span is cut into
 * buckets of MAX_GATHER_GAP_BYTES: elements in one bucket are always read together, and
 * neighbouring occupied buckets join the same range while the gap between them is at most a
 * bucket and the range stays within MAX_GATHER_SPAN_BYTES. Bucketing does in linear time
 * what sorting the indices would do in n log n.
 */
function planGather(indices: Float64Array, width: number): GatherPlan {
  const count = indices.length;
  let lowest = Infinity;
  let highest = -Infinity;
  for (const index of indices) {
    if (index < lowest) lowest = index;
    if (index > highest) highest = index;
  }
  if ((highest - lowest + 1) * width <= MAX_GATHER_SPAN_BYTES) {
    const order = new Uint32Array(count);
    for (let i = 0; i < count; i++) order[i] = i;
    return { lows: [lowest], highs: [highest], order, firsts: Uint32Array.of(0, count) };
  }

  const bucketElements = Math.max(1, Math.floor(MAX_GATHER_GAP_BYTES / width));
  const bucketOf = (index: number): number => Math.floor((index - lowest) / bucketElements);
  const bucketCount = bucketOf(highest) + 1;
  const bucketLow = new Float64Array(bucketCount).fill(Infinity);
  const bucketHigh = new Float64Array(bucketCount).fill(-Infinity);
  for (const index of indices) {
    const bucket = bucketOf(index);
    if (index < bucketLow[bucket]!) bucketLow[bucket] = index;
    if (index > bucketHigh[bucket]!) bucketHigh[bucket] = index;
  }

  const maxSpan = Math.floor(MAX_GATHER_SPAN_BYTES / width);
  const lows: number[] = [];
  const highs: number[] = [];
  const rangeOfBucket = new Uint32Array(bucketCount);
  for (let bucket = 0; bucket < bucketCount; bucket++) {
    const low = bucketLow[bucket]!;
    const high = bucketHigh[bucket]!;
    if (low === Infinity) continue;
    const last = lows.length - 1;
    if (last >= 0 && low - highs[last]! <= bucketElements && high - lows[last]! < maxSpan) {
      highs[last] = high;
    } else {
      lows.push(low);
      highs.push(high);
    }
    rangeOfBucket[bucket] = lows.length - 1;
  }

  // A counting sort of the requested positions by range.
  const rangeOf = new Uint32Array(count);
  const firsts = new Uint32Array(lows.length + 1);
  indices.forEach((index, i) => {
    const range = rangeOfBucket[bucketOf(index)]!;
    rangeOf[i] = range;
    firsts[range + 1]!++;
  });
  for (let range = 1; range < firsts.length; range++) firsts[range]! += firsts[range - 1]!;
  const next = firsts.slice(0, lows.length);
  const order = new Uint32Array(count);
  rangeOf.forEach((range, i) => {
    order[next[range]!++] = i;
  });
  return { lows, highs, order, firsts };
}

function unravel(flat: number, shape: readonly number[]): number[] {
  const position = new Array<number>(shape.length).fill(0);
  for (let d = shape.length - 1; d >= 0 && flat > 0; d--) {
    position[d] = flat % shape[d]!;
    flat = Math.floor(flat / shape[d]!);
  }
  return position;
}

function increment(position: number[], shape: readonly number[]): void {
  for (let d = position.length - 1; d >= 0; d--) {
    if (++position[d]! < shape[d]!) return;
    position[d] = 0;
  }
}
