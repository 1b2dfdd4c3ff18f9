import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

/**
 * A minimal TensorFlow.js model writer for tests, laid out as the converter and tfjs-layers
 * write models: a model.json whose `weightsManifest` lists weight groups, each group's
 * weights concatenated in manifest order and cut into shard files of a fixed size
 * (`group1-shard1of3.bin`, ...), so a weight may start in one shard and end in the next.
 */

export type TfjsDtype = 'float32' | 'int32' | 'bool' | 'string' | 'complex64';

export interface TfjsQuantization {
  readonly dtype: 'uint8' | 'uint16' | 'float16';
  readonly scale?: number;
  readonly min?: number;
  readonly original_dtype?: string;
}

export interface TfjsWeightSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: TfjsDtype;
  readonly quantization?: TfjsQuantization;
  /** The stored bytes: codes when quantized, length-prefixed UTF-8 for strings. */
  readonly data: Buffer;
}

export interface TfjsGroupSpec {
  /** The manifest's entries for the group, in storage order. */
  readonly entries: readonly object[];
  /** The group's weights back to back, as one buffer before it is cut into shards. */
  readonly data: Buffer;
  /** Shard size in bytes; the last shard holds what is left. */
  readonly shardBytes: number;
}

export interface TfjsModelSpec {
  readonly groups: readonly TfjsGroupSpec[];
  /** Other top-level model.json fields (format, generatedBy, convertedBy, modelTopology, userDefinedMetadata, ...). */
  readonly fields?: Readonly<Record<string, unknown>>;
}

/** A group holding `weights` in order, with the manifest entries the converter writes for them. */
export function weightGroup(weights: readonly TfjsWeightSpec[], shardBytes: number): TfjsGroupSpec {
  return {
    entries: weights.map((weight) => ({
      name: weight.name,
      shape: weight.shape,
      dtype: weight.dtype,
      ...(weight.quantization ? { quantization: weight.quantization } : {}),
    })),
    data: Buffer.concat(weights.map((weight) => weight.data)),
    shardBytes,
  };
}

/** Writes model.json and its shards (`group1-shard1of3.bin`, ...) into `dir`; returns the path of model.json. */
export function writeTfjsModel(dir: string, spec: TfjsModelSpec, modelName = 'model.json'): string {
  const weightsManifest = spec.groups.map((group, g) => {
    const count = Math.max(1, Math.ceil(group.data.length / group.shardBytes));
    const paths: string[] = [];
    for (let s = 0; s < count; s++) {
      const name = `group${g + 1}-shard${s + 1}of${count}.bin`;
      writeFileSync(path.join(dir, name), group.data.subarray(s * group.shardBytes, (s + 1) * group.shardBytes));
      paths.push(name);
    }
    return { paths, weights: group.entries };
  });
  const modelPath = path.join(dir, modelName);
  writeFileSync(modelPath, JSON.stringify({ ...spec.fields, weightsManifest }));
  return modelPath;
}

/** A Keras Sequential topology as tfjs-layers saves it, with one entry per layer name. */
export function sequentialTopology(layerNames: readonly string[]): Record<string, unknown> {
  return {
    class_name: 'Sequential',
    config: {
      name: 'sequential_1',
      layers: layerNames.map((name) => ({ class_name: 'Dense', config: { name, units: 2, activation: 'linear', use_bias: true } })),
    },
    keras_version: 'tfjs-layers 4.22.0',
    backend: 'tensor_flow.js',
  };
}

// Element encoders: little-endian bytes for the values given.

export function float32(...values: number[]): Buffer {
  return Buffer.from(new Float32Array(values).buffer);
}

export function int32(...values: number[]): Buffer {
  return Buffer.from(new Int32Array(values).buffer);
}

export function uint8(...values: number[]): Buffer {
  return Buffer.from(values);
}

/** Raw 16-bit codes: uint16 quantization codes or float16 bit patterns. */
export function uint16(...codes: number[]): Buffer {
  return Buffer.from(new Uint16Array(codes).buffer);
}

/** TF.js string weights: each element's UTF-8 byte length as a uint32, then its bytes. */
export function strings(...values: string[]): Buffer {
  return Buffer.concat(
    values.flatMap((value) => {
      const bytes = Buffer.from(value, 'utf8');
      const length = Buffer.alloc(4);
      length.writeUInt32LE(bytes.length);
      return [length, bytes];
    }),
  );
}
