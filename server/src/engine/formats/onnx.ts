import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, FileChangedError } from '../errors';
import { BufferSource, FileSource, RangeCheckedSource, type ByteSource } from '../io/byteSource';
import type { Checkpoint, FormatReader } from './checkpoint';
import { DTYPE_BYTES, type DType } from './dtype';
import {
  MAX_VARINT_BYTES,
  ProtoReader,
  decodeVarint,
  int32OfVarint,
  int64OfVarint,
  packedVarints,
  unsignedOf,
  type ProtoField,
  type ProtoMessage,
  type VarintParts,
  type WireType,
} from './protobuf';
import { StoredTensor, elementCountOf } from './tensor';

/**
 * ONNX models (`.onnx`): a protobuf ModelProto whose graph holds the weights as initializers.
 * The file is walked with the streaming protobuf reader: for each initializer only its header
 * (name, type, dims) is decoded and the place of its values remembered, so a model of several
 * gigabytes lists with bounded memory. Values come from
 *  - raw_data: little-endian bytes inside the file, read in place;
 *  - the typed fields (float_data, int32_data, int64_data, double_data, uint64_data), packed or
 *    not; float16, bfloat16 and the small integers travel in int32_data, as the spec says;
 *  - external data: `location`/`offset`/`length` naming another file beside the model.
 * String tensors, segmented tensors, sparse initializers, element types the tool does not model
 * (4-bit, FNUZ float8) and initializers inside subgraphs (If/Loop bodies) are left out with a
 * warning. Quantized graphs list their int8/uint8 initializers as stored: the scale and zero
 * point are separate initializers, and nothing is dequantized here.
 *
 * The graph itself (nodes, inputs, outputs, where each initializer lies) is exported for the
 * ONNX executor by `readOnnxGraph`.
 */

/** Field numbers of onnx.proto, for this reader and for code that edits a model's bytes. */
export const ONNX_FIELDS = {
  model: { irVersion: 1, producerName: 2, producerVersion: 3, domain: 4, modelVersion: 5, docString: 6, graph: 7, opsetImport: 8, metadataProps: 14 },
  graph: { node: 1, name: 2, initializer: 5, input: 11, output: 12, sparseInitializer: 15 },
  node: { input: 1, output: 2, name: 3, opType: 4, attribute: 5, domain: 7 },
  attribute: { graph: 6, graphs: 11 },
  tensor: {
    dims: 1, dataType: 2, segment: 3, floatData: 4, int32Data: 5, stringData: 6, int64Data: 7, name: 8,
    rawData: 9, doubleData: 10, uint64Data: 11, externalData: 13, dataLocation: 14,
  },
  valueInfo: { name: 1, type: 2 },
  type: { tensorType: 1 },
  tensorType: { elemType: 1, shape: 2 },
  shape: { dim: 1 },
  dimension: { value: 1, param: 2 },
  entry: { key: 1, value: 2 },
  opset: { domain: 1, version: 2 },
} as const;

const F = ONNX_FIELDS;

/** TensorProto.DataType codes, by position. */
const ONNX_TYPE_NAMES = [
  'UNDEFINED', 'FLOAT', 'UINT8', 'INT8', 'UINT16', 'INT16', 'INT32', 'INT64', 'STRING', 'BOOL', 'FLOAT16', 'DOUBLE',
  'UINT32', 'UINT64', 'COMPLEX64', 'COMPLEX128', 'BFLOAT16', 'FLOAT8E4M3FN', 'FLOAT8E4M3FNUZ', 'FLOAT8E5M2',
  'FLOAT8E5M2FNUZ', 'UINT4', 'INT4', 'FLOAT4E2M1', 'FLOAT8E8M0',
];

export const ONNX_FLOAT = 1;
const ONNX_STRING = 8;

/** The ONNX element types this tool reads, with the DType each is read as. */
const ONNX_DTYPES: ReadonlyMap<number, DType> = new Map<number, DType>([
  [ONNX_FLOAT, 'F32'], [2, 'U8'], [3, 'I8'], [4, 'U16'], [5, 'I16'], [6, 'I32'], [7, 'I64'], [9, 'BOOL'], [10, 'F16'],
  [11, 'F64'], [12, 'U32'], [13, 'U64'], [14, 'C64'], [15, 'C128'], [16, 'BF16'], [17, 'F8_E4M3'], [19, 'F8_E5M2'],
]);

export function onnxTypeName(code: number): string {
  return ONNX_TYPE_NAMES[code] ?? `data type ${code}`;
}

export type TypedFieldName = 'float_data' | 'int32_data' | 'int64_data' | 'double_data' | 'uint64_data';

interface TypedFieldSpec {
  readonly name: TypedFieldName;
  readonly number: number;
  /** How one value is encoded; a packed field is a length-delimited run of them. */
  readonly encoding: 'fixed32' | 'fixed64' | 'varint';
  /** The element types whose values the spec puts in this field. */
  readonly dtypes: ReadonlySet<DType>;
}

const TYPED_FIELDS: readonly TypedFieldSpec[] = [
  { name: 'float_data', number: F.tensor.floatData, encoding: 'fixed32', dtypes: new Set<DType>(['F32', 'C64']) },
  {
    name: 'int32_data',
    number: F.tensor.int32Data,
    encoding: 'varint',
    dtypes: new Set<DType>(['I32', 'I16', 'I8', 'U16', 'U8', 'BOOL', 'F16', 'BF16', 'F8_E4M3', 'F8_E5M2']),
  },
  { name: 'int64_data', number: F.tensor.int64Data, encoding: 'varint', dtypes: new Set<DType>(['I64']) },
  { name: 'double_data', number: F.tensor.doubleData, encoding: 'fixed64', dtypes: new Set<DType>(['F64', 'C128']) },
  { name: 'uint64_data', number: F.tensor.uint64Data, encoding: 'varint', dtypes: new Set<DType>(['U32', 'U64']) },
];

const FIXED_WIDTH = { fixed32: 4, fixed64: 8 } as const;

/** TensorProto.DataLocation. */
const LOCATION_DEFAULT = 0;
const LOCATION_EXTERNAL = 1;

/** Names and op types are short; one this long is corruption. */
const MAX_NAME_BYTES = 64 * 1024;
/** Model texts (doc strings, metadata values) longer than this are skipped with a warning. */
const MAX_TEXT_BYTES = 16 * 1024 * 1024;
const MAX_RANK = 64;
/**
 * Nodes, names, initializers and value infos kept per model. Large real graphs hold a few
 * hundred thousand; the limit keeps a file of millions of empty entries from exhausting memory.
 */
const MAX_GRAPH_ENTRIES = 4_000_000;

const ONNX_EXTENSION = '.onnx';

export const onnxReader: FormatReader = {
  name: 'ONNX',
  sniff: (filePath, head) => filePath.toLowerCase().endsWith(ONNX_EXTENSION) && startsLikeModelProto(head),
  open: openOnnx,
};

/** Wire types of the ModelProto fields a model starts with. */
const MODEL_FIELD_WIRE_TYPES: ReadonlyMap<number, WireType> = new Map<number, WireType>([
  [F.model.irVersion, 'varint'],
  [F.model.producerName, 'bytes'],
  [F.model.producerVersion, 'bytes'],
  [F.model.domain, 'bytes'],
  [F.model.modelVersion, 'varint'],
  [F.model.docString, 'bytes'],
  [F.model.graph, 'bytes'],
  [F.model.opsetImport, 'bytes'],
  [F.model.metadataProps, 'bytes'],
]);

/** The first field is a ModelProto field with its schema's wire type (writers start with ir_version). */
function startsLikeModelProto(head: Buffer): boolean {
  const parts: VarintParts = { low: 0, high: 0, next: 0 };
  if (!decodeVarint(head, 0, Math.min(head.length, MAX_VARINT_BYTES), parts)) return false;
  const tag = unsignedOf(parts);
  const expected = MODEL_FIELD_WIRE_TYPES.get(Math.floor(tag / 8));
  const wireType = ({ 0: 'varint', 2: 'bytes' } as Record<number, WireType>)[tag % 8];
  return expected !== undefined && expected === wireType;
}

// ---------------------------------------------------------------------------------------
// What the reader finds

export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/** Where an initializer's values lie. */
export type InitializerStorage =
  /** raw_data inside the model file. */
  | { readonly kind: 'raw'; readonly offset: number; readonly length: number }
  /** One of the typed repeated fields inside the model file. */
  | { readonly kind: 'typed'; readonly field: TypedFieldName }
  /** Another file; `file` is resolved, `location` as written in the model. */
  | { readonly kind: 'external'; readonly file: string; readonly location: string; readonly offset: number; readonly length: number }
  /** No values: the tensor has no elements. */
  | { readonly kind: 'empty' }
  /** Not read by this tool (strings, segments, 4-bit types...). */
  | { readonly kind: 'unsupported'; readonly reason: string };

export interface OnnxInitializer {
  readonly name: string;
  /** TensorProto.DataType code. */
  readonly dataType: number;
  /** The DType it is read as; undefined when the type is not one this tool models. */
  readonly dtype?: DType;
  readonly dims: readonly number[];
  /** The whole initializer field (tag, length and TensorProto) within the model file. */
  readonly field: ByteRange;
  readonly storage: InitializerStorage;
}

export interface OnnxNode {
  readonly name: string;
  readonly opType: string;
  readonly domain: string;
  /** Value names; an empty string marks an omitted optional input. */
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  /** It has a graph attribute (If, Loop, Scan bodies). */
  readonly hasSubgraph: boolean;
}

export interface OnnxValueInfo {
  readonly name: string;
  /** TensorProto.DataType code of a tensor value; undefined for other values or when not declared. */
  readonly elemType?: number;
  /** Each dimension: a size, a symbolic name, or undefined when unknown; undefined when no shape is declared. */
  readonly shape?: readonly (number | string | undefined)[];
}

export interface OnnxGraph {
  readonly path: string;
  readonly irVersion: number;
  /** Operator set versions by domain ("" is the default ONNX domain). */
  readonly opsets: ReadonlyMap<string, number>;
  readonly nodes: readonly OnnxNode[];
  readonly inputs: readonly OnnxValueInfo[];
  readonly outputs: readonly OnnxValueInfo[];
  /** In file order. */
  readonly initializers: ReadonlyMap<string, OnnxInitializer>;
  /** The ModelProto's graph field: tag at `start`, GraphProto bytes in [payloadStart, end). */
  readonly graphField: ByteRange & { readonly payloadStart: number };
  readonly modelSize: number;
  readonly warnings: readonly string[];
}

/**
 * Reads the graph of the model in `source` (named `modelPath`, which external data is resolved
 * against). Tensor values are not read.
 */
export async function readOnnxGraph(source: ByteSource, modelPath: string): Promise<OnnxGraph> {
  return (await parseModel(source, modelPath, true)).graph;
}

async function openOnnx(filePath: string): Promise<Checkpoint> {
  const file = await FileSource.open(filePath);
  try {
    const parsed = await parseModel(file, filePath, false);
    const tensors: StoredTensor[] = [];
    for (const entry of parsed.entries) {
      const storage = storageSource(entry, file, parsed.externalFiles);
      if (storage && entry.initializer.dtype) {
        tensors.push(new StoredTensor(entry.initializer.name, entry.initializer.dtype, entry.initializer.dims, storage));
      }
    }
    return {
      path: filePath,
      format: 'onnx',
      metadata: parsed.metadata,
      tensors,
      warnings: parsed.graph.warnings,
      close: () => file.close(),
    };
  } catch (error) {
    await file.close();
    throw error;
  }
}

/** The bytes behind an initializer's values, laid out as `dims` of its dtype; undefined when it is not read. */
function storageSource(entry: TensorEntry, model: ByteSource, externalFiles: ReadonlyMap<string, ExternalFile>): ByteSource | undefined {
  const { initializer, typed } = entry;
  const storage = initializer.storage;
  switch (storage.kind) {
    case 'raw':
      return model.slice(storage.offset, storage.length);
    case 'external':
      return externalFiles.get(storage.file)!.slice(storage.offset, storage.length);
    case 'empty':
      return new BufferSource(Buffer.alloc(0), model.name);
    case 'typed': {
      const data = typed.get(storage.field)!;
      const [only, ...more] = data.segments;
      // A single packed float_data or double_data run is already little-endian IEEE values.
      if (only?.packed && more.length === 0 && data.spec.encoding !== 'varint') return model.slice(only.offset, only.length);
      return new TypedFieldSource(model, initializer, data);
    }
    case 'unsupported':
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------
// Parsing

interface ParsedModel {
  readonly graph: OnnxGraph;
  readonly metadata: Record<string, unknown>;
  readonly entries: readonly TensorEntry[];
  readonly externalFiles: ReadonlyMap<string, ExternalFile>;
}

/** A run of one typed field: a packed payload, or consecutive unpacked fields (tags included). */
interface Segment {
  readonly offset: number;
  length: number;
  readonly packed: boolean;
}

interface TypedData {
  readonly spec: TypedFieldSpec;
  readonly segments: Segment[];
  /** Values counted exactly: every fixed-width value and every unpacked one. */
  exactValues: number;
  /** Bytes of packed varints, whose count is known only once decoded (1 to 10 bytes each). */
  packedVarintBytes: number;
}

interface TensorEntry {
  readonly initializer: OnnxInitializer;
  readonly typed: ReadonlyMap<TypedFieldName, TypedData>;
}

/** Everything a TensorProto header says, before it is checked. */
interface TensorHeader {
  name?: string;
  dataType: number;
  readonly dims: number[];
  raw?: ByteRange;
  readonly typed: Map<TypedFieldName, TypedData>;
  readonly external: [string, string][];
  dataLocation: number;
  segmented: boolean;
  strings: boolean;
}

class Parser {
  readonly warnings: string[] = [];
  private entries = 0;

  constructor(
    readonly reader: ProtoReader,
    readonly modelPath: string,
  ) {}

  fail(problem: string): never {
    throw new CheckpointError(this.modelPath, problem);
  }

  /** Counts one more kept entry against MAX_GRAPH_ENTRIES. */
  count(what: string): void {
    if (++this.entries > MAX_GRAPH_ENTRIES) this.fail(`more than ${MAX_GRAPH_ENTRIES} graph entries (at ${what}): not a model this tool reads`);
  }

  name(field: ProtoField): Promise<string> {
    return this.reader.string(field, MAX_NAME_BYTES);
  }

  /** A text that is only informative: skipped with a warning when oversized. */
  async text(field: ProtoField, what: string): Promise<string | undefined> {
    this.reader.expectWireType(field, 'bytes');
    if (field.length > MAX_TEXT_BYTES) {
      this.warnings.push(`${what} of ${field.length} bytes is longer than ${MAX_TEXT_BYTES} and is skipped`);
      return undefined;
    }
    return this.reader.string(field, MAX_TEXT_BYTES);
  }

  varint(field: ProtoField): bigint {
    this.reader.expectWireType(field, 'varint');
    return field.varint;
  }

  /** An int64 field that must fit a JavaScript number. */
  int64(field: ProtoField, what: string): number {
    const value = int64OfVarint(this.varint(field));
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) this.fail(`${what} ${value} is out of range`);
    return Number(value);
  }
}

async function parseModel(source: ByteSource, modelPath: string, withNodes: boolean): Promise<ParsedModel> {
  if (source.size === 0) throw new CheckpointError(modelPath, 'the file is empty');
  const parser: Parser = new Parser(new ProtoReader(source), modelPath);
  const { reader } = parser;
  const model = reader.root('ModelProto');
  let irVersion: number | undefined;
  const header: Record<string, unknown> = {};
  const opsets = new Map<string, number>();
  const props: [string, string][] = [];
  let graphField: ProtoField | undefined;
  for await (const field of reader.fields(model)) {
    switch (field.number) {
      case F.model.irVersion:
        irVersion = parser.int64(field, 'ir_version');
        break;
      case F.model.producerName:
      case F.model.producerVersion:
      case F.model.domain:
      case F.model.docString: {
        const key = MODEL_TEXT_KEYS.get(field.number)!;
        const value = await parser.text(field, `model ${key}`);
        if (value !== undefined && value !== '') header[key] = value;
        break;
      }
      case F.model.modelVersion:
        header['model_version'] = parser.int64(field, 'model_version');
        break;
      case F.model.graph:
        if (graphField) parser.fail('the model holds two graphs');
        graphField = field;
        break;
      case F.model.opsetImport: {
        const [domain, version] = await parseOpset(parser, reader.message(field, 'OperatorSetIdProto'));
        opsets.set(domain, version);
        break;
      }
      case F.model.metadataProps: {
        parser.count('metadata_props');
        const entry = await parseEntry(parser, reader.message(field, 'StringStringEntryProto'), 'metadata_props');
        if (entry) props.push(entry);
        break;
      }
    }
  }
  if (irVersion === undefined) parser.fail('no ir_version: not an ONNX model');
  if (!graphField) parser.fail('the model has no graph');
  const graph = await parseGraph(parser, reader.message(graphField, 'GraphProto'), withNodes);
  const externalFiles = await openExternalFiles(parser, graph.entries);

  const metadata = modelMetadata(parser, irVersion, header, opsets, props);
  return {
    graph: {
      path: modelPath,
      irVersion,
      opsets,
      nodes: graph.nodes,
      inputs: graph.inputs,
      outputs: graph.outputs,
      initializers: new Map(graph.entries.map((entry) => [entry.initializer.name, entry.initializer])),
      graphField: { start: graphField.start, payloadStart: graphField.offset, end: graphField.end },
      modelSize: source.size,
      warnings: parser.warnings,
    },
    metadata,
    entries: graph.entries,
    externalFiles,
  };
}

const MODEL_TEXT_KEYS: ReadonlyMap<number, string> = new Map([
  [F.model.producerName, 'producer_name'],
  [F.model.producerVersion, 'producer_version'],
  [F.model.domain, 'domain'],
  [F.model.docString, 'doc_string'],
]);

/**
 * The model's header fields, its opsets and its metadata_props as one record. metadata_props
 * keys sit at the top level (a `base_model` prop reads like a safetensors one); one that would
 * hide a header field is skipped with a warning.
 */
function modelMetadata(
  parser: Parser,
  irVersion: number,
  header: Record<string, unknown>,
  opsets: ReadonlyMap<string, number>,
  props: readonly [string, string][],
): Record<string, unknown> {
  const entries: [string, unknown][] = [['ir_version', irVersion], ...Object.entries(header)];
  if (opsets.size > 0) entries.push(['opset_import', Object.fromEntries([...opsets].map(([domain, version]) => [domain || 'ai.onnx', version]))]);
  const reserved = new Set(entries.map(([key]) => key));
  for (const [key, value] of props) {
    if (reserved.has(key)) {
      parser.warnings.push(`metadata_props key "${key}" would hide the model's own ${key}; it is skipped`);
      continue;
    }
    entries.push([key, value]);
  }
  // fromEntries defines own properties, so a key such as "__proto__" stays plain data.
  return Object.fromEntries(entries);
}

async function parseOpset(parser: Parser, message: ProtoMessage): Promise<[string, number]> {
  let domain = '';
  let version = 0;
  for await (const field of parser.reader.fields(message)) {
    if (field.number === F.opset.domain) domain = await parser.name(field);
    else if (field.number === F.opset.version) version = parser.int64(field, 'opset version');
  }
  return [domain, version];
}

async function parseEntry(parser: Parser, message: ProtoMessage, what: string): Promise<[string, string] | undefined> {
  let key = '';
  let value: string | undefined = '';
  for await (const field of parser.reader.fields(message)) {
    if (field.number === F.entry.key) key = await parser.name(field);
    else if (field.number === F.entry.value) value = await parser.text(field, `${what} value`);
  }
  return value === undefined ? undefined : [key, value];
}

interface ParsedGraph {
  readonly nodes: OnnxNode[];
  readonly inputs: OnnxValueInfo[];
  readonly outputs: OnnxValueInfo[];
  readonly entries: TensorEntry[];
}

async function parseGraph(parser: Parser, message: ProtoMessage, withNodes: boolean): Promise<ParsedGraph> {
  const { reader } = parser;
  const graph: ParsedGraph = { nodes: [], inputs: [], outputs: [], entries: [] };
  const names = new Set<string>();
  const subgraphOps = new Set<string>();
  let subgraphNodes = 0;
  let sparse = 0;
  for await (const field of reader.fields(message)) {
    switch (field.number) {
      case F.graph.node: {
        const node = await parseNode(parser, reader.message(field, 'NodeProto'), withNodes);
        if (node.hasSubgraph) {
          subgraphNodes++;
          subgraphOps.add(node.opType);
        }
        if (withNodes) graph.nodes.push(node);
        break;
      }
      case F.graph.initializer: {
        parser.count('initializer');
        const header = await parseTensorHeader(parser, reader.message(field, 'TensorProto'));
        const entry = checkTensor(parser, header, field, graph.entries.length);
        if (names.has(entry.initializer.name)) parser.fail(`two initializers are named "${entry.initializer.name}"`);
        names.add(entry.initializer.name);
        const { storage } = entry.initializer;
        if (storage.kind === 'unsupported') parser.warnings.push(`initializer "${entry.initializer.name}" is left out: ${storage.reason}`);
        graph.entries.push(entry);
        break;
      }
      case F.graph.input:
        graph.inputs.push(await parseValueInfo(parser, reader.message(field, 'ValueInfoProto')));
        break;
      case F.graph.output:
        graph.outputs.push(await parseValueInfo(parser, reader.message(field, 'ValueInfoProto')));
        break;
      case F.graph.sparseInitializer:
        reader.expectWireType(field, 'bytes');
        sparse++;
        break;
    }
  }
  if (subgraphNodes > 0) {
    parser.warnings.push(
      `${subgraphNodes} node(s) (${[...subgraphOps].join(', ')}) hold subgraphs; initializers inside subgraphs are not listed`,
    );
  }
  if (sparse > 0) parser.warnings.push(`${sparse} sparse initializer(s) are not listed`);
  return graph;
}

/** A node; without `keep`, only its op type and whether it holds a subgraph are read, and nothing is counted. */
async function parseNode(parser: Parser, message: ProtoMessage, keep: boolean): Promise<OnnxNode> {
  const { reader } = parser;
  const node = { name: '', opType: '', domain: '', inputs: [] as string[], outputs: [] as string[], hasSubgraph: false };
  if (keep) parser.count('node');
  for await (const field of reader.fields(message)) {
    if (field.number === F.node.attribute) {
      node.hasSubgraph ||= await attributeHoldsGraph(parser, reader.message(field, 'AttributeProto'));
      continue;
    }
    // The op type names a subgraph's node in the warning, so it is read either way.
    if (field.number === F.node.opType) {
      node.opType = await parser.name(field);
      continue;
    }
    if (!keep) continue;
    switch (field.number) {
      case F.node.input:
        parser.count('node input');
        node.inputs.push(await parser.name(field));
        break;
      case F.node.output:
        parser.count('node output');
        node.outputs.push(await parser.name(field));
        break;
      case F.node.name:
        node.name = await parser.name(field);
        break;
      case F.node.domain:
        node.domain = await parser.name(field);
        break;
    }
  }
  return node;
}

async function attributeHoldsGraph(parser: Parser, message: ProtoMessage): Promise<boolean> {
  for await (const field of parser.reader.fields(message)) {
    if (field.number === F.attribute.graph || field.number === F.attribute.graphs) return true;
  }
  return false;
}

async function parseValueInfo(parser: Parser, message: ProtoMessage): Promise<OnnxValueInfo> {
  const { reader } = parser;
  parser.count('value info');
  let name = '';
  let elemType: number | undefined;
  let shape: (number | string | undefined)[] | undefined;
  for await (const field of reader.fields(message)) {
    if (field.number === F.valueInfo.name) {
      name = await parser.name(field);
    } else if (field.number === F.valueInfo.type) {
      for await (const typeField of reader.fields(reader.message(field, 'TypeProto'))) {
        if (typeField.number !== F.type.tensorType) continue;
        for await (const tensorField of reader.fields(reader.message(typeField, 'TypeProto.Tensor'))) {
          if (tensorField.number === F.tensorType.elemType) elemType = int32OfVarint(parser.varint(tensorField));
          else if (tensorField.number === F.tensorType.shape) shape = await parseShape(parser, reader.message(tensorField, 'TensorShapeProto'));
        }
      }
    }
  }
  return { name, elemType, shape };
}

async function parseShape(parser: Parser, message: ProtoMessage): Promise<(number | string | undefined)[]> {
  const { reader } = parser;
  const shape: (number | string | undefined)[] = [];
  for await (const field of reader.fields(message)) {
    if (field.number !== F.shape.dim) continue;
    parser.count('dimension');
    let dimension: number | string | undefined;
    for await (const dimensionField of reader.fields(reader.message(field, 'TensorShapeProto.Dimension'))) {
      if (dimensionField.number === F.dimension.value) dimension = parser.int64(dimensionField, 'dimension');
      else if (dimensionField.number === F.dimension.param) dimension = await parser.name(dimensionField);
    }
    shape.push(dimension);
  }
  return shape;
}

async function parseTensorHeader(parser: Parser, message: ProtoMessage): Promise<TensorHeader> {
  const { reader } = parser;
  const header: TensorHeader = {
    dataType: 0, dims: [], typed: new Map(), external: [], dataLocation: LOCATION_DEFAULT, segmented: false, strings: false,
  };
  const addDimension = (value: bigint): void => {
    const signed = int64OfVarint(value);
    if (signed < 0n) parser.fail(`initializer at byte ${message.start}: negative dimension ${signed}`);
    if (header.dims.length >= MAX_RANK) parser.fail(`initializer at byte ${message.start}: more than ${MAX_RANK} dimensions`);
    // Beyond 2^53 the element count check below refuses it.
    header.dims.push(Number(signed));
  };
  for await (const field of reader.fields(message)) {
    const typedSpec = TYPED_FIELDS.find((spec) => spec.number === field.number);
    if (typedSpec) {
      addTypedField(parser, header, typedSpec, field);
      continue;
    }
    switch (field.number) {
      case F.tensor.dims:
        if (field.wireType === 'bytes') {
          const bytes = await reader.bytes(field, MAX_RANK * MAX_VARINT_BYTES);
          for (const parts of packedVarints(bytes, () => reader.fail(message, 'malformed packed dims'))) {
            addDimension((BigInt(parts.high) << 32n) | BigInt(parts.low));
          }
        } else {
          addDimension(parser.varint(field));
        }
        break;
      case F.tensor.dataType:
        header.dataType = int32OfVarint(parser.varint(field));
        break;
      case F.tensor.segment:
        header.segmented = true;
        break;
      case F.tensor.stringData:
        header.strings = true;
        break;
      case F.tensor.name:
        header.name = await parser.name(field);
        break;
      case F.tensor.rawData:
        reader.expectWireType(field, 'bytes');
        if (header.raw) reader.fail(message, 'raw_data appears twice');
        header.raw = { start: field.offset, end: field.end };
        break;
      case F.tensor.externalData: {
        parser.count('external_data');
        const entry = await parseEntry(parser, reader.message(field, 'StringStringEntryProto'), 'external_data');
        if (entry) header.external.push(entry);
        break;
      }
      case F.tensor.dataLocation:
        header.dataLocation = int32OfVarint(parser.varint(field));
        break;
    }
  }
  return header;
}

/** Records where a typed field's values lie, merging consecutive unpacked values into one segment. */
function addTypedField(parser: Parser, header: TensorHeader, spec: TypedFieldSpec, field: ProtoField): void {
  const packed = field.wireType === 'bytes';
  if (!packed) parser.reader.expectWireType(field, spec.encoding);
  let data = header.typed.get(spec.name);
  if (!data) {
    data = { spec, segments: [], exactValues: 0, packedVarintBytes: 0 };
    header.typed.set(spec.name, data);
  }
  if (packed) {
    if (spec.encoding === 'varint') {
      data.packedVarintBytes += field.length;
    } else {
      const width = FIXED_WIDTH[spec.encoding];
      if (field.length % width !== 0) parser.reader.fail(field.parent, `packed ${spec.name} of ${field.length} bytes is not a whole number of values`);
      data.exactValues += field.length / width;
    }
    data.segments.push({ offset: field.offset, length: field.length, packed: true });
    return;
  }
  data.exactValues++;
  const last = data.segments[data.segments.length - 1];
  if (last && !last.packed && last.offset + last.length === field.start) last.length = field.end - last.offset;
  else data.segments.push({ offset: field.start, length: field.end - field.start, packed: false });
}

/** Checks a TensorProto header against its type and shape and decides where its values come from. */
function checkTensor(parser: Parser, header: TensorHeader, field: ProtoField, index: number): TensorEntry {
  if (header.name === undefined || header.name === '') parser.fail(`initializer #${index} has no name`);
  const name = header.name;
  const fail = (problem: string): never => parser.fail(`tensor "${name}": ${problem}`);
  const dtype = ONNX_DTYPES.get(header.dataType);
  const base = { name, dataType: header.dataType, dims: header.dims, field: { start: field.start, end: field.end } };
  const elements = elementCountOf(header.dims, `tensor "${name}"`, parser.modelPath);
  const unsupported = (reason: string): TensorEntry => ({ initializer: { ...base, storage: { kind: 'unsupported', reason } }, typed: header.typed });

  if (header.dataLocation !== LOCATION_DEFAULT && header.dataLocation !== LOCATION_EXTERNAL) fail(`unknown data_location ${header.dataLocation}`);
  if (header.dataType === ONNX_STRING || header.strings) return unsupported('string tensors hold no numbers');
  if (!dtype) return unsupported(`its element type ${onnxTypeName(header.dataType)} is not one this tool reads`);
  if (header.segmented) return unsupported('it is stored in segments, which this tool does not join');

  const byteSize = elements * DTYPE_BYTES[dtype];
  if (!Number.isSafeInteger(byteSize)) fail(`shape [${header.dims.join(', ')}] is too large`);
  const initializer = (storage: InitializerStorage): TensorEntry => ({ initializer: { ...base, dtype, storage }, typed: header.typed });
  const typedFields = [...header.typed.values()];
  const sources = [header.raw ? 'raw_data' : undefined, ...typedFields.map((data) => data.spec.name)].filter((source) => source !== undefined);

  if (header.dataLocation === LOCATION_EXTERNAL) {
    if (sources.length > 0) fail(`data_location is EXTERNAL but it also holds ${sources.join(' and ')}`);
    return initializer(externalStorage(parser, header.external, name, byteSize));
  }
  if (sources.length > 1) fail(`its values are given twice, in ${sources.join(' and ')}`);
  if (header.raw) {
    const length = header.raw.end - header.raw.start;
    if (length !== byteSize) {
      fail(`raw_data holds ${length} bytes, but shape [${header.dims.join(', ')}] of ${onnxTypeName(header.dataType)} needs ${byteSize}`);
    }
    return initializer({ kind: 'raw', offset: header.raw.start, length });
  }
  const [data] = typedFields;
  if (data) {
    if (!data.spec.dtypes.has(dtype)) fail(`${data.spec.name} cannot hold ${onnxTypeName(header.dataType)} values`);
    const values = elements * (dtype === 'C64' || dtype === 'C128' ? 2 : 1);
    // Each packed varint takes 1 to 10 bytes; the exact count is checked when the values are read.
    const fewest = data.exactValues + Math.ceil(data.packedVarintBytes / MAX_VARINT_BYTES);
    const most = data.exactValues + data.packedVarintBytes;
    if (values < fewest || values > most) {
      const held = fewest === most ? `${fewest} values` : `${fewest} to ${most} values`;
      fail(`${data.spec.name} holds ${held}, but shape [${header.dims.join(', ')}] needs ${values}`);
    }
    return initializer({ kind: 'typed', field: data.spec.name });
  }
  if (elements > 0) fail(`holds no values for its ${elements} elements`);
  return initializer({ kind: 'empty' });
}

// ---------------------------------------------------------------------------------------
// External data

/** Offsets and lengths are decimal integers written as strings. */
const DECIMAL = /^[0-9]+$/;

/**
 * The external data of one tensor, before its file is looked at. The location is resolved
 * against the model's folder and may not leave it: it comes from the file, and a model must not
 * be able to make the tool read /etc/passwd or a neighbour's files. The check is on the path as
 * written, not on where symbolic links lead, because Hugging Face caches keep every file of a
 * model as a link into a shared blob folder.
 */
function externalStorage(parser: Parser, entries: readonly [string, string][], name: string, byteSize: number): InitializerStorage {
  const fail = (problem: string): never => parser.fail(`tensor "${name}": ${problem}`);
  const values = new Map<string, string>();
  for (const [key, value] of entries) {
    if (values.has(key)) fail(`external_data names "${key}" twice`);
    values.set(key, value);
  }
  const location = values.get('location');
  if (location === undefined || location === '') return fail('data_location is EXTERNAL but external_data has no location');
  const folder = path.dirname(parser.modelPath);
  const file = path.resolve(folder, location);
  const relative = path.relative(folder, file);
  if (location.includes('\0') || path.isAbsolute(location) || relative === '' || relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative)) {
    fail(`external data location "${location}" is not a file inside the model's folder`);
  }
  const number = (key: string): number | undefined => {
    const text = values.get(key);
    if (text === undefined) return undefined;
    const value = Number(text);
    if (!DECIMAL.test(text) || !Number.isSafeInteger(value)) fail(`external data ${key} "${text}" is not a byte count`);
    return value;
  };
  const offset = number('offset') ?? 0;
  const length = number('length') ?? byteSize;
  if (length !== byteSize) fail(`external data length ${length} does not match the ${byteSize} bytes its shape needs`);
  return { kind: 'external', file, location, offset, length };
}

/**
 * A file of external data. It is opened for each read rather than held open: a model may spread
 * its tensors over thousands of files. Size and modification time are those seen when the model
 * was listed, so a file rewritten since then raises FileChangedError.
 */
class ExternalFile extends RangeCheckedSource {
  constructor(
    readonly name: string,
    readonly size: number,
    private readonly mtimeMs: number,
  ) {
    super();
  }

  protected async readRaw(offset: number, length: number): Promise<Buffer> {
    const file = await FileSource.open(this.name);
    try {
      if (file.size !== this.size || file.mtimeMs !== this.mtimeMs) throw new FileChangedError(this.name);
      return await file.read(offset, length);
    } finally {
      await file.close();
    }
  }
}

/** Looks at each external file once and checks every tensor's bytes lie inside it. */
async function openExternalFiles(parser: Parser, entries: readonly TensorEntry[]): Promise<Map<string, ExternalFile>> {
  const files = new Map<string, ExternalFile>();
  for (const { initializer } of entries) {
    const storage = initializer.storage;
    if (storage.kind !== 'external') continue;
    let file = files.get(storage.file);
    if (!file) {
      let stat;
      try {
        stat = await fs.stat(storage.file);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code ?? String(error);
        return parser.fail(`tensor "${initializer.name}": external data file "${storage.location}" cannot be opened (${code})`);
      }
      if (!stat.isFile()) parser.fail(`tensor "${initializer.name}": external data "${storage.location}" is not a regular file`);
      file = new ExternalFile(storage.file, stat.size, stat.mtimeMs);
      files.set(storage.file, file);
    }
    if (storage.offset + storage.length > file.size) {
      parser.fail(
        `tensor "${initializer.name}": external data bytes ${storage.offset}..${storage.offset + storage.length} ` +
          `lie past the end of "${storage.location}" (${file.size} bytes)`,
      );
    }
  }
  return files;
}

// ---------------------------------------------------------------------------------------
// Typed fields

/**
 * The values of a typed field, decoded on first read into the little-endian bytes of the
 * tensor's dtype and kept: these fields hold small tensors (writers use raw_data for large
 * ones), and a chunked read would otherwise decode the field once per chunk. The image is no
 * larger than eight bytes per encoded byte, which the file holds.
 */
class TypedFieldSource extends RangeCheckedSource {
  readonly name: string;
  readonly size: number;
  private image: Promise<Buffer> | undefined;
  private readonly valueWidth: number;
  private readonly valueCount: number;

  constructor(
    private readonly model: ByteSource,
    private readonly initializer: OnnxInitializer,
    private readonly data: TypedData,
  ) {
    super();
    const dtype = initializer.dtype!;
    const complex = dtype === 'C64' || dtype === 'C128';
    this.name = model.name;
    this.valueWidth = DTYPE_BYTES[dtype] / (complex ? 2 : 1);
    this.valueCount = elementCountOf(initializer.dims, initializer.name, model.name) * (complex ? 2 : 1);
    this.size = this.valueCount * this.valueWidth;
  }

  protected async readRaw(offset: number, length: number): Promise<Buffer> {
    this.image ??= this.decode();
    return (await this.image).subarray(offset, offset + length);
  }

  private fail(problem: string): never {
    throw new CheckpointError(this.model.name, `tensor "${this.initializer.name}": ${problem}`);
  }

  private async decode(): Promise<Buffer> {
    const { spec } = this.data;
    const image = Buffer.alloc(this.size);
    const parts: VarintParts = { low: 0, high: 0, next: 0 };
    let count = 0;
    const room = (values: number): void => {
      if (count + values > this.valueCount) this.fail(`${spec.name} holds more than the ${this.valueCount} values its shape needs`);
    };
    const putVarint = (): void => {
      room(1);
      this.write(image, count++, parts);
    };
    const tag = spec.number * 8 + (spec.encoding === 'fixed32' ? 5 : spec.encoding === 'fixed64' ? 1 : 0);
    for (const segment of this.data.segments) {
      const bytes = await this.model.read(segment.offset, segment.length);
      if (segment.packed && spec.encoding !== 'varint') {
        room(bytes.length / this.valueWidth);
        bytes.copy(image, count * this.valueWidth);
        count += bytes.length / this.valueWidth;
      } else if (segment.packed) {
        for (const value of packedVarints(bytes, () => this.fail(`malformed packed ${spec.name}`))) {
          parts.low = value.low;
          parts.high = value.high;
          putVarint();
        }
      } else {
        // Unpacked: tag, value, tag, value... all of this field, as the parser merged them.
        let position = 0;
        while (position < bytes.length) {
          if (!decodeVarint(bytes, position, bytes.length, parts) || unsignedOf(parts) !== tag) this.fail(`malformed ${spec.name}`);
          position = parts.next;
          if (spec.encoding === 'varint') {
            if (!decodeVarint(bytes, position, bytes.length, parts)) this.fail(`malformed ${spec.name}`);
            position = parts.next;
            putVarint();
          } else {
            room(1);
            bytes.copy(image, count++ * this.valueWidth, position, position + this.valueWidth);
            position += this.valueWidth;
          }
        }
      }
    }
    if (count !== this.valueCount) this.fail(`${spec.name} holds ${count} values, but its shape needs ${this.valueCount}`);
    return image;
  }

  /** Stores a varint value in the dtype's width: the spec's values fit it, so truncation is exact. */
  private write(image: Buffer, index: number, parts: VarintParts): void {
    const at = index * this.valueWidth;
    switch (this.valueWidth) {
      case 1:
        image[at] = parts.low & 0xff;
        break;
      case 2:
        image.writeUInt16LE(parts.low & 0xffff, at);
        break;
      case 4:
        image.writeUInt32LE(parts.low, at);
        break;
      default:
        image.writeUInt32LE(parts.low, at);
        image.writeUInt32LE(parts.high, at + 4);
    }
  }
}
