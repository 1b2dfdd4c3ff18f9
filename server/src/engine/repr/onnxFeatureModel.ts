import type { InferenceSession, Tensor as OrtTensor } from 'onnxruntime-node';
import { CheckpointError, throwIfAborted } from '../errors';
import { FileSource, type ByteSource } from '../io/byteSource';
import type { DevicePreference } from '../compute/tfjsBackend';
import { decodeToFloat64, type DType } from '../formats/dtype';
import { ONNX_FIELDS, ONNX_FLOAT, onnxTypeName, readOnnxGraph, type OnnxGraph, type OnnxInitializer, type OnnxValueInfo } from '../formats/onnx';
import { encodeBytesField, encodeVarintField } from '../formats/protobuf';
import type { FeatureMatrix, FeatureModel } from './featureModel';

/**
 * Runs an ONNX graph cut at its feature tensor with onnxruntime, under any parameter values.
 *
 * The session is created once per model. Its model is a copy of the file in which the
 * parameters are no longer initializers but graph inputs, and the feature tensor is an extra
 * graph output; each `features` call feeds the probe and the parameter values as inputs. So
 * changing weights costs nothing beyond the run itself, and the copy never holds the
 * parameters' bytes (a model of several gigabytes of weights loads as its bare graph).
 * Recreating the session for each weight set, the alternative, costs a full graph
 * optimisation per call. onnxruntime cannot fold constants through values fed at run time
 * (e.g. a batch norm into its convolution), which the fixtures' exporter has already done.
 *
 * The edits re-encode only the GraphProto field of the ModelProto: graph fields are copied as
 * they are, the parameters' initializer fields are dropped, initializers stored in external
 * files are inlined (the copy is loaded from memory, where relative locations mean nothing),
 * and the new inputs and output are appended.
 */

export interface OnnxFeatureModelOptions {
  /** The value whose contents are the features; by default the input of the task head. */
  readonly featureTensor?: string;
  readonly device?: DevicePreference;
}

/** Probe rows run at once when the graph's batch dimension is free. */
const MAX_BATCH_ROWS = 64;
/** protobuf messages, and so models loaded from memory, stay below 2 GiB. */
const MAX_MODEL_BYTES = 2 ** 31 - 1;
/** Pieces of the model are copied in reads of at most this size. */
const COPY_CHUNK_BYTES = 64 * 1024 * 1024;

const GPU_PROVIDERS = ['cuda', 'webgpu'] as const;
type Provider = (typeof GPU_PROVIDERS)[number] | 'cpu';

/** Parameter types the caller's float32 values are converted to. */
const PARAMETER_TYPES: ReadonlyMap<DType, 'float32' | 'float64' | 'float16'> = new Map([
  ['F32', 'float32'],
  ['F64', 'float64'],
  ['F16', 'float16'],
] as const);

/** Ops whose output is the task head's logits; the features are their first input. */
const HEAD_OPS: ReadonlySet<string> = new Set(['Gemm', 'MatMul']);

type Ort = typeof import('onnxruntime-node');

export async function openOnnxFeatureModel(file: string, options: OnnxFeatureModelOptions = {}): Promise<FeatureModel> {
  const source = await FileSource.open(file);
  let plan: ModelPlan;
  let modelBytes: Buffer;
  try {
    const graph = await readOnnxGraph(source, file);
    plan = planModel(graph, options.featureTensor);
    modelBytes = await editModel(source, graph, plan);
  } finally {
    await source.close();
  }
  const { session, provider } = await createSession(file, modelBytes, options.device ?? 'auto');
  return new OnnxFeatureModel(file, plan, session, provider);
}

// ---------------------------------------------------------------------------------------
// What to run

interface ModelPlan {
  readonly dataInput: string;
  /** One probe sample's shape: the data input's dimensions after the batch one. */
  readonly inputShape: readonly number[];
  /** The batch size the graph fixes, or undefined when it is free. */
  readonly fixedBatch?: number;
  readonly feature: string;
  readonly parameters: readonly OnnxInitializer[];
  /** Parameters that are not graph inputs yet. */
  readonly newInputs: readonly OnnxInitializer[];
  readonly featureIsOutput: boolean;
}

function planModel(graph: OnnxGraph, featureTensor: string | undefined): ModelPlan {
  const fail = (problem: string): never => {
    throw new CheckpointError(graph.path, problem);
  };
  const dataInputs = graph.inputs.filter((input) => !graph.initializers.has(input.name));
  if (dataInputs.length !== 1) {
    fail(`a feature model needs one data input, but the graph has ${dataInputs.length} (${dataInputs.map((input) => input.name).join(', ')})`);
  }
  const dataInput = dataInputs[0]!;
  const { inputShape, fixedBatch } = probeShape(dataInput, fail);

  const producers = new Map<string, (typeof graph.nodes)[number]>();
  for (const node of graph.nodes) for (const output of node.outputs) producers.set(output, node);
  const feature = featureTensor ?? headInput(graph, producers, fail);
  if (!producers.has(feature) && feature !== dataInput.name) fail(`no node produces the feature tensor "${feature}"`);

  const parameters = parametersBehind(graph, producers, feature, fail);
  const inputNames = new Set(graph.inputs.map((input) => input.name));
  return {
    dataInput: dataInput.name,
    inputShape,
    fixedBatch,
    feature,
    parameters,
    newInputs: parameters.filter((parameter) => !inputNames.has(parameter.name)),
    featureIsOutput: graph.outputs.some((output) => output.name === feature),
  };
}

function probeShape(input: OnnxValueInfo, fail: (problem: string) => never): { inputShape: number[]; fixedBatch?: number } {
  if (input.elemType !== ONNX_FLOAT) fail(`data input "${input.name}" holds ${onnxTypeName(input.elemType ?? 0)}, not FLOAT values`);
  const shape = input.shape;
  if (!shape || shape.length === 0) return fail(`data input "${input.name}" declares no shape with a batch dimension`);
  const [batch, ...sample] = shape;
  const inputShape = sample.map((size, d) =>
    typeof size === 'number' ? size : fail(`data input "${input.name}" has a free dimension ${d + 1} (${size ?? '?'}); only the batch may be free`),
  );
  return { inputShape, fixedBatch: typeof batch === 'number' && batch > 0 ? batch : undefined };
}

/**
 * The input of the task head: walking back from the first graph output through ops with a
 * single varying input (a bias Add, Softmax, Identity...), the first Gemm or MatMul met.
 */
function headInput(graph: OnnxGraph, producers: ReadonlyMap<string, OnnxGraphNode>, fail: (problem: string) => never): string {
  const output = graph.outputs[0]?.name ?? fail('the graph has no output');
  const constant = (value: string): boolean => graph.initializers.has(value) || producers.get(value)?.opType === 'Constant';
  let value = output;
  for (let step = 0; step <= graph.nodes.length; step++) {
    const node = producers.get(value);
    if (!node) break;
    if (HEAD_OPS.has(node.opType) && isDefaultDomain(node.domain)) return node.inputs[0] ?? fail(`head node "${node.name}" has no input`);
    const varying = node.inputs.filter((input) => input !== '' && !constant(input));
    if (varying.length !== 1) break;
    value = varying[0]!;
  }
  return fail(`no Gemm or MatMul task head found before output "${output}"; name the feature tensor`);
}

type OnnxGraphNode = OnnxGraph['nodes'][number];

function isDefaultDomain(domain: string): boolean {
  return domain === '' || domain === 'ai.onnx';
}

/** The float initializers the feature tensor is computed from, in file order. */
function parametersBehind(
  graph: OnnxGraph,
  producers: ReadonlyMap<string, OnnxGraphNode>,
  feature: string,
  fail: (problem: string) => never,
): OnnxInitializer[] {
  const used = new Set<string>();
  const seen = new Set<string>();
  const pending = [feature];
  while (pending.length > 0) {
    const value = pending.pop()!;
    if (seen.has(value)) continue;
    seen.add(value);
    if (graph.initializers.has(value)) {
      used.add(value);
      continue;
    }
    for (const input of producers.get(value)?.inputs ?? []) if (input !== '') pending.push(input);
  }
  const parameters: OnnxInitializer[] = [];
  for (const initializer of graph.initializers.values()) {
    if (!used.has(initializer.name) || !initializer.dtype) continue;
    if (initializer.dtype === 'BF16') fail(`parameter "${initializer.name}" is bfloat16, which onnxruntime's JavaScript tensors cannot carry`);
    if (PARAMETER_TYPES.has(initializer.dtype)) parameters.push(initializer);
  }
  return parameters;
}

// ---------------------------------------------------------------------------------------
// The edited model

async function editModel(source: ByteSource, graph: OnnxGraph, plan: ModelPlan): Promise<Buffer> {
  const G = ONNX_FIELDS.graph;
  const removed = new Set(plan.parameters.map((parameter) => parameter.name));
  // Pieces of the GraphProto in file order: copied ranges and replacement bytes.
  const edits: { start: number; end: number; replacement?: Buffer }[] = [];
  for (const initializer of graph.initializers.values()) {
    const { field, storage } = initializer;
    if (removed.has(initializer.name)) edits.push(field);
    else if (storage.kind === 'external') edits.push({ ...field, replacement: await inlineExternal(initializer, storage) });
  }
  edits.sort((a, b) => a.start - b.start);

  const pieces: Buffer[] = [];
  let position = graph.graphField.payloadStart;
  for (const edit of edits) {
    pieces.push(await copyRange(source, position, edit.start));
    if (edit.replacement) pieces.push(edit.replacement);
    position = edit.end;
  }
  pieces.push(await copyRange(source, position, graph.graphField.end));
  for (const parameter of plan.newInputs) pieces.push(encodeBytesField(G.input, valueInfo(parameter.name, parameter.dataType, parameter.dims)));
  if (!plan.featureIsOutput) pieces.push(encodeBytesField(G.output, valueInfo(plan.feature)));

  const graphBytes = encodeBytesField(ONNX_FIELDS.model.graph, pieces);
  const size = graph.graphField.start + graphBytes.length + (graph.modelSize - graph.graphField.end);
  if (size > MAX_MODEL_BYTES) {
    throw new CheckpointError(graph.path, `the graph without its parameters still takes ${size} bytes, over protobuf's 2 GiB limit`);
  }
  return Buffer.concat([await copyRange(source, 0, graph.graphField.start), graphBytes, await copyRange(source, graph.graphField.end, graph.modelSize)]);
}

async function copyRange(source: ByteSource, start: number, end: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for (let offset = start; offset < end; offset += COPY_CHUNK_BYTES) {
    chunks.push(await source.read(offset, Math.min(COPY_CHUNK_BYTES, end - offset)));
  }
  return Buffer.concat(chunks);
}

/** An initializer field whose values, read from its external file, are inlined as raw_data. */
async function inlineExternal(initializer: OnnxInitializer, storage: { file: string; offset: number; length: number }): Promise<Buffer> {
  const T = ONNX_FIELDS.tensor;
  const external = await FileSource.open(storage.file);
  let values: Buffer;
  try {
    values = await copyRange(external, storage.offset, storage.offset + storage.length);
  } finally {
    await external.close();
  }
  const tensor = [
    ...initializer.dims.map((size) => encodeVarintField(T.dims, size)),
    encodeVarintField(T.dataType, initializer.dataType),
    encodeBytesField(T.name, initializer.name),
    encodeBytesField(T.rawData, values),
  ];
  return encodeBytesField(ONNX_FIELDS.graph.initializer, tensor);
}

/** A ValueInfoProto; without a type, onnxruntime infers the type of an output. */
function valueInfo(name: string, elemType?: number, dims?: readonly number[]): Buffer[] {
  const V = ONNX_FIELDS.valueInfo;
  const fields = [encodeBytesField(V.name, name)];
  if (elemType !== undefined) {
    const dimensions = (dims ?? []).map((size) => encodeBytesField(ONNX_FIELDS.shape.dim, encodeVarintField(ONNX_FIELDS.dimension.value, size)));
    const tensorType = [encodeVarintField(ONNX_FIELDS.tensorType.elemType, elemType), encodeBytesField(ONNX_FIELDS.tensorType.shape, dimensions)];
    fields.push(encodeBytesField(V.type, encodeBytesField(ONNX_FIELDS.type.tensorType, tensorType)));
  }
  return fields;
}

// ---------------------------------------------------------------------------------------
// Sessions

/**
 * GPU providers that failed to start in this process. A provider that cannot start (CUDA
 * libraries missing, no WebGPU adapter) fails the same way for every model, and each try costs
 * about half a second.
 */
const unavailableProviders = new Map<Provider, string>();

function providerOrder(device: DevicePreference): Provider[] {
  return device === 'cpu' ? ['cpu'] : [...GPU_PROVIDERS, 'cpu'];
}

function loadOrt(): Ort {
  return require('onnxruntime-node') as Ort;
}

async function createSession(file: string, modelBytes: Buffer, device: DevicePreference): Promise<{ session: InferenceSession; provider: Provider }> {
  const ort = loadOrt();
  const failures: string[] = [];
  for (const provider of providerOrder(device)) {
    const known = unavailableProviders.get(provider);
    if (known !== undefined) {
      failures.push(`${provider}: ${known}`);
      continue;
    }
    try {
      // Session logs at error level only: warnings such as nodes placed on the CPU are noise here.
      const session = await ort.InferenceSession.create(modelBytes, { executionProviders: [provider], logSeverityLevel: 3 });
      return { session, provider };
    } catch (error) {
      const reason = firstLine(error);
      failures.push(`${provider}: ${reason}`);
      if (provider !== 'cpu') unavailableProviders.set(provider, reason);
    }
  }
  throw new CheckpointError(file, `onnxruntime cannot run the model (${failures.join('; ')})`);
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0]!;
}

class OnnxFeatureModel implements FeatureModel {
  readonly description: string;
  readonly inputShape: readonly number[];
  readonly parameters: ReadonlyMap<string, readonly number[]>;
  readonly device: string;
  private readonly sampleSize: number;

  constructor(
    private readonly file: string,
    private readonly plan: ModelPlan,
    private readonly session: InferenceSession,
    provider: Provider,
  ) {
    this.description = `ONNX graph, features from ${plan.feature}`;
    this.inputShape = plan.inputShape;
    this.parameters = new Map(plan.parameters.map((parameter) => [parameter.name, parameter.dims]));
    this.device = `onnxruntime ${provider}`;
    this.sampleSize = plan.inputShape.reduce((product, size) => product * size, 1);
  }

  async features(probe: Float32Array, rows: number, parameters: ReadonlyMap<string, Float32Array>, signal?: AbortSignal): Promise<FeatureMatrix> {
    if (!Number.isSafeInteger(rows) || rows < 0 || probe.length !== rows * this.sampleSize) {
      throw new RangeError(`the probe holds ${probe.length} values, not ${rows} rows of ${this.sampleSize}`);
    }
    const ort = loadOrt();
    const feeds: Record<string, OrtTensor> = {};
    for (const parameter of this.plan.parameters) feeds[parameter.name] = parameterTensor(ort, parameter, parameters.get(parameter.name));

    const batch = this.plan.fixedBatch ?? Math.min(MAX_BATCH_ROWS, Math.max(rows, 1));
    let values: Float32Array | undefined;
    let columns = 0;
    for (let first = 0; first < rows; first += batch) {
      throwIfAborted(signal);
      const count = Math.min(batch, rows - first);
      // A fixed batch is filled up with zero rows, whose features are dropped.
      const input = new Float32Array(batch * this.sampleSize);
      input.set(probe.subarray(first * this.sampleSize, (first + count) * this.sampleSize));
      feeds[this.plan.dataInput] = new ort.Tensor('float32', this.plan.fixedBatch ? input : input.subarray(0, count * this.sampleSize), [
        this.plan.fixedBatch ?? count,
        ...this.plan.inputShape,
      ]);
      const output = (await this.session.run(feeds, [this.plan.feature]))[this.plan.feature];
      if (!output) throw new CheckpointError(this.file, `onnxruntime returned no value for "${this.plan.feature}"`);
      const batchValues = floatValues(output, this.file, this.plan.feature);
      const outputColumns = batchValues.length / (this.plan.fixedBatch ?? count);
      if (output.dims[0] !== (this.plan.fixedBatch ?? count) || !Number.isInteger(outputColumns)) {
        throw new CheckpointError(this.file, `feature tensor "${this.plan.feature}" has shape [${output.dims.join(', ')}], not one row per probe sample`);
      }
      if (!values) {
        columns = outputColumns;
        values = new Float32Array(rows * columns);
      } else if (outputColumns !== columns) {
        throw new CheckpointError(this.file, `feature tensor "${this.plan.feature}" changes width between batches`);
      }
      values.set(batchValues.subarray(0, count * columns), first * columns);
      output.dispose();
    }
    return { values: values ?? new Float32Array(0), rows, columns };
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}

/** A parameter's values as a tensor of the initializer's type and shape. */
function parameterTensor(ort: Ort, parameter: OnnxInitializer, values: Float32Array | undefined): OrtTensor {
  if (!values) throw new RangeError(`no values given for parameter "${parameter.name}"`);
  const expected = parameter.dims.reduce((product, size) => product * size, 1);
  if (values.length !== expected) {
    throw new RangeError(`parameter "${parameter.name}" needs ${expected} values for shape [${parameter.dims.join(', ')}], got ${values.length}`);
  }
  const dims = [...parameter.dims];
  switch (PARAMETER_TYPES.get(parameter.dtype!)) {
    case 'float64':
      return new ort.Tensor('float64', Float64Array.from(values), dims);
    case 'float16':
      return new ort.Tensor('float16', toHalfBits(values), dims);
    default:
      return new ort.Tensor('float32', values, dims);
  }
}

function floatValues(tensor: OrtTensor, file: string, name: string): Float32Array {
  const data = tensor.data;
  switch (tensor.type) {
    case 'float32':
      return data as Float32Array;
    case 'float64':
      return Float32Array.from(data as Float64Array);
    case 'float16': {
      const bits = data as Uint16Array;
      return Float32Array.from(decodeToFloat64('F16', new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength)));
    }
    default:
      throw new CheckpointError(file, `feature tensor "${name}" holds ${tensor.type} values, not floats`);
  }
}

const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);

/** float32 → IEEE binary16 bit patterns, rounding to nearest even as a cast does. */
export function toHalfBits(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    f32[0] = values[i]!;
    const bits = f32Bits[0]!;
    const sign = (bits >>> 16) & 0x8000;
    const exponent = (bits >>> 23) & 0xff;
    const mantissa = bits & 0x7fffff;
    if (exponent === 0xff) {
      out[i] = sign | 0x7c00 | (mantissa ? 0x200 : 0);
      continue;
    }
    const halfExponent = exponent - 127 + 15;
    if (halfExponent >= 0x1f) {
      out[i] = sign | 0x7c00;
    } else if (halfExponent <= 0) {
      // Subnormal half: the value is (1.mantissa) · 2^(halfExponent - 15); below 2^-25 it rounds to zero.
      if (halfExponent < -10) {
        out[i] = sign;
        continue;
      }
      const full = mantissa | 0x800000;
      const shift = 14 - halfExponent;
      out[i] = sign | roundShift(full, shift);
    } else {
      // A carry out of the mantissa correctly rounds up into the next exponent (or infinity).
      out[i] = sign | ((halfExponent << 10) + roundShift(mantissa, 13));
    }
  }
  return out;
}

/** value >> shift, rounded to nearest with ties to even. */
function roundShift(value: number, shift: number): number {
  const kept = value >>> shift;
  const rest = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rest > half || (rest === half && (kept & 1) === 1) ? kept + 1 : kept;
}
