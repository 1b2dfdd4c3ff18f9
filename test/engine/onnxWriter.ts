/**
 * A minimal protobuf and ONNX writer for tests: the dtype, typed-field, external-data and
 * malformed models no producer on this machine writes. It is written from onnx.proto and the
 * protobuf encoding guide, independently of the reader, so the two check each other.
 */

/** TensorProto.DataType codes (onnx.proto). */
export const DataType = {
  FLOAT: 1, UINT8: 2, INT8: 3, UINT16: 4, INT16: 5, INT32: 6, INT64: 7, STRING: 8, BOOL: 9, FLOAT16: 10,
  DOUBLE: 11, UINT32: 12, UINT64: 13, COMPLEX64: 14, COMPLEX128: 15, BFLOAT16: 16, FLOAT8E4M3FN: 17, FLOAT8E5M2: 19, INT4: 22,
} as const;

const VARINT = 0;
const FIXED64 = 1;
const LENGTH_DELIMITED = 2;
const FIXED32 = 5;

/** A varint; negative numbers are written as 64-bit two's complement (ten bytes), as for int64 and int32. */
export function varint(value: number | bigint): Buffer {
  let rest = BigInt.asUintN(64, BigInt(value));
  const bytes: number[] = [];
  do {
    const low = Number(rest % 128n);
    rest /= 128n;
    bytes.push(rest > 0n ? low + 128 : low);
  } while (rest > 0n);
  return Buffer.from(bytes);
}

function key(field: number, wireType: number): Buffer {
  return varint(field * 8 + wireType);
}

export function varintField(field: number, value: number | bigint): Buffer {
  return Buffer.concat([key(field, VARINT), varint(value)]);
}

/** The tag and length of a length-delimited field whose `length` payload bytes are written separately. */
export function lengthDelimitedHead(field: number, length: number | bigint): Buffer {
  return Buffer.concat([key(field, LENGTH_DELIMITED), varint(length)]);
}

/** A tag alone, with any wire type code (0-7), for malformed files. */
export function rawKey(field: number, wireType: number): Buffer {
  return key(field, wireType);
}

export function bytesField(field: number, payload: Buffer | string | readonly Buffer[]): Buffer {
  const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.isBuffer(payload) ? payload : Buffer.concat(payload);
  return Buffer.concat([key(field, LENGTH_DELIMITED), varint(bytes.length), bytes]);
}

export function float32Field(field: number, value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeFloatLE(value);
  return Buffer.concat([key(field, FIXED32), bytes]);
}

export function float64Field(field: number, value: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeDoubleLE(value);
  return Buffer.concat([key(field, FIXED64), bytes]);
}

/** Little-endian element bytes for raw_data and external files. */
export const le = {
  f32: (...values: number[]): Buffer => Buffer.from(new Float32Array(values).buffer),
  f64: (...values: number[]): Buffer => Buffer.from(new Float64Array(values).buffer),
  i64: (...values: bigint[]): Buffer => Buffer.from(new BigInt64Array(values).buffer),
  u64: (...values: bigint[]): Buffer => Buffer.from(new BigUint64Array(values).buffer),
  i32: (...values: number[]): Buffer => Buffer.from(new Int32Array(values).buffer),
  u32: (...values: number[]): Buffer => Buffer.from(new Uint32Array(values).buffer),
  i16: (...values: number[]): Buffer => Buffer.from(new Int16Array(values).buffer),
  u16: (...values: number[]): Buffer => Buffer.from(new Uint16Array(values).buffer),
  i8: (...values: number[]): Buffer => Buffer.from(new Int8Array(values).buffer),
  u8: (...values: number[]): Buffer => Buffer.from(values),
};

export interface TensorSpec {
  readonly name?: string;
  readonly dataType: number;
  readonly dims: readonly (number | bigint)[];
  readonly raw?: Buffer;
  readonly floatData?: readonly number[];
  readonly int32Data?: readonly number[];
  readonly int64Data?: readonly bigint[];
  readonly doubleData?: readonly number[];
  readonly uint64Data?: readonly bigint[];
  readonly stringData?: readonly string[];
  /** Typed fields as one packed field (the default, as onnx.proto declares them) or one field per value. */
  readonly packed?: boolean;
  /** external_data entries, written as given; data_location becomes EXTERNAL unless `dataLocation` says otherwise. */
  readonly external?: readonly [string, string][];
  readonly dataLocation?: number;
  /** Further fields appended as they are (segments, malformed fields). */
  readonly extra?: readonly Buffer[];
}

/** TensorProto field numbers. */
const T = { dims: 1, dataType: 2, floatData: 4, int32Data: 5, stringData: 6, int64Data: 7, name: 8, rawData: 9, doubleData: 10, uint64Data: 11, externalData: 13, dataLocation: 14 };

export function tensor(spec: TensorSpec): Buffer {
  const fields: Buffer[] = spec.dims.map((size) => varintField(T.dims, size));
  fields.push(varintField(T.dataType, spec.dataType));
  if (spec.name !== undefined) fields.push(bytesField(T.name, spec.name));
  const packed = spec.packed ?? true;
  const varints = (field: number, values: readonly (number | bigint)[]): void => {
    if (packed) fields.push(bytesField(field, values.map((value) => varint(value))));
    else fields.push(...values.map((value) => varintField(field, value)));
  };
  if (spec.floatData) {
    if (packed) fields.push(bytesField(T.floatData, le.f32(...spec.floatData)));
    else fields.push(...spec.floatData.map((value) => float32Field(T.floatData, value)));
  }
  if (spec.doubleData) {
    if (packed) fields.push(bytesField(T.doubleData, le.f64(...spec.doubleData)));
    else fields.push(...spec.doubleData.map((value) => float64Field(T.doubleData, value)));
  }
  if (spec.int32Data) varints(T.int32Data, spec.int32Data);
  if (spec.int64Data) varints(T.int64Data, spec.int64Data);
  if (spec.uint64Data) varints(T.uint64Data, spec.uint64Data);
  for (const text of spec.stringData ?? []) fields.push(bytesField(T.stringData, text));
  if (spec.raw) fields.push(bytesField(T.rawData, spec.raw));
  for (const [entryKey, value] of spec.external ?? []) fields.push(bytesField(T.externalData, [bytesField(1, entryKey), bytesField(2, value)]));
  const location = spec.dataLocation ?? (spec.external ? 1 : undefined);
  if (location !== undefined) fields.push(varintField(T.dataLocation, location));
  fields.push(...(spec.extra ?? []));
  return Buffer.concat(fields);
}

export interface NodeSpec {
  readonly opType: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly name?: string;
  readonly domain?: string;
  /** Encoded AttributeProto messages. */
  readonly attributes?: readonly Buffer[];
}

export function node(spec: NodeSpec): Buffer {
  return Buffer.concat([
    ...spec.inputs.map((input) => bytesField(1, input)),
    ...spec.outputs.map((output) => bytesField(2, output)),
    ...(spec.name !== undefined ? [bytesField(3, spec.name)] : []),
    bytesField(4, spec.opType),
    ...(spec.domain !== undefined ? [bytesField(7, spec.domain)] : []),
    ...(spec.attributes ?? []).map((attribute) => bytesField(5, attribute)),
  ]);
}

/** AttributeProto types (onnx.proto AttributeType). */
const ATTRIBUTE_INT = 2;
const ATTRIBUTE_GRAPH = 5;

export function intAttribute(name: string, value: number): Buffer {
  return Buffer.concat([bytesField(1, name), varintField(3, value), varintField(20, ATTRIBUTE_INT)]);
}

export function graphAttribute(name: string, graphBytes: Buffer): Buffer {
  return Buffer.concat([bytesField(1, name), bytesField(6, graphBytes), varintField(20, ATTRIBUTE_GRAPH)]);
}

/** A ValueInfoProto of a tensor; dimensions are sizes or symbolic names. */
export function valueInfo(name: string, elemType: number, dims: readonly (number | string)[]): Buffer {
  const dimensions = dims.map((size) => bytesField(1, typeof size === 'number' ? varintField(1, size) : bytesField(2, size)));
  const tensorType = Buffer.concat([varintField(1, elemType), bytesField(2, dimensions)]);
  return Buffer.concat([bytesField(1, name), bytesField(2, bytesField(1, tensorType))]);
}

export interface GraphSpec {
  readonly name?: string;
  readonly nodes?: readonly Buffer[];
  readonly initializers?: readonly Buffer[];
  readonly inputs?: readonly Buffer[];
  readonly outputs?: readonly Buffer[];
  readonly extra?: readonly Buffer[];
}

export function graph(spec: GraphSpec): Buffer {
  return Buffer.concat([
    ...(spec.nodes ?? []).map((entry) => bytesField(1, entry)),
    bytesField(2, spec.name ?? 'test'),
    ...(spec.initializers ?? []).map((entry) => bytesField(5, entry)),
    ...(spec.inputs ?? []).map((entry) => bytesField(11, entry)),
    ...(spec.outputs ?? []).map((entry) => bytesField(12, entry)),
    ...(spec.extra ?? []),
  ]);
}

export interface ModelSpec {
  readonly irVersion?: number;
  readonly producerName?: string;
  readonly producerVersion?: string;
  readonly docString?: string;
  readonly opsets?: readonly [string, number][];
  readonly metadata?: readonly [string, string][];
  readonly graph: Buffer;
}

export function model(spec: ModelSpec): Buffer {
  return Buffer.concat([
    varintField(1, spec.irVersion ?? 8),
    ...(spec.producerName !== undefined ? [bytesField(2, spec.producerName)] : []),
    ...(spec.producerVersion !== undefined ? [bytesField(3, spec.producerVersion)] : []),
    ...(spec.docString !== undefined ? [bytesField(6, spec.docString)] : []),
    bytesField(7, spec.graph),
    ...(spec.opsets ?? [['', 14]]).map(([domain, version]) => bytesField(8, [bytesField(1, domain), varintField(2, version)])),
    ...(spec.metadata ?? []).map(([entryKey, value]) => bytesField(14, [bytesField(1, entryKey), bytesField(2, value)])),
  ]);
}

/** A model whose graph holds only the given initializers (enough for reader tests). */
export function modelOf(initializers: readonly Buffer[], spec: Omit<ModelSpec, 'graph'> = {}): Buffer {
  return model({ ...spec, graph: graph({ initializers }) });
}
