/**
 * Genuine Keras-style models for the Keras executor's tests, built and run by TensorFlow.js's own
 * layers API (tfjs-layers) on the pure-JS cpu backend: the models, their TF.js files as
 * `model.save` writes them, the same models as Keras 2 `.h5` and Keras 3 `.keras` files
 * (test/fixtures/keras/write_keras_models.py), reference features computed by tfjs-layers, and
 * a small lineage of CNNs pretrained and fine-tuned by tfjs-layers on Fashion-MNIST.
 *
 * The engine under test selects its own TensorFlow.js backend (wasm here) in the same process
 * and the same tfjs-core instance; every tfjs-layers computation below runs on 'cpu' and puts
 * back the backend it found, so the two never run on each other's backend.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';
import { REPO_ROOT } from '../helpers';
import { seededRandom, type Random } from './random';

const PYTHON = '/usr/bin/python3';
const KERAS_WRITER = path.join(REPO_ROOT, 'test', 'fixtures', 'keras', 'write_keras_models.py');

/** Runs tfjs-layers work on the cpu backend and restores whichever backend was selected before. */
export async function onCpu<T>(work: () => Promise<T> | T): Promise<T> {
  const previous = tf.engine().backendName;
  if (previous !== 'cpu') await tf.setBackend('cpu');
  try {
    return await work();
  } finally {
    if (previous && previous !== 'cpu') await tf.setBackend(previous);
  }
}

// ---------------------------------------------------------------------------------------
// Architectures

export type ArchitectureName = 'mlp' | 'cnn' | 'resnet' | 'nested';

export interface ReferenceArchitecture {
  readonly name: ArchitectureName;
  /** One sample as the engine's probes shape it: channels-first for images. */
  readonly inputShape: readonly number[];
  /** Width of the head Dense layer's input. */
  readonly featureWidth: number;
  /** Width of the head's output. */
  readonly classes: number;
  /** The model with tfjs-layers' default initial weights; seedWeights makes them reproducible. */
  build(): tfl.LayersModel;
}

export interface ConvNetOptions {
  readonly imageSize: number;
  readonly filters: number;
  readonly hidden: number;
  readonly classes: number;
  readonly dropoutSeed?: number;
  /** BatchNormalization's moving-average momentum (Keras's default 0.99 unless given). */
  readonly momentum?: number;
}

/**
 * Sequential CNN: Conv2D(relu, same) → BatchNormalization → MaxPooling2D → Conv2D(valid) →
 * BatchNormalization → Activation → AveragePooling2D → Dropout → Flatten → Dense(relu) →
 * Dense(softmax). The Flatten runs channels-last, so the hidden Dense reads NHWC order.
 */
export function convNet(options: ConvNetOptions): tfl.Sequential {
  const { imageSize, filters, hidden, classes } = options;
  return tfl.sequential({
    layers: [
      tfl.layers.conv2d({ inputShape: [imageSize, imageSize, 1], filters, kernelSize: 3, padding: 'same', activation: 'relu' }),
      tfl.layers.batchNormalization({ momentum: options.momentum }),
      tfl.layers.maxPooling2d({ poolSize: 2 }),
      tfl.layers.conv2d({ filters: 2 * filters, kernelSize: 3 }),
      tfl.layers.batchNormalization({ momentum: options.momentum }),
      tfl.layers.activation({ activation: 'relu' }),
      tfl.layers.averagePooling2d({ poolSize: 2 }),
      tfl.layers.dropout({ rate: 0.25, seed: options.dropoutSeed }),
      tfl.layers.flatten(),
      tfl.layers.dense({ units: hidden, activation: 'relu' }),
      tfl.layers.dense({ units: classes, activation: 'softmax' }),
    ],
  });
}

function mlp(): tfl.LayersModel {
  return tfl.sequential({
    layers: [
      tfl.layers.dense({ inputShape: [784], units: 64, activation: 'relu' }),
      tfl.layers.dropout({ rate: 0.2 }),
      tfl.layers.dense({ units: 32, activation: 'relu' }),
      tfl.layers.dense({ units: 10, activation: 'softmax' }),
    ],
  });
}

/**
 * A ResNet-style stem and block: ZeroPadding2D, a strided 'valid' Conv2D without bias,
 * BatchNormalization and a ReLU layer, then a depthwise-separable branch added to a 1×1
 * projection shortcut, concatenated with the block's input, pooled and classified.
 */
function residualNet(): tfl.LayersModel {
  const image = tfl.input({ shape: [16, 16, 3] });
  const padded = tfl.layers.zeroPadding2d({ padding: 1 }).apply(image) as tfl.SymbolicTensor;
  const stem = tfl.layers.conv2d({ filters: 8, kernelSize: 3, strides: 2, padding: 'valid', useBias: false }).apply(padded) as tfl.SymbolicTensor;
  const normalised = tfl.layers.batchNormalization().apply(stem) as tfl.SymbolicTensor;
  const activated = tfl.layers.reLU().apply(normalised) as tfl.SymbolicTensor;
  const depthwise = tfl.layers.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, padding: 'same', activation: 'relu' }).apply(activated) as tfl.SymbolicTensor;
  const separable = tfl.layers.separableConv2d({ filters: 16, kernelSize: 3, padding: 'same' }).apply(depthwise) as tfl.SymbolicTensor;
  const shortcut = tfl.layers.conv2d({ filters: 16, kernelSize: 1 }).apply(activated) as tfl.SymbolicTensor;
  const added = tfl.layers.add().apply([separable, shortcut]) as tfl.SymbolicTensor;
  const joined = tfl.layers.concatenate().apply([added, activated]) as tfl.SymbolicTensor;
  const pooled = tfl.layers.globalAveragePooling2d({}).apply(joined) as tfl.SymbolicTensor;
  const output = tfl.layers.dense({ units: 10, activation: 'softmax' }).apply(pooled) as tfl.SymbolicTensor;
  return tfl.model({ inputs: image, outputs: output });
}

/**
 * Transfer-learning style: a functional base model (with a Dense layer of its own) used as one
 * layer of the outer model, whose LayerNormalization and Dense head follow it.
 */
function nestedBase(): tfl.LayersModel {
  const baseInput = tfl.input({ shape: [12, 12, 3] });
  let x = tfl.layers.conv2d({ filters: 6, kernelSize: 3, padding: 'same', activation: 'relu' }).apply(baseInput) as tfl.SymbolicTensor;
  x = tfl.layers.batchNormalization().apply(x) as tfl.SymbolicTensor;
  x = tfl.layers.maxPooling2d({ poolSize: 2 }).apply(x) as tfl.SymbolicTensor;
  x = tfl.layers.flatten().apply(x) as tfl.SymbolicTensor;
  x = tfl.layers.dense({ units: 16, activation: 'relu' }).apply(x) as tfl.SymbolicTensor;
  const base = tfl.model({ inputs: baseInput, outputs: x });
  const input = tfl.input({ shape: [12, 12, 3] });
  let y = base.apply(input) as tfl.SymbolicTensor;
  y = tfl.layers.layerNormalization().apply(y) as tfl.SymbolicTensor;
  y = tfl.layers.dropout({ rate: 0.1 }).apply(y) as tfl.SymbolicTensor;
  const output = tfl.layers.dense({ units: 4, activation: 'softmax' }).apply(y) as tfl.SymbolicTensor;
  return tfl.model({ inputs: input, outputs: output });
}

export const ARCHITECTURES: readonly ReferenceArchitecture[] = [
  { name: 'mlp', inputShape: [784], featureWidth: 32, classes: 10, build: mlp },
  { name: 'cnn', inputShape: [1, 28, 28], featureWidth: 32, classes: 10, build: () => convNet({ imageSize: 28, filters: 8, hidden: 32, classes: 10 }) },
  { name: 'resnet', inputShape: [3, 16, 16], featureWidth: 24, classes: 10, build: residualNet },
  { name: 'nested', inputShape: [3, 12, 12], featureWidth: 16, classes: 4, build: nestedBase },
];

/** A second model of the same topology (same layer names), as loading the saved topology gives. */
export async function sameTopology(model: tfl.LayersModel): Promise<tfl.LayersModel> {
  return tfl.models.modelFromJSON({ modelTopology: model.toJSON(null, false) as tf.io.ModelJSON['modelTopology'] });
}

/**
 * Replaces every weight with seeded values: He-scaled kernels, and biases, BatchNormalization
 * statistics and scales away from their initial 0 and 1, so a mistake in any of them shows.
 */
export function seedWeights(model: tfl.LayersModel, seed: number): void {
  const random = seededRandom(seed);
  for (const variable of model.weights) {
    const shape = variable.shape as number[];
    const role = variable.originalName.split('/').pop()!;
    const values = weightValues(role, shape, random);
    const tensor = tf.tensor(values, shape);
    variable.write(tensor);
    tensor.dispose();
  }
}

function weightValues(role: string, shape: readonly number[], random: Random): Float32Array {
  const count = shape.reduce((total, size) => total * size, 1);
  const values = new Float32Array(count);
  // Depthwise kernels [h, w, in, multiplier] sum over h·w inputs; other kernels over all but the last axis.
  const fanIn = role === 'depthwise_kernel' ? shape[0]! * shape[1]! : count / shape[shape.length - 1]!;
  for (let i = 0; i < count; i++) {
    switch (role) {
      case 'kernel':
      case 'depthwise_kernel':
      case 'pointwise_kernel':
        values[i] = random.normal(0, Math.sqrt(2 / fanIn));
        break;
      case 'gamma':
        values[i] = random.normal(1, 0.2);
        break;
      case 'moving_variance':
        values[i] = 0.5 + random.uniform();
        break;
      default: // bias, beta, moving_mean
        values[i] = random.normal(0, 0.2);
    }
  }
  return values;
}

// ---------------------------------------------------------------------------------------
// Features

/** Classes a model's output may pass through after its head Dense layer. */
const AFTER_HEAD = new Set(['Activation', 'Softmax', 'Dropout']);

/** The Dense layer the model's output comes from, past a final activation, softmax or dropout. */
export function headDense(model: tfl.LayersModel): tfl.layers.Layer {
  let layer = model.outputs[0]!.sourceLayer as tfl.layers.Layer;
  while (AFTER_HEAD.has(layer.getClassName())) layer = layer.inboundNodes[0]!.inboundLayers[0]!;
  assert.equal(layer.getClassName(), 'Dense', 'the model ends in a Dense head');
  return layer;
}

/** A batch of `rows` seeded samples of `shape` (channels-first for images), values of order 1. */
export function referenceProbe(shape: readonly number[], rows: number, seed: number): Float32Array {
  return seededRandom(seed).normals(rows * shape.reduce((total, size) => total * size, 1));
}

/**
 * What tfjs-layers computes at the head's input for a channels-first probe: the model cut by a
 * sub-model from its inputs to that tensor, fed the probe transposed to NHWC, in inference mode.
 */
export async function referenceFeatures(model: tfl.LayersModel, probe: Float32Array, rows: number, inputShape: readonly number[]): Promise<Float32Array> {
  return onCpu(async () => {
    const head = headDense(model);
    const features = tfl.model({ inputs: model.inputs, outputs: head.input as tfl.SymbolicTensor });
    const output = tf.tidy(() => {
      const batch = tf.tensor(probe, [rows, ...inputShape]);
      const channelsLast = inputShape.length === 3 ? tf.transpose(batch, [0, 2, 3, 1]) : batch;
      return features.predict(channelsLast) as tf.Tensor;
    });
    try {
      return Float32Array.from(await output.data());
    } finally {
      output.dispose();
    }
  });
}

// ---------------------------------------------------------------------------------------
// Files

export interface KerasOutputs {
  /** Keras 2 `model.save('x.h5')`. */
  readonly h5?: string;
  /** Keras 3 `model.save('x.keras')`. */
  readonly keras?: string;
  /** Keras 2 `model.save_weights('x.h5')`: weights without the configuration. */
  readonly keras2Weights?: string;
  /** Keras 3 `model.save_weights('x.weights.h5')`. */
  readonly keras3Weights?: string;
}

/** Saves a model as tfjs-layers' `model.save` lays it out: model.json and weights.bin in `dir`; returns model.json's path. */
export async function saveTfjsModel(model: tfl.LayersModel, dir: string): Promise<string> {
  let saved: tf.io.ModelArtifacts | undefined;
  await onCpu(() =>
    model.save(
      tf.io.withSaveHandler(async (artifacts) => {
        saved = artifacts;
        return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
      }),
    ),
  );
  assert.ok(saved?.weightData && saved.weightSpecs, 'tfjs-layers handed over weights');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'weights.bin'), Buffer.from(tf.io.CompositeArrayBuffer.join(saved.weightData)));
  const modelJson = {
    modelTopology: saved.modelTopology,
    format: saved.format,
    generatedBy: saved.generatedBy,
    convertedBy: saved.convertedBy ?? null,
    weightsManifest: [{ paths: ['weights.bin'], weights: saved.weightSpecs }],
  };
  const file = path.join(dir, 'model.json');
  writeFileSync(file, JSON.stringify(modelJson));
  return file;
}

/** Loads a model saved by saveTfjsModel (a single weights file). */
export async function loadTfjsModel(modelJsonPath: string): Promise<tfl.LayersModel> {
  const json = JSON.parse(readFileSync(modelJsonPath, 'utf8')) as tf.io.ModelJSON;
  const manifest = json.weightsManifest[0]!;
  const weights = readFileSync(path.join(path.dirname(modelJsonPath), manifest.paths[0]!));
  const artifacts: tf.io.ModelArtifacts = {
    modelTopology: json.modelTopology,
    weightSpecs: manifest.weights,
    weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
  };
  return onCpu(() => tfl.loadLayersModel(tf.io.fromMemory(artifacts)));
}

/** Writes the TF.js model at `modelJsonPath` as the Keras files asked for, with write_keras_models.py. */
export function writeKerasFiles(modelJsonPath: string, outputs: KerasOutputs): void {
  const args = [KERAS_WRITER, modelJsonPath];
  if (outputs.h5) args.push('--h5', outputs.h5);
  if (outputs.keras) args.push('--keras', outputs.keras);
  if (outputs.keras2Weights) args.push('--keras2-weights', outputs.keras2Weights);
  if (outputs.keras3Weights) args.push('--keras3-weights', outputs.keras3Weights);
  const run = spawnSync(PYTHON, args, { encoding: 'utf8', timeout: 120_000 });
  if (run.error || run.status !== 0) {
    assert.fail(
      `write_keras_models.py failed (${run.error?.message ?? `exit status ${run.status}`}); it needs ${PYTHON} with numpy and h5py ` +
        `(apt-get install python3-numpy python3-h5py, as .ci/run does):\n${run.stderr}`,
    );
  }
}

// ---------------------------------------------------------------------------------------
// A small lineage: two unrelated pretrained bases and children fine-tuned from them

/** Bump when anything below changes what is trained: the cache keys on it. */
const LINEAGE_VERSION = 'keras-lineage-v13';
const FASHION_DIR = '/usr/share/datasets/fashion-mnist';
const LINEAGE_IMAGE_SIZE = 14;

/** Tasks on Fashion-MNIST's images: the label of each of its ten classes. */
const TASKS = {
  /** The ten classes themselves. */
  classes: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
  /** Classes paired by number, (0, 1), (2, 3), ...: a grouping the images do not suggest. */
  pairs: [0, 0, 1, 1, 2, 2, 3, 3, 4, 4],
  /** Whether the class number is odd: another such grouping, across the pairs. */
  parity: [0, 1, 0, 1, 0, 1, 0, 1, 0, 1],
} as const;

export interface Lineage {
  readonly members: readonly LineageMember[];
  /** Probe images for findParent: Fashion-MNIST images at the members' input size, as .npy [N, 1, 14, 14]. */
  readonly probe: string;
}

export interface LineageMember {
  readonly name: string;
  /** The member it was fine-tuned from; null for a base. */
  readonly parent: string | null;
  readonly modelJson: string;
  readonly h5: string;
}

interface Recipe {
  readonly name: string;
  readonly parent: string | null;
  readonly seed: number;
  readonly task: keyof typeof TASKS;
  /** Which half of Fashion-MNIST's test set it trains on. */
  readonly half: 0 | 1;
  readonly samples: number;
  readonly phases: readonly Phase[];
}

/** Some epochs with a fresh optimizer: Adam, or SGD with momentum 0.9; of the head alone or of every layer. */
interface Phase {
  readonly epochs: number;
  readonly learningRate: number;
  readonly optimizer: 'adam' | 'sgd';
  readonly headOnly?: boolean;
}

/** A tenth of the rate at the end lets the weights and BatchNormalization's moving statistics settle. */
const BASE_PHASES: readonly Phase[] = [
  { epochs: 2, learningRate: 0.005, optimizer: 'adam' },
  { epochs: 1, learningRate: 0.0005, optimizer: 'adam' },
];
/** Keras's transfer-learning recipe: the new head trained on the frozen base, then every layer at a low rate. */
const CHILD_PHASES: readonly Phase[] = [
  { epochs: 1, learningRate: 0.005, optimizer: 'adam', headOnly: true },
  { epochs: 2, learningRate: 0.005, optimizer: 'sgd' },
];

/**
 * Bases A and B learn the ten classes from different halves of Fashion-MNIST's test set and
 * different initial weights. Children start from their base's weights, with only the head
 * re-initialised, and learn a grouping of the classes: childA1 and childB1 the pairs (one task
 * from unrelated bases), childA2 the parity.
 *
 * Siblings are candidates too, and fine-tuning moves every child of a base partly the same way
 * (features that serve any task on these images grow), so a sibling can look closer than the
 * base. Measured while choosing this recipe, with the probe below: when one child learns an
 * easy task (the kind of article) and moves little, it lies between its base and its sibling;
 * Adam, which steps every weight alike, makes the siblings' moves more alike. Two groupings of
 * like difficulty fine-tuned with SGD rank every base first for both methods, with SGD rates
 * from 0.003 to 0.01 (repr-l1-approx by 20%, the detector by 0.2 of its score).
 */
const RECIPES: readonly Recipe[] = [
  { name: 'baseA', parent: null, seed: 1, task: 'classes', half: 0, samples: 1000, phases: BASE_PHASES },
  { name: 'baseB', parent: null, seed: 2, task: 'classes', half: 1, samples: 1000, phases: BASE_PHASES },
  { name: 'childA1', parent: 'baseA', seed: 11, task: 'pairs', half: 0, samples: 300, phases: CHILD_PHASES },
  { name: 'childA2', parent: 'baseA', seed: 12, task: 'parity', half: 1, samples: 300, phases: CHILD_PHASES },
  { name: 'childB1', parent: 'baseB', seed: 21, task: 'pairs', half: 0, samples: 300, phases: CHILD_PHASES },
];

function classesOf(task: keyof typeof TASKS): number {
  return Math.max(...TASKS[task]) + 1;
}

/** Images the probe takes from the end of Fashion-MNIST's test set: every class, as the children saw. */
const LINEAGE_PROBE_ROWS = 128;

/**
 * Trains the lineage (about 20 s on the cpu backend) or finds it in .cache/<version>/, each
 * member as TF.js model.json and Keras 2 .h5, with a probe of Fashion-MNIST images.
 */
export async function lineageModels(): Promise<Lineage> {
  const folder = path.join(REPO_ROOT, '.cache', LINEAGE_VERSION);
  const members = RECIPES.map((recipe) => ({
    name: recipe.name,
    parent: recipe.parent,
    modelJson: path.join(folder, recipe.name, 'model.json'),
    h5: path.join(folder, `${recipe.name}.h5`),
  }));
  if (!members.every((member) => existsSync(member.modelJson))) {
    // Trained into a fresh folder and moved in place at the end, so an interrupted run leaves no half cache.
    const staging = `${folder}.partial-${process.pid}`;
    rmSync(staging, { recursive: true, force: true });
    await trainLineage(staging);
    rmSync(folder, { recursive: true, force: true });
    renameSync(staging, folder);
  }
  for (const member of members) if (!existsSync(member.h5)) writeKerasFiles(member.modelJson, { h5: member.h5 });
  const probe = path.join(folder, 'probe.npy');
  if (!existsSync(probe)) writeProbe(probe);
  return { members, probe };
}

function writeProbe(file: string): void {
  const data = readFashionTestSet();
  const first = data.labels.length - LINEAGE_PROBE_ROWS;
  const images = downsampled(data, Array.from({ length: LINEAGE_PROBE_ROWS }, (_, i) => first + i));
  const shape = [LINEAGE_PROBE_ROWS, 1, LINEAGE_IMAGE_SIZE, LINEAGE_IMAGE_SIZE];
  // A version 1.0 .npy header, padded so the data starts at a multiple of 64 bytes.
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const preamble = Buffer.alloc(10);
  preamble.write('\x93NUMPY', 'latin1');
  preamble[6] = 1;
  preamble.writeUInt16LE(header.length, 8);
  writeFileSync(file, Buffer.concat([preamble, Buffer.from(header, 'latin1'), Buffer.from(images.buffer, images.byteOffset, images.byteLength)]));
}

async function trainLineage(folder: string): Promise<void> {
  const data = readFashionTestSet();
  const trained = new Map<string, tfl.LayersModel>();
  for (const recipe of RECIPES) {
    const model = await onCpu(async () => {
      const network = convNet({ imageSize: LINEAGE_IMAGE_SIZE, filters: 4, hidden: 16, classes: classesOf(recipe.task), dropoutSeed: recipe.seed, momentum: 0.9 });
      seedWeights(network, recipe.seed);
      if (recipe.parent) {
        // Fine-tuning: every weight from the parent but the head's, which keeps its fresh values.
        const parent = trained.get(recipe.parent)!;
        const head = headDense(network);
        network.layers.forEach((layer, i) => {
          if (layer !== head) layer.setWeights(parent.layers[i]!.getWeights());
        });
      }
      await fit(network, data, recipe);
      return network;
    });
    trained.set(recipe.name, model);
    await saveTfjsModel(model, path.join(folder, recipe.name));
  }
}

async function fit(model: tfl.LayersModel, data: FashionSet, recipe: Recipe): Promise<void> {
  const { images, labels } = trainingBatch(data, recipe);
  const x = tf.tensor4d(images, [recipe.samples, LINEAGE_IMAGE_SIZE, LINEAGE_IMAGE_SIZE, 1]);
  const y = tf.oneHot(tf.tensor1d(labels, 'int32'), classesOf(recipe.task));
  try {
    const head = headDense(model);
    for (const phase of recipe.phases) {
      for (const layer of model.layers) layer.trainable = !phase.headOnly || layer === head;
      model.compile({ optimizer: phase.optimizer === 'sgd' ? tf.train.momentum(phase.learningRate, 0.9) : tf.train.adam(phase.learningRate), loss: 'categoricalCrossentropy' });
      // Batches in the seeded order the samples were drawn in: no unseeded shuffling.
      await model.fit(x, y, { epochs: phase.epochs, batchSize: 50, shuffle: false, verbose: 0 });
    }
  } finally {
    x.dispose();
    y.dispose();
  }
}

interface FashionSet {
  /** 28×28 images, bytes. */
  readonly pixels: Uint8Array;
  readonly labels: Uint8Array;
}

/** Fashion-MNIST's 10,000 test images (Debian's dataset-fashion-mnist, idx format, gzip). */
function readFashionTestSet(): FashionSet {
  const read = (name: string, headerBytes: number): Uint8Array => {
    const file = path.join(FASHION_DIR, name);
    if (!existsSync(file)) assert.fail(`${file} is missing: apt-get install dataset-fashion-mnist (as .ci/run does)`);
    return new Uint8Array(gunzipSync(readFileSync(file))).subarray(headerBytes);
  };
  return { pixels: read('t10k-images-idx3-ubyte.gz', 16), labels: read('t10k-labels-idx1-ubyte.gz', 8) };
}

/** The recipe's samples, drawn from its half in a seeded order, with its task's labels. */
function trainingBatch(data: FashionSet, recipe: Recipe): { images: Float32Array; labels: Int32Array } {
  const halfSize = data.labels.length / 2;
  const order = Array.from({ length: halfSize }, (_, i) => recipe.half * halfSize + i);
  const random = seededRandom(recipe.seed);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random.uniform() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const chosen = order.slice(0, recipe.samples);
  return { images: downsampled(data, chosen), labels: Int32Array.from(chosen, (index) => TASKS[recipe.task][data.labels[index]!]!) };
}

/** The images at `indices`, scaled to [0, 1] and averaged down to 14×14 by 2×2 blocks. */
function downsampled(data: FashionSet, indices: readonly number[]): Float32Array {
  const size = LINEAGE_IMAGE_SIZE;
  const images = new Float32Array(indices.length * size * size);
  indices.forEach((index, n) => {
    for (let row = 0; row < size; row++) {
      for (let column = 0; column < size; column++) {
        const at = index * 784 + 2 * row * 28 + 2 * column;
        const sum = data.pixels[at]! + data.pixels[at + 1]! + data.pixels[at + 28]! + data.pixels[at + 29]!;
        images[(n * size + row) * size + column] = sum / (4 * 255);
      }
    }
  });
  return images;
}
