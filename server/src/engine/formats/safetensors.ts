import * as path from 'node:path';
import { CheckpointError } from '../errors';
import { FileSource } from '../io/byteSource';
import type { Checkpoint, FormatReader } from './checkpoint';
import { DTYPE_BYTES, type DType } from './dtype';
import { StoredTensor, elementCountOf } from './tensor';

/**
 * safetensors: an 8-byte little-endian header length, a UTF-8 JSON header, then the data
 * section that the header's `data_offsets` point into. Opening reads the header alone and
 * validates it completely (dtypes, shapes, sizes, bounds, overlaps) before any tensor is
 * built, so a damaged or hostile file fails with a CheckpointError instead of misreading.
 *
 * Dtypes: every dtype the shared DType models is listed (C64 too, though StoredTensor refuses
 * to read complex values). Newer safetensors dtypes that DType does not model (F8_E8M0, the
 * FNUZ float8s, F6_*, F4) have their layout checked like any other, but their tensors are
 * left out of the listing with a warning. Any other dtype name is an error.
 *
 * Sharded models: `*.safetensors.index.json` maps each tensor to a shard file next to it.
 * All shards are opened at once (headers only) so that the map can be checked against what
 * the shards really hold; the result is one checkpoint spanning every shard.
 */

/** The reference implementation refuses longer headers; so does this reader. */
const MAX_HEADER_BYTES = 100_000_000;
/** An index is a small JSON file; anything larger than a header is not one. */
const MAX_INDEX_BYTES = MAX_HEADER_BYTES;
const LENGTH_PREFIX_BYTES = 8;
const METADATA_KEY = '__metadata__';

/** safetensors dtype names that DType models, with the same spelling. */
const MODELLED_DTYPES: ReadonlySet<string> = new Set<DType>([
  'F64', 'F32', 'F16', 'BF16', 'F8_E4M3', 'F8_E5M2',
  'I64', 'I32', 'I16', 'I8', 'U64', 'U32', 'U16', 'U8', 'BOOL', 'C64',
]);

/** Valid safetensors dtypes that DType does not model, with their bits per element. */
const UNMODELLED_DTYPE_BITS: ReadonlyMap<string, number> = new Map([
  ['F8_E8M0', 8], ['F8_E4M3FNUZ', 8], ['F8_E5M2FNUZ', 8], ['F6_E2M3', 6], ['F6_E3M2', 6], ['F4', 4],
]);

const BITS_PER_BYTE = 8;

export const safetensorsReader: FormatReader = {
  name: 'safetensors',

  sniff(filePath: string, head: Buffer): boolean {
    const name = path.basename(filePath).toLowerCase();
    return name.endsWith('.safetensors') || name.endsWith('.safetensors.index.json') || looksLikeHeader(head);
  },

  open(filePath: string): Promise<Checkpoint> {
    return path.basename(filePath).toLowerCase().endsWith('.index.json') ? openSharded(filePath) : openSingle(filePath);
  },
};

/** A plausible length (at most the header limit) followed by the opening brace of the JSON. */
function looksLikeHeader(head: Buffer): boolean {
  if (head.length <= LENGTH_PREFIX_BYTES || head[LENGTH_PREFIX_BYTES] !== 0x7b) return false;
  const length = head.readBigUInt64LE(0);
  return length >= 2n && length <= BigInt(MAX_HEADER_BYTES);
}

/** What one safetensors file holds, its file still open for the tensors to read from. */
interface ParsedFile {
  readonly file: FileSource;
  readonly metadata: Readonly<Record<string, string>>;
  /** Every tensor the header declares, listed or not, in on-disk order. */
  readonly entryNames: readonly string[];
  readonly tensors: readonly StoredTensor[];
  readonly warnings: readonly string[];
}

/** One header entry after validation; offsets are relative to the data section. */
interface Entry {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly begin: number;
  readonly end: number;
}

async function openSingle(filePath: string): Promise<Checkpoint> {
  const file = await FileSource.open(filePath);
  try {
    const parsed = await parseFile(file);
    return {
      path: filePath,
      format: 'safetensors',
      metadata: parsed.metadata,
      tensors: parsed.tensors,
      warnings: parsed.warnings,
      close: () => file.close(),
    };
  } catch (error) {
    await file.close();
    throw error;
  }
}

async function parseFile(file: FileSource): Promise<ParsedFile> {
  const { header, dataStart, dataSize } = await readHeader(file);
  const metadata = parseMetadata(header[METADATA_KEY], file.name);
  const entries = Object.entries(header)
    .filter(([name]) => name !== METADATA_KEY)
    .map(([name, value]) => parseEntry(name, value, file.name))
    .sort((a, b) => a.begin - b.begin || a.end - b.end || compareNames(a.name, b.name));
  checkLayout(entries, dataSize, file.name);

  const tensors: StoredTensor[] = [];
  const warnings: string[] = [];
  for (const entry of entries) {
    if (!isModelledDtype(entry.dtype)) {
      warnings.push(`tensor "${entry.name}" has dtype ${entry.dtype}, which this tool does not decode; it is left out`);
      continue;
    }
    const storage = file.slice(dataStart + entry.begin, entry.end - entry.begin);
    tensors.push(new StoredTensor(entry.name, entry.dtype, entry.shape, storage, true));
  }
  return { file, metadata, entryNames: entries.map((entry) => entry.name), tensors, warnings };
}

async function readHeader(file: FileSource): Promise<{ header: Record<string, unknown>; dataStart: number; dataSize: number }> {
  if (file.size === 0) throw new CheckpointError(file.name, 'the file is empty');
  if (file.size < LENGTH_PREFIX_BYTES) {
    throw new CheckpointError(file.name, `only ${file.size} bytes: too short to hold a safetensors header length`);
  }
  const declared = (await file.read(0, LENGTH_PREFIX_BYTES)).readBigUInt64LE(0);
  const available = file.size - LENGTH_PREFIX_BYTES;
  if (declared > BigInt(available)) {
    throw new CheckpointError(
      file.name,
      `header length ${declared} runs past the end of the file (${available} bytes follow it): truncated, or not safetensors`,
    );
  }
  if (declared > BigInt(MAX_HEADER_BYTES)) {
    throw new CheckpointError(file.name, `header length ${declared} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const length = Number(declared);
  const header = parseJsonObject(await file.read(LENGTH_PREFIX_BYTES, length), 'header', file.name);
  const dataStart = LENGTH_PREFIX_BYTES + length;
  return { header, dataStart, dataSize: file.size - dataStart };
}

/** Strict UTF-8 decoding, then JSON that must be an object. */
function parseJsonObject(bytes: Buffer, what: string, file: string): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new CheckpointError(file, `${what} is not valid UTF-8`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new CheckpointError(file, `${what} is not valid JSON: ${(error as Error).message}`);
  }
  if (!isJsonObject(value)) throw new CheckpointError(file, `${what} is ${describeJson(value)}, not a JSON object`);
  return value;
}

function parseMetadata(value: unknown, file: string): Record<string, string> {
  if (value === undefined || value === null) return {};
  if (!isJsonObject(value)) throw new CheckpointError(file, `${METADATA_KEY} is ${describeJson(value)}, not an object`);
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') {
      throw new CheckpointError(file, `${METADATA_KEY} must map names to strings, but "${key}" is ${describeJson(entry)}`);
    }
  }
  // fromEntries defines own properties, so a key such as "__proto__" stays plain data.
  return Object.fromEntries(Object.entries(value as Record<string, string>));
}

function parseEntry(name: string, value: unknown, file: string): Entry {
  const fail = (problem: string): never => {
    throw new CheckpointError(file, `tensor "${name}": ${problem}`);
  };
  if (!isJsonObject(value)) return fail(`entry is ${describeJson(value)}, not an object`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== 'string') return fail(`dtype is ${describeJson(dtype)}, not a string`);
  const bits = bitsPerElement(dtype);
  if (bits === undefined) return fail(`unknown dtype "${dtype}"`);
  if (!isNumberArray(shape)) return fail(`shape is ${describeJson(shape)}, not an array of numbers`);
  // Rejects negative, fractional and overflowing dimensions.
  const elements = elementCountOf(shape, `tensor "${name}"`, file);
  if (!Array.isArray(offsets) || offsets.length !== 2) return fail('data_offsets must be an array [begin, end]');
  const [begin, end]: unknown[] = offsets;
  if (!isByteOffset(begin) || !isByteOffset(end) || end < begin) {
    return fail(`data_offsets [${String(begin)}, ${String(end)}] are not two non-negative integers, begin ≤ end`);
  }
  const totalBits = elements * bits;
  if (!Number.isSafeInteger(totalBits)) return fail(`shape [${shape.join(', ')}] is too large`);
  if (totalBits % BITS_PER_BYTE !== 0) return fail(`${elements} elements of ${dtype} do not fill a whole number of bytes`);
  const expected = totalBits / BITS_PER_BYTE;
  if (end - begin !== expected) {
    return fail(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but shape [${shape.join(', ')}] of ${dtype} needs ${expected}`);
  }
  return { name, dtype, shape, begin, end };
}

function isModelledDtype(dtype: string): dtype is DType {
  return MODELLED_DTYPES.has(dtype);
}

function bitsPerElement(dtype: string): number | undefined {
  return isModelledDtype(dtype) ? DTYPE_BYTES[dtype] * BITS_PER_BYTE : UNMODELLED_DTYPE_BITS.get(dtype);
}

/** Every tensor lies inside the data section and no two share a byte; `entries` are in offset order. */
function checkLayout(entries: readonly Entry[], dataSize: number, file: string): void {
  let previous: Entry | undefined;
  for (const entry of entries) {
    if (entry.end > dataSize) {
      throw new CheckpointError(
        file,
        `tensor "${entry.name}": data_offsets [${entry.begin}, ${entry.end}] run past the end of the ` +
          `${dataSize}-byte data section: the file is truncated or its header is wrong`,
      );
    }
    if (entry.begin === entry.end) continue;
    if (previous && entry.begin < previous.end) {
      throw new CheckpointError(
        file,
        `tensors "${previous.name}" [${previous.begin}, ${previous.end}] and "${entry.name}" ` +
          `[${entry.begin}, ${entry.end}] overlap`,
      );
    }
    previous = entry;
  }
}

// ---------------------------------------------------------------------------------------
// Sharded models

interface ShardIndex {
  /** Tensor name → shard file name, as written in the index. */
  readonly weightMap: ReadonlyMap<string, string>;
  readonly metadata: Readonly<Record<string, unknown>>;
}

async function openSharded(indexPath: string): Promise<Checkpoint> {
  const index = await readIndex(indexPath);
  const shardNames = [...new Set(index.weightMap.values())].sort(compareNames);
  const shards = new Map<string, ParsedFile>();
  try {
    for (const shardName of shardNames) shards.set(shardName, await openShard(indexPath, shardName));
    return assembleSharded(indexPath, index, shards);
  } catch (error) {
    await closeAll([...shards.values()].map((shard) => shard.file));
    throw error;
  }
}

async function readIndex(indexPath: string): Promise<ShardIndex> {
  const file = await FileSource.open(indexPath);
  let bytes: Buffer;
  try {
    if (file.size > MAX_INDEX_BYTES) {
      throw new CheckpointError(indexPath, `${file.size} bytes is too large for a shard index (limit ${MAX_INDEX_BYTES})`);
    }
    bytes = await file.read(0, file.size);
  } finally {
    await file.close();
  }
  if (bytes.length === 0) throw new CheckpointError(indexPath, 'the file is empty');
  const json = parseJsonObject(bytes, 'shard index', indexPath);
  const { weight_map: weightMap, metadata } = json;
  if (!isJsonObject(weightMap)) {
    throw new CheckpointError(indexPath, `"weight_map" is ${describeJson(weightMap)}, not an object mapping tensors to shard files`);
  }
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string' || shard === '') {
      throw new CheckpointError(indexPath, `"weight_map" maps tensor "${tensor}" to ${describeJson(shard)}, not a shard file name`);
    }
  }
  if (metadata !== undefined && metadata !== null && !isJsonObject(metadata)) {
    throw new CheckpointError(indexPath, `"metadata" is ${describeJson(metadata)}, not an object`);
  }
  return {
    weightMap: new Map(Object.entries(weightMap as Record<string, string>)),
    metadata: Object.fromEntries(Object.entries(metadata ?? {})),
  };
}

async function openShard(indexPath: string, shardName: string): Promise<ParsedFile> {
  const folder = path.dirname(indexPath);
  const shardPath = path.resolve(folder, shardName);
  const relative = path.relative(folder, shardPath);
  // Shard names come from the file, so they may not reach outside the index's folder.
  if (path.isAbsolute(shardName) || relative === '' || relative.startsWith('..') || path.isAbsolute(relative)) {
    throw new CheckpointError(indexPath, `shard "${shardName}" is not a file inside the index's folder`);
  }
  let file: FileSource;
  try {
    file = await FileSource.open(shardPath);
  } catch (error) {
    const reason = error instanceof CheckpointError ? error.problem : String(error);
    throw new CheckpointError(indexPath, `shard "${shardName}" named in the weight_map cannot be opened (${reason})`);
  }
  try {
    return await parseFile(file);
  } catch (error) {
    await file.close();
    throw error;
  }
}

/** Checks the weight_map against the shards' own headers, then joins them into one listing. */
function assembleSharded(indexPath: string, index: ShardIndex, shards: ReadonlyMap<string, ParsedFile>): Checkpoint {
  const storedIn = new Map<string, string>();
  for (const [shardName, shard] of shards) {
    for (const name of shard.entryNames) {
      const other = storedIn.get(name);
      if (other !== undefined) {
        throw new CheckpointError(indexPath, `tensor "${name}" is stored in two shards, "${other}" and "${shardName}"`);
      }
      storedIn.set(name, shardName);
    }
  }
  for (const [name, shardName] of index.weightMap) {
    const actual = storedIn.get(name);
    if (actual !== shardName) {
      const where = actual === undefined ? 'which does not contain it' : `but it is stored in "${actual}"`;
      throw new CheckpointError(indexPath, `weight_map puts tensor "${name}" in shard "${shardName}", ${where}`);
    }
  }

  // Later entries win in fromEntries: the index's own metadata, then earlier shards over later ones.
  const shardMetadata = [...shards.values()].reverse().flatMap((shard) => Object.entries(shard.metadata));
  const metadata = Object.fromEntries([...shardMetadata, ...Object.entries(index.metadata)]);
  const warnings: string[] = [];
  for (const [shardName, shard] of shards) {
    warnings.push(...shard.warnings.map((warning) => `${shardName}: ${warning}`));
    for (const name of shard.entryNames) {
      if (!index.weightMap.has(name)) warnings.push(`${shardName}: tensor "${name}" is not in the weight_map; it is listed anyway`);
    }
  }
  const files = [...shards.values()].map((shard) => shard.file);
  return {
    path: indexPath,
    format: 'safetensors',
    metadata,
    tensors: [...shards.values()].flatMap((shard) => shard.tensors),
    warnings,
    close: () => closeAll(files),
  };
}

async function closeAll(files: readonly FileSource[]): Promise<void> {
  await Promise.all(files.map((file) => file.close()));
}

// ---------------------------------------------------------------------------------------
// JSON helpers

function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describeJson(value: unknown): string {
  if (value === undefined) return 'missing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value} (${JSON.stringify(value)})`;
}

function isNumberArray(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'number');
}

function isByteOffset(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Code-unit order, so listings do not depend on the locale. */
function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
