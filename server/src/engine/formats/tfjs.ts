import * as path from 'node:path';
import { CheckpointError } from '../errors';
import { FileSource, RangeCheckedSource, type ByteSource } from '../io/byteSource';
import { AffineTensor } from './affineTensor';
import type { Checkpoint, FormatReader } from './checkpoint';
import type { DType } from './dtype';
import { StoredTensor, elementCountOf, type Tensor } from './tensor';

/**
 * TensorFlow.js models: a `model.json` with the model's topology (a Keras-style layers
 * model or a TensorFlow graph) and a `weightsManifest`, a list of weight groups. A group's
 * weights are stored back to back, in manifest order, in the concatenation of its shard
 * files (`paths`, relative to model.json); a weight may start in one shard and end in the
 * next. Opening reads model.json and checks each group's layout against its shards' sizes;
 * weight values are read from the shards by range when asked for.
 *
 * dtypes: float32, int32 and bool are listed as stored. Weights quantized by the converter
 * are dequantized: uint8/uint16 codes as `code * scale + min` (rounded to the weight's
 * float32 or int32 type, as TF.js does), float16 codes decoded exactly and delivered as F16.
 * string and complex64 weights are left out with a warning; strings are length-prefixed,
 * so their bytes are walked to find where the next weight starts.
 */

/** model.json holds the topology, which for large graphs runs to megabytes; far beyond that is not one. */
const MAX_MODEL_JSON_BYTES = 256 * 1024 * 1024;
/** How much of a .json file `isTfjsModelJson` looks at: the top-level keys come first in practice. */
const SNIFF_JSON_BYTES = 16 * 1024;
const MODEL_JSON_NAME = 'model.json';
const TOP_LEVEL_KEYS = ['"modelTopology"', '"weightsManifest"'];
/** Each string element starts with its byte length as a little-endian uint32. */
const STRING_LENGTH_BYTES = 4;
/** Bytes read at a time while walking the lengths of a string weight's elements. */
const STRING_WALK_WINDOW = 64 * 1024;

/** Stored widths of the manifest's dtypes; string has none (its elements vary in length). */
const DTYPE_WIDTHS: Readonly<Record<string, number>> = { float32: 4, int32: 4, bool: 1, complex64: 8 };
const LISTED_DTYPES: Readonly<Record<string, DType>> = { float32: 'F32', int32: 'I32', bool: 'BOOL' };
const QUANTIZED_CODES: Readonly<Record<string, { readonly dtype: DType; readonly bits: number }>> = {
  uint8: { dtype: 'U8', bits: 8 },
  uint16: { dtype: 'U16', bits: 16 },
  float16: { dtype: 'F16', bits: 16 },
};

export const tfjsReader: FormatReader = {
  name: 'TensorFlow.js',
  sniff(filePath: string, head: Buffer): boolean {
    const name = path.basename(filePath).toLowerCase();
    if (!name.endsWith('.json') || name.endsWith('.index.json')) return false;
    return name === MODEL_JSON_NAME || mentionsTopLevelKey(head.toString('utf8'));
  },
  open: openTfjs,
};

/**
 * Whether `filePath` looks like a TF.js model.json: a JSON object that names
 * "modelTopology" or "weightsManifest" within its first 16 KB. Key order varies between
 * producers (the converter writes format, generatedBy, convertedBy and signature first), so
 * the 64 bytes a sniff sees may not reach them. A file that cannot be read is not one.
 */
export async function isTfjsModelJson(filePath: string): Promise<boolean> {
  if (!filePath.toLowerCase().endsWith('.json')) return false;
  let file: FileSource;
  try {
    file = await FileSource.open(filePath);
  } catch {
    return false;
  }
  try {
    const text = (await file.read(0, Math.min(file.size, SNIFF_JSON_BYTES))).toString('utf8');
    return /^\uFEFF?\s*\{/.test(text) && mentionsTopLevelKey(text);
  } catch {
    return false;
  } finally {
    await file.close();
  }
}

function mentionsTopLevelKey(text: string): boolean {
  return TOP_LEVEL_KEYS.some((key) => text.includes(key));
}

// ---------------------------------------------------------------------------------------
// Reading

/** One manifest entry after validation. */
interface WeightEntry {
  readonly name: string;
  readonly shape: readonly number[];
  readonly elementCount: number;
  readonly dtype: string;
  readonly quantization?: { readonly codes: string; readonly scale: number; readonly min: number };
}

interface WeightGroup {
  readonly index: number;
  readonly paths: readonly string[];
  readonly weights: readonly WeightEntry[];
}

async function openTfjs(filePath: string): Promise<Checkpoint> {
  const json = await readModelJson(filePath);
  const groups = parseManifest(json['weightsManifest'], filePath);
  const shards: FileSource[] = [];
  try {
    const tensors: Tensor[] = [];
    const warnings: string[] = [];
    const names = new Set<string>();
    for (const group of groups) {
      const groupShards = await openShards(filePath, group);
      shards.push(...groupShards);
      const weights = new ConcatenatedSource(groupShards, filePath);
      for (const tensor of await layOutGroup(filePath, group, groupShards, weights, warnings)) {
        if (names.has(tensor.name)) throw new CheckpointError(filePath, `weight "${tensor.name}" is listed twice in the weightsManifest`);
        names.add(tensor.name);
        tensors.push(tensor);
      }
    }
    const modelConfig = layersModelConfig(json['modelTopology']);
    return { path: filePath, format: 'tfjs', metadata: describeModel(json), tensors, ...(modelConfig ? { modelConfig } : {}), warnings, close: () => closeAll(shards) };
  } catch (error) {
    await closeAll(shards);
    throw error;
  }
}

async function readModelJson(filePath: string): Promise<Record<string, unknown>> {
  const file = await FileSource.open(filePath);
  let bytes: Buffer;
  try {
    if (file.size === 0) throw new CheckpointError(filePath, 'the file is empty');
    if (file.size > MAX_MODEL_JSON_BYTES) {
      throw new CheckpointError(filePath, `${file.size} bytes is too large for a TF.js model.json (limit ${MAX_MODEL_JSON_BYTES})`);
    }
    bytes = await file.read(0, file.size);
  } finally {
    await file.close();
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new CheckpointError(filePath, 'model.json is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new CheckpointError(filePath, `not valid JSON: ${(error as Error).message}`);
  }
  if (!isJsonObject(value)) throw new CheckpointError(filePath, `the file holds ${describeJson(value)}, not a TF.js model object`);
  if (!('weightsManifest' in value)) {
    throw new CheckpointError(filePath, 'no "weightsManifest": not a TF.js model.json, or a model saved without its weights');
  }
  return value;
}

function parseManifest(manifest: unknown, file: string): WeightGroup[] {
  if (!Array.isArray(manifest)) throw new CheckpointError(file, `"weightsManifest" is ${describeJson(manifest)}, not a list of weight groups`);
  return manifest.map((group: unknown, index) => {
    const where = `weight group ${index + 1}`;
    if (!isJsonObject(group)) throw new CheckpointError(file, `${where} is ${describeJson(group)}, not an object`);
    const { paths, weights } = group;
    if (!Array.isArray(paths) || !paths.every((shard) => typeof shard === 'string' && shard !== '')) {
      throw new CheckpointError(file, `${where}: "paths" is ${describeJson(paths)}, not a list of shard file names`);
    }
    if (!Array.isArray(weights)) throw new CheckpointError(file, `${where}: "weights" is ${describeJson(weights)}, not a list`);
    return { index, paths: paths as string[], weights: weights.map((weight: unknown) => parseWeight(weight, where, file)) };
  });
}

function parseWeight(weight: unknown, group: string, file: string): WeightEntry {
  if (!isJsonObject(weight)) throw new CheckpointError(file, `${group}: an entry is ${describeJson(weight)}, not an object`);
  const { name, shape, dtype, quantization } = weight;
  if (typeof name !== 'string' || name === '') throw new CheckpointError(file, `${group}: a weight's name is ${describeJson(name)}`);
  const fail = (problem: string): never => {
    throw new CheckpointError(file, `weight "${name}": ${problem}`);
  };
  if (!Array.isArray(shape) || !shape.every((size) => typeof size === 'number')) return fail(`shape is ${describeJson(shape)}, not a list of numbers`);
  const elementCount = elementCountOf(shape as number[], `weight "${name}"`, file);
  // Own keys only: "constructor" or "toString" are not dtypes.
  if (typeof dtype !== 'string' || (!Object.hasOwn(DTYPE_WIDTHS, dtype) && dtype !== 'string')) return fail(`unknown dtype ${describeJson(dtype)}`);
  if (quantization === undefined || quantization === null) return { name, shape: shape as number[], elementCount, dtype };

  if (!isJsonObject(quantization)) return fail(`quantization is ${describeJson(quantization)}, not an object`);
  const codes = quantization['dtype'];
  if (typeof codes !== 'string' || !Object.hasOwn(QUANTIZED_CODES, codes)) return fail(`unknown quantization dtype ${describeJson(codes)}`);
  // The same combinations TF.js itself loads.
  const allowed = codes === 'float16' ? dtype === 'float32' : dtype === 'float32' || dtype === 'int32';
  if (!allowed) return fail(`${codes} quantization of a ${dtype} weight`);
  let scale = 1;
  let min = 0;
  if (codes !== 'float16') {
    const { scale: declaredScale, min: declaredMin } = quantization;
    if (typeof declaredScale !== 'number' || typeof declaredMin !== 'number' || !Number.isFinite(declaredScale) || !Number.isFinite(declaredMin)) {
      return fail(`${codes} quantization needs a finite "scale" and "min", found ${describeJson(declaredScale)} and ${describeJson(declaredMin)}`);
    }
    scale = declaredScale;
    min = declaredMin;
  }
  return { name, shape: shape as number[], elementCount, dtype, quantization: { codes, scale, min } };
}

/** A shard path from the manifest, resolved inside model.json's folder. */
function shardPath(modelPath: string, shard: string): string {
  const folder = path.dirname(modelPath);
  const resolved = path.resolve(folder, shard);
  const relative = path.relative(folder, resolved);
  // Paths come from the file, so they may not reach outside its folder.
  if (path.isAbsolute(shard) || relative === '' || relative.startsWith('..') || path.isAbsolute(relative)) {
    throw new CheckpointError(modelPath, `shard "${shard}" is not a file inside the model's folder`);
  }
  return resolved;
}

async function openShards(modelPath: string, group: WeightGroup): Promise<FileSource[]> {
  const shards: FileSource[] = [];
  try {
    for (const shard of group.paths) {
      const resolved = shardPath(modelPath, shard);
      try {
        shards.push(await FileSource.open(resolved));
      } catch (error) {
        const reason = error instanceof CheckpointError ? error.problem : String(error);
        throw new CheckpointError(modelPath, `shard "${shard}" of weight group ${group.index + 1} cannot be opened (${reason})`);
      }
    }
    return shards;
  } catch (error) {
    await closeAll(shards);
    throw error;
  }
}

/**
 * Finds each weight's bytes in the group's concatenated shards and builds its tensor. The
 * manifest must account for the shards exactly: a shortfall means a shard is truncated or
 * missing, an excess that the manifest does not describe these shards.
 */
async function layOutGroup(
  file: string,
  group: WeightGroup,
  shards: readonly FileSource[],
  weights: ByteSource,
  warnings: string[],
): Promise<Tensor[]> {
  const tensors: Tensor[] = [];
  let offset = 0;
  for (const weight of group.weights) {
    const byteLength = weight.dtype === 'string'
      ? await stringWeightLength(weights, offset, weight, () => shortShard(file, group, shards, weight, offset, Infinity))
      : weight.elementCount * storedWidth(weight);
    if (offset + byteLength > weights.size) shortShard(file, group, shards, weight, offset, byteLength);
    const tensor = buildTensor(file, weight, weights.slice(offset, byteLength), warnings);
    if (tensor) tensors.push(tensor);
    offset += byteLength;
  }
  if (offset !== weights.size) {
    throw new CheckpointError(
      file,
      `weight group ${group.index + 1}: the manifest describes ${offset} bytes but its shards (${group.paths.join(', ')}) hold ${weights.size}: ` +
        'the manifest does not match these shard files',
    );
  }
  return tensors;
}

function storedWidth(weight: WeightEntry): number {
  return weight.quantization ? QUANTIZED_CODES[weight.quantization.codes]!.bits / 8 : DTYPE_WIDTHS[weight.dtype]!;
}

/**
 * The manifest needs more bytes than the shards hold. Producers cut a group into shards of one
 * size with a shorter last one, so a shard before the last that is shorter than another such
 * shard is the truncated one; otherwise the group's bytes end short in its last shard.
 */
function shortShard(file: string, group: WeightGroup, shards: readonly FileSource[], weight: WeightEntry, offset: number, byteLength: number): never {
  const inner = shards.slice(0, -1);
  const fullSize = inner.reduce((largest, shard) => Math.max(largest, shard.size), 0);
  const truncated = inner.findIndex((shard) => shard.size < fullSize);
  const named = group.paths[truncated >= 0 ? truncated : group.paths.length - 1] ?? '(none)';
  const total = shards.reduce((sum, shard) => sum + shard.size, 0);
  const needs = Number.isFinite(byteLength) ? `bytes ${offset}..${offset + byteLength}` : `more than the bytes from ${offset}`;
  throw new CheckpointError(
    file,
    `weight "${weight.name}" needs ${needs} of weight group ${group.index + 1}, but its shards hold only ${total}: ` +
      `shard "${named}" is short, or a shard is missing`,
  );
}

/** Walks the length prefixes of a string weight's elements to find how many bytes it occupies. */
async function stringWeightLength(weights: ByteSource, start: number, weight: WeightEntry, runsOut: () => never): Promise<number> {
  // Every element takes at least its length prefix, so a shape the shards cannot hold is refused before the walk.
  if (weight.elementCount * STRING_LENGTH_BYTES > weights.size - start) runsOut();
  let position = start;
  let window: Buffer = Buffer.alloc(0);
  let windowStart = start;
  for (let i = 0; i < weight.elementCount; i++) {
    if (position + STRING_LENGTH_BYTES > weights.size) runsOut();
    if (position + STRING_LENGTH_BYTES > windowStart + window.length) {
      windowStart = position;
      window = await weights.read(position, Math.min(STRING_WALK_WINDOW, weights.size - position));
    }
    position += STRING_LENGTH_BYTES + window.readUInt32LE(position - windowStart);
  }
  if (position > weights.size) runsOut();
  return position - start;
}

function buildTensor(file: string, weight: WeightEntry, bytes: ByteSource, warnings: string[]): Tensor | undefined {
  const { name, shape, dtype, quantization } = weight;
  if (quantization) {
    const codes = QUANTIZED_CODES[quantization.codes]!;
    const stored = new StoredTensor(name, codes.dtype, shape, bytes);
    if (quantization.codes === 'float16') {
      // float16 values are exact as F16; delivering them as such lets the tool recognise a float16 copy.
      return new AffineTensor(name, 'F16', stored, undefined, { scheme: 'float16', bitsPerValue: 16 }, file);
    }
    return new AffineTensor(
      name,
      dtype === 'int32' ? 'I32' : 'F32',
      stored,
      { scale: [quantization.scale], zeroPoint: [0], offset: [quantization.min] },
      { scheme: `${quantization.codes} scale/min`, bitsPerValue: codes.bits },
      file,
    );
  }
  const listed = LISTED_DTYPES[dtype];
  if (listed === undefined) {
    warnings.push(`weight "${name}" has dtype ${dtype}, which this tool does not read; it is left out`);
    return undefined;
  }
  return new StoredTensor(name, listed, shape, bytes);
}

/**
 * The shards of one group read as one byte range. Reads that cross a shard boundary are
 * served from both shards; errors name the model.json unless a shard itself fails.
 */
class ConcatenatedSource extends RangeCheckedSource {
  readonly size: number;
  /** Offset in the concatenation where each shard starts, ascending. */
  private readonly starts: readonly number[];

  constructor(
    private readonly shards: readonly ByteSource[],
    readonly name: string,
  ) {
    super();
    const starts: number[] = [];
    let size = 0;
    for (const shard of shards) {
      starts.push(size);
      size += shard.size;
    }
    this.starts = starts;
    this.size = size;
  }

  protected async readRaw(offset: number, length: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let shard = this.shardAt(offset);
    let position = offset;
    const end = offset + length;
    while (position < end) {
      const source = this.shards[shard]!;
      const within = position - this.starts[shard]!;
      const take = Math.min(end - position, source.size - within);
      if (take > 0) parts.push(await source.read(within, take));
      position += take;
      shard++;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** The last shard that starts at or before `offset` (a binary search: models have hundreds of shards). */
  private shardAt(offset: number): number {
    let low = 0;
    let high = this.starts.length - 1;
    while (low < high) {
      const middle = Math.ceil((low + high) / 2);
      if (this.starts[middle]! <= offset) low = middle;
      else high = middle - 1;
    }
    return low;
  }
}

async function closeAll(files: readonly FileSource[]): Promise<void> {
  await Promise.all(files.map((file) => file.close()));
}

// ---------------------------------------------------------------------------------------
// Metadata

/**
 * What model.json says about its origin: the producer fields are lineage evidence (which
 * converter, which Keras), the topology is summarised rather than copied.
 */
function describeModel(json: Record<string, unknown>): Record<string, unknown> {
  const metadata: Record<string, unknown> = {};
  for (const key of ['format', 'generatedBy', 'convertedBy']) {
    const value = json[key];
    if (typeof value === 'string') metadata[key] = value;
  }
  const topology = summariseTopology(json['modelTopology']);
  if (topology) metadata['modelTopology'] = topology;
  const userDefined = json['userDefinedMetadata'];
  if (isJsonObject(userDefined)) metadata['userDefinedMetadata'] = userDefined;
  return metadata;
}

/** A layers model's configuration: the topology itself when tfjs-layers saved it, under model_config when converted from Keras; graph models have none. */
function layersModelConfig(topology: unknown): Record<string, unknown> | undefined {
  if (!isJsonObject(topology) || Array.isArray(topology['node'])) return undefined;
  return isJsonObject(topology['model_config']) ? topology['model_config'] : topology;
}

function summariseTopology(topology: unknown): Record<string, unknown> | undefined {
  if (!isJsonObject(topology)) return undefined;
  if (Array.isArray(topology['node'])) {
    const versions = topology['versions'];
    const producer = isJsonObject(versions) ? versions['producer'] : undefined;
    return { kind: 'graph', nodes: topology['node'].length, ...(typeof producer === 'number' ? { producer } : {}) };
  }
  const modelConfig = layersModelConfig(topology)!;
  const summary: Record<string, unknown> = { kind: 'layers' };
  const className = modelConfig['class_name'];
  if (typeof className === 'string') summary['class_name'] = className;
  for (const key of ['keras_version', 'backend']) {
    const value = topology[key];
    if (typeof value === 'string') summary[key] = value;
  }
  const config = modelConfig['config'];
  const layers = isJsonObject(config) ? config['layers'] : config;
  if (Array.isArray(layers)) summary['layers'] = layers.length;
  return summary;
}

// ---------------------------------------------------------------------------------------
// JSON helpers

function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describeJson(value: unknown): string {
  if (value === undefined) return 'missing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value} (${JSON.stringify(value)})`;
}
