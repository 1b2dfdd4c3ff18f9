import { CheckpointError } from '../errors';
import type { DType } from './dtype';
import type { ChunkOptions, Quantization, Tensor } from './tensor';

/**
 * A tensor stored as codes that an affine map turns into real values:
 *
 *     value = (code - zeroPoint[c]) * scale[c] + offset[c]
 *
 * where c is the element's channel along `axis`, or 0 when the map is per-tensor. This one
 * form covers TensorFlow.js ("uint8 scale/min": zero point 0, offset = min), TFLite
 * (scale and zero_point, offset 0; per-tensor or per-channel along quantized_dimension) and,
 * with no map at all, codes that only need decoding (TF.js float16 weights).
 *
 * The codes stay on disk in a lazily read tensor; each read maps just the elements asked for.
 */

export interface AffineMap {
  /** One entry for the whole tensor, or one per index along `axis`. */
  readonly scale: readonly number[];
  /** Subtracted from each code before scaling; the same length as `scale`. */
  readonly zeroPoint: readonly number[];
  /** Added after scaling; the same length as `scale`. */
  readonly offset: readonly number[];
  /** The dimension the per-channel entries run along; ignored for a per-tensor map. */
  readonly axis?: number;
}

/** Types an AffineTensor can deliver, with the rounding that makes a value one of that type. */
const DELIVERED_ROUNDING = {
  F64: (value: number) => value,
  // Producers compute in float32 (TFLite's `scale * (q - zero_point)`, TF.js's Float32Array),
  // so the exact float32 result is what they would hand back.
  F32: Math.fround,
  // TF.js rounds dequantized int32 weights to the nearest integer.
  I32: Math.round,
} as const;

export type AffineDeliveredDType = keyof typeof DELIVERED_ROUNDING;

export class AffineTensor implements Tensor {
  readonly shape: readonly number[];
  readonly elementCount: number;
  readonly byteSize: number;
  /** Elements that share one channel index in a row (the product of the dimensions after the axis). */
  private readonly channelRun: number;
  private readonly channels: number;
  private readonly round: (value: number) => number;

  /**
   * `codes` holds the stored codes (any decodable type) in the tensor's shape. With a map,
   * `dtype` must be one of AffineDeliveredDType; without one the codes are delivered as
   * they decode, so `dtype` must be the codes' own type. `file` names the checkpoint in errors.
   */
  constructor(
    readonly name: string,
    readonly dtype: DType,
    private readonly codes: Tensor,
    private readonly map: AffineMap | undefined,
    readonly quantization: Quantization,
    file: string,
  ) {
    this.shape = codes.shape;
    this.elementCount = codes.elementCount;
    // What the stored codes occupy: the bytes a read costs and the file holds.
    this.byteSize = codes.byteSize;
    const layout = checkedLayout(dtype, codes, map, (problem) => {
      throw new CheckpointError(file, `tensor "${name}": ${problem}`);
    });
    this.channels = layout.channels;
    this.channelRun = layout.channelRun;
    this.round = layout.round;
  }

  async read(start = 0, count = this.elementCount - start): Promise<Float64Array> {
    return this.dequantize(await this.codes.read(start, count), start);
  }

  async *chunks(options: ChunkOptions = {}): AsyncIterable<Float64Array> {
    let start = 0;
    for await (const chunk of this.codes.chunks(options)) {
      yield this.dequantize(chunk, start);
      start += chunk.length;
    }
  }

  /** Maps decoded codes in place; `start` is the flat index of the first one. */
  private dequantize(values: Float64Array, start: number): Float64Array {
    if (this.map === undefined || values.length === 0) return values;
    const { scale, zeroPoint, offset } = this.map;
    const round = this.round;
    // Walk the channel index alongside the elements instead of dividing for each one.
    let channel = Math.floor(start / this.channelRun) % this.channels;
    let leftInRun = this.channelRun - (start % this.channelRun);
    let s = scale[channel]!;
    let z = zeroPoint[channel]!;
    let o = offset[channel]!;
    for (let i = 0; i < values.length; i++) {
      if (leftInRun === 0) {
        channel = channel + 1 === this.channels ? 0 : channel + 1;
        leftInRun = this.channelRun;
        s = scale[channel]!;
        z = zeroPoint[channel]!;
        o = offset[channel]!;
      }
      const scaled = (values[i]! - z) * s;
      // Adding a zero offset would turn a -0 into +0, which the producer never does.
      values[i] = round(o === 0 ? scaled : scaled + o);
      leftInRun--;
    }
    return values;
  }
}

interface Layout {
  readonly channels: number;
  readonly channelRun: number;
  readonly round: (value: number) => number;
}

/** Checks that `map` fits the codes' shape and `dtype`, and says how channels repeat along the flat order. */
function checkedLayout(dtype: DType, codes: Tensor, map: AffineMap | undefined, fail: (problem: string) => never): Layout {
  const wholeTensor = { channels: 1, channelRun: codes.elementCount };
  if (map === undefined) {
    if (dtype !== codes.dtype) fail(`codes of type ${codes.dtype} cannot be delivered as ${dtype} without a map`);
    return { ...wholeTensor, round: DELIVERED_ROUNDING.F64 };
  }
  if (!isDeliveredDType(dtype)) return fail(`dequantized values cannot be delivered as ${dtype}`);
  const round = DELIVERED_ROUNDING[dtype];
  const { scale, zeroPoint, offset, axis } = map;
  if (scale.length === 0) fail('the quantization has no scale');
  if (zeroPoint.length !== scale.length || offset.length !== scale.length) {
    fail(`the quantization has ${scale.length} scales but ${zeroPoint.length} zero points and ${offset.length} offsets`);
  }
  for (const parameter of [...scale, ...zeroPoint, ...offset]) {
    if (!Number.isFinite(parameter)) fail(`quantization parameter ${parameter} is not a finite number`);
  }
  if (scale.length === 1) return { ...wholeTensor, round };
  const shape = codes.shape;
  if (axis === undefined || !Number.isInteger(axis) || axis < 0 || axis >= shape.length) {
    return fail(`per-channel quantization along dimension ${String(axis)} of shape [${shape.join(', ')}]`);
  }
  if (shape[axis] !== scale.length) fail(`${scale.length} per-channel scales along dimension ${axis}, which has size ${shape[axis]}`);
  return { channels: scale.length, channelRun: shape.slice(axis + 1).reduce((product, size) => product * size, 1), round };
}

function isDeliveredDType(dtype: DType): dtype is AffineDeliveredDType {
  return Object.hasOwn(DELIVERED_ROUNDING, dtype);
}
