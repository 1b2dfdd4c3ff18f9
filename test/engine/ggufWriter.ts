/**
 * A small GGUF writer for tests, written from the GGUF specification (ggml docs/gguf.md),
 * and reference quantizers for ggml's block types, written from the block layouts of
 * ggml-common.h. Valid files are laid out as llama.cpp's writer does (little-endian,
 * tensor data aligned); the raw building blocks serve the malformed files the reader must
 * refuse.
 *
 * The quantizers aim for simplicity, not llama.cpp's error-minimising search: each picks
 * its scales from the block's extremes. Each returns the packed blocks and the values those
 * blocks stand for, computed from the integer codes element by element, without any of the
 * bit packing — so a reader that unpacks a field from the wrong place disagrees with them.
 */

// ---------------------------------------------------------------------------------------
// fp16

/** IEEE binary16 bits of `value`, rounded to nearest, ties to even. */
export function halfBits(value: number): number {
  if (Number.isNaN(value)) return 0x7e00;
  const sign = value < 0 || Object.is(value, -0) ? 0x8000 : 0;
  const magnitude = Math.abs(value);
  // Below the smallest normal, values are multiples of 2^-24; 1024 of them carry into the smallest normal's bits.
  if (magnitude < 2 ** -14) return sign | roundHalfEven(magnitude * 2 ** 24);
  let exponent = Math.floor(Math.log2(magnitude));
  if (2 ** exponent > magnitude) exponent--;
  if (2 ** (exponent + 1) <= magnitude) exponent++;
  let mantissa = roundHalfEven((magnitude / 2 ** exponent - 1) * 1024);
  if (mantissa === 1024) {
    mantissa = 0;
    exponent++;
  }
  if (exponent > 15) return sign | 0x7c00;
  return sign | ((exponent + 15) << 10) | mantissa;
}

/** The value of fp16 `bits`. */
export function halfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const fraction = x - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

// ---------------------------------------------------------------------------------------
// Values and files

export type GgufTypeName =
  | 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'float32' | 'bool' | 'string' | 'array' | 'uint64' | 'int64' | 'float64';

/** Value type codes of the spec's gguf_metadata_value_type. */
export const GGUF_TYPE_CODE: Readonly<Record<GgufTypeName, number>> = {
  uint8: 0, int8: 1, uint16: 2, int16: 3, uint32: 4, int32: 5, float32: 6, bool: 7, string: 8, array: 9, uint64: 10, int64: 11, float64: 12,
};

export type GgufValue =
  | { readonly type: 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'float32' | 'float64'; readonly value: number }
  | { readonly type: 'uint64' | 'int64'; readonly value: bigint }
  | { readonly type: 'bool'; readonly value: boolean }
  | { readonly type: 'string'; readonly value: string }
  | { readonly type: 'array'; readonly elementType: GgufTypeName; readonly items: readonly GgufValue[] };

export const u8 = (value: number): GgufValue => ({ type: 'uint8', value });
export const i8 = (value: number): GgufValue => ({ type: 'int8', value });
export const u16 = (value: number): GgufValue => ({ type: 'uint16', value });
export const i16 = (value: number): GgufValue => ({ type: 'int16', value });
export const u32 = (value: number): GgufValue => ({ type: 'uint32', value });
export const i32 = (value: number): GgufValue => ({ type: 'int32', value });
export const f32 = (value: number): GgufValue => ({ type: 'float32', value });
export const f64 = (value: number): GgufValue => ({ type: 'float64', value });
export const u64 = (value: bigint): GgufValue => ({ type: 'uint64', value });
export const i64 = (value: bigint): GgufValue => ({ type: 'int64', value });
export const bool = (value: boolean): GgufValue => ({ type: 'bool', value });
export const str = (value: string): GgufValue => ({ type: 'string', value });
export const array = (elementType: GgufTypeName, items: readonly GgufValue[]): GgufValue => ({ type: 'array', elementType, items });

export function uint32LE(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE(value);
  return bytes;
}

export function uint64LE(value: bigint | number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(BigInt(value));
  return bytes;
}

/**
 * Appends little-endian values to one growing buffer: a vocabulary of 150 000 strings
 * encodes in milliseconds, where a small buffer per value would take seconds.
 */
class ByteWriter {
  private buffer = Buffer.alloc(1024);
  private length = 0;

  private reserve(bytes: number): number {
    if (this.length + bytes > this.buffer.length) {
      const grown = Buffer.alloc(Math.max(2 * this.buffer.length, this.length + bytes));
      this.buffer.copy(grown, 0, 0, this.length);
      this.buffer = grown;
    }
    const at = this.length;
    this.length += bytes;
    return at;
  }

  // `reserve` may replace the buffer, so it runs before the buffer is read.
  write(width: number, encode: (buffer: Buffer, at: number) => void): void {
    const at = this.reserve(width);
    encode(this.buffer, at);
  }

  bytes(bytes: Buffer): void {
    const at = this.reserve(bytes.length);
    bytes.copy(this.buffer, at);
  }

  string(text: string): void {
    const bytes = Buffer.from(text, 'utf8');
    // Two 32-bit halves: a BigInt per string would dominate the time of a large vocabulary.
    this.write(8, (buffer, at) => {
      buffer.writeUInt32LE(bytes.length % 2 ** 32, at);
      buffer.writeUInt32LE(Math.floor(bytes.length / 2 ** 32), at + 4);
    });
    this.bytes(bytes);
  }

  value(value: GgufValue): void {
    switch (value.type) {
      case 'uint8': return this.write(1, (b, at) => b.writeUInt8(value.value, at));
      case 'int8': return this.write(1, (b, at) => b.writeInt8(value.value, at));
      case 'uint16': return this.write(2, (b, at) => b.writeUInt16LE(value.value, at));
      case 'int16': return this.write(2, (b, at) => b.writeInt16LE(value.value, at));
      case 'uint32': return this.write(4, (b, at) => b.writeUInt32LE(value.value, at));
      case 'int32': return this.write(4, (b, at) => b.writeInt32LE(value.value, at));
      case 'float32': return this.write(4, (b, at) => b.writeFloatLE(value.value, at));
      case 'float64': return this.write(8, (b, at) => b.writeDoubleLE(value.value, at));
      case 'uint64': return this.write(8, (b, at) => b.writeBigUInt64LE(value.value, at));
      case 'int64': return this.write(8, (b, at) => b.writeBigInt64LE(value.value, at));
      case 'bool': return this.write(1, (b, at) => b.writeUInt8(value.value ? 1 : 0, at));
      case 'string': return this.string(value.value);
      case 'array': {
        this.write(4, (b, at) => b.writeUInt32LE(GGUF_TYPE_CODE[value.elementType], at));
        this.write(8, (b, at) => b.writeBigUInt64LE(BigInt(value.items.length), at));
        for (const item of value.items) {
          if (item.type !== value.elementType) throw new Error(`an array of ${value.elementType} cannot hold a ${item.type}`);
          this.value(item);
        }
        return;
      }
    }
  }

  entry(key: string, value: GgufValue): void {
    this.string(key);
    this.write(4, (b, at) => b.writeUInt32LE(GGUF_TYPE_CODE[value.type], at));
    this.value(value);
  }

  finish(): Buffer {
    return this.buffer.subarray(0, this.length);
  }
}

/** A gguf_string: 64-bit byte length, then the bytes, no terminator. */
export function ggufString(text: string): Buffer {
  const writer = new ByteWriter();
  writer.string(text);
  return writer.finish();
}

/** A metadata key/value pair: key, value type code, value. */
export function encodeEntry(key: string, value: GgufValue): Buffer {
  const writer = new ByteWriter();
  writer.entry(key, value);
  return writer.finish();
}

/** Magic, version, tensor count, metadata entry count. */
export function preamble(version: number, tensorCount: bigint | number, entryCount: bigint | number): Buffer {
  return Buffer.concat([Buffer.from('GGUF', 'latin1'), uint32LE(version), uint64LE(tensorCount), uint64LE(entryCount)]);
}

/** ggml_type ids (ggml.h). */
export const GGML_TYPE = {
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, Q8_K: 15,
  IQ2_XXS: 16, I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, BF16: 30,
} as const;

export interface GgufTensorSpec {
  readonly name: string;
  /** A ggml_type id; not checked, so tests can write unknown ones. */
  readonly type: number;
  /** As GGUF stores them: innermost (fastest-varying) first. */
  readonly dims: readonly (number | bigint)[];
  readonly data: Buffer;
  /** Written instead of the tensor's true offset, for files whose offsets lie. */
  readonly declaredOffset?: bigint;
}

export interface GgufFileSpec {
  /** Default 3. */
  readonly version?: number;
  readonly metadata?: readonly (readonly [string, GgufValue])[];
  readonly tensors?: readonly GgufTensorSpec[];
}

const DEFAULT_ALIGNMENT = 32;

/**
 * A complete file: header, tensor infos, padding to the alignment (`general.alignment` when
 * the metadata sets it to a power of two, else 32), then each tensor's data at an aligned offset.
 */
export function encodeGguf(spec: GgufFileSpec): Buffer {
  const metadata = spec.metadata ?? [];
  const tensors = spec.tensors ?? [];
  const alignmentEntry = metadata.find(([key]) => key === 'general.alignment')?.[1];
  // A file may declare an impossible alignment (the reader must refuse it); it is then laid out on the default.
  const usable = alignmentEntry?.type === 'uint32' && alignmentEntry.value > 0 && (alignmentEntry.value & (alignmentEntry.value - 1)) === 0;
  const alignment = usable ? alignmentEntry.value : DEFAULT_ALIGNMENT;
  const padTo = (length: number): number => Math.ceil(length / alignment) * alignment;

  const offsets: number[] = [];
  let dataLength = 0;
  for (const tensor of tensors) {
    dataLength = padTo(dataLength);
    offsets.push(dataLength);
    dataLength += tensor.data.length;
  }
  const writer = new ByteWriter();
  writer.bytes(preamble(spec.version ?? 3, tensors.length, metadata.length));
  for (const [key, value] of metadata) writer.entry(key, value);
  for (const [i, tensor] of tensors.entries()) {
    writer.string(tensor.name);
    writer.bytes(uint32LE(tensor.dims.length));
    for (const dim of tensor.dims) writer.bytes(uint64LE(dim));
    writer.bytes(uint32LE(tensor.type));
    writer.bytes(uint64LE(tensor.declaredOffset ?? BigInt(offsets[i]!)));
  }
  const header = writer.finish();
  const data = Buffer.alloc(dataLength);
  tensors.forEach((tensor, i) => tensor.data.copy(data, offsets[i]!));
  return Buffer.concat([header, Buffer.alloc(padTo(header.length) - header.length), data]);
}

// ---------------------------------------------------------------------------------------
// Reference quantizers

export type QuantScheme = 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q8_0' | 'Q2_K' | 'Q3_K' | 'Q4_K' | 'Q5_K' | 'Q6_K' | 'Q8_K';

export interface Quantized {
  /** The packed blocks, as a GGUF tensor's data. */
  readonly bytes: Buffer;
  /** What each value was quantized to, computed from its codes and scales directly. */
  readonly dequantized: Float64Array;
}

interface Scheme {
  readonly blockElements: number;
  readonly blockBytes: number;
  /** Fills `block` from `values` (one block's worth) and returns the values it stands for. */
  readonly quantizeBlock: (values: Float32Array, block: Buffer) => number[];
}

/** Quantizes `values` (a whole number of blocks) into `scheme`'s blocks. */
export function quantize(scheme: QuantScheme, values: Float32Array): Quantized {
  const { blockElements, blockBytes, quantizeBlock } = SCHEMES[scheme];
  if (values.length % blockElements !== 0) throw new Error(`${values.length} values are not whole ${scheme} blocks of ${blockElements}`);
  const blocks = values.length / blockElements;
  const bytes = Buffer.alloc(blocks * blockBytes);
  const dequantized = new Float64Array(values.length);
  for (let i = 0; i < blocks; i++) {
    const block = bytes.subarray(i * blockBytes, (i + 1) * blockBytes);
    dequantized.set(quantizeBlock(values.subarray(i * blockElements, (i + 1) * blockElements), block), i * blockElements);
  }
  return { bytes, dequantized };
}

/**
 * For each block of `values`, the widest spacing between representable values of any of its
 * sub-blocks when scales are chosen from the extremes as here: rounding a value to its code
 * errs by half of it, clamping the far end of a symmetric range by a whole one.
 */
export function blockSteps(scheme: QuantScheme, values: Float32Array): Float64Array {
  const { blockElements } = SCHEMES[scheme];
  const { subBlock, levels, range } = STEP_SHAPES[scheme];
  const steps = new Float64Array(values.length / blockElements);
  for (let start = 0; start < values.length; start += subBlock) {
    const group = values.subarray(start, start + subBlock);
    const high = Math.max(...group);
    const low = Math.min(...group);
    const spread =
      range === 'symmetric' ? 2 * Math.max(Math.abs(high), Math.abs(low)) : high - (range === 'min-at-most-zero' ? Math.min(low, 0) : low);
    const block = Math.floor(start / blockElements);
    steps[block] = Math.max(steps[block]!, spread / levels);
  }
  return steps;
}

/**
 * Per scheme: values sharing one scale, steps across the range the scale spans, and that
 * range: symmetric about zero (type-0), from the minimum (type-1), or from a minimum that
 * the K-quants never let exceed zero.
 */
const STEP_SHAPES: Readonly<Record<QuantScheme, { subBlock: number; levels: number; range: 'symmetric' | 'min' | 'min-at-most-zero' }>> = {
  Q4_0: { subBlock: 32, levels: 16, range: 'symmetric' },
  Q5_0: { subBlock: 32, levels: 32, range: 'symmetric' },
  Q8_0: { subBlock: 32, levels: 254, range: 'symmetric' },
  Q4_1: { subBlock: 32, levels: 15, range: 'min' },
  Q5_1: { subBlock: 32, levels: 31, range: 'min' },
  Q2_K: { subBlock: 16, levels: 3, range: 'min-at-most-zero' },
  Q4_K: { subBlock: 32, levels: 15, range: 'min-at-most-zero' },
  Q5_K: { subBlock: 32, levels: 31, range: 'min-at-most-zero' },
  Q3_K: { subBlock: 16, levels: 8, range: 'symmetric' },
  Q6_K: { subBlock: 16, levels: 64, range: 'symmetric' },
  Q8_K: { subBlock: 256, levels: 254, range: 'symmetric' },
};

function clamp(value: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, value));
}

/** The value of largest magnitude, with its sign. */
function signedExtreme(values: ArrayLike<number>): number {
  let extreme = 0;
  for (let i = 0; i < values.length; i++) if (Math.abs(values[i]!) > Math.abs(extreme)) extreme = values[i]!;
  return extreme;
}

/**
 * Symmetric 32-value blocks: the value of largest magnitude maps to the lowest code, as in
 * ggml, and the codes are q − offset. Returns the codes (0 .. 2·offset − 1) and the fp16 scale.
 */
function symmetricCodes(values: Float32Array, offset: number): { codes: number[]; scale: number; scaleBits: number } {
  const scaleBits = halfBits(signedExtreme(values) / -offset);
  const scale = halfValue(scaleBits);
  const codes = Array.from(values, (value) => (scale === 0 ? offset : clamp(Math.round(value / scale) + offset, 0, 2 * offset - 1)));
  return { codes, scale, scaleBits };
}

/** Min/max 32-value blocks: x ≈ q·d + m. */
function affineCodes(values: Float32Array, levels: number): { codes: number[]; scale: number; min: number; scaleBits: number; minBits: number } {
  const low = Math.min(...values);
  const scaleBits = halfBits((Math.max(...values) - low) / levels);
  const minBits = halfBits(low);
  const scale = halfValue(scaleBits);
  const min = halfValue(minBits);
  const codes = Array.from(values, (value) => (scale === 0 ? 0 : clamp(Math.round((value - min) / scale), 0, levels)));
  return { codes, scale, min, scaleBits, minBits };
}

/** Nibble-packs 32 codes: byte j holds code j (low) and code j + 16 (high). */
function packNibbles(codes: readonly number[], block: Buffer, at: number): void {
  for (let j = 0; j < 16; j++) block[at + j] = (codes[j]! & 0x0f) | ((codes[j + 16]! & 0x0f) << 4);
}

/** The fifth bits of 32 codes, bit i for code i. */
function fifthBitMask(codes: readonly number[]): number {
  return codes.reduce((mask, code, i) => (mask | (((code >> 4) & 1) << i)) >>> 0, 0);
}

function quantizeQ8_0(values: Float32Array, block: Buffer): number[] {
  const amax = Math.max(...values.map(Math.abs));
  const scaleBits = halfBits(amax / 127);
  const scale = halfValue(scaleBits);
  block.writeUInt16LE(scaleBits, 0);
  return Array.from(values, (value, j) => {
    const q = scale === 0 ? 0 : clamp(Math.round(value / scale), -127, 127);
    block.writeInt8(q, 2 + j);
    return q * scale;
  });
}

function quantizeQ4_0(values: Float32Array, block: Buffer): number[] {
  const { codes, scale, scaleBits } = symmetricCodes(values, 8);
  block.writeUInt16LE(scaleBits, 0);
  packNibbles(codes, block, 2);
  return codes.map((q) => (q - 8) * scale);
}

function quantizeQ5_0(values: Float32Array, block: Buffer): number[] {
  const { codes, scale, scaleBits } = symmetricCodes(values, 16);
  block.writeUInt16LE(scaleBits, 0);
  block.writeUInt32LE(fifthBitMask(codes), 2);
  packNibbles(codes, block, 6);
  return codes.map((q) => (q - 16) * scale);
}

function quantizeQ4_1(values: Float32Array, block: Buffer): number[] {
  const { codes, scale, min, scaleBits, minBits } = affineCodes(values, 15);
  block.writeUInt16LE(scaleBits, 0);
  block.writeUInt16LE(minBits, 2);
  packNibbles(codes, block, 4);
  return codes.map((q) => q * scale + min);
}

function quantizeQ5_1(values: Float32Array, block: Buffer): number[] {
  const { codes, scale, min, scaleBits, minBits } = affineCodes(values, 31);
  block.writeUInt16LE(scaleBits, 0);
  block.writeUInt16LE(minBits, 2);
  block.writeUInt32LE(fifthBitMask(codes), 4);
  packNibbles(codes, block, 8);
  return codes.map((q) => q * scale + min);
}

/**
 * The type-1 K-quant scheme: sub-blocks of `subBlock` values, each with x ≈ d·sc·q − dmin·m,
 * sc and m integers up to `scaleLevels`, q up to `levels`. As in ggml a sub-block's offset is
 * never positive. Returns the codes, sub-scales, sub-mins and fp16 d and dmin.
 */
function minScaleCodes(values: Float32Array, subBlock: number, levels: number, scaleLevels: number) {
  const subBlocks = values.length / subBlock;
  const steps: number[] = [];
  const offsets: number[] = [];
  for (let j = 0; j < subBlocks; j++) {
    const group = values.subarray(j * subBlock, (j + 1) * subBlock);
    const low = Math.min(0, ...group);
    steps.push((Math.max(...group) - low) / levels);
    offsets.push(-low);
  }
  const dBits = halfBits(Math.max(...steps) / scaleLevels);
  const dminBits = halfBits(Math.max(...offsets) / scaleLevels);
  const d = halfValue(dBits);
  const dmin = halfValue(dminBits);
  const scales = steps.map((step) => (d === 0 ? 0 : clamp(Math.round(step / d), 0, scaleLevels)));
  const mins = offsets.map((offset) => (dmin === 0 ? 0 : clamp(Math.round(offset / dmin), 0, scaleLevels)));
  const dequantized: number[] = [];
  const codes = Array.from(values, (value, i) => {
    const j = Math.floor(i / subBlock);
    const step = d * scales[j]!;
    const offset = dmin * mins[j]!;
    const q = step === 0 ? 0 : clamp(Math.round((value + offset) / step), 0, levels);
    dequantized.push(step * q - offset);
    return q;
  });
  return { codes, scales, mins, dBits, dminBits, dequantized };
}

/**
 * The type-0 K-quant scheme: sub-blocks of 16 values with x ≈ d·sc·q, sc a signed integer
 * (−scaleOffset .. scaleOffset − 1), q signed (−codeOffset .. codeOffset − 1); the value of
 * largest magnitude maps to the lowest code, and the largest sub-scale to the lowest sub-scale.
 */
function signedScaleCodes(values: Float32Array, codeOffset: number, scaleOffset: number) {
  const steps: number[] = [];
  for (let j = 0; j < values.length / 16; j++) steps.push(signedExtreme(values.subarray(16 * j, 16 * j + 16)) / -codeOffset);
  const dBits = halfBits(signedExtreme(steps) / -scaleOffset);
  const d = halfValue(dBits);
  const scales = steps.map((step) => (d === 0 ? 0 : clamp(Math.round(step / d), -scaleOffset, scaleOffset - 1)));
  const dequantized: number[] = [];
  const codes = Array.from(values, (value, i) => {
    const step = d * scales[Math.floor(i / 16)]!;
    const q = step === 0 ? 0 : clamp(Math.round(value / step), -codeOffset, codeOffset - 1);
    dequantized.push(step * q);
    return q;
  });
  return { codes, scales, dBits, dequantized };
}

/**
 * 2-bit codes of 256 values in 64 bytes: in each half of 128 values, byte b holds values
 * b, b + 32, b + 64 and b + 96 of the half in bit pairs 0–1, 2–3, 4–5 and 6–7.
 */
function packBitPairs(codes: readonly number[], block: Buffer, at: number): void {
  for (let value = 0; value < 256; value++) {
    const byte = at + 32 * Math.floor(value / 128) + (value % 32);
    block[byte] = block[byte]! | ((codes[value]! & 3) << (2 * (Math.floor(value / 32) % 4)));
  }
}

/** Q2_K: scales[16] (sub-scale low nibble, sub-min high nibble), qs[64], d, dmin. */
function quantizeQ2_K(values: Float32Array, block: Buffer): number[] {
  const { codes, scales, mins, dBits, dminBits, dequantized } = minScaleCodes(values, 16, 3, 15);
  scales.forEach((scale, j) => (block[j] = scale | (mins[j]! << 4)));
  packBitPairs(codes, block, 16);
  block.writeUInt16LE(dBits, 80);
  block.writeUInt16LE(dminBits, 82);
  return dequantized;
}

/** Q3_K: hmask[32], qs[64], scales[12], d. */
function quantizeQ3_K(values: Float32Array, block: Buffer): number[] {
  const { codes, scales, dBits, dequantized } = signedScaleCodes(values, 4, 32);
  const stored = codes.map((q) => q + 4);
  // The third bit of value v is bit ⌊v/32⌋ of hmask byte v % 32.
  stored.forEach((code, v) => (block[v % 32] = block[v % 32]! | ((code >> 2) << Math.floor(v / 32))));
  packBitPairs(stored, block, 32);
  scales.forEach((scale, j) => {
    const six = scale + 32;
    block[96 + (j % 8)] = block[96 + (j % 8)]! | ((six & 0x0f) << (j < 8 ? 0 : 4));
    block[96 + 8 + (j % 4)] = block[96 + 8 + (j % 4)]! | ((six >> 4) << (2 * Math.floor(j / 4)));
  });
  block.writeUInt16LE(dBits, 108);
  return dequantized;
}

/** The 8 six-bit scales and mins of Q4_K and Q5_K in 12 bytes at `at`. */
function packScalesAndMins(scales: readonly number[], mins: readonly number[], block: Buffer, at: number): void {
  for (let j = 0; j < 4; j++) {
    block[at + j] = scales[j]! | ((scales[j + 4]! >> 4) << 6);
    block[at + j + 4] = mins[j]! | ((mins[j + 4]! >> 4) << 6);
    block[at + j + 8] = (scales[j + 4]! & 0x0f) | ((mins[j + 4]! & 0x0f) << 4);
  }
}

/** Q4_K and Q5_K nibbles: each 64 values share 32 bytes, the first 32 in low nibbles. */
function packPairedNibbles(codes: readonly number[], block: Buffer, at: number): void {
  for (let pair = 0; pair < 4; pair++) {
    for (let l = 0; l < 32; l++) block[at + 32 * pair + l] = (codes[64 * pair + l]! & 0x0f) | ((codes[64 * pair + 32 + l]! & 0x0f) << 4);
  }
}

/** Q4_K: d, dmin, scales[12], qs[128]. */
function quantizeQ4_K(values: Float32Array, block: Buffer): number[] {
  const { codes, scales, mins, dBits, dminBits, dequantized } = minScaleCodes(values, 32, 15, 63);
  block.writeUInt16LE(dBits, 0);
  block.writeUInt16LE(dminBits, 2);
  packScalesAndMins(scales, mins, block, 4);
  packPairedNibbles(codes, block, 16);
  return dequantized;
}

/** Q5_K: d, dmin, scales[12], qh[32], qs[128]; value 64p + l has its fifth bit in bit 2p of qh[l], value 64p + 32 + l in bit 2p + 1. */
function quantizeQ5_K(values: Float32Array, block: Buffer): number[] {
  const { codes, scales, mins, dBits, dminBits, dequantized } = minScaleCodes(values, 32, 31, 63);
  block.writeUInt16LE(dBits, 0);
  block.writeUInt16LE(dminBits, 2);
  packScalesAndMins(scales, mins, block, 4);
  codes.forEach((code, v) => (block[16 + (v % 32)] = block[16 + (v % 32)]! | ((code >> 4) << Math.floor(v / 32))));
  packPairedNibbles(codes, block, 48);
  return dequantized;
}

/**
 * Q6_K: ql[128], qh[64], scales[16], d. In each half of 128 values, value g·32 + l has its
 * low nibble in ql byte l (g = 0, 2) or 32 + l (g = 1, 3) of the half — low nibble for g < 2 —
 * and its top two bits in bits 2g of the half's qh byte l.
 */
function quantizeQ6_K(values: Float32Array, block: Buffer): number[] {
  const { codes, scales, dBits, dequantized } = signedScaleCodes(values, 32, 128);
  codes.forEach((q, v) => {
    const code = q + 32;
    const halfBlock = Math.floor(v / 128);
    const group = Math.floor((v % 128) / 32);
    const l = v % 32;
    const low = 64 * halfBlock + (group % 2) * 32 + l;
    block[low] = block[low]! | ((code & 0x0f) << (group < 2 ? 0 : 4));
    const high = 128 + 32 * halfBlock + l;
    block[high] = block[high]! | ((code >> 4) << (2 * group));
  });
  scales.forEach((scale, j) => block.writeInt8(scale, 192 + j));
  block.writeUInt16LE(dBits, 208);
  return dequantized;
}

/** Q8_K: float32 d, qs[256], then the int16 sum of each 16 codes. */
function quantizeQ8_K(values: Float32Array, block: Buffer): number[] {
  const amax = Math.max(...values.map(Math.abs));
  const scale = Math.fround(amax / 127);
  block.writeFloatLE(scale, 0);
  const codes = Array.from(values, (value) => (scale === 0 ? 0 : clamp(Math.round(value / scale), -127, 127)));
  codes.forEach((q, j) => block.writeInt8(q, 4 + j));
  for (let group = 0; group < 16; group++) {
    block.writeInt16LE(codes.slice(16 * group, 16 * group + 16).reduce((sum, q) => sum + q, 0), 260 + 2 * group);
  }
  return codes.map((q) => q * scale);
}

const SCHEMES: Readonly<Record<QuantScheme, Scheme>> = {
  Q4_0: { blockElements: 32, blockBytes: 18, quantizeBlock: quantizeQ4_0 },
  Q4_1: { blockElements: 32, blockBytes: 20, quantizeBlock: quantizeQ4_1 },
  Q5_0: { blockElements: 32, blockBytes: 22, quantizeBlock: quantizeQ5_0 },
  Q5_1: { blockElements: 32, blockBytes: 24, quantizeBlock: quantizeQ5_1 },
  Q8_0: { blockElements: 32, blockBytes: 34, quantizeBlock: quantizeQ8_0 },
  Q2_K: { blockElements: 256, blockBytes: 84, quantizeBlock: quantizeQ2_K },
  Q3_K: { blockElements: 256, blockBytes: 110, quantizeBlock: quantizeQ3_K },
  Q4_K: { blockElements: 256, blockBytes: 144, quantizeBlock: quantizeQ4_K },
  Q5_K: { blockElements: 256, blockBytes: 176, quantizeBlock: quantizeQ5_K },
  Q6_K: { blockElements: 256, blockBytes: 210, quantizeBlock: quantizeQ6_K },
  Q8_K: { blockElements: 256, blockBytes: 292, quantizeBlock: quantizeQ8_K },
};
