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

  /** Reads a strided view: fetch the storage span the requested elements touch, then pick them out. */
  private async gather(start: number, count: number): Promise<Float64Array> {
    const indices = new Float64Array(count);
    let low = Infinity;
    let high = -Infinity;
    const position = unravel(start, this.shape);
    for (let i = 0; i < count; i++) {
      let index = this.offset;
      for (let d = 0; d < position.length; d++) index += position[d]! * this.strides[d]!;
      indices[i] = index;
      if (index < low) low = index;
      if (index > high) high = index;
      increment(position, this.shape);
    }
    const bytes = await this.storage.read(low * this.width, (high - low + 1) * this.width);
    const span = decodeToFloat64(this.dtype, bytes, this.littleEndian);
    const out = new Float64Array(count);
    for (let i = 0; i < count; i++) out[i] = span[indices[i]! - low]!;
    return out;
  }

  async *chunks(options: ChunkOptions = {}): AsyncIterable<Float64Array> {
    const step = Math.max(1, options.chunkElements ?? DEFAULT_CHUNK_ELEMENTS);
    for (let start = 0; start < this.elementCount; start += step) {
      throwIfAborted(options.signal);
      yield await this.read(start, Math.min(step, this.elementCount - start));
    }
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
