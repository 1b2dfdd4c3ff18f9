import { CheckpointError } from '../errors';
import type { ByteSource } from '../io/byteSource';
import { decodeToFloat64, type DType } from './dtype';
import { DEFAULT_CHUNK_ELEMENTS, elementCountOf, readAhead, type ChunkOptions, type Quantization, type Tensor } from './tensor';

/**
 * ggml's block quantizations (the tensor types of llama.cpp's GGUF files), dequantized the
 * way ggml's reference code does it: a tensor is a run of fixed-size blocks, each holding
 * the codes of 32 values (Q4_0 … Q8_0) or 256 values (the K-quants) with their fp16 scales.
 * Rows always hold whole blocks, so element i of the row-major tensor is element i % n of
 * block ⌊i / n⌋, and any element range is served by reading the blocks that cover it.
 *
 * Values are computed with float32 rounding at the same steps as ggml (scale × sub-scale,
 * × code, − min), so they equal what llama.cpp's dequantization produces, bit for bit.
 */

export type GgmlBlockScheme = 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q8_0' | 'Q2_K' | 'Q3_K' | 'Q4_K' | 'Q5_K' | 'Q6_K' | 'Q8_K';

export interface BlockFormat {
  readonly scheme: GgmlBlockScheme;
  /** Values per block. */
  readonly blockElements: number;
  readonly blockBytes: number;
  /** Writes the values of the block at `block[at]` into `out[outAt]` onwards. */
  readonly dequantizeBlock: (block: Buffer, at: number, out: Float32Array, outAt: number) => void;
}

/** Values per block of the legacy quantizations. */
const SMALL_BLOCK = 32;
/** Values per super-block of the K-quants (ggml's QK_K). */
const SUPER_BLOCK = 256;

/** Every fp16 code's value, decoded once by the shared exact decoder. */
const HALF_VALUES = Float32Array.from(
  decodeToFloat64('F16', Buffer.from(Uint16Array.from({ length: 1 << 16 }, (_, code) => code).buffer)),
);

function half(bytes: Buffer, at: number): number {
  return HALF_VALUES[bytes[at]! | (bytes[at + 1]! << 8)]!;
}

function int8(bytes: Buffer, at: number): number {
  return (bytes[at]! << 24) >> 24;
}

const fround = Math.fround;

// ---------------------------------------------------------------------------------------
// 32-value blocks. Byte j of the packed codes holds value j in its low nibble and value
// j + 16 in its high nibble; Q5 keeps each value's fifth bit in a 32-bit mask, bit i for value i.

/** fp16 d, 16 bytes of 4-bit codes q: x = (q − 8)·d. */
function dequantizeQ4_0(block: Buffer, at: number, out: Float32Array, outAt: number): void {
  const d = half(block, at);
  for (let j = 0; j < 16; j++) {
    const byte = block[at + 2 + j]!;
    out[outAt + j] = ((byte & 0x0f) - 8) * d;
    out[outAt + j + 16] = ((byte >> 4) - 8) * d;
  }
}

/** fp16 d and m, 16 bytes of 4-bit codes q: x = q·d + m. */
function dequantizeQ4_1(block: Buffer, at: number, out: Float32Array, outAt: number): void {
  const d = half(block, at);
  const m = half(block, at + 2);
  for (let j = 0; j < 16; j++) {
    const byte = block[at + 4 + j]!;
    out[outAt + j] = fround((byte & 0x0f) * d) + m;
    out[outAt + j + 16] = fround((byte >> 4) * d) + m;
  }
}

function fifthBits(block: Buffer, at: number): number {
  return block.readUInt32LE(at);
}

/** fp16 d, 32 fifth bits, 16 bytes of low nibbles: x = (q − 16)·d with q in 0..31. */
function dequantizeQ5_0(block: Buffer, at: number, out: Float32Array, outAt: number): void {
  const d = half(block, at);
  const high = fifthBits(block, at + 2);
  for (let j = 0; j < 16; j++) {
    const byte = block[at + 6 + j]!;
    const q0 = (byte & 0x0f) | (((high >>> j) & 1) << 4);
    const q1 = (byte >> 4) | (((high >>> (j + 16)) & 1) << 4);
    out[outAt + j] = (q0 - 16) * d;
    out[outAt + j + 16] = (q1 - 16) * d;
  }
}

/** fp16 d and m, 32 fifth bits, 16 bytes of low nibbles: x = q·d + m. */
function dequantizeQ5_1(block: Buffer, at: number, out: Float32Array, outAt: number): void {
  const d = half(block, at);
  const m = half(block, at + 2);
  const high = fifthBits(block, at + 4);
  for (let j = 0; j < 16; j++) {
    const byte = block[at + 8 + j]!;
    const q0 = (byte & 0x0f) | (((high >>> j) & 1) << 4);
    const q1 = (byte >> 4) | (((high >>> (j + 16)) & 1) << 4);
    out[outAt + j] = fround(q0 * d) + m;
    out[outAt + j + 16] = fround(q1 * d) + m;
  }
}

/** fp16 d, 32 signed bytes q: x = q·d. */
function dequantizeQ8_0(block: Buffer, at: number, out: Float32Array, outAt: number): void {
  const d = half(block, at);
  for (let j = 0; j < SMALL_BLOCK; j++) out[outAt + j] = int8(block, at + 2 + j) * d;
}

// ---------------------------------------------------------------------------------------
// 256-value super-blocks, split into sub-blocks of 16 or 32 values with their own scales.

/**
 * Q2_K: 16 bytes of 4-bit sub-scale (low nibble) and sub-min (high nibble) for the 16
 * sub-blocks of 16, 64 bytes of 2-bit codes, fp16 d and dmin: x = d·sc·q − dmin·m.
 * Each half of the super-block (128 values) has 32 code bytes; code byte b of a half holds
 * values b, b + 32, b + 64, b + 96 of that half in bit pairs 0–1, 2–3, 4–5, 6–7.
 */
function dequantizeQ2_K(block: Buffer, at: number, out: Float32Array, outAt: number): void {
  const d = half(block, at + 80);
  const dmin = half(block, at + 82);
  for (let value = 0; value < SUPER_BLOCK; value += 16) {
    const subScales = block[at + value / 16]!;
    const scale = fround(d * (subScales & 0x0f));
    const min = fround(dmin * (subScales >> 4));
    const codes = at + 16 + 32 * Math.floor(value / 128) + (value % 32);
    const shift = 2 * (Math.floor(value / 32) % 4);
    for (let l = 0; l < 16; l++) out[outAt + value + l] = fround(scale * ((block[codes + l]! >> shift) & 3)) - min;
  }
}

/**
 * Q3_K's 16 sub-scales, 6-bit values stored with an offset of 32: the low four bits of
 * sub-block j are the low (j < 8) or high (j ≥ 8) nibble of byte j % 8, the top two bits
 * are bits 2⌊j/4⌋ of byte 8 + j % 4.
 */
function unpackQ3Scales(block: Buffer, at: number, scales: Int8Array): void {
  for (let j = 0; j < 16; j++) {
    const low = j < 8 ? block[at + j]! & 0x0f : block[at + j - 8]! >> 4;
    const high = (block[at + 8 + (j % 4)]! >> (2 * Math.floor(j / 4))) & 3;
    scales[j] = (low | (high << 4)) - 32;
  }
}

const q3Scales = new Int8Array(16);

/**
 * Q3_K: 32 bytes of high bits, 64 bytes of 2-bit low codes (laid out as in Q2_K), 12 bytes
 * of sub-scales, fp16 d: x = d·sc·(low − (high ? 0 : 4)). Value v's high bit is bit ⌊v/32⌋
 * of byte v % 32.
 */
function dequantizeQ3_K(block: Buffer, at: number, out: Float32Array, outAt: number): void {
  const d = half(block, at + 108);
  unpackQ3Scales(block, at + 96, q3Scales);
  for (let value = 0; value < SUPER_BLOCK; value += 16) {
    const scale = fround(d * q3Scales[value / 16]!);
    const codes = at + 32 + 32 * Math.floor(value / 128) + (value % 32);
    const highBits = at + (value % 32);
    const shift = 2 * (Math.floor(value / 32) % 4);
    const highBit = Math.floor(value / 32);
    for (let l = 0; l < 16; l++) {
      const low = (block[codes + l]! >> shift) & 3;
      const high = (block[highBits + l]! >> highBit) & 1;
      out[outAt + value + l] = scale * (low - (high ? 0 : 4));
    }
  }
}

/**
 * The 6-bit scale and min of each of the 8 sub-blocks of Q4_K and Q5_K, packed in 12 bytes:
 * sub-blocks 0–3 have theirs in the low six bits of bytes j and j + 4; sub-blocks 4–7 have
 * the low four bits in the nibbles of byte j + 4 and the top two bits in the spare top bits
 * of bytes j − 4 (scale) and j (min).
 */
function unpackScalesAndMins(block: Buffer, at: number, scales: Uint8Array, mins: Uint8Array): void {
  for (let j = 0; j < 4; j++) {
    scales[j] = block[at + j]! & 63;
    mins[j] = block[at + j + 4]! & 63;
  }
  for (let j = 4; j < 8; j++) {
    scales[j] = (block[at + j + 4]! & 0x0f) | ((block[at + j - 4]! >> 6) << 4);
    mins[j] = (block[at + j + 4]! >> 4) | ((block[at + j]! >> 6) << 4);
  }
}

const kScales = new Uint8Array(8);
const kMins = new Uint8Array(8);

/**
 * Q4_K: fp16 d and dmin, 12 bytes of scales and mins, 128 bytes of 4-bit codes: x = d·sc·q −
 * dmin·m. Each 64 values share 32 code bytes: low nibbles hold the first sub-block of 32,
 * high nibbles the second.
 */
function dequantizeQ4_K(block: Buffer, at: number, out: Float32Array, outAt: number): void {
  const d = half(block, at);
  const dmin = half(block, at + 2);
  unpackScalesAndMins(block, at + 4, kScales, kMins);
  for (let pair = 0; pair < 4; pair++) {
    const scaleLow = fround(d * kScales[2 * pair]!);
    const minLow = fround(dmin * kMins[2 * pair]!);
    const scaleHigh = fround(d * kScales[2 * pair + 1]!);
    const minHigh = fround(dmin * kMins[2 * pair + 1]!);
    const codes = at + 16 + 32 * pair;
    const first = outAt + 64 * pair;
    for (let l = 0; l < 32; l++) {
      const byte = block[codes + l]!;
      out[first + l] = fround(scaleLow * (byte & 0x0f)) - minLow;
      out[first + 32 + l] = fround(scaleHigh * (byte >> 4)) - minHigh;
    }
  }
}

/**
 * Q5_K: as Q4_K with 32 bytes of fifth bits after the scales: bit 2p of byte l is the fifth
 * bit of value 64p + l, bit 2p + 1 that of value 64p + 32 + l.
 */
function dequantizeQ5_K(block: Buffer, at: number, out: Float32Array, outAt: number): void {
  const d = half(block, at);
  const dmin = half(block, at + 2);
  unpackScalesAndMins(block, at + 4, kScales, kMins);
  const highBits = at + 16;
  for (let pair = 0; pair < 4; pair++) {
    const scaleLow = fround(d * kScales[2 * pair]!);
    const minLow = fround(dmin * kMins[2 * pair]!);
    const scaleHigh = fround(d * kScales[2 * pair + 1]!);
    const minHigh = fround(dmin * kMins[2 * pair + 1]!);
    const codes = at + 48 + 32 * pair;
    const first = outAt + 64 * pair;
    for (let l = 0; l < 32; l++) {
      const byte = block[codes + l]!;
      const high = block[highBits + l]!;
      const low = (byte & 0x0f) | (((high >> (2 * pair)) & 1) << 4);
      const upper = (byte >> 4) | (((high >> (2 * pair + 1)) & 1) << 4);
      out[first + l] = fround(scaleLow * low) - minLow;
      out[first + 32 + l] = fround(scaleHigh * upper) - minHigh;
    }
  }
}

/**
 * Q6_K: 128 bytes of low nibbles, 64 bytes of high bit pairs, 16 signed 8-bit sub-scales,
 * fp16 d: x = d·sc·(q − 32) with q in 0..63. In each half of 128 values, value l + 32g
 * (g = 0..3, l = 0..31) has its low nibble in byte l (g = 0, 2) or l + 32 (g = 1, 3) of the
 * half's 64 — low nibble for g < 2, high for g ≥ 2 — and its high bits in bits 2g–2g+1 of
 * the half's high byte l.
 */
function dequantizeQ6_K(block: Buffer, at: number, out: Float32Array, outAt: number): void {
  const d = half(block, at + 208);
  for (let halfBlock = 0; halfBlock < 2; halfBlock++) {
    const lows = at + 64 * halfBlock;
    const highs = at + 128 + 32 * halfBlock;
    const scales = at + 192 + 8 * halfBlock;
    const first = outAt + 128 * halfBlock;
    for (let l = 0; l < 32; l++) {
      const lowA = block[lows + l]!;
      const lowB = block[lows + 32 + l]!;
      const high = block[highs + l]!;
      const sub = Math.floor(l / 16);
      out[first + l] = fround(d * int8(block, scales + sub)) * (((lowA & 0x0f) | ((high & 3) << 4)) - 32);
      out[first + 32 + l] = fround(d * int8(block, scales + sub + 2)) * (((lowB & 0x0f) | (((high >> 2) & 3) << 4)) - 32);
      out[first + 64 + l] = fround(d * int8(block, scales + sub + 4)) * (((lowA >> 4) | (((high >> 4) & 3) << 4)) - 32);
      out[first + 96 + l] = fround(d * int8(block, scales + sub + 6)) * (((lowB >> 4) | (((high >> 6) & 3) << 4)) - 32);
    }
  }
}

/** Q8_K: float32 d, 256 signed bytes q, then 16 int16 group sums that only speed up dot products: x = q·d. */
function dequantizeQ8_K(block: Buffer, at: number, out: Float32Array, outAt: number): void {
  const d = block.readFloatLE(at);
  for (let j = 0; j < SUPER_BLOCK; j++) out[outAt + j] = int8(block, at + 4 + j) * d;
}

function format(scheme: GgmlBlockScheme, blockElements: number, blockBytes: number, dequantizeBlock: BlockFormat['dequantizeBlock']): BlockFormat {
  return { scheme, blockElements, blockBytes, dequantizeBlock };
}

/** Block sizes per ggml-common.h. */
export const BLOCK_FORMATS: Readonly<Record<GgmlBlockScheme, BlockFormat>> = {
  Q4_0: format('Q4_0', SMALL_BLOCK, 18, dequantizeQ4_0),
  Q4_1: format('Q4_1', SMALL_BLOCK, 20, dequantizeQ4_1),
  Q5_0: format('Q5_0', SMALL_BLOCK, 22, dequantizeQ5_0),
  Q5_1: format('Q5_1', SMALL_BLOCK, 24, dequantizeQ5_1),
  Q8_0: format('Q8_0', SMALL_BLOCK, 34, dequantizeQ8_0),
  Q2_K: format('Q2_K', SUPER_BLOCK, 84, dequantizeQ2_K),
  Q3_K: format('Q3_K', SUPER_BLOCK, 110, dequantizeQ3_K),
  Q4_K: format('Q4_K', SUPER_BLOCK, 144, dequantizeQ4_K),
  Q5_K: format('Q5_K', SUPER_BLOCK, 176, dequantizeQ5_K),
  Q6_K: format('Q6_K', SUPER_BLOCK, 210, dequantizeQ6_K),
  Q8_K: format('Q8_K', SUPER_BLOCK, 292, dequantizeQ8_K),
};

/**
 * Bytes a tensor of `shape` (row-major, so its last dimension is ggml's row) occupies in
 * `format`. ggml quantizes row by row, so a row that is not a whole number of blocks means
 * the file is damaged.
 */
export function blockQuantizedBytes(format: BlockFormat, shape: readonly number[], what: string, file: string): number {
  const elements = elementCountOf(shape, what, file);
  const rowLength = shape[shape.length - 1] ?? 1;
  if (rowLength % format.blockElements !== 0) {
    throw new CheckpointError(
      file,
      `${what}: rows of ${rowLength} values are not a whole number of ${format.scheme} blocks of ${format.blockElements}`,
    );
  }
  return (elements / format.blockElements) * format.blockBytes;
}

/** Largest run of blocks read and dequantized at once; bounds the memory of one read beyond its result. */
const MAX_BLOCK_READ_BYTES = 8 * 1024 * 1024;

/**
 * A block-quantized tensor stored in `storage` (exactly its blocks). Values are delivered as
 * float32 numbers; `byteSize` is what the blocks occupy in the file.
 */
export class BlockQuantizedTensor implements Tensor {
  readonly dtype: DType = 'F32';
  readonly elementCount: number;
  readonly byteSize: number;
  readonly quantization: Quantization;

  constructor(
    readonly name: string,
    readonly shape: readonly number[],
    private readonly format: BlockFormat,
    private readonly storage: ByteSource,
  ) {
    this.elementCount = elementCountOf(shape, `tensor "${name}"`, storage.name);
    this.byteSize = blockQuantizedBytes(format, shape, `tensor "${name}"`, storage.name);
    if (storage.size < this.byteSize) {
      throw new CheckpointError(storage.name, `tensor "${name}" needs ${this.byteSize} bytes of ${format.scheme} blocks but has ${storage.size}`);
    }
    this.quantization = { scheme: format.scheme, bitsPerValue: (format.blockBytes * 8) / format.blockElements };
  }

  /** Reads the blocks covering the range, a bounded run at a time, and keeps the requested values. */
  async read(start = 0, count = this.elementCount - start): Promise<Float64Array> {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(count) || start < 0 || count < 0 || start + count > this.elementCount) {
      throw new CheckpointError(this.storage.name, `tensor "${this.name}": elements ${start}+${count} are out of range`);
    }
    const values = new Float64Array(count);
    if (count === 0) return values;
    const { blockElements, blockBytes, dequantizeBlock } = this.format;
    const end = start + count;
    const firstBlock = Math.floor(start / blockElements);
    const endBlock = Math.ceil(end / blockElements);
    const blocksPerRead = Math.max(1, Math.floor(MAX_BLOCK_READ_BYTES / blockBytes));
    const decoded = new Float32Array(Math.min(blocksPerRead, endBlock - firstBlock) * blockElements);
    for (let block = firstBlock; block < endBlock; block += blocksPerRead) {
      const blocks = Math.min(blocksPerRead, endBlock - block);
      const bytes = await this.storage.read(block * blockBytes, blocks * blockBytes);
      for (let i = 0; i < blocks; i++) dequantizeBlock(bytes, i * blockBytes, decoded, i * blockElements);
      const spanStart = block * blockElements;
      const from = Math.max(start, spanStart);
      const to = Math.min(end, spanStart + blocks * blockElements);
      values.set(decoded.subarray(from - spanStart, to - spanStart), from - start);
    }
    return values;
  }

  /** Streams whole blocks per chunk: the requested size rounded up to a block. */
  chunks(options: ChunkOptions = {}): AsyncIterable<Float64Array> {
    const { blockElements } = this.format;
    const requested = Math.max(1, options.chunkElements ?? DEFAULT_CHUNK_ELEMENTS);
    return readAhead(this, Math.ceil(requested / blockElements) * blockElements, options.signal);
  }
}
