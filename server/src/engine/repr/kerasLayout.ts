import type { Checkpoint } from '../formats/checkpoint';
import type { Tensor } from '../formats/tensor';

/**
 * Keras and TensorFlow.js weights seen with PyTorch's names and layouts, so the architectures
 * recognised from state dicts (architecture.ts) run them too. Keras names a layer's weights
 * `dense/kernel:0` (Keras 2), `dense/vars/0` (Keras 3) or `dense_Dense1/kernel` (TF.js); its
 * Dense kernel is in × out and its conv kernel HWIO, where PyTorch has out × in and OIHW.
 */
const KERAS_FORMATS = new Set(['keras', 'keras-h5', 'tfjs']);

const WEIGHT_NAMES: Readonly<Record<string, string>> = {
  kernel: 'weight',
  bias: 'bias',
  gamma: 'weight',
  beta: 'bias',
  moving_mean: 'running_mean',
  moving_variance: 'running_var',
};

/** Keras 3 numbers a layer's variables: a kernel and a bias, or BatchNorm's four vectors. */
const KERAS3_DENSE = ['weight', 'bias'];
const KERAS3_BATCH_NORM = ['weight', 'bias', 'running_mean', 'running_var'];

/** The checkpoint itself, or for Keras and TF.js files a view with PyTorch names and layouts. */
export function inPytorchLayout(checkpoint: Checkpoint): Checkpoint {
  if (!KERAS_FORMATS.has(checkpoint.format)) return checkpoint;
  const layers = new Map<string, { role: string; tensor: Tensor }[]>();
  for (const tensor of checkpoint.tensors) {
    const named = /^(.*)\/([A-Za-z_]+)(?::\d+)?$/.exec(tensor.name);
    const numbered = /^(.*)\/vars\/(\d+)$/.exec(tensor.name);
    const layer = (numbered ?? named)?.[1];
    if (!layer) continue;
    const role = numbered ? numbered[2]! : named![2]!;
    layers.set(layer, [...(layers.get(layer) ?? []), { role, tensor }]);
  }
  const tensors: Tensor[] = [];
  for (const [layer, weights] of layers) {
    const module = layer.replace(/[/.]/g, '_');
    const keras3 = weights.every((weight) => /^\d+$/.test(weight.role));
    const roles = keras3 ? (weights.length === 4 && weights.every((w) => w.tensor.shape.length === 1) ? KERAS3_BATCH_NORM : KERAS3_DENSE) : undefined;
    for (const { role, tensor } of weights) {
      const torchRole = roles ? roles[Number(role)] : WEIGHT_NAMES[role];
      if (!torchRole) continue;
      tensors.push(permuted(`${module}.${torchRole}`, tensor));
    }
  }
  return { ...checkpoint, tensors, close: () => checkpoint.close() };
}

/** A Dense kernel transposed (in × out → out × in), a conv kernel from HWIO to OIHW, anything else as it is. */
function permuted(name: string, tensor: Tensor): Tensor {
  const order = TO_OUTPUTS_FIRST[tensor.shape.length];
  return order ? new PermutedTensor(name, tensor, order) : renamed(name, tensor);
}

function renamed(name: string, tensor: Tensor): Tensor {
  return {
    name,
    dtype: tensor.dtype,
    shape: tensor.shape,
    elementCount: tensor.elementCount,
    byteSize: tensor.byteSize,
    read: (start, count) => tensor.read(start, count),
    chunks: (options) => tensor.chunks(options),
  };
}

/**
 * Reads the whole source tensor and reorders its axes. Only the representation methods use
 * this view, and they hold every parameter of the feature extractor in memory anyway.
 */
class PermutedTensor implements Tensor {
  readonly shape: readonly number[];
  readonly dtype: Tensor['dtype'];
  readonly elementCount: number;
  readonly byteSize: number;

  constructor(
    readonly name: string,
    private readonly source: Tensor,
    private readonly order: readonly number[],
  ) {
    this.shape = order.map((axis) => source.shape[axis]!);
    this.dtype = source.dtype;
    this.elementCount = source.elementCount;
    this.byteSize = source.byteSize;
  }

  async read(start = 0, count = this.elementCount - start): Promise<Float64Array> {
    return (await this.all()).subarray(start, start + count);
  }

  /** One chunk: the reordering needs every value at once. */
  async *chunks(): AsyncIterable<Float64Array> {
    yield await this.all();
  }

  private async all(): Promise<Float64Array> {
    return permuteAxes(await this.source.read(), this.source.shape, this.order, new Float64Array(this.elementCount));
  }
}

/** Keras's inputs-first kernels (Dense in × out, conv HWIO) to PyTorch's outputs-first order, and back. */
export const TO_OUTPUTS_FIRST: Readonly<Record<number, readonly number[]>> = { 2: [1, 0], 4: [3, 2, 0, 1] };
export const TO_INPUTS_FIRST: Readonly<Record<number, readonly number[]>> = { 2: [1, 0], 4: [2, 3, 1, 0] };

/** `values` of `shape` with its axes in `order` (result axis d is source axis order[d]), written into `result`. */
export function permuteAxes<T extends Float32Array | Float64Array>(values: ArrayLike<number>, shape: readonly number[], order: readonly number[], result: T): T {
  const sourceStrides = stridesOf(shape);
  const strides = order.map((axis) => sourceStrides[axis]!);
  const permutedShape = order.map((axis) => shape[axis]!);
  const position = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < result.length; i++) {
    let offset = 0;
    for (let d = 0; d < position.length; d++) offset += position[d]! * strides[d]!;
    result[i] = values[offset]!;
    for (let d = position.length - 1; d >= 0; d--) {
      if (++position[d]! < permutedShape[d]!) break;
      position[d] = 0;
    }
  }
  return result;
}

function stridesOf(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length).fill(1);
  for (let d = shape.length - 2; d >= 0; d--) strides[d] = strides[d + 1]! * shape[d + 1]!;
  return strides;
}
