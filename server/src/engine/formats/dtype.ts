/**
 * Element types of stored tensors and their exact conversion to float64.
 * Names follow safetensors; other formats map their own names onto these.
 */
export type DType =
  | 'F64' | 'F32' | 'F16' | 'BF16' | 'F8_E4M3' | 'F8_E5M2'
  | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL'
  | 'C64' | 'C128' | 'QINT8' | 'QUINT8' | 'QINT32';

export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1,
  I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  C64: 8, C128: 16, QINT8: 1, QUINT8: 1, QINT32: 4,
};

/** Types whose values cannot be read as real numbers without more context (scale, zero point). */
const UNDECODABLE: ReadonlySet<DType> = new Set<DType>(['C64', 'C128', 'QINT8', 'QUINT8', 'QINT32']);

export function isDecodable(dtype: DType): boolean {
  return !UNDECODABLE.has(dtype);
}

export function isFloating(dtype: DType): boolean {
  return dtype === 'F64' || dtype === 'F32' || dtype === 'F16' || dtype === 'BF16' || dtype === 'F8_E4M3' || dtype === 'F8_E5M2';
}

export function undecodableReason(dtype: DType): string {
  if (dtype === 'C64' || dtype === 'C128') return `complex tensors (${dtype}) have no real-valued reading`;
  return `quantized tensors (${dtype}) carry their scale outside the data and are not decoded`;
}

function buildTable(bits: number, decode: (code: number) => number): Float64Array {
  const table = new Float64Array(1 << bits);
  for (let code = 0; code < table.length; code++) table[code] = decode(code);
  return table;
}

/** IEEE binary16: exact, including subnormals, infinities and NaN. */
const HALF_TABLE = buildTable(16, (h) => {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
});

/** float8 e4m3 "fn" (PyTorch float8_e4m3fn, safetensors F8_E4M3): bias 7, no infinities, S.1111.111 is NaN. */
const E4M3_TABLE = buildTable(8, (b) => {
  const sign = b & 0x80 ? -1 : 1;
  const exponent = (b >> 3) & 0xf;
  const mantissa = b & 0x7;
  if (exponent === 0xf && mantissa === 0x7) return NaN;
  if (exponent === 0) return sign * mantissa * 2 ** -9;
  return sign * (1 + mantissa / 8) * 2 ** (exponent - 7);
});

/** float8 e5m2: bias 15, IEEE-style infinities and NaN. */
const E5M2_TABLE = buildTable(8, (b) => {
  const sign = b & 0x80 ? -1 : 1;
  const exponent = (b >> 2) & 0x1f;
  const mantissa = b & 0x3;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  if (exponent === 0) return sign * mantissa * 2 ** -16;
  return sign * (1 + mantissa / 4) * 2 ** (exponent - 15);
});

/** Copies into a fresh, aligned buffer in little-endian order. */
function alignedLittleEndian(bytes: Uint8Array, width: number, littleEndian: boolean): ArrayBuffer {
  const copy = Buffer.from(bytes);
  if (!littleEndian) {
    if (width === 2) copy.swap16();
    else if (width === 4) copy.swap32();
    else if (width === 8) copy.swap64();
  }
  return copy.buffer.slice(copy.byteOffset, copy.byteOffset + copy.byteLength);
}

/**
 * Decodes `bytes` (a whole number of elements) into float64 values. Integers beyond 2^53
 * lose precision, which fingerprints tolerate.
 */
export function decodeToFloat64(dtype: DType, bytes: Uint8Array, littleEndian = true): Float64Array {
  const width = DTYPE_BYTES[dtype];
  if (bytes.length % width !== 0) throw new Error(`${bytes.length} bytes is not a whole number of ${dtype} elements`);
  if (!isDecodable(dtype)) throw new Error(undecodableReason(dtype));
  const count = bytes.length / width;
  const out = new Float64Array(count);
  const buffer = alignedLittleEndian(bytes, width, littleEndian);
  switch (dtype) {
    case 'F64':
      out.set(new Float64Array(buffer));
      break;
    case 'F32':
      out.set(new Float32Array(buffer));
      break;
    case 'F16': {
      const codes = new Uint16Array(buffer);
      for (let i = 0; i < count; i++) out[i] = HALF_TABLE[codes[i]!]!;
      break;
    }
    case 'BF16': {
      const codes = new Uint16Array(buffer);
      const widened = new Uint32Array(count);
      for (let i = 0; i < count; i++) widened[i] = codes[i]! << 16;
      out.set(new Float32Array(widened.buffer));
      break;
    }
    case 'F8_E4M3':
      for (let i = 0; i < count; i++) out[i] = E4M3_TABLE[bytes[i]!]!;
      break;
    case 'F8_E5M2':
      for (let i = 0; i < count; i++) out[i] = E5M2_TABLE[bytes[i]!]!;
      break;
    case 'I64': {
      const values = new BigInt64Array(buffer);
      for (let i = 0; i < count; i++) out[i] = Number(values[i]);
      break;
    }
    case 'U64': {
      const values = new BigUint64Array(buffer);
      for (let i = 0; i < count; i++) out[i] = Number(values[i]);
      break;
    }
    case 'I32': out.set(new Int32Array(buffer)); break;
    case 'U32': out.set(new Uint32Array(buffer)); break;
    case 'I16': out.set(new Int16Array(buffer)); break;
    case 'U16': out.set(new Uint16Array(buffer)); break;
    case 'I8': out.set(new Int8Array(buffer)); break;
    case 'U8': out.set(new Uint8Array(buffer)); break;
    case 'BOOL':
      for (let i = 0; i < count; i++) out[i] = bytes[i] ? 1 : 0;
      break;
    default:
      throw new Error(undecodableReason(dtype));
  }
  return out;
}
