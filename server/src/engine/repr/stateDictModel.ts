import type * as TfCore from '@tensorflow/tfjs-core';
import { CheckpointError, throwIfAborted } from '../errors';
import { selectTfjsBackend, type DevicePreference } from '../compute/tfjsBackend';
import { normalisedNames } from '../fingerprint/tensorNames';
import type { Checkpoint } from '../formats/checkpoint';
import type { Tensor } from '../formats/tensor';
import type {
  Architecture,
  BatchNormLayer,
  Conv2dLayer,
  ConvBatchNorm,
  ConvNetArchitecture,
  LayerNormLayer,
  LinearLayer,
  MlpArchitecture,
  ResNetArchitecture,
  TransformerBlock,
  VisionTransformerArchitecture,
} from './architecture';
import type { FeatureMatrix, FeatureModel } from './featureModel';

/**
 * Runs a recognised architecture (architecture.ts) from state-dict values with TensorFlow.js
 * ops on the backend selectTfjsBackend picks. Parameters keep PyTorch's layouts (Linear
 * [out, in], conv OIHW) and probes arrive channels-first (NCHW) as PyTorch reads them; tfjs
 * convolves channels-last, so images are transposed to NHWC and conv weights to HWIO on the
 * way in, and maps back to channels-first before a flatten so linear layers see PyTorch's order.
 * Everything runs in eval mode: BatchNorm uses its running statistics, nothing is dropped out.
 */

export interface StateDictModelOptions {
  readonly device?: DevicePreference;
}

type Tf = typeof TfCore;
type Weights = ReadonlyMap<string, TfCore.Tensor>;

/**
 * Largest intermediate activation, in elements, a batch may produce: the probe is cut into
 * batches under this bound, and each stage of the forward pass frees what it no longer needs,
 * so memory stays near a few times this (16 MB of float32) whatever the probe's length.
 */
const ACTIVATION_BUDGET_ELEMENTS = 4 * 1024 * 1024;

export async function openStateDictFeatureModel(architecture: Architecture, options: StateDictModelOptions = {}): Promise<FeatureModel> {
  const selection = await selectTfjsBackend(options.device ?? 'auto');
  return new StateDictFeatureModel(selection.tf, `tfjs ${selection.backend}`, architecture);
}

/**
 * Reads a checkpoint's values for every parameter the model runs on, as float32. Names are
 * matched after removing wrapper prefixes, so a DataParallel or Lightning checkpoint fits a
 * model recognised from a plain one. Memory is bounded by the model's size: each shape is
 * checked against the model's before its values are read.
 */
export async function loadParameters(checkpoint: Checkpoint, model: FeatureModel, signal?: AbortSignal): Promise<Map<string, Float32Array>> {
  const byName = new Map<string, Tensor>();
  normalisedNames(checkpoint.tensors.map((tensor) => tensor.name)).forEach((name, i) => byName.set(name, checkpoint.tensors[i]!));
  const values = new Map<string, Float32Array>();
  for (const [name, shape] of model.parameters) {
    const tensor = byName.get(name);
    if (!tensor) throw new CheckpointError(checkpoint.path, `tensor ${name} is missing; ${model.description} needs it`);
    if (!sameShape(tensor.shape, shape)) {
      throw new CheckpointError(checkpoint.path, `tensor ${name} has shape [${tensor.shape.join(', ')}]; ${model.description} needs [${shape.join(', ')}]`);
    }
    const target = new Float32Array(tensor.elementCount);
    let offset = 0;
    for await (const chunk of tensor.chunks({ signal })) {
      target.set(chunk, offset);
      offset += chunk.length;
    }
    values.set(name, target);
  }
  throwIfAborted(signal);
  return values;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((size, i) => size === b[i]);
}

function product(shape: readonly number[]): number {
  return shape.reduce((total, size) => total * size, 1);
}

class StateDictFeatureModel implements FeatureModel {
  readonly description: string;
  readonly inputShape: readonly number[];
  readonly parameters: ReadonlyMap<string, readonly number[]>;
  private readonly batchRows: number;
  private readonly convWeights: ReadonlySet<string>;

  constructor(
    private readonly tf: Tf,
    readonly device: string,
    private readonly architecture: Architecture,
  ) {
    this.description = architecture.description;
    this.inputShape = architecture.inputShape;
    this.parameters = architecture.parameters;
    this.batchRows = Math.max(1, Math.floor(ACTIVATION_BUDGET_ELEMENTS / largestActivation(architecture)));
    this.convWeights = new Set(convLayersOf(architecture).map((layer) => layer.weight));
  }

  async features(probe: Float32Array, rows: number, parameters: ReadonlyMap<string, Float32Array>, signal?: AbortSignal): Promise<FeatureMatrix> {
    const sampleSize = product(this.inputShape);
    if (!Number.isInteger(rows) || rows < 1 || probe.length !== rows * sampleSize) {
      throw new Error(`the probe holds ${probe.length} values, not ${rows} samples of shape [${this.inputShape.join(', ')}]`);
    }
    const columns = this.architecture.featureWidth;
    const values = new Float32Array(rows * columns);
    const weights = this.upload(parameters);
    try {
      for (let start = 0; start < rows; start += this.batchRows) {
        throwIfAborted(signal);
        const count = Math.min(this.batchRows, rows - start);
        const batch = this.tf.tensor(probe.subarray(start * sampleSize, (start + count) * sampleSize), [count, ...this.inputShape]);
        const output = this.forward(batch, weights);
        try {
          values.set(await output.data(), start * columns);
        } finally {
          output.dispose();
        }
      }
    } finally {
      for (const weight of weights.values()) weight.dispose();
    }
    return { values, rows, columns };
  }

  /** Holds no tensors between calls: each features() call frees its own. */
  async dispose(): Promise<void> {}

  private upload(parameters: ReadonlyMap<string, Float32Array>): Weights {
    const weights = new Map<string, TfCore.Tensor>();
    try {
      for (const [name, shape] of this.parameters) {
        const value = parameters.get(name);
        if (!value) throw new Error(`no value given for parameter ${name} of ${this.description}`);
        if (value.length !== product(shape)) throw new Error(`parameter ${name} has ${value.length} values; [${shape.join(', ')}] needs ${product(shape)}`);
        const tensor = this.tf.tensor(value, [...shape]);
        if (this.convWeights.has(name)) {
          weights.set(name, this.tf.transpose(tensor, [2, 3, 1, 0]));
          tensor.dispose();
        } else {
          weights.set(name, tensor);
        }
      }
    } catch (error) {
      for (const weight of weights.values()) weight.dispose();
      throw error;
    }
    return weights;
  }

  /** Consumes `input`; returns [rows, featureWidth]. */
  private forward(input: TfCore.Tensor, weights: Weights): TfCore.Tensor {
    const ops = new Ops(this.tf, weights);
    switch (this.architecture.kind) {
      case 'mlp':
        return ops.mlp(input, this.architecture);
      case 'convnet':
        return ops.convNet(input, this.architecture);
      case 'resnet':
        return ops.resNet(input, this.architecture);
      case 'vit':
        return ops.visionTransformer(input, this.architecture);
    }
  }
}

/**
 * The layers of the recognised architectures. Each `step` runs one stage in a tidy scope and
 * frees the stage's input, so intermediates do not pile up over a deep network.
 */
class Ops {
  constructor(
    private readonly tf: Tf,
    private readonly weights: Weights,
  ) {}

  private weight(name: string): TfCore.Tensor {
    const weight = this.weights.get(name);
    if (!weight) throw new Error(`parameter ${name} was not uploaded`);
    return weight;
  }

  private step(input: TfCore.Tensor, stage: (x: TfCore.Tensor) => TfCore.Tensor): TfCore.Tensor {
    try {
      return this.tf.tidy(() => stage(input));
    } finally {
      input.dispose();
    }
  }

  mlp(input: TfCore.Tensor, architecture: MlpArchitecture): TfCore.Tensor {
    let x = input;
    for (const layer of architecture.layers) x = this.step(x, (h) => this.tf.relu(this.linear(h, layer)));
    return x;
  }

  convNet(input: TfCore.Tensor, architecture: ConvNetArchitecture): TfCore.Tensor {
    let x = this.step(input, (h) => this.toChannelsLast(h));
    for (const block of architecture.blocks) {
      x = this.step(x, (h) => this.tf.maxPool(this.tf.relu(this.convBatchNorm(h, block)) as TfCore.Tensor4D, 2, 2, 'valid'));
    }
    // Flatten channels-first, as PyTorch's flatten of NCHW maps does.
    x = this.step(x, (h) => this.tf.reshape(this.tf.transpose(h, [0, 3, 1, 2]), [h.shape[0]!, -1]));
    for (const layer of architecture.linear) x = this.step(x, (h) => this.tf.relu(this.linear(h, layer)));
    return x;
  }

  resNet(input: TfCore.Tensor, architecture: ResNetArchitecture): TfCore.Tensor {
    let x = this.step(input, (h) => this.toChannelsLast(h));
    x = this.step(x, (h) => this.tf.maxPool(this.tf.relu(this.convBatchNorm(h, architecture.stem)) as TfCore.Tensor4D, 3, 2, 1));
    for (const block of architecture.stages.flat()) {
      x = this.step(x, (h) => {
        let out = h;
        block.layers.forEach((layer, i) => {
          out = this.convBatchNorm(out, layer);
          if (i < block.layers.length - 1) out = this.tf.relu(out);
        });
        const shortcut = block.shortcut ? this.convBatchNorm(h, block.shortcut) : h;
        return this.tf.relu(this.tf.add(out, shortcut));
      });
    }
    // Global average pooling (torchvision's AdaptiveAvgPool2d(1)).
    return this.step(x, (h) => this.tf.mean(h, [1, 2]));
  }

  visionTransformer(input: TfCore.Tensor, architecture: VisionTransformerArchitecture): TfCore.Tensor {
    const tf = this.tf;
    let x = this.step(input, (h) => {
      const patches = this.conv(this.toChannelsLast(h), architecture.patchEmbedding);
      const [rows, , , width] = patches.shape as [number, number, number, number];
      // Tokens in row-major patch order, as PyTorch's flatten(2).transpose(1, 2) gives.
      const tokens = tf.reshape(patches, [rows, -1, width]);
      const classTokens = tf.tile(this.weight(architecture.classToken), [rows, 1, 1]);
      return tf.add(tf.concat([classTokens, tokens], 1), this.weight(architecture.positionEmbedding));
    });
    for (const block of architecture.blocks) {
      x = this.step(x, (h) => tf.add(h, this.attention(this.layerNorm(h, block.norm1), block, architecture.attentionHeads)));
      x = this.step(x, (h) => tf.add(h, this.linear(this.gelu(this.linear(this.layerNorm(h, block.norm2), block.fc1)), block.fc2)));
    }
    return this.step(x, (h) => {
      const [rows, , width] = h.shape as [number, number, number];
      return tf.reshape(tf.slice(this.layerNorm(h, architecture.finalNorm), [0, 0, 0], [rows, 1, width]), [rows, width]);
    });
  }

  /** Multi-head self-attention of timm's Attention and Hugging Face's ViTSelfAttention. */
  private attention(x: TfCore.Tensor, block: TransformerBlock, heads: number): TfCore.Tensor {
    const tf = this.tf;
    const [rows, tokens, width] = x.shape as [number, number, number];
    const headWidth = width / heads;
    let query: TfCore.Tensor;
    let key: TfCore.Tensor;
    let value: TfCore.Tensor;
    if ('fused' in block.attention) {
      // timm's qkv output is [query | key | value], each split into heads in order.
      [query, key, value] = tf.split(this.linear(x, block.attention.fused), 3, 2) as [TfCore.Tensor, TfCore.Tensor, TfCore.Tensor];
    } else {
      query = this.linear(x, block.attention.query);
      key = this.linear(x, block.attention.key);
      value = this.linear(x, block.attention.value);
    }
    const splitHeads = (t: TfCore.Tensor) => tf.reshape(tf.transpose(tf.reshape(t, [rows, tokens, heads, headWidth]), [0, 2, 1, 3]), [rows * heads, tokens, headWidth]);
    const scores = tf.mul(tf.matMul(splitHeads(query), splitHeads(key), false, true), 1 / Math.sqrt(headWidth));
    const mixed = tf.matMul(tf.softmax(scores), splitHeads(value));
    const merged = tf.reshape(tf.transpose(tf.reshape(mixed, [rows, heads, tokens, headWidth]), [0, 2, 1, 3]), [rows, tokens, width]);
    return this.linear(merged, block.projection);
  }

  /** x·Wᵀ + b over the last axis of a tensor of any rank. */
  private linear(x: TfCore.Tensor, layer: LinearLayer): TfCore.Tensor {
    const tf = this.tf;
    const leading = x.shape.slice(0, -1);
    const flat = tf.reshape(x, [-1, layer.inputs]) as TfCore.Tensor2D;
    let y: TfCore.Tensor = tf.matMul(flat, this.weight(layer.weight) as TfCore.Tensor2D, false, true);
    if (layer.bias) y = tf.add(y, this.weight(layer.bias));
    return leading.length === 1 ? y : tf.reshape(y, [...leading, layer.outputs]);
  }

  private conv(x: TfCore.Tensor, layer: Conv2dLayer): TfCore.Tensor {
    const y = this.tf.conv2d(x as TfCore.Tensor4D, this.weight(layer.weight) as TfCore.Tensor4D, layer.stride, layer.padding);
    return layer.bias ? this.tf.add(y, this.weight(layer.bias)) : y;
  }

  private batchNorm(x: TfCore.Tensor, norm: BatchNormLayer): TfCore.Tensor {
    const w = (name: string) => this.weight(name) as TfCore.Tensor1D;
    return this.tf.batchNorm(x, w(norm.runningMean), w(norm.runningVar), w(norm.bias), w(norm.weight), norm.epsilon);
  }

  private convBatchNorm(x: TfCore.Tensor, pair: ConvBatchNorm): TfCore.Tensor {
    return this.batchNorm(this.conv(x, pair.conv), pair.norm);
  }

  private layerNorm(x: TfCore.Tensor, norm: LayerNormLayer): TfCore.Tensor {
    const tf = this.tf;
    const { mean, variance } = tf.moments(x, -1, true);
    const normalised = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, norm.epsilon)));
    return tf.add(tf.mul(normalised, this.weight(norm.weight)), this.weight(norm.bias));
  }

  /** The exact GELU, x·Φ(x), that timm's nn.GELU and Hugging Face's "gelu" compute. */
  private gelu(x: TfCore.Tensor): TfCore.Tensor {
    const tf = this.tf;
    return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
  }

  private toChannelsLast(x: TfCore.Tensor): TfCore.Tensor {
    return this.tf.transpose(x, [0, 2, 3, 1]);
  }
}

function convLayersOf(architecture: Architecture): Conv2dLayer[] {
  switch (architecture.kind) {
    case 'mlp':
      return [];
    case 'convnet':
      return architecture.blocks.map((block) => block.conv);
    case 'resnet':
      return [architecture.stem, ...architecture.stages.flat().flatMap((block) => [...block.layers, ...(block.shortcut ? [block.shortcut] : [])])].map((pair) => pair.conv);
    case 'vit':
      return [architecture.patchEmbedding];
  }
}

/** Elements of the largest activation one sample produces, to size batches. */
function largestActivation(architecture: Architecture): number {
  switch (architecture.kind) {
    case 'mlp':
      return Math.max(architecture.inputShape[0]!, ...architecture.layers.map((layer) => layer.outputs));
    case 'convnet': {
      let [channels, height, width] = architecture.inputShape as [number, number, number];
      let largest = channels * height * width;
      for (const { conv } of architecture.blocks) {
        [channels, height, width] = [conv.outChannels, convOutputSize(height, conv), convOutputSize(width, conv)];
        largest = Math.max(largest, channels * height * width);
        [height, width] = [Math.floor(height / 2), Math.floor(width / 2)];
      }
      return largest;
    }
    case 'resnet': {
      let [channels, height, width] = architecture.inputShape as [number, number, number];
      let largest = channels * height * width;
      const stem = architecture.stem.conv;
      [height, width] = [convOutputSize(height, stem), convOutputSize(width, stem)];
      largest = Math.max(largest, stem.outChannels * height * width);
      // The 3×3 max pool with stride 2 and padding 1.
      [height, width] = [Math.floor((height - 1) / 2) + 1, Math.floor((width - 1) / 2) + 1];
      for (const block of architecture.stages.flat()) {
        for (const { conv } of block.layers) {
          [height, width] = [convOutputSize(height, conv), convOutputSize(width, conv)];
          largest = Math.max(largest, conv.outChannels * height * width);
        }
      }
      return largest;
    }
    case 'vit': {
      const [, height, width] = architecture.inputShape as [number, number, number];
      const tokens = 1 + (height * width) / architecture.patchEmbedding.stride ** 2;
      const hidden = Math.max(3 * architecture.featureWidth, ...architecture.blocks.map((block) => block.fc1.outputs));
      return Math.max(tokens * hidden, architecture.attentionHeads * tokens * tokens);
    }
  }
}

function convOutputSize(size: number, conv: Conv2dLayer): number {
  return Math.floor((size + 2 * conv.padding - conv.kernel[0]) / conv.stride) + 1;
}
