import * as path from 'node:path';
import { CheckpointError } from '../errors';
import { FileSource, type ByteSource } from '../io/byteSource';
import type { Checkpoint, FormatReader } from './checkpoint';
import { DTYPE_BYTES, type DType } from './dtype';
import { BLOCK_FORMATS, BlockQuantizedTensor, blockQuantizedBytes, type BlockFormat } from './ggmlQuant';
import { StoredTensor, elementCountOf, type Tensor } from './tensor';

/**
 * GGUF, llama.cpp's model format (versions 2 and 3, little-endian): the magic "GGUF", a
 * version, tensor and metadata counts, metadata key/value pairs, one info record per tensor
 * (name, dimensions innermost first, ggml type, offset), then the data section, aligned to
 * `general.alignment` (default 32), that the offsets point into.
 *
 * The header is walked through a window of the file, so a header carrying a 150 000-token
 * vocabulary is read in a few large reads, and every count and length is checked against the
 * bytes left before anything is read or allocated for it. Long metadata arrays (vocabularies,
 * merges, token scores) are skipped and kept as a summary of their type and length.
 *
 * Tensors: F32, F16, BF16, F64 and the integer types are plain stored tensors; the block
 * quantizations of ggmlQuant.ts are dequantized on read. Other ggml types (the IQ, TQ and
 * MXFP4 families, and ids this reader does not know) are left out with a warning.
 * Shapes are reported row-major as PyTorch would (GGUF's dimension list reversed).
 */

const GGUF_MAGIC = Buffer.from('GGUF', 'latin1');
const SUPPORTED_VERSIONS: ReadonlySet<number> = new Set([2, 3]);
const DEFAULT_ALIGNMENT = 32;
const ALIGNMENT_KEY = 'general.alignment';
/** ggml's GGML_MAX_DIMS: the format has room for no more. */
const MAX_DIMS = 4;
/** Keys are at most 65 535 bytes by the spec; tensor names are far shorter in practice. */
const MAX_NAME_BYTES = 65_535;
/** Values of one metadata entry kept in total (nested arrays included); longer arrays become summaries. */
const MAX_KEPT_ARRAY_ELEMENTS = 1024;
/** Longer strings (no real metadata string comes close) become summaries. */
const MAX_KEPT_STRING_BYTES = 1024 * 1024;
/** Real files nest arrays at most two deep; the limit keeps hostile nesting off the stack. */
const MAX_ARRAY_NESTING = 8;
/** Bytes fetched per read while walking the header. */
const HEADER_WINDOW_BYTES = 1024 * 1024;

/** GGUF metadata value types, indexed by their code in the file. */
const VALUE_TYPES = [
  'uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'float32', 'bool', 'string', 'array', 'uint64', 'int64', 'float64',
] as const;
export type GgufValueType = (typeof VALUE_TYPES)[number];

/** Fewest bytes one value of each type occupies: a string has its 8-byte length, an array its 4-byte type and 8-byte count. */
const MIN_VALUE_BYTES: Readonly<Record<GgufValueType, number>> = {
  uint8: 1, int8: 1, uint16: 2, int16: 2, uint32: 4, int32: 4, float32: 4, bool: 1,
  string: 8, array: 12, uint64: 8, int64: 8, float64: 8,
};

/** Fewest bytes of one metadata entry (a key's length, a type, a one-byte value) and of one tensor info (empty name, no dims). */
const MIN_ENTRY_BYTES = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8;

/** Stands in, in `Checkpoint.metadata`, for an array too long to keep (e.g. `tokenizer.ggml.tokens`). */
export interface GgufArraySummary {
  readonly arrayOf: GgufValueType;
  readonly length: number;
}

/** Stands in for a string value too long to keep. */
export interface GgufStringSummary {
  readonly stringBytes: number;
}

/**
 * A metadata value as kept: numbers (64-bit integers beyond 2^53 as decimal strings, so
 * metadata stays JSON), booleans, strings, arrays, or summaries of overlong ones.
 */
export type GgufMetadataValue = number | string | boolean | readonly GgufMetadataValue[] | GgufArraySummary | GgufStringSummary;

/** ggml tensor types stored as plain elements. */
const PLAIN_TYPES: ReadonlyMap<number, DType> = new Map<number, DType>([
  [0, 'F32'], [1, 'F16'], [24, 'I8'], [25, 'I16'], [26, 'I32'], [27, 'I64'], [28, 'F64'], [30, 'BF16'],
]);

/** ggml tensor types dequantized by ggmlQuant.ts. */
const QUANTIZED_TYPES: ReadonlyMap<number, BlockFormat> = new Map([
  [2, BLOCK_FORMATS.Q4_0], [3, BLOCK_FORMATS.Q4_1], [6, BLOCK_FORMATS.Q5_0], [7, BLOCK_FORMATS.Q5_1], [8, BLOCK_FORMATS.Q8_0],
  [10, BLOCK_FORMATS.Q2_K], [11, BLOCK_FORMATS.Q3_K], [12, BLOCK_FORMATS.Q4_K], [13, BLOCK_FORMATS.Q5_K], [14, BLOCK_FORMATS.Q6_K],
  [15, BLOCK_FORMATS.Q8_K],
]);

/** Names of the other ggml types, for the warning that leaves such tensors out. */
const UNREAD_TYPE_NAMES: ReadonlyMap<number, string> = new Map([
  [9, 'Q8_1'], [16, 'IQ2_XXS'], [17, 'IQ2_XS'], [18, 'IQ3_XXS'], [19, 'IQ1_S'], [20, 'IQ4_NL'], [21, 'IQ3_S'], [22, 'IQ2_S'],
  [23, 'IQ4_XS'], [29, 'IQ1_M'], [34, 'TQ1_0'], [35, 'TQ2_0'], [39, 'MXFP4'],
]);

export const ggufReader: FormatReader = {
  name: 'GGUF',
  sniff: (filePath, head) => path.basename(filePath).toLowerCase().endsWith('.gguf') || head.subarray(0, GGUF_MAGIC.length).equals(GGUF_MAGIC),
  open: openGguf,
};

async function openGguf(filePath: string): Promise<Checkpoint> {
  const file = await FileSource.open(filePath);
  try {
    const { metadata, tensors, warnings } = await parseGguf(file);
    return { path: filePath, format: 'gguf', metadata, tensors, warnings, close: () => file.close() };
  } catch (error) {
    await file.close();
    throw error;
  }
}

/** One tensor info record as read, before its type and layout are checked. */
interface TensorRecord {
  readonly name: string;
  /** Row-major: GGUF's dimensions reversed. */
  readonly shape: readonly number[];
  readonly typeId: number;
  /** Relative to the data section. */
  readonly offset: bigint;
}

/** A listed tensor's place in the file. */
interface Placement {
  readonly name: string;
  readonly begin: number;
  readonly end: number;
}

async function parseGguf(file: ByteSource): Promise<{ metadata: Record<string, unknown>; tensors: Tensor[]; warnings: string[] }> {
  const cursor = new HeaderCursor(file);
  await readPreamble(cursor, file);
  const tensorCount = await cursor.count(MIN_TENSOR_INFO_BYTES, 'the tensor count');
  const entryCount = await cursor.count(MIN_ENTRY_BYTES, 'the metadata entry count');

  const metadata = new Map<string, GgufMetadataValue>();
  for (let i = 0; i < entryCount; i++) {
    const key = await cursor.name(`metadata key ${i}`);
    if (metadata.has(key)) throw new CheckpointError(file.name, `metadata key "${key}" appears twice`);
    const type = valueType(await cursor.u32(`the type of metadata "${key}"`), `metadata "${key}"`, file.name);
    metadata.set(key, await readValue(cursor, type, `metadata "${key}"`, { left: MAX_KEPT_ARRAY_ELEMENTS }, 0));
  }
  const alignment = alignmentOf(metadata.get(ALIGNMENT_KEY), file.name);

  const records: TensorRecord[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const record = await readTensorRecord(cursor, i);
    if (names.has(record.name)) throw new CheckpointError(file.name, `tensor "${record.name}" is listed twice`);
    names.add(record.name);
    records.push(record);
  }

  const dataStart = Math.ceil(cursor.position / alignment) * alignment;
  const tensors: Tensor[] = [];
  const warnings: string[] = [];
  const placements: Placement[] = [];
  for (const record of records) {
    const layout = layoutOf(record, file.name);
    if (!layout) {
      warnings.push(unreadTypeWarning(record));
      continue;
    }
    const begin = placeTensor(record, layout.byteSize, dataStart, alignment, file);
    placements.push({ name: record.name, begin, end: begin + layout.byteSize });
    tensors.push(layout.build(file.slice(begin, layout.byteSize)));
  }
  checkNoOverlap(placements, file.name);
  return { metadata: Object.fromEntries(metadata), tensors, warnings };
}

/** How a tensor of a type this reader decodes is stored: its size and how to build it on its bytes. */
interface Layout {
  readonly byteSize: number;
  build(storage: ByteSource): Tensor;
}

function layoutOf(record: TensorRecord, file: string): Layout | undefined {
  const { name, shape, typeId } = record;
  const what = `tensor "${name}"`;
  const plain = PLAIN_TYPES.get(typeId);
  if (plain) {
    return { byteSize: elementCountOf(shape, what, file) * DTYPE_BYTES[plain], build: (storage) => new StoredTensor(name, plain, shape, storage) };
  }
  const format = QUANTIZED_TYPES.get(typeId);
  if (format) {
    return { byteSize: blockQuantizedBytes(format, shape, what, file), build: (storage) => new BlockQuantizedTensor(name, shape, format, storage) };
  }
  return undefined;
}

function unreadTypeWarning(record: TensorRecord): string {
  const typeName = UNREAD_TYPE_NAMES.get(record.typeId);
  const described = typeName ? `ggml type ${typeName}, which this tool does not dequantize` : `unknown ggml type ${record.typeId}`;
  return `tensor "${record.name}" has ${described}; it is left out`;
}

async function readPreamble(cursor: HeaderCursor, file: ByteSource): Promise<void> {
  if (file.size === 0) throw new CheckpointError(file.name, 'the file is empty');
  const head = await file.read(0, Math.min(file.size, GGUF_MAGIC.length));
  if (!head.equals(GGUF_MAGIC.subarray(0, head.length))) {
    const bytes = [...head].map((byte) => byte.toString(16).padStart(2, '0')).join(' ');
    throw new CheckpointError(file.name, `not a GGUF file: it starts with bytes ${bytes}, not "GGUF"`);
  }
  cursor.skip(GGUF_MAGIC.length, 'the magic');
  const version = await cursor.u32('the format version');
  // A big-endian file's version reads byte-swapped here: its low half is zero.
  if (version !== 0 && (version & 0xffff) === 0) {
    throw new CheckpointError(file.name, `big-endian GGUF (version ${version >>> 24}) is not supported; convert it to little-endian`);
  }
  if (version === 1) {
    throw new CheckpointError(file.name, 'GGUF version 1 (32-bit lengths, from 2023) is not supported; convert it with a current llama.cpp');
  }
  if (!SUPPORTED_VERSIONS.has(version)) {
    throw new CheckpointError(file.name, `unsupported GGUF version ${version} (this tool reads versions 2 and 3)`);
  }
}

function valueType(code: number, what: string, file: string): GgufValueType {
  const type = VALUE_TYPES[code];
  if (type === undefined) throw new CheckpointError(file, `${what}: unknown value type ${code}`);
  return type;
}

/** How many more values of a metadata entry may still be kept as arrays. */
interface ArrayBudget {
  left: number;
}

async function readValue(cursor: HeaderCursor, type: GgufValueType, what: string, budget: ArrayBudget, depth: number): Promise<GgufMetadataValue> {
  switch (type) {
    case 'uint8': return cursor.u8(what);
    case 'int8': return cursor.i8(what);
    case 'uint16': return cursor.u16(what);
    case 'int16': return cursor.i16(what);
    case 'uint32': return cursor.u32(what);
    case 'int32': return cursor.i32(what);
    case 'float32': return cursor.f32(what);
    case 'float64': return cursor.f64(what);
    case 'bool': return (await cursor.u8(what)) !== 0;
    case 'uint64': return exactNumber(await cursor.u64(what));
    case 'int64': return exactNumber(await cursor.i64(what));
    case 'string': {
      const { text, bytes } = await cursor.string(what, MAX_KEPT_STRING_BYTES);
      return text ?? { stringBytes: bytes };
    }
    case 'array':
      return readArray(cursor, what, budget, depth);
  }
}

async function readArray(cursor: HeaderCursor, what: string, budget: ArrayBudget, depth: number): Promise<GgufMetadataValue> {
  const { elementType, length } = await readArrayHeader(cursor, what, depth);
  if (length > budget.left) {
    await skipElements(cursor, elementType, length, what, depth);
    return { arrayOf: elementType, length };
  }
  budget.left -= length;
  const items: GgufMetadataValue[] = [];
  for (let i = 0; i < length; i++) items.push(await readValue(cursor, elementType, `${what}[${i}]`, budget, depth + 1));
  return items;
}

/** An array's element type and length, the length checked against the bytes left. */
async function readArrayHeader(cursor: HeaderCursor, what: string, depth: number): Promise<{ elementType: GgufValueType; length: number }> {
  if (depth >= MAX_ARRAY_NESTING) throw new CheckpointError(cursor.fileName, `${what}: arrays nested more than ${MAX_ARRAY_NESTING} deep`);
  const elementType = valueType(await cursor.u32(`${what}: array element type`), what, cursor.fileName);
  const length = await cursor.count(MIN_VALUE_BYTES[elementType], `${what}: array of ${elementType}`);
  return { elementType, length };
}

/** Moves past `length` values without keeping them: fixed-width values in one step, strings and arrays one by one. */
async function skipElements(cursor: HeaderCursor, type: GgufValueType, length: number, what: string, depth: number): Promise<void> {
  if (type === 'string') {
    await cursor.skipStrings(length, what);
  } else if (type === 'array') {
    for (let i = 0; i < length; i++) {
      const inner = await readArrayHeader(cursor, what, depth + 1);
      await skipElements(cursor, inner.elementType, inner.length, what, depth + 1);
    }
  } else {
    cursor.skip(length * MIN_VALUE_BYTES[type], what);
  }
}

/** 64-bit integers stay numbers where exact, and become decimal strings where a number would round. */
function exactNumber(value: bigint): number | string {
  const asNumber = Number(value);
  return Number.isSafeInteger(asNumber) ? asNumber : value.toString();
}

/** Largest alignment accepted; real files use 32 or 64, and the bound keeps the bit test below within 32-bit integers. */
const MAX_ALIGNMENT = 2 ** 30;

function alignmentOf(value: GgufMetadataValue | undefined, file: string): number {
  if (value === undefined) return DEFAULT_ALIGNMENT;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0 || value > MAX_ALIGNMENT || (value & (value - 1)) !== 0) {
    throw new CheckpointError(file, `${ALIGNMENT_KEY} is ${JSON.stringify(value)}, not a power of two of at most 2^30`);
  }
  return value;
}

async function readTensorRecord(cursor: HeaderCursor, index: number): Promise<TensorRecord> {
  const name = await cursor.name(`the name of tensor ${index}`);
  const what = `tensor "${name}"`;
  const dimCount = await cursor.u32(`${what}: dimension count`);
  if (dimCount > MAX_DIMS) throw new CheckpointError(cursor.fileName, `${what} has ${dimCount} dimensions; GGUF allows at most ${MAX_DIMS}`);
  const dims: number[] = [];
  for (let d = 0; d < dimCount; d++) {
    const dim = await cursor.u64(`${what}: dimension ${d}`);
    if (dim > BigInt(Number.MAX_SAFE_INTEGER)) throw new CheckpointError(cursor.fileName, `${what}: dimension ${dim} is too large`);
    dims.push(Number(dim));
  }
  const shape = dims.reverse();
  // Rejects shapes whose element count overflows before any size is computed from them.
  elementCountOf(shape, what, cursor.fileName);
  const typeId = await cursor.u32(`${what}: type`);
  const offset = await cursor.u64(`${what}: offset`);
  return { name, shape, typeId, offset };
}

/** Where a tensor's bytes begin in the file, after checking they are aligned and inside it. */
function placeTensor(record: TensorRecord, byteSize: number, dataStart: number, alignment: number, file: ByteSource): number {
  const what = `tensor "${record.name}"`;
  if (record.offset % BigInt(alignment) !== 0n) {
    throw new CheckpointError(file.name, `${what}: data offset ${record.offset} is not a multiple of the alignment ${alignment}`);
  }
  const begin = BigInt(dataStart) + record.offset;
  const end = begin + BigInt(byteSize);
  if (end > BigInt(file.size)) {
    throw new CheckpointError(
      file.name,
      `${what}: its ${byteSize} bytes at offset ${record.offset} of the data section (bytes ${begin}..${end}) ` +
        `run past the end of the ${file.size}-byte file`,
    );
  }
  return Number(begin);
}

function checkNoOverlap(placements: Placement[], file: string): void {
  const sorted = placements.filter((placement) => placement.end > placement.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    const previous = sorted[i - 1]!;
    const current = sorted[i]!;
    if (current.begin < previous.end) {
      throw new CheckpointError(file, `tensors "${previous.name}" and "${current.name}" overlap in the data section`);
    }
  }
}

/**
 * Reads the header front to back through a window of the file, so thousands of small
 * values cost a few large reads. Every read is checked against the bytes left first, and
 * fails naming what was being read.
 */
class HeaderCursor {
  position = 0;
  private window: Buffer = Buffer.alloc(0);
  private windowStart = 0;
  private readonly utf8 = new TextDecoder('utf-8');

  constructor(private readonly file: ByteSource) {}

  get fileName(): string {
    return this.file.name;
  }

  private get remaining(): number {
    return this.file.size - this.position;
  }

  private ensureAvailable(length: number, what: string): void {
    if (length > this.remaining) {
      throw new CheckpointError(
        this.file.name,
        `truncated: ${what} needs ${length} bytes at offset ${this.position} but the file ends ${this.remaining} bytes later`,
      );
    }
  }

  /** The window offset of the next `length` bytes, consumed, when the window already holds them. */
  private takeFromWindow(length: number): number | undefined {
    const offset = this.position - this.windowStart;
    if (offset < 0 || offset + length > this.window.length) return undefined;
    this.position += length;
    return offset;
  }

  /** The window offset of the next `length` bytes, which are consumed; reads a new window when needed. */
  private async take(length: number, what: string): Promise<number> {
    const inWindow = this.takeFromWindow(length);
    if (inWindow !== undefined) return inWindow;
    this.ensureAvailable(length, what);
    this.window = await this.file.read(this.position, Math.min(Math.max(length, HEADER_WINDOW_BYTES), this.remaining));
    this.windowStart = this.position;
    this.position += length;
    return 0;
  }

  skip(length: number, what: string): void {
    this.ensureAvailable(length, what);
    this.position += length;
  }

  /** Reads a fixed-width value; `take` may move the window, so the window is read after it. */
  private async fixed<T>(width: number, what: string, decode: (window: Buffer, at: number) => T): Promise<T> {
    const at = await this.take(width, what);
    return decode(this.window, at);
  }

  u8(what: string): Promise<number> {
    return this.fixed(1, what, (window, at) => window.readUInt8(at));
  }
  i8(what: string): Promise<number> {
    return this.fixed(1, what, (window, at) => window.readInt8(at));
  }
  u16(what: string): Promise<number> {
    return this.fixed(2, what, (window, at) => window.readUInt16LE(at));
  }
  i16(what: string): Promise<number> {
    return this.fixed(2, what, (window, at) => window.readInt16LE(at));
  }
  u32(what: string): Promise<number> {
    return this.fixed(4, what, (window, at) => window.readUInt32LE(at));
  }
  i32(what: string): Promise<number> {
    return this.fixed(4, what, (window, at) => window.readInt32LE(at));
  }
  f32(what: string): Promise<number> {
    return this.fixed(4, what, (window, at) => window.readFloatLE(at));
  }
  f64(what: string): Promise<number> {
    return this.fixed(8, what, (window, at) => window.readDoubleLE(at));
  }
  u64(what: string): Promise<bigint> {
    return this.fixed(8, what, (window, at) => window.readBigUInt64LE(at));
  }
  i64(what: string): Promise<bigint> {
    return this.fixed(8, what, (window, at) => window.readBigInt64LE(at));
  }

  /** A count of items that take at least `minItemBytes` each, refused when the bytes left cannot hold them. */
  async count(minItemBytes: number, what: string): Promise<number> {
    const count = await this.u64(what);
    const needed = count * BigInt(minItemBytes);
    if (needed > BigInt(this.remaining)) {
      throw new CheckpointError(this.file.name, `${what}: ${count} items need at least ${needed} bytes but only ${this.remaining} remain`);
    }
    return Number(count);
  }

  /** A string's byte length, refused when it runs past the end of the file. */
  async stringLength(what: string): Promise<number> {
    const at = this.takeFromWindow(8) ?? (await this.take(8, `${what}: string length`));
    return this.checkedStringLength(at, what);
  }

  /**
   * Skips `count` strings. Vocabularies hold hundreds of thousands, so the loop awaits only
   * when the window runs out.
   */
  async skipStrings(count: number, what: string): Promise<void> {
    for (let i = 0; i < count; i++) {
      const at = this.takeFromWindow(8) ?? (await this.take(8, `${what}: string length`));
      this.skip(this.checkedStringLength(at, what), what);
    }
  }

  /**
   * The 64-bit length at window offset `at`, as a number: exact below 2^53, and rounded
   * above it to a value still larger than any file, so the comparison stays right.
   */
  private checkedStringLength(at: number, what: string): number {
    const length = this.window.readUInt32LE(at) + this.window.readUInt32LE(at + 4) * 2 ** 32;
    if (length > this.remaining) {
      throw new CheckpointError(
        this.file.name,
        `${what}: a string of ${this.window.readBigUInt64LE(at)} bytes runs past the end of the file (${this.remaining} bytes remain)`,
      );
    }
    return length;
  }

  /** A string, decoded when at most `maxKeptBytes` long and skipped otherwise. */
  async string(what: string, maxKeptBytes: number): Promise<{ text?: string; bytes: number }> {
    const bytes = await this.stringLength(what);
    if (bytes > maxKeptBytes) {
      this.skip(bytes, what);
      return { bytes };
    }
    const at = await this.take(bytes, what);
    return { text: this.utf8.decode(this.window.subarray(at, at + bytes)), bytes };
  }

  /** A metadata key or tensor name: a string no longer than MAX_NAME_BYTES. */
  async name(what: string): Promise<string> {
    const { text, bytes } = await this.string(what, MAX_NAME_BYTES);
    if (text === undefined) throw new CheckpointError(this.file.name, `${what} is ${bytes} bytes long; names are at most ${MAX_NAME_BYTES}`);
    return text;
  }
}
