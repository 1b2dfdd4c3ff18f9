import type * as TfCore from '@tensorflow/tfjs-core';
import { selectTfjsBackend, type DevicePreference } from '../compute/tfjsBackend';
import { CheckpointError, throwIfAborted } from '../errors';
import type { Checkpoint } from '../formats/checkpoint';
import { DEFAULT_RESNET_IMAGE_SIZE } from './architecture';
import type { FeatureMatrix, FeatureModel } from './featureModel';
import { isObject, KerasConfigError, readKerasGraph, type KerasGraph, type KerasLayer, type TensorRef } from './kerasGraph';
import { bindWeights, type LayerWeights } from './kerasWeights';

/**
 * Runs a Keras or TF.js layers model from the configuration saved with it (kerasGraph.ts) on
 * TensorFlow.js ops, with any weight values of its architecture. This is how Keras `.h5` and
 * `.keras` files and TF.js model.json files of any supported architecture (convolutional nets,
 * residual nets, MobileNet-style depthwise blocks, nested base models) run for the
 * representation methods; weights-only files have no configuration and go through the
 * state-dict recognisers instead.
 *
 * Features are what the task head reads: the input of the Dense layer the model's output comes
 * from (looking past a final activation, softmax or dropout); a model without a Dense head gives
 * its output. Parameters keep the stored names and Keras layouts (Dense kernels in × out, conv
 * kernels HWIO). Image probes arrive channels-first like every probe and are transposed to the
 * channels-last layout Keras computes in. Inference mode: BatchNormalization uses its moving
 * statistics, dropout and augmentation layers pass their input through.
 */

export interface KerasFeatureModelOptions {
  readonly device?: DevicePreference;
}

type Tf = typeof TfCore;
type Activation = (tf: Tf, x: TfCore.Tensor) => TfCore.Tensor;

/** Largest intermediate activation a batch may produce, as in stateDictModel.ts. */
const ACTIVATION_BUDGET_ELEMENTS = 4 * 1024 * 1024;

/** Layers that compute nothing at inference. */
const INFERENCE_IDENTITY = new Set([
  'Dropout', 'SpatialDropout1D', 'SpatialDropout2D', 'SpatialDropout3D', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout',
  'ActivityRegularization', 'Identity', 'RandomFlip', 'RandomRotation', 'RandomZoom', 'RandomTranslation', 'RandomContrast', 'RandomBrightness',
]);
/** Layers a head's output may pass through after the last Dense. */
const AFTER_HEAD = new Set(['Activation', 'Softmax', ...INFERENCE_IDENTITY]);

const ACTIVATIONS: Readonly<Record<string, Activation>> = {
  linear: (_tf, x) => x,
  relu: (tf, x) => tf.relu(x),
  relu6: (tf, x) => tf.relu6(x),
  sigmoid: (tf, x) => tf.sigmoid(x),
  tanh: (tf, x) => tf.tanh(x),
  softmax: (tf, x) => tf.softmax(x),
  softplus: (tf, x) => tf.softplus(x),
  softsign: (tf, x) => tf.div(x, tf.add(tf.abs(x), 1)),
  elu: (tf, x) => tf.elu(x),
  selu: (tf, x) => tf.selu(x),
  swish: (tf, x) => tf.mul(x, tf.sigmoid(x)),
  silu: (tf, x) => tf.mul(x, tf.sigmoid(x)),
  // Keras's default gelu is the exact one, x·Φ(x).
  gelu: (tf, x) => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2)))),
  exponential: (tf, x) => tf.exp(x),
  leaky_relu: (tf, x) => tf.leakyRelu(x, 0.2),
  mish: (tf, x) => tf.mul(x, tf.tanh(tf.softplus(x))),
};

/**
 * The model the checkpoint's saved configuration describes, or undefined when it has none.
 * Throws a CheckpointError saying why when the configuration cannot be run.
 */
export async function openKerasFeatureModel(checkpoint: Checkpoint, options: KerasFeatureModelOptions = {}): Promise<FeatureModel | undefined> {
  if (checkpoint.modelConfig === undefined) return undefined;
  let plan: KerasPlan;
  try {
    plan = planModel(checkpoint);
  } catch (error) {
    if (error instanceof KerasConfigError) throw new CheckpointError(checkpoint.path, `only weight-space methods apply (its model configuration cannot be run: ${error.message})`);
    throw error;
  }
  const selection = await selectTfjsBackend(options.device ?? 'auto');
  return new KerasFeatureModel(selection.tf, `tfjs ${selection.backend}`, plan);
}

interface KerasPlan {
  readonly file: string;
  readonly graph: KerasGraph;
  readonly featureRef: TensorRef;
  /** Per graph (the model's and nested models'), the calls a forward pass runs, in order. */
  readonly callOrders: ReadonlyMap<KerasGraph, readonly (readonly [KerasLayer, number])[]>;
  readonly description: string;
  /** The sample shape Keras declares (channels-last for images). */
  readonly kerasInputShape: readonly number[];
  /** Per weighted layer path, its weights' parameter names by role. */
  readonly layerParameters: ReadonlyMap<string, ReadonlyMap<string, string>>;
  readonly parameters: ReadonlyMap<string, readonly number[]>;
  readonly runningStatistics: ReadonlySet<string>;
}

/** Roles whose values training sets by averaging, not by gradient. */
const MOVING_STATISTICS = new Set(['moving_mean', 'moving_variance', 'mean', 'variance', 'count']);

function planModel(checkpoint: Checkpoint): KerasPlan {
  const graph = readKerasGraph(checkpoint.modelConfig);
  if (graph.inputs.length !== 1) throw new KerasConfigError(`the model has ${graph.inputs.length} inputs; one probe feeds one input`);
  const kerasInputShape = graph.inputShapes[0]!.map((size, axis, shape) => {
    if (size !== null) return size;
    // An image model built for any size (include_top=False): run it at the usual size.
    if (shape.length === 3 && axis < 2) return DEFAULT_RESNET_IMAGE_SIZE;
    throw new KerasConfigError(`input axis ${axis + 1} has no fixed size`);
  });
  const { ref: featureRef, head } = headInput(graph);
  const { used, callOrders } = layersUpstream(graph, featureRef);
  for (const [path, layer] of used) checkSupported(layer, path);
  const bound = bindWeights(graph, checkpoint.tensors);
  const layerParameters = new Map<string, Map<string, string>>();
  const parameters = new Map<string, readonly number[]>();
  const runningStatistics = new Set<string>();
  // In the configuration's order, which Keras writes in creation order: the same architecture lists its parameters alike.
  for (const [path, layer] of inConfigOrder(graph, used)) {
    const weights = bound.get(path);
    if (!weights) continue;
    checkWeightShapes(layer, weights);
    layerParameters.set(path, new Map([...weights].map(([role, tensor]) => [role, tensor.name])));
    for (const [role, tensor] of weights) {
      parameters.set(tensor.name, tensor.shape);
      if (MOVING_STATISTICS.has(role)) runningStatistics.add(tensor.name);
    }
  }
  const description = `Keras ${graph.name} (${used.size} layers), features: ${head ? `input of ${head}` : 'its output'}`;
  return { file: checkpoint.path, graph, featureRef, callOrders, description, kerasInputShape, layerParameters, parameters, runningStatistics };
}

/**
 * The parameters the features depend on, in the order the model computes them, or undefined
 * when the checkpoint saves no runnable configuration: how a candidate saved under other layer
 * names is matched to a model layer by layer.
 */
export function kerasParameterOrder(checkpoint: Checkpoint): ReadonlyMap<string, readonly number[]> | undefined {
  if (checkpoint.modelConfig === undefined) return undefined;
  try {
    return planModel(checkpoint).parameters;
  } catch (error) {
    if (error instanceof KerasConfigError) return undefined;
    throw error;
  }
}

function inConfigOrder(graph: KerasGraph, used: ReadonlyMap<string, KerasLayer>): [string, KerasLayer][] {
  const ordered: [string, KerasLayer][] = [];
  const visit = (model: KerasGraph, prefix: string) => {
    for (const layer of model.layers) {
      const path = prefix + layer.name;
      if (!used.has(path)) continue;
      ordered.push([path, layer]);
      if (layer.graph) visit(layer.graph, `${path}/`);
    }
  };
  visit(graph, '');
  return ordered;
}

function layerNamed(graph: KerasGraph, name: string): KerasLayer {
  const layer = graph.layers.find((candidate) => candidate.name === name);
  if (!layer) throw new KerasConfigError(`no layer "${name}"`);
  return layer;
}

/** The tensor the head Dense reads, and the head's name; the model's first output when it has no Dense head. */
function headInput(graph: KerasGraph): { ref: TensorRef; head?: string } {
  let ref = graph.outputs[0]!;
  for (let steps = 0; steps <= graph.layers.length; steps++) {
    const layer = layerNamed(graph, ref.layer);
    const call = layer.calls[ref.node];
    if (!call || call.length !== 1) break;
    if (layer.className === 'Dense') return { ref: call[0]!, head: layer.name };
    if (!AFTER_HEAD.has(layer.className)) break;
    ref = call[0]!;
  }
  return { ref: graph.outputs[0]! };
}

/**
 * The calls each graph runs to compute the tensor (nested models' graphs for their outputs),
 * each after the calls it reads, and every layer among them keyed by path.
 */
function layersUpstream(graph: KerasGraph, ref: TensorRef): { used: Map<string, KerasLayer>; callOrders: Map<KerasGraph, [KerasLayer, number][]> } {
  const used = new Map<string, KerasLayer>();
  const callOrders = new Map<KerasGraph, [KerasLayer, number][]>();
  const visitModel = (model: KerasGraph, prefix: string, refs: readonly TensorRef[]) => {
    const order = callOrder(model, refs);
    callOrders.set(model, order);
    for (const [layer] of order) {
      const path = prefix + layer.name;
      if (used.has(path)) continue;
      used.set(path, layer);
      if (layer.graph) visitModel(layer.graph, `${path}/`, layer.graph.outputs);
    }
  };
  visitModel(graph, '', [ref]);
  return { used, callOrders };
}

const SUPPORTED = new Set([
  'InputLayer', 'Dense', 'Conv2D', 'DepthwiseConv2D', 'SeparableConv2D', 'BatchNormalization', 'LayerNormalization', 'Normalization',
  'Rescaling', 'Activation', 'ReLU', 'LeakyReLU', 'PReLU', 'ELU', 'Softmax', 'Flatten', 'Reshape', 'Permute', 'MaxPooling2D',
  'AveragePooling2D', 'GlobalAveragePooling2D', 'GlobalMaxPooling2D', 'GlobalAveragePooling1D', 'GlobalMaxPooling1D', 'ZeroPadding2D',
  'Cropping2D', 'Add', 'Subtract', 'Multiply', 'Average', 'Maximum', 'Minimum', 'Concatenate', ...INFERENCE_IDENTITY,
]);

function checkSupported(layer: KerasLayer, path: string): void {
  if (layer.graph) return;
  const where = `layer "${path}" (${layer.className})`;
  if (!SUPPORTED.has(layer.className)) throw new KerasConfigError(`${where} is not a layer this tool runs`);
  const config = layer.config;
  if (config.data_format === 'channels_first' && layer.className !== 'Flatten') throw new KerasConfigError(`${where} computes channels-first, which is not supported`);
  if (config.groups !== undefined && config.groups !== 1) throw new KerasConfigError(`${where} is a grouped convolution`);
  if (config.activation !== undefined) activationNamed(config.activation, where);
  if (layer.className === 'BatchNormalization' || layer.className === 'LayerNormalization') {
    const axis = Array.isArray(config.axis) && config.axis.length === 1 ? config.axis[0] : config.axis;
    if (axis !== undefined && axis !== -1 && typeof axis !== 'number') throw new KerasConfigError(`${where} normalises over axes ${JSON.stringify(config.axis)}`);
  }
}

/** Keras 2 and TF.js name an activation; Keras 3 may wrap the name in a serialised object. */
function activationNamed(value: unknown, where: string): Activation {
  const name = value === null || value === undefined ? 'linear' : isObject(value) && typeof value.config === 'string' ? value.config : value;
  const activation = typeof name === 'string' ? ACTIVATIONS[name] : undefined;
  if (!activation) throw new KerasConfigError(`${where} uses activation ${JSON.stringify(name)}, which is not supported`);
  return activation;
}

/** The kernel shapes the configuration implies, so a file whose weights do not fit is named at once. */
function checkWeightShapes(layer: KerasLayer, weights: LayerWeights): void {
  const config = layer.config;
  const kernel = weights.get('kernel') ?? weights.get('depthwise_kernel');
  const problem = (tensorName: string, shape: readonly number[], wanted: string) =>
    new KerasConfigError(`tensor ${tensorName} has shape [${shape.join(', ')}], but layer "${layer.name}" (${layer.className}) needs ${wanted}`);
  if (!kernel) return;
  if (layer.className === 'Dense') {
    if (kernel.shape.length !== 2 || (typeof config.units === 'number' && kernel.shape[1] !== config.units)) throw problem(kernel.name, kernel.shape, `[inputs, ${config.units}]`);
  } else {
    const size = pair(config.kernel_size, [kernel.shape[0] ?? 0, kernel.shape[1] ?? 0]);
    const filters = layer.className === 'Conv2D' && typeof config.filters === 'number' ? config.filters : kernel.shape[3];
    if (kernel.shape.length !== 4 || kernel.shape[0] !== size[0] || kernel.shape[1] !== size[1] || kernel.shape[3] !== filters) {
      throw problem(kernel.name, kernel.shape, `a ${size.join('×')} kernel${layer.className === 'Conv2D' ? ` with ${filters} filters` : ''}`);
    }
  }
  const bias = weights.get('bias');
  const outputs = layer.className === 'SeparableConv2D' ? weights.get('pointwise_kernel')?.shape[3] : layer.className === 'DepthwiseConv2D' ? kernel.shape[2]! * kernel.shape[3]! : kernel.shape[kernel.shape.length - 1];
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== outputs)) throw problem(bias.name, bias.shape, `[${outputs}]`);
}

function pair(value: unknown, fallback: readonly [number, number]): [number, number] {
  if (typeof value === 'number') return [value, value];
  if (Array.isArray(value) && value.length === 2 && value.every((v) => typeof v === 'number')) return [value[0] as number, value[1] as number];
  return [fallback[0], fallback[1]];
}

// ---------------------------------------------------------------------------------------
// Running

type Weights = ReadonlyMap<string, ReadonlyMap<string, TfCore.Tensor>>;

class KerasFeatureModel implements FeatureModel {
  readonly description: string;
  readonly inputShape: readonly number[];
  readonly parameters: ReadonlyMap<string, readonly number[]>;
  readonly runningStatistics: ReadonlySet<string>;
  readonly kernelLayout = 'inputs-first' as const;
  /** Samples per batch, measured on the first call. */
  private batchRows: number | undefined;

  constructor(
    private readonly tf: Tf,
    readonly device: string,
    private readonly plan: KerasPlan,
  ) {
    this.description = plan.description;
    const shape = plan.kerasInputShape;
    this.inputShape = isImage(shape) ? [shape[2]!, shape[0]!, shape[1]!] : shape;
    this.parameters = plan.parameters;
    this.runningStatistics = plan.runningStatistics;
  }

  async features(probe: Float32Array, rows: number, parameters: ReadonlyMap<string, Float32Array>, signal?: AbortSignal): Promise<FeatureMatrix> {
    const sampleSize = this.inputShape.reduce((total, size) => total * size, 1);
    if (!Number.isInteger(rows) || rows < 1 || probe.length !== rows * sampleSize) {
      throw new Error(`the probe holds ${probe.length} values, not ${rows} samples of shape [${this.inputShape.join(', ')}]`);
    }
    const weights = this.upload(parameters);
    const batches: Float32Array[] = [];
    let columns = 0;
    try {
      for (let start = 0; start < rows; ) {
        throwIfAborted(signal);
        const count = Math.min(this.batchRows ?? 1, rows - start);
        const run = new GraphRun(this.tf, weights, this.plan.callOrders);
        const input = this.tf.tidy(() => {
          const batch = this.tf.tensor(probe.subarray(start * sampleSize, (start + count) * sampleSize), [count, ...this.inputShape]);
          return isImage(this.plan.kerasInputShape) ? this.tf.transpose(batch, [0, 2, 3, 1]) : batch;
        });
        const [output] = this.run(run, input);
        try {
          const flat = this.tf.reshape(output!, [count, -1]);
          columns = flat.shape[1]!;
          batches.push(await flat.data<'float32'>());
          flat.dispose();
        } finally {
          output!.dispose();
        }
        this.batchRows ??= Math.max(1, Math.floor(ACTIVATION_BUDGET_ELEMENTS / run.largestActivation));
        start += count;
      }
    } finally {
      for (const layer of weights.values()) for (const weight of layer.values()) weight.dispose();
    }
    const values = new Float32Array(rows * columns);
    let offset = 0;
    for (const batch of batches) {
      values.set(batch, offset);
      offset += batch.length;
    }
    return { values, rows, columns };
  }

  /** Holds no tensors between calls. */
  async dispose(): Promise<void> {}

  /** The features of one batch; a layer that fails on its inputs is named with the file. */
  private run(run: GraphRun, input: TfCore.Tensor): TfCore.Tensor[] {
    try {
      return run.model(this.plan.graph, '', [input], [this.plan.featureRef], true);
    } catch (error) {
      if (error instanceof KerasConfigError) throw new CheckpointError(this.plan.file, `its model configuration cannot be run: ${error.message}`);
      throw error;
    }
  }

  private upload(parameters: ReadonlyMap<string, Float32Array>): Weights {
    const weights = new Map<string, Map<string, TfCore.Tensor>>();
    try {
      for (const [path, roles] of this.plan.layerParameters) {
        const layer = new Map<string, TfCore.Tensor>();
        weights.set(path, layer);
        for (const [role, name] of roles) {
          const value = parameters.get(name);
          const shape = this.parameters.get(name)!;
          if (!value) throw new Error(`no value given for parameter ${name} of ${this.description}`);
          if (value.length !== shape.reduce((total, size) => total * size, 1)) throw new Error(`parameter ${name} has ${value.length} values; [${shape.join(', ')}] needs more or fewer`);
          layer.set(role, this.tf.tensor(value, [...shape]));
        }
      }
    } catch (error) {
      for (const layer of weights.values()) for (const weight of layer.values()) weight.dispose();
      throw error;
    }
    return weights;
  }
}

function isImage(shape: readonly number[]): boolean {
  return shape.length === 3;
}

/**
 * One forward pass over a graph. Each layer call's outputs are kept until their last consumer
 * has run, then freed, so memory follows the graph's width rather than its depth.
 */
class GraphRun {
  largestActivation = 1;

  constructor(
    private readonly tf: Tf,
    private readonly weights: Weights,
    private readonly callOrders: KerasPlan['callOrders'],
  ) {}

  /**
   * The `wanted` tensors of `graph` run on `inputs`, which stay the caller's (or are consumed
   * when `consumeInputs`). The returned tensors are the caller's to free.
   */
  model(graph: KerasGraph, prefix: string, inputs: readonly TfCore.Tensor[], wanted: readonly TensorRef[], consumeInputs = false): TfCore.Tensor[] {
    const order = this.callOrders.get(graph)!;
    const key = (ref: { layer: string; node: number }) => `${ref.layer}#${ref.node}`;
    const remainingUses = new Map<string, number>();
    for (const [layer, node] of order) for (const ref of layer.calls[node] ?? []) remainingUses.set(key(ref), (remainingUses.get(key(ref)) ?? 0) + 1);
    for (const ref of wanted) remainingUses.set(key(ref), (remainingUses.get(key(ref)) ?? 0) + 1);
    const outputs = new Map<string, TfCore.Tensor[]>();
    const borrowed = new Set<TfCore.Tensor>(consumeInputs ? [] : inputs);
    const release = (ref: TensorRef) => {
      const left = remainingUses.get(key(ref))! - 1;
      remainingUses.set(key(ref), left);
      if (left > 0) return;
      for (const tensor of outputs.get(key(ref)) ?? []) if (!borrowed.has(tensor)) tensor.dispose();
      outputs.delete(key(ref));
    };
    const tensorAt = (ref: TensorRef) => {
      const tensor = outputs.get(key(ref))?.[ref.tensor];
      if (!tensor) throw new KerasConfigError(`layer "${ref.layer}" call ${ref.node} has no output ${ref.tensor}`);
      return tensor;
    };
    try {
      for (const [layer, node] of order) {
        const path = prefix + layer.name;
        if (layer.className === 'InputLayer') {
          const index = graph.inputs.findIndex((ref) => ref.layer === layer.name);
          if (index < 0 || !inputs[index]) throw new KerasConfigError(`input layer "${layer.name}" is not one of the model's inputs`);
          outputs.set(key({ layer: layer.name, node }), [inputs[index]]);
          continue;
        }
        const call = layer.calls[node]!;
        const callInputs = call.map(tensorAt);
        let results: TfCore.Tensor[];
        try {
          results = layer.graph
            ? this.model(layer.graph, `${path}/`, callInputs, layer.graph.outputs)
            : [this.tf.tidy(() => this.apply(layer, path, callInputs))];
        } catch (error) {
          if (error instanceof KerasConfigError) throw error;
          throw new KerasConfigError(`layer "${path}" (${layer.className}) failed on inputs ${callInputs.map((t) => `[${t.shape.slice(1).join(', ')}]`).join(', ')}: ${(error as Error).message}`);
        }
        for (const result of results) this.largestActivation = Math.max(this.largestActivation, result.size);
        outputs.set(key({ layer: layer.name, node }), results);
        for (const ref of call) release(ref);
      }
      return wanted.map((ref) => this.tf.clone(tensorAt(ref)));
    } finally {
      for (const tensors of outputs.values()) for (const tensor of tensors) if (!borrowed.has(tensor)) tensor.dispose();
    }
  }

  private weight(path: string, role: string): TfCore.Tensor {
    const weight = this.weights.get(path)?.get(role);
    if (!weight) throw new KerasConfigError(`layer "${path}" has no ${role}`);
    return weight;
  }

  private apply(layer: KerasLayer, path: string, inputs: readonly TfCore.Tensor[]): TfCore.Tensor {
    const tf = this.tf;
    const config = layer.config;
    const x = inputs[0]!;
    const activate = (y: TfCore.Tensor) => activationNamed(config.activation, path)(tf, y);
    const bias = (y: TfCore.Tensor) => (config.use_bias === false ? y : tf.add(y, this.weight(path, 'bias')));
    const strides = pair(config.strides, [1, 1]);
    const dilations = pair(config.dilation_rate, [1, 1]);
    const padding = config.padding === 'same' ? 'same' : 'valid';
    if (INFERENCE_IDENTITY.has(layer.className)) return tf.clone(x);
    switch (layer.className) {
      case 'Dense': {
        const kernel = this.weight(path, 'kernel') as TfCore.Tensor2D;
        const flat = tf.reshape(x, [-1, kernel.shape[0]]) as TfCore.Tensor2D;
        return activate(bias(tf.reshape(tf.matMul(flat, kernel), [...x.shape.slice(0, -1), kernel.shape[1]])));
      }
      case 'Conv2D':
        return activate(bias(tf.conv2d(x as TfCore.Tensor4D, this.weight(path, 'kernel') as TfCore.Tensor4D, strides, padding, 'NHWC', dilations)));
      case 'DepthwiseConv2D':
        return activate(bias(tf.depthwiseConv2d(x as TfCore.Tensor4D, this.weight(path, 'depthwise_kernel') as TfCore.Tensor4D, strides, padding, 'NHWC', dilations)));
      case 'SeparableConv2D': {
        const depthwise = this.weight(path, 'depthwise_kernel') as TfCore.Tensor4D;
        const pointwise = this.weight(path, 'pointwise_kernel') as TfCore.Tensor4D;
        return activate(bias(tf.separableConv2d(x as TfCore.Tensor4D, depthwise, pointwise, strides, padding, dilations, 'NHWC')));
      }
      case 'BatchNormalization': {
        const channels = x.shape[x.shape.length - 1]!;
        const gamma = config.scale === false ? tf.ones([channels]) : this.weight(path, 'gamma');
        const beta = config.center === false ? tf.zeros([channels]) : this.weight(path, 'beta');
        return tf.batchNorm(x, this.weight(path, 'moving_mean'), this.weight(path, 'moving_variance'), beta, gamma, numberOr(config.epsilon, 1e-3));
      }
      case 'LayerNormalization': {
        const { mean, variance } = tf.moments(x, -1, true);
        let y = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, numberOr(config.epsilon, 1e-3))));
        if (config.scale !== false) y = tf.mul(y, this.weight(path, 'gamma'));
        return config.center === false ? y : tf.add(y, this.weight(path, 'beta'));
      }
      case 'Normalization': {
        const channels = x.shape[x.shape.length - 1]!;
        const statistic = (role: 'mean' | 'variance') => {
          const given = config[role];
          const value = given === undefined || given === null ? this.weight(path, role) : tf.tensor(given as number | number[]);
          return value.size === channels ? tf.reshape(value, [channels]) : value;
        };
        // Keras divides by the standard deviation floored at its epsilon, 1e-7.
        return tf.div(tf.sub(x, statistic('mean')), tf.maximum(tf.sqrt(statistic('variance')), 1e-7));
      }
      case 'Rescaling':
        return tf.add(tf.mul(x, numberOr(config.scale, 1)), numberOr(config.offset, 0));
      case 'Activation':
        return activate(x);
      case 'ReLU': {
        const threshold = numberOr(config.threshold, 0);
        const slope = numberOr(config.negative_slope, 0);
        let y = tf.where(tf.greaterEqual(x, threshold), x, tf.mul(tf.sub(x, threshold), slope));
        if (typeof config.max_value === 'number') y = tf.minimum(y, config.max_value);
        return y;
      }
      case 'LeakyReLU':
        return tf.leakyRelu(x, numberOr(config.negative_slope ?? config.alpha, 0.3));
      case 'PReLU':
        return tf.prelu(x, this.weight(path, 'alpha'));
      case 'ELU':
        return tf.where(tf.greater(x, 0), x, tf.mul(tf.sub(tf.exp(x), 1), numberOr(config.alpha, 1)));
      case 'Softmax':
        return tf.softmax(x, typeof config.axis === 'number' ? config.axis : -1);
      case 'Flatten': {
        const ordered = config.data_format === 'channels_first' && x.shape.length === 4 ? tf.transpose(x, [0, 3, 1, 2]) : x;
        return tf.reshape(ordered, [x.shape[0]!, -1]);
      }
      case 'Reshape':
        return tf.reshape(x, [x.shape[0]!, ...integers(config.target_shape, `${path}'s target_shape`)]);
      case 'Permute':
        return tf.transpose(x, [0, ...integers(config.dims, `${path}'s dims`)]);
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const size = pair(config.pool_size, [2, 2]);
        const step = config.strides === null || config.strides === undefined ? size : pair(config.strides, size);
        const pool = layer.className === 'MaxPooling2D' ? tf.maxPool : tf.avgPool;
        return pool(x as TfCore.Tensor4D, size, step, padding);
      }
      case 'GlobalAveragePooling2D':
        return tf.mean(x, [1, 2], config.keepdims === true);
      case 'GlobalMaxPooling2D':
        return tf.max(x, [1, 2], config.keepdims === true);
      case 'GlobalAveragePooling1D':
        return tf.mean(x, 1, config.keepdims === true);
      case 'GlobalMaxPooling1D':
        return tf.max(x, 1, config.keepdims === true);
      case 'ZeroPadding2D': {
        const [[top, bottom], [left, right]] = spatialPairs(config.padding, 1);
        return tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]]);
      }
      case 'Cropping2D': {
        const [[top, bottom], [left, right]] = spatialPairs(config.cropping, 0);
        const [rows, height, width, channels] = x.shape as [number, number, number, number];
        return tf.slice(x, [0, top, left, 0], [rows, height - top - bottom, width - left - right, channels]);
      }
      case 'Add':
        return inputs.slice(1).reduce((sum, y) => tf.add(sum, y), x);
      case 'Subtract':
        return tf.sub(x, inputs[1]!);
      case 'Multiply':
        return inputs.slice(1).reduce((product, y) => tf.mul(product, y), x);
      case 'Average':
        return tf.div(inputs.slice(1).reduce((sum, y) => tf.add(sum, y), x), inputs.length);
      case 'Maximum':
        return inputs.slice(1).reduce((most, y) => tf.maximum(most, y), x);
      case 'Minimum':
        return inputs.slice(1).reduce((least, y) => tf.minimum(least, y), x);
      case 'Concatenate':
        return tf.concat([...inputs], typeof config.axis === 'number' ? config.axis : -1);
      default:
        throw new KerasConfigError(`layer "${path}" (${layer.className}) is not a layer this tool runs`);
    }
  }
}

/** The layer calls the wanted tensors depend on, each after the calls it reads. */
function callOrder(graph: KerasGraph, wanted: readonly TensorRef[]): [KerasLayer, number][] {
  const byName = new Map(graph.layers.map((layer) => [layer.name, layer]));
  const order: [KerasLayer, number][] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  // Iterative depth-first search: deep models would overflow a recursive one's stack.
  const stack: { ref: TensorRef; expanded: boolean }[] = wanted.map((ref) => ({ ref, expanded: false }));
  while (stack.length > 0) {
    const entry = stack.pop()!;
    const key = `${entry.ref.layer}#${entry.ref.node}`;
    const layer = byName.get(entry.ref.layer);
    if (!layer) throw new KerasConfigError(`no layer "${entry.ref.layer}"`);
    if (entry.expanded) {
      state.set(key, 'done');
      order.push([layer, entry.ref.node]);
      continue;
    }
    if (state.get(key) === 'done') continue;
    if (state.get(key) === 'visiting') throw new KerasConfigError(`layer "${layer.name}" depends on its own output`);
    state.set(key, 'visiting');
    stack.push({ ref: entry.ref, expanded: true });
    if (layer.className === 'InputLayer') continue;
    const call = layer.calls[entry.ref.node];
    if (!call) throw new KerasConfigError(`layer "${layer.name}" is used at call ${entry.ref.node}, which the configuration does not list`);
    for (const input of call) if (state.get(`${input.layer}#${input.node}`) !== 'done') stack.push({ ref: input, expanded: false });
  }
  return order;
}

function numberOr(value: unknown, fallback: number): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : fallback;
}

function integers(value: unknown, what: string): number[] {
  if (!Array.isArray(value) || !value.every((item) => Number.isInteger(item))) throw new KerasConfigError(`${what} is not a list of integers`);
  return value as number[];
}

/** ZeroPadding2D's and Cropping2D's forms: n, [rows, columns] or [[top, bottom], [left, right]]. */
function spatialPairs(value: unknown, fallback: number): [[number, number], [number, number]] {
  if (value === undefined || value === null) return [[fallback, fallback], [fallback, fallback]];
  if (typeof value === 'number') return [[value, value], [value, value]];
  if (Array.isArray(value) && value.length === 2) {
    const [rows, columns] = value;
    if (typeof rows === 'number' && typeof columns === 'number') return [[rows, rows], [columns, columns]];
    if (Array.isArray(rows) && Array.isArray(columns)) return [pair(rows, [0, 0]), pair(columns, [0, 0])];
  }
  throw new KerasConfigError(`padding ${JSON.stringify(value)} is not n, [rows, columns] or [[top, bottom], [left, right]]`);
}
