/**
 * Synthetic models for lineage tests: a small MLP with batch norm, fine-tunes as random updates,
 * pruned and 16-bit copies with reference rounding, written as safetensors files.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { decodeToFloat64 } from '../../server/src/engine/formats/dtype';
import { seededRandom, type Random } from './random';
import { encodeSafetensors, int64, type TensorSpec } from './safetensorsWriter';

// ---------------------------------------------------------------------------------------------
// Reference 16-bit rounding, built on the project's own decoder
// ---------------------------------------------------------------------------------------------

export type SixteenBit = 'F16' | 'BF16';

interface SixteenBitTable {
  /** Decoded value of every code. */
  readonly values: Float64Array;
  /** Code of +∞; codes below it are the finite non-negative values, ascending. */
  readonly infinityCode: number;
  /** The value +∞ stands in for when rounding: the next step after the largest finite value. */
  readonly beyond: number;
}

function tableOf(dtype: SixteenBit): SixteenBitTable {
  const codes = Uint16Array.from({ length: 65536 }, (_, code) => code);
  return {
    values: decodeToFloat64(dtype, new Uint8Array(codes.buffer)),
    infinityCode: dtype === 'F16' ? 0x7c00 : 0x7f80,
    beyond: dtype === 'F16' ? 65536 : 2 ** 128,
  };
}

export const TABLES: Record<SixteenBit, SixteenBitTable> = { F16: tableOf('F16'), BF16: tableOf('BF16') };

/**
 * IEEE round-to-nearest-even into a 16-bit format, by search among its decoded values: the
 * nearer of the two neighbours, the even code on a tie, +∞ past the midpoint above the
 * largest finite value. Returns the code.
 */
export function referenceCode(value: number, dtype: SixteenBit): number {
  const { values, infinityCode, beyond } = TABLES[dtype];
  if (Number.isNaN(value)) return infinityCode | 0x200;
  const sign = value < 0 || Object.is(value, -0) ? 0x8000 : 0;
  const magnitude = Math.abs(value);
  let code: number;
  if (magnitude >= beyond) {
    code = infinityCode;
  } else {
    // Largest k with values[k] <= magnitude.
    let low = 0;
    let high = infinityCode - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (values[middle]! <= magnitude) low = middle;
      else high = middle - 1;
    }
    const below = values[low]!;
    const above = low + 1 < infinityCode ? values[low + 1]! : beyond;
    const down = magnitude - below;
    const up = above - magnitude;
    code = down < up || (down === up && low % 2 === 0) ? low : low + 1;
  }
  return sign | code;
}

export function referenceRound(value: number, dtype: SixteenBit): number {
  return TABLES[dtype].values[referenceCode(value, dtype)]!;
}

// ---------------------------------------------------------------------------------------------
// Synthetic models
// ---------------------------------------------------------------------------------------------

export interface Layer {
  readonly shape: readonly number[];
  readonly values: Float32Array;
}

/** A small MLP with a batch norm: weights, biases, BN statistics and a step counter. */
export interface Model {
  readonly layers: ReadonlyMap<string, Layer>;
  readonly steps: number;
}

export const SHAPES: Record<string, readonly number[]> = {
  'fc1.weight': [128, 784],
  'fc1.bias': [128],
  'bn.weight': [128],
  'bn.bias': [128],
  'bn.running_mean': [128],
  'bn.running_var': [128],
  'fc2.weight': [64, 128],
  'fc2.bias': [64],
  'head.weight': [10, 64],
  'head.bias': [10],
};
export const BUFFERS = new Set(['bn.running_mean', 'bn.running_var']);

export function countOf(shape: readonly number[]): number {
  return shape.reduce((product, size) => product * size, 1);
}

function initialLayer(random: Random, name: string, shape: readonly number[]): Layer {
  const count = countOf(shape);
  if (name === 'bn.weight') return { shape, values: random.normals(count, 0.05, 1) };
  if (name === 'bn.running_var') return { shape, values: Float32Array.from({ length: count }, () => 0.5 + Math.abs(random.normal())) };
  const fanIn = shape.length > 1 ? shape[1]! : 16;
  return { shape, values: random.normals(count, name === 'bn.running_mean' ? 0.5 : 1 / Math.sqrt(fanIn)) };
}

export function randomModel(seed: number, shapes: Record<string, readonly number[]> = SHAPES): Model {
  const random = seededRandom(seed);
  return { layers: new Map(Object.entries(shapes).map(([name, shape]) => [name, initialLayer(random, name, shape)])), steps: 1000 };
}

export function std(values: Float32Array): number {
  let sum = 0;
  let squares = 0;
  for (const value of values) {
    sum += value;
    squares += value * value;
  }
  const mean = sum / values.length;
  return Math.sqrt(Math.max(squares / values.length - mean * mean, 1e-12));
}

export interface FinetuneOptions {
  /** Update size relative to each tensor's spread. */
  readonly relative?: number;
  /** Elements that keep their parent's value (frozen, no gradient). */
  readonly frozen?: (name: string, index: number) => boolean;
  /** Layers replaced by a fresh initialisation (a new head), with an optional new shape. */
  readonly replace?: Record<string, readonly number[] | undefined>;
}

/** parent + a random update of each weight; BN statistics are recomputed (here: redrawn). */
export function finetune(parent: Model, seed: number, options: FinetuneOptions = {}): Model {
  const random = seededRandom(seed);
  const relative = options.relative ?? 0.05;
  const layers = new Map<string, Layer>();
  for (const [name, layer] of parent.layers) {
    const replacement = options.replace && name in options.replace ? options.replace[name] ?? layer.shape : undefined;
    if (replacement) {
      layers.set(name, initialLayer(random, name, replacement));
    } else if (BUFFERS.has(name)) {
      layers.set(name, initialLayer(random, name, layer.shape));
    } else {
      const scale = relative * std(layer.values);
      const values = layer.values.map((value, index) => (options.frozen?.(name, index) ? value : value + random.normal(0, scale)));
      layers.set(name, { shape: layer.shape, values });
    }
  }
  return { layers, steps: parent.steps + 500 };
}

export function mapWeights(model: Model, change: (name: string, values: Float32Array) => Float32Array): Model {
  return { ...model, layers: new Map([...model.layers].map(([name, layer]) => [name, { shape: layer.shape, values: change(name, layer.values) }])) };
}

/** Each matrix (dim ≥ 2) with its `ratio` smallest magnitudes set to zero. */
export function pruned(model: Model, ratio: number): Model {
  return mapWeights(model, (name, values) => {
    if (model.layers.get(name)!.shape.length < 2) return values;
    const cut = [...values].map(Math.abs).sort((a, b) => a - b)[Math.floor(ratio * values.length)]!;
    return values.map((value) => (Math.abs(value) < cut ? 0 : value));
  });
}

export type Storage = 'F32' | 'F64' | SixteenBit;

export function encodeValues(values: Float32Array, dtype: Storage): Buffer {
  if (dtype === 'F32') return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  if (dtype === 'F64') return Buffer.from(Float64Array.from(values).buffer);
  const codes = Uint16Array.from(values, (value) => referenceCode(value, dtype));
  return Buffer.from(codes.buffer);
}

export type ModelWriter = (model: Model, options?: { dtype?: Storage; prefix?: string; file?: string }) => string;

/** Writes models as safetensors files (with a step counter), by default to numbered files in `directory`. */
export function modelWriter(directory: string): ModelWriter {
  let fileCounter = 0;
  return (model, options = {}) => {
    const prefix = options.prefix ?? '';
    const specs: TensorSpec[] = [...model.layers].map(([name, layer]) => ({
      name: prefix + name,
      dtype: options.dtype ?? 'F32',
      shape: layer.shape,
      data: encodeValues(layer.values, options.dtype ?? 'F32'),
    }));
    specs.push({ name: `${prefix}bn.num_batches_tracked`, dtype: 'I64', shape: [], data: int64(BigInt(model.steps)) });
    const file = options.file ?? path.join(directory, `model${++fileCounter}.safetensors`);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, encodeSafetensors(specs));
    return file;
  };
}
