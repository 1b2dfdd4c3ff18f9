import { normalisedNames } from '../fingerprint/tensorNames';
import type { TensorInfo } from '../formats/tensor';

/**
 * Recognises, from tensor names and shapes alone, the architectures the state-dict executor
 * (stateDictModel.ts) can run: multilayer perceptrons, the zoo's SmallCNN, torchvision ResNets
 * and Vision Transformers in timm or Hugging Face naming. A state dict holds no code, so what
 * it cannot say is fixed by the conventions of those libraries and written down where assumed
 * (activations, strides, paddings, normalisation epsilons). Names are compared after removing
 * wrapper prefixes (`module.`, Lightning's `model.`, ...) the way fingerprints are.
 *
 * The head is the last linear layer. It is not part of the feature extractor g: fine-tunes
 * often replace it for a new label set, so its shape may differ between parent and child.
 */

export interface LinearLayer {
  /** Weight [outputs, inputs] (PyTorch's layout). */
  readonly weight: string;
  readonly bias?: string;
  readonly inputs: number;
  readonly outputs: number;
}

export interface Conv2dLayer {
  /** Weight [out, in, kh, kw] (PyTorch's OIHW layout). */
  readonly weight: string;
  readonly bias?: string;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernel: readonly [number, number];
  readonly stride: number;
  /** Zeros added on every side. */
  readonly padding: number;
}

/** BatchNorm in eval mode: running statistics, not batch statistics. */
export interface BatchNormLayer {
  readonly weight: string;
  readonly bias: string;
  readonly runningMean: string;
  readonly runningVar: string;
  readonly epsilon: number;
}

export interface LayerNormLayer {
  readonly weight: string;
  readonly bias: string;
  readonly epsilon: number;
}

export interface ConvBatchNorm {
  readonly conv: Conv2dLayer;
  readonly norm: BatchNormLayer;
}

interface ArchitectureCommon {
  /** For messages, e.g. "MLP 784→128→64 (features: 64)". */
  readonly description: string;
  /** Shape of one input sample, channels first for images. */
  readonly inputShape: readonly number[];
  readonly featureWidth: number;
  /** The feature extractor's tensors in forward order (normalised names) with their shapes. */
  readonly parameters: ReadonlyMap<string, readonly number[]>;
  /** The head's tensors, excluded from `parameters`. */
  readonly head: readonly string[];
}

/** Linear layers each followed by ReLU; features are the last hidden layer's activations. */
export interface MlpArchitecture extends ArchitectureCommon {
  readonly kind: 'mlp';
  readonly layers: readonly LinearLayer[];
}

/**
 * The zoo's SmallCNN and networks built like it: blocks of conv → BatchNorm → ReLU → 2×2 max
 * pool, flattened channels-first, then linear layers each followed by ReLU.
 */
export interface ConvNetArchitecture extends ArchitectureCommon {
  readonly kind: 'convnet';
  readonly blocks: readonly ConvBatchNorm[];
  readonly linear: readonly LinearLayer[];
}

/** A residual block: conv-BN pairs with ReLU between them, the shortcut added before the last ReLU. */
export interface ResidualBlock {
  readonly layers: readonly ConvBatchNorm[];
  readonly shortcut?: ConvBatchNorm;
}

/** torchvision's ResNet: stem conv → BN → ReLU → 3×3/2 max pool, stages of blocks, global average pool. */
export interface ResNetArchitecture extends ArchitectureCommon {
  readonly kind: 'resnet';
  readonly stem: ConvBatchNorm;
  readonly stages: readonly (readonly ResidualBlock[])[];
}

export type AttentionWeights =
  | { readonly fused: LinearLayer }
  | { readonly query: LinearLayer; readonly key: LinearLayer; readonly value: LinearLayer };

/** A pre-norm transformer block: x + attention(norm1(x)), then x + fc2(gelu(fc1(norm2(x)))). */
export interface TransformerBlock {
  readonly norm1: LayerNormLayer;
  readonly attention: AttentionWeights;
  readonly projection: LinearLayer;
  readonly norm2: LayerNormLayer;
  readonly fc1: LinearLayer;
  readonly fc2: LinearLayer;
}

/** ViT: patch embedding, class token, learned positions, blocks, final norm; features are the class token's. */
export interface VisionTransformerArchitecture extends ArchitectureCommon {
  readonly kind: 'vit';
  readonly naming: 'timm' | 'huggingface';
  readonly patchEmbedding: Conv2dLayer;
  readonly classToken: string;
  readonly positionEmbedding: string;
  readonly blocks: readonly TransformerBlock[];
  readonly finalNorm: LayerNormLayer;
  readonly attentionHeads: number;
}

export type Architecture = MlpArchitecture | ConvNetArchitecture | ResNetArchitecture | VisionTransformerArchitecture;

/** What the weights cannot tell. */
export interface ArchitectureHints {
  /** Side of the square input image of a ResNet (any size runs; default 224, ImageNet's). */
  readonly imageSize?: number;
  /** Attention heads of a ViT (config.json `num_attention_heads`); see the default in headsOf. */
  readonly attentionHeads?: number;
  /** LayerNorm epsilon of a ViT (config.json `layer_norm_eps`); defaults are timm's 1e-6 and Hugging Face's 1e-12. */
  readonly layerNormEpsilon?: number;
}

export type Recognition = { readonly architecture: Architecture } | { readonly reason: string };

export const DEFAULT_RESNET_IMAGE_SIZE = 224;
/** PyTorch's BatchNorm default. */
const BATCH_NORM_EPSILON = 1e-5;
const TIMM_LAYER_NORM_EPSILON = 1e-6;
const HUGGING_FACE_LAYER_NORM_EPSILON = 1e-12;
/**
 * Heads of the standard ViT widths (Tiny 192/3, Small 384/6, Base 768/12, Large 1024/16,
 * Huge 1280/16); other widths divisible by 64 are assumed to use 64-wide heads, as these do
 * except Huge.
 */
const STANDARD_VIT_HEADS: ReadonlyMap<number, number> = new Map([
  [192, 3],
  [384, 6],
  [768, 12],
  [1024, 16],
  [1280, 16],
]);
const ASSUMED_HEAD_WIDTH = 64;
/** Shown in the reason when nothing is recognised. */
const LISTED_TENSORS = 4;

/** A recogniser says `undefined` when the tensors do not look like its family at all. */
type Recogniser = (tensors: TensorTable, hints: ArchitectureHints) => Recognition | undefined;

export function recogniseArchitecture(tensors: readonly TensorInfo[], hints: ArchitectureHints = {}): Recognition {
  const table = new TensorTable(tensors);
  const recognisers: Recogniser[] = [refuseAdapter, recogniseVit, recogniseResNet, recogniseConvNet, recogniseMlp];
  for (const recogniser of recognisers) {
    const result = recogniser(table, hints);
    if (result) return result;
  }
  const listed = tensors
    .slice(0, LISTED_TENSORS)
    .map((tensor) => `${tensor.name} [${tensor.shape.join(',')}]`)
    .join(', ');
  return {
    reason:
      `no recognised architecture (MLP, SmallCNN, ResNet, ViT): ${tensors.length} tensors, first ${listed}` +
      `${tensors.length > LISTED_TENSORS ? ', …' : ''}; only weight-space methods apply`,
  };
}

/** A reason, prefixed with the family it looked like, that only weight-space methods apply. */
function notRunnable(family: string, problem: string): Recognition {
  return { reason: `looks like a ${family} but ${problem}; only weight-space methods apply` };
}

/** A tensor the architecture needs is missing or has the wrong shape; its message becomes the reason. */
class ArchitectureMismatch extends Error {}

/** Tensors by normalised name; records which ones an architecture uses. */
class TensorTable {
  private readonly shapes = new Map<string, readonly number[]>();
  readonly names: readonly string[];
  private readonly used = new Set<string>();

  constructor(tensors: readonly TensorInfo[]) {
    this.names = normalisedNames(tensors.map((tensor) => tensor.name));
    this.names.forEach((name, i) => this.shapes.set(name, tensors[i]!.shape));
  }

  has(name: string): boolean {
    return this.shapes.has(name);
  }

  shape(name: string): readonly number[] | undefined {
    return this.shapes.get(name);
  }

  /** The shape of a tensor the architecture needs; marks it used. */
  take(name: string, rank?: number): readonly number[] {
    const shape = this.shapes.get(name);
    if (!shape) throw new ArchitectureMismatch(`tensor ${name} is missing`);
    if (rank !== undefined && shape.length !== rank) throw new ArchitectureMismatch(`${name} has shape [${shape.join(',')}], expected ${rank} dimensions`);
    this.used.add(name);
    return shape;
  }

  /** Names neither used nor ignorable (BatchNorm's step counters never affect the output). */
  unused(ignorable: (name: string) => boolean = () => false): string[] {
    return this.names.filter((name) => !this.used.has(name) && !name.endsWith('num_batches_tracked') && !ignorable(name));
  }

  resetUse(): void {
    this.used.clear();
  }
}

function leftoverProblem(leftover: readonly string[]): string {
  return `${leftover.length} tensors are not part of it (${leftover.slice(0, LISTED_TENSORS).join(', ')}${leftover.length > LISTED_TENSORS ? ', …' : ''})`;
}

/** Runs a recogniser body; a missing or malformed tensor becomes the reason. */
function attempt(family: string, table: TensorTable, build: () => Architecture, ignorable?: (name: string) => boolean): Recognition {
  table.resetUse();
  try {
    const architecture = build();
    const leftover = table.unused(ignorable);
    if (leftover.length > 0) return notRunnable(family, leftoverProblem(leftover));
    return { architecture };
  } catch (error) {
    if (error instanceof ArchitectureMismatch) return notRunnable(family, error.message);
    throw error;
  }
}

function fail(problem: string): never {
  throw new ArchitectureMismatch(problem);
}

// ---------------------------------------------------------------------------------------
// Adapters

/** PEFT's LoRA factors (`lora_A`/`lora_B`, `lora_embedding_A`/`_B`), which chain like linear layers but are no network. */
const LORA_TENSOR = /(^|\.)lora_(embedding_)?[AB]($|\.)/;

const refuseAdapter: Recogniser = (table) => {
  const factor = table.names.find((name) => LORA_TENSOR.test(name));
  if (!factor) return undefined;
  return { reason: `a LoRA adapter (${factor}), not a whole network: its features need the base model it adapts; only weight-space methods apply` };
};

// ---------------------------------------------------------------------------------------
// Layers

function linear(table: TensorTable, prefix: string, inputs?: number): LinearLayer {
  const [outputs, layerInputs] = table.take(`${prefix}.weight`, 2) as [number, number];
  if (inputs !== undefined && layerInputs !== inputs) fail(`${prefix} takes ${layerInputs} inputs where ${inputs} arrive`);
  const bias = optionalVector(table, `${prefix}.bias`, outputs);
  return { weight: `${prefix}.weight`, ...(bias && { bias }), inputs: layerInputs, outputs };
}

function optionalVector(table: TensorTable, name: string, length: number): string | undefined {
  if (!table.has(name)) return undefined;
  vector(table, name, length);
  return name;
}

function vector(table: TensorTable, name: string, length: number): void {
  const shape = table.take(name, 1);
  if (shape[0] !== length) fail(`${name} has ${shape[0]} values where ${length} are needed`);
}

/** A convolution with PyTorch's "same" padding for odd kernels (k // 2), as every recognised network uses. */
function conv(table: TensorTable, prefix: string, inChannels: number, stride: number): Conv2dLayer {
  const [outChannels, layerIn, kh, kw] = table.take(`${prefix}.weight`, 4) as [number, number, number, number];
  if (layerIn !== inChannels) {
    fail(`${prefix} takes ${layerIn} input channels where ${inChannels} arrive${inChannels % layerIn === 0 ? ' (grouped convolutions are not supported)' : ''}`);
  }
  if (kh !== kw || kh % 2 === 0) fail(`${prefix} has a ${kh}×${kw} kernel; only square odd kernels are supported`);
  const bias = optionalVector(table, `${prefix}.bias`, outChannels);
  return { weight: `${prefix}.weight`, ...(bias && { bias }), inChannels, outChannels, kernel: [kh, kw], stride, padding: Math.floor(kh / 2) };
}

function batchNorm(table: TensorTable, prefix: string, channels: number): BatchNormLayer {
  const names = { weight: `${prefix}.weight`, bias: `${prefix}.bias`, runningMean: `${prefix}.running_mean`, runningVar: `${prefix}.running_var` };
  for (const name of Object.values(names)) vector(table, name, channels);
  return { ...names, epsilon: BATCH_NORM_EPSILON };
}

function layerNorm(table: TensorTable, prefix: string, width: number, epsilon: number): LayerNormLayer {
  vector(table, `${prefix}.weight`, width);
  vector(table, `${prefix}.bias`, width);
  return { weight: `${prefix}.weight`, bias: `${prefix}.bias`, epsilon };
}

function parameterShapes(table: TensorTable, names: readonly string[]): Map<string, readonly number[]> {
  return new Map(names.map((name) => [name, table.shape(name)!]));
}

function linearNames(layer: LinearLayer): string[] {
  return [layer.weight, ...(layer.bias ? [layer.bias] : [])];
}

function convNames(layer: Conv2dLayer): string[] {
  return [layer.weight, ...(layer.bias ? [layer.bias] : [])];
}

function convBatchNormNames(pair: ConvBatchNorm): string[] {
  return [...convNames(pair.conv), pair.norm.weight, pair.norm.bias, pair.norm.runningMean, pair.norm.runningVar];
}

function layerNormNames(norm: LayerNormLayer): string[] {
  return [norm.weight, norm.bias];
}

/** Natural order: "layers.2" before "layers.10". */
const naturalOrder = new Intl.Collator('en', { numeric: true }).compare;

// ---------------------------------------------------------------------------------------
// Linear chains (MLPs and the dense part of a convnet)

/**
 * Orders linear layers into a chain where each one's inputs are the previous one's outputs.
 * The checkpoint's own order is module registration order in PyTorch state dicts and is kept
 * when it chains; files that sort their keys (safetensors) are ordered by the widths instead,
 * starting from the layer no other layer feeds, ties broken by natural name order.
 */
function chainLinearLayers(table: TensorTable, prefixes: readonly string[], family: string): LinearLayer[] {
  const layers = prefixes.map((prefix) => linear(table, prefix));
  if (chains(layers)) return layers;
  const remaining = [...layers].sort((a, b) => naturalOrder(a.weight, b.weight));
  const fed = (layer: LinearLayer) => remaining.some((other) => other !== layer && other.outputs === layer.inputs);
  const ordered: LinearLayer[] = [];
  let next = remaining.find((layer) => !fed(layer)) ?? remaining[0];
  while (next) {
    ordered.push(next);
    remaining.splice(remaining.indexOf(next), 1);
    const outputs: number = next.outputs;
    next = remaining.find((layer) => layer.inputs === outputs);
  }
  if (remaining.length > 0) {
    fail(`its linear layers do not form a chain (${layers.map((layer) => `${layer.weight} [${layer.outputs},${layer.inputs}]`).join(', ')}) for a ${family}`);
  }
  return ordered;
}

function chains(layers: readonly LinearLayer[]): boolean {
  return layers.every((layer, i) => i === 0 || layer.inputs === layers[i - 1]!.outputs);
}

/** Prefixes of `X.weight` matrices, or undefined when some tensor is not part of a linear layer. */
function linearPrefixes(names: readonly string[]): string[] | undefined {
  const prefixes: string[] = [];
  for (const name of names) {
    if (name.endsWith('.weight')) prefixes.push(name.slice(0, -'.weight'.length));
    else if (!name.endsWith('.bias')) return undefined;
  }
  return prefixes;
}

// ---------------------------------------------------------------------------------------
// MLP

/** ReLU after every hidden layer is assumed: the weights do not record the activation. */
const recogniseMlp: Recogniser = (table) => {
  const names = table.names.filter((name) => !name.endsWith('num_batches_tracked'));
  const prefixes = linearPrefixes(names);
  if (!prefixes || prefixes.length === 0 || prefixes.some((prefix) => table.shape(`${prefix}.weight`)?.length !== 2)) return undefined;
  return attempt('multilayer perceptron', table, () => {
    const chain = chainLinearLayers(table, prefixes, 'multilayer perceptron');
    if (chain.length < 2) fail('it has a single linear layer, which is its head: there are no features before it');
    const layers = chain.slice(0, -1);
    const head = chain[chain.length - 1]!;
    const widths = [layers[0]!.inputs, ...layers.map((layer) => layer.outputs)];
    const featureWidth = layers[layers.length - 1]!.outputs;
    return {
      kind: 'mlp',
      description: `MLP ${widths.join('→')} (features: ${featureWidth})`,
      inputShape: [layers[0]!.inputs],
      featureWidth,
      parameters: parameterShapes(table, layers.flatMap(linearNames)),
      head: linearNames(head),
      layers,
    };
  });
};

// ---------------------------------------------------------------------------------------
// SmallCNN-style convnet

/**
 * Module indices of one block in an `nn.Sequential`: conv at k, BatchNorm at k + 1, then ReLU
 * and MaxPool2d(2) (no parameters) at k + 2 and k + 3, so the next conv sits at k + 4.
 */
const CONVNET_BLOCK_STRIDE = 4;
const CONVNET_POOL = 2;

const recogniseConvNet: Recogniser = (table) => {
  const convPattern = /^(.+)\.(\d+)\.weight$/;
  const convs = table.names.filter((name) => table.shape(name)?.length === 4);
  if (convs.length === 0) return undefined;
  const matches = convs.map((name) => convPattern.exec(name));
  const sequence = matches[0]?.[1];
  if (!sequence || matches.some((match) => match?.[1] !== sequence)) return undefined;
  return attempt('convolutional network (conv-BN-ReLU-pool blocks, then linear layers)', table, () => {
    const indices = matches.map((match) => Number(match![2])).sort((a, b) => a - b);
    indices.forEach((index, i) => {
      if (i > 0 && index - indices[i - 1]! !== CONVNET_BLOCK_STRIDE) {
        fail(`its convolutions sit at ${sequence}.${indices.join(', ')}, not every ${CONVNET_BLOCK_STRIDE} modules as conv-BN-ReLU-pool blocks do`);
      }
    });
    let channels = table.shape(`${sequence}.${indices[0]}.weight`)![1]!;
    const inputChannels = channels;
    const blocks = indices.map((index) => {
      const layer = conv(table, `${sequence}.${index}`, channels, 1);
      channels = layer.outChannels;
      return { conv: layer, norm: batchNorm(table, `${sequence}.${index + 1}`, channels) };
    });
    const after = table.unused().filter((name) => !name.startsWith(`${sequence}.`));
    const rest = linearPrefixes(after);
    if (!rest) fail(`what follows the convolutions is not a chain of linear layers (${after.slice(0, LISTED_TENSORS).join(', ')})`);
    if (rest.length === 0) fail('no linear layers follow the convolutions');
    const chain = chainLinearLayers(table, rest, 'convolutional network');
    if (chain.length < 2) fail('a single linear layer follows the convolutions; it is the head, so no features are left');
    // The first linear layer reads the flattened maps: its width fixes their spatial size.
    const flatWidth = chain[0]!.inputs;
    const side = Math.round(Math.sqrt(flatWidth / channels));
    if (side * side * channels !== flatWidth) fail(`${chain[0]!.weight} takes ${flatWidth} inputs, not ${channels} square maps`);
    const imageSide = side * CONVNET_POOL ** blocks.length;
    const linearLayers = chain.slice(0, -1);
    const head = chain[chain.length - 1]!;
    const featureWidth = linearLayers[linearLayers.length - 1]!.outputs;
    return {
      kind: 'convnet',
      description:
        `CNN ${blocks.map((block) => block.conv.outChannels).join('-')} conv blocks on ${inputChannels}×${imageSide}×${imageSide}, ` +
        `linear ${linearLayers.map((layer) => layer.outputs).join('→')} (features: ${featureWidth})`,
      inputShape: [inputChannels, imageSide, imageSide],
      featureWidth,
      parameters: parameterShapes(table, [...blocks.flatMap(convBatchNormNames), ...linearLayers.flatMap(linearNames)]),
      head: linearNames(head),
      blocks,
      linear: linearLayers,
    };
  });
};

// ---------------------------------------------------------------------------------------
// torchvision ResNet

/** torchvision: layer1 keeps the resolution, every later stage halves it in its first block. */
const STAGE_STRIDE = 2;

const recogniseResNet: Recogniser = (table, hints) => {
  if (!table.has('conv1.weight') || !table.has('layer1.0.conv1.weight')) return undefined;
  return attempt('torchvision ResNet', table, () => {
    const imageSize = hints.imageSize ?? DEFAULT_RESNET_IMAGE_SIZE;
    if (!Number.isInteger(imageSize) || imageSize < 1) fail(`the image size ${imageSize} is not a positive integer`);
    const inputChannels = table.shape('conv1.weight')![1]!;
    // The stem's stride 2 and the 3×3/2 max pool after it are torchvision's.
    const stemConv = conv(table, 'conv1', inputChannels, 2);
    const stem = { conv: stemConv, norm: batchNorm(table, 'bn1', stemConv.outChannels) };
    let channels = stemConv.outChannels;
    const stages: ResidualBlock[][] = [];
    let bottleneck: boolean | undefined;
    for (let stage = 1; table.has(`layer${stage}.0.conv1.weight`); stage++) {
      const blocks: ResidualBlock[] = [];
      for (let index = 0; table.has(`layer${stage}.${index}.conv1.weight`); index++) {
        const prefix = `layer${stage}.${index}`;
        const isBottleneck = table.has(`${prefix}.conv3.weight`);
        if (bottleneck !== undefined && isBottleneck !== bottleneck) fail(`${prefix} mixes basic and bottleneck blocks`);
        bottleneck = isBottleneck;
        const stride = stage > 1 && index === 0 ? STAGE_STRIDE : 1;
        const block = residualBlock(table, prefix, channels, stride, isBottleneck);
        channels = block.layers[block.layers.length - 1]!.conv.outChannels;
        blocks.push(block);
      }
      stages.push(blocks);
    }
    const head = table.has('fc.weight') ? linear(table, 'fc', channels) : undefined;
    const counts = stages.map((blocks) => blocks.length);
    const depth = 2 + counts.reduce((sum, count) => sum + count, 0) * (bottleneck ? 3 : 2);
    return {
      kind: 'resnet',
      description: `ResNet-${depth} (${bottleneck ? 'bottleneck' : 'basic'} blocks [${counts.join(',')}]) on ${inputChannels}×${imageSize}×${imageSize} (features: ${channels})`,
      inputShape: [inputChannels, imageSize, imageSize],
      featureWidth: channels,
      parameters: parameterShapes(table, [
        ...convBatchNormNames(stem),
        ...stages.flat().flatMap((block) => [...block.layers.flatMap(convBatchNormNames), ...(block.shortcut ? convBatchNormNames(block.shortcut) : [])]),
      ]),
      head: head ? linearNames(head) : [],
      stem,
      stages,
    };
  });
};

/** BasicBlock strides its first 3×3 conv; Bottleneck (torchvision's "ResNet v1.5") its middle 3×3 conv. */
function residualBlock(table: TensorTable, prefix: string, inChannels: number, stride: number, bottleneck: boolean): ResidualBlock {
  const convCount = bottleneck ? 3 : 2;
  const stridedConv = bottleneck ? 2 : 1;
  const layers: ConvBatchNorm[] = [];
  let channels = inChannels;
  for (let i = 1; i <= convCount; i++) {
    const layer = conv(table, `${prefix}.conv${i}`, channels, i === stridedConv ? stride : 1);
    channels = layer.outChannels;
    layers.push({ conv: layer, norm: batchNorm(table, `${prefix}.bn${i}`, channels) });
  }
  if (table.has(`${prefix}.downsample.0.weight`)) {
    const shortcutConv = conv(table, `${prefix}.downsample.0`, inChannels, stride);
    if (shortcutConv.outChannels !== channels) fail(`${prefix}.downsample gives ${shortcutConv.outChannels} channels, the block ${channels}`);
    return { layers, shortcut: { conv: shortcutConv, norm: batchNorm(table, `${prefix}.downsample.1`, channels) } };
  }
  if (stride !== 1 || channels !== inChannels) fail(`${prefix} changes the shape of its input but has no downsample`);
  return { layers };
}

// ---------------------------------------------------------------------------------------
// Vision Transformer

interface VitNames {
  readonly naming: 'timm' | 'huggingface';
  readonly patch: string;
  readonly classToken: string;
  readonly positions: string;
  readonly finalNorm: string;
  readonly head: string;
  readonly block: (index: number) => string;
  readonly norm1: string;
  readonly norm2: string;
  readonly fc1: string;
  readonly fc2: string;
  readonly projection: string;
  readonly attention: { readonly fused: string } | { readonly query: string; readonly key: string; readonly value: string };
  /** Tensors that exist in such files but are not on the path to the head. */
  readonly ignorable: (name: string) => boolean;
  readonly epsilon: number;
}

const TIMM_NAMES: VitNames = {
  naming: 'timm',
  patch: 'patch_embed.proj',
  classToken: 'cls_token',
  positions: 'pos_embed',
  finalNorm: 'norm',
  head: 'head',
  block: (index) => `blocks.${index}`,
  norm1: 'norm1',
  norm2: 'norm2',
  fc1: 'mlp.fc1',
  fc2: 'mlp.fc2',
  projection: 'attn.proj',
  attention: { fused: 'attn.qkv' },
  ignorable: () => false,
  epsilon: TIMM_LAYER_NORM_EPSILON,
};

/**
 * Hugging Face ViTModel (no prefix) and ViTForImageClassification (`vit.` prefix, `classifier`
 * head). ViTForImageClassification classifies the final-norm class token, so the pooler
 * (`pooler.dense`, tanh) and the masked-image-modelling `mask_token` are not on its path.
 */
function huggingFaceNames(prefix: string): VitNames {
  return {
    naming: 'huggingface',
    patch: `${prefix}embeddings.patch_embeddings.projection`,
    classToken: `${prefix}embeddings.cls_token`,
    positions: `${prefix}embeddings.position_embeddings`,
    finalNorm: `${prefix}layernorm`,
    head: 'classifier',
    block: (index) => `${prefix}encoder.layer.${index}`,
    norm1: 'layernorm_before',
    norm2: 'layernorm_after',
    fc1: 'intermediate.dense',
    fc2: 'output.dense',
    projection: 'attention.output.dense',
    attention: { query: 'attention.attention.query', key: 'attention.attention.key', value: 'attention.attention.value' },
    ignorable: (name) => name.startsWith(`${prefix}pooler.`) || name === `${prefix}embeddings.mask_token`,
    epsilon: HUGGING_FACE_LAYER_NORM_EPSILON,
  };
}

const recogniseVit: Recogniser = (table, hints) => {
  const names = [TIMM_NAMES, huggingFaceNames('vit.'), huggingFaceNames('')].find((candidate) => table.has(`${candidate.patch}.weight`));
  if (!names) return undefined;
  const family = `Vision Transformer (${names.naming === 'timm' ? 'timm' : 'Hugging Face'} naming)`;
  return attempt(
    family,
    table,
    () => {
      const [width, channels, patchHeight] = table.take(`${names.patch}.weight`, 4) as [number, number, number, number];
      const patchEmbedding = conv2dPatch(table, names.patch, width, channels);
      const classShape = table.take(names.classToken, 3);
      if (classShape[0] !== 1 || classShape[1] !== 1 || classShape[2] !== width) fail(`${names.classToken} has shape [${classShape.join(',')}], expected [1,1,${width}]`);
      const positionShape = table.take(names.positions, 3);
      const tokens = positionShape[1]!;
      const grid = Math.round(Math.sqrt(tokens - 1));
      if (positionShape[0] !== 1 || positionShape[2] !== width || grid * grid !== tokens - 1) {
        fail(`${names.positions} has shape [${positionShape.join(',')}], not a class token and a square grid of ${width}-wide patches`);
      }
      const epsilon = hints.layerNormEpsilon ?? names.epsilon;
      const blocks: TransformerBlock[] = [];
      for (let index = 0; table.has(`${names.block(index)}.${names.norm1}.weight`); index++) {
        blocks.push(transformerBlock(table, names, names.block(index), width, epsilon));
      }
      if (blocks.length === 0) fail(`it has no transformer blocks (${names.block(0)}.*)`);
      const finalNorm = layerNorm(table, names.finalNorm, width, epsilon);
      const head = table.has(`${names.head}.weight`) ? linear(table, names.head, width) : undefined;
      const heads = headsOf(width, hints.attentionHeads);
      const imageSide = grid * patchHeight;
      return {
        kind: 'vit',
        description:
          `ViT (${names.naming}) width ${width}, depth ${blocks.length}, ${heads.count} heads${heads.assumed ? ' (assumed)' : ''}, ` +
          `patch ${patchHeight} on ${channels}×${imageSide}×${imageSide} (features: class token, ${width})`,
        inputShape: [channels, imageSide, imageSide],
        featureWidth: width,
        parameters: parameterShapes(table, [
          ...convNames(patchEmbedding),
          names.classToken,
          names.positions,
          ...blocks.flatMap(transformerBlockNames),
          ...layerNormNames(finalNorm),
        ]),
        head: head ? linearNames(head) : [],
        naming: names.naming,
        patchEmbedding,
        classToken: names.classToken,
        positionEmbedding: names.positions,
        blocks,
        finalNorm,
        attentionHeads: heads.count,
      };
    },
    names.ignorable,
  );
};

/** Patches are cut by a conv whose stride equals its kernel, without padding. */
function conv2dPatch(table: TensorTable, prefix: string, width: number, channels: number): Conv2dLayer {
  const [, , kh, kw] = table.shape(`${prefix}.weight`)!;
  if (kh !== kw) fail(`${prefix} cuts ${kh}×${kw} patches; only square patches are supported`);
  const bias = optionalVector(table, `${prefix}.bias`, width);
  return { weight: `${prefix}.weight`, ...(bias && { bias }), inChannels: channels, outChannels: width, kernel: [kh!, kw!], stride: kh!, padding: 0 };
}

function transformerBlock(table: TensorTable, names: VitNames, prefix: string, width: number, epsilon: number): TransformerBlock {
  const norm1 = layerNorm(table, `${prefix}.${names.norm1}`, width, epsilon);
  let attention: AttentionWeights;
  if ('fused' in names.attention) {
    const fused = linear(table, `${prefix}.${names.attention.fused}`, width);
    if (fused.outputs !== 3 * width) fail(`${fused.weight} gives ${fused.outputs} outputs, not query, key and value of width ${width}`);
    attention = { fused };
  } else {
    const [query, key, value] = [names.attention.query, names.attention.key, names.attention.value].map((name) => {
      const layer = linear(table, `${prefix}.${name}`, width);
      if (layer.outputs !== width) fail(`${layer.weight} gives ${layer.outputs} outputs, not ${width}`);
      return layer;
    }) as [LinearLayer, LinearLayer, LinearLayer];
    attention = { query, key, value };
  }
  const projection = linear(table, `${prefix}.${names.projection}`, width);
  const norm2 = layerNorm(table, `${prefix}.${names.norm2}`, width, epsilon);
  const fc1 = linear(table, `${prefix}.${names.fc1}`, width);
  const fc2 = linear(table, `${prefix}.${names.fc2}`, fc1.outputs);
  if (projection.outputs !== width || fc2.outputs !== width) fail(`${prefix} does not return to width ${width}`);
  return { norm1, attention, projection, norm2, fc1, fc2 };
}

function transformerBlockNames(block: TransformerBlock): string[] {
  const attention = 'fused' in block.attention ? linearNames(block.attention.fused) : [block.attention.query, block.attention.key, block.attention.value].flatMap(linearNames);
  return [...layerNormNames(block.norm1), ...attention, ...linearNames(block.projection), ...layerNormNames(block.norm2), ...linearNames(block.fc1), ...linearNames(block.fc2)];
}

/** The head count is a hyperparameter the weights do not store. */
function headsOf(width: number, hinted: number | undefined): { count: number; assumed: boolean } {
  if (hinted !== undefined) {
    if (!Number.isInteger(hinted) || hinted < 1 || width % hinted !== 0) fail(`${hinted} attention heads do not divide width ${width}`);
    return { count: hinted, assumed: false };
  }
  const standard = STANDARD_VIT_HEADS.get(width);
  if (standard !== undefined) return { count: standard, assumed: true };
  if (width % ASSUMED_HEAD_WIDTH === 0) return { count: width / ASSUMED_HEAD_WIDTH, assumed: true };
  return fail(`the number of attention heads of width ${width} is not stored in the weights; give it as a hint`);
}
