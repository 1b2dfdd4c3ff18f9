import { CheckpointError } from '../errors';
import { FileSource, type ByteSource } from '../io/byteSource';
import { AffineTensor } from './affineTensor';
import type { Checkpoint, FormatReader } from './checkpoint';
import { DTYPE_BYTES, type DType } from './dtype';
import { FlatBuffer, type FlatTable, type FlatTableVector } from './flatbuffers';
import { StoredTensor, elementCountOf, type Tensor } from './tensor';

/**
 * TensorFlow Lite flatbuffers (schema: tensorflow/lite/schema/schema.fbs, identifier
 * "TFL3"). A model holds subgraphs of tensors; a tensor with a non-empty buffer is a
 * constant (a weight), the others are activations and are not listed. A buffer's bytes lie
 * in its `data` vector inside the flatbuffer or, in models over 2 GB, at `offset`/`size`
 * from the start of the file, after the flatbuffer. Only the flatbuffer's tables are read
 * when opening; weights are read when their values are asked for.
 *
 * Integer tensors with quantization parameters (int8, uint8, int16 and the int32/int64
 * biases of integer models) are delivered dequantized as float32 through AffineTensor,
 * per tensor or per channel along `quantized_dimension`. Sparse tensors, custom
 * quantization, int4 and types without a real-valued reading are left out with a warning.
 */

const FILE_IDENTIFIER = 'TFL3';
const IDENTIFIER_AT = 4;
/** Ranks beyond this are refused: TFLite kernels handle at most 6 dimensions. */
const MAX_RANK = 32;
/** A buffer's `offset` is only meaningful above 1 (the schema's words). */
const FIRST_EXTERNAL_OFFSET = 2;
const BUILTIN_CUSTOM = 32;
const MIN_RUNTIME_VERSION = 'min_runtime_version';
/** The min_runtime_version buffer holds a short version string padded with zeros. */
const MAX_VERSION_STRING_BYTES = 64;

/** Field slots of the schema's tables, in declaration order (a union takes two slots). */
const MODEL = { version: 0, operatorCodes: 1, subgraphs: 2, description: 3, buffers: 4, metadata: 6 } as const;
const SUBGRAPH = { tensors: 0, name: 4 } as const;
const TENSOR = { shape: 0, type: 1, buffer: 2, name: 3, quantization: 4, sparsity: 6 } as const;
const QUANTIZATION = { scale: 2, zeroPoint: 3, detailsType: 4, quantizedDimension: 6 } as const;
const BUFFER = { data: 0, offset: 1, size: 2 } as const;
const METADATA = { name: 0, buffer: 1 } as const;
const OPERATOR_CODE = { deprecatedBuiltinCode: 0, customCode: 1, version: 2, builtinCode: 3 } as const;

/** TensorType codes with a DType; the quantizable ones are dequantized when they carry a scale. */
const TENSOR_TYPES: ReadonlyMap<number, { readonly name: string; readonly dtype: DType; readonly quantizable: boolean }> = new Map([
  [0, { name: 'FLOAT32', dtype: 'F32', quantizable: false }],
  [1, { name: 'FLOAT16', dtype: 'F16', quantizable: false }],
  [2, { name: 'INT32', dtype: 'I32', quantizable: true }],
  [3, { name: 'UINT8', dtype: 'U8', quantizable: true }],
  [4, { name: 'INT64', dtype: 'I64', quantizable: true }],
  [6, { name: 'BOOL', dtype: 'BOOL', quantizable: false }],
  [7, { name: 'INT16', dtype: 'I16', quantizable: true }],
  [9, { name: 'INT8', dtype: 'I8', quantizable: true }],
  [10, { name: 'FLOAT64', dtype: 'F64', quantizable: false }],
  [12, { name: 'UINT64', dtype: 'U64', quantizable: false }],
  [15, { name: 'UINT32', dtype: 'U32', quantizable: false }],
  [16, { name: 'UINT16', dtype: 'U16', quantizable: false }],
]);

/** TensorType codes that hold data this tool does not read, for the warning. */
const UNREAD_TENSOR_TYPES: ReadonlyMap<number, string> = new Map([
  [5, 'STRING'], [8, 'COMPLEX64'], [11, 'COMPLEX128'], [13, 'RESOURCE'], [14, 'VARIANT'], [17, 'INT4'],
]);

/** BuiltinOperator names by code, from the schema; later codes are shown by number. */
const BUILTIN_OPERATORS: readonly string[] = [
  ...(
    'ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP FLOOR ' +
    'FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION ' +
    'LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH ' +
    'CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER ' +
    'BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE ' +
    'BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ' +
    'ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE ' +
    'TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK ' +
    'LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD ' +
    'RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N ' +
    'GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE ' +
    'NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL ' +
    'PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS HASHTABLE ' +
    'HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ' +
    'ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU ' +
    'DYNAMIC_UPDATE_SLICE RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2 ' +
    'UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT'
  ).split(' '),
  ...(
    'LOGISTIC ADD DIVIDE MULTIPLY MAXIMUM RESHAPE CLAMP CONCATENATE BROADCAST_IN_DIM CONVOLUTION SLICE CUSTOM_CALL ' +
    'REDUCE ABS AND COSINE EXPONENTIAL FLOOR LOG MINIMUM NEGATE OR POWER REMAINDER RSQRT SELECT SUBTRACT TANH SCATTER ' +
    'COMPARE CONVERT DYNAMIC_SLICE DYNAMIC_UPDATE_SLICE PAD IOTA DOT_GENERAL REDUCE_WINDOW SORT WHILE GATHER TRANSPOSE'
  )
    .split(' ')
    .map((name) => `STABLEHLO_${name}`),
  'DILATE',
  'STABLEHLO_RNG_BIT_GENERATOR',
  'REDUCE_WINDOW',
];

export const tfliteReader: FormatReader = {
  name: 'TFLite',
  sniff: (filePath, head) =>
    filePath.toLowerCase().endsWith('.tflite') ||
    head.toString('latin1', IDENTIFIER_AT, IDENTIFIER_AT + FILE_IDENTIFIER.length) === FILE_IDENTIFIER,
  open: openTflite,
};

async function openTflite(filePath: string): Promise<Checkpoint> {
  const file = await FileSource.open(filePath);
  try {
    const flatbuffer = await FlatBuffer.open(file, FILE_IDENTIFIER);
    const model = await flatbuffer.root();
    const buffers = new BufferTable(file, await model.tables(MODEL.buffers, 'the buffer list'));
    const warnings: string[] = [];
    const tensors = await listTensors(model, buffers, file, warnings);
    const metadata = await readMetadata(model, buffers);
    return { path: filePath, format: 'tflite', metadata, tensors, warnings, close: () => file.close() };
  } catch (error) {
    await file.close();
    throw error;
  }
}

/** The model's buffers, each resolved to its bytes once and only when a tensor or metadata entry uses it. */
class BufferTable {
  private readonly resolved = new Map<number, Promise<ByteSource | undefined>>();

  constructor(
    private readonly file: FileSource,
    private readonly buffers: FlatTableVector | undefined,
  ) {}

  /** The bytes of buffer `index`, or undefined when it holds none. */
  data(index: number, user: string): Promise<ByteSource | undefined> {
    let data = this.resolved.get(index);
    if (data === undefined) {
      data = this.resolve(index, user);
      this.resolved.set(index, data);
    }
    return data;
  }

  private async resolve(index: number, user: string): Promise<ByteSource | undefined> {
    const count = this.buffers?.length ?? 0;
    if (!this.buffers || index >= count) throw new CheckpointError(this.file.name, `${user} refers to buffer ${index}, but the model has ${count} buffers`);
    const buffer = await this.buffers.get(index);
    const offset = buffer.uint64(BUFFER.offset);
    if (offset >= FIRST_EXTERNAL_OFFSET) {
      const size = buffer.uint64(BUFFER.size);
      if (offset + size > this.file.size) {
        throw new CheckpointError(
          this.file.name,
          `buffer ${index} (used by ${user}) lies at bytes ${offset}..${offset + size}, past the end of the ${this.file.size}-byte file: truncated?`,
        );
      }
      return size === 0 ? undefined : this.file.slice(offset, size);
    }
    const data = await buffer.vector(BUFFER.data, 1, `the data of buffer ${index}`);
    return data === undefined || data.length === 0 ? undefined : this.file.slice(data.start, data.length);
  }
}

async function listTensors(model: FlatTable, buffers: BufferTable, file: FileSource, warnings: string[]): Promise<Tensor[]> {
  const subgraphs = await model.tables(MODEL.subgraphs, 'the subgraph list');
  const tensors: Tensor[] = [];
  const names = new Set<string>();
  for (let s = 0; s < (subgraphs?.length ?? 0); s++) {
    const subgraph = await subgraphs!.get(s);
    // The first subgraph is the model; others (loop bodies, branches) get their name as a prefix.
    const prefix = s === 0 ? '' : `${(await subgraph.string(SUBGRAPH.name, `the name of subgraph ${s}`)) || `subgraph${s}`}/`;
    const entries = await subgraph.tables(SUBGRAPH.tensors, `the tensor list of subgraph ${s}`);
    for (let t = 0; t < (entries?.length ?? 0); t++) {
      const entry = await entries!.get(t);
      const bufferIndex = entry.uint32(TENSOR.buffer);
      // Buffer 0 is the schema's always-empty sentinel: activations point at it.
      if (bufferIndex === 0) continue;
      let name = `${prefix}${(await entry.string(TENSOR.name, `the name of tensor ${t} of subgraph ${s}`)) || `tensor${t}`}`;
      const data = await buffers.data(bufferIndex, `tensor "${name}"`);
      if (data === undefined) continue;
      // Names are for debugging in TFLite and may repeat; listings need them unique.
      if (names.has(name)) name = `${name}#${t}`;
      names.add(name);
      const tensor = await constantTensor(entry, name, data, file, warnings);
      if (tensor) tensors.push(tensor);
    }
  }
  return tensors;
}

/** The tensor over `data`, or undefined (with a warning) when this tool cannot read it. */
async function constantTensor(entry: FlatTable, name: string, data: ByteSource, file: FileSource, warnings: string[]): Promise<Tensor | undefined> {
  const typeCode = entry.int8(TENSOR.type);
  const type = TENSOR_TYPES.get(typeCode);
  if (type === undefined) {
    const typeName = UNREAD_TENSOR_TYPES.get(typeCode) ?? `type code ${typeCode}`;
    warnings.push(`tensor "${name}" holds ${typeName} values, which this tool does not read; it is left out`);
    return undefined;
  }
  if (entry.has(TENSOR.sparsity)) {
    warnings.push(`tensor "${name}" is stored sparse, which this tool does not read; it is left out`);
    return undefined;
  }
  const shape = (await entry.scalars(TENSOR.shape, 'int32', MAX_RANK, `the shape of tensor "${name}"`)) ?? [];
  const elementCount = elementCountOf(shape, `tensor "${name}"`, file.name);
  const expectedBytes = elementCount * DTYPE_BYTES[type.dtype];
  if (data.size !== expectedBytes) {
    throw new CheckpointError(
      file.name,
      `tensor "${name}" of shape [${shape.join(', ')}] and type ${type.name} needs ${expectedBytes} bytes, but its buffer holds ${data.size}`,
    );
  }
  const codes = new StoredTensor(name, type.dtype, shape, data);
  const quantization = type.quantizable ? await entry.table(TENSOR.quantization, `the quantization of tensor "${name}"`) : undefined;
  if (quantization === undefined) return codes;
  const scale = await quantization.scalars(QUANTIZATION.scale, 'float32', Math.max(1, elementCount), `the scales of tensor "${name}"`);
  if (scale === undefined || scale.length === 0) return codes;
  if (quantization.uint8(QUANTIZATION.detailsType) !== 0) {
    warnings.push(`tensor "${name}" uses custom quantization, which this tool does not decode; it is left out`);
    return undefined;
  }
  const zeroPoint =
    (await quantization.scalars(QUANTIZATION.zeroPoint, 'int64', scale.length, `the zero points of tensor "${name}"`)) ??
    scale.map(() => 0);
  const perChannel = scale.length > 1;
  return new AffineTensor(
    name,
    'F32',
    codes,
    { scale, zeroPoint, offset: scale.map(() => 0), axis: quantization.int32(QUANTIZATION.quantizedDimension) },
    { scheme: `${type.name.toLowerCase()} ${perChannel ? 'per-channel' : 'per-tensor'}`, bitsPerValue: DTYPE_BYTES[type.dtype] * 8 },
    file.name,
  );
}

async function readMetadata(model: FlatTable, buffers: BufferTable): Promise<Record<string, unknown>> {
  const metadata: Record<string, unknown> = { version: model.uint32(MODEL.version) };
  const description = await model.string(MODEL.description, 'the model description');
  if (description) metadata['description'] = description;
  const subgraphs = await model.tables(MODEL.subgraphs, 'the subgraph list');
  metadata['subgraphs'] = subgraphs?.length ?? 0;

  const entries = await model.tables(MODEL.metadata, 'the metadata list');
  const names: string[] = [];
  for (let i = 0; i < (entries?.length ?? 0); i++) {
    const entry = await entries!.get(i);
    const name = (await entry.string(METADATA.name, `the name of metadata entry ${i}`)) ?? '';
    names.push(name);
    if (name === MIN_RUNTIME_VERSION) {
      const version = await readVersionString(await buffers.data(entry.uint32(METADATA.buffer), `metadata "${name}"`));
      if (version) metadata['minRuntimeVersion'] = version;
    }
  }
  if (names.length > 0) metadata['metadata'] = names;

  const codes = await model.tables(MODEL.operatorCodes, 'the operator code list');
  const operators: string[] = [];
  for (let i = 0; i < (codes?.length ?? 0); i++) operators.push(await describeOperator(await codes!.get(i), i));
  if (operators.length > 0) metadata['operators'] = operators;
  return metadata;
}

/** "CONV_2D v3", or a custom operator's own name. */
async function describeOperator(code: FlatTable, index: number): Promise<string> {
  // Old files set only the byte-sized code; newer ones set both, or only the wide one past 127.
  const builtin = Math.max(code.int8(OPERATOR_CODE.deprecatedBuiltinCode), code.int32(OPERATOR_CODE.builtinCode));
  const version = code.int32(OPERATOR_CODE.version, 1);
  const custom = await code.string(OPERATOR_CODE.customCode, `the custom code of operator code ${index}`);
  const name = builtin === BUILTIN_CUSTOM && custom ? custom : BUILTIN_OPERATORS[builtin] ?? `BUILTIN_${builtin}`;
  return `${name} v${version}`;
}

/** The runtime version string, when the buffer holds a short printable one. */
async function readVersionString(data: ByteSource | undefined): Promise<string | undefined> {
  if (data === undefined || data.size > MAX_VERSION_STRING_BYTES) return undefined;
  const text = (await data.read(0, data.size)).toString('latin1').replace(/\0+$/, '');
  return /^[\x20-\x7e]+$/.test(text) ? text : undefined;
}
