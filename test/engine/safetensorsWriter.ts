/**
 * A minimal safetensors writer for tests: valid files laid out as the reference writer does
 * (header padded with spaces to a multiple of 8, tensors back to back), and raw building
 * blocks for the malformed files the reader must refuse.
 */

export interface TensorSpec {
  readonly name: string;
  /** A dtype name as written into the header; not checked, so tests can write unknown ones. */
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly data: Buffer;
}

const HEADER_ALIGNMENT = 8;

/** The JSON header for `tensors` stored back to back in the order given. */
function headerFor(tensors: readonly TensorSpec[], metadata?: Record<string, string>): Record<string, unknown> {
  const header: Record<string, unknown> = {};
  if (metadata) header['__metadata__'] = metadata;
  let offset = 0;
  for (const tensor of tensors) {
    header[tensor.name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, offset + tensor.data.length] };
    offset += tensor.data.length;
  }
  return header;
}

export function encodeSafetensors(tensors: readonly TensorSpec[], metadata?: Record<string, string>): Buffer {
  return encodeRaw(JSON.stringify(headerFor(tensors, metadata)), Buffer.concat(tensors.map((tensor) => tensor.data)));
}

/**
 * A file from any header text or bytes and data. The header is padded to the alignment with
 * spaces; `declaredLength` replaces the true length in the 8-byte prefix.
 */
export function encodeRaw(header: string | Buffer, data: Buffer = Buffer.alloc(0), declaredLength?: bigint): Buffer {
  const headerBytes = typeof header === 'string' ? Buffer.from(header, 'utf8') : header;
  const padding = (HEADER_ALIGNMENT - (headerBytes.length % HEADER_ALIGNMENT)) % HEADER_ALIGNMENT;
  const padded = Buffer.concat([headerBytes, Buffer.alloc(padding, 0x20)]);
  return Buffer.concat([lengthPrefix(declaredLength ?? BigInt(padded.length)), padded, data]);
}

export function lengthPrefix(length: bigint): Buffer {
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(length);
  return prefix;
}

// Element encoders: little-endian bytes for the values given.

export function float64(...values: number[]): Buffer {
  return Buffer.from(new Float64Array(values).buffer);
}

export function float32(...values: number[]): Buffer {
  return Buffer.from(new Float32Array(values).buffer);
}

/** Raw 16-bit codes, for F16 and BF16 whose bit patterns are the point of the test. */
export function uint16Codes(...codes: number[]): Buffer {
  const bytes = Buffer.alloc(codes.length * 2);
  codes.forEach((code, i) => bytes.writeUInt16LE(code, i * 2));
  return bytes;
}

export function bytes(...values: number[]): Buffer {
  return Buffer.from(values);
}

export function int64(...values: bigint[]): Buffer {
  return Buffer.from(new BigInt64Array(values).buffer);
}

export function uint64(...values: bigint[]): Buffer {
  return Buffer.from(new BigUint64Array(values).buffer);
}

export function int32(...values: number[]): Buffer {
  return Buffer.from(new Int32Array(values).buffer);
}

export function uint32(...values: number[]): Buffer {
  return Buffer.from(new Uint32Array(values).buffer);
}

export function int16(...values: number[]): Buffer {
  return Buffer.from(new Int16Array(values).buffer);
}

export function int8(...values: number[]): Buffer {
  return Buffer.from(new Int8Array(values).buffer);
}
